"""Training loop: Levenberg-Marquardt-damped Gauss-Newton steps of a named method, full batch or mini-batch.

Conventions
-----------
The objective is ``L(theta) = mean_i loss_i + (l2/2) ||theta_w||^2`` over the
batch (the weights only, as in scikit-learn: ``l2 = 1 / (C_sklearn N)``).
Each iteration linearizes at ``theta``, lets the method
(:mod:`fgn_arrays.methods`) propose a step from the damped system
``(curvature + l2 M + lambda I) delta = -g``, and accepts it when the
objective decreases. The unit step's gain ratio

    rho = (L(theta) - L(theta + delta)) / predicted_decrease

(0 when the model predicts no decrease; always finite) drives the damping
by the method's rule (:mod:`fgn_arrays.methods`): the classic
Levenberg-Marquardt thresholds for ``"fgn"`` (``rho < 0.25``: ``lambda *= 2``;
``rho > 0.5``: ``lambda /= 10``), Nielsen's continuous rule for the others;
``lambda`` stays within ``[1e-8, 1e8]``.

**Stopping** (full batch), as scikit-learn's ``lbfgs`` and ``newton-cg``:
``||grad L||_inf <= tol`` (scikit-learn's ``gtol``/``tol`` on the same mean
objective), so ``tol=1e-4`` stops where ``LogisticRegression(tol=1e-4)``
does. A run also stops when three steps in a row make no progress the
working dtype can measure: each an accepted, well-predicted step (``rho >
0.25``) that changed the objective by at most ``eps max(|L|, 1)``, or a
rejected step whose model promised no more than that.

**Inexact steps.** Step ``k`` asks for ``||H delta + g|| <= eta_k ||g||``
with Eisenstat and Walker's second forcing term
``eta_k = 0.9 (||g_k|| / ||g_{k-1}||)^2`` (safeguarded by
``eta_k >= 0.9 eta_{k-1}^2`` when that exceeds 0.1), within
``[max(1e-6, sqrt(eps)), 0.5]``: loose while the gradient falls slowly,
tight once it falls fast (an inexact Newton method; the steps' stopping
rule makes ``eta_k`` a parameter-space bound, see :mod:`fgn_arrays.step`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy

from ._backend import host_floats
from ._dask import is_dask_array, unsupported
from ._validation import check_batch, check_nonneg_scalar, check_positive_int, check_sample_weight
from .heads._base import Head
from .methods import AUTO_CURVATURE_ROWS, METHODS, RHO_GROW, evaluate, grad_norm, objective
from .step import SOLVERS, _objective_grad

__all__ = ["OptimizeResult", "minimize"]

DEFAULT_METHOD = "fgn-compensated"
CG_RTOL_MAX, CG_RTOL_MIN = 0.5, 1e-6
FORCING_GAMMA, FORCING_ALPHA = 0.9, 2.0
# No measurable progress: STALL_STEPS accepted, well-predicted steps in a row that
# change the objective by at most STALL_EPS * eps * max(|L|, 1).
STALL_STEPS, STALL_EPS = 3, 1

HISTORY_KEYS = (
    "objective", "grad_norm", "damping", "rho", "cg_iter", "accepted", "step_size", "momentum", "seconds",
)


@dataclass(frozen=True)
class OptimizeResult:
    """Outcome of :func:`minimize`.

    Attributes
    ----------
    theta : array, shape (P,)
        Final parameters, on the backend and in the dtype of ``theta0``.
    objective : float
        ``L(theta)`` on the full data.
    grad_norm : float
        ``||grad L(theta)||_inf`` on the full data.
    n_iter : int
        Iterations done (steps tried, accepted or not; full batch), or epochs
        (mini-batch).
    converged : bool
    status : str
        Why it stopped, in words.
    damping : float
        The final damping ``lambda``.
    method : str
        The method that ran.
    history : dict of lists
        One entry per step: ``objective`` (batch objective after the step,
        or before it if rejected), ``grad_norm`` (at the step's start),
        ``damping`` (used by the step), ``rho`` (the unit step's gain
        ratio, finite), ``cg_iter``, ``accepted``, ``step_size`` and
        ``momentum`` (the coefficients ``a`` of ``delta`` and ``b`` of the
        previous step, ``(1, 0)`` for a unit step, both 0 if rejected),
        ``seconds`` (wall time of the step).
    """

    theta: Any
    objective: float
    grad_norm: float
    n_iter: int
    converged: bool
    status: str
    damping: float
    method: str
    history: dict = field(repr=False)


def _forcing(previous, g_norm, g_prev, rtol_min):
    """The step's ``rtol``: Eisenstat and Walker's choice 2 (module docstring), within ``[rtol_min, CG_RTOL_MAX]``."""
    if previous is None:
        return CG_RTOL_MAX
    eta = FORCING_GAMMA * (g_norm / g_prev) ** FORCING_ALPHA
    safeguard = FORCING_GAMMA * previous**FORCING_ALPHA
    if safeguard > 0.1:
        eta = max(eta, safeguard)
    return min(CG_RTOL_MAX, max(rtol_min, eta))


def _gain_ratio(f, f_unit, pred):
    """``rho``, finite: 0 when the model predicts no decrease or the unit point's objective is not finite."""
    if pred > 0 and math.isfinite(f_unit):
        return (f - f_unit) / pred
    return 0.0


class _Progress:
    """One line per step on stdout when ``verbose`` (columns in :func:`minimize`'s ``verbose``)."""

    def __init__(self, verbose):
        self.verbose = verbose
        if verbose:
            print(f"{'iter':>5} {'objective':>14} {'|grad|_inf':>11} {'damping':>9} {'rho':>7} {'cg':>4} "
                  f"{'step':>8} {'a':>6} {'b':>6} {'s':>7}")

    def __call__(self, k, record):
        if self.verbose:
            taken = "accepted" if record["accepted"] else "rejected"
            print(
                f"{k:>5} {record['objective']:>14.8f} {record['grad_norm']:>11.3e} {record['damping']:>9.2e} "
                f"{record['rho']:>7.2f} {record['cg_iter']:>4} {taken:>8} {record['step_size']:>6.2f} "
                f"{record['momentum']:>6.2f} {record['seconds']:>7.3f}",
                flush=True,
            )


def minimize(
    head,
    theta0,
    X,
    y,
    *,
    method=DEFAULT_METHOD,
    l2=0.0,
    damping=1.0,
    max_iter=100,
    tol=1e-4,
    batch_size=None,
    solver="auto",
    curvature_rows="auto",
    random_state=0,
    sample_weight=None,
    callback=None,
    verbose=0,
):
    """Minimize the l2-regularised mean cross-entropy of ``head`` with damped Gauss-Newton steps.

    Parameters
    ----------
    head : Head
        ``fa.LinearHead`` or ``fa.TwoLayerHead``.
    theta0 : array, shape (P,)
        Starting parameters; fixes the backend and dtype.
    X : array, shape (N, D)
    y : array of int, shape (N,)
        Labels in ``[0, C)``.
    method : {"fgn-compensated", "fgn", "ggn-pcg"}, default "fgn-compensated"
        The step (:mod:`fgn_arrays.methods`): ``"fgn"`` is the paper's
        algorithm (the damped FGN step and Levenberg-Marquardt, nothing
        else); ``"fgn-compensated"`` damps it with a Kronecker stand-in for
        the dropped covariance and corrects its length in a plane;
        ``"ggn-pcg"`` solves the damped full-GGN system by CG preconditioned
        with the FGN system. The default is the fastest to ``f* (1 + 1e-3)``
        on the benchmarks of ``docs/benchmarks.md``.
    l2 : float, default 0
        Weight penalty: ``L = mean loss + (l2/2) ||weights||^2``.
    damping : float, default 1
        Initial Levenberg-Marquardt damping ``lambda > 0``.
    max_iter : int, default 100
        Full batch: steps (accepted or rejected). Mini-batch: epochs.
    tol : float, default 1e-4
        Stop when ``||grad L||_inf <= tol`` (full batch; see the module
        docstring): scikit-learn's criterion, so the default stops where
        ``LogisticRegression(tol=1e-4)`` does. Smaller values stay available.
    batch_size : int, optional
        ``None``: full batch. Otherwise the data are reshuffled each epoch and
        cut into mini-batches of this size; each takes one damped step.
    solver : {"auto", "cg", "cholesky"}
        Solver of the FGN row-space system (``"fgn"``; ``"fgn-compensated"``
        accepts ``"auto"`` and ``"cg"`` only, its damping has no closed-form
        Gram matrix; ``"ggn-pcg"`` only ``"auto"``). It never changes the step.
    curvature_rows : int, None or "auto", default "auto"
        Rows of the curvature per step: a batch with more rows uses this
        many, drawn at random at each step. ``None``: all of the batch.
        ``"auto"``: all rows for ``"fgn"``, 2048 for the other methods.
    random_state : int, numpy.random.Generator or None, default 0
        Seed of the mini-batch shuffling and of the curvature rows (the only
        randomness; the default makes runs repeatable).
    sample_weight : array, shape (N,), optional
        Row weights ``s_i >= 0`` (positive sum, on ``X``'s backend): the
        objective becomes ``sum_i s_i loss_i / sum_i s_i + (l2/2)
        ||theta_w||^2`` and the curvature weights ``s_i w_i / sum_i s_i``
        (``docs/derivation.md``). Integer weights give the fit of the data
        with each row repeated ``s_i`` times; rows of weight 0 are dropped
        before the run (its curvature rows are drawn from the others).
        scikit-learn's ``LogisticRegression(C=C_sk)`` with the same weights
        is matched by ``l2 = 1 / (C_sk sum_i s_i)``.
    callback : callable, optional
        ``callback(theta, record)`` after every step, with ``record`` the
        step's history entry; returning ``True`` stops the run.

        ``X``, ``y`` and ``sample_weight`` may also be ``dask.array`` arrays
        chunked by rows (NumPy chunks with a NumPy ``theta0``, or CuPy
        chunks with a CuPy ``theta0``; needs the ``dask`` extra): the rows
        stay in their chunks, each objective and gradient is one pass over
        them on the chunks' device, and each step's curvature rows are
        gathered to this process (:mod:`fgn_arrays._dask`,
        ``docs/scaling.md``). The fit is the in-memory one to rounding, for
        the same ``random_state``. There ``"auto"`` curvature rows are 2048
        for every method; ``method="ggn-pcg"``, ``curvature_rows=None`` and
        ``batch_size`` raise ``ValueError``; a batch with no more rows than
        ``curvature_rows`` is gathered and fit in memory.
    verbose : int, default 0
        Print a line per step when > 0: ``iter``, ``objective`` (after the
        step), ``|grad|_inf`` (before it), ``damping`` (used), ``rho`` (gain
        ratio), ``cg`` (CG iterations), ``step`` (accepted or rejected),
        ``a`` and ``b`` (coefficients of ``delta`` and of the previous step),
        ``s`` (seconds).

    Returns
    -------
    OptimizeResult
    """
    if not isinstance(head, Head):
        raise TypeError(f"`head` must be a head such as fa.LinearHead; got {type(head).__name__}.")
    dask_input = any(is_dask_array(a) for a in (X, y, sample_weight))
    if not dask_input:
        xp, theta, X, y = check_batch(theta0, X, y, head.n_params, head.n_features, head.n_classes)
        sample_weight = check_sample_weight(xp, sample_weight, X.shape[0], theta.dtype)
        if sample_weight is not None:
            keep = sample_weight > 0
            if not bool(keep.all()):
                X, y, sample_weight = X[keep], y[keep], sample_weight[keep]
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string; got {type(method).__name__}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {tuple(METHODS)}; got {method!r}.")
    if method != "fgn" and not getattr(head, "_closed_form_gram", True):
        raise ValueError(
            f"method {method!r} needs the closed-form Gram matrix of a built-in head (LinearHead, TwoLayerHead); "
            f"a model given by callables ({type(head).__name__}) has none. Use method='fgn'."
        )
    l2 = check_nonneg_scalar(l2, "l2")
    lam = check_nonneg_scalar(damping, "damping")
    if lam <= 0:
        raise ValueError(f"`damping` must be > 0 for Levenberg-Marquardt control; got {damping}.")
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    tol = check_nonneg_scalar(tol, "tol")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable; got {type(callback).__name__}.")
    _check_solver(method, solver)
    if curvature_rows == "auto":
        curvature_rows = None if method == "fgn" and not dask_input else AUTO_CURVATURE_ROWS
    elif curvature_rows is not None:
        curvature_rows = check_positive_int(curvature_rows, "curvature_rows")
    if not (random_state is None or isinstance(random_state, (int, numpy.integer, numpy.random.Generator))):
        raise TypeError(f"`random_state` must be an int, a numpy Generator or None; got {type(random_state).__name__}.")
    rng = numpy.random.default_rng(random_state)
    steps = METHODS[method](l2, solver, curvature_rows, rng)
    linearize = None
    if dask_input:
        batch = _dask_batch(head, theta0, X, y, sample_weight, method, curvature_rows, batch_size, rng)
        xp, theta, linearize = batch.xp, batch.theta0, batch.linearize
        if batch.n_samples <= curvature_rows:  # each step's curvature is every row: fit in memory
            X, y, sample_weight = batch.gather_all()
            linearize = None
    mini = batch_size is not None and batch_size < X.shape[0]
    if linearize is None:

        def linearize(theta):
            return head._linearize(xp, theta, X, y, sample_weight)

    run = _Run(steps, lam, _Progress(verbose), callback)
    if mini:
        theta, n_iter, converged, status = _mini_batch(run, head, xp, theta, X, y, sample_weight, max_iter, tol,
                                                       batch_size, rng)
    else:
        theta, n_iter, converged, status = _full_batch(run, linearize, theta, max_iter, tol)
    final = linearize(theta)
    f, g_norm = host_floats(xp, objective(final, l2), grad_norm(xp, _objective_grad(final, l2)))
    if mini and g_norm <= tol:
        status, converged = "converged: ||grad||_inf <= tol", True
    return OptimizeResult(theta, f, g_norm, n_iter, converged, status, run.damping, method, run.history)


def _dask_batch(head, theta0, X, y, sample_weight, method, curvature_rows, batch_size, rng):
    """The checked :class:`fgn_arrays._dask.DaskBatch` of a fit on Dask arrays, set up for ``method``.

    Raises ``ValueError`` for what a Dask batch cannot run (:func:`fgn_arrays._dask.unsupported`).
    """
    from ._dask import DaskBatch  # imports dask: only when a Dask array arrives

    n_rows = next(a for a in (X, y, sample_weight) if is_dask_array(a)).shape[0]
    why = unsupported(head, method, curvature_rows, batch_size, n_rows)
    if why is not None:
        raise ValueError(why)
    batch = DaskBatch(head, theta0, X, y, sample_weight)  # checks the values: one pass over y, weights and X
    batch.plan(rng, curvature_rows)
    batch.want_covariance = method == "fgn-compensated"
    return batch


def _check_solver(method, solver):
    allowed = {"fgn": SOLVERS, "fgn-compensated": ("auto", "cg"), "ggn-pcg": ("auto",)}[method]
    if not isinstance(solver, str):
        raise TypeError(f"`solver` must be a string; got {type(solver).__name__}.")
    if solver not in allowed:
        raise ValueError(f"`solver` must be one of {allowed} for method {method!r}; got {solver!r}.")


class _Run:
    """The loop's state: the method and its state, the damping, the history; one :meth:`step`."""

    def __init__(self, method, damping, progress, callback):
        self.method, self.state, self.damping = method, method.init(), damping
        self.rule = method.damping_rule()
        self.progress, self.callback, self.stop = progress, callback, False
        self.history = {key: [] for key in HISTORY_KEYS}

    def step(self, point, rtol, gradient):
        """Propose, accept or reject, update the damping and record; returns ``(point, accepted, rho, pred)``."""
        t0 = time.perf_counter()
        prop = self.method.step(point, self.damping, rtol, self.state, gradient)
        rho = _gain_ratio(point.f, prop.f_unit, prop.step.predicted_decrease)
        accepted = prop.point.f < point.f
        record = dict(
            objective=prop.point.f if accepted else point.f, grad_norm=point.g_norm, damping=self.damping,
            rho=rho, cg_iter=prop.step.n_iter, accepted=bool(accepted),
            step_size=prop.coef[0] if accepted else 0.0, momentum=prop.coef[1] if accepted else 0.0,
        )
        self.damping = self.rule.update(self.damping, rho)
        if accepted:
            point, self.state = prop.point, prop.state
        record["seconds"] = time.perf_counter() - t0
        for key in HISTORY_KEYS:
            self.history[key].append(record[key])
        self.progress(len(self.history["objective"]), record)
        self.stop = self.callback is not None and bool(self.callback(point.lin.theta, record))
        return point, accepted, rho, prop.step.predicted_decrease


def _full_batch(run, linearize, theta, max_iter, tol):
    point = evaluate(linearize(theta), run.method.l2)
    eps = float(numpy.finfo(theta.dtype).eps)
    rtol_min = max(CG_RTOL_MIN, math.sqrt(eps))
    stalled, rtol, g_prev = 0, None, None
    for k in range(1, max_iter + 1):
        if point.g_norm <= tol:
            return point.lin.theta, k - 1, True, "converged: ||grad||_inf <= tol"
        rtol = _forcing(rtol, point.g_norm, g_prev, rtol_min)
        f_old, g_prev = point.f, point.g_norm
        point, accepted, rho, pred = run.step(point, rtol, gradient=True)
        # no measurable progress: an accepted step that changed L, or a rejected one whose
        # model promised a change, by no more than the dtype resolves
        resolution = STALL_EPS * eps * max(abs(point.f), 1.0)
        change = f_old - point.f if accepted else pred
        stalled = stalled + 1 if change <= resolution and (rho > RHO_GROW or not accepted) else 0
        if stalled == STALL_STEPS:
            return point.lin.theta, k, True, "converged: objective change below the dtype's resolution"
        if run.stop:
            return point.lin.theta, k, False, "stopped by callback"
    return point.lin.theta, max_iter, False, f"maxiter ({max_iter}) reached"


def _mini_batch(run, head, xp, theta, X, y, sw, max_iter, tol, batch_size, rng):
    N = X.shape[0]
    for epoch in range(1, max_iter + 1):
        order = xp.asarray(rng.permutation(N))
        for start in range(0, N, batch_size):
            rows = order[start : start + batch_size]
            point = evaluate(head._linearize(xp, theta, X[rows], y[rows], None if sw is None else sw[rows]), run.method.l2)
            theta = run.step(point, CG_RTOL_MAX, gradient=False)[0].lin.theta
            if run.stop:
                return theta, epoch, False, "stopped by callback"
    return theta, max_iter, False, f"maxiter ({max_iter}) reached"
