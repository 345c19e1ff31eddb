"""Dispatch of the fused per-row kernels: Numba on the CPU, Numba CUDA / CuPy on the GPU.

Each function takes the namespace ``xp`` and arrays of that namespace,
allocates its outputs in the input dtype and returns them. The CPU kernels
are imported eagerly (Numba is a dependency); the CUDA module is imported
only when a CuPy array arrives.
"""

from __future__ import annotations

import numba
import numpy

from .._backend import to_numpy
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


def _cuda():
    from . import cuda

    return cuda


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
        _cuda().margin_rows(Z, y, *outs, Q, mode)
    return outs, (Q if competitors else None)


def row_dot(xp, A, B, shift=None):
    """``(N,)`` row-wise inner products ``sum_k A_ik (B_ik + shift_k)`` (``shift`` defaults to 0)."""
    if shift is None:
        shift = xp.zeros(A.shape[1], dtype=A.dtype)
    if _on_cpu(xp):
        out = xp.empty(A.shape[0], dtype=numpy.result_type(A.dtype, B.dtype))
        _run_cpu(cpu.row_dot, A.size, A, B, shift, out)
        return out
    return (A * (B + shift)).sum(axis=1)


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
    if _on_cpu(xp):
        out = xp.empty_like(V)
        _run_cpu(cpu.softmax_cov_rows, P.size, P, V, out)
        return out
    rows = xp.arange(P.shape[0])
    top = xp.argmax(P, axis=1)
    v_top = V[rows, top]
    d = (P * (v_top[:, None] - V)).sum(axis=1)
    out = P * (V - (v_top - d)[:, None])
    out[rows, top] = P[rows, top] * d
    return out


def subspace_sums(xp, U, r, y, A, B):
    """Slope and GGN of the summed cross-entropy along the logit directions ``A`` and ``B``.

    ``U`` is ``e_y - q`` and ``r`` the residual ``-(1 - p)`` at the point;
    ``A``, ``B`` are ``(N, C)``. Returns a NumPy float64 ``(5,)``:
    ``[sum_i g_i . A_i, sum_i g_i . B_i, sum_i A_i^T H_i A_i, sum_i A_i^T H_i B_i, sum_i B_i^T H_i B_i]``
    with ``g_i = softmax(Z_i) - e_{y_i}`` and ``H_i = diag(softmax) - softmax softmax^T``
    (see ``kernels.cpu.subspace_rows``).
    """
    if _on_cpu(xp):
        out = numpy.empty((U.shape[0], 5), dtype=numpy.float64)
        _run_cpu(cpu.subspace_rows, U.size, U, r, y, A, B, out)
        return out.sum(axis=0)
    return _subspace_sums_array(xp, U, r, y, A, B)


def _subspace_sums_array(xp, U, r, y, A, B):
    """:func:`subspace_sums` in array operations (the GPU path), the same formulas as the CPU kernel."""
    rows = xp.arange(U.shape[0])
    w = -r.astype(xp.float64)
    Q = -U.astype(xp.float64)
    a = A - A[rows, y][:, None]
    b = B - B[rows, y][:, None]
    sa, sb = (Q * a).sum(axis=1), (Q * b).sum(axis=1)
    sums = [w * sa, w * sb, w * ((Q * a * a).sum(axis=1) - w * sa * sa)]
    sums += [w * ((Q * a * b).sum(axis=1) - w * sa * sb), w * ((Q * b * b).sum(axis=1) - w * sb * sb)]
    # one transfer to the host, not one per sum
    return to_numpy(xp.stack(sums).sum(axis=1)).astype(numpy.float64)


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
        _cuda().activation_rows(H, shift, code, a, dphi)
    return a, dphi
