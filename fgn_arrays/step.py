"""Damped Gauss-Newton steps: FGN in row space (CG or Cholesky), full GGN in parameter space.

Conventions
-----------
The objective is ``L(theta) = mean_i loss_i + (l2/2) ||theta_w||^2`` (weights
only, ``M = diag(weight_mask)``), with gradient ``g = lin.grad + l2 M theta``.
A step solves

    H delta = -g,    H = G + l2 M + damping I

with ``G = G_FGN`` (:func:`fgn_step`) or ``G = G_GGN`` (:func:`ggn_step`).

**Row space.** With ``A = S J``, ``S = diag(s)``, ``s_i = sqrt(w_i / N)``
(``sqrt(c_i w_i)``, ``c_i = s_i / sum_j s_j``, with sample weights ``s``)
and the damping ``Lam = damping I + l2 M`` (any SPD ``Lam``, e.g. the
Kronecker damping of :mod:`fgn_arrays.compensation`), ``H = A^T A + Lam``.
The gradient splits as ``g = A^T c + g_rest``, ``c_i = r_i / (N s_i)``
(``r`` the margin residual) on the rows whose curvature outweighs the
damping (``K_ii >= 2``) and ``c_i = 0`` on the others, and with
``beta = alpha - c`` Woodbury gives the ``N x N`` system

    K beta = A Lam^-1 g_rest - c,    K = I + A Lam^-1 A^T
    delta  = Lam^-1 (A^T beta - g_rest)

(``g_rest = l2 M theta`` plus the gradient of the rows with ``c_i = 0``).
This is the textbook form ``delta = Lam^-1 (A^T alpha - g)`` without its
cancellation: there ``A^T alpha`` and ``g`` nearly cancel on the rows the
damping does not dominate, and the difference is multiplied by
``1 / damping``. The rows left in ``g_rest`` cancel by a factor 2 at most,
and ``|c_i| <= sqrt(J_i Lam^-1 J_i^T) / N`` instead of growing like
``1 / sqrt(w_i)`` on confidently wrong rows.

**Honest steps.** Every step computes its parameter-space residual
``R = H delta + g`` from the returned ``delta`` and reports
``residual = ||R|| / ||g||``; ``converged`` is True only when the solver met
its tolerance, ``residual <= rtol`` and the predicted decrease is positive.
The row-space CG stops when ``||r|| <= rtol ||g|| / sqrt(||A||_F^2 + lam_max)``
(``lam_max`` the largest eigenvalue of ``Lam``), which in exact arithmetic
gives ``||delta - delta*||_H <= rtol ||delta*||_H`` and ``||R|| < rtol ||g||``
(``docs/derivation.md``, "Honest steps"); the check of ``R`` catches what
rounding takes away from that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from ._backend import cholesky_solve, get_namespace, host_floats
from ._validation import check_nonneg_scalar, check_positive_int, check_rtol, check_vector
from .cg import _solve
from .curvature import _fgn, _ggn
from .heads import Linearization

__all__ = ["StepResult", "fgn_step", "ggn_step"]

SOLVERS = ("auto", "cg", "cholesky")
PRECONDITIONERS = (None, "jacobi", "fgn")

# Cost model of solver="auto" (see `_choose_solver`).
CG_ITERATIONS_ESTIMATE = 20
CHOLESKY_MAX_ROWS = 8192
# The GPU path's latency terms: a CuPy call (kernel launch) costs about
# GPU_LAUNCH_SECONDS whatever its size; a CG iteration of the row-space
# system is CG_LAUNCHES_PER_ITERATION of them (counted on the CuPy stand-in,
# tests/test_gpu_budgets.py) and the Cholesky step about CHOLESKY_LAUNCHES
# (the Gram matrix, the float64 factorisation and two triangular solves);
# GPU_FLOPS_PER_SECOND turns the flop counts into seconds (a sustained rate,
# not the peak).
GPU_LAUNCH_SECONDS = 1e-5
CG_LAUNCHES_PER_ITERATION = 15
CHOLESKY_LAUNCHES = 30
GPU_FLOPS_PER_SECOND = 1e13

_CONVERGED = "converged: ||H delta + g|| <= rtol ||g||"


@dataclass(frozen=True)
class StepResult:
    """A damped Gauss-Newton step.

    Attributes
    ----------
    direction : array, shape (P,)
        ``delta``, always finite, in the dtype and on the backend of ``lin``.
    predicted_decrease : float
        ``-(g^T delta + 1/2 delta^T (G + l2 M) delta)`` under the step's own
        curvature ``G`` (FGN for :func:`fgn_step`, GGN for :func:`ggn_step`);
        always finite.
    residual : float
        ``||H delta + g|| / ||g||``, computed from the returned ``delta`` in
        its dtype (0 when ``g = 0``).
    n_iter : int
        CG iterations (0 for a direct Cholesky solve).
    converged : bool
        The solver met its tolerance, ``residual <= rtol`` and
        ``predicted_decrease > 0`` (see :func:`fgn_step`, Notes).
    solver : str
        What ran: ``"cg"`` (row space), ``"cholesky"`` (row space),
        ``"cg-parameter-space"`` (``damping`` numerically 0, or
        :func:`ggn_step`), ``"cg-kronecker"`` (the compensated step).
    coefficients : array, shape (N,), or None
        The row-space unknown ``beta`` (module docstring); pass it as ``x0``
        to warm-start the next step on the same batch. ``None`` for
        parameter-space solves.
    status : str
        Why the step stopped, in words.
    """

    direction: Any
    predicted_decrease: float
    residual: float
    n_iter: int
    converged: bool
    solver: str
    coefficients: Any
    status: str


@dataclass(frozen=True)
class _Solved:
    """A step before its scalars reach the host: ``pred`` and ``residual`` are 0-d float64 device arrays."""

    direction: Any
    pred: Any
    residual: Any
    n_iter: int
    solver_converged: bool
    solver: str
    coefficients: Any
    solver_status: str

    def scalars(self):
        """What :meth:`finish` needs from the device, for one transfer with the caller's own."""
        return (self.pred, self.residual)

    def finish(self, pred, residual, rtol):
        """The :class:`StepResult` from the host values of :meth:`scalars`."""
        if not self.solver_converged:
            converged, status = False, self.solver_status
        elif not residual <= rtol:
            converged, status = False, f"not converged: ||H delta + g|| = {residual:.2e} ||g|| > rtol (rounding)"
        elif not pred > 0:
            converged, status = False, "not converged: the model does not decrease along delta"
        else:
            converged, status = True, _CONVERGED
        return StepResult(self.direction, pred, residual, self.n_iter, converged, self.solver,
                          self.coefficients, status)


def _check_step_args(lin, damping, l2, rtol, maxiter):
    if not isinstance(lin, Linearization):
        raise TypeError(f"`lin` must be a Linearization (from head.linearize); got {type(lin).__name__}.")
    damping = check_nonneg_scalar(damping, "damping")
    l2 = check_nonneg_scalar(l2, "l2")
    if l2 > 0 and lin.theta is None:
        raise ValueError(
            f"`l2` > 0 needs the parameters (g = grad + l2 M theta); got l2={l2} and a linearization "
            "without them: pass `theta` to fa.linearize_logits."
        )
    rtol = check_rtol(rtol)
    if maxiter is not None:
        maxiter = check_positive_int(maxiter, "maxiter", minimum=0)
    return damping, l2, rtol, maxiter


def has_closed_form_gram(lin) -> bool:
    """Whether ``lin`` has the closed-form Gram matrix ``J J^T`` (False for models given by callables)."""
    return getattr(lin, "_closed_form_gram", True)


def require_closed_form_gram(lin, what, instead):
    """``ValueError`` naming ``what`` and ``instead`` when ``lin`` has no closed-form Gram matrix."""
    if not has_closed_form_gram(lin):
        raise ValueError(
            f"{what} needs the closed-form Gram matrix J J^T of a built-in head (LinearHead, TwoLayerHead); "
            f"a linearization from callables (fa.linearize_logits, fa.CallableHead) has none. Use {instead}."
        )


def _objective_grad(lin, l2):
    # g = (1/N) J^T r + l2 M theta
    if l2 == 0.0:
        return lin.grad
    return lin.grad + lin.dtype.type(l2) * lin.weight_mask * lin.theta


def _row_scales(lin):
    """``s = sqrt(w / N)`` (``sqrt(c w)`` with sample weights), the diagonal of ``S`` in ``A = S J``, shape (N,)."""
    return lin.xp.sqrt(lin._mean_rows(lin.curvature_weights))


def _dot64(xp, a, b):
    # a . b accumulated in float64, 0-d
    return xp.dot(a.astype(xp.float64), b.astype(xp.float64))


def _finish(lin, g, delta, apply_h, solver_info):
    """Check ``delta`` in parameter space: its residual and predicted decrease (module docstring).

    ``apply_h(delta)`` returns ``(H delta, delta^T (G + l2 M) delta)``: ``H``
    less the part that is damping, not model (``damping I``, and the
    compensation's extra on the output biases). A non-finite ``delta``
    (overflow) becomes 0, which the result reports as not converged.
    """
    xp = lin.xp
    ok = xp.all(xp.isfinite(delta))
    delta = xp.where(ok, delta, 0)
    Hd, quad = apply_h(delta)
    R = Hd + g
    g_norm = xp.sqrt(_dot64(xp, g, g))
    residual = xp.sqrt(_dot64(xp, R, R)) / xp.where(g_norm > 0, g_norm, 1.0)
    # pred = -(g^T delta + 1/2 delta^T (G + l2 M) delta)
    pred = -(_dot64(xp, g, delta) + 0.5 * quad)
    finite = ok & xp.isfinite(pred) & xp.isfinite(residual)
    pred = xp.where(finite, pred, 0.0)
    residual = xp.where(finite, residual, xp.where(g_norm > 0, 1.0, 0.0))
    n_iter, converged, solver, coefficients, status = solver_info
    return _Solved(xp.where(finite, delta, 0), pred, residual, n_iter, converged, solver, coefficients, status)


def _on_host(step, rtol):
    """The public :class:`StepResult` (one transfer of the step's scalars)."""
    pred, residual = host_floats(get_namespace(step.direction), *step.scalars())
    return step.finish(pred, residual, rtol)


class DiagonalDamping:
    """``Lam = damping I + l2 M``, the damping of :func:`fgn_step` (``damping > 0``).

    The interface the row-space solver needs (shared with
    :class:`fgn_arrays.compensation.KroneckerDamping`): ``solve``, ``apply``,
    ``quadratic`` (the model's share ``v^T (Lam - damping I) v``),
    ``lam_max`` and ``row_space_diag``.
    """

    def __init__(self, lin, damping, l2):
        dt = lin.dtype.type
        self.lin, self.damping, self.l2 = lin, damping, l2
        self.diag = dt(damping) + dt(l2) * lin.weight_mask
        self.inv = 1 / self.diag
        self.lam_max = damping + l2

    def solve(self, v):
        """``Lam^-1 v``."""
        return self.inv * v

    def apply(self, v):
        """``Lam v``."""
        return self.diag * v

    def quadratic(self, v):
        """``v^T (Lam - damping I) v = l2 v^T M v`` (0-d float64)."""
        return _penalty_quadratic(self.lin, v, self.l2)

    def _scaled(self, which):
        # J Lam^-1 J^T = (1/damping) J diag(damping / (damping + l2 M)) J^T: the Gram (or its
        # diagonal) at scales <= 1 in the working dtype, times 1/damping afterwards (no overflow)
        return which(self.damping / (self.damping + self.l2), 1.0)

    def row_space_diag(self, s):
        """Diagonal of ``K = I + A Lam^-1 A^T``, shape (N,): CG's Jacobi preconditioner."""
        dt = self.lin.dtype.type
        return 1 + (s * s / dt(self.damping)) * self._scaled(self.lin._margin_gram_diag)

    def gram(self, s):
        """``K`` itself, float64 ``(N, N)``: ``I + (s s^T) ⊙ (J Lam^-1 J^T)``, scaled in float64."""
        xp, N = self.lin.xp, self.lin.n_samples
        K = xp.asarray(self._scaled(self.lin._margin_gram), dtype=xp.float64)
        s64 = xp.asarray(s, dtype=xp.float64)
        K *= s64[:, None] / self.damping
        K *= s64[None, :]
        K[xp.arange(N), xp.arange(N)] += 1.0
        return K


def _penalty_quadratic(lin, v, l2):
    # l2 v^T M v, 0-d float64
    xp = lin.xp
    if not l2:
        return xp.zeros((), dtype=xp.float64)
    return l2 * xp.sum(lin.weight_mask * v * v, dtype=xp.float64)


def _choose_solver(lin) -> str:
    """``"cholesky"`` when building and factorising the Gram matrix costs less than CG.

    Cost model, in flops: CG runs ``CG_ITERATIONS_ESTIMATE`` iterations of one
    margin JVP and one VJP (``lin.cost_flops()["product"]``, about ``4 N C D``
    for the linear head); Cholesky builds the Gram matrix (``["gram"]``, about
    ``2 N^2 (C + D)``) and factorises it (``N^3 / 3``). On the GPU each side
    is in seconds, flops at ``GPU_FLOPS_PER_SECOND`` plus ``GPU_LAUNCH_SECONDS``
    per launch: ``CG_LAUNCHES_PER_ITERATION`` per CG iteration and
    ``CHOLESKY_LAUNCHES`` for the Cholesky step, so that small problems, where
    CG's iterations are launch-bound, go to Cholesky. Cholesky is never chosen
    above ``CHOLESKY_MAX_ROWS`` rows (its ``N x N`` float64 matrix).
    """
    N = lin.n_samples
    if N > CHOLESKY_MAX_ROWS or not has_closed_form_gram(lin):
        return "cg"
    flops = lin.cost_flops()
    cholesky, cg = flops["gram"] + N**3 / 3, CG_ITERATIONS_ESTIMATE * flops["product"]
    if lin.xp.__name__ != "numpy":
        cholesky = cholesky / GPU_FLOPS_PER_SECOND + CHOLESKY_LAUNCHES * GPU_LAUNCH_SECONDS
        cg = cg / GPU_FLOPS_PER_SECOND + CG_ITERATIONS_ESTIMATE * CG_LAUNCHES_PER_ITERATION * GPU_LAUNCH_SECONDS
    return "cholesky" if cholesky <= cg else "cg"


def row_space_operator(lin, damping, *, l2=0.0):
    """The FGN row-space operator ``a -> K a = (I + A Lam^-1 A^T) a`` for ``damping > 0``.

    Returns
    -------
    s : array, shape (N,)
        ``sqrt(w_i / N)``, the diagonal of ``S`` in ``A = S J``.
    lam_inv : array, shape (P,)
        ``1 / (damping + l2 M)``, the diagonal of ``Lam^-1``.
    matvec : callable
        ``(N,) -> (N,)``: one margin VJP and one margin JVP, the product
        :func:`fgn_step` applies at each CG iteration (benchmarks time it).
    """
    lam = DiagonalDamping(lin, damping, l2)
    s = _row_scales(lin)
    return s, lam.inv, _row_space_matvec(lin, s, lam.solve)


def _row_space_matvec(lin, s, lam_solve):
    """``a -> (I + A Lam^-1 A^T) a`` with ``A = diag(s) J`` and ``Lam^-1`` applied by ``lam_solve``."""

    def matvec(a):
        # a -> s ⊙ a -> J^T (s ⊙ a) -> Lam^-1 (...) -> s ⊙ J (...) -> a + (...)
        return a + s * lin._margin_jvp(lam_solve(lin._margin_vjp(s * a)))

    return matvec


def fgn_step(lin, damping, *, l2=0.0, solver="auto", rtol=1e-6, maxiter=None, x0=None) -> StepResult:
    """The damped FGN step, solved in row space (one row per example).

    Parameters
    ----------
    lin : Linearization
        From ``head.linearize(theta, X, y)``; any head.
    damping : float
        ``lambda >= 0``. A damping at or below ``eps * ||A||_F^2`` (``eps``
        of the working dtype; ``||A||_F^2`` the trace of ``G_FGN``) is
        numerically zero and the step is solved as ``damping = 0`` (see Notes).
    l2 : float, default 0
        Weight penalty of the objective (biases are not penalised).
    solver : {"auto", "cg", "cholesky"}
        ``"cg"``: matrix-free, Jacobi-preconditioned, one margin VJP and one
        margin JVP per iteration. ``"cholesky"``: factorises the explicit
        row-space matrix built from ``lin.margin_gram`` in float64.
        ``"auto"``: the cheaper of the two by the cost model of
        ``_choose_solver`` (flops on the CPU; on the GPU, flops and a
        per-launch latency, which favours Cholesky on small problems).
        Either solves the same system: ``solver`` never changes the step.
    rtol : float, default 1e-6
        Parameter-space accuracy: ``converged`` means
        ``||H delta + g|| <= rtol ||g||``. In ``[0, 1)``.
    maxiter : int, optional
        CG iterations at most (default ``10 N``; ``10 P`` in parameter space).
    x0 : array, shape (N,), optional
        Row-space starting point for CG, e.g. the previous step's
        ``coefficients`` on the same batch.

    Returns
    -------
    StepResult

    Notes
    -----
    The row-space system and the recovery of ``delta`` are in the module
    docstring. ``converged=True`` guarantees, for the returned ``delta``:

    - ``||H delta + g|| <= rtol ||g||``, ``H = G_FGN + l2 M + damping I``,
      evaluated in the working dtype (``StepResult.residual``); hence, with
      ``delta* = -H^-1 g``, ``||delta - delta*|| <= rtol ||g|| / lambda_min(H)``
      and ``lambda_min(H) >= damping``;
    - ``predicted_decrease > 0``.

    CG stops on a row-space residual that implies both in exact arithmetic
    (``||delta - delta*||_H <= rtol ||delta*||_H``); the parameter-space
    check (one extra margin VJP) makes them hold in floating point too, and
    reports ``converged=False`` where rounding (float32 at small damping)
    prevents them. The direction is always finite.

    The row-space matrix ``K = I + (s s^T) ⊙ (J Lam^-1 J^T)``, with
    ``J Lam^-1 J^T = lin.margin_gram(1/(damping + l2), 1/damping)``, has
    eigenvalues >= 1. For a numerically zero damping the Woodbury form needs
    ``Lam^-1``, which does not exist, so the step solves
    ``(G_FGN + l2 M + damping I) delta = -g`` by CG in parameter space from
    ``delta = 0``; on a consistent singular system this converges to the
    minimum-norm solution, and when ``g`` has a component outside the range
    of ``G_FGN + l2 M`` no finite minimiser exists and the result says
    ``converged=False``.
    """
    damping, l2, rtol, maxiter = _check_step_args(lin, damping, l2, rtol, maxiter)
    if not isinstance(solver, str):
        raise TypeError(f"`solver` must be a string; got {type(solver).__name__}.")
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}; got {solver!r}.")
    if solver == "cholesky":
        require_closed_form_gram(lin, "fgn_step(solver='cholesky')", "solver='cg' (or 'auto', which picks CG)")
    if x0 is not None:
        x0 = check_vector(lin.xp, x0, (lin.n_samples,), lin.dtype, "x0")
    g = _objective_grad(lin, l2)
    if damping > 0 and damping <= _numerical_zero(lin):
        damping = 0.0
    if damping == 0.0:
        step = _parameter_space_step(lin, g, 0.0, l2, _fgn, rtol, maxiter)
    else:
        step = _fgn_step(lin, DiagonalDamping(lin, damping, l2), g, solver, rtol, maxiter, x0, own_gradient=True)
    return _on_host(step, rtol)


def _frobenius2(lin, s):
    """``||A||_F^2 = sum_i s_i^2 ||J_i||^2 = tr(G_FGN)``, 0-d float64."""
    return lin.xp.sum(s * s * lin._margin_gram_diag(1.0, 1.0), dtype=lin.xp.float64)


def _numerical_zero(lin):
    """``eps * ||A||_F^2``: a damping at or below it does not change ``H`` in the working dtype."""
    (trace,) = host_floats(lin.xp, _frobenius2(lin, _row_scales(lin)))
    return float(numpy.finfo(lin.dtype).eps) * trace


def _fgn_step(lin, lam, g, solver, rtol, maxiter, x0, *, own_gradient):
    """The row-space step damped by ``lam`` (:class:`DiagonalDamping` or a Kronecker damping).

    ``g`` is the objective's gradient. With ``own_gradient`` it is ``lin``'s
    own (:func:`_objective_grad` at ``lam.l2``) and ``g_rest`` is formed
    from its parts; otherwise (:func:`fgn_arrays.minimize` passes the
    full-batch gradient with a ``lin`` on a subsample of the rows)
    ``g_rest = g - A^T c``. Returns a :class:`_Solved`.
    """
    xp = lin.xp
    dt = lin.dtype.type
    s = _row_scales(lin)
    diag = lam.row_space_diag(s)
    # Rows whose curvature outweighs the damping (K_ii >= 2) carry their gradient in c:
    # c_i = r_i / (N s_i) there (c_i r_i / s_i with sample weights), 0 elsewhere;
    # A^T c = (1/N) J^T (r on those rows)
    split = diag >= 2
    r = lin._mean_rows(lin.residual)
    c = xp.where(split, r / xp.where(split, s, 1), 0)
    if own_gradient:
        # g - A^T c = l2 M theta + (1/N) J^T (r on the other rows)
        g_rest = lin._margin_vjp(xp.where(split, 0, r))
        if lam.l2:  # not in place: the VJP's result may be a model's read-only array (DLPack)
            g_rest = g_rest + dt(lam.l2) * lin.weight_mask * lin.theta
    else:
        g_rest = g - lin._margin_vjp(s * c)
    # rhs = A Lam^-1 g_rest - c
    rhs = s * lin._margin_jvp(lam.solve(g_rest)) - c
    if solver == "auto":
        solver = _choose_solver(lin)
    elif solver == "cholesky":
        require_closed_form_gram(lin, "solver='cholesky'", "solver='cg' (or 'auto', which picks CG)")

    beta = None
    if solver == "cholesky":
        beta = cholesky_solve(lam.gram(s), xp.asarray(rhs, dtype=xp.float64))
        # K is positive definite in exact arithmetic (eigenvalues >= 1), but a
        # float32 Gram matrix scaled by 1/damping can lose that: CG below then.
    if beta is not None:
        beta = xp.asarray(beta, dtype=lin.dtype)
        info = (0, True, "cholesky", beta, "solved by Cholesky")
    else:
        # ||r|| <= rtol ||g|| / sqrt(||A||_F^2 + lam_max) (module docstring)
        tol2 = rtol * rtol * _dot64(xp, g, g) / (_frobenius2(lin, s) + lam.lam_max)
        res = _solve(_row_space_matvec(lin, s, lam.solve), rhs, x0, tol2=tol2, maxiter=maxiter, dinv=1 / diag)
        beta = res.x
        info = (res.n_iter, res.converged, "cg", beta, res.status)
    delta = lam.solve(lin._margin_vjp(s * beta) - g_rest)

    def apply_h(d):
        # H d = A^T (A d) + Lam d;  d^T (H - damping I) d = ||A d||^2 + d^T (Lam - damping I) d
        Ad = s * lin._margin_jvp(d)
        return lin._margin_vjp(s * Ad) + lam.apply(d), _dot64(xp, Ad, Ad) + lam.quadratic(d)

    return _finish(lin, g, delta, apply_h, info)


def ggn_step(lin, damping, *, l2=0.0, rtol=1e-6, maxiter=None, precond=None) -> StepResult:
    """The damped full-GGN step by parameter-space CG: the reference FGN is compared with.

    Solves ``(G_GGN + l2 M + damping I) delta = -g`` with one logit JVP and
    one logit VJP per iteration. For :class:`LinearHead` the GGN is the
    Hessian of the cross-entropy, so this is a damped Newton step.

    Parameters
    ----------
    lin : Linearization
    damping : float
        ``>= 0``.
    l2 : float, default 0
    rtol : float, default 1e-6
        ``converged`` means ``||H delta + g|| <= rtol ||g||`` (as in
        :func:`fgn_step`). In ``[0, 1)``.
    maxiter : int, optional
        Default ``10 P``.
    precond : {None, "jacobi", "fgn"}, default None
        ``"jacobi"``: the diagonal of ``H``
        (:func:`fgn_arrays.precondition.ggn_diagonal`). ``"fgn"``: the damped
        FGN system ``G_FGN + l2 M + damping I`` applied through its
        row-space Woodbury form, its ``N x N`` Cholesky factor computed once
        (:class:`fgn_arrays.precondition.FGNPreconditioner`; needs
        ``damping > 0``): per iteration one margin JVP, two triangular solves
        and one margin VJP. It falls back to ``"jacobi"`` when ``damping`` is
        numerically zero (as in :func:`fgn_step`) or that matrix is not
        numerically positive definite (float32 at a small damping).

    Returns
    -------
    StepResult
        ``solver="cg-parameter-space"``, ``coefficients=None``;
        ``predicted_decrease`` is under the GGN quadratic model.
    """
    damping, l2, rtol, maxiter = _check_step_args(lin, damping, l2, rtol, maxiter)
    if precond is not None and not isinstance(precond, str):
        raise TypeError(f"`precond` must be None or a string; got {type(precond).__name__}.")
    if precond not in PRECONDITIONERS:
        raise ValueError(f"`precond` must be one of {PRECONDITIONERS}; got {precond!r}.")
    if precond is not None:
        require_closed_form_gram(lin, f"ggn_step(precond={precond!r})", "precond=None")
    if precond == "fgn" and damping == 0:
        raise ValueError("`precond='fgn'` needs `damping` > 0 (the FGN system's Woodbury form); got 0.")
    g = _objective_grad(lin, l2)
    if precond == "fgn" and damping <= _numerical_zero(lin):
        precond = "jacobi"  # Lam^-1 would scale the iterates by 1 / damping
    M = _preconditioner(lin, lin, damping, l2, precond)
    return _on_host(_parameter_space_step(lin, g, damping, l2, _ggn, rtol, maxiter, M), rtol)


def _preconditioner(lin, curv, damping, l2, precond):
    """``M^-1`` for the GGN system on ``lin``: None, the Jacobi diagonal (array) or the FGN system on ``curv``'s rows.

    The FGN system falls back to Jacobi when its row-space matrix is not
    numerically positive definite (a float32 Gram matrix at a tiny damping).
    """
    # imported here: fgn_arrays.precondition builds on this module
    from .precondition import FGNPreconditioner, ggn_diagonal

    if precond == "fgn":
        try:
            return FGNPreconditioner(curv, damping, l2)
        except numpy.linalg.LinAlgError:
            precond = "jacobi"
    if precond == "jacobi":
        dt = lin.dtype.type
        return 1 / (ggn_diagonal(lin) + dt(damping) + dt(l2) * lin.weight_mask)
    return None


def _parameter_space_step(lin, g, damping, l2, curvature, rtol, maxiter, precond=None):
    """``(G + l2 M + damping I) delta = -g`` by (preconditioned) CG from 0; a :class:`_Solved`.

    ``precond``: None, the diagonal of ``M^-1`` (an array) or a callable ``M^-1``.
    """
    xp, dt = lin.xp, lin.dtype.type
    shift = dt(damping) + dt(l2) * lin.weight_mask

    def matvec(v):
        # (G + l2 M + damping I) v
        return curvature(lin, v) + shift * v

    # an array is the diagonal of M^-1 (Jacobi), applied inside CG's fused updates
    diagonal = precond is not None and not callable(precond)
    res = _solve(matvec, -g, rtol=rtol, maxiter=maxiter, dinv=precond if diagonal else None,
                 precond=None if diagonal else precond)

    def apply_h(d):
        # H d;  d^T (H - damping I) d = d^T H d - damping ||d||^2
        Hd = matvec(d)
        return Hd, _dot64(xp, d, Hd) - damping * _dot64(xp, d, d)

    return _finish(lin, g, res.x, apply_h,
                   (res.n_iter, res.converged, "cg-parameter-space", None, res.status))
