"""Training loop: Levenberg-Marquardt-damped FGN steps, full batch or mini-batch.

Conventions
-----------
The objective is ``L(theta) = mean_i loss_i + (l2/2) ||theta_w||^2`` over the
batch (the weights only, as in scikit-learn: ``l2 = 1 / (C_sklearn N)``).
Each iteration linearizes at ``theta``, takes the batch gradient ``g`` and
solves a damped FGN system for the step ``delta``:

    (G_FGN + l2 M + Lam) delta = -g

- **Curvature rows.** ``G_FGN`` is the mean over the batch's rows, or, when
  the batch has more than ``curvature_rows`` rows, over that many rows drawn
  afresh at each step (a subsampled Gauss-Newton curvature; the gradient and
  the objective always use the whole batch). The row-space system then has
  ``curvature_rows`` unknowns.
- **Damping.** ``Lam = lambda I`` (:func:`fgn_step`, ``dropped=None``), or
  ``lambda I + B`` with ``B`` a Kronecker-factored stand-in for the
  within-competitor covariance FGN drops (``dropped="kronecker"``, the
  default, see :mod:`fgn_arrays.compensation`). Without ``B`` the model has
  no curvature along the directions that move probability between
  competitors, and with many classes the damping alone must make up for it:
  on the bundled WordNet features (133 classes) plain LM-FGN needed over 500
  steps where the compensated steps needed about 30 (21 with the subspace
  correction below).

The unit step is tried on the batch and the actual decrease is compared
with the model's ``predicted_decrease``:

    rho = (L(theta) - L(theta + delta)) / predicted_decrease

Damping control (Levenberg-Marquardt, the constants below):

- ``rho < 0.25``: ``lambda *= 2`` (the model over-promised);
- ``rho > 0.5``: ``lambda /= 10`` (the model is trustworthy);
- ``lambda`` stays within ``[1e-8, 1e8]``.

**Subspace correction.** The step taken is the better of the unit step and
one Newton step, from it, over the plane spanned by ``delta`` and the
previous accepted step ``s``:

    theta_new = theta + a delta + b s

``(a, b)`` starts at ``(1, 0)`` and takes one Newton step (kept only if
``a > 0``) on the objective's GGN quadratic model over the plane at
``theta + delta``: its slope and 2 x 2
curvature ``(1/N) sum_i (Jz_i d_j)^T H_i (Jz_i d_k) + l2 d_j^T M d_k``
(``H_i`` the softmax Hessian of row ``i``) cost one fused pass over the
rows' logit directions ``Jz_i d``. This corrects the step's length where the
FGN model (with or without ``B``) misjudges the curvature along ``delta``,
and the momentum term ``b s`` damps the zig-zag between steps (as in
sequential subspace optimisation). On the WordNet features it cut the steps
to ``f* (1 + 1e-3)`` from about 31 to 21. The first step, with no ``s``, is
corrected along ``delta`` alone. For :class:`LinearHead` the logits are
affine in ``theta``: every trial point's logits are ``Z + a Jz delta + b Jz s``,
and ``Jz s`` is the previous step's, so a step costs one GEMM for
``Jz delta`` and no forward pass. The logits so updated drift from a fresh
``Z(theta)`` by rounding only (measured on WordNet after 40 float32 steps:
at most 3.4e-5 in logits up to 18, 4e-8 relative in the loss); the result
is evaluated afresh. Other heads run a forward pass per trial point and two
logit JVPs for the model.

A step that decreases the batch objective at neither point is rejected:
``theta`` stays unchanged (``step_size = 0``) and ``lambda`` grows, since
``rho <= 0``. The history records ``(a, b)`` as ``step_size`` and
``momentum``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy

from . import kernels
from ._backend import host_floats
from ._validation import check_batch, check_nonneg_scalar, check_positive_int
from .compensation import kronecker_fgn_step, output_covariance, rotated_squares
from .step import SOLVERS, _fgn_step, _objective_grad

__all__ = ["OptimizeResult", "minimize"]

RHO_SHRINK, RHO_GROW = 0.5, 0.25
DAMPING_DECREASE, DAMPING_INCREASE = 0.1, 2.0
DROPPED = ("kronecker", None)
# Two subspace directions whose H-metric cosine^2 exceeds 1 - this are treated as one.
COLLINEAR_TOL = 1e-8
DAMPING_MIN, DAMPING_MAX = 1e-8, 1e8
# CG tolerance of each step (inexact Gauss-Newton): rtol_k = min(CG_RTOL_MAX,
# sqrt(||g_k|| / ||g_0||)), so early steps are cheap and late ones accurate.
CG_RTOL_MAX, CG_RTOL_MIN = 1e-1, 1e-6

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
    history : dict of lists
        One entry per step: ``objective`` (batch objective after the step,
        or before it if rejected), ``grad_norm`` (at the step's start),
        ``damping`` (used by the step), ``rho`` (the unit step's gain
        ratio), ``cg_iter``, ``accepted``, ``step_size`` and ``momentum``
        (the coefficients ``a`` of ``delta`` and ``b`` of the previous step,
        both 0 if rejected), ``seconds`` (wall time of the step).
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
    """``L = mean CE + (l2/2) ||M theta||^2`` at ``lin``'s point, a 0-d float64 array (left on the device)."""
    if l2 == 0.0:
        return lin._mean_loss
    xp = lin.xp
    return lin._mean_loss + 0.5 * l2 * xp.sum(lin.weight_mask * lin.theta * lin.theta, dtype=xp.float64)


def _grad_norm(xp, g):
    # ||g||_inf, 0-d (left on the device)
    return xp.max(xp.abs(g))


def _update_damping(damping, rho):
    if not rho > RHO_GROW:  # includes rho = nan (no predicted decrease)
        damping *= DAMPING_INCREASE
    elif rho > RHO_SHRINK:
        damping *= DAMPING_DECREASE
    return min(max(damping, DAMPING_MIN), DAMPING_MAX)


class _Subspace:
    """The points ``theta + sum_j c_j d_j`` of one step's subspace, and the GGN model of the objective there.

    ``directions`` are the step's ``delta`` and, after the first step, the
    previous accepted step. When the head's logits are affine in ``theta``
    (:class:`LinearHead`), ``images`` are the directions' logit images
    ``Jz d_j`` on ``lin``'s rows: a point's logits are then
    ``Z + sum_j c_j Jz d_j``, with no forward pass, and the images hold at
    every point. Otherwise (``images=None``) each point is a forward pass
    and the images are taken where the model is built.
    """

    def __init__(self, lin, directions, images):
        self.lin, self.directions, self.images = lin, directions, images

    def _combine(self, parts, coef):
        # sum_j c_j parts_j; the unit step's (1, 0) returns parts[0] itself (no pass over it)
        dt = self.lin.dtype.type
        terms = [(part, c) for part, c in zip(parts, coef) if c != 0] or [(parts[0], 0.0)]
        (first, c0), rest = terms[0], terms[1:]
        if not rest:
            return first if c0 == 1 else first * dt(c0)
        out = first * dt(c0)
        for part, c in rest:
            out += dt(c) * part
        return out

    def step(self, coef):
        """``sum_j c_j d_j``, shape (P,)."""
        return self._combine(self.directions, coef)

    def point(self, coef):
        """``(linearization at theta + step(coef), its step's logit image or None)``."""
        lin = self.lin
        head, xp, theta = lin.head, lin.xp, lin.theta + self.step(coef)
        if self.images is None:
            return head._linearize(xp, theta, lin.X, lin.y), None
        image = self._combine(self.images, coef)
        return head._linearization(xp, theta, lin.X, lin.y, lin.logits + image, None), image

    def model_sums(self, at, l2):
        """The row sums behind :meth:`model`, one float64 vector left on the device.

        ``[sum_i g_i . A_i, ..B_i, A^T H A, A^T H B, B^T H B]`` of
        :func:`kernels.subspace_sums`, then, with ``l2``, the penalty's slopes
        ``(M theta) . d_j`` and curvatures ``d_j^T M d_k``: the caller moves
        it to the host with its other scalars (one transfer).
        """
        xp, dirs = at.xp, self.directions
        images = self.images if self.images is not None else [at._logits_jvp(d) for d in dirs]
        sums = kernels.subspace_sums(xp, at.U, at.residual, at.y, images[0], images[-1])
        if not l2:
            return sums
        D = xp.stack(dirs)
        masked = D * at.weight_mask
        penalty = xp.concatenate([masked @ at.theta, (masked @ D.T).ravel()]).astype(xp.float64)
        return xp.concatenate([sums, penalty])

    def quadratic(self, values, n_samples, l2):
        """``(G, H)`` (NumPy float64) from the host ``values`` of :meth:`model_sums`."""
        m = len(self.directions)
        sums = numpy.asarray(values[:5], dtype=numpy.float64) / n_samples
        G = numpy.array([sums[0], sums[1]][:m])
        H = numpy.array([[sums[2], sums[3]], [sums[3], sums[4]]])[:m, :m]
        if l2:
            penalty = numpy.asarray(values[5:], dtype=numpy.float64)
            G += l2 * penalty[:m]
            H += l2 * penalty[m:].reshape(m, m)
        return G, H

    def model(self, at, l2):
        """``(G, H)``: the objective's slope and GGN curvature over the subspace at ``at`` (a point of it).

        ``G_j = grad L(at) . d_j`` and
        ``H_jk = (1/N) sum_i (Jz_i d_j)^T H_i (Jz_i d_k) + l2 d_j^T M d_k``,
        ``H_i`` the softmax Hessian of row ``i`` (float64 NumPy arrays).
        """
        return self.quadratic(host_floats(at.xp, self.model_sums(at, l2)), at.n_samples, l2)

    @staticmethod
    def newton(G, H, coef):
        """``coef + t``, ``t`` the minimiser of the model ``(G, H)`` taken at the point of ``coef``.

        With two directions that are collinear in ``H``'s metric
        (``H_01^2 >= (1 - 1e-8) H_00 H_11``, a singular ``H`` up to rounding)
        the previous step is dropped; ``None`` when ``H_00`` is not positive.
        """
        t = numpy.zeros(len(coef))
        if not H[0, 0] > 0:
            return None
        if len(G) == 2 and H[0, 1] ** 2 < (1 - COLLINEAR_TOL) * H[0, 0] * H[1, 1]:
            t[:] = -numpy.linalg.solve(H, G)
        else:
            t[0] = -G[0] / H[0, 0]
        return tuple(float(c) for c in numpy.asarray(coef) + t)


class _Progress:
    """One line per step on stdout when ``verbose``: ``a`` and ``b`` are the step's coefficients (0 if rejected)."""

    def __init__(self, verbose):
        self.verbose = verbose
        if verbose:
            print(f"{'iter':>5} {'objective':>14} {'|grad|_inf':>11} {'damping':>9} {'rho':>6} {'cg':>4} "
                  f"{'a':>6} {'b':>6} {'s':>7}")

    def __call__(self, k, record):
        if self.verbose:
            print(
                f"{k:>5} {record['objective']:>14.8f} {record['grad_norm']:>11.3e} {record['damping']:>9.2e} "
                f"{record['rho']:>6.2f} {record['cg_iter']:>4} {record['step_size']:>6.2f} {record['momentum']:>6.2f} "
                f"{record['seconds']:>7.3f}",
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
    curvature_rows=2048,
    dropped="kronecker",
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
        Stop when ``||grad L||_inf <= tol``, or when a step whose gain ratio
        is above 0.25 changes the objective by at most ``tol * max(|L|, 1)``
        (full batch).
    batch_size : int, optional
        ``None``: full batch. Otherwise the data are reshuffled each epoch and
        cut into mini-batches of this size; each takes one damped step.
    solver : {"auto", "cg", "cholesky"}
        Row-space solver. With the Kronecker damping (``dropped="kronecker"``
        and more than two classes) the steps are solved by CG for ``"auto"``
        and ``"cg"``; ``"cholesky"`` uses the plain damping ``lambda I``
        (:func:`fgn_step`), whose Gram matrix has a closed form.
    curvature_rows : int or None, default 2048
        Rows of the FGN curvature per step: a batch with more rows uses this
        many, drawn at random at each step. ``None``: all of the batch.
    dropped : {"kronecker", None}, default "kronecker"
        Damp the steps with a Kronecker-factored stand-in for the
        within-competitor covariance FGN drops (see the module docstring
        and :mod:`fgn_arrays.compensation`), or with ``lambda I`` alone.
    random_state : int or None
        Seed of the mini-batch shuffling and of the curvature rows.
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
    When consecutive steps use the same rows for the curvature (full batch
    and at most ``curvature_rows`` rows), CG is warm-started from the
    previous step's row-space coefficients.
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
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}; got {solver!r}.")
    if curvature_rows is not None:
        curvature_rows = check_positive_int(curvature_rows, "curvature_rows")
    if dropped not in DROPPED:
        raise ValueError(f"`dropped` must be one of {DROPPED}; got {dropped!r}.")
    kronecker = dropped == "kronecker" and head.n_classes > 2 and solver != "cholesky"
    rng = numpy.random.default_rng(random_state)

    history = {key: [] for key in HISTORY_KEYS}
    progress = _Progress(verbose)
    state = dict(theta=theta, damping=lam, stop=False)

    def curvature_batch(lin):
        """``(lin, None)``, or a linearization on ``curvature_rows`` of its rows drawn at random, and the rows."""
        n = lin.n_samples
        if curvature_rows is None or n <= curvature_rows:
            return lin, None
        rows = xp.asarray(numpy.sort(rng.choice(n, curvature_rows, replace=False)))
        return lin._take(rows), rows

    def covariance(lin, rows):
        """``Sigma``'s eigenpairs on the batch, and the curvature rows' rotated squares (or None).

        Both are kept while the output features stay the same array (a linear
        head on a full batch): then the rotated squares of all rows are made
        once and indexed at each step.
        """
        F, _ = lin._output_layer()
        if state.get("features") is not F:
            state.update(features=F, eig=output_covariance(lin), rotated=None)
            return state["eig"], None
        if rows is None:
            return state["eig"], None
        if state["rotated"] is None:
            state["rotated"] = rotated_squares(F, state["eig"][1])
        return state["eig"], state["rotated"][rows]

    def run_step(lin, g, f, g_norm, x0, rtol, previous, gradient):
        """One damped step on ``lin``'s batch, from its objective ``f``, gradient ``g`` and ``||g||_inf``.

        ``previous`` is ``None`` or ``(s, image)``: the previous accepted step
        and its logit image on ``lin``'s rows (``None`` where it must be made).
        With ``gradient``, the new point's gradient on the batch is made too
        (full batch: it is the next step's). Returns ``(lin, g, f, g_norm)``
        at the new point (the old one if the step is rejected; ``g`` and
        ``g_norm`` None without ``gradient``), the row-space coefficients
        for a warm start, the record, ``rho`` and the new ``previous``.

        Host synchronisations on the GPU: CG's check points, then one
        transfer of the predicted decrease, the unit point's objective and
        the subspace model, and one of the corrected point's objective and
        gradient norm (a second only when the corrected point is not taken).
        """
        t0 = time.perf_counter()
        curv, rows = curvature_batch(lin)
        x0 = x0 if curv is lin else None
        if kronecker:
            eig, rotated = covariance(lin, rows)
            step = kronecker_fgn_step(curv, g, state["damping"], l2, eig, rtol=rtol, x0=x0, rotated=rotated)
        else:
            step = _fgn_step(curv, g, state["damping"], l2, solver, rtol, None, x0)
        delta = step.direction
        directions = [delta] if previous is None else [delta, previous[0]]
        images = None
        if head._affine_logits:
            images = [lin._logits_jvp(delta)]
            if previous is not None:
                images.append(previous[1] if previous[1] is not None else lin._logits_jvp(previous[0]))
        space = _Subspace(lin, directions, images)
        # the unit step gives rho; a Newton correction in the subspace may improve on it
        coef = (1.0,) + (0.0,) * (len(directions) - 1)
        best, image = space.point(coef)
        pred, f_unit, *sums = host_floats(
            xp, step.predicted_decrease, _objective(best, l2), space.model_sums(best, l2)
        )
        f_new, g_new, g_norm_new = f_unit, None, None
        rho = (f - f_unit) / pred if pred > 0 else math.nan
        corrected = space.newton(*space.quadratic(sums, best.n_samples, l2), coef)
        if corrected is not None and corrected[0] > 0:  # a <= 0 would abandon delta: rejected instead
            trial, trial_image = space.point(corrected)
            g_trial = _objective_grad(trial, l2) if gradient else None
            f_trial, *g_norm_trial = host_floats(
                xp, _objective(trial, l2), *([_grad_norm(xp, g_trial)] if gradient else [])
            )
            if f_trial < f_new:
                coef, best, image, f_new = corrected, trial, trial_image, f_trial
                g_new, g_norm_new = g_trial, (g_norm_trial or [None])[0]
        accepted = f_new < f
        used = state["damping"]
        state["damping"] = _update_damping(used, rho)
        record = dict(
            objective=f_new if accepted else f,
            grad_norm=g_norm,
            damping=used,
            rho=rho,
            cg_iter=step.n_iter,
            accepted=bool(accepted),
            step_size=float(coef[0]) if accepted else 0.0,
            momentum=float(coef[1]) if accepted and len(coef) > 1 else 0.0,
            seconds=0.0,
        )
        if accepted:
            state["theta"] = best.theta
            previous = (space.step(coef), image)
            if gradient and g_new is None:
                g_new = _objective_grad(best, l2)
                (g_norm_new,) = host_floats(xp, _grad_norm(xp, g_new))
        else:
            best, g_new, f_new, g_norm_new = lin, g, f, g_norm
        record["seconds"] = time.perf_counter() - t0
        for key in HISTORY_KEYS:
            history[key].append(record[key])
        progress(len(history["objective"]), record)
        if callback is not None and callback(state["theta"], record):
            state["stop"] = True
        coefficients = step.coefficients if curv is lin else None
        return best, g_new, f_new, g_norm_new, coefficients, record, rho, previous

    status, converged, n_iter = f"maxiter ({max_iter}) reached", False, 0
    if batch_size is None or batch_size >= N:
        lin = head._linearize(xp, theta, X, y)
        g = _objective_grad(lin, l2)
        f, g_norm = host_floats(xp, _objective(lin, l2), _grad_norm(xp, g))
        g0 = max(g_norm, 1e-300)
        coefficients = previous = None
        for n_iter in range(1, max_iter + 1):
            if g_norm <= tol:
                status, converged, n_iter = "converged: ||grad||_inf <= tol", True, n_iter - 1
                break
            rtol = min(CG_RTOL_MAX, max(CG_RTOL_MIN, math.sqrt(g_norm / g0)))
            f_old = f
            lin, g, f, g_norm, coefficients, record, rho, previous = run_step(
                lin, g, f, g_norm, coefficients, rtol, previous, gradient=True
            )
            # a small change counts only from a step the model predicted well (not one cut short)
            if record["accepted"] and rho > RHO_GROW and f_old - f <= tol * max(abs(f), 1.0):
                status, converged = "converged: relative objective change <= tol", True
                break
            if state["stop"]:
                status = "stopped by callback"
                break
    else:
        previous = None
        for n_iter in range(1, max_iter + 1):
            order = xp.asarray(rng.permutation(N))
            for start in range(0, N, batch_size):
                rows = order[start : start + batch_size]
                lin = head._linearize(xp, state["theta"], X[rows], y[rows])
                g = _objective_grad(lin, l2)
                f, g_norm = host_floats(xp, _objective(lin, l2), _grad_norm(xp, g))
                # the previous step's logit image was on other rows
                previous = None if previous is None else (previous[0], None)
                previous = run_step(lin, g, f, g_norm, None, CG_RTOL_MAX, previous, gradient=False)[-1]
                if state["stop"]:
                    break
            if state["stop"]:
                status = "stopped by callback"
                break

    final = head._linearize(xp, state["theta"], X, y)
    objective, grad_norm = host_floats(xp, _objective(final, l2), _grad_norm(xp, _objective_grad(final, l2)))
    if batch_size is not None and batch_size < N and grad_norm <= tol:
        status, converged = "converged: ||grad||_inf <= tol", True
    return OptimizeResult(
        theta=state["theta"],
        objective=objective,
        grad_norm=grad_norm,
        n_iter=n_iter,
        converged=converged,
        status=status,
        damping=state["damping"],
        history=history,
    )
