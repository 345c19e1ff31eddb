"""Experiment 3: training a fixed-feature softmax head on WordNet glosses, by every method.

Setup
-----
Data: :func:`fgn_arrays.datasets.load_wordnet_glosses`, all 601 classes
(``min_per_class=20``) and the 133-class subset (``min_per_class=50``),
split 80/20 stratified (seed 0, :func:`fgn_arrays.cli.stratified_split`).
Heads: ``LinearHead(384, C)`` and ``TwoLayerHead(384, 128, C, "relu")``,
started from ``init_params(seed=0)``. Objective:
``mean CE + (l2/2) ||weights||^2`` with ``l2 = 1 / (10 N_train)``
(``LogisticRegression(C=10)``). Every method runs in float32 on one CPU
process and stops at its wall-time budget (or earlier, at convergence):

``fgn``
    The paper's plain damped FGN step with Levenberg-Marquardt damping
    (:func:`fgn_arrays.minimize`, ``method="fgn"``).
``default``
    The library's default method (``fgn-compensated``).
``ggn-cg``
    Full-GGN steps by CG (``method="ggn-pcg"``): the exact-curvature baseline.
``lbfgs``
    ``scipy.optimize.minimize(method="L-BFGS-B")`` on the same objective and
    gradient (the head's ``linearize``), float64 iterates.
``adam``, ``sgd-momentum``
    Mini-batch (256 rows, reshuffled each epoch) Adam and SGD with momentum
    0.9, written here in NumPy, each over a small learning-rate grid; every
    learning rate gets the full budget and the table reports the best.
``sklearn-lbfgs``, ``sklearn-newton-cg``
    ``LogisticRegression(C=1/(l2 N), tol=1e-4)`` (linear head only), float64
    features, with a fixed ``max_iter``.

The **final objective** of every method is recomputed in float64 from its
parameters, so all rows are on the same scale. **Passes** over the data
count full-data gradient-sized products: one per objective-and-gradient
evaluation, one per CG iteration on all rows (a margin or logit JVP plus a
VJP) and ``rows / N`` per CG iteration on ``rows`` curvature rows; one per
epoch for the mini-batch methods; scikit-learn's ``lbfgs`` iterations (one
evaluation each, a lower bound); none counted for ``newton-cg``.

**Along the FGN trajectory**, at the point and damping of each step, on a
fixed random subset of the training rows (float64): ``cos(delta_FGN,
delta_GGN)`` and the dropped-energy ratio
``delta_GGN^T G_dropped delta_GGN / delta_GGN^T G_GGN delta_GGN``
(:func:`fgn_arrays.fgn_step`, :func:`fgn_arrays.ggn_step` with the FGN
preconditioner). Their cost is not in the method's time.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy

from ..cli import stratified_split
from ..curvature import dropped_matvec, ggn_matvec
from ..datasets import load_wordnet_glosses
from ..heads import LinearHead, TwoLayerHead
from ..optim import DEFAULT_METHOD, minimize
from ..step import fgn_step, ggn_step

__all__ = ["CONFIGS", "QUICK_CONFIGS", "Config", "run"]

HIDDEN = 128
BATCH_SIZE = 256
MOMENTUM = 0.9
ADAM_LRS = (1e-3, 3e-3, 1e-2)
SGD_LRS = (0.3, 1.0, 3.0)
CURVATURE_ROWS = 2048  # the default method's and ggn-pcg's curvature rows (minimize's "auto")
GN_METHODS = {"fgn": "fgn", "default": DEFAULT_METHOD, "ggn-cg": "ggn-pcg"}


@dataclass(frozen=True)
class Config:
    """One (dataset, head) cell; ``rows`` optionally subsamples the dataset (the quick run)."""

    dataset: str  # "wordnet601" (min_per_class=20) or "wordnet133" (min_per_class=50)
    head: str  # "linear" or "two-layer"
    budget: float  # seconds of each method (and of each learning rate)
    rows: int | None = None
    hidden: int = HIDDEN
    adam_lrs: tuple = ADAM_LRS
    sgd_lrs: tuple = SGD_LRS
    sklearn_max_iter: tuple = (100, 10)  # lbfgs, newton-cg
    diagnostic_rows: int = 512
    # Work caps besides the budget (None: the budget alone): Gauss-Newton steps, L-BFGS
    # iterations, mini-batch epochs. The quick run caps work, not time, so that it does the
    # same on a slow or busy machine.
    max_steps: int | None = None
    max_lbfgs_iter: int | None = None
    max_epochs: int | None = None

    @property
    def min_per_class(self):
        return {"wordnet601": 20, "wordnet133": 50}[self.dataset]


CONFIGS = tuple(Config(d, h, 12.0) for d in ("wordnet601", "wordnet133") for h in ("linear", "two-layer"))
QUICK_CONFIGS = tuple(
    Config("wordnet133", h, 60.0, rows=2500, hidden=16, adam_lrs=(3e-3,), sgd_lrs=(1.0,), sklearn_max_iter=(20, 3),
           diagnostic_rows=128, max_steps=8, max_lbfgs_iter=30, max_epochs=3)
    for h in ("linear", "two-layer")
)


# ---- data and objective -----------------------------------------------------------------


def load(config):
    """``(X_train, y_train, X_test, y_test, C)``, float32 features, the stratified 80/20 split."""
    data = load_wordnet_glosses(min_per_class=config.min_per_class)
    X, y = data.X, data.y
    if config.rows is not None and config.rows < len(y):
        keep = numpy.sort(numpy.random.default_rng(0).choice(len(y), size=config.rows, replace=False))
        X, y = X[keep], y[keep]
        y = numpy.unique(y, return_inverse=True)[1].reshape(-1)  # classes renumbered 0..C'-1
    train, test = stratified_split(y, 0.2, 0)
    return X[train], y[train], X[test], y[test], int(y.max()) + 1


def make_head(config, D, C):
    if config.head == "linear":
        return LinearHead(D, C)
    return TwoLayerHead(D, config.hidden, C, activation="relu")


def objective64(head, theta, X, y, l2):
    """``mean CE + (l2/2) ||weights||^2`` in float64, and ``theta``'s test-style accuracy on ``(X, y)``."""
    theta = numpy.asarray(theta, dtype=numpy.float64)
    lin = head.linearize(theta, numpy.asarray(X, dtype=numpy.float64), y)
    mask = head.weight_mask(numpy, numpy.float64)
    return lin.loss + 0.5 * l2 * float(numpy.sum(mask * theta * theta))


def accuracy(head, theta, X, y):
    Z = head.logits(numpy.asarray(theta, dtype=numpy.float32), X)
    return float(numpy.mean(numpy.argmax(Z, axis=1) == y))


def _objective_and_grad(head, mask, l2, theta, X, y):
    # L = mean CE + (l2/2) theta^T M theta;  grad = lin.grad + l2 M theta
    lin = head.linearize(theta, X, y)
    return lin.loss + 0.5 * l2 * float(numpy.sum(mask * theta * theta)), lin.grad + l2 * mask * theta


# ---- the methods -------------------------------------------------------------------------


def _gauss_newton(name, head, theta0, X, y, l2, budget, diagnose, max_steps=None):
    """A ``minimize`` run stopped at ``budget`` seconds of its own step time; trajectory and diagnostics."""
    N = X.shape[0]
    method = GN_METHODS[name]
    f0 = _objective_and_grad(head, head.weight_mask(numpy, numpy.float32), l2, theta0, X, y)[0]
    points, diagnostics = [(0.0, 1.0, f0)], []
    state = {"seconds": 0.0, "passes": 1.0, "theta": theta0}
    rows = min(CURVATURE_ROWS, N) if method != "fgn" else N

    def callback(theta, record):
        state["seconds"] += record["seconds"]
        # passes: the candidate's objective and gradient, plus the CG iterations (module docstring)
        per_iter = {"fgn": 1.0, "fgn-compensated": rows / N, "ggn-pcg": 1.0 + rows / N}[method]
        state["passes"] += 1.0 + per_iter * record["cg_iter"]
        points.append((state["seconds"], state["passes"], record["objective"]))
        if diagnose is not None:
            diagnostics.append(diagnose(state["theta"], record["damping"], len(points) - 1))
        state["theta"] = theta
        return state["seconds"] >= budget

    result = minimize(head, theta0, X, y, method=method, l2=l2, max_iter=max_steps or 100000, tol=1e-5,
                      callback=callback)
    return result.theta, points, diagnostics, result.status


def _lbfgs(head, theta0, X, y, l2, budget, max_iter=None):
    import scipy.optimize

    mask = head.weight_mask(numpy, numpy.float32)
    points, t0 = [], time.perf_counter()
    state = {"evals": 0, "paused": 0.0}

    def fun(theta):
        state["evals"] += 1
        f, g = _objective_and_grad(head, mask, l2, theta.astype(numpy.float32), X, y)
        return f, g.astype(numpy.float64)

    def callback(intermediate_result):
        seconds = time.perf_counter() - t0
        points.append((seconds, float(state["evals"]), float(intermediate_result.fun)))
        if seconds >= budget:
            raise StopIteration

    f0 = fun(numpy.asarray(theta0, dtype=numpy.float64))[0]
    points.append((0.0, 1.0, f0))
    t0 = time.perf_counter()
    res = scipy.optimize.minimize(fun, numpy.asarray(theta0, dtype=numpy.float64), jac=True, method="L-BFGS-B",
                                  callback=callback, options={"maxiter": max_iter or 100000, "gtol": 1e-5, "ftol": 0.0})
    return res.x.astype(numpy.float32), points, str(res.message)


def _minibatch(kind, lr, head, theta0, X, y, l2, budget, max_epochs=None, seed=0):
    """Adam or SGD with momentum, in NumPy; the full objective after each epoch (not timed)."""
    N = X.shape[0]
    mask = head.weight_mask(numpy, numpy.float32)
    rng = numpy.random.default_rng(seed)
    theta = numpy.array(theta0, dtype=numpy.float32)
    m, v = numpy.zeros_like(theta), numpy.zeros_like(theta)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    points = [(0.0, 0.0, _objective_and_grad(head, mask, l2, theta, X, y)[0])]
    seconds, t, epoch, f = 0.0, 0, 0.0, points[0][2]
    while seconds < budget and (max_epochs is None or epoch < max_epochs):
        t0 = time.perf_counter()
        order, n_done = rng.permutation(N), 0
        for start in range(0, N, BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            g = _objective_and_grad(head, mask, l2, theta, X[rows], y[rows])[1]
            t += 1
            if kind == "adam":
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                theta -= lr * (m / (1 - beta1**t)) / (numpy.sqrt(v / (1 - beta2**t)) + eps)
            else:  # SGD with (heavy-ball) momentum
                m = MOMENTUM * m + g
                theta -= lr * m
            n_done += len(rows)
            if seconds + (time.perf_counter() - t0) >= budget:
                break
        seconds += time.perf_counter() - t0
        epoch += n_done / N
        f = _objective_and_grad(head, mask, l2, theta, X, y)[0]
        points.append((seconds, epoch, f))
        if not math.isfinite(f):
            break
    status = "diverged" if not math.isfinite(f) else f"budget ({budget:g} s) spent" if seconds >= budget else \
        f"{epoch:g} epochs"
    return theta, points, status


def _sklearn(solver, max_iter, X, y, l2):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    N = X.shape[0]
    clf = LogisticRegression(C=1.0 / (l2 * N), solver=solver, tol=1e-4, max_iter=max_iter)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X.astype(numpy.float64), y)
    seconds = time.perf_counter() - t0
    theta = numpy.concatenate([clf.coef_.ravel(), clf.intercept_]).astype(numpy.float32)
    n_iter = int(numpy.max(clf.n_iter_))
    passes = float(n_iter) if solver == "lbfgs" else math.nan
    return theta, [(seconds, passes, math.nan)], f"{n_iter} iterations (max_iter {max_iter})"


def _diagnoser(head, X, y, l2, n_rows, seed=0):
    """``diagnose(theta, damping, step)``: cos(delta_FGN, delta_GGN) and the dropped-energy ratio on fixed rows."""
    rows = numpy.sort(numpy.random.default_rng(seed).choice(X.shape[0], size=min(n_rows, X.shape[0]), replace=False))
    X64, y_rows = X[rows].astype(numpy.float64), y[rows]

    def diagnose(theta, damping, step):
        lin = head.linearize(numpy.asarray(theta, dtype=numpy.float64), X64, y_rows)
        d_fgn = fgn_step(lin, damping, l2=l2, rtol=1e-8).direction
        res = ggn_step(lin, damping, l2=l2, rtol=1e-6, maxiter=1000, precond="fgn")
        d_ggn = res.direction
        energy = float(d_ggn @ ggn_matvec(lin, d_ggn))
        return {
            "step": step, "damping": damping,
            "cosine": float(d_fgn @ d_ggn / (numpy.linalg.norm(d_fgn) * numpy.linalg.norm(d_ggn))),
            "rel_error": float(numpy.linalg.norm(d_fgn - d_ggn) / numpy.linalg.norm(d_ggn)),
            "dropped_energy": float(d_ggn @ dropped_matvec(lin, d_ggn)) / energy if energy > 0 else 0.0,
            "ggn_converged": bool(res.converged),
        }

    return diagnose


# ---- driver ------------------------------------------------------------------------------


def run_config(config, progress=None):
    """Records of one (dataset, head): ``(summary, trajectories, diagnostics)``, lists of dicts."""
    X, y, X_test, y_test, C = load(config)
    N, D = X.shape
    l2 = 1.0 / (10.0 * N)
    head = make_head(config, D, C)
    theta0 = head.init_params(seed=0, dtype="float32")
    tag = {"dataset": config.dataset, "head": config.head, "n_train": N, "n_classes": C}

    runs = []  # (method, lr, theta, points, status)
    diagnostics = []  # along the plain FGN run
    for name in GN_METHODS:
        diagnose = _diagnoser(head, X, y, l2, config.diagnostic_rows) if name == "fgn" else None
        theta, points, diag, status = _gauss_newton(name, head, theta0, X, y, l2, config.budget, diagnose,
                                                    config.max_steps)
        runs.append((name, math.nan, theta, points, status))
        if name == "fgn":
            diagnostics = [{**tag, **d} for d in diag]
        if progress:
            progress(f"{config.dataset} {config.head} {name}: {status}")
    theta, points, status = _lbfgs(head, theta0, X, y, l2, config.budget, config.max_lbfgs_iter)
    runs.append(("lbfgs", math.nan, theta, points, status))
    for kind, lrs in (("adam", config.adam_lrs), ("sgd-momentum", config.sgd_lrs)):
        for lr in lrs:
            theta, points, status = _minibatch(kind, lr, head, theta0, X, y, l2, config.budget, config.max_epochs)
            runs.append((kind, lr, theta, points, status))
    if config.head == "linear":
        for solver, max_iter in zip(("lbfgs", "newton-cg"), config.sklearn_max_iter):
            theta, points, status = _sklearn(solver, max_iter, X, y, l2)
            runs.append((f"sklearn-{solver}", math.nan, theta, points, status))

    summary, trajectories = [], []
    for method, lr, theta, points, status in runs:
        f = objective64(head, theta, X, y, l2)
        finite = math.isfinite(f)
        summary.append({
            **tag, "method": method, "lr": lr, "objective": f,
            "test_accuracy": accuracy(head, theta, X_test, y_test) if finite else math.nan,
            "seconds": points[-1][0], "passes": points[-1][1], "status": status, "best": False,
        })
        trajectories.extend({**tag, "method": method, "lr": lr, "seconds": s, "passes": p, "objective": obj}
                            for s, p, obj in points)
    _mark_best(summary)
    if progress:
        for r in summary:
            progress(f"  {r['method']:<18} lr={r['lr']:<6g} objective {r['objective']:.6f} "
                     f"test acc {r['test_accuracy']:.4f} {r['seconds']:.1f} s {r['passes']:.1f} passes")
    return summary, trajectories, diagnostics


def _mark_best(summary):
    """``best`` is True on each method's row with the lowest finite objective (its best learning rate)."""
    by_method = {}
    for r in summary:
        if math.isfinite(r["objective"]):
            current = by_method.get(r["method"])
            if current is None or r["objective"] < current["objective"]:
                by_method[r["method"]] = r
    for r in by_method.values():
        r["best"] = True


def run(configs=CONFIGS, progress=None):
    """All configurations: ``(summary, trajectories, diagnostics)``, each a list of dicts."""
    summary, trajectories, diagnostics = [], [], []
    for config in configs:
        s, t, d = run_config(config, progress)
        summary += s
        trajectories += t
        diagnostics += d
    return summary, trajectories, diagnostics
