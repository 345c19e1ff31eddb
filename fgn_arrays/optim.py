"""Training loop: Levenberg-Marquardt-damped FGN steps, full batch or mini-batch.

Conventions
-----------
The objective is ``L(theta) = mean_i loss_i + (l2/2) ||theta_w||^2`` over the
batch (the weights only, as in scikit-learn: ``l2 = 1 / (C_sklearn N)``).
Each iteration linearizes at ``theta``, solves the damped FGN step
``(G_FGN + l2 M + lambda I) delta = -g`` (:func:`fgn_step`), evaluates
``L(theta + delta)`` on the same batch and compares the actual decrease with
the step's ``predicted_decrease``:

    rho = (L(theta) - L(theta + delta)) / predicted_decrease

Damping control (Levenberg-Marquardt, the constants below):

- ``rho < 0.25``: ``lambda *= 4`` (the model over-promised);
- ``rho > 0.75``: ``lambda /= 3`` (the model is trustworthy);
- ``lambda`` stays within ``[1e-8, 1e8]``.

A step is accepted only when it decreases the batch objective; a rejected
step leaves ``theta`` unchanged (and ``lambda`` grows, since ``rho <= 0``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy

from ._validation import check_batch, check_nonneg_scalar, check_positive_int
from .step import fgn_step

__all__ = ["OptimizeResult", "minimize"]

RHO_SHRINK, RHO_GROW = 0.75, 0.25
DAMPING_DECREASE, DAMPING_INCREASE = 1 / 3, 4.0
DAMPING_MIN, DAMPING_MAX = 1e-8, 1e8
# CG tolerance of each step (inexact Gauss-Newton): rtol_k = min(CG_RTOL_MAX,
# sqrt(||g_k|| / ||g_0||)), so early steps are cheap and late ones accurate.
CG_RTOL_MAX, CG_RTOL_MIN = 1e-1, 1e-6

HISTORY_KEYS = ("objective", "grad_norm", "damping", "cg_iter", "accepted", "seconds")


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
    history : dict of lists
        One entry per step: ``objective`` (batch objective after the step,
        or before it if rejected), ``grad_norm`` (at the step's start),
        ``damping`` (used by the step), ``cg_iter``, ``accepted``,
        ``seconds`` (wall time of the step).
    """

    theta: Any
    objective: float
    grad_norm: float
    n_iter: int
    converged: bool
    status: str
    damping: float
    history: dict = field(repr=False)


def _objective(lin, l2):
    # L = mean CE + (l2/2) ||M theta||^2
    if l2 == 0.0:
        return lin.loss
    xp = lin.xp
    return lin.loss + 0.5 * l2 * float(xp.sum(lin.weight_mask * lin.theta * lin.theta))


def _gradient(lin, l2):
    return lin.grad + lin.dtype.type(l2) * lin.weight_mask * lin.theta if l2 else lin.grad


def _update_damping(damping, rho):
    if not rho > RHO_GROW:  # includes rho = nan (no predicted decrease)
        damping *= DAMPING_INCREASE
    elif rho > RHO_SHRINK:
        damping *= DAMPING_DECREASE
    return min(max(damping, DAMPING_MIN), DAMPING_MAX)


class _Progress:
    """One line per step on stdout when ``verbose``."""

    def __init__(self, verbose):
        self.verbose = verbose
        if verbose:
            print(f"{'iter':>5} {'objective':>14} {'|grad|_inf':>11} {'damping':>9} {'cg':>4} {'ok':>3} {'s':>7}")

    def __call__(self, k, record):
        if self.verbose:
            print(
                f"{k:>5} {record['objective']:>14.8f} {record['grad_norm']:>11.3e} {record['damping']:>9.2e} "
                f"{record['cg_iter']:>4} {'y' if record['accepted'] else 'n':>3} {record['seconds']:>7.3f}",
                flush=True,
            )


def minimize(
    head,
    theta0,
    X,
    y,
    *,
    l2=0.0,
    damping=1.0,
    max_iter=100,
    tol=1e-6,
    batch_size=None,
    solver="auto",
    random_state=None,
    callback=None,
    verbose=0,
):
    """Minimize the l2-regularised mean cross-entropy of ``head`` with damped FGN steps.

    Parameters
    ----------
    head : Head
        ``fa.LinearHead`` or ``fa.TwoLayerHead``.
    theta0 : array, shape (P,)
        Starting parameters; fixes the backend and dtype.
    X : array, shape (N, D)
    y : array of int, shape (N,)
        Labels in ``[0, C)``.
    l2 : float, default 0
        Weight penalty: ``L = mean loss + (l2/2) ||weights||^2``.
    damping : float, default 1
        Initial Levenberg-Marquardt damping ``lambda > 0``.
    max_iter : int, default 100
        Full batch: steps (accepted or rejected). Mini-batch: epochs.
    tol : float, default 1e-6
        Stop when ``||grad L||_inf <= tol``, or when an accepted step changes
        the objective by at most ``tol * max(|L|, 1)`` (full batch).
    batch_size : int, optional
        ``None``: full batch. Otherwise the data are reshuffled each epoch and
        cut into mini-batches of this size; each takes one damped step.
    solver : {"auto", "cg", "cholesky"}
        Passed to :func:`fgn_step`.
    random_state : int or None
        Seed of the mini-batch shuffling.
    callback : callable, optional
        ``callback(theta, record)`` after every step, with ``record`` the
        step's history entry; returning ``True`` stops the run.
    verbose : int, default 0
        Print a progress line per step when > 0.

    Returns
    -------
    OptimizeResult

    Notes
    -----
    See the module docstring for the damping rule. Each step's CG tolerance is
    ``min(0.1, sqrt(||g_k|| / ||g_0||))`` (at least 1e-6): an inexact
    Gauss-Newton method whose linear solves tighten as the gradient shrinks.
    On the same batch, CG is warm-started from the previous step's row-space
    coefficients.
    """
    xp, theta, X, y = check_batch(theta0, X, y, head.n_params, head.n_features, head.n_classes)
    l2 = check_nonneg_scalar(l2, "l2")
    lam = check_nonneg_scalar(damping, "damping")
    if lam <= 0:
        raise ValueError(f"`damping` must be > 0 for Levenberg-Marquardt control; got {damping}.")
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    tol = check_nonneg_scalar(tol, "tol")
    N = X.shape[0]
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable; got {type(callback).__name__}.")

    history = {key: [] for key in HISTORY_KEYS}
    progress = _Progress(verbose)
    state = dict(theta=theta, damping=lam, stop=False)

    def run_step(lin, x0, rtol):
        """One damped step on ``lin``'s batch; returns (new lin or old, coefficients, record)."""
        t0 = time.perf_counter()
        f = _objective(lin, l2)
        g = _gradient(lin, l2)
        g_norm = float(xp.max(xp.abs(g)))
        step = fgn_step(lin, state["damping"], l2=l2, solver=solver, rtol=rtol, x0=x0)
        trial = head.linearize(lin.theta + step.direction, lin.X, lin.y)
        f_new = _objective(trial, l2)
        accepted = f_new < f
        pred = step.predicted_decrease
        rho = (f - f_new) / pred if pred > 0 else math.nan
        used = state["damping"]
        state["damping"] = _update_damping(used, rho)
        record = dict(
            objective=f_new if accepted else f,
            grad_norm=g_norm,
            damping=used,
            cg_iter=step.n_iter,
            accepted=bool(accepted),
            seconds=time.perf_counter() - t0,
        )
        for key in HISTORY_KEYS:
            history[key].append(record[key])
        progress(len(history["objective"]), record)
        if accepted:
            state["theta"] = trial.theta
        if callback is not None and callback(state["theta"], record):
            state["stop"] = True
        return (trial if accepted else lin), step.coefficients, record, f, f_new

    status, converged, n_iter = f"maxiter ({max_iter}) reached", False, 0
    if batch_size is None or batch_size >= N:
        lin = head.linearize(theta, X, y)
        g0 = None
        coefficients = None
        for n_iter in range(1, max_iter + 1):
            g_norm = float(xp.max(xp.abs(_gradient(lin, l2))))
            g0 = g0 or max(g_norm, 1e-300)
            if g_norm <= tol:
                status, converged, n_iter = "converged: ||grad||_inf <= tol", True, n_iter - 1
                break
            rtol = min(CG_RTOL_MAX, max(CG_RTOL_MIN, math.sqrt(g_norm / g0)))
            lin, coefficients, record, f, f_new = run_step(lin, coefficients, rtol)
            if record["accepted"] and f - f_new <= tol * max(abs(f_new), 1.0):
                status, converged = "converged: relative objective change <= tol", True
                break
            if state["stop"]:
                status = "stopped by callback"
                break
    else:
        rng = numpy.random.default_rng(random_state)
        for n_iter in range(1, max_iter + 1):
            order = xp.asarray(rng.permutation(N))
            for start in range(0, N, batch_size):
                rows = order[start : start + batch_size]
                lin = head.linearize(state["theta"], X[rows], y[rows])
                run_step(lin, None, CG_RTOL_MAX)
                if state["stop"]:
                    break
            if state["stop"]:
                status = "stopped by callback"
                break
        full = head.linearize(state["theta"], X, y)
        if float(xp.max(xp.abs(_gradient(full, l2)))) <= tol:
            status, converged = "converged: ||grad||_inf <= tol", True

    final = head.linearize(state["theta"], X, y)
    return OptimizeResult(
        theta=state["theta"],
        objective=_objective(final, l2),
        grad_norm=float(xp.max(xp.abs(_gradient(final, l2)))),
        n_iter=n_iter,
        converged=converged,
        status=status,
        damping=state["damping"],
        history=history,
    )
