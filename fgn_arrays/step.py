"""Damped Gauss-Newton steps: FGN in row space (CG or Cholesky), full GGN in parameter space.

Conventions
-----------
The objective is ``L(theta) = mean_i loss_i + (l2/2) ||theta_w||^2`` (weights
only), with gradient ``g = lin.grad + l2 M theta``. A step solves

    (G + l2 M + damping I) delta = -g

with ``G = G_FGN`` (:func:`fgn_step`) or ``G = G_GGN`` (:func:`ggn_step`).
With ``A = S J``, ``S = diag(sqrt(w_i / N))`` and the diagonal
``Lam = damping I + l2 M``, Woodbury turns the FGN system into the ``N x N``
row-space system

    (I + A Lam^-1 A^T) alpha = A Lam^-1 g
    delta = Lam^-1 (A^T alpha - g)

which never divides by ``w_i``: rows whose ``w_i`` underflows simply drop out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ._backend import cholesky_solve
from ._validation import check_nonneg_scalar, check_positive_int, check_vector
from .cg import _solve
from .curvature import _fgn, _ggn, fgn_quadratic, ggn_quadratic
from .heads import Linearization

__all__ = ["StepResult", "fgn_step", "ggn_step"]

SOLVERS = ("auto", "cg", "cholesky")

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


@dataclass(frozen=True)
class StepResult:
    """A damped Gauss-Newton step.

    Attributes
    ----------
    direction : array, shape (P,)
        ``delta``, finite, in the dtype and on the backend of ``lin``.
    predicted_decrease : float
        ``-(g^T delta + 1/2 delta^T (G + l2 M) delta)`` under the step's own
        curvature ``G`` (FGN for :func:`fgn_step`, GGN for :func:`ggn_step`).
    n_iter : int
        CG iterations (0 for a direct Cholesky solve).
    converged : bool
        Whether the solver met its tolerance (always True for Cholesky).
    solver : str
        What ran: ``"cg"`` (row space), ``"cholesky"`` (row space),
        ``"cg-parameter-space"`` (``damping = 0`` or :func:`ggn_step`).
    coefficients : array, shape (N,), or None
        Row-space solution ``alpha``; pass it as ``x0`` to warm-start the next
        step on the same batch. ``None`` for parameter-space solves.
    status : str
        Why the solver stopped, in words.
    """

    direction: Any
    predicted_decrease: float
    n_iter: int
    converged: bool
    solver: str
    coefficients: Any
    status: str


def _check_step_args(lin, damping, l2, rtol, maxiter):
    if not isinstance(lin, Linearization):
        raise TypeError(f"`lin` must be a Linearization (from head.linearize); got {type(lin).__name__}.")
    damping = check_nonneg_scalar(damping, "damping")
    l2 = check_nonneg_scalar(l2, "l2")
    rtol = check_nonneg_scalar(rtol, "rtol")
    if maxiter is not None:
        maxiter = check_positive_int(maxiter, "maxiter", minimum=0)
    return damping, l2, rtol, maxiter


def _objective_grad(lin, l2):
    # g = (1/N) J^T r + l2 M theta
    if l2 == 0.0:
        return lin.grad
    return lin.grad + lin.dtype.type(l2) * lin.weight_mask * lin.theta


def _predicted_decrease(lin, g, delta, quad):
    """``pred = -(g^T delta + 1/2 quad)``, ``quad = delta^T (G + l2 M) delta``: a 0-d float64 array.

    Left on the device: :func:`fgn_arrays.minimize` moves it to the host with
    the step's other scalars, in one transfer; the public steps take ``float``.
    """
    xp = lin.xp
    return -(xp.dot(g, delta).astype(xp.float64) + 0.5 * xp.asarray(quad, dtype=xp.float64))


def _model_quadratic(lin, delta, l2, quadratic):
    # delta^T (G + l2 M) delta, G the step's curvature (`quadratic`)
    quad = quadratic(lin, delta)
    if l2:
        quad = quad + l2 * lin.xp.sum(lin.weight_mask * delta * delta)
    return quad


def _on_host(step):
    """``step`` with its predicted decrease as a Python float (the public steps' result)."""
    return replace(step, predicted_decrease=float(step.predicted_decrease))


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
    if N > CHOLESKY_MAX_ROWS:
        return "cg"
    flops = lin.cost_flops()
    cholesky, cg = flops["gram"] + N**3 / 3, CG_ITERATIONS_ESTIMATE * flops["product"]
    if lin.xp.__name__ != "numpy":
        cholesky = cholesky / GPU_FLOPS_PER_SECOND + CHOLESKY_LAUNCHES * GPU_LAUNCH_SECONDS
        cg = cg / GPU_FLOPS_PER_SECOND + CG_ITERATIONS_ESTIMATE * CG_LAUNCHES_PER_ITERATION * GPU_LAUNCH_SECONDS
    return "cholesky" if cholesky <= cg else "cg"


def row_space_operator(lin, damping, *, l2=0.0):
    """The FGN row-space operator ``a -> (I + A Lam^-1 A^T) a`` for ``damping > 0``.

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
    dt = lin.dtype.type
    lam_inv = 1 / (dt(damping) + dt(l2) * lin.weight_mask)
    s = lin.xp.sqrt(lin.curvature_weights / dt(lin.n_samples))
    return s, lam_inv, _row_space_matvec(lin, s, lambda v: lam_inv * v)


def _row_space_matvec(lin, s, lam_inv):
    """``a -> (I + A Lam^-1 A^T) a`` with ``A = diag(s) J`` and ``Lam^-1`` applied by ``lam_inv``."""

    def matvec(a):
        # a -> s ⊙ a -> J^T (s ⊙ a) -> Lam^-1 (...) -> s ⊙ J (...) -> a + (...)
        return a + s * lin._margin_jvp(lam_inv(lin._margin_vjp(s * a)))

    return matvec


def fgn_step(lin, damping, *, l2=0.0, solver="auto", rtol=1e-6, maxiter=None, x0=None) -> StepResult:
    """The damped FGN step, solved in row space (one row per example).

    Parameters
    ----------
    lin : Linearization
        From ``head.linearize(theta, X, y)``; any head.
    damping : float
        ``lambda >= 0``. ``0`` is allowed: ``Lam`` may then be singular and the
        step is solved in parameter space (see Notes).
    l2 : float, default 0
        Weight penalty of the objective (biases are not penalised).
    solver : {"auto", "cg", "cholesky"}
        ``"cg"``: matrix-free, Jacobi-preconditioned, one margin VJP and one
        margin JVP per iteration. ``"cholesky"``: factorises the explicit
        row-space matrix built from ``lin.margin_gram`` in float64.
        ``"auto"``: the cheaper of the two by the cost model of
        ``_choose_solver`` (flops on the CPU; on the GPU, flops and a
        per-launch latency, which favours Cholesky on small problems).
    rtol : float, default 1e-6
        CG's relative residual tolerance on the row-space system.
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
    With ``A = S J``, ``S = diag(sqrt(w_i/N))``, ``Lam = damping I + l2 M``::

        (I + A Lam^-1 A^T) alpha = A Lam^-1 g,   delta = Lam^-1 (A^T alpha - g)

    The row-space matrix is ``I + (s s^T) ⊙ (J Lam^-1 J^T)``, and
    ``J Lam^-1 J^T = lin.margin_gram(1/(damping + l2), 1/damping)``: its
    eigenvalues are >= 1, so it is always positive definite and Cholesky
    cannot fail. The Jacobi preconditioner is its diagonal,
    ``1 + s_i^2 lin.margin_gram_diag(...)_i``.

    For ``damping = 0`` the Woodbury form needs ``Lam^-1``, which does not
    exist, so the step solves ``(G_FGN + l2 M) delta = -g`` by CG in
    parameter space from ``delta = 0``. On a consistent system this converges
    to the minimum-norm solution; when ``g`` has a component outside the
    range of ``G_FGN + l2 M`` (e.g. a row whose ``w_i`` underflowed) no finite
    minimiser exists and the result says ``converged=False``.
    """
    damping, l2, rtol, maxiter = _check_step_args(lin, damping, l2, rtol, maxiter)
    if solver not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}; got {solver!r}.")
    if x0 is not None:
        x0 = check_vector(lin.xp, x0, (lin.n_samples,), lin.dtype, "x0")
    return _on_host(_fgn_step(lin, _objective_grad(lin, l2), damping, l2, solver, rtol, maxiter, x0))


def _fgn_step(lin, g, damping, l2, solver, rtol, maxiter, x0):
    """:func:`fgn_step` on checked arguments, for any gradient ``g``.

    ``g`` need not be ``lin``'s own: :func:`fgn_arrays.minimize` passes the
    full-batch gradient with a ``lin`` on a subsample of the rows (the
    curvature is then the subsample's; Woodbury holds for any ``g``).
    """
    xp, N = lin.xp, lin.n_samples
    if damping == 0.0:
        return _parameter_space_step(lin, g, 0.0, l2, _fgn, fgn_quadratic, rtol, maxiter)

    s, lam_inv, _ = row_space_operator(lin, damping, l2=l2)
    weight_scale, bias_scale = 1 / (damping + l2), 1 / damping
    if solver == "auto":
        solver = _choose_solver(lin)

    alpha = None
    if solver == "cholesky":
        # K = I + (s s^T) ⊙ (J Lam^-1 J^T), factorised in float64
        K = xp.asarray(lin._margin_gram(weight_scale, bias_scale), dtype=xp.float64)
        s64 = xp.asarray(s, dtype=xp.float64)
        K *= s64[:, None]
        K *= s64[None, :]
        K[xp.arange(N), xp.arange(N)] += 1.0
        # rhs = A Lam^-1 g = s ⊙ J (Lam^-1 g)
        rhs = s * lin._margin_jvp(lam_inv * g)
        alpha = cholesky_solve(K, xp.asarray(rhs, dtype=xp.float64))
        # K is positive definite in exact arithmetic (eigenvalues >= 1), but a
        # float32 Gram matrix scaled by 1/damping can lose that: CG below then.
    if alpha is not None:
        alpha = xp.asarray(alpha, dtype=lin.dtype)
        delta = lam_inv * (lin._margin_vjp(s * alpha) - g)
        n_iter, converged, status, solver = 0, True, "solved by Cholesky", "cholesky"
    else:
        diag = 1 + s * s * lin._margin_gram_diag(weight_scale, bias_scale)
        alpha, delta, res = _row_space_cg(lin, g, s, lambda v: lam_inv * v, diag, rtol, maxiter, x0)
        n_iter, converged, status, solver = res.n_iter, res.converged, res.status, "cg"
    pred = _predicted_decrease(lin, g, delta, _model_quadratic(lin, delta, l2, fgn_quadratic))
    return StepResult(delta, pred, n_iter, converged, solver, alpha, status)


def _row_space_cg(lin, g, s, lam_inv, diag, rtol, maxiter, x0):
    """Solve ``(I + A Lam^-1 A^T) alpha = A Lam^-1 g`` by Jacobi-preconditioned CG.

    ``A = diag(s) J``; ``lam_inv(v)`` applies ``Lam^-1`` to a ``(P,)`` vector and
    ``diag`` is the system's diagonal. Returns ``alpha``,
    ``delta = Lam^-1 (A^T alpha - g)`` and the :class:`CGResult`.
    """
    matvec = _row_space_matvec(lin, s, lam_inv)
    # rhs = A Lam^-1 g = s ⊙ J (Lam^-1 g)
    rhs = s * lin._margin_jvp(lam_inv(g))
    # Jacobi: the diagonal of M^-1 = 1 / diag, applied inside CG's fused updates
    res = _solve(matvec, rhs, x0, rtol=rtol, maxiter=maxiter, dinv=1 / diag)
    delta = lam_inv(lin._margin_vjp(s * res.x) - g)
    return res.x, delta, res


def ggn_step(lin, damping, *, l2=0.0, rtol=1e-6, maxiter=None) -> StepResult:
    """The damped full-GGN step by parameter-space CG: the reference FGN is compared with.

    Solves ``(G_GGN + l2 M + damping I) delta = -g`` with one logit JVP and
    one logit VJP per iteration.

    Parameters
    ----------
    lin : Linearization
    damping : float
        ``>= 0``.
    l2 : float, default 0
    rtol : float, default 1e-6
        Relative residual tolerance of CG.
    maxiter : int, optional
        Default ``10 P``.

    Returns
    -------
    StepResult
        ``solver="cg-parameter-space"``, ``coefficients=None``;
        ``predicted_decrease`` is under the GGN quadratic model.
    """
    damping, l2, rtol, maxiter = _check_step_args(lin, damping, l2, rtol, maxiter)
    g = _objective_grad(lin, l2)
    return _on_host(_parameter_space_step(lin, g, damping, l2, _ggn, ggn_quadratic, rtol, maxiter))


def _parameter_space_step(lin, g, damping, l2, curvature, quadratic, rtol, maxiter):
    dt = lin.dtype.type
    shift = dt(damping) + dt(l2) * lin.weight_mask

    def matvec(v):
        # (G + l2 M + damping I) v
        return curvature(lin, v) + shift * v

    res = _solve(matvec, -g, rtol=rtol, maxiter=maxiter)
    pred = _predicted_decrease(lin, g, res.x, _model_quadratic(lin, res.x, l2, quadratic))
    return StepResult(res.x, pred, res.n_iter, res.converged, "cg-parameter-space", None, res.status)
