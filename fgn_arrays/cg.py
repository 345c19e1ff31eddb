"""Backend-agnostic preconditioned conjugate gradient (CGResult).

Conventions
-----------
Solves ``A x = b`` for a symmetric positive definite operator ``A`` given only
as ``matvec(v) = A v``. ``b``, ``x0``, every iterate and every vector that
``matvec`` and ``precond`` take and return are 1-D arrays of shape ``(n,)`` of
one namespace ``xp`` (``numpy`` or ``cupy``), in ``b``'s floating dtype.
The stopping rule is SciPy's: ``||r|| <= max(rtol * ||b||, atol)`` with
``r = b - A x`` updated recursively and ``||.||`` the Euclidean norm.

Each iteration is the matvec and three fused passes over the vectors
(:mod:`fgn_arrays.kernels`, "Conjugate gradient updates"): Numba kernels on
the CPU, Numba CUDA kernels on the GPU, one formula for both. The scalars
``rho``, ``p^T A p``, ``alpha`` and ``beta`` never leave the device: they
live in a small float64 state vector, and the kernels freeze the iterate
(``alpha = 0``) once it has converged or broken down. The loop synchronizes
with the host only at check points (every ``check_every`` iterations and at
``maxiter``), by one transfer of that state; the iterate it returns is
always the one whose residual was tested, so ``check_every`` changes how
often the host looks, never the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import kernels
from ._backend import get_namespace, host_floats
from ._validation import check_nonneg_scalar, check_positive_int

__all__ = ["cg", "CGResult"]

_CONVERGED = "converged: ||r|| <= max(rtol*||b||, atol)"
_ZERO_RHS = "zero right-hand side"
_MAXITER = "maxiter reached"
_NONFINITE = "breakdown: non-finite value"
_CURVATURE = "breakdown: p^T A p <= 0"
_PRECOND = "breakdown: r^T M^-1 r <= 0"

# The kernels' stop codes (kernels.cpu.CG_*) in words.
_REASONS = {
    kernels.CG_NONFINITE: _NONFINITE,
    kernels.CG_CURVATURE: _CURVATURE,
    kernels.CG_PRECOND: _PRECOND,
    kernels.CG_CONVERGED: _CONVERGED,
}
# Check points on the GPU when `check_every` is not given: one host
# synchronisation per this many iterations.
GPU_CHECK_EVERY = 8


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`cg`.

    Attributes
    ----------
    x : array of shape (n,)
        The returned iterate, in ``b``'s namespace and dtype. Always finite.
    converged : bool
        Whether ``residual_norm <= max(rtol * ||b||, atol)``.
    n_iter : int
        Number of CG iterations that produced ``x`` (0 for ``x0`` itself).
    residual_norm : float
        Norm of the recursively updated residual ``r = b - A x`` at ``x``;
        ``inf`` only when ``matvec(x0)`` itself was not finite.
    status : str
        Why the solver stopped, in words, e.g.
        ``"converged: ||r|| <= max(rtol*||b||, atol)"``, ``"zero right-hand side"``,
        ``"maxiter reached"``, ``"breakdown: p^T A p <= 0"``,
        ``"breakdown: r^T M^-1 r <= 0"``, ``"breakdown: non-finite value"``.
    """

    x: Any
    converged: bool
    n_iter: int
    residual_norm: float
    status: str


def cg(
    matvec,
    b,
    x0=None,
    *,
    rtol=1e-5,
    atol=0.0,
    maxiter=None,
    precond=None,
    check_every=None,
    callback=None,
):
    """Solve ``A x = b`` for symmetric positive definite ``A`` by preconditioned CG.

    Parameters
    ----------
    matvec : callable
        ``matvec(v)`` returns ``A v``; takes and returns arrays of shape (n,)
        in ``b``'s namespace. Its output is cast to the working dtype.
    b : numpy.ndarray or cupy.ndarray of shape (n,)
        Right-hand side; must be finite. A floating dtype is kept (float32 stays
        float32); integer and boolean ``b`` are solved in float64.
    x0 : array of shape (n,), optional
        Starting point, same namespace as ``b``, cast to the working dtype.
        Default: zeros.
    rtol, atol : float, default 1e-5 and 0.0
        Stop when ``||r|| <= max(rtol * ||b||, atol)``. Finite and >= 0.
    maxiter : int, optional
        Largest number of iterations, >= 0. Default ``10 * n``.
    precond : callable or array of shape (n,), optional
        ``precond(r)`` returns ``M^{-1} r`` for a symmetric positive definite
        preconditioner ``M``; shape (n,) in and out. An array is the diagonal
        of ``M^{-1}`` (positive and finite, in ``b``'s namespace; e.g.
        ``1 / diag(A)`` for Jacobi): it is applied inside the fused update
        kernels, at no extra pass. Default: identity.
    check_every : int, optional
        Read the solver's state on the host only every ``check_every``
        iterations (and at ``maxiter``). Convergence and breakdown are tested
        on the device at every iteration and freeze the iterate, so the
        result does not depend on ``check_every``; a larger value means fewer
        host synchronizations and up to ``check_every - 1`` idle iterations
        (matvecs whose result is discarded) after the iterate froze. Default:
        1 for NumPy arrays, ``GPU_CHECK_EVERY`` (8) for GPU arrays.
    callback : callable, optional
        ``callback(xk)`` is called after every iteration with the current
        iterate, shape (n,), which CG updates in place: copy it to keep it,
        and do not modify it. It forces a host synchronization only if it
        does so itself (e.g. by ``float(...)``). After the iterate froze
        (converged or broke down between check points) the same ``xk`` is
        passed again until the next check point.

    Returns
    -------
    CGResult
        ``x`` (n,), ``converged``, ``n_iter``, ``residual_norm``, ``status``.
        ``x`` never contains NaN or inf.

    Raises
    ------
    TypeError
        If ``matvec``, ``precond`` or ``callback`` is not callable, ``b`` or
        ``x0`` is not a NumPy/CuPy array, they mix backends, ``b`` is complex,
        ``rtol``/``atol`` are not real numbers, or ``maxiter``/``check_every``
        are not integers.
    ValueError
        If ``b`` is not 1-D or not finite, ``x0`` has another shape or is not
        finite, ``rtol``/``atol`` are negative or not finite, ``maxiter`` is
        below 0, ``check_every`` below 1, a ``precond`` array has another
        shape or entries that are not finite and > 0, or ``matvec`` /
        ``precond`` return an array of the wrong shape.

    Notes
    -----
    Preconditioned conjugate gradient (Hestenes and Stiefel, 1952). With
    ``r_0 = b - A x_0`` and ``p_0 = 0``, iteration ``k = 1, 2, ...`` does::

        z_{k-1} = M^{-1} r_{k-1}
        rho_k   = r_{k-1}^T z_{k-1}
        beta_k  = rho_k / rho_{k-1}                (beta_1 irrelevant: p_0 = 0)
        p_k     = z_{k-1} + beta_k p_{k-1}
        alpha_k = rho_k / (p_k^T A p_k)
        x_k     = x_{k-1} + alpha_k p_k
        r_k     = r_{k-1} - alpha_k A p_k

    Stopping rule (SciPy's): return ``x_k`` with ``converged=True`` at the first
    check point where ``||r_k|| <= max(rtol * ||b||, atol)``; ``k = 0`` is always
    a check point, so a starting point that already satisfies it returns with
    ``n_iter == 0``. ``b == 0`` returns ``x = 0`` at once. Otherwise stop at
    ``maxiter`` with ``converged=False``.

    Breakdown: CG needs ``rho_k > 0`` (``M`` positive definite) and
    ``p_k^T A p_k > 0`` (``A`` positive definite along ``p_k``). When either
    fails or is not finite, ``alpha_k`` is set to 0 and the iterate stays
    frozen at the last good ``x``; the next check point reports the breakdown
    and returns that ``x``. If ``x`` or ``r`` still became non-finite (overflow
    in a vector update), the iterate, residual norm and iteration count saved
    at the previous check point are returned instead. After a breakdown or an
    overflow, and until the next check point, ``matvec`` and ``precond`` may
    be called with non-finite vectors whose results are discarded.

    The dot products are accumulated in float64 and the scalars kept in
    float64 whatever the working dtype; the vectors stay in it.
    """
    xp = get_namespace(b, x0, names=("b", "x0"))
    for name, fn in (("matvec", matvec), ("callback", callback)):
        if not callable(fn) and not (fn is None and name != "matvec"):
            raise TypeError(f"`{name}` must be callable; got {type(fn).__name__}.")
    if b.ndim != 1:
        raise ValueError(f"`b` must be 1-D; got shape {tuple(b.shape)}.")
    for name, arr in (("b", b), ("x0", x0)):
        if arr is not None and arr.dtype.kind == "c":
            raise TypeError(f"`{name}` must be real; got dtype {arr.dtype}.")
    if x0 is not None and tuple(x0.shape) != tuple(b.shape):
        raise ValueError(
            f"`x0` must have the shape of `b`, {tuple(b.shape)}; got {tuple(x0.shape)}."
        )
    rtol = check_nonneg_scalar(rtol, "rtol")
    atol = check_nonneg_scalar(atol, "atol")
    n = b.shape[0]
    if maxiter is None:
        maxiter = 10 * n
    maxiter = check_positive_int(maxiter, "maxiter", minimum=0)
    if check_every is None:
        check_every = 1 if xp.__name__ == "numpy" else GPU_CHECK_EVERY
    check_every = check_positive_int(check_every, "check_every")

    dtype = b.dtype if b.dtype.kind == "f" else xp.float64
    b = b.astype(dtype, copy=False)
    # The diagonal of M^-1 (identity: ones), or None for a callable precond.
    dinv = _diagonal_precond(xp, precond, b)
    # One host round trip for the norm of b and the finiteness of the inputs.
    b_norm, b_finite, x0_finite, dinv_ok = host_floats(
        xp,
        xp.linalg.norm(b),
        xp.all(xp.isfinite(b)),
        True if x0 is None else xp.all(xp.isfinite(x0)),
        True if precond is None or dinv is None else xp.all(xp.isfinite(dinv) & (dinv > 0)),
    )
    if not b_finite:
        raise ValueError("`b` must be finite; got a NaN or inf entry.")
    if not x0_finite:
        raise ValueError("`x0` must be finite; got a NaN or inf entry.")
    if not dinv_ok:
        raise ValueError("`precond`, as an array, must be finite and > 0 (the diagonal of M^-1).")
    if b_norm == 0.0:
        return CGResult(xp.zeros_like(b), True, 0, 0.0, _ZERO_RHS)
    tol = max(rtol * b_norm, atol)
    return _iterate(xp, matvec, b, x0, tol, maxiter, dinv, precond, check_every, callback, check_start=True)


def _solve(matvec, b, x0=None, *, rtol=None, tol2=None, maxiter=None, dinv=None, precond=None):
    """:func:`cg` for the library's own systems, with ``b``, ``x0``, ``dinv`` and ``precond`` known to be valid.

    The tolerance is ``rtol ||b||``, or ``sqrt(tol2)`` with ``tol2`` a 0-d
    float64 array (left on the device). ``precond`` is a callable ``M^-1``;
    ``dinv`` the diagonal of ``M^-1`` (applied inside the fused updates).
    On the GPU it never synchronizes before the first check point: the
    tolerance and the starting state are formed on the device, and a
    starting point that already meets the tolerance (or ``b = 0``) is
    reported there, as converged with ``n_iter = 0``. On NumPy it is
    :func:`cg` without the input checks.
    """
    xp = get_namespace(b)
    n = b.shape[0]
    maxiter = 10 * n if maxiter is None else maxiter
    check_every = 1 if xp.__name__ == "numpy" else GPU_CHECK_EVERY
    if dinv is None and precond is None:
        dinv = xp.ones_like(b)
    if tol2 is None:
        # tol^2 = rtol^2 ||b||^2
        tol2 = xp.dot(b.astype(xp.float64), b.astype(xp.float64)) * (rtol * rtol)
    if xp.__name__ == "numpy":
        if not xp.any(b):
            return CGResult(xp.zeros_like(b), True, 0, 0.0, _ZERO_RHS)
        tol = math.sqrt(float(tol2))
        return _iterate(xp, matvec, b, x0, tol, maxiter, dinv, precond, check_every, None, check_start=True)
    return _iterate(xp, matvec, b, x0, tol2, maxiter, dinv, precond, check_every, None, check_start=False)


def _iterate(xp, matvec, b, x0, tol, maxiter, dinv, precond, check_every, callback, *, check_start):
    """The CG iterations from ``x0`` (see :func:`cg`'s Notes); ``dinv`` is None for a callable ``precond``.

    With ``check_start``, ``tol`` is a float and the start is checked on the
    host (check point ``k = 0``). Without, ``tol`` is ``tol^2`` as a 0-d
    float64 device array, and the start's state is formed on the device and
    first read at check point ``check_every``.
    """
    n, dtype = b.shape[0], b.dtype
    if x0 is None:
        x = xp.zeros_like(b)
        r = b.copy()
    else:
        x = x0.astype(dtype, copy=True)
        # r_0 = b - A x_0
        r = b - _apply(matvec, x, "matvec", n, dtype)
    # z_0 = M^-1 r_0,  rho_1 = r_0^T z_0,  p_1 = z_0
    p = r * dinv if dinv is not None else _apply(precond, r, "precond", n, dtype).copy()
    parts = xp.zeros((4, kernels.CG_PARTS), dtype=xp.float64)
    kernels.cg_dot(xp, r, r, parts, kernels.CG_RR)
    kernels.cg_dot(xp, r, p, parts, kernels.CG_RZ)
    rr, rho = parts[kernels.CG_RR].sum(), parts[kernels.CG_RZ].sum()

    if check_start:
        # Check point k = 0.
        rr, rho = host_floats(xp, rr, rho)
        r_norm = math.sqrt(rr) if math.isfinite(rr) else math.inf
        if not math.isfinite(r_norm):
            return CGResult(x, False, 0, math.inf, _NONFINITE)
        if r_norm <= tol:
            return CGResult(x, True, 0, r_norm, _CONVERGED)
        if not (math.isfinite(rho) and rho > 0):
            return CGResult(x, False, 0, r_norm, _NONFINITE if not math.isfinite(rho) else _PRECOND)
        if maxiter == 0:
            return CGResult(x, False, 0, r_norm, _MAXITER)
        # The solver's state (kernels.cpu.CG_*): rho, active, reason, moved iterations, tol^2, ||r||^2.
        state = xp.asarray([rho, 1.0, 0.0, 0.0, tol * tol, rr, 0.0, 0.0], dtype=xp.float64)
    else:
        state = _start_state(xp, rho, rr, tol)
        if maxiter == 0:
            return _result(x, state.tolist(), _MAXITER)
    saved = (x.copy(), 0, state[kernels.CG_RNORM2].copy())

    state_next = xp.empty_like(state)
    # z is read only for a callable precond, which makes it in the loop. The
    # placeholder is r, which cg_update_p does not write either: no argument
    # it writes is passed twice (the CUDA simulator copies each argument).
    z = r
    for k in range(1, maxiter + 1):
        q = _apply(matvec, p, "matvec", n, dtype)
        kernels.cg_dot(xp, p, q, parts, kernels.CG_PAP)
        # x += alpha p;  r -= alpha q  (alpha = rho / p^T A p, or 0 once frozen)
        kernels.cg_update_xr(xp, x, r, p, q, dinv, parts, state)
        if dinv is None:
            z = _apply(precond, r, "precond", n, dtype)
            kernels.cg_dot(xp, r, z, parts, kernels.CG_RZ)
        # p = z + beta p  (beta = r^T z / rho), and the next state
        kernels.cg_update_p(xp, r, p, z, dinv, parts, state, state_next)
        state, state_next = state_next, state
        if callback is not None:
            callback(x)
        if k % check_every != 0 and k != maxiter:
            continue

        # Check point: the only host synchronization of the loop.
        values = state.tolist()
        code = int(values[kernels.CG_REASON])
        if code == kernels.CG_OVERFLOW:
            # Overflow in a vector update: return the previous check point.
            x_prev, n_prev, rnorm2_prev = saved
            return CGResult(x_prev, False, n_prev, _norm(float(rnorm2_prev)), _NONFINITE)
        if code:
            return _result(x, values, _REASONS[code])
        if k != maxiter:
            saved = (x.copy(), int(values[kernels.CG_N_DONE]), values[kernels.CG_RNORM2])
    return _result(x, values, _MAXITER)


def _start_state(xp, rho, rr, tol2):
    """The state at ``x_0`` formed on the device (no synchronization): frozen at once if it already stops."""
    f64 = xp.float64
    finite = xp.isfinite(rr) & xp.isfinite(rho)
    # reason: non-finite r_0 or rho, converged, r^T M^-1 r <= 0, or none (active)
    reason = xp.where(~xp.isfinite(rr), kernels.CG_NONFINITE,
                      xp.where(rr <= tol2, kernels.CG_CONVERGED,
                               xp.where(~finite, kernels.CG_NONFINITE,
                                        xp.where(rho <= 0, kernels.CG_PRECOND, 0))))
    zero = xp.zeros((), dtype=f64)
    return xp.stack([rho.astype(f64), (reason == 0).astype(f64), reason.astype(f64), zero,
                     xp.asarray(tol2, dtype=f64), rr.astype(f64), zero, zero])


def _norm(rnorm2):
    return math.sqrt(rnorm2) if math.isfinite(rnorm2) else math.inf


def _result(x, values, status):
    """The CGResult at a check point from the state's ``values`` (a list)."""
    converged = status == _CONVERGED
    n_iter = int(values[kernels.CG_N_DONE])
    return CGResult(x, converged, n_iter, _norm(values[kernels.CG_RNORM2]), status)


def _diagonal_precond(xp, precond, b):
    """The diagonal of ``M^-1``: ones for no ``precond``, the array itself, or None for a callable."""
    if precond is None:
        return xp.ones_like(b)
    if callable(precond):
        return None
    if not hasattr(precond, "shape"):
        raise TypeError(f"`precond` must be callable or an array; got {type(precond).__name__}.")
    get_namespace(b, precond, names=("b", "precond"))  # one backend
    if tuple(precond.shape) != tuple(b.shape):
        raise ValueError(f"`precond`, as an array, must have the shape of `b`, {tuple(b.shape)}; "
                         f"got {tuple(precond.shape)}.")
    return precond.astype(b.dtype, copy=False)


def _apply(fn, v, name, n, dtype):
    """``fn(v)`` checked for shape (n,) and cast to ``dtype``."""
    out = fn(v)
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != (n,):
        raise ValueError(f"`{name}` must return an array of shape ({n},); got shape {shape}.")
    return out.astype(dtype, copy=False)
