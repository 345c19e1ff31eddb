"""Time to scikit-learn's optimum on the bundled WordNet features, FGN against scikit-learn, in one run.

Usage::

    python scripts/bench_wordnet.py [--min-per-class 50] [--max-seconds 120]

Problem: ``load_wordnet_glosses(min_per_class=50)`` (N=15,260, D=384, C=133),
``l2 = 1 / (10 N)``, i.e. ``LogisticRegression(C=10)``. The objective is
``mean CE + l2/2 ||W||^2``, evaluated in float64 for every method.

1. The optimum ``f*``: ``LogisticRegression(solver="newton-cg", tol=1e-8)``.
2. scikit-learn's ``lbfgs`` and ``newton-cg`` at ``tol=1e-4``: wall time and
   objective reached; and the time each needs to reach ``f* (1 + 1e-3)``
   (the smallest ``max_iter`` whose fit gets there, timed again).
3. ``FGNClassifier`` with its defaults apart from ``l2`` (float32) and
   ``max_iter``: the smallest ``max_iter`` (doubling) whose fit reaches
   ``f* (1 + 1e-3)``, and that fit's time, or "not reached" once a fit takes
   longer than ``--max-seconds``.

It prints the table and the ratio FGN time / fastest scikit-learn time.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import fgn_arrays as fa


def objective(X, y, W, b, l2):
    """mean softmax CE + l2/2 ||W||^2 in float64, straight from the definition."""
    Z = X.astype(np.float64) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    Z -= Z.max(axis=1, keepdims=True)
    log_p = Z[np.arange(len(y)), y] - np.log(np.exp(Z).sum(axis=1))
    return float(-log_p.mean() + 0.5 * l2 * np.sum(np.asarray(W, np.float64) ** 2))


def sklearn_fit(X, y, C, solver, tol, max_iter):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, solver=solver, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - t0
    return model, seconds


def sklearn_time_to(X, y, C, l2, solver, target, max_iter_cap=500):
    """Smallest max_iter (doubling) whose fit reaches ``target``, and that fit's time."""
    max_iter = 1
    while max_iter <= max_iter_cap:
        model, seconds = sklearn_fit(X, y, C, solver, 1e-12, max_iter)
        if objective(X, y, model.coef_, model.intercept_, l2) <= target:
            return seconds, max_iter
        max_iter *= 2
    return float("nan"), max_iter_cap


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-per-class", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()

    data = fa.datasets.load_wordnet_glosses(args.min_per_class)
    X, y = data.X, data.y
    N = X.shape[0]
    l2 = 1.0 / (10 * N)
    C = 1.0 / (l2 * N)
    print(f"WordNet glosses: N={N}, D={X.shape[1]}, C={int(y.max()) + 1}, l2=1/(10 N), sklearn C={C:g}")

    opt, _ = sklearn_fit(X, y, C, "newton-cg", 1e-8, 1000)
    f_star = objective(X, y, opt.coef_, opt.intercept_, l2)
    target = f_star * (1 + 1e-3)
    print(f"optimum f* = {f_star:.7f} (newton-cg, tol 1e-8); target f* (1 + 1e-3) = {target:.7f}")

    rows = []
    for solver in ("lbfgs", "newton-cg"):
        model, seconds = sklearn_fit(X, y, C, solver, 1e-4, 1000)
        f = objective(X, y, model.coef_, model.intercept_, l2)
        t_target, iters = sklearn_time_to(X, y, C, l2, solver, target)
        rows.append((f"sklearn {solver}", f, seconds, t_target, f"max_iter={iters}"))

    # FGNClassifier: the smallest max_iter (doubling) whose fit reaches the target.
    max_iter, t_target, clf, seconds = 1, float("nan"), None, 0.0
    while max_iter <= 256 and seconds <= args.max_seconds:
        clf = fa.FGNClassifier(l2=l2, device="cpu", max_iter=max_iter)
        t0 = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - t0
        f = objective(X, y, clf.coef_, clf.intercept_, l2)
        if f <= target:
            t_target = seconds
            break
        max_iter *= 2
    rows.append(("FGNClassifier (defaults)", f, seconds, t_target, f"max_iter={max_iter}"))

    print(f"{'method':<26} {'objective':>11} {'fit s':>8} {'s to target':>12}  note")
    for name, f, s, t, note in rows:
        print(f"{name:<26} {f:>11.7f} {s:>8.2f} {t:>12.2f}  {note}")
    fastest = np.nanmin([r[3] for r in rows[:2]])
    fgn_t = rows[-1][3]
    if np.isfinite(fgn_t):
        print(f"ratio FGN / fastest sklearn time to target = {fgn_t / fastest:.2f} (target <= 0.5)")
    else:
        print(f"FGN did not reach the target within {args.max_seconds:.0f} s; fastest sklearn: {fastest:.2f} s")


if __name__ == "__main__":
    main()
