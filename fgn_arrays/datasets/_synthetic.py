"""Synthetic softmax-head problems whose competitor mass is spread or concentrated."""

from __future__ import annotations

import math
import numbers

import numpy

from .._validation import check_dtype, check_positive_int

#: Within-group correlation of class vectors at ``competitor_concentration=1``.
_MAX_CORRELATION = 0.9
#: Standard deviation of the within-class noise, relative to a class mean's norm.
_NOISE = 0.5
#: Upper bound on the number of logits held at once while sampling labels.
_CHUNK_ELEMENTS = 1 << 20


def _check_concentration(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`competitor_concentration` must be a real number; got {type(value).__name__} {value!r}."
        )
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"`competitor_concentration` must be within [0, 1]; got {value}.")
    return value


def _confuser_groups(rng: numpy.random.Generator, n_classes: int) -> numpy.ndarray:
    """Group index of each class: random pairs, one triple when ``n_classes`` is odd."""
    n_groups = n_classes // 2
    order = rng.permutation(n_classes)
    group_of = numpy.empty(n_classes, dtype=numpy.intp)
    group_of[order] = numpy.minimum(numpy.arange(n_classes) // 2, n_groups - 1)
    return group_of


def make_heads_problem(
    n_samples,
    n_features,
    n_classes,
    competitor_concentration=1.0,
    seed=0,
    *,
    dtype="float64",
):
    """A synthetic softmax-head problem with controllable competitor structure.

    For scaling studies of softmax-head solvers: the sizes are free, and
    ``competitor_concentration`` sets whether, for a typical example, the
    probability mass that does not fall on the labelled class (the competitor
    mass) is spread over all the other classes or sits on one or two
    "confuser" classes.

    The generative model, with ``N = n_samples``, ``d = n_features``,
    ``C = n_classes`` and ``rho = competitor_concentration``:

    1. The classes are split at random into confuser groups: pairs, plus one
       triple when ``C`` is odd.
    2. Class means ``M[k] = sqrt(r) * G[group(k)] + sqrt(1 - r) * U[k]`` with
       ``r = 0.9 * rho`` and all entries of ``G`` and ``U`` independent
       ``Normal(0, 1/d)``. So ``E|M[k]|^2 = 1``, two classes of the same
       group have mean correlation ``r``, and classes of different groups are
       uncorrelated.
    3. ``W_true = tau * M`` with ``tau = log(3 * (C - 1))``.
    4. Each example draws a latent class ``c`` uniformly and
       ``x = M[c] + e`` with ``e ~ Normal(0, 0.25 / d * I)``.
    5. Its label is drawn from ``softmax(W_true @ x)``, so the labels carry
       noise: they need not equal ``c``.

    The logit of class ``j`` is ``tau * M[j] . x``, about ``tau`` for the
    latent class, about ``r * tau`` for its confusers and about 0 (with
    spread ``tau / sqrt(d)``) for every other class. Hence:

    * ``rho = 0``: no confusers; the competitor mass of an example is spread
      evenly, up to that random spread, over all ``C - 1`` other classes,
      and about 3/4 of the labels equal the latent class when ``d`` is
      large.
    * ``rho = 1``: each class's one (or two) group partners get logits close
      to its own, ``e^(0.9 tau)`` against ``e^0`` for the rest, so most of
      the competitor mass is on them; more labels fall on a partner.
    * values in between interpolate. For a fixed ``seed`` the same random
      draws are used whatever ``rho``, so only the correlation changes.

    The picture is exact as ``d`` grows; with few features (``d`` well below
    ``C``) chance overlaps between class means add spread of their own.

    Parameters
    ----------
    n_samples : int
        Number of examples ``N``, at least 1.
    n_features : int
        Number of features ``d``, at least 1.
    n_classes : int
        Number of classes ``C``, at least 2.
    competitor_concentration : float, default 1.0
        ``rho`` in ``[0, 1]``, as described above.
    seed : int or None, default 0
        Seed of :func:`numpy.random.default_rng`. The same seed gives the same
        arrays; ``W_true`` does not depend on ``n_samples``.
    dtype : {"float64", "float32"}, default "float64"
        Floating type of ``X`` and ``W_true`` (all sampling is done in
        float64, so the labels do not depend on it).

    Returns
    -------
    X : numpy.ndarray, shape (N, d)
        Features.
    y : numpy.ndarray of int64, shape (N,)
        Labels in ``0 .. C-1``, drawn from ``softmax(X @ W_true.T)``.
    W_true : numpy.ndarray, shape (C, d)
        The weights of the head that generated the labels.

    Raises
    ------
    ValueError
        If ``n_samples < 1``, ``n_features < 1``, ``n_classes < 2`` or
        ``competitor_concentration`` is outside ``[0, 1]``.
    TypeError
        If a size is not an integer, ``competitor_concentration`` is not a
        real number, or ``dtype`` is not float32 or float64.

    Examples
    --------
    >>> from fgn_arrays.datasets import make_heads_problem
    >>> X, y, W = make_heads_problem(1000, 32, 100, competitor_concentration=0.0)
    >>> X.shape, y.shape, W.shape
    ((1000, 32), (1000,), (100, 32))
    """
    n = check_positive_int(n_samples, "n_samples", 1)
    d = check_positive_int(n_features, "n_features", 1)
    n_cls = check_positive_int(n_classes, "n_classes", 2)
    rho = _check_concentration(competitor_concentration)
    dt = check_dtype(dtype)

    rng = numpy.random.default_rng(seed)
    # Drawn first, and in the same order whatever rho, so that W_true depends
    # only on (n_features, n_classes, rho, seed).
    group_of = _confuser_groups(rng, n_cls)
    scale = 1.0 / math.sqrt(d)
    G = rng.standard_normal((n_cls // 2, d)) * scale
    U = rng.standard_normal((n_cls, d)) * scale
    r = _MAX_CORRELATION * rho
    means = math.sqrt(r) * G[group_of] + math.sqrt(1.0 - r) * U
    tau = math.log(3.0 * (n_cls - 1))
    W = tau * means

    latent = rng.integers(0, n_cls, size=n)
    X = means[latent] + (_NOISE * scale) * rng.standard_normal((n, d))

    # Labels from softmax(X W^T) by inverting each row's CDF, in row chunks.
    y = numpy.empty(n, dtype=numpy.int64)
    chunk = max(1, _CHUNK_ELEMENTS // n_cls)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        cdf = X[start:stop] @ W.T
        cdf -= cdf.max(axis=1, keepdims=True)
        numpy.exp(cdf, out=cdf)
        numpy.cumsum(cdf, axis=1, out=cdf)
        u = rng.random(stop - start) * cdf[:, -1]
        cdf[:, -1] = numpy.inf  # u < total, but guard the last class against rounding
        y[start:stop] = numpy.argmax(cdf > u[:, None], axis=1)

    return X.astype(dt, copy=False), y, W.astype(dt, copy=False)
