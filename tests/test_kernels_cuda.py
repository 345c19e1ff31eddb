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
