"""Test configuration: backends, and the Numba CUDA simulator when no GPU is present.

``NUMBA_ENABLE_CUDASIM`` must be set before Numba is first imported, so this
check runs before anything imports fgn_arrays (which imports Numba). It asks
CuPy directly, without fgn_arrays.
"""

import os


def _real_gpu() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


HAS_GPU = _real_gpu()
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy  # noqa: E402
import pytest  # noqa: E402

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param(
        "cupy",
        id="cupy",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")],
    ),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array namespace under test: numpy, or cupy on a GPU machine."""
    if request.param == "numpy":
        return numpy
    import cupy

    return cupy


def to_host(x):
    """A NumPy copy of a NumPy or CuPy array."""
    return x.get() if hasattr(x, "get") and not isinstance(x, numpy.ndarray) else numpy.asarray(x)
