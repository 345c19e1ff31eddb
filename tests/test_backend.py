"""Backend selection: NumPy in, NumPy out; CuPy optional; mixing refused."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import HAS_GPU

import fgn_arrays as fa
from fgn_arrays._backend import get_namespace, is_cupy_array, namespace_for_device, to_device


class FakeCupyArray:
    """Looks like a CuPy array to the dispatcher, without importing CuPy."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {}
    shape = (3,)
    ndim = 1


def test_import_is_quiet_and_needs_no_cupy():
    code = "import sys, fgn_arrays; print(sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx')))"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    assert done.stdout.strip() == "[]"


def test_gpu_available_is_cached_and_quiet():
    first = fa.gpu_available()
    assert isinstance(first, bool)
    assert first is fa.gpu_available()
    assert first == HAS_GPU


def test_numpy_in_numpy_out():
    assert get_namespace(np.zeros(2), np.zeros(3), None) is np


def test_mixing_backends_names_both_arguments():
    fake = FakeCupyArray()
    assert is_cupy_array(fake)
    with pytest.raises(TypeError, match=r"NumPy \(`logits`\) and CuPy \(`labels`\)"):
        get_namespace(np.zeros((3, 2)), fake, names=("logits", "labels"))
    with pytest.raises(TypeError, match=r"NumPy \(`logits`\) and CuPy \(`labels`\)"):
        fa.margin_stats(np.zeros((3, 2)), fake)


def test_non_arrays_are_refused():
    with pytest.raises(TypeError, match=r"`X` must be a numpy.ndarray or cupy.ndarray; got builtins.dict"):
        get_namespace({}, names=("X",))


def test_devices():
    x = np.arange(3.0)
    assert to_device(x, "cpu") is not None and np.array_equal(fa.to_numpy(x), x)
    with pytest.raises(ValueError, match=r"`device` must be 'cpu' or 'gpu'; got 'tpu'"):
        namespace_for_device("tpu")
    if not HAS_GPU:
        # the message names the extras that bring a working CuPy
        with pytest.raises(RuntimeError, match=r"not available.*gpu-cuda12.*gpu-cuda13"):
            namespace_for_device("gpu")


def test_cupy_round_trip(gpu_xp):
    x = np.arange(6.0).reshape(2, 3)
    d = to_device(x, "gpu")
    assert isinstance(d, gpu_xp.ndarray)
    assert get_namespace(d) is gpu_xp
    np.testing.assert_array_equal(fa.to_numpy(d), x)
