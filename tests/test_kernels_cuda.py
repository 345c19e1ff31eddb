"""Numba CUDA kernels against the CPU kernels.

Without a GPU these run under ``NUMBA_ENABLE_CUDASIM=1`` (set in conftest),
where each CUDA thread is a Python thread: tiny inputs, <= 8 threads a block.
On a GPU machine they are skipped here; the CuPy tests cover the real launch.
"""

import numpy as np
import pytest
from numba.core import config

from fgn_arrays.kernels import cpu

pytestmark = [
    pytest.mark.cudasim,
    pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="CUDA simulator not enabled (a real GPU is present)"),
]

MODES = [cpu.NO_COMPETITORS, cpu.COMPETITOR_PROBS, cpu.MARGIN_DIRECTION]


def run_both(Z, y, mode, tpb):
    from fgn_arrays.kernels import cuda

    def outputs():
        n = Z.shape[0]
        Q = np.empty_like(Z) if mode else np.empty((0, 0), Z.dtype)
        return [np.empty(n, Z.dtype) for _ in range(4)] + [Q]

    got, ref = outputs(), outputs()
    cuda.margin_rows(Z, y, *got[:4], got[4], mode, threads_per_block=tpb)
    cpu.margin_rows(Z, y, *ref[:4], ref[4], mode)
    return got, ref


@pytest.mark.parametrize("tpb", [1, 2, 8])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, scale", [((3, 2), 1.0), ((4, 11), 30.0), ((2, 5), 1e4)])
def test_margin_kernel_matches_cpu(shape, scale, dtype, mode, tpb):
    rng = np.random.default_rng(tpb + 10 * mode)
    Z = (scale * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    got, ref = run_both(Z, y, mode, tpb)
    # The GPU tree reduction sums in another order than the CPU's chunked sum
    # (float64, or float32 within a chunk): a few ulps of the input dtype. The
    # CPU takes the exp of a float32 argument for float32 Q, the GPU a float64
    # one: entries of Q (at most 1) agree to float32 rounding of |Z - lse| ~ 50.
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    for g, r, name in zip(got, ref, ["margin", "loss", "prob_true", "lse_rest", "Q"]):
        assert np.all(np.isfinite(g)), name
        atol = 1e-7 if (name == "Q" and dtype == np.float32) else 1e-300
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=name)


def test_competitor_rows_sum_to_one_under_the_simulator():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((3, 7))
    y = np.array([0, 3, 6])
    got, _ = run_both(Z, y, cpu.COMPETITOR_PROBS, 4)
    Q = got[4]
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=1e-14)
    assert np.all(Q[np.arange(3), y] == 0.0)


@pytest.mark.parametrize("tpb", [0, 3, 2048])
def test_threads_per_block_is_checked(tpb):
    from fgn_arrays.kernels import cuda

    Z = np.zeros((1, 2))
    outs = [np.empty(1) for _ in range(4)]
    with pytest.raises(ValueError, match="`threads_per_block` must be a power of two"):
        cuda.margin_rows(Z, np.zeros(1, np.int64), *outs, np.empty((0, 0)), cpu.NO_COMPETITORS, threads_per_block=tpb)


# ---- Row kernels: row_dot, softmax_cov_rows, subspace_rows; activations ------


def assert_twins_agree(got, ref, dtype, scale, err_msg=""):
    """``|got - ref| <= rtol |ref| + 1e-14 scale``, ``scale`` a bound on the row's sum of |terms| (broadcast).

    The lanes add their float64 shares in a tree, the CPU kernel in a loop:
    the sums agree to a few float64 ulps of the sum of |terms| (C <= 17 here,
    so 1e-14 of it). Float32 outputs are then the roundings of two such
    nearly equal numbers: one float32 ulp apart at most (rtol 2^-23 ~ 1.2e-7).
    """
    rtol = 1e-13 if dtype == np.float64 else 1.2e-7
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(got)), err_msg
    bound = rtol * np.abs(ref) + 1e-14 * np.broadcast_to(scale, ref.shape)
    worst = np.max(np.abs(got - ref) - bound)
    assert worst <= 0.0, f"{err_msg}: exceeds the tolerance by {worst:.3g}"


def softmax_rows(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


SHAPES = [(3, 1), (5, 7), (2, 17)]
TPBS = [1, 4, 8]
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("tpb", TPBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_row_dot_kernel_matches_cpu(shape, dtype, tpb):
    from fgn_arrays.kernels import cuda

    rng = np.random.default_rng(tpb)
    A, B = rng.standard_normal((2, *shape)).astype(dtype)
    shift = rng.standard_normal(shape[1]).astype(dtype)
    got, ref = np.empty(shape[0], dtype), np.empty(shape[0], dtype)
    cuda.row_dot(A, B, shift, got, threads_per_block=tpb)
    cpu.row_dot(A, B, shift, ref)
    scale = (np.abs(A.astype(np.float64)) * np.abs(B.astype(np.float64) + shift)).sum(axis=1)
    assert_twins_agree(got, ref, dtype, scale, "row_dot")


def softmax_cov_case(shape, dtype, seed):
    """Softmax rows (a nearly one-hot row, a row whose largest entry is tied, the rest random) and directions."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = shape
    Z = 2.0 * rng.standard_normal(shape)
    Z[0, n_cols // 2] = 40.0  # p_k* = 1 - O(e^-38): the accurate formulation's case
    if n_cols > 5:
        Z[1, 2] = Z[1, 5] = 30.0  # a tie, the later entry in a lower lane for lanes = 2, 4, 8
    P = softmax_rows(Z).astype(dtype)
    V = rng.standard_normal(shape).astype(dtype)
    return P, V


@pytest.mark.parametrize("tpb", TPBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2), (4, 9), (2, 17)])
def test_softmax_cov_kernel_matches_cpu(shape, dtype, tpb):
    from fgn_arrays.kernels import cuda

    P, V = softmax_cov_case(shape, dtype, seed=tpb)
    got, ref = np.empty_like(V), np.empty_like(V)
    cuda.softmax_cov_rows(P, V, got, threads_per_block=tpb)
    cpu.softmax_cov_rows(P, V, ref)
    # every entry is p_k times a difference of v's: scale it by p_k (sum_j p_j |v_j| + |v_k| + |v|_max)
    P64, V64 = P.astype(np.float64), np.abs(V.astype(np.float64))
    scale = P64 * ((P64 * V64).sum(axis=1, keepdims=True) + V64 + V64.max(axis=1, keepdims=True))
    assert_twins_agree(got, ref, dtype, scale, "softmax_cov_rows")


def test_softmax_cov_kernel_keeps_nearly_one_hot_rows_accurate():
    # p = (1 - eps, eps, ...) in float64: out_k* = p_k* d with d ~ eps, not a difference of O(1) numbers.
    from fgn_arrays.kernels import cuda

    P = softmax_rows(np.array([[30.0, 0.0, -1.0, 2.0, 0.5]]))
    V = np.array([[1.0, -2.0, 0.5, 3.0, 0.25]])
    got = np.empty_like(V)
    cuda.softmax_cov_rows(P, V, got, threads_per_block=4)
    # reference: (diag(p) - p p^T) v = p ⊙ (v - p . v), with p . v - v_0 summed over k != 0
    p, v = P[0], V[0]
    pv_minus_v0 = np.sum(p[1:] * (v[1:] - v[0]))
    ref = p * (v - v[0] - pv_minus_v0)
    np.testing.assert_allclose(got[0], ref, rtol=1e-14)


def subspace_case(shape, dtype, seed):
    """``(U, r, y, A, B)`` at random logits, labels at the first and last class among them."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = shape
    Z = (3.0 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, n_cols, size=n_rows).astype(np.int64)
    y[0], y[-1] = 0, n_cols - 1
    outs = [np.empty(n_rows, dtype) for _ in range(4)]
    U = np.empty_like(Z)
    cpu.margin_rows(Z, y, *outs, U, cpu.MARGIN_DIRECTION)
    r = (outs[2] - 1).astype(dtype)  # r_i = -(1 - p_i)
    A, B = rng.standard_normal((2, *shape)).astype(dtype)
    return U, r, y, A, B


@pytest.mark.parametrize("tpb", TPBS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 2), (3, 9), (2, 17)])
def test_subspace_kernel_matches_cpu(shape, dtype, tpb):
    from fgn_arrays.kernels import cuda

    U, r, y, A, B = subspace_case(shape, dtype, seed=tpb)
    got, ref = np.empty((shape[0], 5)), np.empty((shape[0], 5))
    cuda.subspace_rows(U, r, y, A, B, got, threads_per_block=tpb)
    cpu.subspace_rows(U, r, y, A, B, ref)
    # the outputs are float64 for both dtypes; their terms are bounded by w sum_k |q_k| (|a_k| + |b_k|)^2
    rows = np.arange(shape[0])
    a = np.abs(A - A[rows, y][:, None]).astype(np.float64)
    b = np.abs(B - B[rows, y][:, None]).astype(np.float64)
    scale = (-r * (np.abs(U) * (1 + a + b) ** 2).sum(axis=1))[:, None]
    assert_twins_agree(got, ref, np.float64, scale, "subspace_rows")


@pytest.mark.parametrize("tpb", [1, 8])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", [cpu.TANH, cpu.RELU, cpu.GELU])
def test_activation_kernel_matches_cpu(code, dtype, tpb):
    from fgn_arrays.kernels import cuda

    rng = np.random.default_rng(code)
    H = (3.0 * rng.standard_normal((3, 5))).astype(dtype)
    shift = rng.standard_normal(5).astype(dtype)
    got, ref = [np.empty_like(H) for _ in range(2)], [np.empty_like(H) for _ in range(2)]
    cuda.activation_rows(H, shift, code, *got, threads_per_block=tpb)
    cpu.activation_rows(H, shift, code, *ref)
    # Python's math (the simulator) and the C library (the CPU kernel) may differ by an ulp in float64
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-14 if dtype == np.float64 else 1.2e-7, atol=1e-300)


def test_fewer_rows_than_blocks(monkeypatch):
    # The GPU's grid: at least 128 blocks however few the rows; the blocks past the rows exit at once.
    from fgn_arrays.kernels import cuda

    monkeypatch.setattr(cuda, "MIN_BLOCKS", 128)
    assert cuda._row_launch(3, 3, 2) == (128, (2, 1))
    P, V = softmax_cov_case((3, 3), np.float64, seed=1)
    got, ref = np.empty_like(V), np.empty_like(V)
    cuda.softmax_cov_rows(P, V, got, threads_per_block=2)
    cpu.softmax_cov_rows(P, V, ref)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    U, r, y, A, B = subspace_case((3, 3), np.float64, seed=1)
    got, ref = np.empty((3, 5)), np.empty((3, 5))
    cuda.subspace_rows(U, r, y, A, B, got, threads_per_block=2)
    cpu.subspace_rows(U, r, y, A, B, ref)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("n_rows", [1, 100, 1000, 15260, 10**6])
@pytest.mark.parametrize("n_cols", [1, 2, 10, 133, 1000, 10**5])
def test_row_launch_on_the_gpu(monkeypatch, n_rows, n_cols):
    # The launch shapes the GPU gets (MIN_BLOCKS = 128 there), for 256 threads a block.
    from fgn_arrays.kernels import cuda

    monkeypatch.setattr(cuda, "MIN_BLOCKS", 128)
    blocks, (lanes, rows_per_block) = cuda._row_launch(n_rows, n_cols, 256)
    assert 128 <= blocks <= cuda.MAX_BLOCKS  # numba-cuda's occupancy warning starts below 128
    assert lanes * rows_per_block <= 256
    assert lanes == min(256, 1 << (n_cols - 1).bit_length())  # a short row takes a lane per column
    # every row has a (lanes, slot) group in the grid, or the grid is at its cap and strides
    assert blocks * rows_per_block >= n_rows or blocks == cuda.MAX_BLOCKS
    # enough blocks to spread the rows: fewer rows a block only when that fills more blocks
    if rows_per_block < 256 // lanes:
        assert -(-n_rows // rows_per_block) <= 128


def test_flat_launch_on_the_gpu(monkeypatch):
    from fgn_arrays.kernels import cuda

    monkeypatch.setattr(cuda, "MIN_BLOCKS", 128)
    assert cuda._flat_launch(10, 256) == (128, 1)
    assert cuda._flat_launch(10**6, 256) == (3907, 256)


@pytest.mark.parametrize("launcher", ["row_dot", "softmax_cov_rows", "subspace_rows", "activation_rows"])
def test_every_launcher_checks_threads_per_block(launcher):
    from fgn_arrays.kernels import cuda

    M, v = np.zeros((2, 3)), np.zeros(3)
    args = {
        "row_dot": (M, M, v, np.empty(2)),
        "softmax_cov_rows": (M, M, np.empty_like(M)),
        "subspace_rows": (M, np.zeros(2), np.zeros(2, np.int64), M, M, np.empty((2, 5))),
        "activation_rows": (M, v, cpu.TANH, np.empty_like(M), np.empty_like(M)),
    }[launcher]
    with pytest.raises(ValueError, match="`threads_per_block` must be a power of two in \\[1, 1024\\]; got 6"):
        getattr(cuda, launcher)(*args, threads_per_block=6)


def test_the_import_filter_ignores_only_numba_cuda_timedelta_deprecation():
    # numba-cuda 0.30 + NumPy 2.5 warn at import (see kernels.cuda); anything else still warns (an error here).
    import warnings

    from fgn_arrays.kernels import cuda

    message = "The 'generic' unit for NumPy timedelta is deprecated, and will raise an error in the future."
    helpers = "numba.cuda.np.npdatetime_helpers"
    with cuda._numba_cuda_import_filter():
        warnings.warn_explicit(message, DeprecationWarning, "npdatetime_helpers.py", 31, module=helpers)
        for category, text, module in [
            (DeprecationWarning, message, "fgn_arrays.margin"),
            (DeprecationWarning, "another deprecation", helpers),
            (FutureWarning, message, helpers),
        ]:
            with pytest.raises(category):
                warnings.warn_explicit(text, category, "x.py", 1, module=module)
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit(message, DeprecationWarning, "npdatetime_helpers.py", 31, module=helpers)


def test_launch_switches_off_the_interface_stream_sync_for_the_launch_only():
    # numba-cuda would synchronise the stream each CuPy argument names, at every
    # launch: a host synchronisation per argument. Launches on that same stream
    # switch it off, and the user's setting is back afterwards.
    from numba.core import config

    from fgn_arrays.kernels import cuda

    seen = []

    class Kernel:
        def __getitem__(self, launch_config):
            return lambda *args: seen.append((launch_config[:2], config.CUDA_ARRAY_INTERFACE_SYNC, args))

    before = config.CUDA_ARRAY_INTERFACE_SYNC
    cuda._launch(Kernel(), 3, 8, np.zeros(2), (1, 2), 64)
    assert seen == [((3, 8), 0, (1, 2))]
    assert config.CUDA_ARRAY_INTERFACE_SYNC == before
