"""GPU kernels in Numba CUDA, imported lazily and launched on CuPy's stream.

Conventions
-----------
Each launcher (``margin_rows``, ``row_dot``, ...) is the twin of the
``kernels.cpu`` kernel of the same name: the same positional arguments with
the same meaning, outputs preallocated by the caller, and only keyword-only
launch parameters added (``threads_per_block``, a power of two). Kernels take
device arrays (CuPy arrays through ``__cuda_array_interface__``, or NumPy
arrays under ``NUMBA_ENABLE_CUDASIM=1``, where each thread is a Python
thread). They read the inputs' dtype and accumulate in float64 registers, as
on the CPU; the per-row formulas are ``kernels.cpu``'s, compiled here as
device functions, and only the combination of the lanes' shares is written
here.

Launch configuration
--------------------
Every kernel loops grid-stride, so any grid computes the same result; the grid
is sized for the device. A row kernel (a reduction along each row) gives each
row a group of ``lanes`` threads (the row length rounded up to a power of two,
at most ``threads_per_block``) that stride over its columns and combine their
shares in shared memory, and puts ``threads_per_block // lanes`` rows in a
block: short rows (C = 10: 16 rows of 16 lanes) fill a block instead of
leaving 246 of 256 threads idle, and a long row (C = 1e5) has a block to
itself. An entry-wise kernel takes one thread per entry. A block holds fewer
rows (threads) when the work would otherwise fill fewer than
:data:`MIN_BLOCKS` blocks, so that it spreads over the multiprocessors. The
grid has at least :data:`MIN_BLOCKS` = 128 blocks, the blocks beyond the work
exiting at once: numba-cuda warns below 128 (``NumbaPerformanceWarning``,
"Grid size ... under-utilization"), and 128 about covers the 132
multiprocessors of an H100 / H200. Under the CUDA simulator, which runs each
thread as a Python thread and never warns, :data:`MIN_BLOCKS` is 1 (128
blocks of 8 threads take about 0.6 s a launch there).

Caching
-------
The kernels are module-level ``cuda.jit(cache=True)`` functions: their shared
memory is dynamic (sized at launch from the block shape), so no block size is
a compile-time constant and no kernel is a closure. numba-cuda keys a cache
entry on this file's modification time and the kernel's bytecode, not on
``kernels.cpu``: after editing a formula there that a kernel here calls, touch
this file (or delete the ``__pycache__/cuda.*.nbi`` and ``.nbc`` files).

Ahead-of-time compilation
-------------------------
:func:`ptx_specialisations` lists every kernel with every argument-type tuple
the library launches it with; ``scripts/compile_ptx.py`` compiles each to PTX
without a GPU (CI). See :func:`register_ptx` to add a kernel.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy

# numba-cuda 0.30 reads `numpy.row_stack` at import time; NumPy 2.5 removed it.
# The alias is added only when the attribute is missing, before the import.
if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack


@contextlib.contextmanager
def _numba_cuda_import_filter():
    """Ignore, in the ``with`` block, the one warning numba-cuda 0.30 raises at import under NumPy 2.5.

    Its ``npdatetime_helpers`` builds ``numpy.timedelta64("nat")`` (the generic
    unit) at import time, which NumPy 2.5 deprecates. Only that message, as a
    DeprecationWarning, from that module, is ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"The 'generic' unit for NumPy timedelta is deprecated",
            category=DeprecationWarning,
            module=r"numba\.cuda\.np\.npdatetime_helpers\Z",
        )
        yield


with _numba_cuda_import_filter():
    from numba import cuda, float64, types

from numba.core import config  # noqa: E402

from . import cpu as _cpu  # noqa: E402
from .cpu import MARGIN_DIRECTION, NO_COMPETITORS  # noqa: E402

DEFAULT_THREADS_PER_BLOCK = 256
# Fewest blocks in a grid (see "Launch configuration"); most blocks, the
# grid-stride loops covering any rest.
MIN_BLOCKS = 1 if config.ENABLE_CUDASIM else 128
MAX_BLOCKS = 65535


def _check_block(threads_per_block: int) -> int:
    tpb = int(threads_per_block)
    if tpb < 1 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"`threads_per_block` must be a power of two in [1, 1024]; got {threads_per_block}.")
    return tpb


def _pow2_at_least(n: int) -> int:
    """The smallest power of two ``>= max(n, 1)``."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def _blocks(n_items: int, per_block: int) -> int:
    """Blocks for ``n_items`` at ``per_block`` a block, clipped to ``[MIN_BLOCKS, MAX_BLOCKS]``."""
    return min(max(MIN_BLOCKS, -(-n_items // per_block)), MAX_BLOCKS)


def _row_launch(n_rows: int, n_cols: int, threads_per_block: int):
    """``(blocks, (lanes, rows_per_block))`` of a row kernel (see "Launch configuration")."""
    tpb = _check_block(threads_per_block)
    lanes = min(tpb, _pow2_at_least(n_cols))
    rows_per_block = min(tpb // lanes, _pow2_at_least(-(-n_rows // MIN_BLOCKS)))
    return _blocks(n_rows, rows_per_block), (lanes, rows_per_block)


def _flat_launch(n_items: int, threads_per_block: int):
    """``(blocks, threads)`` of an entry-wise kernel (see "Launch configuration")."""
    threads = min(_check_block(threads_per_block), _pow2_at_least(-(-n_items // MIN_BLOCKS)))
    return _blocks(n_items, threads), threads


def _stream(array):
    """Numba stream wrapping CuPy's current stream (the default stream elsewhere)."""
    if type(array).__module__.split(".", 1)[0] == "cupy":
        import cupy

        ptr = cupy.cuda.get_current_stream().ptr
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return 0


def _launch(kernel, blocks, threads, first, args, shared_bytes=0):
    """``kernel[blocks, threads, stream, shared_bytes](*args)`` on CuPy's current stream (that of ``first``).

    numba-cuda synchronises, at every launch, the stream that a CUDA array
    interface argument names (``NUMBA_CUDA_ARRAY_INTERFACE_SYNC``, on by
    default): with CuPy arrays, a host synchronisation per array argument.
    CuPy names its current stream there, which is the stream this launch is
    queued on, so the work is already in order; the synchronisation is
    switched off for the launch alone (the setting is restored after it).
    """
    stream = _stream(first)
    previous = config.CUDA_ARRAY_INTERFACE_SYNC
    config.CUDA_ARRAY_INTERFACE_SYNC = 0
    try:
        kernel[blocks, threads, stream, shared_bytes](*args)
    finally:
        config.CUDA_ARRAY_INTERFACE_SYNC = previous


# ---- Kernel registry (ahead-of-time PTX compilation) ---------------------------

_PTX_ENTRIES: list = []


def register_ptx(name, kernel, signatures):
    """Record the argument types the library launches a kernel with, for :func:`ptx_specialisations`.

    A kernel defined with :func:`_kernel` is registered by its decorator. Any
    other kernel (a closure built for a compile-time block size, say) is
    registered by a call below its definition, once per compile-time
    constant the library uses::

        dot, update_xr, update_p = _cg_kernels(CG_THREADS)
        register_ptx("cg_dot", dot, float_signatures(lambda f: (f[::1], f[::1], float64[:, ::1], types.int64)))

    ``scripts/compile_ptx.py`` fails on a kernel defined at module level that
    has no entry (a closure it cannot see: register it all the same).

    Parameters
    ----------
    name : str
        The kernel's name in ``scripts/compile_ptx.py``'s output.
    kernel : function or ``cuda.jit`` dispatcher
        The kernel, or its Python function.
    signatures : iterable of tuple
        One tuple of Numba types per specialisation: ``float32[:, ::1]`` for a
        C-contiguous float32 matrix (what CuPy's contiguous arrays are typed
        as), ``int64[::1]`` for labels, ``types.int64`` for a Python int.
    """
    function = getattr(kernel, "py_func", kernel)
    for argtypes in signatures:
        _PTX_ENTRIES.append((name, function, tuple(argtypes)))


def ptx_specialisations():
    """Every registered kernel with every argument-type tuple the library launches it with.

    Returns
    -------
    list of tuple
        ``(name, function, argtypes)``: the kernel's name, its Python function
        and a tuple of Numba types, ready for
        ``numba.cuda.compile_ptx(function, argtypes, cc=...)``.
    """
    return list(_PTX_ENTRIES)


def float_signatures(make):
    """``[make(float32), make(float64)]``: a kernel's argument types for each float dtype."""
    return [make(types.float32), make(types.float64)]


def _kernel(signatures):
    """``cuda.jit(cache=True)``, registering ``signatures`` (see :func:`register_ptx`)."""

    def decorate(function):
        register_ptx(function.__name__, function, signatures)
        return cuda.jit(cache=True)(function)

    return decorate


# ---- Row reductions in shared memory -------------------------------------------
# A row kernel's block is (lanes, rows_per_block) threads; the thread
# (lane, slot) works on row `first + slot` of each grid-stride step, and its
# values in shared memory sit at `at + lane`, at = slot * lanes, plus a
# multiple of `stride` = lanes * rows_per_block per value. Every thread of the
# block calls these (they synchronise it), rows past the end included.


@cuda.jit(device=True)
def _sum_lanes(buf, at, stride, count, lane, lanes):
    """Sum each of ``count`` values over the row's lanes into ``buf[at + j * stride]`` (tree order)."""
    cuda.syncthreads()
    width = lanes // 2
    while width > 0:
        if lane < width:
            for j in range(count):
                buf[at + j * stride + lane] += buf[at + j * stride + lane + width]
        cuda.syncthreads()
        width //= 2


@cuda.jit(device=True)
def _logsumexp_lanes(buf, at, stride, lane, lanes):
    """Merge the lanes' ``(top, s)`` pairs (tops at ``at``, sums ``stride`` further) into the first lane's."""
    cuda.syncthreads()
    width = lanes // 2
    while width > 0:
        if lane < width:
            # merge(a, b) = (t, s_a exp(top_a - t) + s_b exp(top_b - t)),  t = max(top_a, top_b)
            top_a = buf[at + lane]
            top_b = buf[at + lane + width]
            t = max(top_a, top_b)
            if t > -math.inf:
                s_a = buf[stride + at + lane]
                s_b = buf[stride + at + lane + width]
                buf[stride + at + lane] = s_a * math.exp(top_a - t) + s_b * math.exp(top_b - t)
                buf[at + lane] = t
        cuda.syncthreads()
        width //= 2


@cuda.jit(device=True)
def _argmax_lanes(buf, at, stride, lane, lanes):
    """Merge the lanes' ``(value, k)`` (values at ``at``, ``k`` as float64 ``stride`` further) into ``buf[at]``.

    The larger value wins, the smaller ``k`` on ties: the row's first largest entry, as on the CPU.
    """
    cuda.syncthreads()
    width = lanes // 2
    while width > 0:
        if lane < width:
            v_a = buf[at + lane]
            v_b = buf[at + lane + width]
            k_b = buf[stride + at + lane + width]
            if v_b > v_a or (v_b == v_a and k_b < buf[stride + at + lane]):
                buf[at + lane] = v_b
                buf[stride + at + lane] = k_b
        cuda.syncthreads()
        width //= 2


def _launch_rows(kernel, n_values, rows, args, threads_per_block):
    """Launch a row kernel over ``rows`` (N, C) with ``n_values`` float64 a thread in shared memory."""
    n_rows, n_cols = rows.shape
    blocks, (lanes, rows_per_block) = _row_launch(n_rows, n_cols, threads_per_block)
    if n_rows == 0:
        return
    shared_bytes = n_values * lanes * rows_per_block * 8
    _launch(kernel, blocks, (lanes, rows_per_block), rows, args, shared_bytes)


# ---- True-vs-rest margin -------------------------------------------------------

# The per-row formula (m, loss, p) is kernels.cpu's, compiled as a device function.
_margin_values = cuda.jit(device=True)(_cpu.margin_values.py_func)


@_kernel(
    float_signatures(
        lambda f: (f[:, ::1], types.int64[::1], f[::1], f[::1], f[::1], f[::1], f[:, ::1], types.int64)
    )
)
def _margin_kernel(Z, y, margin, loss, prob_true, lse_rest, Q, mode):
    n_rows, n_classes = Z.shape
    lane, lanes = cuda.threadIdx.x, cuda.blockDim.x
    slot, rows_per_block = cuda.threadIdx.y, cuda.blockDim.y
    stride = lanes * rows_per_block
    at = slot * lanes
    buf = cuda.shared.array(0, float64)  # tops, then sums
    for first in range(cuda.blockIdx.x * rows_per_block, n_rows, cuda.gridDim.x * rows_per_block):
        i = first + slot
        # Each lane's online logsumexp over its competitors k != y_i:
        # s = sum exp(Z_ik - top), rescaled when the running top grows.
        top = -math.inf
        s = 0.0
        if i < n_rows:
            label = y[i]
            for k in range(lane, n_classes, lanes):
                if k != label:
                    z = float64(Z[i, k])
                    if z > top:
                        s = s * math.exp(top - z) + 1.0
                        top = z
                    else:
                        s += math.exp(z - top)
        buf[at + lane] = top
        buf[stride + at + lane] = s
        _logsumexp_lanes(buf, at, stride, lane, lanes)
        if i < n_rows:
            label = y[i]
            lse = buf[at] + math.log(buf[stride + at])
            if lane == 0:
                lse_rest[i] = lse
                margin[i], loss[i], prob_true[i] = _margin_values(float64(Z[i, label]), lse)
            if mode != NO_COMPETITORS:
                # q_ik = exp(Z_ik - lse_rest_i), q_{i,y} = 0;  u_i = e_{y_i} - q_i
                for k in range(lane, n_classes, lanes):
                    if k == label:
                        Q[i, k] = 1.0 if mode == MARGIN_DIRECTION else 0.0
                    else:
                        q = math.exp(float64(Z[i, k]) - lse)
                        Q[i, k] = -q if mode == MARGIN_DIRECTION else q
        cuda.syncthreads()


def margin_rows(Z, y, margin, loss, prob_true, lse_rest, Q, mode, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """True-vs-rest margin statistics, and optionally q or u (twin of ``kernels.cpu.margin_rows``).

    ``mode`` is one of the ``kernels.cpu`` constants: what to write into ``Q``.
    """
    _launch_rows(_margin_kernel, 2, Z, (Z, y, margin, loss, prob_true, lse_rest, Q, mode), threads_per_block)


# ---- Row-wise inner products ---------------------------------------------------

_row_dot_partial = cuda.jit(device=True)(_cpu.row_dot_partial.py_func)


@_kernel(float_signatures(lambda f: (f[:, ::1], f[:, ::1], f[::1], f[::1])))
def _row_dot_kernel(A, B, shift, out):
    n_rows, n_cols = A.shape
    lane, lanes = cuda.threadIdx.x, cuda.blockDim.x
    slot, rows_per_block = cuda.threadIdx.y, cuda.blockDim.y
    at = slot * lanes
    buf = cuda.shared.array(0, float64)
    for first in range(cuda.blockIdx.x * rows_per_block, n_rows, cuda.gridDim.x * rows_per_block):
        i = first + slot
        # out_i = sum over the lanes of sum_{k = lane, lane + lanes, ...} A_ik (B_ik + shift_k)
        buf[at + lane] = _row_dot_partial(A, B, shift, i, lane, n_cols, lanes) if i < n_rows else 0.0
        _sum_lanes(buf, at, 0, 1, lane, lanes)
        if i < n_rows and lane == 0:
            out[i] = buf[at]
        cuda.syncthreads()


def row_dot(A, B, shift, out, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """``out_i = sum_k A_ik (B_ik + shift_k)`` (twin of ``kernels.cpu.row_dot``)."""
    _launch_rows(_row_dot_kernel, 1, A, (A, B, shift, out), threads_per_block)


# ---- Softmax covariance products -----------------------------------------------

_argmax_partial = cuda.jit(device=True)(_cpu.argmax_partial.py_func)
_softmax_cov_gap_partial = cuda.jit(device=True)(_cpu.softmax_cov_gap_partial.py_func)
_softmax_cov_write = cuda.jit(device=True)(_cpu.softmax_cov_write.py_func)


@_kernel(float_signatures(lambda f: (f[:, ::1], f[:, ::1], f[:, ::1])))
def _softmax_cov_kernel(P, V, out):
    n_rows, n_cols = P.shape
    lane, lanes = cuda.threadIdx.x, cuda.blockDim.x
    slot, rows_per_block = cuda.threadIdx.y, cuda.blockDim.y
    stride = lanes * rows_per_block
    at = slot * lanes
    buf = cuda.shared.array(0, float64)  # values, then their columns
    for first in range(cuda.blockIdx.x * rows_per_block, n_rows, cuda.gridDim.x * rows_per_block):
        i = first + slot
        live = i < n_rows
        # k* = the row's first most probable class
        top = _argmax_partial(P, i, lane, n_cols, lanes) if live else n_cols
        buf[at + lane] = float64(P[i, top]) if top < n_cols else -math.inf
        buf[stride + at + lane] = top
        _argmax_lanes(buf, at, stride, lane, lanes)
        top = int(buf[stride + at])
        cuda.syncthreads()
        # d = sum_k p_k (v_k* - v_k)
        v_top = float64(V[i, top]) if live else 0.0
        buf[at + lane] = _softmax_cov_gap_partial(P, V, i, v_top, lane, n_cols, lanes) if live else 0.0
        _sum_lanes(buf, at, 0, 1, lane, lanes)
        d = buf[at]
        if live:
            # out_k = p_k (v_k - p . v) with p . v = v_k* - d;  out_k* = p_k* d (by the lane that owns k*)
            _softmax_cov_write(P, V, out, i, v_top - d, lane, n_cols, lanes)
            if lane == top % lanes:
                out[i, top] = float64(P[i, top]) * d
        cuda.syncthreads()


def softmax_cov_rows(P, V, out, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """``out_i = (diag(p_i) - p_i p_i^T) v_i`` without cancellation (twin of ``kernels.cpu.softmax_cov_rows``)."""
    _launch_rows(_softmax_cov_kernel, 2, P, (P, V, out), threads_per_block)


# ---- Subspace model (the optimizer's correction step) --------------------------

_subspace_partial = cuda.jit(device=True)(_cpu.subspace_partial.py_func)
_subspace_finish = cuda.jit(device=True)(_cpu.subspace_finish.py_func)
_N_SUMS = _cpu.SUBSPACE_SUMS


@_kernel(
    float_signatures(
        lambda f: (f[:, ::1], f[::1], types.int64[::1], f[:, ::1], f[:, ::1], types.float64[:, ::1])
    )
)
def _subspace_kernel(U, r, y, A, B, out):
    n_rows, n_cols = U.shape
    lane, lanes = cuda.threadIdx.x, cuda.blockDim.x
    slot, rows_per_block = cuda.threadIdx.y, cuda.blockDim.y
    stride = lanes * rows_per_block
    at = slot * lanes
    buf = cuda.shared.array(0, float64)  # s_a, s_b, s_aa, s_ab, s_bb, `stride` apart
    for first in range(cuda.blockIdx.x * rows_per_block, n_rows, cuda.gridDim.x * rows_per_block):
        i = first + slot
        if i < n_rows:
            sums = _subspace_partial(U, A, B, i, y[i], lane, n_cols, lanes)
        else:
            sums = (0.0, 0.0, 0.0, 0.0, 0.0)
        for j in range(_N_SUMS):
            buf[j * stride + at + lane] = sums[j]
        _sum_lanes(buf, at, stride, _N_SUMS, lane, lanes)
        if i < n_rows and lane == 0:
            totals = (buf[at], buf[stride + at], buf[2 * stride + at], buf[3 * stride + at], buf[4 * stride + at])
            row = _subspace_finish(-float64(r[i]), totals)
            for j in range(_N_SUMS):
                out[i, j] = row[j]
        cuda.syncthreads()


def subspace_rows(U, r, y, A, B, out, *, threads_per_block=DEFAULT_THREADS_PER_BLOCK):
    """Each row's slope and GGN sums along two logit directions (twin of ``kernels.cpu.subspace_rows``).

    ``out`` is ``(N, 5)`` float64.
    """
    _launch_rows(_subspace_kernel, _N_SUMS, U, (U, r, y, A, B, out), threads_per_block)


# ---- Hidden-layer activations (TwoLayerHead) ---------------------------------

# The per-entry formula is written once, in kernels.cpu, and compiled here as a device function.
_activation_value = cuda.jit(device=True)(_cpu.activation_value.py_func)


@_kernel(float_signatures(lambda f: (f[:, ::1], f[::1], types.int64, f[:, ::1], f[:, ::1])))
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
    """``phi(H + shift)`` and ``phi'(H + shift)`` (twin of ``kernels.cpu.activation_rows``): a thread per entry.

    ``code`` is one of ``kernels.cpu.TANH``, ``RELU``, ``GELU``; ``a`` may be ``H``.
    """
    n_entries = H.shape[0] * H.shape[1]
    if n_entries == 0:
        return
    blocks, threads = _flat_launch(n_entries, threads_per_block)
    _launch(_activation_kernel, blocks, threads, H, (H, shift, code, a, dphi))


# ---- Conjugate gradient updates ----------------------------------------------
# The three fused passes of a CG iteration (see kernels.cpu, "Conjugate
# gradient updates"), grid-stride over the (n,) vectors. Each block writes its
# partial sums into its column of `parts`; a kernel that needs a dot product
# sums a whole row of `parts` in every block, in the same order, so that all
# blocks compute the same scalars. The scalar logic is kernels.cpu's, compiled
# here as device functions. Every launch of one solve uses the same grid of
# CG_BLOCKS blocks: the columns of `parts` beyond it stay at their initial 0.

from .cpu import CG_PAP, CG_PARTS, CG_RR, CG_RZ, CG_XBAD  # noqa: E402

# CG_PARTS blocks of 256 threads on a GPU (the 128 blocks also keep numba-cuda's
# low-occupancy warning away); a small grid under the simulator.
CG_THREADS = 8 if config.ENABLE_CUDASIM else 256
CG_BLOCKS = 2 if config.ENABLE_CUDASIM else CG_PARTS
_cg_alpha = cuda.jit(device=True)(_cpu.cg_alpha.py_func)
_cg_next = cuda.jit(device=True)(_cpu.cg_next.py_func)
_cg_write_state = cuda.jit(device=True)(_cpu.cg_write_state.py_func)


@cuda.jit(device=True)
def _block_sum(value, buf):
    """Tree sum over the block (a power-of-two ``blockDim.x``) of one value per thread; every thread gets it."""
    tid = cuda.threadIdx.x
    buf[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            buf[tid] += buf[tid + width]
        cuda.syncthreads()
        width //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _parts_sum(parts, row, buf):
    """``sum_j parts[row, j]``, in the same order in every block."""
    s = 0.0
    for j in range(cuda.threadIdx.x, parts.shape[1], cuda.blockDim.x):
        s += parts[row, j]
    return _block_sum(s, buf)


def _cg_signatures(make):
    # a callable preconditioner's placeholder for dinv is the float64 state
    return [make(types.float32, types.float32), make(types.float32, types.float64),
            make(types.float64, types.float64)]


@_kernel(float_signatures(lambda f: (f[::1], f[::1], float64[:, ::1], types.int64)))
def _cg_dot_kernel(a, b, parts, row):
    # parts[row, block] = this block's share of a . b
    buf = cuda.shared.array(0, float64)
    s = 0.0
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        s += float64(a[i]) * float64(b[i])
    total = _block_sum(s, buf)
    if cuda.threadIdx.x == 0:
        parts[row, cuda.blockIdx.x] = total


@_kernel(_cg_signatures(lambda f, d: (f[::1], f[::1], f[::1], f[::1], d[::1], types.int64, float64[:, ::1],
                                      float64[::1])))
def _cg_update_xr_kernel(x, r, p, q, dinv, diagonal, parts, state):
    # alpha = rho / (p . q);  x += alpha p;  r -= alpha q;  shares of r . r, r . z, x - x
    buf = cuda.shared.array(0, float64)
    alpha = _cg_alpha(state, _parts_sum(parts, CG_PAP, buf))
    rr = 0.0
    rz = 0.0
    xbad = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        if alpha != 0.0:
            x[i] = x[i] + alpha * p[i]
            r[i] = r[i] - alpha * q[i]
        ri = float64(r[i])
        rr += ri * ri
        if diagonal:
            rz += ri * ri * float64(dinv[i])
        xbad += float64(x[i]) - float64(x[i])
    rr = _block_sum(rr, buf)
    rz = _block_sum(rz, buf)
    xbad = _block_sum(xbad, buf)
    if cuda.threadIdx.x == 0:
        parts[CG_RR, cuda.blockIdx.x] = rr
        parts[CG_XBAD, cuda.blockIdx.x] = xbad
        if diagonal:
            parts[CG_RZ, cuda.blockIdx.x] = rz


@_kernel(_cg_signatures(lambda f, d: (f[::1], f[::1], f[::1], d[::1], types.int64, float64[:, ::1], float64[::1],
                                      float64[::1])))
def _cg_update_p_kernel(r, p, z, dinv, diagonal, parts, state, state_out):
    # beta = (r . z) / rho;  p = z + beta p while x moves;  block 0 writes the next state
    buf = cuda.shared.array(0, float64)
    pap = _parts_sum(parts, CG_PAP, buf)
    rr = _parts_sum(parts, CG_RR, buf)
    rz = _parts_sum(parts, CG_RZ, buf)
    xbad = _parts_sum(parts, CG_XBAD, buf)
    nxt = _cg_next(state, pap, rr, rz, xbad)
    beta = nxt[0]
    if nxt[2] != 0.0:
        for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
            zi = float64(r[i]) * float64(dinv[i]) if diagonal else float64(z[i])
            p[i] = zi + beta * p[i]
    if cuda.blockIdx.x == 0 and cuda.threadIdx.x == 0:
        _cg_write_state(state_out, state, nxt)


def _cg_launch(kernel, first, args, threads_per_block, blocks):
    tpb = _check_block(threads_per_block)
    if not 1 <= int(blocks) <= CG_PARTS:
        raise ValueError(f"`blocks` must be in [1, {CG_PARTS}]; got {blocks}.")
    _launch(kernel, int(blocks), tpb, first, args, tpb * 8)


def cg_dot(a, b, parts, row, *, threads_per_block=CG_THREADS, blocks=CG_BLOCKS):
    """``parts[row] <- a . b``, one partial sum per block (twin of ``kernels.cpu.cg_dot``)."""
    _cg_launch(_cg_dot_kernel, a, (a, b, parts, row), threads_per_block, blocks)


def cg_update_xr(x, r, p, q, dinv, diagonal, parts, state, *, threads_per_block=CG_THREADS, blocks=CG_BLOCKS):
    """The x and r updates of a CG iteration and the partial sums of ``r . r``, ``r . z``, ``x - x``."""
    _cg_launch(_cg_update_xr_kernel, x, (x, r, p, q, dinv, diagonal, parts, state), threads_per_block, blocks)


def cg_update_p(r, p, z, dinv, diagonal, parts, state, state_out, *, threads_per_block=CG_THREADS,
                blocks=CG_BLOCKS):
    """The p update of a CG iteration; the next state into ``state_out`` (twin of ``kernels.cpu.cg_update_p``)."""
    _cg_launch(_cg_update_p_kernel, r, (r, p, z, dinv, diagonal, parts, state, state_out), threads_per_block, blocks)
