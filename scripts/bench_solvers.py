"""Side-by-side timings of the margin kernel and the damped steps, in one process.

Usage::

    python scripts/bench_solvers.py margin                 # margin_stats vs plain NumPy
    python scripts/bench_solvers.py steps                  # fgn_step (cg, cholesky), ggn_step
    python scripts/bench_solvers.py steps --device gpu

``margin``: N=4096, C=1000, float32 logits of scale 10; ``fa.margin_stats``
against a plain-NumPy implementation (masked max, exp, sum, log: several
passes), best of 7, and their ratio.

``steps``: linear head, N=1024, D=256, C in {10, 100, 1000, 10000}, float32,
damping 1e-2, l2 0, rtol 1e-6; labels drawn from a random linear softmax model
and theta at half its weights. Prints the time of ``fgn_step`` with each
solver and of ``ggn_step``, and the CG iterations of both to rtol 1e-6.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

import fgn_arrays as fa
from fgn_arrays._timing import best_of


def numpy_margin_stats(Z, y):
    """The margin statistics written plainly in NumPy (the baseline)."""
    rows = np.arange(Z.shape[0])
    z_true = Z[rows, y]
    masked = Z.copy()
    masked[rows, y] = -np.inf
    top = masked.max(axis=1)
    lse_rest = top + np.log(np.exp(masked - top[:, None]).sum(axis=1))
    margin = z_true - lse_rest
    loss = np.logaddexp(0, -margin)
    return margin, loss, np.exp(-loss), lse_rest


def bench_margin(args):
    rng = np.random.default_rng(0)
    N, C = 4096, 1000
    Z = (10 * rng.standard_normal((N, C))).astype(np.float32)
    y = rng.integers(0, C, size=N)
    ours = fa.margin_stats(Z, y)
    base = numpy_margin_stats(Z, y)
    err = float(np.max(np.abs(ours.loss - base[1]) / np.maximum(np.abs(base[1]), 1e-6)))
    t_ours = best_of(lambda: fa.margin_stats(Z, y), repeats=7)
    t_numpy = best_of(lambda: numpy_margin_stats(Z, y), repeats=7)
    print(f"margin_stats, N={N}, C={C}, float32, CPU ({platform.processor() or platform.machine()})")
    print(f"  fa.margin_stats   {1e3 * t_ours:9.3f} ms")
    print(f"  plain NumPy       {1e3 * t_numpy:9.3f} ms")
    print(f"  ratio numpy/ours  {t_numpy / t_ours:9.2f}x   (max rel. loss difference {err:.1e})")


def make_batch(N, D, C, xp, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (3.0 / np.sqrt(D)) * rng.standard_normal((C, D)).astype(np.float32)
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(X @ W.T + gumbel, axis=1)
    theta = np.concatenate([0.5 * W.ravel(), np.zeros(C, np.float32)])
    return xp.asarray(theta), xp.asarray(X), xp.asarray(y)


def bench_steps(args):
    xp = np if args.device == "cpu" else __import__("cupy")
    N, D = 1024, 256
    damping, rtol = 1e-2, 1e-6
    print(f"Damped steps, linear head, N={N}, D={D}, float32, damping={damping}, rtol={rtol}, device={args.device}")
    header = f"{'C':>6} {'fgn cg ms':>10} {'fgn chol ms':>12} {'ggn ms':>10} {'chol/ggn':>9} {'FGN it':>7} {'GGN it':>7}"
    print(header)
    for C in args.n_classes:
        theta, X, y = make_batch(N, D, C, xp)
        lin = fa.LinearHead(D, C).linearize(theta, X, y)
        fgn = fa.fgn_step(lin, damping, solver="cg", rtol=rtol)
        ggn = fa.ggn_step(lin, damping, rtol=rtol, maxiter=args.ggn_maxiter)
        repeats = 3 if C < 10000 else 1
        t_cg = best_of(lambda: fa.fgn_step(lin, damping, solver="cg", rtol=rtol), xp=xp, repeats=repeats)
        t_ch = best_of(lambda: fa.fgn_step(lin, damping, solver="cholesky"), xp=xp, repeats=repeats)
        t_gg = best_of(lambda: fa.ggn_step(lin, damping, rtol=rtol, maxiter=args.ggn_maxiter), xp=xp, repeats=1, warmup=0)
        ggn_it = f"{ggn.n_iter}" + ("" if ggn.converged else "*")
        print(
            f"{C:>6} {1e3 * t_cg:>10.1f} {1e3 * t_ch:>12.1f} {1e3 * t_gg:>10.1f} {t_ch / t_gg:>9.3f} "
            f"{fgn.n_iter:>7} {ggn_it:>7}"
        )
    print(f"(* = ggn_step stopped at maxiter={args.ggn_maxiter} before rtol)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["margin", "steps"])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--n-classes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--ggn-maxiter", type=int, default=1000)
    args = parser.parse_args()
    {"margin": bench_margin, "steps": bench_steps}[args.what](args)


if __name__ == "__main__":
    main()
