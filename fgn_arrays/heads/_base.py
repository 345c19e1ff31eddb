"""What every head and every linearization share.

Conventions
-----------
``theta`` is a flat ``(P,)`` vector, the head's parameter blocks concatenated
in row-major order. A :class:`Linearization` caches the forward pass at
``(theta, X, y)``; its products are with the per-example *margin* Jacobian
``J (N, P)`` (``J_i = d m_i / d theta``) and the *logit* Jacobian
``Jz (N, C, P)``, never formed. Sums over examples are plain sums: the
weights of the mean loss (``1/N``, or ``s_i / sum_j s_j`` with sample
weights) are applied by the callers (``grad``, curvature) through
:meth:`Linearization._mean_rows`.

A head subclass implements ``_init_scales``, ``_logits`` and
``_linearization``; its Linearization subclass implements ``_logits_jvp``,
``_logits_vjp``, ``_margin_gram``, ``_margin_gram_diag`` and ``_cost_flops``,
and may override ``_margin_jvp``/``_margin_vjp`` with a cheaper contraction.
Solvers use only the methods defined here, so they never ask which head they
were given.
"""

from __future__ import annotations

import functools

import numpy

from .. import kernels
from .._backend import get_namespace, namespace_for_device
from .._validation import (
    check_batch,
    check_dtype,
    check_nonneg_scalar,
    check_positive_int,
    check_sample_weight,
    check_vector,
)
from ..margin import MarginStats, _margin_stats


class Head:
    """Base class of the heads: parameter layout, validation and the shared API.

    Subclasses set ``n_features``, ``n_classes`` and ``shapes`` (the parameter
    blocks in layout order) and ``is_weight`` (which blocks the ``l2`` penalty
    covers), and implement ``_logits`` and ``_linearization``.
    """

    shapes: tuple
    is_weight: tuple
    # Whether the logits are affine in theta, Z(theta + s) = Z(theta) + Jz s, so
    # that a trial point's logits follow from the step's logit image (no forward pass).
    _affine_logits = False

    @property
    def n_params(self) -> int:
        """Length ``P`` of the flat parameter vector."""
        return sum(int(numpy.prod(s)) for s in self.shapes)

    def _offsets(self):
        bounds = numpy.cumsum([0] + [int(numpy.prod(s)) for s in self.shapes])
        return list(zip(bounds[:-1], bounds[1:]))

    def unflatten(self, theta):
        """Views of ``theta`` as the parameter blocks, in layout order (no copies)."""
        if getattr(theta, "ndim", None) != 1 or theta.shape[0] != self.n_params:
            shape = getattr(theta, "shape", type(theta).__name__)
            raise ValueError(f"`theta` must have shape ({self.n_params},); got {shape}.")
        return tuple(theta[a:b].reshape(shape) for (a, b), shape in zip(self._offsets(), self.shapes))

    def flatten(self, *parts):
        """Concatenate parameter blocks (layout order) into a new flat ``(P,)`` vector."""
        if len(parts) != len(self.shapes):
            raise ValueError(f"flatten takes {len(self.shapes)} blocks; got {len(parts)}.")
        for i, (part, shape) in enumerate(zip(parts, self.shapes)):
            if tuple(part.shape) != tuple(shape):
                raise ValueError(f"block {i} must have shape {tuple(shape)}; got {tuple(part.shape)}.")
        xp = get_namespace(*parts)
        return xp.concatenate([xp.ravel(p) for p in parts])

    def weight_mask(self, xp=numpy, dtype=numpy.float64):
        """``(P,)`` 0/1 mask of the weights (the entries that ``l2`` penalises)."""
        mask = xp.zeros(self.n_params, dtype=dtype)
        for (a, b), weight in zip(self._offsets(), self.is_weight):
            if weight:
                mask[a:b] = 1
        return mask

    def init_params(self, seed=0, dtype="float32", device="cpu"):
        """Seeded initial ``theta``: scaled random weights, zero biases.

        Parameters
        ----------
        seed : int or None
            Seed of ``numpy.random.default_rng``; same seed, same ``theta``.
        dtype : {"float32", "float64"}
        device : {"cpu", "gpu"}

        Returns
        -------
        theta : array, shape (P,)
        """
        dt = check_dtype(dtype)
        xp = namespace_for_device(device)
        rng = numpy.random.default_rng(seed)
        blocks = [
            rng.normal(0.0, scale, size=shape) if weight else numpy.zeros(shape)
            for shape, weight, scale in zip(self.shapes, self.is_weight, self._init_scales())
        ]
        theta = numpy.concatenate([numpy.ravel(b) for b in blocks]).astype(dt)
        return xp.asarray(theta)

    def _init_scales(self):  # pragma: no cover - abstract
        """Standard deviation of each block's initial values, in layout order."""
        raise NotImplementedError

    def _logits(self, xp, theta, X):  # pragma: no cover - abstract
        """``(Z, cache)``: the logits and what the linearization reuses."""
        raise NotImplementedError

    def _linearization(self, xp, theta, X, y, Z, cache):  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, theta, X):
        """Logits ``Z (N, C)`` at ``theta`` for features ``X (N, D)``."""
        xp, theta, X, _ = check_batch(theta, X, None, self.n_params, self.n_features, self.n_classes)
        return self._logits(xp, theta, X)[0]

    def linearize(self, theta, X, y, sample_weight=None):
        """Cache the forward pass at ``(theta, X, y)`` and return its :class:`Linearization`.

        Parameters
        ----------
        theta : array, shape (P,)
            Float32 or float64; fixes the compute dtype (``X`` is cast to it).
        X : array, shape (N, D)
        y : array of int, shape (N,)
            Labels in ``[0, C)``.
        sample_weight : array, shape (N,), optional
            Weights ``s_i >= 0`` with a positive sum, on the backend of
            ``X``: the loss becomes ``sum_i s_i loss_i / sum_i s_i`` and the
            curvature weights ``s_i w_i / sum_i s_i``. ``None``: the mean.
        """
        xp, theta, X, y = check_batch(theta, X, y, self.n_params, self.n_features, self.n_classes)
        sample_weight = check_sample_weight(xp, sample_weight, X.shape[0], theta.dtype)
        return self._linearize(xp, theta, X, y, sample_weight)

    def _linearize(self, xp, theta, X, y, sample_weight=None):
        # linearize on inputs already checked (solver loops: no pass over X per call)
        Z, cache = self._logits(xp, theta, X)
        lin = self._linearization(xp, theta, X, y, Z, cache)
        lin.sample_weight = sample_weight
        return lin


def _check_counts(n_features, n_classes):
    n_features = check_positive_int(n_features, "n_features")
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    return n_features, n_classes


class Linearization:
    """The forward pass of a head cached at ``(theta, X, y)``, with its Jacobian products.

    Attributes
    ----------
    head : Head
    theta : array, shape (P,)
    X : array, shape (N, D)
    y : array of int64, shape (N,)
    logits : array, shape (N, C)
    stats : MarginStats
    U : array, shape (N, C)
        ``u_i = e_{y_i} - q_i = d m_i / d Z_i``.
    sample_weight : array, shape (N,), or None
        The rows' weights ``s_i`` in the loss (``None``: all equal).
    """

    sample_weight = None
    # The batch's rows (and per-row caches) are arrays in memory; False for the stand-in of a
    # Dask batch (fgn_arrays._dask.DaskLinearization), whose whole-batch sums come from passes.
    _in_memory = True

    def __init__(self, head, xp, theta, X, y, Z):
        self.head = head
        self.xp = xp
        self.theta = theta
        self.X = X
        self.y = y
        self.logits = Z
        # One fused pass: margin statistics and u_i = e_{y_i} - q_i.
        self.stats, self.U = _margin_stats(xp, Z, y, competitors="direction")

    def _take(self, rows):
        """The linearization on a subset of the rows (an integer index array), without a new forward pass.

        Row-wise caches are indexed; the cached properties (gradient,
        residual, ...) are left to be computed on the subset.
        """
        new = object.__new__(type(self))
        new.head, new.xp, new.theta = self.head, self.xp, self.theta
        new.sample_weight = None if self.sample_weight is None else self.sample_weight[rows]
        new.X, new.y, new.logits, new.U = self.X[rows], self.y[rows], self.logits[rows], self.U[rows]
        st = self.stats
        new.stats = MarginStats(st.margin[rows], st.loss[rows], st.prob_true[rows], st.lse_rest[rows])
        self._take_cache(new, rows)
        return new

    def _take_cache(self, new, rows):
        """Copy a subclass's own row-wise forward caches onto ``new`` (see :meth:`_take`)."""

    def _at(self, theta, logits=None):
        """The linearization at ``theta`` on the same rows and sample weights.

        ``logits``, when given, are the logits at ``theta`` (an affine head's
        trial point): no forward pass, and no forward caches.
        """
        if logits is None:
            return self.head._linearize(self.xp, theta, self.X, self.y, self.sample_weight)
        new = self.head._linearization(self.xp, theta, self.X, self.y, logits, None)
        new.sample_weight = self.sample_weight
        return new

    @functools.cached_property
    def mean_weights(self):
        """``c_i = s_i / sum_j s_j``, the rows' weights in the loss, shape (N,); ``None`` for ``1/N``."""
        if self.sample_weight is None:
            return None
        xp = self.xp
        total = xp.sum(self.sample_weight, dtype=xp.float64)
        return (self.sample_weight / total).astype(self.dtype)

    def _mean_rows(self, a):
        """``a`` (shape ``(N, ...)``) with each row times its weight in the loss: ``a / N``, or ``c_i a_i``."""
        c = self.mean_weights
        if c is None:
            return a / self.dtype.type(self.n_samples)
        return a * c.reshape((-1,) + (1,) * (a.ndim - 1))

    def _mean_vjp(self, vjp, a):
        """``vjp`` of ``a``'s rows weighted as in the loss: ``vjp(a) / N`` (one scaling of ``(P,)``), or ``vjp(c ⊙ a)``."""
        if self.sample_weight is None:
            return vjp(a) / self.dtype.type(self.n_samples)
        return vjp(self._mean_rows(a))

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.theta.shape[0]

    @property
    def dtype(self):
        return self.theta.dtype

    # ---- per-example scalars of the margin loss --------------------------------

    @functools.cached_property
    def residual(self):
        """``r_i = d loss_i / d m_i = -(1 - p_i) = -sigmoid(-m_i)``, shape (N,)."""
        xp = self.xp
        # 1 - p = sigmoid(-m) = exp(-softplus(m)): no cancellation when p -> 1.
        return -xp.exp(-xp.logaddexp(0, self.stats.margin))

    @functools.cached_property
    def curvature_weights(self):
        """``w_i = p_i (1 - p_i) = d^2 loss_i / d m_i^2``, shape (N,); underflows to 0, never divided by."""
        xp = self.xp
        m = self.stats.margin
        # log w = -softplus(-m) - softplus(m)
        return xp.exp(-xp.logaddexp(0, -m) - xp.logaddexp(0, m))

    @functools.cached_property
    def competitor_probs(self):
        """``q_i``, the softmax over the competitors (zero at the label), shape (N, C)."""
        Q = -self.U
        Q[self.xp.arange(self.n_samples), self.y] = 0
        return Q

    @functools.cached_property
    def softmax(self):
        """``softmax(Z)``, shape (N, C), from the cached logsumexp: ``lse_all = lse_rest + softplus(m)``."""
        xp = self.xp
        lse_all = self.stats.lse_rest + xp.logaddexp(0, self.stats.margin)
        return xp.exp(self.logits - lse_all[:, None])

    @functools.cached_property
    def weight_mask(self):
        """``(P,)`` 0/1 mask of the weights in ``theta`` (what ``l2`` penalises)."""
        return self.head.weight_mask(self.xp, self.dtype)

    @functools.cached_property
    def loss(self) -> float:
        """Mean softmax cross-entropy, weighted by ``sample_weight`` when given (a Python float)."""
        return float(self._mean_loss)

    @functools.cached_property
    def _mean_loss(self):
        """Mean softmax cross-entropy (weighted) as a 0-d float64 array, left on the device."""
        xp, s = self.xp, self.sample_weight
        if s is None:
            return xp.mean(self.stats.loss, dtype=xp.float64)
        s64 = s.astype(xp.float64)
        return xp.dot(s64, self.stats.loss.astype(xp.float64)) / xp.sum(s64)

    @functools.cached_property
    def grad(self):
        """Gradient of the mean (weighted) cross-entropy, ``J^T (c ⊙ r)`` (``c_i = 1/N``), shape (P,)."""
        return self._mean_vjp(self._margin_vjp, self.residual)

    # ---- public products (checked), then the unchecked ones solvers call ------

    def margin_jvp(self, v):
        """``J v``: ``(P,) -> (N,)``, the directional derivative of the margins."""
        return self._margin_jvp(self._vec(v, (self.n_params,), "v"))

    def margin_vjp(self, a):
        """``J^T a``: ``(N,) -> (P,)``."""
        return self._margin_vjp(self._vec(a, (self.n_samples,), "a"))

    def logits_jvp(self, v):
        """``Jz v``: ``(P,) -> (N, C)``, the directional derivative of the logits."""
        return self._logits_jvp(self._vec(v, (self.n_params,), "v"))

    def logits_vjp(self, A):
        """``Jz^T A``: ``(N, C) -> (P,)``."""
        return self._logits_vjp(self._vec(A, self.logits.shape, "A"))

    def margin_gram(self, weight_scale=1.0, bias_scale=1.0):
        """Row-space Gram matrix ``J D J^T``, shape (N, N), in closed form.

        ``D`` is diagonal: ``weight_scale`` on the weight entries of ``theta``,
        ``bias_scale`` on the biases. The defaults give ``J J^T``. It is built
        from Hadamard products of ``N x N`` Gram matrices, never through
        parameter space.
        """
        ws = check_nonneg_scalar(weight_scale, "weight_scale")
        bs = check_nonneg_scalar(bias_scale, "bias_scale")
        return self._margin_gram(ws, bs)

    def margin_gram_diag(self, weight_scale=1.0, bias_scale=1.0):
        """Diagonal of :meth:`margin_gram`, shape (N,): row norms of ``J``, one pass per layer."""
        ws = check_nonneg_scalar(weight_scale, "weight_scale")
        bs = check_nonneg_scalar(bias_scale, "bias_scale")
        return self._margin_gram_diag(ws, bs)

    def cost_flops(self):
        """Floating-point operation counts for choosing a solver.

        Returns
        -------
        dict
            ``"product"``: one margin JVP plus one margin VJP (a matrix-free CG
            iteration); ``"gram"``: building :meth:`margin_gram`.
        """
        return self._cost_flops()

    def _vec(self, v, shape, name):
        return check_vector(self.xp, v, shape, self.dtype, name)

    def _margin_jvp(self, v):
        # (J v)_i = u_i . (Jz_i v)
        return kernels.row_dot(self.xp, self.U, self._logits_jvp(v))

    def _margin_vjp(self, a):
        # J^T a = Jz^T (a_i u_i)_i
        return self._logits_vjp(kernels.scale_rows(self.xp, self.U, a))

    def _logits_jvp(self, v):  # pragma: no cover - abstract
        raise NotImplementedError

    def _logits_vjp(self, A):  # pragma: no cover - abstract
        raise NotImplementedError

    def _margin_gram(self, weight_scale, bias_scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def _margin_gram_diag(self, weight_scale, bias_scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def _cost_flops(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _output_layer(self):  # pragma: no cover - abstract
        """``(F, offset)``: the output layer is ``Z = F W^T + b``, ``F (N, F_dim)``,
        with ``[W (C, F_dim), b (C)]`` at ``theta[offset:]`` (the last block)."""
        raise NotImplementedError

    def _hidden_gram_diag(self, weight_scale, bias_scale):  # pragma: no cover - abstract
        """The part of :meth:`margin_gram_diag` from the parameters before the output layer, shape (N,)."""
        raise NotImplementedError
