"""Array namespaces (NumPy or CuPy), device moves and GPU detection.

Conventions
-----------
The arrays choose the backend: NumPy in, NumPy out; CuPy in, CuPy out.
Every function outside this module and ``kernels/`` receives the namespace
``xp`` from :func:`get_namespace` and calls only ``xp.<function>``.
CuPy is imported only when a CuPy array arrives or a GPU is asked for, so
``import fgn_arrays`` never needs it.
"""

from __future__ import annotations

import functools

import numpy

__all__ = [
    "cholesky_solve",
    "get_namespace",
    "gpu_available",
    "is_cupy_array",
    "namespace_for_device",
    "to_device",
    "to_numpy",
]


def is_cupy_array(x) -> bool:
    """True when ``x`` is a ``cupy.ndarray`` (checked without importing CuPy)."""
    return type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


def _backend_name(x) -> str | None:
    if is_cupy_array(x):
        return "cupy"
    if isinstance(x, numpy.ndarray) or numpy.isscalar(x):
        return "numpy"
    return None


def get_namespace(*arrays, names=None):
    """The array namespace shared by ``arrays``: ``numpy`` or ``cupy``.

    Parameters
    ----------
    *arrays : numpy.ndarray or cupy.ndarray
        ``None`` entries are ignored. Python scalars count as NumPy.
    names : sequence of str, optional
        Argument names, used in the error message.

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed, or an argument is neither.
    """
    names = list(names) if names is not None else [f"argument {i}" for i in range(len(arrays))]
    seen = {}
    for name, x in zip(names, arrays):
        if x is None:
            continue
        kind = _backend_name(x)
        if kind is None:
            raise TypeError(
                f"`{name}` must be a numpy.ndarray or cupy.ndarray; got {type(x).__module__}."
                f"{type(x).__name__}."
            )
        seen.setdefault(kind, name)
    if len(seen) > 1:
        raise TypeError(
            f"Arrays must all live on one backend; got NumPy (`{seen['numpy']}`) "
            f"and CuPy (`{seen['cupy']}`). Move them with fgn_arrays.to_device."
        )
    if seen.get("cupy"):
        import cupy

        return cupy
    return numpy


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """Whether CuPy is importable and sees at least one CUDA device.

    Answers quietly (no warnings, no exceptions) and caches the answer.
    """
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # ImportError, CUDARuntimeError, missing driver libraries
        return False


def namespace_for_device(device: str):
    """``numpy`` for ``"cpu"``, ``cupy`` for ``"gpu"``."""
    if device == "cpu":
        return numpy
    if device == "gpu":
        if not gpu_available():
            raise RuntimeError("`device` is 'gpu' but CuPy or a CUDA GPU is not available.")
        import cupy

        return cupy
    raise ValueError(f"`device` must be 'cpu' or 'gpu'; got {device!r}.")


def to_device(x, device: str):
    """Copy ``x`` to ``device`` ("cpu" or "gpu"); no copy when it is already there."""
    xp = namespace_for_device(device)
    if xp is numpy:
        return to_numpy(x)
    return xp.asarray(x)


def to_numpy(x):
    """``x`` as a NumPy array (copies device arrays to the host)."""
    if is_cupy_array(x):
        return x.get()
    return numpy.asarray(x)


def cholesky_solve(K, b):
    """Solve ``K x = b`` for symmetric positive definite ``K`` by Cholesky.

    Parameters
    ----------
    K : array, shape (n, n)
    b : array, shape (n,)
        Same backend as ``K``; solved in their dtype (callers pass float64).

    Returns
    -------
    x : array, shape (n,), or None
        ``None`` when ``K`` is not numerically positive definite.
    """
    if is_cupy_array(K):
        import cupy
        import cupyx.scipy.linalg

        L = cupy.linalg.cholesky(K)
        if not bool(cupy.isfinite(L).all()):  # CuPy returns NaN instead of raising
            return None
        z = cupyx.scipy.linalg.solve_triangular(L, b, lower=True)
        return cupyx.scipy.linalg.solve_triangular(L, z, lower=True, trans="T")
    import scipy.linalg

    try:
        factor = scipy.linalg.cho_factor(K, lower=True, check_finite=False)
    except numpy.linalg.LinAlgError:
        return None
    return scipy.linalg.cho_solve(factor, b, check_finite=False)
