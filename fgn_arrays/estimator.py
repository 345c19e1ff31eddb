"""A scikit-learn classifier trained by damped FGN steps: :class:`FGNClassifier`.

Conventions
-----------
The objective is the one :func:`fgn_arrays.optim.minimize` minimizes,

    L(theta) = (1/N) sum_i CE(Z_i, y_i) + (l2/2) ||theta_w||^2,

a *mean* cross-entropy plus a penalty on the weights only (biases are free).
With ``C >= 3`` classes it is scikit-learn's multinomial
``LogisticRegression(C=C_sk)`` objective divided by ``C_sk N``, hence

    l2 = 1 / (C_sk N)        (C_sk: LogisticRegression's C).

Two classes keep a softmax head with two rows ``W = [w_0; w_1]``. At the
optimum ``w_0 = -w_1`` (their gradients are opposite), so the penalty
``(l2/2)(|w_0|^2 + |w_1|^2)`` equals ``(l2/4) |w_1 - w_0|^2``: scikit-learn's
*binary* ``LogisticRegression(C=C_sk)`` (one weight vector ``w_1 - w_0``) is
matched by ``l2 = 2 / (C_sk N)``.

Labels of any type are encoded as ``0 .. C-1`` in the order of ``classes_``
(``numpy.unique``). Predictions are computed on the fitting device, in
float64 (see :func:`head_logits`), and returned as NumPy arrays.

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
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted

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
):
    """Train a fresh head on encoded labels: the core of :meth:`FGNClassifier.fit`.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, D)
        Finite features (any float or integer dtype; cast to ``dtype``).
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

    Returns
    -------
    head : LinearHead or TwoLayerHead
    result : OptimizeResult
        ``result.theta`` lives on ``device``.
    """
    head = make_head(X.shape[1], n_classes, hidden, activation)
    theta0 = head.init_params(seed=seed, dtype=check_dtype(dtype).name, device=device)
    X_dev, y_dev = to_device(X, device), to_device(y, device)
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
        verbose=verbose,
    )
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
        samples (``2 / (C N)`` for its binary case; see Notes).
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
        Predictions always come back as NumPy arrays.
    dtype : {"float32", "float64"}, default "float32"
        Compute dtype of parameters and features.
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
        Linear head only: ``b``; for two classes ``b_1 - b_0``.
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
        dtype="float32",
        random_state=None,
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
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Multiclass softmax on dense, finite features; no sample weights.
        tags.classifier_tags.multi_class = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    # ---- fitting -------------------------------------------------------------

    def fit(self, X, y):
        """Fit the head to ``(X, y)`` by damped FGN steps.

        Parameters
        ----------
        X : array-like, shape (N, D)
            Dense features. CuPy arrays are copied to the host for validation.
        y : array-like, shape (N,)
            Class labels of any type, at least two distinct values.

        Returns
        -------
        self : FGNClassifier
        """
        dtype = check_dtype(self.dtype)
        device = resolve_device(self.device)
        X, y = validate_data(self, _host(X), _host(y), dtype=dtype)
        check_classification_targets(y)
        self.classes_, y_encoded = numpy.unique(y, return_inverse=True)
        if self.classes_.shape[0] < 2:
            raise ValueError(
                f"FGNClassifier needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[:1].tolist()[0]!r}) in `y`."
            )
        head, result = fit_head(
            X,
            y_encoded.astype(numpy.int64),
            self.classes_.shape[0],
            hidden=self.hidden,
            activation=self.activation,
            method=self.method,
            l2=self.l2,
            damping=self.damping,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            tol=self.tol,
            solver=self.solver,
            device=device,
            dtype=dtype,
            seed=_seed(self.random_state),
            verbose=self.verbose,
        )
        self.head_, self.theta_, self.device_ = head, result.theta, device
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
        X = validate_data(self, _host(X), reset=False, dtype=numpy.float64)
        return head_logits(self.head_, self.theta_, X)

    def decision_function(self, X):
        """Logits, or ``z_1 - z_0`` for two classes.

        Returns
        -------
        numpy.ndarray of float64, shape (N, C), or (N,) for two classes
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
        return scipy.special.log_softmax(self._logits(X), axis=1)

    def predict_proba(self, X):
        """Softmax probabilities.

        Returns
        -------
        numpy.ndarray of float64, shape (N, C)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        return scipy.special.softmax(self._logits(X), axis=1)

    def predict(self, X):
        """The most probable class of each row.

        Returns
        -------
        numpy.ndarray, shape (N,)
            Values from ``classes_``.
        """
        Z = self._logits(X)
        return self.classes_[numpy.argmax(Z, axis=1)]


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
