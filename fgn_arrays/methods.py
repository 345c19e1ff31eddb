"""The step policies of :func:`fgn_arrays.minimize`: one small class per method.

Conventions
-----------
A method is an object with ``init()`` (its state before the first step) and
``step(point, damping, rtol, state, gradient)``, which proposes the next
point from the current one (a :class:`Proposal`, carrying the state to keep
if the proposal is accepted), after optimistix's solvers. Accepting or
rejecting, the damping rule and the stopping rule live in the loop of
:func:`fgn_arrays.minimize`, the same for every method.

The loop asks the method's ``damping_rule`` for the next damping from the
unit step's gain ratio: :class:`LevenbergMarquardt` for ``"fgn"``,
:class:`Nielsen` for the others.

Every method solves a damped system ``(curvature + Lam) delta = -g`` at the
point, with ``g`` the batch gradient and ``Lam = damping I + l2 M`` (plus the
Kronecker stand-in for ``"fgn-compensated"``); the curvature may come from
a random subsample of ``curvature_rows`` of the batch's rows (drawn afresh
at each step from the method's ``rng``).

- ``"fgn"`` (:class:`FGN`): the paper's algorithm. The damped FGN step
  (:func:`fgn_arrays.fgn_step`), the unit step, Levenberg-Marquardt damping.
- ``"fgn-compensated"`` (:class:`CompensatedFGN`): the FGN step damped by a
  Kronecker-factored stand-in for the dropped within-competitor covariance
  (:mod:`fgn_arrays.compensation`), then one Newton correction of the step
  length in the plane of ``delta`` and the previous step (:class:`Subspace`).
- ``"ggn-pcg"`` (:class:`PreconditionedGGN`): the damped full-GGN step (for
  :class:`LinearHead` the Hessian: a damped Newton step) by parameter-space
  CG, preconditioned by the damped FGN system on the curvature rows through
  its row-space Woodbury form (:class:`fgn_arrays.precondition.FGNPreconditioner`).

A batch held as Dask arrays (:mod:`fgn_arrays._dask`) comes as a
linearization with ``_in_memory = False`` and no per-row arrays: the
methods take its curvature rows through ``_take`` as for any batch, and
its whole-batch sums (the output-feature covariance, the plane's model)
from its ``_output_covariance`` and ``_subspace_sums``, passes over its chunks.

Host synchronisations on the GPU, per step: the solver's check points, then
one transfer of the step's scalars with the candidate's objective and
gradient norm (``"fgn-compensated"``: a second for its corrected point).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy

from . import kernels
from ._backend import host_floats
from .compensation import kronecker_fgn_step, output_covariance, rotated_squares
from .curvature import _ggn
from .step import (
    DiagonalDamping,
    StepResult,
    _fgn_step,
    _objective_grad,
    _parameter_space_step,
    _preconditioner,
)

# Damping rules: the gain ratio rho below which a step counts as badly predicted, the bounds of lambda.
RHO_SHRINK, RHO_GROW = 0.5, 0.25
DAMPING_DECREASE, DAMPING_INCREASE = 0.1, 2.0
DAMPING_MIN, DAMPING_MAX = 1e-8, 1e8
# Two subspace directions whose H-metric cosine^2 exceeds 1 - this are treated as one.
COLLINEAR_TOL = 1e-8
# Curvature rows per step when `curvature_rows="auto"` (methods other than "fgn").
AUTO_CURVATURE_ROWS = 2048


def objective(lin, l2):
    """``L = mean CE + (l2/2) ||M theta||^2`` at ``lin``'s point, a 0-d float64 array (left on the device)."""
    if l2 == 0.0:
        return lin._mean_loss
    xp = lin.xp
    return lin._mean_loss + 0.5 * l2 * xp.sum(lin.weight_mask * lin.theta * lin.theta, dtype=xp.float64)


def grad_norm(xp, g):
    """``||g||_inf``, 0-d (left on the device)."""
    return xp.max(xp.abs(g))


@dataclass(frozen=True)
class Point:
    """The objective on the batch at one ``theta``: its linearization, gradient, value and ``||g||_inf``.

    ``g`` and ``g_norm`` are None where the gradient was not needed (a
    mini-batch step's candidate).
    """

    lin: Any
    g: Any
    f: float
    g_norm: float | None


def evaluate(lin, l2):
    """The :class:`Point` at ``lin`` with its gradient (one transfer)."""
    g = _objective_grad(lin, l2)
    f, g_norm = host_floats(lin.xp, objective(lin, l2), grad_norm(lin.xp, g))
    return Point(lin, g, f, g_norm)


@dataclass(frozen=True)
class Proposal:
    """A method's proposed next point.

    ``f_unit`` is the objective at ``theta + delta`` (the gain ratio compares
    it with ``step.predicted_decrease``); ``point`` is the candidate the
    method prefers (``theta + a delta + b s`` for ``"fgn-compensated"``),
    ``coef`` its ``(a, b)``; ``state`` is the method's state if it is accepted.
    """

    point: Point
    f_unit: float
    step: StepResult
    coef: tuple
    state: Any


def _clip(damping):
    return min(max(damping, DAMPING_MIN), DAMPING_MAX)


class LevenbergMarquardt:
    """The classic gain-ratio rule: ``lambda *= 2`` for ``rho < 0.25``, ``lambda /= 10`` for ``rho > 0.5``."""

    def update(self, damping, rho):
        if rho < RHO_GROW:
            damping *= DAMPING_INCREASE
        elif rho > RHO_SHRINK:
            damping *= DAMPING_DECREASE
        return _clip(damping)


class Nielsen:
    """Nielsen's continuous rule, its decrease floored at 1/10.

    ``rho > 0``: ``lambda *= max(1/10, 1 - (2 rho - 1)^3)`` and ``nu = 2``;
    otherwise ``lambda *= nu`` and ``nu *= 2`` (Madsen, Nielsen and
    Tingleff, *Methods for non-linear least squares problems*, 2004; their
    floor is 1/3). The damping falls fast only after well-predicted steps,
    and grows faster with every rejection in a row: on
    ``make_heads_problem(12000, 256, 300, competitor_concentration=0)`` it
    took ``"ggn-pcg"`` to ``f* (1 + 1e-3)`` in 13 steps instead of 32 (14
    of them rejected) under :class:`LevenbergMarquardt`.
    """

    def __init__(self):
        self.nu = 2.0

    def update(self, damping, rho):
        if rho > 0:
            self.nu = 2.0
            damping *= max(DAMPING_DECREASE, 1 - (2 * rho - 1) ** 3)
        else:
            damping *= self.nu
            self.nu *= 2
        return _clip(damping)


class _Method:
    """What every method shares: the objective's ``l2``, the row-space solver and the curvature rows."""

    name = ""
    damping_rule = Nielsen

    def __init__(self, l2, solver, curvature_rows, rng):
        self.l2, self.solver, self.curvature_rows, self.rng = l2, solver, curvature_rows, rng

    def init(self):
        return None

    def _curvature(self, lin):
        """``(lin, None)``, or a linearization on ``curvature_rows`` of its rows drawn at random, and the rows."""
        n = lin.n_samples
        if self.curvature_rows is None or n <= self.curvature_rows:
            return lin, None
        rows = lin.xp.asarray(numpy.sort(self.rng.choice(n, self.curvature_rows, replace=False)))
        return lin._take(rows), rows

    def _candidate(self, lin, solved, rtol, gradient, theta=None):
        """The point ``theta`` (default ``lin.theta + delta``) and the step, in one transfer of their scalars."""
        xp = lin.xp
        theta = lin.theta + solved.direction if theta is None else theta
        new = lin._at(theta)
        g = _objective_grad(new, self.l2) if gradient else None
        pred, residual, f, *g_norm = host_floats(
            xp, *solved.scalars(), objective(new, self.l2), *([grad_norm(xp, g)] if gradient else [])
        )
        return Point(new, g, f, g_norm[0] if gradient else None), solved.finish(pred, residual, rtol)


@dataclass(frozen=True)
class _WarmStart:
    """Row-space coefficients of the last accepted step and the rows (``X``) they belong to."""

    coefficients: Any = None
    rows: Any = None

    def x0(self, curv, lin):
        same = curv is lin and self.rows is lin.X and self.coefficients is not None
        return self.coefficients if same else None


class FGN(_Method):
    """The paper's method: the damped FGN step, the unit step, Levenberg-Marquardt damping."""

    name = "fgn"
    damping_rule = LevenbergMarquardt

    def init(self):
        return _WarmStart()

    def step(self, point, damping, rtol, state, gradient):
        lin = point.lin
        curv, _ = self._curvature(lin)
        solved = _fgn_step(curv, DiagonalDamping(curv, damping, self.l2), point.g, self.solver, rtol, None,
                           state.x0(curv, lin), own_gradient=curv is lin)
        new, step = self._candidate(lin, solved, rtol, gradient)
        return Proposal(new, new.f, step, (1.0, 0.0), _WarmStart(step.coefficients, lin.X))


@dataclass(frozen=True)
class _Compensation:
    """State of :class:`CompensatedFGN`: the last accepted step, its logit image and rows; the covariance cache."""

    previous: Any = None
    image: Any = None
    rows: Any = None
    warm: _WarmStart = _WarmStart()
    features: Any = None
    eig: Any = None
    rotated: Any = None


class CompensatedFGN(_Method):
    """FGN damped by the Kronecker stand-in for the dropped covariance, with a plane correction.

    See :mod:`fgn_arrays.compensation` for the damping and :class:`Subspace`
    for the correction: the step taken is the better of the unit step and
    one Newton step, from it, over the plane spanned by ``delta`` and the
    previous accepted step ``s`` on the objective's GGN model (kept only if
    the coefficient of ``delta`` stays positive).
    """

    name = "fgn-compensated"

    def init(self):
        return _Compensation()

    def _covariance(self, state, lin, rows):
        """``(state, eig, rotated)``: Sigma's eigenpairs on the batch and the curvature rows' rotated squares.

        Both are kept while the output features stay the same array (a linear
        head on a full batch): then the rotated squares of all rows are made
        once, and indexed when the curvature rows are a subsample.
        """
        F, _ = lin._output_layer()
        if state.features is not F:
            # a Dask batch sums Sigma over its chunks (in a pass it makes anyway, when it can)
            eig = output_covariance(lin) if lin._in_memory else lin._output_covariance()
            state = replace(state, features=F, eig=eig, rotated=None)
            return state, state.eig, None
        if rows is None or not lin._in_memory:  # a Dask batch: the curvature rows square their own
            return state, state.eig, None
        if state.rotated is None:
            state = replace(state, rotated=rotated_squares(F, state.eig[1]))
        return state, state.eig, state.rotated[rows]

    def step(self, point, damping, rtol, state, gradient):
        lin, xp, l2 = point.lin, point.lin.xp, self.l2
        curv, rows = self._curvature(lin)
        state, eig, rotated = self._covariance(state, lin, rows)
        solved = kronecker_fgn_step(curv, point.g, damping, l2, eig, rtol=rtol, x0=state.warm.x0(curv, lin),
                                    rotated=rotated, own_gradient=curv is lin)
        delta = solved.direction
        previous = state.previous
        directions = [delta] if previous is None else [delta, previous]
        images = None
        if lin.head._affine_logits and lin._in_memory:
            images = [lin._logits_jvp(delta)]
            if previous is not None:
                images.append(state.image if state.rows is lin.X else lin._logits_jvp(previous))
        space = Subspace(lin, directions, images)
        # the unit step gives rho; a Newton correction in the plane may improve on it
        coef = (1.0,) + (0.0,) * (len(directions) - 1)
        unit, image = space.point(coef)
        sums = space.model_sums(unit, l2)  # first: a Dask batch then makes it and the objective in one pass
        pred, residual, f_unit, *sums = host_floats(xp, *solved.scalars(), objective(unit, l2), sums)
        step = solved.finish(pred, residual, rtol)
        best, best_coef, best_image = Point(unit, None, f_unit, None), coef, image
        corrected = space.newton(*space.quadratic(sums, unit.n_samples, l2), coef)
        if corrected is not None and corrected[0] > 0:  # a <= 0 would abandon delta
            trial, trial_image = space.point(corrected)
            g = _objective_grad(trial, l2) if gradient else None
            f, *g_norm = host_floats(xp, objective(trial, l2), *([grad_norm(xp, g)] if gradient else []))
            if f < f_unit:
                best = Point(trial, g, f, g_norm[0] if gradient else None)
                best_coef, best_image = corrected, trial_image
        if gradient and best.g is None:
            g = _objective_grad(best.lin, l2)
            (g_norm,) = host_floats(xp, grad_norm(xp, g))
            best = replace(best, g=g, g_norm=g_norm)
        best_coef = tuple(best_coef) + (0.0,) * (2 - len(best_coef))
        state = replace(state, previous=space.step(best_coef[: len(directions)]), image=best_image, rows=lin.X,
                        warm=_WarmStart(step.coefficients, lin.X))
        return Proposal(best, f_unit, step, best_coef, state)


class PreconditionedGGN(_Method):
    """The damped full-GGN step by CG, preconditioned by the damped FGN system on the curvature rows.

    The preconditioner ``(G_FGN + l2 M + damping I)^-1`` is applied through
    its row-space Woodbury form with the ``N_c x N_c`` Cholesky factor made
    once per step (``N_c`` curvature rows): each CG iteration is one GGN
    product (a logit JVP and VJP on the batch) and one preconditioner
    application (a margin JVP and VJP on the curvature rows and two
    triangular solves).
    """

    name = "ggn-pcg"

    def step(self, point, damping, rtol, state, gradient):
        lin = point.lin
        precond = _preconditioner(lin, self._curvature(lin)[0], damping, self.l2, "fgn")
        solved = _parameter_space_step(lin, point.g, damping, self.l2, _ggn, rtol, None, precond)
        new, step = self._candidate(lin, solved, rtol, gradient)
        return Proposal(new, new.f, step, (1.0, 0.0), None)


METHODS = {cls.name: cls for cls in (FGN, CompensatedFGN, PreconditionedGGN)}


class Subspace:
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
        theta = lin.theta + self.step(coef)
        if self.images is None:
            return lin._at(theta), None
        image = self._combine(self.images, coef)
        return lin._at(theta, lin.logits + image), image

    def model_sums(self, at, l2):
        """The row sums behind :meth:`model`, one float64 vector left on the device.

        ``[sum_i g_i . A_i, ..B_i, A^T H A, A^T H B, B^T H B]`` of
        :func:`kernels.subspace_sums`, then, with ``l2``, the penalty's slopes
        ``(M theta) . d_j`` and curvatures ``d_j^T M d_k``: the caller moves
        it to the host with its other scalars (one transfer).
        """
        xp, dirs = at.xp, self.directions
        if not at._in_memory:
            # a Dask batch (fgn_arrays._dask): the same sums over its chunks, in one pass
            sums = at._subspace_sums(dirs)
        else:
            images = self.images if self.images is not None else [at._logits_jvp(d) for d in dirs]
            # sample weights: rows weighted by N c_i, so that the sums over N stay the (weighted) means
            c = at.mean_weights
            weights = None if c is None else c * at.dtype.type(at.n_samples)
            sums = kernels.subspace_sums(xp, at.U, at.residual, at.y, images[0], images[-1], weights)
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
