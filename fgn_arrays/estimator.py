"""A scikit-learn classifier trained by damped FGN steps: :class:`FGNClassifier`.

Conventions
-----------
The objective is the one :func:`fgn_arrays.optim.minimize` minimizes,

    L(theta) = sum_i s_i CE(Z_i, y_i) / sum_i s_i + (l2/2) ||theta_w||^2,

a *mean* cross-entropy (weighted by ``s_i = sample_weight_i *
class_weight[y_i]``, 1 without them) plus a penalty on the weights only
(biases are free). With ``C >= 3`` classes it is scikit-learn's multinomial
``LogisticRegression(C=C_sk)`` objective divided by ``C_sk sum_i s_i``, hence

    l2 = 1 / (C_sk sum_i s_i)     (C_sk: LogisticRegression's C; sum_i s_i = N unweighted).

Two classes keep a softmax head with two rows ``W = [w_0; w_1]``. At the
optimum ``w_0 = -w_1`` (their gradients are opposite), so the penalty
``(l2/2)(|w_0|^2 + |w_1|^2)`` equals ``(l2/4) |w_1 - w_0|^2``: scikit-learn's
*binary* ``LogisticRegression(C=C_sk)`` (one weight vector ``w_1 - w_0``) is
matched by ``l2 = 2 / (C_sk N)``.

Labels of any type are encoded as ``0 .. C-1`` in the order of ``classes_``
(``numpy.unique``). Predictions are computed on the fitting device, in
float64 (see :func:`head_logits`), and returned as NumPy arrays; for a
``dask.array`` ``X`` they are Dask arrays (of NumPy chunks, whatever ``X``'s
chunks), computed chunk by chunk.

The module is importable without scikit-learn: :func:`fit_head` and
:func:`head_logits`, the scikit-learn-free core that :class:`FGNClassifier`
delegates to, serve the command line. Only :class:`FGNClassifier` needs
scikit-learn, and says so (``ImportError``) when it is missing.
"""

from __future__ import annotations

import numbers
import warnings

import numpy
import scipy.special

from ._backend import gpu_available, is_device_array, namespace_for_device, to_device, to_numpy
from ._dask import is_dask_array
from ._validation import check_dtype, check_positive_int
from .heads import LinearHead, TwoLayerHead
from .optim import DEFAULT_METHOD, minimize

__all__ = ["FGNClassifier", "fit_head", "head_logits"]

SKLEARN_MISSING = "FGNClassifier needs scikit-learn, which is not installed: pip install scikit-learn"
DEVICES = ("auto", "cpu", "gpu")

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted

    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6

        def validate_data(estimator, *args, **kwargs):
            return estimator._validate_data(*args, **kwargs)

    HAVE_SKLEARN = True
except ImportError:  # scikit-learn is optional
    HAVE_SKLEARN = False


# ---- the scikit-learn-free core ----------------------------------------------


def resolve_device(device) -> str:
    """``"cpu"`` or ``"gpu"`` for ``device`` in {"auto", "cpu", "gpu"} ("auto": the GPU when there is one)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"`device` must be one of {DEVICES}; got {device!r}.")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu":
        namespace_for_device("gpu")  # without a GPU: RuntimeError naming the extra to install
    return device


def make_head(n_features, n_classes, hidden=None, activation="tanh"):
    """``LinearHead(D, C)`` when ``hidden`` is None, else ``TwoLayerHead(D, hidden, C, activation)``."""
    if hidden is None:
        return LinearHead(n_features, n_classes)
    return TwoLayerHead(n_features, check_positive_int(hidden, "hidden"), n_classes, activation)


def fit_head(
    X,
    y,
    n_classes,
    *,
    hidden=None,
    activation="tanh",
    method=DEFAULT_METHOD,
    l2=1e-4,
    damping=1.0,
    max_iter=100,
    batch_size=None,
    tol=1e-4,
    solver="auto",
    device="cpu",
    dtype="float32",
    seed=0,
    verbose=0,
    sample_weight=None,
    init=None,
):
    """Train a head on encoded labels: the core of :meth:`FGNClassifier.fit`.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, D)
        Finite features (any float or integer dtype; cast to ``dtype``), or
        a ``dask.array`` chunked by rows (``device`` that of its chunks:
        "cpu" for NumPy, "gpu" for CuPy; ``y`` and ``sample_weight`` then
        stay as they are: see
        :func:`fgn_arrays.optim.minimize`).
    y : numpy.ndarray of int, shape (N,)
        Labels in ``[0, n_classes)``.
    n_classes : int
        ``C >= 2``.
    hidden, activation, method, l2, damping, max_iter, batch_size, tol, solver, verbose
        As in :class:`FGNClassifier`.
    device : {"cpu", "gpu"}
        Where the data are copied and the parameters live.
    dtype : {"float32", "float64"}
    seed : int, default 0
        Seed of ``head.init_params`` and ``random_state`` of
        :func:`fgn_arrays.optim.minimize` (curvature rows, mini-batch order).
        ``None`` draws fresh entropy: runs then differ.
    sample_weight : numpy.ndarray, shape (N,), optional
        Row weights (:func:`fgn_arrays.optim.minimize`).
    init : (head, theta), optional
        Start from these parameters (a warm start; ``theta`` is cast to
        ``dtype`` and moved to ``device``) instead of a fresh head from
        ``head.init_params(seed)``. ``damping`` is then the damping to
        start with.

    Returns
    -------
    head : LinearHead or TwoLayerHead
    result : OptimizeResult
        ``result.theta`` lives on ``device``; its output biases are centred
        (``sum_c b_c = 0``, which softmax cannot tell from any other shift).
    """
    dtype = check_dtype(dtype)
    if init is None:
        head = make_head(X.shape[1], n_classes, hidden, activation)
        theta0 = head.init_params(seed=seed, dtype=dtype.name, device=device)
    else:
        head, theta = init
        theta0 = to_device(theta, device).astype(dtype)
    if any(is_dask_array(a) for a in (X, y, sample_weight)):
        X_dev, y_dev, sw_dev = X, y, sample_weight  # the rows stay in their chunks (fgn_arrays._dask)
    else:
        X_dev, y_dev = to_device(X, device), to_device(y, device)
        sw_dev = None if sample_weight is None else to_device(sample_weight, device)
    result = minimize(
        head,
        theta0,
        X_dev,
        y_dev,
        method=method,
        l2=l2,
        damping=damping,
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        solver=solver,
        random_state=seed,
        sample_weight=sw_dev,
        verbose=verbose,
    )
    # Softmax ignores a common shift of the output biases (they are not penalised): the
    # centred ones, as scikit-learn's multinomial LogisticRegression reports them.
    output_bias = head.unflatten(result.theta)[-1]
    output_bias -= output_bias.mean()
    return head, result


def head_logits(head, theta, X):
    """Logits ``Z (N, C)`` of ``head`` at ``theta``, as a float64 NumPy array.

    ``X`` (host or device array) is moved to ``theta``'s device; the product
    runs there, in float64 whatever ``theta``'s dtype, and only ``Z`` comes
    back. Float64 makes a row's logits independent, to rounding far below
    float32's, of the other rows it is batched with (BLAS changes its
    summation order with the batch size).
    """
    device = "gpu" if is_device_array(theta) else "cpu"
    return to_numpy(head.logits(theta.astype("float64"), to_device(X, device)))


# ---- the scikit-learn estimator ------------------------------------------------

if HAVE_SKLEARN:
    _BASES = (ClassifierMixin, BaseEstimator)
else:

    class _SklearnMissing:
        """Stands in for scikit-learn's bases: instantiating raises ``ImportError``."""

        def __new__(cls, *args, **kwargs):
            raise ImportError(SKLEARN_MISSING)

    _BASES = (_SklearnMissing,)


class FGNClassifier(*_BASES):
    """Softmax classifier (linear or one hidden layer) trained by damped FGN steps.

    Minimizes ``mean cross-entropy + (l2/2) ||weights||^2`` with
    :func:`fgn_arrays.optim.minimize`: Levenberg-Marquardt-damped
    Gauss-Newton steps built on the Fast Gauss-Newton (FGN) system, solved in
    row space (one row per example).

    Parameters
    ----------
    hidden : int or None, default None
        ``None``: a linear head ``Z = X W^T + b``. An int ``H``: a two-layer
        head ``Z = phi(X W1^T + b1) W2^T + b2`` with ``H`` hidden units.
    activation : {"tanh", "relu", "gelu"}, default "tanh"
        ``phi`` of the two-layer head (ignored when ``hidden`` is None).
    method : {"fgn-compensated", "fgn", "ggn-pcg"}, default "fgn-compensated"
        The step, as ``method`` of :func:`fgn_arrays.optim.minimize` (see
        there and :mod:`fgn_arrays.methods` for the details):

        - ``"fgn-compensated"``: the damped FGN step, damped further by a
          Kronecker-factored stand-in for the competitor covariance FGN
          drops, on at most 2048 curvature rows drawn per step, and
          length-corrected in the plane of the step and the previous one.
        - ``"fgn"``: the paper's algorithm, the plain damped FGN step on all
          rows with Levenberg-Marquardt damping.
        - ``"ggn-pcg"``: the damped full Gauss-Newton step (for the linear
          head, Newton's), by CG preconditioned with the FGN system.
    l2 : float, default 1e-4
        Weight penalty of the *mean* loss: ``l2 = 1 / (C N)`` matches
        scikit-learn's multinomial ``LogisticRegression(C=C)`` on ``N``
        samples (``2 / (C N)`` for its binary case; see Notes). With sample
        or class weights ``N`` becomes their sum ``sum_i s_i``, as in
        scikit-learn.
    class_weight : dict, "balanced" or None, default None
        Weights of the classes, scikit-learn's definitions: a dict
        ``{label: weight}`` (missing labels weigh 1), or ``"balanced"``,
        ``n_samples / (n_classes * count(class))`` with the counts weighted
        by ``sample_weight`` when it is given
        (``sklearn.utils.class_weight.compute_class_weight``). Row ``i``
        weighs ``sample_weight_i * class_weight[y_i]`` in the mean loss.
    warm_start : bool, default False
        A new :meth:`fit` starts from the fitted parameters and damping
        (``theta_``, ``damping_``) instead of ``random_state``'s fresh
        ones, when there are any; ``classes_``, the number of features and
        the head must be the same (``ValueError`` otherwise).
    damping : float, default 1.0
        Initial Levenberg-Marquardt damping (> 0).
    max_iter : int, default 100
        Full batch: FGN steps, accepted or not. Mini-batch: epochs.
    batch_size : int or None, default None
        ``None``: full batch. Otherwise mini-batches of this size, reshuffled
        each epoch.
    tol : float, default 1e-4
        Stop when ``||grad L||_inf <= tol``, the gradient of the mean
        objective above: ``LogisticRegression(tol=1e-4)``'s stopping
        criterion (``lbfgs``, ``newton-cg``) on the same objective, so the
        default stops where scikit-learn's does. A run also stops, converged,
        when its steps no longer change the objective measurably in
        ``dtype`` (float32 may not reach a small ``tol``). With mini-batches
        ``tol`` only decides, on the full data after the last epoch, whether
        the run converged.
    solver : {"auto", "cg", "cholesky"}, default "auto"
        Row-space solver of the FGN system; it never changes the step.
        ``"fgn"`` accepts all three, ``"fgn-compensated"`` ``"auto"`` and
        ``"cg"``, ``"ggn-pcg"`` only ``"auto"`` (``ValueError`` at fit).
    device : {"auto", "cpu", "gpu"}, default "auto"
        Where data and parameters live while fitting and predicting;
        ``"auto"`` is the GPU when :func:`fgn_arrays.gpu_available`.
        Predictions come back as NumPy arrays (Dask arrays for a Dask ``X``).
    dtype : {"float32", "float64"} or None, default None
        Compute dtype of parameters and features. ``None``: float32 for
        float32 input, float64 for anything else (as scikit-learn keeps
        float32 and float64 input dtypes); a value forces that dtype.
        Float32 halves memory and is about twice as fast, but may not reach
        a small ``tol``.
    random_state : int, RandomState instance or None, default None
        Seed of all the randomness of a fit: the initial weights (an int is
        passed to ``head.init_params(seed=...)`` as is), the curvature rows
        drawn at each step (``"fgn-compensated"`` and ``"ggn-pcg"`` on more
        than 2048 rows) and the mini-batch order (``batch_size``). ``None``
        means the seed 0, so that two fits of the same data give the same
        parameters (unlike scikit-learn's convention of fresh randomness); a
        ``RandomState`` instance draws the seed from its stream.
    verbose : int, default 0
        Print one progress line per step when > 0 (the columns are described
        under ``verbose`` of :func:`fgn_arrays.optim.minimize`).

    Attributes
    ----------
    classes_ : numpy.ndarray, shape (C,)
        The class labels, sorted (``numpy.unique`` of ``y``).
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    head_ : LinearHead or TwoLayerHead
        The fitted head, always with ``C`` outputs (2 for binary problems).
    theta_ : array, shape (P,)
        Flat parameters of ``head_``, on the fitting device (NumPy or CuPy).
    device_ : {"cpu", "gpu"}
        The device ``device`` resolved to.
    coef_ : numpy.ndarray, shape (C, D), or (1, D) for two classes
        Linear head only: ``W``; for two classes ``w_1 - w_0``, as
        scikit-learn's ``LogisticRegression``.
    intercept_ : numpy.ndarray, shape (C,), or (1,) for two classes
        Linear head only: ``b``, centred (``sum_c b_c = 0``: softmax
        ignores a common shift of the unpenalised biases; scikit-learn's
        multinomial ``LogisticRegression`` centres them too); for two
        classes ``b_1 - b_0``.
    coefs_ : list of numpy.ndarray
        Two-layer head only, as ``MLPClassifier``: ``[W1^T (D, H), W2^T (H, C)]``
        (``C = 2`` outputs for two classes).
    intercepts_ : list of numpy.ndarray
        Two-layer head only: ``[b1 (H,), b2 (C,)]``.
    n_iter_ : int
        Iterations run (steps, or epochs with mini-batches).
    loss_curve_ : list of float
        Objective after each step (the optimizer's history; a rejected step
        repeats the previous value). With mini-batches, the objective of each
        step's batch.
    objective_ : float
        Final objective on the full training data.
    damping_ : float
        Final damping (where ``warm_start`` resumes).

    Notes
    -----
    For ``C >= 3`` the objective is scikit-learn's multinomial logistic
    regression objective ``C_sk sum_i CE_i + (1/2) ||W||^2`` divided by
    ``C_sk N``. For two classes the softmax head has two rows; its optimum has
    ``w_0 = -w_1``, so its penalty equals ``(l2/4) ||w_1 - w_0||^2`` and
    ``l2 = 2 / (C_sk N)`` reproduces binary ``LogisticRegression(C=C_sk)``,
    whose ``coef_`` is ``w_1 - w_0``. ``decision_function`` then returns
    ``z_1 - z_0`` of shape ``(N,)``, as scikit-learn's binary classifiers do.

    A run that stops at ``max_iter`` without meeting ``tol`` (its
    ``status`` is ``"maxiter (N) reached"``) emits
    ``sklearn.exceptions.ConvergenceWarning``; one that stops because its
    steps no longer change the objective in ``dtype`` counts as converged
    and does not.

    Examples
    --------
    >>> from fgn_arrays import FGNClassifier
    >>> from fgn_arrays.datasets import load_wordnet_glosses
    >>> data = load_wordnet_glosses(min_per_class=50)
    >>> clf = FGNClassifier(l2=1e-4, max_iter=20, device="cpu").fit(data.X, data.y)
    >>> clf.coef_.shape
    (133, 384)
    """

    def __init__(
        self,
        hidden=None,
        activation="tanh",
        method=DEFAULT_METHOD,
        l2=1e-4,
        damping=1.0,
        max_iter=100,
        batch_size=None,
        tol=1e-4,
        solver="auto",
        device="auto",
        dtype=None,
        random_state=None,
        class_weight=None,
        warm_start=False,
        verbose=0,
    ):
        self.hidden = hidden
        self.activation = activation
        self.method = method
        self.l2 = l2
        self.damping = damping
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.solver = solver
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Multiclass softmax on dense, finite features.
        tags.classifier_tags.multi_class = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    # ---- fitting -------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the head to ``(X, y)`` by damped FGN steps.

        Parameters
        ----------
        X : array-like, shape (N, D)
            Dense features. CuPy arrays are copied to the host for validation.
            A ``dask.array`` chunked by rows (NumPy or CuPy chunks; ``y`` and
            ``sample_weight`` then Dask, NumPy or CuPy arrays) stays in its
            chunks: the fit makes passes over them
            (:func:`fgn_arrays.optim.minimize`, ``docs/scaling.md``) on the
            chunks' device; ``device`` must be ``"auto"`` or that device
            (``"cpu"`` for NumPy chunks, ``"gpu"`` for CuPy chunks).
        y : array-like, shape (N,)
            Class labels of any type, at least two distinct values.
        sample_weight : array-like, shape (N,), optional
            Non-negative row weights: the loss is ``sum_i s_i CE_i / sum_i
            s_i`` (times ``class_weight[y_i]``). Integer weights fit as the
            rows repeated; rows of weight 0 are left out.

        Returns
        -------
        self : FGNClassifier
        """
        dtype = None if self.dtype is None else check_dtype(self.dtype)
        warm = self._warm_start_point()
        if any(is_dask_array(a) for a in (X, y, sample_weight)):
            device, X, y, y_encoded, classes = self._dask_data(X, y, reset=warm is None)
            dtype = (X.dtype if X.dtype == numpy.float32 else numpy.dtype(numpy.float64)) if dtype is None else dtype
        else:
            device = resolve_device(self.device)
            # dtype None: float32 stays float32, anything else becomes float64
            X, y = validate_data(self, _host(X), _host(y),
                                 dtype=[numpy.float64, numpy.float32] if dtype is None else dtype, reset=warm is None)
            dtype = X.dtype if dtype is None else dtype
            check_classification_targets(y)
            classes, y_encoded = numpy.unique(y, return_inverse=True)
            y_encoded = y_encoded.astype(numpy.int64)
        if classes.shape[0] < 2:
            raise ValueError(
                f"FGNClassifier needs samples of at least 2 classes; got 1 class "
                f"({classes[:1].tolist()[0]!r}) in `y`."
            )
        if warm is not None and not numpy.array_equal(classes, self.classes_):
            raise ValueError(
                f"warm_start=True needs the classes of the previous fit, {self.classes_.tolist()!r}; "
                f"got {classes.tolist()!r}."
            )
        self.classes_ = classes
        sample_weight = self._row_weights(X, y, y_encoded, sample_weight)
        head, result = fit_head(
            X,
            y_encoded,
            self.classes_.shape[0],
            hidden=self.hidden,
            activation=self.activation,
            method=self.method,
            l2=self.l2,
            damping=self.damping if warm is None else self.damping_,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            tol=self.tol,
            solver=self.solver,
            device=device,
            dtype=dtype,
            seed=_seed(self.random_state),
            verbose=self.verbose,
            sample_weight=sample_weight,
            init=warm,
        )
        self.head_, self.theta_, self.device_ = head, result.theta, device
        self.damping_ = float(result.damping)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = [float(v) for v in result.history["objective"]]
        self.objective_ = float(result.objective)
        self._set_public_params()
        # Statuses of minimize: "converged: ..." (converged), "maxiter (N) reached",
        # "stopped by callback" (no callback here).
        if not result.converged:
            warnings.warn(
                f"FGNClassifier did not converge in max_iter={self.max_iter} iterations "
                f"(||grad||_inf = {result.grad_norm:.3g} > tol = {self.tol}); "
                "raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _warm_start_point(self):
        """``(head_, theta_)`` to resume from (``warm_start`` and a previous fit of the same head), else None."""
        if not self.warm_start or not hasattr(self, "theta_"):
            return None
        head = self.head_
        hidden = getattr(head, "n_hidden", None)
        activation = getattr(head, "activation", self.activation)
        if hidden != self.hidden or (hidden is not None and activation != self.activation):
            raise ValueError(
                f"warm_start=True needs the head of the previous fit ({head!r}); got hidden={self.hidden!r}, "
                f"activation={self.activation!r}."
            )
        return head, self.theta_

    def _dask_data(self, X, y, reset):
        """``(device, X, y, y_encoded, classes)`` of Dask data; ``classes_`` and ``n_features_in_`` checked or set.

        The values are checked by :func:`fgn_arrays.minimize` (one pass);
        here only ``y``'s classes are computed (one pass over ``y``, its
        chunks copied to the host). The device is the chunks' own: ``"cpu"``
        for NumPy chunks, ``"gpu"`` for CuPy chunks.
        """
        from . import _dask

        if not is_dask_array(X):
            raise TypeError(f"`X` must be a Dask array when `y` or `sample_weight` is one; got {type(X).__name__}.")
        device = _dask.chunk_device(X)
        if self.device not in ("auto", device):
            kind, move = (("CuPy", "X.map_blocks(cupy.asnumpy)") if device == "gpu"
                          else ("NumPy", "X.map_blocks(cupy.asarray)"))
            raise ValueError(f"`device` must be 'auto' or {device!r} for a Dask `X` with {kind} chunks (the fit runs "
                             f"where the chunks are); got {self.device!r}. To fit elsewhere, move the chunks first "
                             f"({move}).")
        if X.ndim != 2:
            raise ValueError(f"`X` must be 2-D (n_samples, n_features); got shape {X.shape}.")
        if X.dtype.kind not in "iuf" or X.dtype.kind == "b":
            raise TypeError(f"`X` must hold real numbers; got dtype {X.dtype}.")
        if reset:
            self.n_features_in_ = X.shape[1]
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        y = _dask.on_host(_dask.as_rows_like(y, X), "y")
        classes, y_encoded = _dask.encode_labels(y)
        check_classification_targets(classes)
        return device, X, y, y_encoded, classes

    def _row_weights(self, X, y, y_encoded, sample_weight):
        """``sample_weight * class_weight[y]`` as a float64 NumPy array, or None when neither is given.

        Dask data: a Dask array (``"balanced"`` counts the classes in one pass over ``y``).
        """
        if is_dask_array(X):
            return self._dask_row_weights(X, y_encoded, sample_weight)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=numpy.float64, ensure_non_negative=True)
        if self.class_weight is None:
            return sample_weight
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=sample_weight)
        per_row = weights[y_encoded]
        return per_row if sample_weight is None else sample_weight * per_row

    def _dask_row_weights(self, X, y_encoded, sample_weight):
        from . import _dask

        if sample_weight is not None:
            sample_weight = _dask.on_host(_dask.as_rows_like(sample_weight, X), "sample_weight")
        if self.class_weight is None:
            return sample_weight
        n_classes = self.classes_.shape[0]
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            # scikit-learn's definition: sum of the (weighted) counts / (C * count of the class)
            counts = _dask.class_counts(y_encoded, n_classes, sample_weight)
            weights = counts.sum() / (n_classes * counts)
        else:
            weights = compute_class_weight(self.class_weight, classes=self.classes_, y=self.classes_)
        per_row = _dask.per_row(y_encoded, numpy.asarray(weights, dtype=numpy.float64))
        return per_row if sample_weight is None else sample_weight * per_row

    def _set_public_params(self):
        # Host copies of the parameter blocks, in scikit-learn's names.
        blocks = [to_numpy(b).copy() for b in self.head_.unflatten(self.theta_)]
        if self.hidden is None:
            W, b = blocks
            if W.shape[0] == 2:
                # z_1 - z_0 = x . (w_1 - w_0) + (b_1 - b_0)
                W, b = W[1:] - W[:1], b[1:] - b[:1]
            self.coef_, self.intercept_ = W, b
        else:
            W1, b1, W2, b2 = blocks
            self.coefs_ = [W1.T.copy(), W2.T.copy()]
            self.intercepts_ = [b1, b2]

    # ---- prediction ----------------------------------------------------------

    def _logits(self, X):
        check_is_fitted(self)
        if is_dask_array(X):  # a Dask array of the logits, block by block
            from . import _dask

            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has shape {X.shape}, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            return _dask.logits(self.head_, self.theta_, X)
        X = validate_data(self, _host(X), reset=False, dtype=numpy.float64)
        return head_logits(self.head_, self.theta_, X)

    def decision_function(self, X):
        """Logits, or ``z_1 - z_0`` for two classes.

        Returns
        -------
        numpy.ndarray of float64, shape (N, C), or (N,) for two classes
            A Dask array (chunked as ``X``'s rows) for a Dask ``X``, as are
            the other predictions.
        """
        Z = self._logits(X)
        return Z[:, 1] - Z[:, 0] if Z.shape[1] == 2 else Z

    def predict_log_proba(self, X):
        """Log of the softmax probabilities, ``Z - logsumexp(Z)``.

        Returns
        -------
        numpy.ndarray of float64, shape (N, C)
            Columns in the order of ``classes_``.
        """
        return _rowwise(self._logits(X), scipy.special.log_softmax)

    def predict_proba(self, X):
        """Softmax probabilities.

        Returns
        -------
        numpy.ndarray of float64, shape (N, C)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        return _rowwise(self._logits(X), scipy.special.softmax)

    def predict(self, X):
        """The most probable class of each row.

        Returns
        -------
        numpy.ndarray, shape (N,)
            Values from ``classes_``.
        """
        Z = self._logits(X)
        if is_dask_array(Z):
            from ._dask import predict

            return predict(Z, self.classes_)
        return self.classes_[numpy.argmax(Z, axis=1)]


def _rowwise(Z, func):
    """``func(Z, axis=1)``, block by block for a Dask ``Z``."""
    if is_dask_array(Z):
        from ._dask import rowwise

        return rowwise(Z, func)
    return func(Z, axis=1)


def _host(a):
    """CuPy arrays to NumPy (scikit-learn's validation works on the host); anything else unchanged."""
    return to_numpy(a) if is_device_array(a) else a


DEFAULT_SEED = 0


def _seed(random_state):
    """An int seed: an int as is, None as ``DEFAULT_SEED`` (repeatable fits), a RandomState draws one."""
    if random_state is None:
        return DEFAULT_SEED
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(numpy.iinfo(numpy.int32).max))
