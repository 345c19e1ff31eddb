"""Array namespaces (NumPy or CuPy), device moves and GPU detection.

Conventions
-----------
The arrays choose the backend: NumPy in, NumPy out; CuPy in, CuPy out.
Every function outside this module and ``kernels/`` receives the namespace
``xp`` from :func:`get_namespace` and calls only ``xp.<function>``.
CuPy is imported only when a CuPy array arrives or a GPU is asked for, so
``import fgn_arrays`` never needs it.

Every GPU branch reaches the GPU array library through one
:class:`GPUBackend`: CuPy's by default, or another registered with
:func:`set_gpu_backend` (the tests register :mod:`fgn_arrays.testing`'s CPU
stand-in for CuPy, so that every GPU branch runs without a GPU). Code
outside this module tells the branches apart by ``xp is numpy``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy

__all__ = [
    "CholeskyFactor",
    "GPUBackend",
    "as_array",
    "as_arrays",
    "cholesky_factor",
    "cholesky_solve",
    "get_namespace",
    "gpu_available",
    "gpu_backend",
    "host_floats",
    "is_cupy_array",
    "is_device_array",
    "namespace_for_device",
    "set_gpu_backend",
    "to_device",
    "to_numpy",
]


@dataclass(frozen=True)
class GPUBackend:
    """What the library's GPU branches use of a GPU array library.

    Attributes
    ----------
    xp : module
        The array namespace, with CuPy's API (``cupy`` itself, or a stand-in).
    xpx : module
        CuPy's companion ``cupyx``: ``xpx.scipy.linalg.solve_triangular`` and
        ``xpx.errstate(linalg="raise")`` are used.
    kernels : module
        The fused kernels: a function for each kernel of
        :mod:`fgn_arrays.kernels.cpu` that runs on the GPU, with the CPU
        kernel's positional arguments (:mod:`fgn_arrays.kernels.cuda`, the
        Numba CUDA launchers, for CuPy).
    is_array : callable
        ``is_array(x)``: whether ``x`` is one of ``xp``'s arrays.
    available : callable
        ``available()``: whether the backend can run (a GPU is seen).
    """

    xp: Any
    xpx: Any
    kernels: Any
    is_array: Callable[[Any], bool]
    available: Callable[[], bool]


_registered: GPUBackend | None = None


def set_gpu_backend(backend: GPUBackend | None) -> None:
    """Route every GPU branch to ``backend``; ``None`` restores CuPy.

    The hook through which :mod:`fgn_arrays.testing` registers its CPU
    stand-in for CuPy. While one is registered, its arrays are the device
    arrays: ``get_namespace`` returns its ``xp`` for them,
    ``namespace_for_device("gpu")`` and ``to_device(x, "gpu")`` use it, and
    :func:`gpu_available` asks it.
    """
    global _registered
    if backend is not None and not isinstance(backend, GPUBackend):
        raise TypeError(f"`backend` must be a GPUBackend or None; got {type(backend).__name__}.")
    _registered = backend
    gpu_available.cache_clear()


def gpu_backend() -> GPUBackend:
    """The registered :class:`GPUBackend`, or CuPy's (importing CuPy)."""
    if _registered is not None:
        return _registered
    return _cupy_backend()


@functools.lru_cache(maxsize=1)
def _cupy_backend() -> GPUBackend:
    import cupy
    import cupyx
    import cupyx.scipy.linalg  # noqa: F401  (loads the submodule)

    from .kernels import cuda

    return GPUBackend(cupy, cupyx, cuda, is_cupy_array, lambda: bool(cupy.cuda.is_available()))


def is_cupy_array(x) -> bool:
    """True when ``x`` is a ``cupy.ndarray`` (checked without importing CuPy)."""
    return type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


def is_device_array(x) -> bool:
    """True when ``x`` is an array of the GPU backend (CuPy's, or the registered one)."""
    if _registered is not None:
        return _registered.is_array(x)
    return is_cupy_array(x)


def _backend_name(x) -> str | None:
    if is_device_array(x):
        return "cupy"
    if isinstance(x, numpy.ndarray) or numpy.isscalar(x):
        return "numpy"
    return None


# DLPack device types (dlpack.h, ``DLDeviceType``) by the library that reads them without a copy:
# ``numpy.from_dlpack`` reads host memory (CPU, CUDA pinned host), the GPU backend's ``from_dlpack``
# CUDA device memory (device, managed).
DLPACK_HOST_DEVICES = {1: "CPU", 3: "CUDA host"}
DLPACK_GPU_DEVICES = {2: "CUDA", 13: "CUDA managed"}


def as_array(x, name: str):
    """``x`` as an array of the library's backends, reading DLPack producers without a copy.

    The one conversion of the library's inputs: every public check of an
    array argument (:mod:`fgn_arrays._validation`) and of a callable's output
    passes it through here first.

    Parameters
    ----------
    x : array-like
        A NumPy array or a device array (CuPy's, or the registered
        backend's): returned as it is, as is ``None``. Any other
        object with ``__dlpack__`` and ``__dlpack_device__`` (a JAX array, a
        torch tensor, ...): read through DLPack without a copy, by
        ``numpy.from_dlpack`` when it lives in host memory and by the GPU
        backend's ``from_dlpack`` (``cupy.from_dlpack``) when it lives on a
        CUDA device. The result may be read-only (JAX exports read-only
        buffers); the library never writes into its inputs.
    name : str
        The argument's name, for the error message.

    Raises
    ------
    TypeError
        For anything else (lists and scalars included), or a DLPack producer on a device
        that neither NumPy nor the GPU backend reads; the message names
        ``name`` and shows what arrived.
    """
    if x is None or isinstance(x, numpy.ndarray) or is_device_array(x):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        device_type = int(x.__dlpack_device__()[0])
        if device_type in DLPACK_HOST_DEVICES:
            return _from_dlpack(numpy, x, name)
        if device_type in DLPACK_GPU_DEVICES:
            try:
                xp = gpu_backend().xp
            except ImportError as exc:
                raise TypeError(
                    f"`{name}` lives on a CUDA device ({type(x).__module__}.{type(x).__name__}); reading it "
                    f"needs CuPy, which failed to import ({exc}). {_gpu_missing_message()}"
                ) from exc
            return _from_dlpack(xp, x, name)
        raise TypeError(
            f"`{name}` lives on DLPack device type {device_type}; the library reads host memory "
            f"({', '.join(DLPACK_HOST_DEVICES.values())}) with NumPy and CUDA device memory "
            f"({', '.join(DLPACK_GPU_DEVICES.values())}) with CuPy."
        )
    raise TypeError(
        f"`{name}` must be a numpy.ndarray or cupy.ndarray; got {type(x).__module__}.{type(x).__name__}. "
        "Arrays that support DLPack (JAX, torch, ...) are read too."
    )


def _from_dlpack(xp, x, name):
    """``xp.from_dlpack(x)``; a producer that refuses to export (a torch tensor that requires grad) names ``name``."""
    try:
        return xp.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"`{name}` ({type(x).__module__}.{type(x).__name__}) could not be read through DLPack: {exc}"
        ) from exc


def as_arrays(*arrays, names):
    """:func:`as_array` of each of ``arrays`` (named by ``names``), as a tuple."""
    return tuple(as_array(x, name) for x, name in zip(arrays, names))


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
        return gpu_backend().xp
    return numpy


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """Whether CuPy (or the registered GPU backend) is importable and sees a CUDA device.

    Answers quietly (no warnings, no exceptions) and caches the answer.
    """
    try:
        return bool(gpu_backend().available())
    except Exception:  # ImportError, CUDARuntimeError, missing driver libraries
        return False


def namespace_for_device(device: str):
    """``numpy`` for ``"cpu"``, ``cupy`` for ``"gpu"``."""
    if device == "cpu":
        return numpy
    if device == "gpu":
        if not gpu_available():
            raise RuntimeError(_gpu_missing_message())
        return gpu_backend().xp
    raise ValueError(f"`device` must be 'cpu' or 'gpu'; got {device!r}.")


def _gpu_missing_message() -> str:
    """Why ``device="gpu"`` cannot run, and which GPU extra to install (by the driver's CUDA version)."""
    import importlib.util

    try:
        has_cupy = importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):
        has_cupy = False
    why = "CuPy is not installed" if not has_cupy else "CuPy is installed but sees no CUDA GPU"
    version = _driver_cuda_version()
    if version is None:
        driver = "no CUDA driver was found here; nvidia-smi shows a driver's CUDA version"
    elif version[0] >= 12:
        driver = f"this driver supports CUDA {version[0]}.{version[1]}: gpu-cuda{min(version[0], 13)}"
    else:
        driver = f"this driver supports CUDA {version[0]}.{version[1]} only; both extras need CUDA 12 or later"
    return (
        f"`device` is 'gpu' but a GPU is not available: {why}. Install the GPU extra that matches "
        f"the CUDA driver: pip install 'fgn_arrays[gpu-cuda12]' or 'fgn_arrays[gpu-cuda13]' ({driver})."
    )


def _driver_cuda_version():
    """``(major, minor)`` CUDA version of the installed NVIDIA driver (``cuDriverGetVersion``), or None."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            libcuda = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            status = libcuda.cuDriverGetVersion(ctypes.byref(version))
        except AttributeError:
            return None
        return (version.value // 1000, version.value % 1000 // 10) if status == 0 and version.value > 0 else None
    return None


def to_device(x, device: str):
    """Copy ``x`` to ``device`` ("cpu" or "gpu"); no copy when it is already there."""
    xp = namespace_for_device(device)
    if xp is numpy:
        return to_numpy(x)
    return xp.asarray(x)


def host_floats(xp, *values):
    """Python floats of ``values`` (0-d or 1-d arrays of ``xp``, Python numbers) in one device-to-host copy.

    Returns one flat list: a 1-d array gives one float per entry. This packs
    every scalar a step needs into one transfer: on the GPU, one
    synchronization instead of one per ``float(...)``.
    """
    packed = xp.concatenate([xp.reshape(xp.asarray(v, dtype=xp.float64), (-1,)) for v in values])
    return packed.tolist()


def to_numpy(x):
    """``x`` as a NumPy array (copies device arrays to the host)."""
    if is_device_array(x):
        return x.get()
    return numpy.asarray(x)


@dataclass(frozen=True)
class CholeskyFactor:
    """The lower Cholesky factor ``L`` of an SPD matrix ``K = L L^T``, with its triangular solver.

    Made by :func:`cholesky_factor`, which chooses the triangular solver once
    (``scipy.linalg.solve_triangular`` for NumPy,
    ``cupyx.scipy.linalg.solve_triangular`` for CuPy), so that each
    :meth:`solve` is two triangular solves on the device and nothing else.

    Attributes
    ----------
    L : array, shape (n, n)
        Lower triangular (only the lower triangle is read; on NumPy the upper
        triangle may hold the input's entries).
    """

    L: Any
    _solve_triangular: Callable

    def solve(self, b):
        """``K^-1 b = L^-T (L^-1 b)``, for ``b`` of shape (n,) or (n, k), in ``L``'s dtype.

        Two triangular solves, ``O(n^2)`` each per right-hand side; no
        synchronisation.
        """
        z = self._solve_triangular(self.L, b, lower=True)
        return self._solve_triangular(self.L, z, lower=True, trans="T")


def cholesky_factor(K):
    """Cholesky factor of a symmetric positive definite ``K``, or ``None`` when it is not PD.

    Parameters
    ----------
    K : array, shape (n, n)
        NumPy or device array; factorised in its dtype (callers pass float64).

    Returns
    -------
    CholeskyFactor or None
        ``None`` when ``K`` is not numerically positive definite. On the GPU
        the check reads cuSOLVER's status word: one host synchronisation.
    """
    if is_device_array(K):
        gpu = gpu_backend()
        # CuPy's default linalg="ignore" never reads cuSOLVER's status, so a
        # failed factorisation could return finite garbage; "raise" makes it
        # raise numpy.linalg.LinAlgError. The check reads one status word
        # from the device: the factorisation's only host synchronisation.
        try:
            with gpu.xpx.errstate(linalg="raise"):
                L = gpu.xp.linalg.cholesky(K)
        except numpy.linalg.LinAlgError:
            return None
        return CholeskyFactor(L, gpu.xpx.scipy.linalg.solve_triangular)
    import scipy.linalg

    try:
        L, _ = scipy.linalg.cho_factor(K, lower=True, check_finite=False)
    except numpy.linalg.LinAlgError:
        return None
    return CholeskyFactor(L, functools.partial(scipy.linalg.solve_triangular, check_finite=False))


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
    factor = cholesky_factor(K)
    return None if factor is None else factor.solve(b)
