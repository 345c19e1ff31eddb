"""GPU kernels in Numba CUDA, imported lazily and launched on CuPy's stream.

Conventions
-----------
Kernels take device arrays (CuPy arrays through ``__cuda_array_interface__``,
or NumPy arrays under ``NUMBA_ENABLE_CUDASIM=1``, where each thread is a
Python thread). ``threads_per_block`` is a launch parameter (a power of two);
the shared-memory size is a compile-time constant, so one kernel is compiled
per block size and cached. Accumulation is in float64, as on the CPU.
"""

from __future__ import annotations

import functools
import math

import numpy

# numba-cuda 0.30 reads `numpy.row_stack` at import time; NumPy 2.5 removed it.
# The alias is added only when the attribute is missing, before the import.
if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack

from numba import cuda, float64  # noqa: E402  (after the compatibility alias)

from .cpu import MARGIN_DIRECTION, NO_COMPETITORS  # noqa: E402

DEFAULT_THREADS_PER_BLOCK = 256


def _check_block(threads_per_block: int) -> int:
    tpb = int(threads_per_block)
    if tpb < 1 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"`threads_per_block` must be a power of two in [1, 1024]; got {threads_per_block}.")
    return tpb


@functools.lru_cache(maxsize=None)
def _margin_kernel(tpb: int):
    @cuda.jit
    def kernel(Z, y, margin, loss, prob_true, lse_rest, Q, mode):
        # One block per row (grid-stride over rows); threads stride over classes.
        n_samples, n_classes = Z.shape
        tid = cuda.threadIdx.x
        tops = cuda.shared.array(tpb, float64)
        sums = cuda.shared.array(tpb, float64)
        for i in range(cuda.blockIdx.x, n_samples, cuda.gridDim.x):
            label = y[i]
            # Per-thread online logsumexp over the competitors k != y_i.
            top = -math.inf
            s = 0.0
            for k in range(tid, n_classes, tpb):
                if k != label:
                    z = float64(Z[i, k])
                    if z > top:
                        s = s * math.exp(top - z) + 1.0
                        top = z
                    else:
                        s += math.exp(z - top)
            tops[tid] = top
            sums[tid] = s
            cuda.syncthreads()
            # Tree reduction of (top, s) pairs:
            # merge(a, b) = (max, s_a exp(top_a - max) + s_b exp(top_b - max)).
            width = tpb // 2
            while width > 0:
                if tid < width:
                    ta = tops[tid]
                    tb = tops[tid + width]
                    t = max(ta, tb)
                    if t > -math.inf:
                        sums[tid] = sums[tid] * math.exp(ta - t) + sums[tid + width] * math.exp(tb - t)
                        tops[tid] = t
                cuda.syncthreads()
                width //= 2
            lse = tops[0] + math.log(sums[0])
            if tid == 0:
                m = float64(Z[i, label]) - lse
                # loss = softplus(-m); p = exp(-loss)
                sp = max(-m, 0.0) + math.log1p(math.exp(-abs(m)))
                lse_rest[i] = lse
                margin[i] = m
                loss[i] = sp
                prob_true[i] = math.exp(-sp)
            if mode != NO_COMPETITORS:
                # q_ik = exp(Z_ik - lse_rest_i), q_{i,y} = 0;  u_i = e_{y_i} - q_i
                for k in range(tid, n_classes, tpb):
                    if k == label:
                        Q[i, k] = 1.0 if mode == MARGIN_DIRECTION else 0.0
                    else:
                        q = math.exp(float64(Z[i, k]) - lse)
                        Q[i, k] = -q if mode == MARGIN_DIRECTION else q
            cuda.syncthreads()

    return kernel


def _stream(array):
    """Numba stream wrapping CuPy's current stream (the default stream elsewhere)."""
    if type(array).__module__.split(".", 1)[0] == "cupy":
        import cupy

        ptr = cupy.cuda.get_current_stream().ptr
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return 0


def margin_rows(Z, y, margin, loss, prob_true, lse_rest, Q, mode, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """Launch the margin kernel: one block per row, shared-memory reduction.

    ``mode`` is one of the ``kernels.cpu`` constants: what to write into ``Q``.
    """
    tpb = _check_block(threads_per_block)
    n_blocks = max(1, min(Z.shape[0], 65535))
    _margin_kernel(tpb)[n_blocks, tpb, _stream(Z)](Z, y, margin, loss, prob_true, lse_rest, Q, mode)


# ---- Hidden-layer activations (TwoLayerHead) ---------------------------------

from . import cpu as _cpu  # noqa: E402

# The per-entry formula is written once, in kernels.cpu, and compiled here as a device function.
_activation_value = cuda.jit(device=True)(_cpu.activation_value.py_func)


@cuda.jit
def _activation_kernel(H, shift, code, a, dphi):
    # Grid-stride over the N x H entries: a_ij = phi(H_ij + shift_j), dphi_ij = phi'(...).
    n_rows, n_cols = H.shape
    for k in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        i = k // n_cols
        j = k - i * n_cols
        f, d = _activation_value(float64(H[i, j]) + float64(shift[j]), code)
        a[i, j] = f
        dphi[i, j] = d


def activation_rows(H, shift, code, a, dphi, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """Launch the activation kernel: one thread per entry (grid-stride), float64 arithmetic.

    ``code`` is one of ``kernels.cpu.TANH``, ``RELU``, ``GELU``; ``a`` may be ``H``.
    """
    tpb = _check_block(threads_per_block)
    n_entries = H.shape[0] * H.shape[1]
    n_blocks = max(1, min((n_entries + tpb - 1) // tpb, 65535))
    _activation_kernel[n_blocks, tpb, _stream(H)](H, shift, code, a, dphi)
