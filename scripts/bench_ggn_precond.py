"""CG iterations of the damped GGN step: no preconditioner, Jacobi, and the FGN system, side by side.

Usage::

    python scripts/bench_ggn_precond.py [--min-per-class 50] [--rtol 1e-4] [--curvature-rows 2048]

Problem: ``load_wordnet_glosses(min_per_class)`` (float32), ``LinearHead``,
``l2 = 1 / (10 N)``. Points: ``theta`` after 0, 3 and 8 steps of
``minimize(method="ggn-pcg")`` (the trajectory the method follows). At each
point and each damping ``lambda`` the script solves
``(G_GGN + l2 M + lambda I) delta = -g`` to ``||H delta + g|| <= rtol ||g||``
with parameter-space CG and three preconditioners:

- ``none``;
- ``jacobi``: ``1 / diag(H)`` (``fgn_arrays.precondition.ggn_diagonal``);
- ``fgn``: the damped FGN system on ``--curvature-rows`` random rows through
  its row-space Woodbury form (``FGNPreconditioner``, as ``"ggn-pcg"`` uses
  it), its Cholesky factor made once per solve (included in the time).

It prints CG iterations, seconds per solve and whether the step converged
(``maxiter`` 3000).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fgn_arrays as fa
from fgn_arrays.curvature import _ggn
from fgn_arrays.precondition import FGNPreconditioner
from fgn_arrays.step import _on_host, _objective_grad, _parameter_space_step, _preconditioner

MAXITER = 3000


def solve(lin, damping, l2, rtol, precond):
    g = _objective_grad(lin, l2)
    t0 = time.perf_counter()
    M = precond() if callable(precond) else _preconditioner(lin, lin, damping, l2, precond)
    step = _on_host(_parameter_space_step(lin, g, damping, l2, _ggn, rtol, MAXITER, M), rtol)
    return step, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-per-class", type=int, default=50)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--curvature-rows", type=int, default=2048)
    parser.add_argument("--dampings", type=float, nargs="+", default=[1e-1, 1e-3, 1e-5])
    args = parser.parse_args()

    data = fa.datasets.load_wordnet_glosses(min_per_class=args.min_per_class)
    X, y = data.X, data.y
    N, D = X.shape
    C = int(y.max()) + 1
    l2 = 1 / (10 * N)
    head = fa.LinearHead(D, C)
    rng = np.random.default_rng(0)
    print(f"WordNet min_per_class={args.min_per_class}: N={N}, D={D}, C={C}, float32, l2=1/(10N), "
          f"rtol={args.rtol}, FGN preconditioner on {args.curvature_rows} rows\n")
    print("| steps | damping | preconditioner | CG iterations | s per solve | converged |")
    print("|---:|---:|---|---:|---:|---|")
    theta0 = np.zeros(head.n_params, np.float32)
    for k in (0, 3, 8):
        theta = theta0 if k == 0 else fa.minimize(head, theta0, X, y, l2=l2, method="ggn-pcg", max_iter=k,
                                                  tol=0.0).theta
        lin = head.linearize(theta, X, y)
        for damping in args.dampings:
            rows = np.sort(rng.choice(N, min(N, args.curvature_rows), replace=False))
            curv = lin._take(rows)
            for name, precond in (("none", None), ("jacobi", "jacobi"),
                                  ("fgn", lambda: FGNPreconditioner(curv, damping, l2))):
                step, seconds = solve(lin, damping, l2, args.rtol, precond)
                print(f"| {k} | {damping:.0e} | {name} | {step.n_iter} | {seconds:.3f} | {step.converged} |",
                      flush=True)


if __name__ == "__main__":
    main()
