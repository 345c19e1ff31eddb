"""Fitting on Dask arrays: the batch stays in its chunks, on the workers; the steps are solved on the client.

Conventions
-----------
``X (N, D)``, ``y (N,)`` and ``sample_weight (N,)`` are ``dask.array`` arrays
chunked by rows (any row chunks, ragged or of one row; the feature axis is
made one chunk), with NumPy chunks, or CuPy chunks for a fit whose
``theta0`` is a CuPy array (the chunks' backend must be ``theta0``'s;
labels and weights may have either). :class:`DaskBatch` checks them once
(one pass over ``y``, the weights and the finiteness of ``X``) and
:class:`DaskLinearization` stands in for a head's linearization of the whole
batch at one ``theta`` in the loop of :func:`fgn_arrays.minimize` and its
methods. It never holds an array with a row per example:

- **objective and gradient**: one pass over the chunks. Each chunk is
  linearized by the head itself (``head._linearize``, the library's own
  kernels) and gives the partial sums

      sum_i s_i loss_i,    J_chunk^T (s ⊙ r)     (s_i = 1 without weights),

  summed across chunks by a tree reduction in float64; the client divides by
  ``S = sum_i s_i`` (``N`` without weights): the weighted mean of
  ``docs/derivation.md`` ("Sample weights").
- **curvature rows**: the methods draw ``curvature_rows`` row indices per
  step exactly as in memory (``rng.choice(N, curvature_rows, replace=False)``,
  sorted); :meth:`DaskLinearization._take` gathers those rows of ``X``,
  ``y`` and the weights to the client and linearizes them there, an
  in-memory :class:`~fgn_arrays.heads.Linearization`. The draws are made in
  advance from a copy of the method's generator, so each pass also gathers
  the rows of the next step: the chunks are read once per pass.
- **whole-batch statistics** of ``"fgn-compensated"``: the output-feature
  covariance ``Sigma`` (:func:`fgn_arrays.compensation.output_covariance`)
  and the sums of its plane correction (:meth:`fgn_arrays.methods.Subspace.model_sums`)
  are partial sums of the same pass: ``Sigma`` once for a linear head (its
  features are ``X``), in every pass once asked for a two-layer head.

A pass is one ``dask.compute``: the chunks' partial sums (``1 + P`` floats
each, plus ``5`` or ``(F + 1)^2`` when asked) and the gathered rows come
back, nothing else. Peak memory per worker is a chunk's forward pass,
``O(chunk rows x (D + C))`` (``(D + H + C)`` for a two-layer head).
Zero-weight rows are skipped where the in-memory fit drops them: the
curvature rows are drawn among the others, in the same order.

``dask`` is imported by the functions here, never at import time, so that
``import fgn_arrays`` does not need it.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy

from . import kernels
from ._backend import get_namespace, is_device_array, to_numpy
from ._validation import check_theta

__all__ = ["DaskBatch", "DaskLinearization", "is_dask_array"]

# Partial sums are added in groups of this many per task (the reduction tree's fan-in).
SPLIT_EVERY = 8
# Curvature-row draws gathered ahead of the step that uses them.
PREFETCH_DRAWS = 2


def is_dask_array(x) -> bool:
    """True when ``x`` is a ``dask.array.Array`` (checked without importing Dask)."""
    return type(x).__module__.split(".", 1)[0] == "dask" and hasattr(x, "chunks") and hasattr(x, "dask")


def unsupported(head, method, curvature_rows, batch_size, n_samples):
    """Why a fit on a Dask batch cannot run as asked (the message of a ValueError), or None."""
    from .heads import LinearHead, TwoLayerHead

    if not isinstance(head, (LinearHead, TwoLayerHead)):
        return (f"A fit on Dask arrays needs a LinearHead or TwoLayerHead (their linearization runs on each "
                f"chunk); got {type(head).__name__}.")
    if method == "ggn-pcg":
        return ("method 'ggn-pcg' multiplies by the full-batch GGN at every CG iteration, a pass over all "
                "rows each: on a Dask array use 'fgn-compensated' or 'fgn' (their curvature comes from "
                "`curvature_rows` sampled rows), or compute X into memory.")
    if batch_size is not None and batch_size < n_samples:
        return (f"`batch_size` ({batch_size}) cuts the batch into shuffled mini-batches, random access to "
                "rows that a Dask array does not give cheaply: fit the full batch (batch_size=None), or "
                "compute X into memory.")
    if curvature_rows is None:
        return (f"method {method!r} with curvature_rows=None puts all rows in every step's curvature, "
                "whole-batch per-row arrays that a Dask array does not hold: pass an int "
                "`curvature_rows` (e.g. 2048), or compute X into memory.")
    return None


# ---- what runs on the workers -------------------------------------------------------------


def output_dim(head):
    """``F_dim``: the width of the features of the head's output layer ``Z = F W^T + b`` (its last two blocks)."""
    return head.shapes[-2][1]


def _chunk_arrays(xp, dtype, X, y, s):
    """A chunk's ``X``, ``y`` and ``s`` as contiguous arrays of ``xp`` (labels and weights may come from the host)."""
    X = xp.ascontiguousarray(xp.asarray(X), dtype=dtype)
    y = xp.ascontiguousarray(xp.asarray(y), dtype=xp.int64)
    return X, y, None if s is None else xp.ascontiguousarray(xp.asarray(s), dtype=dtype)


def _chunk_sums(X, y, s, head, theta, gradient, directions, covariance):
    """One chunk's partial sums, a float64 vector.

    ``[sum_i s_i loss_i, sum_i s_i, J^T (s ⊙ r) if gradient, the 5 subspace
    sums if directions, F~^T diag(s) F~ if covariance]`` with ``F~ = [F, 1]``
    the output layer's features (``s_i = 1`` without weights).
    """
    xp = get_namespace(theta)
    X, y, s = _chunk_arrays(xp, theta.dtype, X, y, s)
    n_grad = theta.shape[0] if gradient else 0
    n_sub = 5 if directions else 0
    n_cov = (output_dim(head) + 1) ** 2 if covariance else 0
    out = xp.zeros(2 + n_grad + n_sub + n_cov, dtype=xp.float64)
    if X.shape[0] == 0:
        return out
    lin = head._linearize(xp, theta, X, y, s)
    s64 = None if s is None else s.astype(xp.float64)
    loss = lin.stats.loss.astype(xp.float64)
    out[0] = xp.sum(loss) if s is None else xp.dot(s64, loss)
    out[1] = X.shape[0] if s is None else xp.sum(s64)
    at = 2
    if gradient:
        # J^T (s ⊙ r): the chunk's share of the gradient's sum (the client divides by S)
        r = lin.residual
        out[at : at + n_grad] = lin._margin_vjp(r if s is None else s * r)
        at += n_grad
    if directions:
        # the sums of Subspace.model_sums on this chunk's rows, weighted by s
        images = [lin._logits_jvp(d) for d in directions]
        out[at : at + 5] = kernels.subspace_sums(xp, lin.U, lin.residual, lin.y, images[0], images[-1], s64)
        at += 5
    if covariance:
        # F~^T diag(s) F~ without forming [F, 1]: blocks F^T (s F), (s F)^T 1, sum s
        F = xp.asarray(lin._output_layer()[0], dtype=xp.float64)
        f = F.shape[1]
        Fw = F if s is None else F * s64[:, None]
        block = xp.empty((f + 1, f + 1), dtype=xp.float64)
        block[:f, :f] = Fw.T @ F
        block[:f, f] = block[f, :f] = Fw.sum(axis=0)
        block[f, f] = F.shape[0] if s is None else xp.sum(s64)
        out[at:] = block.ravel()
    return out


def _add(parts):
    return functools.reduce(lambda a, b: a + b, parts)


def _take_rows(a, local):
    """``a[local]`` with the indices on ``a``'s backend (NumPy or CuPy chunks)."""
    xp = get_namespace(a)
    return a[local if xp is numpy else xp.asarray(local)]


def _gather_chunk(X, y, s, local, dtype):
    """Rows ``local`` of a chunk on ``X``'s backend (numbered among its positive-weight rows when ``s`` is given)."""
    if s is not None:
        local = to_numpy(get_namespace(s).flatnonzero(s > 0))[local]
    y, s = _take_rows(y, local), None if s is None else _take_rows(s, local)
    return _chunk_arrays(get_namespace(X), dtype, _take_rows(X, local), y, s)


def _validation_sums(X, y, s):
    """``[non-finite X entries, min y, max y, non-finite s, min s, sum s, positive s]`` of one chunk (NumPy).

    Each array is reduced on its own backend; the seven numbers come to the host.
    """
    out = numpy.zeros(7)
    if X.dtype.kind == "f":
        xp = get_namespace(X)
        out[0] = X.size - int(xp.count_nonzero(xp.isfinite(X)))
    out[1], out[2] = (int(y.min()), int(y.max())) if y.size else (numpy.inf, -numpy.inf)
    if s is not None:
        xp = get_namespace(s)
        s = s.astype(xp.float64)
        out[3] = s.size - int(xp.count_nonzero(xp.isfinite(s)))
        out[4] = float(s.min()) if s.size else numpy.inf
        out[5] = float(s.sum())
        out[6] = int(xp.count_nonzero(s > 0))
    return out


# ---- the client side ---------------------------------------------------------------------


class DaskBatch:
    """``X``, ``y`` and the sample weights of a fit as Dask arrays, checked, with their chunks' tasks.

    Parameters
    ----------
    head : Head
    theta0 : array, shape (P,)
        NumPy or CuPy, the backend of ``X``'s chunks; fixes the dtype and
        the backend of the client's arrays (the sums, the gathered rows).
    X, y, sample_weight
        Dask arrays chunked by rows, or NumPy or CuPy arrays (chunked like the Dask
        ones among them). ``sample_weight`` may be None.

    Raises
    ------
    TypeError, ValueError
        As :func:`fgn_arrays.minimize` does for in-memory arrays, with the
        same messages where the check is the same.
    """

    def __init__(self, head, theta0, X, y, sample_weight):
        import dask.array as da

        xp = get_namespace(theta0, names=("theta0",))
        self.head, self.xp = head, xp
        self.theta0 = check_theta(xp, theta0, head.n_params)
        self.dtype = self.theta0.dtype
        ref = next(a for a in (X, y, sample_weight) if is_dask_array(a))
        rows = ref.chunks[0]
        if any(math.isnan(c) for c in rows):
            raise ValueError("The Dask arrays' row chunks must have known sizes; call `compute_chunk_sizes()` first.")
        X = self._as_dask(da, X, "X", 2, rows)
        if X.shape[1] != head.n_features:
            raise ValueError(f"`X` must have shape (n_samples, {head.n_features}); got {X.shape}.")
        if X.shape[0] < 1:
            raise ValueError("`X` must have at least one row; got 0.")
        if X.dtype.kind not in "iuf" or X.dtype.kind == "b":
            raise TypeError(f"`X` must hold real numbers; got dtype {X.dtype}.")
        device, theta_device = chunk_device(X, "X"), "gpu" if is_device_array(self.theta0) else "cpu"
        if device != theta_device:
            kind = {"gpu": "CuPy", "cpu": "NumPy"}
            raise TypeError(f"`X` has {kind[device]} chunks but `theta0` is a {kind[theta_device]} array: the fit runs "
                            f"where the chunks are, so pass `fa.to_device(theta0, {device!r})`.")
        y = self._as_dask(da, y, "y", 1, rows)
        if y.dtype.kind not in "iu":
            raise TypeError(f"`y` must be integers; got dtype {y.dtype}.")
        if sample_weight is not None:
            sample_weight = self._as_dask(da, sample_weight, "sample_weight", 1, rows)
            if sample_weight.dtype.kind not in "iuf" or sample_weight.dtype.kind == "b":
                raise TypeError(f"`sample_weight` must hold real numbers; got dtype {sample_weight.dtype}.")
        self.X, self.y, self.sample_weight = X.rechunk({0: rows, 1: -1}), y, sample_weight
        self.chunk_rows = numpy.asarray(rows, dtype=numpy.int64)
        self._blocks = (self.X.to_delayed().ravel(), y.to_delayed().ravel(),
                        None if sample_weight is None else sample_weight.to_delayed().ravel())
        self._check_values()
        self._theta_task = None
        self._planner, self._planned, self._fetched = None, [], {}
        self.want_covariance = False
        self._fixed_covariance = None
        self._recent = []

    # ---- checks -------------------------------------------------------------------------

    def _as_dask(self, da, a, name, ndim, rows):
        if not is_dask_array(a):
            if not (isinstance(a, numpy.ndarray) or is_device_array(a)):
                raise TypeError(f"`{name}` must be a dask.array, numpy.ndarray or cupy.ndarray; got "
                                f"{type(a).__module__}.{type(a).__name__}.")
            if a.ndim != ndim or a.shape[0] != sum(rows):
                raise ValueError(f"`{name}` must have {sum(rows)} rows and {ndim} dimension(s); got shape {a.shape}.")
            return da.from_array(a, chunks=(rows,) + (-1,) * (ndim - 1))
        if a.ndim != ndim or a.shape[0] != sum(rows):
            expect = f"({sum(rows)},)" if ndim == 1 else f"({sum(rows)}, n_features)"
            raise ValueError(f"`{name}` must have shape {expect}; got {a.shape}.")
        chunk_device(a, name)  # NumPy or CuPy chunks, else TypeError
        return a if a.chunks[0] == rows else a.rechunk({0: rows})

    def _check_values(self):
        """One pass over ``y``, the weights and ``X``: the checks of the in-memory fit, and the rows kept."""
        import dask

        Xb, yb, sb = self._blocks
        parts = [dask.delayed(_validation_sums)(Xb[i], yb[i], None if sb is None else sb[i])
                 for i in range(len(Xb))]
        (sums,) = dask.compute(dask.delayed(numpy.stack)(parts))
        C = self.head.n_classes
        n_bad = int(sums[:, 0].sum())
        if n_bad:
            raise ValueError(f"`X` must be finite; got {n_bad} NaN or infinite entries.")
        lo, hi = sums[:, 1].min(), sums[:, 2].max()
        if lo < 0:
            raise ValueError(f"`y` must be integers in [0, {C}); got min {int(lo)}.")
        if hi >= C:
            raise ValueError(f"`y` must be integers in [0, {C}); got max {int(hi)}.")
        self.kept_rows = self.chunk_rows
        self.total_weight = None
        if self._blocks[2] is not None:
            if sums[:, 3].sum():
                raise ValueError(f"`sample_weight` must be finite; got {int(sums[:, 3].sum())} NaN or infinite entries.")
            if sums[:, 4].min() < 0:
                raise ValueError(f"`sample_weight` must be >= 0; got min {sums[:, 4].min()}.")
            if not sums[:, 5].sum() > 0:
                raise ValueError(f"`sample_weight` must have a positive sum; got {sums[:, 5].sum()}.")
            self.kept_rows = sums[:, 6].astype(numpy.int64)
        self.n_samples = int(self.kept_rows.sum())
        self.kept_starts = numpy.concatenate([[0], numpy.cumsum(self.kept_rows)])

    # ---- passes -------------------------------------------------------------------------

    def linearize(self, theta):
        """The :class:`DaskLinearization` at ``theta``; the same object for a ``theta`` evaluated lately."""
        for lin in self._recent:
            if lin.theta is theta:
                return lin
        return DaskLinearization(self, theta)

    def _remember(self, lin):
        self._recent = [lin] + self._recent[:2]

    def plan(self, rng, curvature_rows):
        """Draw the curvature rows ahead from a copy of the method's ``rng`` (same draws, same order)."""
        self._planner, self._curvature_rows = copy.deepcopy(rng), curvature_rows

    def _next_draws(self):
        """The planned draws not yet gathered, up to :data:`PREFETCH_DRAWS` ahead of the steps."""
        if self._planner is None or self.n_samples <= self._curvature_rows:
            return []
        while len(self._planned) < PREFETCH_DRAWS:
            rows = numpy.sort(self._planner.choice(self.n_samples, self._curvature_rows, replace=False))
            self._planned.append(rows)
        return [rows for rows in self._planned if rows.tobytes() not in self._fetched]

    def _gather_tasks(self, rows):
        """Delayed ``(X, y, s)`` row blocks of the sorted kept-row indices ``rows``, in order."""
        import dask

        Xb, yb, sb = self._blocks
        chunk = numpy.searchsorted(self.kept_starts, rows, side="right") - 1
        tasks = []
        for b in numpy.unique(chunk):
            local = rows[chunk == b] - self.kept_starts[b]
            tasks.append(dask.delayed(_gather_chunk, nout=3)(Xb[b], yb[b], None if sb is None else sb[b], local,
                                                              self.dtype))
        return tasks

    def _assemble(self, blocks):
        xp = self.xp
        X = xp.concatenate([b[0] for b in blocks])
        y = xp.concatenate([b[1] for b in blocks])
        s = None if self._blocks[2] is None else xp.concatenate([b[2] for b in blocks])
        return X, y, s

    def gather(self, rows):
        """``(X, y, sample_weight)`` of the kept rows ``rows`` (sorted), in memory; prefetched ones at no pass."""
        import dask

        key = rows.tobytes()
        if key in self._fetched:
            data = self._fetched.pop(key)
            self._planned = [r for r in self._planned if r.tobytes() != key]
            return data
        (blocks,) = dask.compute(self._gather_tasks(rows))
        return self._assemble(blocks)

    def gather_all(self):
        """All kept rows in memory (a batch no larger than the curvature rows)."""
        return self.gather(numpy.arange(self.n_samples))

    def theta_task(self, theta):
        import dask

        return dask.delayed(theta, pure=True, traverse=False)

    def run_pass(self, theta, *, gradient, directions=None, covariance=False):
        """One pass at ``theta``: the summed partials (float64, ``theta``'s backend); the next draws' rows gathered.

        The gathered rows are kept for :meth:`gather`.
        """
        import dask

        head = self.head
        Xb, yb, sb = self._blocks
        theta_t = self.theta_task(theta)
        dirs = None if directions is None else [self.theta_task(d) for d in directions]
        parts = [
            dask.delayed(_chunk_sums, pure=True)(Xb[i], yb[i], None if sb is None else sb[i], head, theta_t,
                                                 gradient, dirs, covariance)
            for i in range(len(Xb))
        ]
        while len(parts) > 1:
            parts = [dask.delayed(_add, pure=True)(parts[i : i + SPLIT_EVERY])
                     for i in range(0, len(parts), SPLIT_EVERY)]
        draws = self._next_draws()
        total, *gathered = dask.compute(parts[0], *[self._gather_tasks(rows) for rows in draws])
        for rows, blocks in zip(draws, gathered):
            self._fetched[rows.tobytes()] = self._assemble(blocks)
        self._sum_weights = float(total[1])
        return total

    def covariance_eig(self, sums):
        """``(e, V)`` of ``Sigma`` from its summed block (as :func:`fgn_arrays.compensation.output_covariance`)."""
        xp = self.xp
        f1 = output_dim(self.head) + 1
        Sigma = xp.asarray(sums, dtype=xp.float64).reshape(f1, f1) / self.sum_weights
        e, V = xp.linalg.eigh(Sigma)
        return xp.maximum(e, 0).astype(self.dtype), V.astype(self.dtype)

    @property
    def sum_weights(self):
        """``S = sum_i s_i`` (``N`` without weights) of the weights in the working dtype, a float."""
        return self._sum_weights


class DaskLinearization:
    """The whole Dask batch at one ``theta``: what the loop of :func:`fgn_arrays.minimize` and its methods use.

    Its objective, gradient and whole-batch sums come from passes over the
    chunks (:meth:`DaskBatch.run_pass`, made when first asked for); its
    curvature rows are gathered to an in-memory linearization
    (:meth:`_take`). It has no per-row arrays: ``_in_memory`` is False, and
    the methods use :meth:`_subspace_sums` and :meth:`_output_covariance`
    where they would sum over an in-memory batch's rows.
    """

    _in_memory = False

    def __init__(self, batch, theta):
        self.batch, self.head, self.xp, self.theta = batch, batch.head, batch.xp, theta
        self.X = batch.X
        self._sums = None
        self._eig = None

    @property
    def n_samples(self) -> int:
        return self.batch.n_samples

    @property
    def n_params(self) -> int:
        return self.theta.shape[0]

    @property
    def dtype(self):
        return self.theta.dtype

    @functools.cached_property
    def weight_mask(self):
        return self.head.weight_mask(self.xp, self.dtype)

    def _pass(self, directions=None):
        """One pass: loss and gradient sums (cached), with the subspace sums of ``directions`` when given.

        Layout of the summed vector: ``[loss, S, gradient (P), subspace (5)?, covariance ((F+1)^2)?]``.
        """
        batch = self.batch
        covariance = self._eig is None and batch.want_covariance and (
            not self.head._affine_logits or batch._fixed_covariance is None)
        total = batch.run_pass(self.theta, gradient=True, directions=directions, covariance=covariance)
        P = self.n_params
        self._sums = total[: 2 + P]
        at = 2 + P
        sub = None
        if directions is not None:
            sub, at = total[at : at + 5], at + 5
        if covariance:
            self._set_eig(batch.covariance_eig(total[at:]))
        batch._remember(self)
        return sub

    def _ensure(self):
        if self._sums is None:
            self._pass()
        return self._sums

    @functools.cached_property
    def _mean_loss(self):
        """The (weighted) mean cross-entropy, 0-d float64."""
        return self.xp.asarray(self._ensure()[0] / self.batch.sum_weights)

    @property
    def loss(self) -> float:
        return float(self._mean_loss)

    @functools.cached_property
    def grad(self):
        """Gradient of the (weighted) mean cross-entropy, shape (P,), in the dtype of ``theta``."""
        return (self._ensure()[2:] / self.batch.sum_weights).astype(self.dtype)

    def _take(self, rows):
        """The in-memory linearization of the kept rows ``rows`` (sorted indices, any backend) at ``theta``."""
        X, y, s = self.batch.gather(to_numpy(rows))
        return self.head._linearize(self.xp, self.theta, X, y, s)

    def _at(self, theta, logits=None):
        """The Dask linearization at ``theta`` (no pass until its values are asked for)."""
        if logits is not None:  # pragma: no cover - the methods pass logits for in-memory batches only
            raise ValueError("A Dask batch has no logits to pass.")
        return DaskLinearization(self.batch, theta)

    def _subspace_sums(self, directions):
        """The float64 ``(5,)`` sums of :meth:`fgn_arrays.methods.Subspace.model_sums` at this point.

        Made in the point's first pass when it has not run yet (with the
        objective and gradient); scaled so that dividing by ``n_samples``
        gives the (weighted) means.
        """
        if self._sums is None:
            sub = self._pass(directions)
        else:
            total = self.batch.run_pass(self.theta, gradient=False, directions=directions)
            sub = total[2:7]
        return self.xp.asarray(sub * (self.n_samples / self.batch.sum_weights))

    def _output_layer(self):
        """``(features, offset)``: ``features`` is ``X`` (the Dask array) for a linear head, else this point.

        The methods compare it by identity to reuse the covariance (as for an in-memory batch).
        """
        F = self.X if self.head._affine_logits else self
        return F, self.head.n_params - self.head.n_classes * (output_dim(self.head) + 1)

    def _set_eig(self, eig):
        self._eig = eig
        if self.head._affine_logits:
            self.batch._fixed_covariance = eig

    def _output_covariance(self):
        """``(e, V)`` of the output-feature covariance on the whole batch (one pass when not fused)."""
        batch = self.batch
        batch.want_covariance = True
        if self._eig is None and self.head._affine_logits and batch._fixed_covariance is not None:
            self._eig = batch._fixed_covariance
        if self._eig is None:
            total = batch.run_pass(self.theta, gradient=False, covariance=True)
            self._set_eig(batch.covariance_eig(total[2:]))
        return self._eig


# ---- the estimator's helpers (FGNClassifier on Dask arrays) ------------------------------


def _encode_block(y, classes):
    return numpy.searchsorted(classes, numpy.asarray(y)).astype(numpy.int64)


def _lookup_block(y_encoded, values):
    return values[y_encoded]


def _logits_block(X, head, theta):
    from .estimator import head_logits

    return head_logits(head, theta, X)


def _predict_block(Z, classes):
    return classes[numpy.argmax(Z, axis=1)]


def encode_labels(y):
    """``(classes, y_encoded)`` of a Dask ``y``: ``numpy.unique`` (one pass over ``y``) and a lazy ``searchsorted``."""
    import dask.array as da

    classes = numpy.asarray(da.unique(y).compute())
    return classes, y.map_blocks(_encode_block, classes, dtype=numpy.int64)


def class_counts(y_encoded, n_classes, sample_weight=None):
    """Counts of each class in ``y_encoded`` (weighted by ``sample_weight``), a NumPy array (one pass)."""
    import dask.array as da

    return numpy.asarray(da.bincount(y_encoded, weights=sample_weight, minlength=n_classes).compute(),
                         dtype=numpy.float64)


def per_row(y_encoded, values):
    """``values[y_encoded]``, lazily (a Dask array chunked as ``y_encoded``)."""
    return y_encoded.map_blocks(_lookup_block, numpy.asarray(values), dtype=numpy.asarray(values).dtype)


def chunk_device(X, name="X"):
    """``"cpu"`` when the Dask array ``X`` has NumPy chunks (its ``_meta``), ``"gpu"`` for CuPy chunks.

    Raises ``TypeError`` for chunks of any other type (sparse matrices, ...), naming ``name``.
    """
    meta = X._meta
    if is_device_array(meta):
        return "gpu"
    if isinstance(meta, numpy.ndarray):
        return "cpu"
    raise TypeError(f"`{name}`'s chunks must be NumPy or CuPy arrays; got {type(meta).__module__}."
                    f"{type(meta).__name__}.")


def on_host(a, name):
    """The Dask array ``a`` with NumPy chunks (CuPy chunks copied to the host block by block, lazily)."""
    if chunk_device(a, name) == "cpu":
        return a
    return a.map_blocks(to_numpy, dtype=a.dtype, meta=numpy.empty((0,) * a.ndim, dtype=a.dtype))


def logits(head, theta, X):
    """The float64 logits of a Dask ``X`` as a Dask array of NumPy chunks (one chunk of columns), block by block.

    The product of a block runs on ``theta``'s device (:func:`fgn_arrays.estimator.head_logits`).
    """
    X = X.rechunk({1: -1})
    return X.map_blocks(_logits_block, head, theta, chunks=(X.chunks[0], (head.n_classes,)), dtype=numpy.float64,
                        meta=numpy.empty((0, 0), dtype=numpy.float64))


def rowwise(Z, func, **kwargs):
    """``func(block, axis=1, **kwargs)`` on each row block of the Dask ``Z`` (softmax and its log)."""
    return Z.map_blocks(func, axis=1, dtype=numpy.float64, **kwargs)


def predict(Z, classes):
    """``classes[argmax(Z, axis=1)]`` of a Dask ``Z``, lazily."""
    return Z.map_blocks(_predict_block, classes, drop_axis=1, dtype=classes.dtype)


def as_rows_like(a, X):
    """``a`` (a row per row of the Dask ``X``; Dask, NumPy or array-like) as a Dask array chunked as ``X``'s rows."""
    import dask.array as da

    if not is_dask_array(a):
        a = to_numpy(a)
    if a.ndim != 1 or a.shape[0] != X.shape[0]:
        raise ValueError(f"`y` and `sample_weight` must have shape ({X.shape[0]},), as `X`'s rows; got {a.shape}.")
    if is_dask_array(a):
        return a if a.chunks[0] == X.chunks[0] else a.rechunk({0: X.chunks[0]})
    return da.from_array(a, chunks=(X.chunks[0],))
