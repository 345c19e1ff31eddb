"""Dispatch of the fused per-row kernels: Numba on the CPU, Numba CUDA / CuPy on the GPU.

Each function takes the namespace ``xp`` and arrays of that namespace,
allocates its outputs in the input dtype and returns them. The CPU kernels
are imported eagerly (Numba is a dependency). On the GPU a kernel is
``_gpu().<name>``, the GPU backend's twin of ``cpu.<name>`` with the same
positional arguments (:mod:`.cuda`'s Numba CUDA launchers for CuPy, imported
only when a CuPy array arrives; the stand-in's for :mod:`fgn_arrays.testing`).
"""

from __future__ import annotations

import functools

import numba
import numpy

from .._backend import gpu_backend
from . import cpu


# Below these many entries a CPU kernel runs on one thread. Numba's OpenMP
# workers spin after a parallel region, and so do the BLAS threads after a GEMM:
# alternating the two on a few cores costs milliseconds a call, far more than a
# small per-row pass takes on one thread (measured: a row-space CG iteration at
# N=512, D=256, C=10 went from 34x to ~2x the GEMM floor on 2 cores). Passes
# with an exp/erf per entry gain from threads sooner than multiply-add passes.
PARALLEL_MIN_ENTRIES = 1 << 22
PARALLEL_MIN_ENTRIES_TRANSCENDENTAL = 1 << 18


def _run_cpu(kernel, n_entries, *args, transcendental=False):
    """Call a ``kernels.cpu`` kernel, on one thread when ``n_entries`` is small."""
    threshold = PARALLEL_MIN_ENTRIES_TRANSCENDENTAL if transcendental else PARALLEL_MIN_ENTRIES
    if n_entries >= threshold:
        kernel(*args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def _on_cpu(xp) -> bool:
    return xp is numpy


def _gpu():
    """The GPU backend's kernels (``kernels.cuda`` for CuPy)."""
    return gpu_backend().kernels


_MODES = {None: cpu.NO_COMPETITORS, "probs": cpu.COMPETITOR_PROBS, "direction": cpu.MARGIN_DIRECTION}


def margin_rows(xp, Z, y, *, competitors=None):
    """Margin statistics of each row, and optionally its competitor softmax.

    Returns ``(margin, loss, prob_true, lse_rest)``, each ``(N,)`` in
    ``Z.dtype``, and ``Q``: ``None``, the competitor softmax ``q`` (zero at
    the label) for ``competitors="probs"``, or ``u = e_y - q`` for
    ``competitors="direction"``, shape ``(N, C)``.
    """
    mode = _MODES[competitors]
    outs = tuple(xp.empty(Z.shape[0], dtype=Z.dtype) for _ in range(4))
    # Without competitors the kernels get a 1 x 1 placeholder they never touch
    # (a size-0 device array may carry a null pointer).
    Q = xp.empty_like(Z) if competitors else xp.empty((1, 1), dtype=Z.dtype)
    if _on_cpu(xp):
        _run_cpu(cpu.margin_rows, Z.size, Z, y, *outs, Q, mode, transcendental=True)
    else:
        _gpu().margin_rows(Z, y, *outs, Q, mode)
    return outs, (Q if competitors else None)


def row_dot(xp, A, B, shift=None):
    """``(N,)`` row-wise inner products ``sum_k A_ik (B_ik + shift_k)`` (``shift`` defaults to 0)."""
    if shift is None:
        shift = xp.zeros(A.shape[1], dtype=A.dtype) if _on_cpu(xp) else _device_zeros(xp, A)
    out = xp.empty(A.shape[0], dtype=numpy.result_type(A.dtype, B.dtype))
    if _on_cpu(xp):
        _run_cpu(cpu.row_dot, A.size, A, B, shift, out)
    else:
        _gpu().row_dot(A, B, shift, out)
    return out


def _device_zeros(xp, A):
    """``A.shape[1]`` zeros in ``A.dtype`` on ``A``'s device, allocated once per (device, dtype, length)."""
    device = getattr(getattr(A, "device", None), "id", None)  # CuPy's device id; None for the stand-in
    return _cached_zeros(xp, device, numpy.dtype(A.dtype), A.shape[1])


@functools.lru_cache(maxsize=16)
def _cached_zeros(xp, device, dtype, n):
    # Read-only by contract: only row_dot's kernels see it, as their `shift`.
    return xp.zeros(n, dtype=dtype)


def scale_rows(xp, A, a, out=None):
    """``a[:, None] * A``, written into ``out`` when given."""
    if out is None:
        out = xp.empty_like(A)
    if _on_cpu(xp):
        _run_cpu(cpu.scale_rows, A.size, A, a, out)
    else:
        xp.multiply(A, a[:, None], out=out)
    return out


def softmax_cov_rows(xp, P, V):
    """Apply each row's softmax covariance: ``out_i = p_i ⊙ v_i - p_i (p_i . v_i)``.

    Accurate when ``p_i`` is nearly one-hot (see ``kernels.cpu.softmax_cov_rows``).
    """
    out = xp.empty_like(V)
    if _on_cpu(xp):
        _run_cpu(cpu.softmax_cov_rows, P.size, P, V, out)
    else:
        _gpu().softmax_cov_rows(P, V, out)
    return out


def subspace_sums(xp, U, r, y, A, B, weights=None):
    """Slope and GGN of the summed cross-entropy along the logit directions ``A`` and ``B``.

    ``U`` is ``e_y - q`` and ``r`` the residual ``-(1 - p)`` at the point;
    ``A``, ``B`` are ``(N, C)``. Returns a float64 ``(5,)`` array of ``xp``
    (left on the device: the caller moves it to the host with its other scalars):
    ``[sum_i g_i . A_i, sum_i g_i . B_i, sum_i A_i^T H_i A_i, sum_i A_i^T H_i B_i, sum_i B_i^T H_i B_i]``
    with ``g_i = softmax(Z_i) - e_{y_i}`` and ``H_i = diag(softmax) - softmax softmax^T``
    (see ``kernels.cpu.subspace_rows``). ``weights`` ``(N,)``, when given,
    weighs the rows of each sum.
    """
    out = xp.empty((U.shape[0], 5), dtype=xp.float64)
    if _on_cpu(xp):
        _run_cpu(cpu.subspace_rows, U.size, U, r, y, A, B, out)
    else:
        _gpu().subspace_rows(U, r, y, A, B, out)
    if weights is None:
        return out.sum(axis=0)
    return xp.asarray(weights, dtype=xp.float64) @ out


ACTIVATIONS = {"tanh": cpu.TANH, "relu": cpu.RELU, "gelu": cpu.GELU}


def activation_rows(xp, H, shift, code, out=None):
    """``phi(H + shift)`` and ``phi'(H + shift)``, shape ``(N, n_hidden)``, in one fused pass.

    ``shift`` is ``(n_hidden,)`` (the bias), ``code`` a value of
    :data:`ACTIVATIONS`. Returns ``(a, dphi)`` in ``H.dtype``; ``a`` is written
    into ``out`` when given (``out=H`` overwrites the pre-activations).
    ``relu'(0) = 0``.
    """
    a = xp.empty_like(H) if out is None else out
    dphi = xp.empty_like(H)
    if _on_cpu(xp):
        _run_cpu(cpu.activation_rows, H.size, H, shift, code, a, dphi, transcendental=True)
    else:
        _gpu().activation_rows(H, shift, code, a, dphi)
    return a, dphi


# ---- Conjugate gradient updates (fgn_arrays.cg) -------------------------------

CG_PAP, CG_RR, CG_RZ, CG_XBAD = cpu.CG_PAP, cpu.CG_RR, cpu.CG_RZ, cpu.CG_XBAD
CG_PARTS, CG_STATE_SIZE = cpu.CG_PARTS, cpu.CG_STATE_SIZE
CG_RHO, CG_ACTIVE, CG_REASON, CG_N_DONE, CG_TOL2, CG_RNORM2 = (
    cpu.CG_RHO, cpu.CG_ACTIVE, cpu.CG_REASON, cpu.CG_N_DONE, cpu.CG_TOL2, cpu.CG_RNORM2)
CG_NONFINITE, CG_CURVATURE, CG_PRECOND, CG_CONVERGED, CG_OVERFLOW = (
    cpu.CG_NONFINITE, cpu.CG_CURVATURE, cpu.CG_PRECOND, cpu.CG_CONVERGED, cpu.CG_OVERFLOW)


def _launch(xp, name, *args):
    """``cpu.<name>(*args)`` on the CPU, the GPU backend's ``<name>`` on the GPU."""
    (getattr(cpu, name) if _on_cpu(xp) else getattr(_gpu(), name))(*args)


def cg_dot(xp, a, b, parts, row):
    """``parts[row] <- a . b`` as partial sums in float64 (see ``kernels.cpu``)."""
    _launch(xp, "cg_dot", a, b, parts, row)


def cg_update_xr(xp, x, r, p, q, dinv, parts, state):
    """``x += alpha p``, ``r -= alpha q`` in place; partial sums of ``r . r``, ``r . z`` and ``x - x``.

    ``dinv`` is the diagonal of ``M^-1``, or None when ``z`` comes from a
    callable preconditioner (then :func:`cg_dot` forms ``r . z``).
    """
    diagonal = int(dinv is not None)
    _launch(xp, "cg_update_xr", x, r, p, q, dinv if diagonal else state, diagonal, parts, state)


def cg_update_p(xp, r, p, z, dinv, parts, state, state_out):
    """``p = z + beta p`` in place (``z = dinv ⊙ r`` when ``dinv`` is given); the next CG state into ``state_out``."""
    diagonal = int(dinv is not None)
    _launch(xp, "cg_update_p", r, p, z, dinv if diagonal else state, diagonal, parts, state, state_out)
