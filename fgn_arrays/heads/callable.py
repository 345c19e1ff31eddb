"""Any model: linearizations from user-supplied logit Jacobian products (JAX, torch, NumPy, ...).

Conventions
-----------
A model is known through its logits ``Z (N, C)`` at ``theta (P,)`` and two
callables, its logit Jacobian products

    logits_jvp : v (P,)    ->  Jz v    (N, C)
    logits_vjp : A (N, C)  ->  Jz^T A  (P,)

The margin products follow, with ``u_i = e_{y_i} - q_i`` the rows of ``U``
(from the margin kernel):

    J v   = rowsum(U ⊙ (Jz v))
    J^T a = Jz^T (a[:, None] ⊙ U)

so each product a solver asks for is one call of a callable plus one fused
pass over ``U``. The callables receive arrays of the linearization's backend
(NumPy on the CPU, CuPy on the GPU) and dtype, and may return any array of
that backend, or any DLPack producer on the same device (a JAX array, a
torch tensor), which is read without a copy.

**Checks of the callables' outputs.** Every call: the backend (after the
DLPack conversion), the shape and the dtype, which are metadata and cost no
synchronisation. The first call of each callable on a linearization: also
finiteness, one host synchronisation on the GPU; later calls (inside CG)
are not checked for it, and a non-finite step is reported by the step's own
finiteness check (``converged=False``, a zero direction).

**No closed-form Gram matrix.** ``J J^T`` is known only through products,
so what needs it explicitly raises ``ValueError``: ``fgn_step(...,
solver="cholesky")`` (``"auto"`` picks CG), ``ggn_step(..., precond="fgn"
or "jacobi")`` and the methods ``"fgn-compensated"`` and ``"ggn-pcg"`` of
:func:`fgn_arrays.minimize` (use ``"fgn"``). The diagonal of ``J D J^T``
(``D`` diagonal: ``weight_scale`` on the entries of ``weight_mask``,
``bias_scale`` on the others), which the row-space CG uses for its Jacobi
preconditioner, its split of the gradient and its stopping tolerance, is
estimated from ``GRAM_DIAG_PROBES`` random sign vectors ``v`` (Hutchinson:
``E[(J (M v))_i^2] = sum_p M_p J_ip^2``), drawn from a fixed seed, at the
cost of ``GRAM_DIAG_PROBES`` margin JVPs (twice that when ``weight_mask`` has
both ones and zeros) once per linearization. An estimate changes only how
fast CG converges, never the system it solves: the step's parameter-space
residual ``||H delta + g|| <= rtol ||g||`` is checked on the returned
``delta`` as for every head.
"""

from __future__ import annotations

import functools

import numpy

from .._backend import as_array, get_namespace
from .._validation import (
    check_batch,
    check_callable,
    check_logits_labels,
    check_output,
    check_positive_int,
    check_sample_weight,
    check_theta,
    check_weight_mask,
)
from ._base import Head, Linearization

__all__ = ["CallableHead", "CallableLinearization", "linearize_logits"]

# Random sign probes of the estimated diagonal of J D J^T, and their seed (module docstring).
GRAM_DIAG_PROBES = 4
GRAM_DIAG_SEED = 0

_NO_GRAM = (
    "a linearization from callables (fa.linearize_logits, fa.CallableHead) knows the margin Jacobian J "
    "only through its products"
)


class CallableLinearization(Linearization):
    """A :class:`Linearization` whose logit Jacobian products are user-supplied callables.

    Made by :func:`linearize_logits` or :meth:`CallableHead.linearize`; see
    the module's Conventions. ``head`` is the :class:`CallableHead`, or
    ``None`` for :func:`linearize_logits`; ``theta`` may be ``None`` there
    (then steps take ``l2 = 0`` only) and ``X`` is ``None``.
    """

    _closed_form_gram = False

    def __init__(self, head, xp, theta, X, y, Z, logits_jvp, logits_vjp, *, n_params, mask, names):
        super().__init__(head, xp, theta, X, y, Z)
        self._jvp, self._vjp = logits_jvp, logits_vjp
        self._jvp_name, self._vjp_name = names
        self._n_params = n_params
        # host (P,) 0/1 mask or None (all ones), and whether it has ones and zeros
        self._mask_host, self._has_weights, self._has_biases = mask
        # rows of the callables' outputs this linearization keeps (None: all), see _take
        self._rows, self._n_rows = None, Z.shape[0]
        self._jvp_checked = self._vjp_checked = False

    def _take_cache(self, new, rows):
        for name in ("_jvp", "_vjp", "_jvp_name", "_vjp_name", "_n_params", "_mask_host", "_has_weights",
                     "_has_biases", "_n_rows"):
            setattr(new, name, getattr(self, name))
        new._rows = rows if self._rows is None else self._rows[rows]
        new._jvp_checked = new._vjp_checked = False

    @property
    def n_samples(self) -> int:
        return self.logits.shape[0]

    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def dtype(self):
        return self.logits.dtype

    @functools.cached_property
    def weight_mask(self):
        """``(P,)`` 0/1 mask of the entries ``l2`` penalises (``weight_mask`` of the constructor; default all)."""
        if self.head is not None:
            return self.head.weight_mask(self.xp, self.dtype)
        if self._mask_host is None:
            return self.xp.ones(self.n_params, dtype=self.dtype)
        return self.xp.asarray(self._mask_host, dtype=self.dtype)

    # ---- the callables, checked -------------------------------------------------

    def _logits_jvp(self, v):
        # Jz v, on all of the callable's rows, then ours
        out = check_output(self.xp, self._jvp(v), (self._n_rows, self.logits.shape[1]), self.dtype,
                           self._jvp_name, finite=not self._jvp_checked)
        self._jvp_checked = True
        return out if self._rows is None else out[self._rows]

    def _logits_vjp(self, A):
        xp = self.xp
        if self._rows is not None:
            # Jz^T A with A zero on the rows this linearization does not keep
            full = xp.zeros((self._n_rows, A.shape[1]), dtype=A.dtype)
            full[self._rows] = A
            A = full
        out = check_output(xp, self._vjp(A), (self._n_params,), self.dtype, self._vjp_name,
                           finite=not self._vjp_checked)
        self._vjp_checked = True
        if self._n_params is None:  # linearize_logits without theta or weight_mask: P from the first VJP
            self._n_params = out.shape[0]
        return out

    # ---- what needs the closed-form Gram matrix ---------------------------------

    def _margin_gram(self, weight_scale, bias_scale):
        raise ValueError(
            f"margin_gram: {_NO_GRAM}, so it has no closed-form Gram matrix J J^T. Use fgn_step(..., "
            "solver='cg') (or 'auto', which picks CG)."
        )

    @functools.cached_property
    def _gram_diag_parts(self):
        """Estimates of ``(diag(J M J^T), diag(J (I - M) J^T))``, shape (N,) each (module docstring)."""
        xp, dt, k = self.xp, self.dtype, GRAM_DIAG_PROBES
        signs = numpy.random.default_rng(GRAM_DIAG_SEED).integers(0, 2, size=(k, self.n_params), dtype=numpy.int8)
        signs = xp.asarray(2 * signs - 1)  # one host-to-device copy of k x P int8
        mask = self.weight_mask
        parts = []
        for present, select in ((self._has_weights, mask), (self._has_biases, 1 - mask)):
            d = xp.zeros(self.n_samples, dtype=dt)
            if present:
                for j in range(k):
                    # (J (M v))_i^2, averaged over the probes
                    t = self._margin_jvp(signs[j].astype(dt) * select)
                    d += t * t
                d /= dt.type(k)
            parts.append(d)
        return tuple(parts)

    def _margin_gram_diag(self, weight_scale, bias_scale):
        # diag(J D J^T) = s_W diag(J M J^T) + s_b diag(J (I - M) J^T), estimated
        d_w, d_b = self._gram_diag_parts
        dt = self.dtype.type
        return dt(weight_scale) * d_w + dt(bias_scale) * d_b

    def _cost_flops(self):
        # unknown: the callables' cost is the user's
        return {"product": None, "gram": None}

    def _output_layer(self):
        raise ValueError(f"{_NO_GRAM}: it has no known output layer. Use method 'fgn'.")

    def _hidden_gram_diag(self, weight_scale, bias_scale):
        raise ValueError(f"{_NO_GRAM}: it has no known output layer. Use method 'fgn'.")


def linearize_logits(logits, labels, logits_jvp, logits_vjp, *, theta=None, weight_mask=None, sample_weight=None):
    """The linearization of any model from its logits and its logit Jacobian products.

    Parameters
    ----------
    logits : array, shape (N, C)
        ``Z = f(theta; X)``, float32 or float64 (integers become float64):
        fixes the backend and the compute dtype. NumPy, CuPy, or any DLPack
        producer (JAX, torch), read without a copy.
    labels : array of int, shape (N,)
        In ``[0, C)``.
    logits_jvp : callable
        ``v (P,) -> Jz v (N, C)``, the logits' directional derivative at
        ``theta`` (``jax.linearize``'s function, a torch ``jvp``, ...).
    logits_vjp : callable
        ``A (N, C) -> Jz^T A (P,)`` (``jax.vjp``'s function, ...).
    theta : array, shape (P,), optional
        The parameters, in the dtype of ``logits``: needed by steps with
        ``l2 > 0`` only (``g = grad + l2 M theta``).
    weight_mask : array, shape (P,), optional
        0s and 1s (or bools): the entries ``l2`` penalises. Default: all.
    sample_weight : array, shape (N,), optional
        Row weights ``s_i >= 0`` with a positive sum (as in
        :meth:`LinearHead.linearize`).

    Returns
    -------
    CallableLinearization
        A :class:`Linearization`: :func:`fgn_matvec`, :func:`ggn_matvec`,
        :func:`dropped_matvec`, :func:`fgn_step` and :func:`ggn_step` take it.

    Raises
    ------
    TypeError
        A callable that is not callable, an argument that is not an array;
        later, a callable's output on the wrong backend or in the wrong
        dtype (the message names the callable).
    ValueError
        Shapes and values, as for the heads; a callable's output of the
        wrong shape, or with NaN or infinite entries on its first call.

    Notes
    -----
    The margin products are ``J v = rowsum(U ⊙ (Jz v))`` and
    ``J^T a = Jz^T (a[:, None] ⊙ U)``: one callable call each. The callables
    are called with arrays of the backend of ``logits`` and its dtype,
    C-contiguous, which they must not keep or write into; they may return
    any array of that backend or a DLPack producer on the same device, a
    new one at each call (the library keeps earlier results while it calls
    again; it never writes into them). ``P``
    is the length of ``theta``, else of ``weight_mask``, else of the first
    VJP (the gradient, computed here). There is no closed-form Gram matrix:
    ``fgn_step(..., solver="cholesky")`` and ``ggn_step(..., precond="fgn")``
    or ``"jacobi"`` raise ``ValueError`` (see :mod:`fgn_arrays.heads.callable`
    for the estimated diagonal CG uses).

    Examples
    --------
    With JAX (on the CPU; ``f(theta)`` the logits of the batch)::

        Z, jvp = jax.linearize(f, theta)
        vjp = jax.linear_transpose(jvp, theta)
        lin = fa.linearize_logits(Z, y, jvp, lambda A: vjp(jnp.from_dlpack(A))[0])
        step = fa.fgn_step(lin, damping=1.0)
    """
    xp, Z, y = check_logits_labels(logits, labels)
    check_callable(logits_jvp, "logits_jvp")
    check_callable(logits_vjp, "logits_vjp")
    n_params = None
    if theta is not None:
        theta = as_array(theta, "theta")
        if get_namespace(theta, names=("theta",)) is not xp:
            raise TypeError(f"`theta` must live on the backend of `logits` ({xp.__name__}).")
        if theta.ndim != 1:
            raise ValueError(f"`theta` must be 1-D (P,); got shape {tuple(theta.shape)}.")
        theta = check_theta(xp, theta, theta.shape[0])
        if theta.dtype != Z.dtype:
            raise TypeError(f"`theta` must have the dtype of `logits`, {Z.dtype}; got {theta.dtype}.")
        n_params = theta.shape[0]
    mask = (None, True, False)
    if weight_mask is not None:
        mask = check_weight_mask(weight_mask, n_params)
        n_params = mask[0].shape[0]
    sample_weight = check_sample_weight(xp, sample_weight, Z.shape[0], Z.dtype)
    lin = CallableLinearization(None, xp, theta, None, y, Z, logits_jvp, logits_vjp, n_params=n_params,
                                mask=mask, names=("`logits_jvp`", "`logits_vjp`"))
    lin.sample_weight = sample_weight
    if n_params is None:
        lin.grad  # noqa: B018  (the first VJP, which gives P)
    return lin


class CallableHead(Head):
    """A classifier model given by callables, for :func:`fgn_arrays.minimize` and the steps.

    Parameters
    ----------
    n_params : int
        ``P``, the length of the flat parameter vector ``theta``.
    n_classes : int
        ``C >= 2``.
    linearize : callable
        ``linearize(theta, X) -> (logits, logits_jvp, logits_vjp)``: the
        logits ``Z (N, C)`` at ``theta`` on the rows ``X`` and the logit
        Jacobian products there, ``logits_jvp: v (P,) -> Jz v (N, C)`` and
        ``logits_vjp: A (N, C) -> Jz^T A (P,)`` (see
        :func:`linearize_logits`). One call per point: JAX's
        ``jax.linearize`` with ``jax.linear_transpose`` gives all three from
        one forward pass. ``theta`` arrives as an array of the backend of
        ``theta0`` (NumPy or CuPy) and its dtype; ``X`` as given (its rows
        when mini-batching). The logits must have ``theta``'s dtype.
    weight_mask : array, shape (P,), optional
        0s and 1s (or bools): the entries of ``theta`` that ``l2`` penalises.
        Default: all of them.
    forward : callable, optional
        ``forward(theta, X) -> logits``, the forward pass alone, for
        :meth:`logits` (prediction). Default: ``linearize(theta, X)[0]``.

    Notes
    -----
    ``X`` is any array with one row per example (``ndim >= 1``), on the
    backend of ``theta``; it is passed to the callables as it is (no cast,
    no finiteness check), so it may hold token ids or images. The arrays
    the callables return may be any DLPack producer on the same device
    (read without a copy). The methods of :func:`fgn_arrays.minimize` that
    need a known output layer, ``"fgn-compensated"`` (the default) and
    ``"ggn-pcg"``, raise ``ValueError``: train with ``method="fgn"``, whose
    row-space system is solved by CG (``solver="auto"`` or ``"cg"``). The
    parameters' initial values are the model's own (:meth:`init_params`
    raises).

    Examples
    --------
    >>> import numpy as np, fgn_arrays as fa
    >>> def linearize(theta, X):  # a linear model Z = X W^T, written by hand
    ...     W = theta.reshape(3, X.shape[1])
    ...     return X @ W.T, lambda v: X @ v.reshape(W.shape).T, lambda A: (A.T @ X).ravel()
    >>> head = fa.CallableHead(3 * 4, 3, linearize)
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)
    >>> res = fa.minimize(head, np.zeros(12), X, y, method="fgn", l2=1e-2)
    >>> res.converged
    True
    """

    n_features = None

    # no closed-form Gram matrix: minimize admits method="fgn" only (checked before any work)
    _closed_form_gram = False

    def __init__(self, n_params, n_classes, linearize, *, weight_mask=None, forward=None):
        n_params = check_positive_int(n_params, "n_params")
        self.n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
        self._linearize_fn = check_callable(linearize, "linearize")
        self._forward = None if forward is None else check_callable(forward, "forward")
        self.shapes = ((n_params,),)
        self.is_weight = (True,)
        self._mask = (None, True, False) if weight_mask is None else check_weight_mask(weight_mask, n_params)
        self._device_masks = {}

    def __repr__(self):
        return f"CallableHead(n_params={self.n_params}, n_classes={self.n_classes})"

    def weight_mask(self, xp=numpy, dtype=numpy.float64):
        """``(P,)`` 0/1 mask of the entries ``l2`` penalises (the constructor's ``weight_mask``; default all)."""
        host = self._mask[0]
        if host is None:
            return xp.ones(self.n_params, dtype=dtype)
        key = (id(xp), numpy.dtype(dtype))
        if key not in self._device_masks:  # one host-to-device copy per backend and dtype
            self._device_masks[key] = xp.asarray(host, dtype=dtype)
        return self._device_masks[key]

    def init_params(self, seed=0, dtype="float32", device="cpu"):
        """Not available: the model's initial parameters are its own; pass them as ``theta0``."""
        raise NotImplementedError(
            "CallableHead does not know the model's initialisation; start from the model's own initial "
            "parameters, flattened to (P,) (for JAX: jax.flatten_util.ravel_pytree)."
        )

    def logits(self, theta, X):
        """Logits ``Z (N, C)`` at ``theta`` for the rows ``X``: ``forward``, else ``linearize(theta, X)[0]``."""
        xp, theta, X, _ = check_batch(theta, X, None, self.n_params, None, self.n_classes)
        if self._forward is not None:
            return self._checked_logits(xp, self._forward(theta, X), theta, X, "`forward`")
        return self._logits(xp, theta, X)[0]

    def _checked_logits(self, xp, Z, theta, X, name):
        return check_output(xp, Z, (X.shape[0], self.n_classes), theta.dtype, name, finite=True)

    def _logits(self, xp, theta, X):
        out = self._linearize_fn(theta, X)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise TypeError(
                f"`linearize` must return a tuple (logits, logits_jvp, logits_vjp); got {type(out).__name__}"
                + (f" of length {len(out)}." if isinstance(out, tuple) else ".")
            )
        Z, jvp, vjp = out
        Z = self._checked_logits(xp, Z, theta, X, "`linearize` (its logits)")
        check_callable(jvp, "linearize(...)[1], the logits JVP")
        check_callable(vjp, "linearize(...)[2], the logits VJP")
        return Z, (jvp, vjp)

    def _linearization(self, xp, theta, X, y, Z, cache):
        jvp, vjp = cache
        return CallableLinearization(self, xp, theta, X, y, Z, jvp, vjp, n_params=self.n_params, mask=self._mask,
                                     names=("the JVP of `linearize`", "the VJP of `linearize`"))
