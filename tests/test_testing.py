"""The CuPy stand-in (fgn_arrays.testing): it behaves like CuPy where a GPU branch could tell, and counts right."""

import numpy as np
import pytest
from conftest import HAS_GPU
from numba.core import config

import fgn_arrays as fa
from fgn_arrays import _backend
from fgn_arrays.testing import DeviceArray, use_standin

pytestmark = pytest.mark.standin


def test_registration_is_scoped():
    assert not isinstance(fa.to_device(np.ones(2), "cpu"), DeviceArray)
    with use_standin() as sx:
        assert fa.gpu_available()
        d = fa.to_device(np.arange(3.0), "gpu")
        assert isinstance(d, DeviceArray) and isinstance(d, sx.ndarray)
        assert _backend.get_namespace(d) is sx
        np.testing.assert_array_equal(fa.to_numpy(d), [0.0, 1.0, 2.0])
    assert _backend._registered is None
    assert fa.gpu_available() == HAS_GPU  # the cached answer was the stand-in's; cleared on exit


def test_no_mixing_and_no_implicit_conversion():
    with use_standin() as sx:
        d = sx.asarray(np.ones(3))
        with pytest.raises(TypeError, match="does not mix"):
            d + np.ones(3)
        with pytest.raises(TypeError, match="does not mix"):
            np.ones(3) + d
        with pytest.raises(TypeError, match="Implicit conversion"):
            np.asarray(d)
        with pytest.raises(TypeError, match="does not take device arrays"):
            np.sum(d)
        with pytest.raises(TypeError, match=r"NumPy \(`X`\) and CuPy \(`theta`\)"):
            _backend.get_namespace(np.ones(2), d, names=("X", "theta"))
        assert not hasattr(sx, "errstate")  # CuPy has none; the library must not rely on it
        with pytest.raises(AttributeError, match="allow-list"):
            sx.nanmedian


def test_reductions_are_device_scalars_and_syncs_are_counted():
    with use_standin() as sx:
        d = sx.asarray(np.array([1.0, 2.0, 3.0]))
        sx.counts.reset()
        total = d.sum()
        assert isinstance(total, DeviceArray) and total.shape == ()
        assert sx.counts.launches == 1 and sx.counts.syncs == 0
        assert float(total) == 6.0 and int(total) == 6 and bool(total)
        assert total.item() == 6.0 and d.tolist() == [1.0, 2.0, 3.0]
        d.get()
        sx.cuda.get_current_stream().synchronize()
        assert sx.counts.syncs == 7


def test_views_and_allocations_are_not_launches():
    with use_standin() as sx:
        d = sx.asarray(np.arange(12.0))
        sx.counts.reset()
        m = d.reshape(3, 4)
        _ = m.T, m[1:], m[0], d.astype(np.float64, copy=False)
        e = sx.empty((5, 2), dtype=np.float32)
        assert sx.counts.launches == 0
        assert sx.counts.allocations == [((5, 2), np.dtype(np.float32))]
        m[0] *= 2.0  # in place, then (as in CuPy) assigned back to the row: no allocation
        m[m > 10.0]  # a comparison and a fancy index: each a launch and an allocation
        d.copy()
        assert sx.counts.operations == ["imul", "setitem", "gt", "getitem", "copy"]
        assert sx.counts.launches == 5
        assert [shape for shape, _ in sx.counts.allocations] == [(5, 2), (3, 4), (1,), (12,)]
        assert isinstance(e, DeviceArray)


def test_kernels_run_their_cpu_twin_or_the_simulator(monkeypatch):
    from fgn_arrays.kernels import cpu, cuda

    calls = []
    monkeypatch.setattr(cuda, "margin_rows", lambda *a, **k: calls.append("cuda") or cpu.margin_rows(*a))
    Z = np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([0, 2, 1, 0])
    ref = fa.margin_stats(Z, y)
    for size, expected in ((12, "cuda" if config.ENABLE_CUDASIM else None), (11, None)):
        calls.clear()
        with use_standin(simulate_max_entries=size) as sx:
            got = fa.margin_stats(sx.asarray(Z), sx.asarray(y))
            assert "kernel margin_rows" in sx.counts.operations
        assert calls == ([expected] if expected else [])
        np.testing.assert_allclose(got.loss.get(), ref.loss, rtol=1e-14)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="CUDA simulator not enabled (a real GPU is present)")
def test_fgn_step_with_every_kernel_simulated():
    # Tiny enough that every Numba CUDA kernel of the step (margin, row sums,
    # the three CG updates) runs under the simulator: the GPU launch code end to end.
    rng = np.random.default_rng(0)
    N, D, C = 6, 3, 4
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, N)
    head = fa.LinearHead(D, C)
    theta = rng.standard_normal(head.n_params)
    ref = fa.fgn_step(head.linearize(theta, X, y), 0.1, l2=0.01, solver="cg", rtol=1e-10)
    with use_standin(simulate_max_entries=64) as sx:
        got = fa.fgn_step(head.linearize(sx.asarray(theta), sx.asarray(X), sx.asarray(y)), 0.1, l2=0.01,
                          solver="cg", rtol=1e-10)
        kernels = {op for op in sx.counts.operations if op.startswith("kernel")}
    assert {"kernel margin_rows", "kernel cg_dot", "kernel cg_update_xr", "kernel cg_update_p"} <= kernels
    assert got.n_iter == ref.n_iter and got.converged
    np.testing.assert_allclose(got.direction.get(), ref.direction, rtol=1e-12, atol=1e-15)
