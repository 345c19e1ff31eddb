"""Time to target of the optimizer methods, side by side with scikit-learn, in one run per problem.

Usage::

    python scripts/bench_methods.py --quick --problem all          # smoke run, well under a minute a problem
    python scripts/bench_methods.py --problem wordnet50            # the full problem (minutes)
    python scripts/bench_methods.py --problem wordnet20 spread two-layer --methods fgn-compensated ggn-pcg
    python scripts/bench_methods.py --problem all --out methods.md

Methods (``fa.minimize(..., method=...)``): ``fgn`` (damped FGN with
Levenberg-Marquardt damping, every row in the curvature), ``fgn-compensated``
(Kronecker stand-in for the dropped covariance, curvature subsample, plane
correction) and ``ggn-pcg`` (damped full-GGN step by CG preconditioned by the
FGN system). Every FGN fit is float32, ``random_state=--seed``, ``tol=1e-12``
(the gradient test never stops it; ``minimize`` still stops once a step's
change is below float32's resolution, and the table says so), otherwise the
method's defaults.

**Linear head** (``--problem wordnet50 | wordnet20 | spread``). Objective
``mean CE + l2/2 ||W||^2`` with ``l2 = 1 / (10 N)`` (``LogisticRegression(C=10)``),
evaluated in float64 from its definition for every method.

1. Reference runs: ``LogisticRegression(solver="newton-cg", tol=1e-10)`` and
   ``solver="lbfgs", tol=1e-10`` (float64 features, ``--sklearn-dtype``),
   and one fit per FGN method of at most ``--fgn-max-iter`` steps, its float64
   objective taken after every step (by the callback; it stops the run once
   the objective is ``1e-7`` relative above newton-cg's). ``f*`` is the best
   objective of all of them.
2. Targets ``f* (1 + 1e-3)`` and ``f* (1 + 1e-6)``. scikit-learn: the smallest
   ``max_iter`` whose fit reaches the target (bisection; its fits are
   deterministic, so a smaller ``max_iter`` is a prefix of a larger one),
   that fit timed. FGN: the first step of the reference run whose float64
   objective reaches the target, then a fit with ``max_iter`` set to that
   step (the same trajectory), timed from ``init_params`` to the return of
   ``minimize``, and its float64 objective checked (one more step is tried
   when float32 rounding leaves it a hair above).
3. Table: time to each target, the ratio to the fastest scikit-learn solver
   (1e-3) and to newton-cg (1e-6), and the steps. A target not reached
   within ``max_iter`` says "not reached".

**Two-layer head** (``--problem two-layer``): ``TwoLayerHead(D, 256, C,
"relu")`` on ``load_wordnet_glosses(min_per_class=20)``, a stratified 80/20
split (seeded), ``l2 = 1 / (10 N_train)``; objective
``mean CE + l2/2 (||W1||^2 + ||W2||^2)`` (biases free, as ``TwoLayerHead``'s
``weight_mask`` and ``MLPClassifier``'s ``alpha``), in float64.

1. ``MLPClassifier(hidden_layer_sizes=(256,), activation="relu",
   alpha=l2 N_train, max_iter=200)`` with ``solver="adam"`` and ``"lbfgs"``
   (float32 features, as FGN): time, final training objective computed from
   ``coefs_``/``intercepts_``, test accuracy.
2. Each FGN method: the time to reach each MLP's training objective (first
   step below it, then a fit with ``max_iter`` set to that step, timed) and
   the test accuracy of that fit. Ratio: FGN time / the faster MLP's time.

``--quick`` shrinks every problem (classes, rows; spread's features; hidden
units; iteration caps; see ``QUICK``) so that a problem finishes in well under a minute:
a smoke test of the script, not a measurement; it runs on one thread
(``--threads``) unless told otherwise. Progress goes to stderr; the
report (machine, command, tables) to stdout and, with ``--out``, to a
markdown file. Times are the best of ``--repeats`` fits.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from typing import Any, NamedTuple

import numpy as np

import fgn_arrays as fa
from fgn_arrays._timing import best_of

METHODS = ("fgn", "fgn-compensated", "ggn-pcg")
PROBLEMS = ("wordnet50", "wordnet20", "spread", "two-layer")
LINEAR_TARGETS = (1e-3, 1e-6)
# Every FGN fit: the gradient test never stops it (max_iter, the callback or float32's resolution do).
FGN_TOL = 1e-12
# The reference FGN runs stop this far (relative) above newton-cg's objective, past the 1e-6 target.
REFERENCE_STOP = 1e-7
# A timed FGN fit whose float64 objective is above the target is extended by a step, at most this often.
EXTRA_STEPS = 3

# Sizes of --quick: a smoke test of the script (classes and rows kept, spread's features; iteration caps).
QUICK = dict(
    wordnet50=dict(n_classes=12, n_rows=1500),
    wordnet20=dict(n_classes=24, n_rows=1500),
    spread=dict(n_samples=1500, n_features=64, n_classes=30),
    two_layer=dict(n_classes=12, n_rows=1200, hidden=32, mlp_max_iter=40),
    fgn_max_iter=200,
    sklearn_max_iter=2000,
)


class Hit(NamedTuple):
    """A run to a target: ``seconds`` and ``steps`` are None when it did not get there (``note`` says why)."""

    seconds: float | None
    steps: int | None
    f: float | None = None
    theta: Any = None
    note: str = ""


# ---- FGN methods: every fit goes through fgn_fit -----------------------------------------------


def fgn_fit(head, X, y, l2, method, max_iter, seed, callback=None):
    """``(result, seconds)``: ``init_params`` then ``minimize(method=method)``, timed together."""
    t0 = time.perf_counter()
    theta0 = head.init_params(seed=seed, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fa.minimize(head, theta0, X, y, method=method, l2=l2, tol=FGN_TOL, max_iter=max_iter,
                             random_state=seed, callback=callback)
    return result, time.perf_counter() - t0


def fgn_reference(head, X, y, l2, method, max_iter, seed, objective64, stop_below):
    """The reference run: float64 objective after every step (callback), stopped below ``stop_below``.

    Returns ``(objectives, result)``, ``objectives[k]`` after step ``k + 1``.
    """
    objectives = []

    def callback(theta, record):
        objectives.append(objective64(theta))
        return objectives[-1] <= stop_below

    result, _ = fgn_fit(head, X, y, l2, method, max_iter, seed, callback)
    return np.asarray(objectives), result


def fgn_time_to(head, X, y, l2, method, seed, objectives, target, objective64, repeats):
    """The :class:`Hit` of a fit stopped at the first step of ``objectives`` at or below ``target``.

    ``f`` is its float64 objective. Not reached when the reference run never
    got there, or when the timed fits stay above it (the trajectory differs).
    """
    hits = np.flatnonzero(objectives <= target)
    if len(hits) == 0:
        return Hit(None, None)
    steps = int(hits[0]) + 1
    for _ in range(EXTRA_STEPS + 1):
        out = {}

        def fit():
            out["result"], _ = fgn_fit(head, X, y, l2, method, steps, seed)

        seconds = best_of(fit, repeats=repeats, warmup=0)
        f = objective64(out["result"].theta)
        if f <= target:
            break
        steps += 1  # the trajectory drifted from the reference run by rounding
    else:
        return Hit(None, None, f, note=f"timed fits to step {steps} stayed above it, at {f:.10f}")
    return Hit(seconds, steps, f, out["result"].theta)


# ---- float64 objectives from the definitions ------------------------------------------------


def mean_ce(Z, y):
    """Mean softmax cross-entropy of float64 logits ``Z (N, C)``."""
    Z = Z - Z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(y)), y]))


def linear_objective(X64, y, W, b, l2):
    """``mean CE(X W^T + b) + l2/2 ||W||^2`` in float64."""
    W, b = np.asarray(W, np.float64), np.asarray(b, np.float64)
    return mean_ce(X64 @ W.T + b, y) + 0.5 * l2 * float(np.sum(W * W))


def two_layer_logits(X64, W1, b1, W2, b2):
    """``relu(X W1^T + b1) W2^T + b2`` in float64 (``W1 (H, D)``, ``W2 (C, H)``)."""
    f64 = np.float64
    A = np.maximum(X64 @ np.asarray(W1, f64).T + np.asarray(b1, f64), 0.0)
    return A @ np.asarray(W2, f64).T + np.asarray(b2, f64)


def two_layer_objective(X64, y, W1, b1, W2, b2, l2):
    """``mean CE + l2/2 (||W1||^2 + ||W2||^2)`` in float64 (biases not penalised)."""
    penalty = sum(float(np.sum(np.asarray(W, np.float64) ** 2)) for W in (W1, W2))
    return mean_ce(two_layer_logits(X64, W1, b1, W2, b2), y) + 0.5 * l2 * penalty


# ---- scikit-learn ------------------------------------------------------------------------------


def cap(args, method):
    """The reference run's step cap of ``method``."""
    if method == "fgn" and args.plain_fgn_max_iter is not None:
        return args.plain_fgn_max_iter
    return args.fgn_max_iter


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


def sklearn_time_to(X, y, C, solver, target, max_iter_hi, objective64, repeats):
    """The :class:`Hit` (``steps = max_iter``) of the smallest ``max_iter <= max_iter_hi`` reaching ``target``.

    Not reached when the fit at ``max_iter_hi`` does not reach it.
    """

    def reaches(max_iter):
        model, _ = sklearn_fit(X, y, C, solver, 1e-12, max_iter)
        return objective64(model.coef_, model.intercept_) <= target

    if not reaches(max_iter_hi):
        return Hit(None, None, note=f"max_iter {max_iter_hi}")
    lo, hi = 0, max_iter_hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    seconds = best_of(lambda: sklearn_fit(X, y, C, solver, 1e-12, hi), repeats=repeats, warmup=0)
    return Hit(seconds, hi)


# ---- problems ----------------------------------------------------------------------------------


def subsample(X, y, n_classes, n_rows, seed):
    """The ``n_classes`` largest classes, at most ``n_rows`` of their rows at random, labels ``0 ..``."""
    counts = np.bincount(y)
    kept = np.sort(np.argsort(counts, kind="stable")[::-1][:n_classes])
    rows = np.flatnonzero(np.isin(y, kept))
    rng = np.random.default_rng(seed)
    if len(rows) > n_rows:
        rows = np.sort(rng.choice(rows, n_rows, replace=False))
    return X[rows], np.searchsorted(kept, y[rows])


def load_linear(name, quick, seed):
    """``(X float32, y, description)`` of a linear-head problem."""
    if name in ("wordnet50", "wordnet20"):
        min_per_class = 50 if name == "wordnet50" else 20
        data = fa.datasets.load_wordnet_glosses(min_per_class=min_per_class)
        X, y = data.X, data.y
        desc = f"`load_wordnet_glosses(min_per_class={min_per_class})`"
        if quick:
            X, y = subsample(X, y, seed=seed, **QUICK[name])
            desc += " subsampled (--quick)"
        return X.astype(np.float32), y, desc
    sizes = QUICK["spread"] if quick else dict(n_samples=12000, n_features=256, n_classes=300)
    X, y, _ = fa.datasets.make_heads_problem(**sizes, competitor_concentration=0.0, dtype="float32")
    args = ", ".join(str(v) for v in sizes.values())
    return X, y, f"`make_heads_problem({args}, competitor_concentration=0.0)`" + (" (--quick)" if quick else "")


# ---- report ------------------------------------------------------------------------------------


class Report:
    """Lines printed to stdout as they come and kept for ``--out``."""

    def __init__(self):
        self.lines = []

    def __call__(self, line=""):
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header, rows):
        self("| " + " | ".join(header) + " |")
        self("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            self("| " + " | ".join(row) + " |")
        self()


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stop_note(result):
    """Where and why a reference run stopped, e.g. "stopped at 75: converged: ..."."""
    return f"stopped at {result.n_iter}: {result.status}"


def fmt_s(seconds):
    return "not reached" if seconds is None else f"{seconds:.3f}"


def fmt_ratio(num, den):
    if num is None or den is None:
        return "–"
    return f"{num / den:.2f}"


def limit_threads(n):
    """BLAS and OpenMP pools (threadpoolctl) and Numba's to ``n`` threads, for the whole run."""
    import numba
    import sklearn.linear_model  # noqa: F401  (threadpoolctl limits only the libraries loaded so far)
    import sklearn.neural_network  # noqa: F401

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit("--threads needs threadpoolctl (pip install threadpoolctl)")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # first: it loads Numba's OpenMP runtime
    threadpool_limits(limits=n)


def machine_info(report):
    import scipy
    import sklearn

    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), check=False).stdout.strip()
    except OSError:
        rev = ""
    try:
        from threadpoolctl import threadpool_info

        pools = "; ".join(
            f"{p['internal_api']} ({p['user_api']}) {p['num_threads']} threads" for p in threadpool_info()
        )
    except ImportError:
        pools = "threadpoolctl not installed"
    import numba

    pools += f"; numba {numba.__version__} {numba.get_num_threads()} threads"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    report("## Machine")
    report()
    report(f"- command: `{shlex.join([sys.executable, *sys.argv])}`")
    report(f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
           f"{affinity} usable; {platform.platform()}")
    report(f"- Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
           f"scikit-learn {sklearn.__version__}, fgn_arrays {fa.__version__} ({rev or 'no git'})")
    report(f"- thread pools: {pools}")
    report()


# ---- problem runs ------------------------------------------------------------------------------


def run_linear(name, args, report):
    X, y, desc = load_linear(name, args.quick, args.seed)
    N, D = X.shape
    C = int(y.max()) + 1
    l2 = 1.0 / (10 * N)
    C_sk = 1.0 / (l2 * N)
    X_sk = X.astype(args.sklearn_dtype)
    X64 = X.astype(np.float64)
    head = fa.LinearHead(D, C)

    def objective_sk(W, b):
        return linear_objective(X64, y, W, b, l2)

    def objective_theta(theta):
        return linear_objective(X64, y, *head.unflatten(np.asarray(theta)), l2)

    report(f"## {name}: linear head")
    report()
    report(f"{desc}: N={N}, D={D}, C={C}; l2 = 1/(10 N) = {l2:.3g} (LogisticRegression C={C_sk:g}); "
           f"scikit-learn on {args.sklearn_dtype}, FGN on float32, objectives in float64.")
    report()

    # 1. reference runs
    progress(f"{name}: newton-cg tol 1e-10")
    ref, _ = sklearn_fit(X_sk, y, C_sk, "newton-cg", 1e-10, args.sklearn_max_iter)
    candidates = {"newton-cg tol 1e-10": objective_sk(ref.coef_, ref.intercept_)}
    hi = {"newton-cg": int(np.max(ref.n_iter_))}
    progress(f"{name}: lbfgs tol 1e-10")
    ref, _ = sklearn_fit(X_sk, y, C_sk, "lbfgs", 1e-10, args.sklearn_max_iter)
    candidates["lbfgs tol 1e-10"] = objective_sk(ref.coef_, ref.intercept_)
    hi["lbfgs"] = int(np.max(ref.n_iter_))
    stop_below = candidates["newton-cg tol 1e-10"] * (1 + REFERENCE_STOP)
    curves, stops = {}, {}
    for method in args.methods:
        progress(f"{name}: {method} reference run (at most {cap(args, method)} steps)")
        curves[method], result = fgn_reference(head, X, y, l2, method, cap(args, method), args.seed,
                                               objective_theta, stop_below)
        stops[method] = stop_note(result)
        if len(curves[method]):
            candidates[f"{method} run"] = float(curves[method].min())
    f_star_source = min(candidates, key=candidates.get)
    f_star = candidates[f_star_source]
    report(f"f* = {f_star:.10f} (best of: " + ", ".join(f"{k} {v:.10f}" for k, v in candidates.items()) + ")")
    report()

    # 2. time to each target
    rows = {}
    for solver in ("lbfgs", "newton-cg"):
        rows[f"sklearn {solver}"] = {}
        bound = hi[solver]
        for rel in sorted(LINEAR_TARGETS):  # tighter target first: its max_iter bounds the looser one's
            progress(f"{name}: sklearn {solver} to f* (1 + {rel:g}) (bisection up to max_iter {bound})")
            hit = sklearn_time_to(X_sk, y, C_sk, solver, f_star * (1 + rel), bound, objective_sk, args.repeats)
            rows[f"sklearn {solver}"][rel] = hit
            bound = hit.steps or bound
    for method, curve in curves.items():
        rows[method] = {}
        for rel in LINEAR_TARGETS:
            progress(f"{name}: {method} to f* (1 + {rel:g})")
            rows[method][rel] = fgn_time_to(head, X, y, l2, method, args.seed, curve, f_star * (1 + rel),
                                            objective_theta, args.repeats)

    # 3. table
    loose, tight = LINEAR_TARGETS
    sk_fast = [rows[f"sklearn {s}"][loose].seconds for s in ("lbfgs", "newton-cg")]
    sk_fast = min((t for t in sk_fast if t is not None), default=None)
    newton_tight = rows["sklearn newton-cg"][tight].seconds
    table = []
    for label, r in rows.items():
        a, b = r[loose], r[tight]
        sk = label.startswith("sklearn")
        steps = " / ".join("–" if h.steps is None else str(h.steps) for h in (a, b)) + (" iter" if sk else " steps")
        notes = [h.note for h in (a, b) if h.note]
        if not sk and None in (a.seconds, b.seconds):
            notes.append(stops[label])
        if notes:
            steps += " (" + "; ".join(dict.fromkeys(notes)) + ")"
        table.append([label, fmt_s(a.seconds), fmt_ratio(a.seconds, sk_fast), fmt_s(b.seconds),
                      fmt_ratio(b.seconds, newton_tight), steps])
    report.table(
        ["method", f"s to {loose:g}", "ratio to fastest sklearn", f"s to {tight:g}", "ratio to newton-cg",
         f"steps to {loose:g} / {tight:g}"],
        table,
    )
    report(f"Targets f* (1 + {loose:g}) = {f_star * (1 + loose):.10f} and f* (1 + {tight:g}) = "
           f"{f_star * (1 + tight):.10f}; scikit-learn iterations are its `max_iter` (bisection), FGN steps are "
           f"steps tried (accepted or not). FGN reference runs (cap {args.fgn_max_iter} steps, "
           f"{cap(args, 'fgn')} for fgn): "
           + "; ".join(f"{m} {stops[m]}, best {curves[m].min():.10f}" for m in curves if len(curves[m])) + ".")
    report()


def run_two_layer(args, report):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    data = fa.datasets.load_wordnet_glosses(min_per_class=20)
    X, y = data.X.astype(np.float32), data.y
    desc = "`load_wordnet_glosses(min_per_class=20)`"
    hidden, mlp_max_iter = args.hidden or 256, 200
    if args.quick:
        q = QUICK["two_layer"]
        X, y = subsample(X, y, q["n_classes"], q["n_rows"], args.seed)
        desc += " subsampled (--quick)"
        hidden, mlp_max_iter = args.hidden or q["hidden"], q["mlp_max_iter"]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=args.seed)
    N, D = X_tr.shape
    C = int(y.max()) + 1
    l2 = 1.0 / (10 * N)
    X64_tr, X64_te = X_tr.astype(np.float64), X_te.astype(np.float64)
    head = fa.TwoLayerHead(D, hidden, C, activation="relu")

    def objective_theta(theta):
        return two_layer_objective(X64_tr, y_tr, *head.unflatten(np.asarray(theta)), l2)

    def accuracy_theta(theta):
        return float(np.mean(np.argmax(two_layer_logits(X64_te, *head.unflatten(np.asarray(theta))), 1) == y_te))

    report("## two-layer: TwoLayerHead(relu) against MLPClassifier")
    report()
    report(f"{desc}, stratified 80/20 split (seed {args.seed}): N_train={N}, N_test={len(y_te)}, D={D}, "
           f"H={hidden}, C={C}; l2 = 1/(10 N_train) = {l2:.3g} (MLP alpha = l2 N_train = {l2 * N:g}); "
           f"float32 features for both, objectives in float64.")
    report()

    mlps = {}
    for solver in ("adam", "lbfgs"):
        progress(f"two-layer: MLPClassifier solver={solver}, max_iter={mlp_max_iter}")
        out = {}

        def fit():
            model = MLPClassifier(hidden_layer_sizes=(hidden,), activation="relu", alpha=l2 * N, solver=solver,
                                  max_iter=mlp_max_iter, random_state=args.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                out["model"] = model.fit(X_tr, y_tr)

        seconds = best_of(fit, repeats=args.repeats, warmup=0)
        model = out["model"]
        assert np.array_equal(model.classes_, np.arange(C)), "every class must be in the training split"
        (W1t, W2t), (b1, b2) = model.coefs_, model.intercepts_
        f = two_layer_objective(X64_tr, y_tr, W1t.T, b1, W2t.T, b2, l2)
        acc = float(np.mean(np.argmax(two_layer_logits(X64_te, W1t.T, b1, W2t.T, b2), 1) == y_te))
        mlps[solver] = dict(seconds=seconds, objective=f, accuracy=acc, n_iter=int(model.n_iter_))
    fastest = min(m["seconds"] for m in mlps.values())

    stop_below = min(m["objective"] for m in mlps.values())
    table = [
        [f"MLP {s}", f"{m['objective']:.6f}", f"{m['seconds']:.3f}", fmt_ratio(m["seconds"], fastest), "–",
         f"{m['accuracy']:.4f}", f"{m['n_iter']} iter"]
        for s, m in mlps.items()
    ]
    for method in args.methods:
        progress(f"two-layer: {method} reference run (at most {cap(args, method)} steps)")
        curve, result = fgn_reference(head, X_tr, y_tr, l2, method, cap(args, method), args.seed, objective_theta,
                                      stop_below)
        for solver, m in mlps.items():
            progress(f"two-layer: {method} to MLP {solver}'s objective")
            hit = fgn_time_to(head, X_tr, y_tr, l2, method, args.seed, curve, m["objective"], objective_theta,
                              args.repeats)
            label = f"{method} to MLP {solver}'s"
            if hit.seconds is None:
                best = f"{curve.min():.6f}" if len(curve) else "–"
                table.append([label, f"not reached (best {best})", "not reached", "–", "–", "–",
                              f"– ({hit.note or stop_note(result)})"])
                continue
            table.append([label, f"{hit.f:.6f}", f"{hit.seconds:.3f}", fmt_ratio(hit.seconds, fastest),
                          fmt_ratio(hit.seconds, m["seconds"]), f"{accuracy_theta(hit.theta):.4f}",
                          f"{hit.steps} steps"])
    report.table(
        ["method", "training objective", "s", "ratio to faster MLP", "ratio to that MLP", "test accuracy", "steps"],
        table,
    )
    report(f"MLP rows: a fit of max_iter={mlp_max_iter} (epochs for adam, iterations for lbfgs). FGN rows: the "
           f"first step whose training objective is at or below that MLP's, fitted with max_iter set to it "
           f"(reference runs capped at {args.fgn_max_iter} steps, {cap(args, 'fgn')} for fgn).")
    report()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", nargs="+", choices=(*PROBLEMS, "all"), default=["wordnet50"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="tiny problems: a smoke test (< 1 minute each)")
    parser.add_argument("--seed", type=int, default=0, help="FGN random_state, subsampling and split")
    parser.add_argument("--repeats", type=int, default=1, help="timed fits are the best of this many")
    parser.add_argument("--fgn-max-iter", type=int, default=None, help="cap of the FGN reference runs "
                        f"(default 1000, --quick {QUICK['fgn_max_iter']})")
    parser.add_argument("--plain-fgn-max-iter", type=int, default=None,
                        help="cap of the plain 'fgn' reference run (default: --fgn-max-iter); its steps are the "
                             "slowest, on every row")
    parser.add_argument("--sklearn-max-iter", type=int, default=None, help="max_iter of the tol 1e-10 "
                        f"scikit-learn runs (default 10000, --quick {QUICK['sklearn_max_iter']})")
    parser.add_argument("--sklearn-dtype", choices=["float64", "float32"], default="float64",
                        help="features given to LogisticRegression (f* always in float64)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden units of two-layer (default 256, "
                        f"--quick {QUICK['two_layer']['hidden']})")
    parser.add_argument("--threads", type=int, default=None, help="limit BLAS, OpenMP and Numba to this many "
                        "threads (default: as they are; --quick: 1, as on a shared machine idle threads spin)")
    parser.add_argument("--out", help="also write the report to this markdown file")
    args = parser.parse_args()
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None:
        limit_threads(args.threads)
    problems = PROBLEMS if "all" in args.problem else tuple(dict.fromkeys(args.problem))
    if args.fgn_max_iter is None:
        args.fgn_max_iter = QUICK["fgn_max_iter"] if args.quick else 1000
    if args.sklearn_max_iter is None:
        args.sklearn_max_iter = QUICK["sklearn_max_iter"] if args.quick else 10000

    report = Report()
    report("# Optimizer methods: time to target" + (" (--quick smoke run: not a measurement)" if args.quick else ""))
    report()
    machine_info(report)
    for name in problems:
        t0 = time.perf_counter()
        if name == "two-layer":
            run_two_layer(args, report)
        else:
            run_linear(name, args, report)
        progress(f"{name}: done in {time.perf_counter() - t0:.1f} s")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(report.lines) + "\n")
        progress(f"report written to {args.out}")


if __name__ == "__main__":
    main()
