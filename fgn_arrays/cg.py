"""Backend-agnostic preconditioned conjugate gradient (CGResult).

Conventions
-----------
Solves ``A x = b`` for a symmetric positive definite operator ``A`` given only
as ``matvec(v) = A v``. ``b``, ``x0``, every iterate and every vector that
``matvec`` and ``precond`` take and return are 1-D arrays of shape ``(n,)`` of
one namespace ``xp`` (``numpy`` or ``cupy``), in ``b``'s floating dtype.
The stopping rule is SciPy's: ``||r|| <= max(rtol * ||b||, atol)`` with
``r = b - A x`` updated recursively and ``||.||`` the Euclidean norm.

On the GPU the loop does not synchronize with the host except at check points
(every ``check_every`` iterations and at ``maxiter``): the scalars
``r^T z``, ``p^T A p``, ``alpha`` and ``beta`` stay 0-d device arrays, and a
breakdown between check points freezes the iterate through ``xp.where``
masks instead of a Python ``if``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ._backend import get_namespace

__all__ = ["cg", "CGResult"]

_CONVERGED = "converged: ||r|| <= max(rtol*||b||, atol)"
_ZERO_RHS = "zero right-hand side"
_MAXITER = "maxiter reached"
_NONFINITE = "breakdown: non-finite value"
_CURVATURE = "breakdown: p^T A p <= 0"
_PRECOND = "breakdown: r^T M^-1 r <= 0"

# Codes of the 0-d ``reason`` array kept on the device between check points.
_REASONS = {1: _NONFINITE, 2: _CURVATURE, 3: _PRECOND}


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
    check_every=1,
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
    precond : callable, optional
        ``precond(r)`` returns ``M^{-1} r`` for a symmetric positive definite
        preconditioner ``M``; shape (n,) in and out. Default: identity.
    check_every : int, default 1
        Test convergence and breakdown only every ``check_every`` iterations
        (and at ``maxiter``). These tests are the loop's only host
        synchronizations on the GPU; a larger value trades a few extra
        iterations for fewer synchronizations.
    callback : callable, optional
        ``callback(xk)`` is called after every iteration with the current
        iterate, shape (n,); it must not modify it. It forces a host
        synchronization only if it does so itself (e.g. by ``float(...)``).
        After an undetected breakdown the iterate stays frozen, so the same
        ``xk`` may be passed again until the next check point.

    Returns
    -------
    CGResult
        ``x`` (n,), ``converged``, ``n_iter``, ``residual_norm``, ``status``.
        ``x`` never contains NaN or inf.

    Raises
    ------
    TypeError
        If ``matvec``, ``precond`` or ``callback`` is not callable, ``b`` or
        ``x0`` is not a NumPy/CuPy array, they mix backends, or ``b`` is complex.
    ValueError
        If ``b`` is not 1-D or not finite, ``x0`` has another shape or is not
        finite, ``rtol``/``atol`` are negative or not finite, ``maxiter`` is not
        an integer >= 0, ``check_every`` is not an integer >= 1, or ``matvec``
        / ``precond`` return an array of the wrong shape.

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
    fails or is not finite, ``alpha_k`` is masked to 0 and the iterate stays
    frozen at the last good ``x``; the next check point reports the breakdown
    and returns that ``x``. If ``x`` or ``r`` still became non-finite (overflow
    in a vector update), the iterate, residual norm and iteration count saved
    at the previous check point are returned instead. After such an overflow,
    and until the next check point, ``matvec`` and ``precond`` may be called
    with non-finite vectors whose results are discarded.
    """
    xp = get_namespace(b, x0, names=("b", "x0"))
    for name, fn in (("matvec", matvec), ("precond", precond), ("callback", callback)):
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
    rtol = _check_tol("rtol", rtol)
    atol = _check_tol("atol", atol)
    n = b.shape[0]
    if maxiter is None:
        maxiter = 10 * n
    maxiter = _check_int("maxiter", maxiter, 0, "an integer >= 0 or None")
    check_every = _check_int("check_every", check_every, 1, "an integer >= 1")

    dtype = b.dtype if b.dtype.kind == "f" else xp.float64
    b = b.astype(dtype, copy=False)
    # One host round trip for the norm of b and the finiteness of the inputs.
    b_norm, b_finite, x0_finite = _to_host(
        xp,
        xp.linalg.norm(b),
        xp.all(xp.isfinite(b)),
        True if x0 is None else xp.all(xp.isfinite(x0)),
    )
    if not b_finite:
        raise ValueError("`b` must be finite; got a NaN or inf entry.")
    if not x0_finite:
        raise ValueError("`x0` must be finite; got a NaN or inf entry.")
    if b_norm == 0.0:
        return CGResult(xp.zeros_like(b), True, 0, 0.0, _ZERO_RHS)
    tol = max(rtol * b_norm, atol)

    if x0 is None:
        x = xp.zeros_like(b)
        r = b.copy()
    else:
        x = x0.astype(dtype, copy=True)
        # r_0 = b - A x_0
        r = b - _apply(matvec, x, "matvec", n, dtype)

    # Check point k = 0.
    (r_norm,) = _to_host(xp, xp.linalg.norm(r))
    if not math.isfinite(r_norm):
        return CGResult(x, False, 0, math.inf, _NONFINITE)
    if r_norm <= tol:
        return CGResult(x, True, 0, r_norm, _CONVERGED)
    if maxiter == 0:
        return CGResult(x, False, 0, r_norm, _MAXITER)
    saved = (x, 0, r_norm)

    p = xp.zeros_like(b)
    rho = xp.ones((), dtype=dtype)
    active = xp.ones((), dtype=bool)  # False once the iterate is frozen
    reason = xp.zeros((), dtype=xp.int64)  # key of _REASONS, 0 while active
    n_done = xp.zeros((), dtype=xp.int64)  # iterations that moved x
    for k in range(1, maxiter + 1):
        z = r if precond is None else _apply(precond, r, "precond", n, dtype)
        with _quiet(xp):
            # rho_k = r_{k-1}^T z_{k-1}, must be > 0 for an SPD preconditioner
            rho_new = xp.dot(r, z)
            finite = xp.isfinite(rho_new)
            reason = xp.where(active & ~finite, 1, reason)
            reason = xp.where(active & finite & (rho_new <= 0), 3, reason)
            active = active & finite & (rho_new > 0)
            # beta_k = rho_k / rho_{k-1};  p_k = z_{k-1} + beta_k p_{k-1}
            beta = xp.where(active, rho_new / xp.where(active, rho, 1), 0)
            p = xp.where(active, z + beta * p, p)
            rho = xp.where(active, rho_new, rho)
        q = _apply(matvec, p, "matvec", n, dtype)
        with _quiet(xp):
            # p_k^T A p_k, must be > 0 for an SPD operator
            pAp = xp.dot(p, q)
            finite = xp.isfinite(pAp)
            reason = xp.where(active & ~finite, 1, reason)
            reason = xp.where(active & finite & (pAp <= 0), 2, reason)
            active = active & finite & (pAp > 0)
            # alpha_k = rho_k / (p_k^T A p_k), masked to 0 after a breakdown
            alpha = xp.where(active, rho / xp.where(active, pAp, 1), 0)
            # x_k = x_{k-1} + alpha_k p_k;  r_k = r_{k-1} - alpha_k A p_k
            x = xp.where(active, x + alpha * p, x)
            r = xp.where(active, r - alpha * q, r)
            n_done = n_done + active
        if callback is not None:
            callback(x)
        if k % check_every != 0 and k != maxiter:
            continue

        # Check point: the only host synchronization of the loop.
        r_norm, x_finite, n_iter, code = _to_host(
            xp, xp.linalg.norm(r), xp.all(xp.isfinite(x)), n_done, reason
        )
        n_iter, code = int(n_iter), int(code)
        if not (x_finite and math.isfinite(r_norm)):
            # Overflow in a vector update: return the previous check point.
            x_prev, n_prev, r_norm_prev = saved
            return CGResult(x_prev, False, n_prev, r_norm_prev, _NONFINITE)
        if r_norm <= tol:
            return CGResult(x, True, n_iter, r_norm, _CONVERGED)
        if code:
            return CGResult(x, False, n_iter, r_norm, _REASONS[code])
        saved = (x, n_iter, r_norm)
    x, n_iter, r_norm = saved
    return CGResult(x, False, n_iter, r_norm, _MAXITER)


def _check_tol(name, value):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0; got {value!r}.")
    return float(value)


def _check_int(name, value, low, what):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (ok and value >= low):
        raise ValueError(f"`{name}` must be {what}; got {value!r}.")
    return int(value)


def _apply(fn, v, name, n, dtype):
    """``fn(v)`` checked for shape (n,) and cast to ``dtype``."""
    out = fn(v)
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != (n,):
        raise ValueError(f"`{name}` must return an array of shape ({n},); got shape {shape}.")
    return out.astype(dtype, copy=False)


def _to_host(xp, *values):
    """Python floats of 0-d ``values`` in one device-to-host copy."""
    packed = xp.stack([xp.asarray(v, dtype=xp.float64) for v in values])
    return packed.tolist()


def _quiet(xp):
    """Silence NumPy's floating-point warnings for the masked arithmetic.

    Values that the masks discard may overflow or be NaN; the masks, not the
    warnings, handle them. Used around our own arithmetic only, never around
    the user's callables. CuPy does not warn, so it gets a null context.
    """
    errstate = getattr(xp, "errstate", None)
    if errstate is not None:
        return errstate(all="ignore")
    return contextlib.nullcontext()
