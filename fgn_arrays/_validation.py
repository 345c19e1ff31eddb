"""The only place public inputs are checked.

Every check names the argument and shows what arrived. Values and shapes
raise ``ValueError``; types and backends raise ``TypeError``. Checks run once,
at the public boundary; internal helpers trust their inputs. Each array
argument first goes through :func:`fgn_arrays._backend.as_array`, so that
DLPack producers (JAX, torch) are read without a copy wherever an array is
accepted.
"""

from __future__ import annotations

import math
import numbers

import numpy

from ._backend import as_array, as_arrays, get_namespace, to_numpy

FLOAT_DTYPES = (numpy.dtype("float32"), numpy.dtype("float64"))


def _shape_text(x) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ("," if x.ndim == 1 else "") + ")"


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
    return int(value)


def check_nonneg_scalar(value, name: str) -> float:
    """``value`` as a finite float >= 0 (damping, l2, tolerances)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be finite and >= 0; got {value}.")
    return value


def check_rtol(value, name: str = "rtol") -> float:
    """``value`` as a float in ``[0, 1)``: a relative tolerance of a step (1 would accept ``delta = 0``)."""
    value = check_nonneg_scalar(value, name)
    if value >= 1:
        raise ValueError(f"`{name}` must be in [0, 1); got {value}.")
    return value


def check_dtype(dtype, name: str = "dtype", allowed=FLOAT_DTYPES) -> numpy.dtype:
    """``dtype`` as one of ``allowed`` (float32 or float64 by default)."""
    names = ", ".join(f"'{d.name}'" for d in allowed[:-1]) + f" or '{allowed[-1].name}'"
    try:
        dt = numpy.dtype(dtype)
    except TypeError:
        raise TypeError(f"`{name}` must be {names}; got {dtype!r}.") from None
    if dt not in allowed:
        raise TypeError(f"`{name}` must be {names}; got {dt.name}.")
    return dt


def _as_float(xp, x, name: str, dtype=None):
    """``x`` as float32/float64; integers become float64 (or ``dtype`` when given)."""
    if x.dtype.kind == "b" or x.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must hold real numbers; got dtype {x.dtype}.")
    if dtype is not None:
        return xp.ascontiguousarray(x, dtype=dtype)
    if x.dtype in FLOAT_DTYPES:
        return xp.ascontiguousarray(x)
    if x.dtype.kind == "f":
        raise TypeError(f"`{name}` must be float32 or float64; got {x.dtype}.")
    return xp.ascontiguousarray(x, dtype=xp.float64)


def _check_finite(xp, x, name: str) -> None:
    if not bool(xp.isfinite(x).all()):
        n_bad = int((~xp.isfinite(x)).sum())
        raise ValueError(f"`{name}` must be finite; got {n_bad} NaN or infinite entries.")


def check_labels(xp, labels, n_samples: int, n_classes: int, name: str = "labels"):
    """``labels`` as a contiguous int64 ``(N,)`` array in ``[0, n_classes)``."""
    if labels.dtype.kind not in "iu" or labels.dtype.kind == "b":
        raise TypeError(f"`{name}` must be integers; got dtype {labels.dtype}.")
    if labels.ndim != 1 or labels.shape[0] != n_samples:
        raise ValueError(f"`{name}` must have shape ({n_samples},); got {_shape_text(labels)}.")
    if n_samples:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0:
            raise ValueError(f"`{name}` must be integers in [0, {n_classes}); got min {lo}.")
        if hi >= n_classes:
            raise ValueError(f"`{name}` must be integers in [0, {n_classes}); got max {hi}.")
    return xp.ascontiguousarray(labels, dtype=xp.int64)


def check_logits_labels(logits, labels):
    """Validate ``(logits, labels)``; return ``(xp, Z, y)``."""
    logits, labels = as_arrays(logits, labels, names=("logits", "labels"))
    xp = get_namespace(logits, labels, names=("logits", "labels"))
    if logits.ndim != 2:
        raise ValueError(f"`logits` must be 2-D (n_samples, n_classes); got shape {_shape_text(logits)}.")
    n_samples, n_classes = logits.shape
    if n_classes < 2:
        raise ValueError(f"`logits` must have n_classes >= 2 columns; got {n_classes}.")
    Z = _as_float(xp, logits, "logits")
    _check_finite(xp, Z, "logits")
    y = check_labels(xp, labels, n_samples, n_classes)
    return xp, Z, y


def check_batch(theta, X, y, n_params: int, n_features: int, n_classes: int):
    """Validate a head's ``(theta, X, y)``; return ``(xp, theta, X, y)``.

    The compute dtype is ``theta``'s; ``X`` is cast to it when it differs.
    ``n_features=None`` (a model given by callables, :class:`fgn_arrays.CallableHead`)
    takes any ``X`` with at least one row, on the backend of ``theta``, as it is.
    """
    theta, X, y = as_arrays(theta, X, y, names=("theta", "X", "y"))
    xp = get_namespace(theta, X, y, names=("theta", "X", "y"))
    theta = check_theta(xp, theta, n_params)
    if n_features is None:
        X = check_rows(X)
    else:
        X = check_features(xp, X, n_features, theta.dtype)
    if y is not None:
        y = check_labels(xp, y, X.shape[0], n_classes, name="y")
    return xp, theta, X, y


def check_sample_weight(xp, sample_weight, n_samples: int, dtype):
    """``sample_weight`` as a finite, non-negative ``(N,)`` array of ``dtype`` with a positive sum; ``None`` stays ``None``.

    It lives on the batch's backend (``xp``), as ``X`` and ``y`` do.
    """
    if sample_weight is None:
        return None
    name = "sample_weight"
    sample_weight = as_array(sample_weight, name)
    if get_namespace(sample_weight, names=(name,)) is not xp:
        raise TypeError(f"`{name}` must live on the backend of `theta` and `X` ({xp.__name__}).")
    if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
        raise ValueError(f"`{name}` must have shape ({n_samples},); got {_shape_text(sample_weight)}.")
    sw = _as_float(xp, sample_weight, name, dtype=numpy.float64)
    _check_finite(xp, sw, name)
    lo, total = (float(v) for v in (sw.min(), sw.sum()))
    if lo < 0:
        raise ValueError(f"`{name}` must be >= 0; got min {lo}.")
    if not total > 0:
        raise ValueError(f"`{name}` must have a positive sum; got {total}.")
    return xp.ascontiguousarray(sw, dtype=dtype)


def check_theta(xp, theta, n_params: int):
    """``theta`` as a finite float ``(P,)`` array."""
    if theta.ndim != 1 or theta.shape[0] != n_params:
        raise ValueError(f"`theta` must have shape ({n_params},); got {_shape_text(theta)}.")
    theta = _as_float(xp, theta, "theta")
    _check_finite(xp, theta, "theta")
    return theta


def check_features(xp, X, n_features: int, dtype):
    """``X`` as a finite ``(N, D)`` array of ``dtype``."""
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"`X` must have shape (n_samples, {n_features}); got {_shape_text(X)}.")
    if X.shape[0] < 1:
        raise ValueError("`X` must have at least one row; got 0.")
    X = _as_float(xp, X, "X", dtype=dtype)
    _check_finite(xp, X, "X")
    return X


def check_vector(xp, v, shape: tuple, dtype, name: str):
    """A product's input: same backend, the expected shape, cast to ``dtype``.

    No finiteness check: this runs inside solver loops, where it would force a
    host synchronisation on the GPU.
    """
    v = as_array(v, name)
    if get_namespace(v, names=(name,)) is not xp or not hasattr(v, "shape"):
        raise TypeError(
            f"`{name}` must be a {xp.__name__} array, like the arrays it is applied to; got "
            f"{type(v).__module__}.{type(v).__name__}."
        )
    if tuple(v.shape) != tuple(shape):
        expected = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"`{name}` must have shape {expected}; got {_shape_text(v)}.")
    if v.dtype.kind not in "iuf" or v.dtype.kind == "b":
        raise TypeError(f"`{name}` must hold real numbers; got dtype {v.dtype}.")
    return xp.ascontiguousarray(v, dtype=dtype)


def check_rows(X, name: str = "X"):
    """``X`` of a model given by callables: any array with at least one row (``ndim >= 1``), as it is."""
    if X.ndim < 1 or X.shape[0] < 1:
        raise ValueError(f"`{name}` must have at least one row; got shape {_shape_text(X) if X.ndim else '()'}.")
    return X


def check_callable(fn, name: str):
    """``fn``, which must be callable."""
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable; got {type(fn).__module__}.{type(fn).__name__}.")
    return fn


def check_output(xp, out, shape, dtype, name: str, *, finite: bool):
    """The output of a user's callable ``name``: an array of ``xp``, of ``shape`` and ``dtype`` exactly.

    ``name`` describes the callable in the messages (e.g. ``"`logits_jvp`"``).
    The output is converted by :func:`fgn_arrays._backend.as_array` (DLPack
    producers are read without a copy) and made C-contiguous (no copy when
    it is). A ``None`` in ``shape`` accepts any length there. The backend,
    shape and dtype are metadata (no synchronisation); ``finite=True`` also
    checks finiteness, one host synchronisation on the GPU, so callers ask
    for it once (on a callable's first call), not inside solver loops.
    """
    what = f"{name} returned"
    try:
        out = as_array(out, "output")
    except TypeError:
        raise TypeError(
            f"{what} {type(out).__module__}.{type(out).__name__}; expected a NumPy or CuPy array, or an "
            "array that supports DLPack (JAX, torch, ...)."
        ) from None
    out_xp = get_namespace(out)
    if out_xp is not xp:
        raise TypeError(f"{what} a {out_xp.__name__} array; the linearization is on {xp.__name__}.")
    if not hasattr(out, "ndim"):
        raise TypeError(f"{what} a scalar {out!r}; expected an array.")
    expected = "(" + ", ".join("P" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    if out.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, out.shape)):
        raise ValueError(f"{what} shape {_shape_text(out)}; expected {expected}.")
    if out.dtype != dtype:
        raise TypeError(f"{what} dtype {out.dtype}; expected {numpy.dtype(dtype).name}, the linearization's dtype.")
    out = xp.ascontiguousarray(out)
    if finite and not bool(xp.isfinite(out).all()):
        n_bad = int((~xp.isfinite(out)).sum())
        raise ValueError(f"{what} {n_bad} NaN or infinite entries.")
    return out


def check_weight_mask(weight_mask, n_params):
    """``weight_mask`` as a host NumPy float64 ``(P,)`` array of 0s and 1s (``n_params=None``: any length).

    Returns ``(mask, has_weights, has_biases)``: whether it has ones, and zeros.
    """
    name = "weight_mask"
    mask = as_array(weight_mask, name)
    get_namespace(mask, names=(name,))
    if getattr(mask, "ndim", 0) != 1 or (n_params is not None and mask.shape[0] != n_params):
        expected = f"({n_params},)" if n_params is not None else "(P,)"
        got = _shape_text(mask) if hasattr(mask, "shape") else repr(mask)
        raise ValueError(f"`{name}` must have shape {expected}; got {got}.")
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold 0s and 1s (bool or numbers); got dtype {mask.dtype}.")
    host = to_numpy(mask).astype(numpy.float64)
    bad = ~((host == 0) | (host == 1))
    if bad.any():
        raise ValueError(
            f"`{name}` must hold only 0s and 1s; got {float(host[bad][0])} ({int(bad.sum())} entries not 0 or 1)."
        )
    return host, bool(host.any()), bool((host == 0).any())
