"""Test configuration: the backends under test, and the Numba CUDA simulator when no GPU is present.

Backends
--------
``xp`` runs a test on NumPy, on the CPU stand-in for CuPy
(:mod:`fgn_arrays.testing`, marker ``standin``: every GPU branch of the
library, on the CPU) and on real CuPy (marker ``gpu``); ``gpu_xp`` on the
last two only. A ``gpu`` test is skipped when CuPy or a CUDA device is
missing, with the reason (an import error of CuPy is printed, never reported
as a plain "no GPU"), and fails instead when ``FGN_REQUIRE_GPU=1``.

Property tests (hypothesis) are derandomized: the same examples on every
run. ``HYPOTHESIS_PROFILE=explore`` draws fresh ones.

``NUMBA_ENABLE_CUDASIM`` must be set before Numba is first imported, so the
GPU check runs before anything imports fgn_arrays (which imports Numba). It
asks CuPy directly, without fgn_arrays.
"""

import os


def _probe_gpu():
    """``(True, "")`` when CuPy imports and sees a CUDA device, else ``(False, why)``."""
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name == "cupy":
            return False, "CuPy is not installed"
        return False, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken install: missing CUDA libraries, two CuPy packages, ...
        return False, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        if cupy.cuda.is_available():
            return True, ""
        return False, "CuPy sees no CUDA device"
    except Exception as exc:
        return False, f"CuPy cannot query the CUDA driver: {type(exc).__name__}: {exc}"


HAS_GPU, NO_GPU_REASON = _probe_gpu()
REQUIRE_GPU = os.environ.get("FGN_REQUIRE_GPU", "") == "1"
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run (CI must not flake on a
# newly drawn example); HYPOTHESIS_PROFILE=explore draws fresh ones, to hunt.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def pytest_report_header(config):
    if HAS_GPU:
        return "GPU: CuPy sees a CUDA device; the gpu tests run on it"
    action = "fail (FGN_REQUIRE_GPU=1)" if REQUIRE_GPU else "are skipped"
    return f"GPU: none ({NO_GPU_REASON}); the gpu tests {action}, the stand-in tests run"


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not HAS_GPU:
        if REQUIRE_GPU:
            pytest.fail(f"FGN_REQUIRE_GPU=1 but there is no usable GPU: {NO_GPU_REASON}", pytrace=False)
        pytest.skip(f"needs CuPy and a CUDA GPU: {NO_GPU_REASON}")


STANDIN = pytest.param("standin", id="standin", marks=pytest.mark.standin)
CUPY = pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)


def _namespace(name):
    """A context manager yielding the namespace called ``name``."""
    import contextlib

    if name == "numpy":
        return contextlib.nullcontext(numpy)
    if name == "standin":
        from fgn_arrays.testing import use_standin

        return use_standin()
    import cupy

    return contextlib.nullcontext(cupy)


@pytest.fixture(params=["numpy", STANDIN, CUPY])
def xp(request):
    """The array namespace under test: numpy, the CuPy stand-in, or cupy on a GPU machine."""
    with _namespace(request.param) as namespace:
        yield namespace


@pytest.fixture(params=[STANDIN, CUPY])
def gpu_xp(request):
    """A GPU namespace: the CuPy stand-in, or cupy on a GPU machine."""
    with _namespace(request.param) as namespace:
        yield namespace


def to_host(x):
    """A NumPy copy of a NumPy, stand-in or CuPy array."""
    return x.get() if hasattr(x, "get") and not isinstance(x, numpy.ndarray) else numpy.asarray(x)
