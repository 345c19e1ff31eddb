"""TwoLayerHead on the CPU: the row-space FGN products against their GEMM floor, in one process.

Usage::

    python scripts/bench_two_layer.py                      # N=1024, D=256, H=256, C in {10, 1000}
    python scripts/bench_two_layer.py --n-classes 10 100 1000 --activation relu

Problem: float32, ``N`` rows of standard normal features, labels from a
random two-layer teacher, ``theta`` from ``init_params``; damping 1e-2,
l2 1e-4 (so ``Lam = damping I + l2 M`` has two values, as in a real step).

1. **CG iteration**: one application of the row-space matrix exactly as
   ``fgn_step``'s matvec, ``a -> a + s ⊙ J(Lam^-1 J^T (s ⊙ a))``: one margin
   VJP and one margin JVP, with ``S = Phi' ⊙ (U W2)`` already cached (it is
   built once per linearization). Its floor is the two GEMMs of each layer,
   timed on arrays of the same shapes and dtype in the same run:

   - layer 2: ``A @ V_W2^T`` ((N, H) x (H, C)) and ``G^T @ A`` ((C, N) x (N, H));
   - layer 1: ``X @ V_W1^T`` ((N, D) x (D, H)) and ``S^T @ X`` ((H, N) x (N, D)).

2. **Gram + Cholesky**: ``lin.margin_gram(ws, bs)`` with ``S`` rebuilt each
   time (the cache is dropped inside the timed call), and
   ``fgn_step(solver="cholesky")``. Floor of the Gram matrix: the GEMMs
   ``U @ W2`` (S), ``U @ U^T``, ``A @ A^T``, ``S @ S^T``, ``X @ X^T``; floor of
   the step: that plus ``scipy.linalg.cho_factor``/``cho_solve`` of an
   ``N x N`` float64 SPD matrix.

Ratios are ``ours / floor`` (1.0 = nothing but the GEMMs). Timings are best
of ``--repeats`` after a warm-up call (JIT), via ``fgn_arrays._timing.best_of``.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import scipy.linalg

import fgn_arrays as fa
from fgn_arrays.step import row_space_operator
from fgn_arrays._timing import best_of


def make_problem(N, D, H, C, activation, seed=0):
    """float32 ``(head, theta, X, y)``; labels from a random teacher of the same architecture."""
    rng = np.random.default_rng(seed)
    head = fa.TwoLayerHead(D, H, C, activation=activation)
    X = rng.standard_normal((N, D)).astype(np.float32)
    teacher = head.init_params(seed=seed + 1, dtype="float32")
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(head.logits(3.0 * teacher, X) + gumbel, axis=1)
    return head, head.init_params(seed=seed, dtype="float32"), X, y


def bench(N, D, H, C, activation, damping, l2, repeats):
    head, theta, X, y = make_problem(N, D, H, C, activation)
    lin = head.linearize(theta, X, y)
    rng = np.random.default_rng(1)
    f32 = np.float32

    # ---- 1. one CG iteration vs the two GEMMs of each layer
    matvec = row_space_operator(lin, damping, l2=l2)[2]
    alpha = rng.standard_normal(N).astype(f32)
    lin.hidden_directions  # noqa: B018  (build the cached S outside the timing)
    t_iter = best_of(lambda: matvec(alpha), repeats=repeats)

    A = lin.activations
    S = lin.hidden_directions
    G = (alpha[:, None] * lin.U).astype(f32)
    V_W1 = rng.standard_normal((H, D)).astype(f32)
    V_W2 = rng.standard_normal((C, H)).astype(f32)

    def iteration_floor():
        A @ V_W2.T  # layer 2, JVP: (N, H) x (H, C)
        G.T @ A  # layer 2, VJP: (C, N) x (N, H)
        X @ V_W1.T  # layer 1, JVP: (N, D) x (D, H)
        S.T @ X  # layer 1, VJP: (H, N) x (N, D)

    t_iter_floor = best_of(iteration_floor, repeats=repeats)

    # ---- 2. Gram matrix, and the Cholesky step, vs their GEMMs (+ the factorisation)
    ws, bs = 1 / (damping + l2), 1 / damping

    def gram():
        lin.__dict__.pop("hidden_directions", None)  # rebuild S inside the timing
        return lin.margin_gram(ws, bs)

    t_gram = best_of(gram, repeats=repeats)
    U, W2 = lin.U, lin.W2

    def gram_floor():
        U @ W2  # S: (N, C) x (C, H)
        U @ U.T  # (N, C) x (C, N)
        A @ A.T  # (N, H) x (H, N)
        S @ S.T  # (N, H) x (H, N)
        X @ X.T  # (N, D) x (D, N)

    t_gram_floor = best_of(gram_floor, repeats=repeats)

    # the step's row-space matrix: I + (s s^T) ⊙ (J Lam^-1 J^T), s = sqrt(w / N)
    s = np.sqrt(np.asarray(lin.curvature_weights, dtype=np.float64) / N)
    K = np.asarray(gram(), dtype=np.float64) * np.outer(s, s) + np.eye(N)
    rhs = rng.standard_normal(N)

    def cholesky_floor():
        scipy.linalg.cho_solve(scipy.linalg.cho_factor(K, lower=True, check_finite=False), rhs, check_finite=False)

    t_chol_floor = best_of(cholesky_floor, repeats=repeats)

    def step():
        lin.__dict__.pop("hidden_directions", None)
        return fa.fgn_step(lin, damping, l2=l2, solver="cholesky")

    t_step = best_of(step, repeats=repeats)
    return {
        "iter": t_iter,
        "iter_floor": t_iter_floor,
        "gram": t_gram,
        "gram_floor": t_gram_floor,
        "step": t_step,
        "step_floor": t_gram_floor + t_chol_floor,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1024)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--n-hidden", type=int, default=256)
    parser.add_argument("--n-classes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--activation", choices=["tanh", "relu", "gelu"], default="tanh")
    parser.add_argument("--damping", type=float, default=1e-2)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    N, D, H = args.n_samples, args.n_features, args.n_hidden
    print(
        f"TwoLayerHead({args.activation}), N={N}, D={D}, H={H}, float32, CPU "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs), best of {args.repeats}"
    )
    print(
        f"{'C':>6} {'CG iter ms':>11} {'floor ms':>9} {'ratio':>6}   "
        f"{'gram ms':>8} {'floor ms':>9} {'ratio':>6}   {'chol step ms':>13} {'floor ms':>9} {'ratio':>6}"
    )
    for C in args.n_classes:
        t = bench(N, D, H, C, args.activation, args.damping, args.l2, args.repeats)
        print(
            f"{C:>6} {1e3 * t['iter']:>11.3f} {1e3 * t['iter_floor']:>9.3f} {t['iter'] / t['iter_floor']:>6.2f}   "
            f"{1e3 * t['gram']:>8.2f} {1e3 * t['gram_floor']:>9.2f} {t['gram'] / t['gram_floor']:>6.2f}   "
            f"{1e3 * t['step']:>13.2f} {1e3 * t['step_floor']:>9.2f} {t['step'] / t['step_floor']:>6.2f}"
        )
    print("floors: CG iter = A V_W2^T + G^T A + X V_W1^T + S^T X; gram = U W2 + U U^T + A A^T + S S^T + X X^T;")
    print("        chol step = gram floor + cho_factor/cho_solve (N x N, float64)")


if __name__ == "__main__":
    main()
