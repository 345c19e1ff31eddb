"""A CPU stand-in for CuPy, so that every GPU branch of the library runs (and is counted) without a GPU.

Conventions
-----------
:func:`use_standin` registers the stand-in as the library's GPU backend
(through :func:`fgn_arrays._backend.set_gpu_backend`, no monkeypatching) and
yields its namespace ``sx``, which has CuPy's API for what the library uses:
``sx.asarray(numpy_array)`` makes a *device* array (a :class:`DeviceArray`
wrapping a NumPy array), and from then on the library takes its CuPy
branches, exactly as for ``cupy.asarray``.

The stand-in behaves like CuPy where the difference matters to a GPU branch:

- reductions return 0-d device arrays, not Python or NumPy scalars;
- a NumPy array never mixes with a device array (``TypeError``), and there is
  no implicit conversion to NumPy (``numpy.asarray(x)`` raises ``TypeError``;
  ``x.get()`` or ``fgn_arrays.to_numpy`` copy to the host);
- there is no ``errstate`` and nothing warns;
- ``linalg.cholesky`` returns NaN on failure unless
  ``sx.xpx.errstate(linalg="raise")`` is active, then it raises
  ``numpy.linalg.LinAlgError``;
- the Numba CUDA kernels (``fgn_arrays.kernels.cuda``) run under the CUDA
  simulator when ``NUMBA_ENABLE_CUDASIM=1`` and the kernel's first array
  argument (the data: ``Z``, ``H``, a CG vector) has at most
  ``simulate_max_entries`` entries (0 by default: opt in, since each
  simulated thread is a Python thread); otherwise their CPU twins in
  ``fgn_arrays.kernels.cpu`` run, with the same arguments.

``sx.counts`` counts, from its last ``reset()``:

- ``launches``: device operations, the GPU work a CuPy call would queue:
  one for each namespace function, operator, method, fancy index, item
  assignment, host-to-device copy or fused kernel. Views are free (a result
  that shares memory with an argument: ``reshape``, ``.T``, basic slicing,
  ``astype`` to the same dtype without a copy). CuPy itself may split a call
  into more than one kernel (a large reduction, a norm); the count is of
  calls, the unit the budgets of the tests are written in.
- ``syncs``: host synchronisations: ``float``, ``int``, ``bool``,
  ``item``, ``tolist``, ``get`` (device-to-host copies), a stream's
  ``synchronize`` and a Cholesky factorisation whose status is read.
- ``allocations``: ``(shape, dtype)`` of each new device array.
- ``operations``: the name of each launch, in order (for the messages of
  failed budgets).
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field

import numpy

from . import _backend

__all__ = ["Counts", "DeviceArray", "use_standin"]


@dataclass
class Counts:
    """Device operations, host synchronisations and allocations since :meth:`reset`."""

    launches: int = 0
    syncs: int = 0
    allocations: list = field(default_factory=list)
    operations: list = field(default_factory=list, repr=False)

    def reset(self):
        self.launches, self.syncs, self.allocations, self.operations = 0, 0, [], []

    def launch(self, name):
        self.launches += 1
        self.operations.append(name)


# The one stand-in in use (None outside `use_standin`).
_COUNTS = Counts()


def _unwrap(x):
    """NumPy storage of device arrays, recursively; NumPy arrays are refused (as by CuPy)."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, numpy.ndarray):
        raise TypeError(
            "Unsupported type <class 'numpy.ndarray'>: the CuPy stand-in, like CuPy, does not mix "
            "host (NumPy) and device arrays."
        )
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _arrays_in(values):
    for v in values:
        if isinstance(v, numpy.ndarray):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _arrays_in(v)


def _wrap(name, result, inputs, in_place=False):
    """Device arrays for the NumPy results of one device operation, counted.

    A result sharing memory with an input is a view (no launch, no allocation),
    unless the operation wrote into an input (``out=`` or an in-place operator).
    """
    results = result if isinstance(result, tuple) else (result,)
    arrays = [numpy.asarray(r) if isinstance(r, numpy.generic) else r for r in results]
    arrays = [r for r in arrays if isinstance(r, numpy.ndarray)]
    sources = list(_arrays_in(inputs))
    new = [r for r in arrays if not any(numpy.may_share_memory(r, s) for s in sources)]
    if in_place or new or not arrays:
        _COUNTS.launch(name)
    _COUNTS.allocations.extend((r.shape, r.dtype) for r in new)

    def wrap_one(r):
        if isinstance(r, numpy.generic):
            return DeviceArray(numpy.asarray(r))
        if isinstance(r, numpy.ndarray):
            return DeviceArray(r)
        return r

    if isinstance(result, tuple):
        return tuple(wrap_one(r) for r in result)
    return wrap_one(result)


# Allocate without launching a kernel (CuPy's memory pool).
_ALLOCATE_ONLY = frozenset({"empty", "empty_like"})


def _call(fn, args, kwargs, owner=None):
    """Run the NumPy ``fn`` on unwrapped arguments, quietly (CuPy does not warn), and wrap.

    ``owner`` is the NumPy array whose method ``fn`` is (a result sharing its
    memory is a view).
    """
    raw_args, raw_kwargs = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
    with numpy.errstate(all="ignore"):
        result = fn(*raw_args, **raw_kwargs)
    name = getattr(fn, "__name__", type(fn).__name__)
    if name in _ALLOCATE_ONLY and owner is None:
        _COUNTS.allocations.append((result.shape, result.dtype))
        return DeviceArray(result)
    in_place = raw_kwargs.get("out") is not None
    inputs = list(raw_args) + list(raw_kwargs.values()) + ([owner] if owner is not None else [])
    return _wrap(name, result, inputs, in_place=in_place)


def _sync():
    _COUNTS.syncs += 1


class DeviceArray:
    """A stand-in ``cupy.ndarray``: a NumPy array that the library must treat as device memory."""

    __slots__ = ("_a",)
    # NumPy defers to our operators instead of converting us (and then refusing).
    __array_ufunc__ = None

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed (as in CuPy); use `.get()` or "
            "fgn_arrays.to_numpy."
        )

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} does not take device arrays (as in CuPy); use the namespace.")

    # ---- metadata: no device work
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    # ---- host transfers: synchronisations
    def get(self):
        _sync()
        return self._a.copy()

    def item(self):
        _sync()
        return self._a.item()

    def tolist(self):
        _sync()
        return self._a.tolist()

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __bool__(self):
        _sync()
        return bool(self._a)

    def __index__(self):
        _sync()
        return operator.index(self._a)

    # ---- device work
    def __getattr__(self, name):
        attr = getattr(self._a, name)
        if not callable(attr):
            raise AttributeError(name)
        return lambda *args, **kwargs: _call(attr, args, kwargs, owner=self._a)

    def __getitem__(self, key):
        raw = _unwrap(key)
        with numpy.errstate(all="ignore"):
            result = self._a[raw]
        return _wrap("getitem", result, [self._a])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)
        _COUNTS.launch("setitem")

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _operator(name):
    # operator.and_, or_ for the names "and", "or"
    return getattr(operator, name if hasattr(operator, name) else name + "_")


def _binary(name):
    def method(self, other):
        return _call(_operator(name), (self, other), {})

    method.__name__ = f"__{name}__"
    return method


def _reflected(name):
    def method(self, other):
        return _call(_operator(name), (other, self), {})

    method.__name__ = f"__r{name}__"
    return method


def _in_place(name):
    def method(self, other):
        raw = _unwrap(other)
        with numpy.errstate(all="ignore"):
            _operator(f"i{name}")(self._a, raw)
        _COUNTS.launch(f"i{name}")
        return self

    method.__name__ = f"__i{name}__"
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor"):
    setattr(DeviceArray, f"__{_name}__", _binary(_name))
    setattr(DeviceArray, f"__r{_name}__", _reflected(_name))
    setattr(DeviceArray, f"__i{_name}__", _in_place(_name))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(DeviceArray, f"__{_name}__", _binary(_name))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(DeviceArray, f"__{_name}__", lambda self, _op=getattr(operator, _name): _call(_op, (self,), {}))
DeviceArray.__hash__ = None


class _Functions:
    """Namespace functions forwarded to NumPy's, from an allow-list of what CuPy has too."""

    def __init__(self, source, names, prefix):
        self._source, self._names, self._prefix = source, frozenset(names), prefix

    def __getattr__(self, name):
        if name not in self._names:
            raise AttributeError(
                f"the CuPy stand-in has no `{self._prefix}{name}`; add it to the allow-list in "
                "fgn_arrays.testing if CuPy has it too."
            )
        fn = getattr(self._source, name)
        return lambda *args, **kwargs: _call(fn, args, kwargs)


# What CuPy shares with NumPy and the library (or its tests) may call.
_FUNCTIONS = """
abs absolute all allclose amax amin any arange argmax argmin argsort array_equal ascontiguousarray
broadcast_to clip concatenate copy count_nonzero cumsum diag diagonal divide dot einsum empty
empty_like exp expm1 eye flatnonzero full full_like isfinite isinf isnan linspace log log1p logaddexp matmul
max maximum mean min minimum multiply ones ones_like outer prod ravel reshape sign sort sqrt square
stack sum take tanh trace transpose tril triu vdot where zeros zeros_like
""".split()
_LINALG = "cholesky eigh eigvalsh norm solve".split()
_PASSTHROUGH = """
bool_ complex64 complex128 dtype e euler_gamma finfo float16 float32 float64 iinfo inf int8 int16
int32 int64 integer floating nan newaxis pi result_type uint8 uint32 uint64
""".split()


class _Linalg(_Functions):
    def __init__(self, errors):
        super().__init__(numpy.linalg, _LINALG, "linalg.")
        self._errors = errors

    def cholesky(self, a):
        # CuPy reads cuSOLVER's status (a synchronisation) only under errstate(linalg="raise").
        if self._errors["linalg"] == "raise":
            _sync()
            return _call(numpy.linalg.cholesky, (a,), {})
        try:
            return _call(numpy.linalg.cholesky, (a,), {})
        except numpy.linalg.LinAlgError:
            return _call(numpy.full_like, (a, numpy.nan), {})


class _Stream:
    ptr = 0

    def synchronize(self):
        _sync()


class _Cuda:
    @staticmethod
    def get_current_stream():
        return _Stream()

    @staticmethod
    def is_available():
        return True


class _Namespace(_Functions):
    """The stand-in's ``cupy`` namespace."""

    __name__ = "fgn_arrays.testing.standin"
    ndarray = DeviceArray

    def __init__(self, simulate_max_entries):
        super().__init__(numpy, _FUNCTIONS, "")
        self.counts = _COUNTS
        self.cuda = _Cuda()
        self._errors = {"linalg": "ignore"}
        self.linalg = _Linalg(self._errors)
        self.xpx = _Cupyx(self._errors)
        self.kernels = _Kernels(simulate_max_entries)
        for name in _PASSTHROUGH:
            setattr(self, name, getattr(numpy, name))

    def asarray(self, a, dtype=None, order=None):
        """A device array: a host-to-device copy of a NumPy array, or ``a`` itself (cast if asked)."""
        if isinstance(a, DeviceArray):
            return _call(numpy.asarray, (a,), dict(dtype=dtype, order=order))
        host = numpy.array(a, dtype=dtype, order=order or "K", copy=True)
        _COUNTS.launch("asarray (host to device)")
        _COUNTS.allocations.append((host.shape, host.dtype))
        return DeviceArray(host)


class _Cupyx:
    """The stand-in's ``cupyx``: ``errstate(linalg=...)`` and ``scipy.linalg.solve_triangular``."""

    def __init__(self, errors):
        import scipy.linalg

        self._errors = errors
        self.scipy = type("scipy", (), {})()
        self.scipy.linalg = _Functions(scipy.linalg, ["solve_triangular"], "scipy.linalg.")

    @contextlib.contextmanager
    def errstate(self, *, linalg=None):
        previous = self._errors["linalg"]
        if linalg is not None:
            self._errors["linalg"] = linalg
        try:
            yield
        finally:
            self._errors["linalg"] = previous


class _Kernels:
    """The stand-in's fused kernels: Numba CUDA under the simulator at tiny sizes, else the CPU twin. One launch each."""

    def __init__(self, simulate_max_entries):
        self.simulate_max_entries = simulate_max_entries

    def __getattr__(self, name):
        from .kernels import cpu

        twin = getattr(cpu, name)

        def launch(*args):
            raw = _unwrap(args)
            first = next(a for a in raw if isinstance(a, numpy.ndarray))
            if _simulating() and first.size <= self.simulate_max_entries:
                from .kernels import cuda

                # its launch is sized for the simulator (kernels.cuda: MIN_BLOCKS, CG_BLOCKS)
                getattr(cuda, name)(*raw)
            else:
                twin(*raw)
            _COUNTS.launch(f"kernel {name}")

        return launch


def _simulating() -> bool:
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


@contextlib.contextmanager
def use_standin(*, simulate_max_entries=0):
    """Register the CuPy stand-in as the GPU backend for the ``with`` block; yield its namespace.

    Parameters
    ----------
    simulate_max_entries : int, default 0
        Largest first array argument of a Numba CUDA kernel run under the
        CUDA simulator (when ``NUMBA_ENABLE_CUDASIM=1``); larger launches run
        the kernel's CPU twin. ``0``, the default, always runs the CPU twins
        (fast); the tests of the GPU launch code ask for a few dozen.

    Yields
    ------
    sx : namespace
        CuPy's API on :class:`DeviceArray`; ``sx.counts`` is the
        :class:`Counts` of the block, reset on entry.

    Examples
    --------
    >>> import numpy as np, fgn_arrays as fa
    >>> from fgn_arrays.testing import use_standin
    >>> with use_standin() as sx:
    ...     st = fa.margin_stats(sx.asarray(np.zeros((2, 3))), sx.asarray(np.array([0, 2])))
    ...     type(st.loss).__name__, round(float(st.loss[0]), 6)
    ('DeviceArray', 1.098612)
    """
    sx = _Namespace(simulate_max_entries)
    backend = _backend.GPUBackend(
        xp=sx,
        xpx=sx.xpx,
        kernels=sx.kernels,
        is_array=lambda x: isinstance(x, DeviceArray),
        available=lambda: True,
    )
    previous = _backend._registered
    _backend.set_gpu_backend(backend)
    _COUNTS.reset()
    try:
        yield sx
    finally:
        _backend.set_gpu_backend(previous)
