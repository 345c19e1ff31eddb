"""Tests of fgn_arrays.estimator: FGNClassifier, a scikit-learn classifier trained by FGN steps."""

import contextlib
import subprocess
import sys
import textwrap
import time
import warnings

import numpy
import pytest
import scipy.special

sklearn = pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import HAS_GPU

import fgn_arrays as fa
from fgn_arrays import FGNClassifier


def objective(W, b, X, y, l2):
    """Reference: mean softmax CE + (l2/2) ||W||^2 in float64, for a linear model ``Z = X W^T + b``.

    Independent of the code under test (plain logsumexp on the host).
    """
    Z = numpy.asarray(X, numpy.float64) @ numpy.asarray(W, numpy.float64).T + numpy.asarray(b, numpy.float64)
    ce = scipy.special.logsumexp(Z, axis=1) - Z[numpy.arange(len(y)), y]
    return float(numpy.mean(ce) + 0.5 * l2 * numpy.sum(numpy.asarray(W, numpy.float64) ** 2))


def softmax_problem(n_samples=300, n_features=6, n_classes=4, seed=0):
    """Labels drawn from a random linear softmax model: overlapping classes, a finite optimum."""
    rng = numpy.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W = rng.standard_normal((n_classes, n_features))
    y = numpy.argmax(X @ W.T + rng.gumbel(size=(n_samples, n_classes)), axis=1)
    return X, y


@contextlib.contextmanager
def tolerate_convergence_warning():
    """Ignore ConvergenceWarning: short runs may stop at max_iter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# ---- scikit-learn's estimator checks ----------------------------------------------


# scikit-learn's own common tests ignore ConvergenceWarning (their data are
# tiny and often separable, so a weakly penalised fit stops at max_iter);
# warnings are errors in this suite, so do the same here.
# The sample-weight equivalence check compares a fit with integer weights and one
# with the rows repeated to 1e-7 in predict_proba: both must reach the optimum to
# far below the default tol=1e-4 (on its 15 nearly separable rows, the default
# l2=1e-4 leaves the two runs stopping at different points), and a two-layer head
# has local optima. The FGN methods converge linearly and stop where the
# objective no longer changes in float64 (||grad|| ~ 1e-9 here, logits agreeing
# to ~5e-8), so the instance that runs it takes exact Newton steps ("ggn-pcg")
# to tol=1e-12; the equivalence of every method is tested in test_sample_weight.py.
TIGHT = FGNClassifier(method="ggn-pcg", l2=0.1, tol=1e-12, max_iter=500)
SAMPLE_WEIGHT_EQUIVALENCE = {
    check: "stops at tol=1e-4 (or a local optimum) before predictions agree to 1e-7; run on the tol=1e-12 instance"
    for check in ("check_sample_weight_equivalence_on_dense_data",)
}


def _expected_failures(estimator):
    return {} if estimator is TIGHT else SAMPLE_WEIGHT_EQUIVALENCE


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [FGNClassifier(), FGNClassifier(hidden=8, max_iter=30), TIGHT], expected_failed_checks=_expected_failures
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---- fit and predict -------------------------------------------------------------


def test_string_labels_fit_predict():
    X, y_int = softmax_problem()
    names = numpy.array(["ant", "bee", "cat", "dog"])
    y = names[y_int]
    clf = FGNClassifier(device="cpu", random_state=0).fit(X, y)
    numpy.testing.assert_array_equal(clf.classes_, names)
    pred = clf.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(names)
    assert clf.score(X, y) > 0.7
    assert clf.n_features_in_ == X.shape[1]
    assert clf.n_iter_ == len(clf.loss_curve_) >= 1
    # Each accepted step lowers the objective; a rejected one repeats it.
    assert all(b <= a for a, b in zip(clf.loss_curve_, clf.loss_curve_[1:]))
    assert clf.objective_ == pytest.approx(clf.loss_curve_[-1], rel=1e-6)


def test_label_values_are_kept_not_reindexed():
    X, y_int = softmax_problem(n_classes=3)
    y = numpy.array([-5, 10, 42])[y_int]
    clf = FGNClassifier(device="cpu", random_state=0).fit(X, y)
    numpy.testing.assert_array_equal(clf.classes_, [-5, 10, 42])
    assert set(clf.predict(X)) <= {-5, 10, 42}


def test_linear_attributes_and_probabilities():
    X, y = softmax_problem(n_classes=4)
    clf = FGNClassifier(device="cpu", random_state=0).fit(X, y)
    N, D = X.shape
    assert clf.coef_.shape == (4, D) and clf.intercept_.shape == (4,)
    assert isinstance(clf.coef_, numpy.ndarray) and isinstance(clf.head_, fa.LinearHead)
    assert not hasattr(clf, "coefs_")
    Z = clf.decision_function(X)
    assert Z.shape == (N, 4) and Z.dtype == numpy.float64
    # decision_function is X coef_^T + intercept_ (float32 parameters, float64 product)
    numpy.testing.assert_allclose(Z, X @ clf.coef_.T.astype(numpy.float64) + clf.intercept_, rtol=1e-12, atol=1e-12)
    proba = clf.predict_proba(X)
    numpy.testing.assert_allclose(proba, scipy.special.softmax(Z, axis=1), rtol=1e-12, atol=1e-15)
    numpy.testing.assert_allclose(clf.predict_log_proba(X), numpy.log(proba), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_array_equal(clf.predict(X), clf.classes_[numpy.argmax(proba, axis=1)])


def test_binary_follows_sklearn_conventions():
    X, y = softmax_problem(n_classes=2)
    clf = FGNClassifier(device="cpu", random_state=0).fit(X, ["no" if v == 0 else "yes" for v in y])
    N, D = X.shape
    assert clf.coef_.shape == (1, D) and clf.intercept_.shape == (1,)
    W, _ = (fa.to_numpy(p) for p in clf.head_.unflatten(clf.theta_))
    assert W.shape == (2, D)  # the head itself keeps two softmax rows
    numpy.testing.assert_allclose(clf.coef_[0], W[1] - W[0])
    dec = clf.decision_function(X)
    assert dec.shape == (N,)
    numpy.testing.assert_allclose(dec, X @ clf.coef_[0].astype(numpy.float64) + clf.intercept_[0], rtol=1e-6, atol=1e-6)
    proba = clf.predict_proba(X)
    assert proba.shape == (N, 2)
    numpy.testing.assert_allclose(proba[:, 1], scipy.special.expit(dec), rtol=1e-12, atol=1e-15)
    numpy.testing.assert_array_equal(clf.predict(X), numpy.where(dec > 0, "yes", "no"))


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_two_layer_attributes(activation):
    X, y = softmax_problem(n_classes=3)
    H = 7
    clf = FGNClassifier(hidden=H, activation=activation, device="cpu", random_state=0, max_iter=20)
    with tolerate_convergence_warning():
        clf.fit(X, y)
    D = X.shape[1]
    assert isinstance(clf.head_, fa.TwoLayerHead) and clf.head_.activation == activation
    assert [c.shape for c in clf.coefs_] == [(D, H), (H, 3)]
    assert [b.shape for b in clf.intercepts_] == [(H,), (3,)]
    assert not hasattr(clf, "coef_")
    # The MLPClassifier layout reproduces the logits: Z = phi(X W1^T + b1) W2^T + b2
    phi = {
        "tanh": numpy.tanh,
        "relu": lambda h: numpy.maximum(h, 0),
        "gelu": lambda h: h * scipy.special.ndtr(h),
    }[activation]
    c = [a.astype(numpy.float64) for a in clf.coefs_]
    b = [a.astype(numpy.float64) for a in clf.intercepts_]
    Z = phi(X @ c[0] + b[0]) @ c[1] + b[1]
    numpy.testing.assert_allclose(clf.decision_function(X), Z, rtol=1e-9, atol=1e-9)


def test_random_state_none_is_repeatable():
    # random_state=None means the seed 0: the initial weights, the curvature rows (drawn at
    # each step from more than 2048 rows) and the mini-batch order repeat from fit to fit.
    X, y = softmax_problem(n_samples=2600)
    fits = {}
    for random_state in (None, None, 0, 1):
        for batch_size in (None, 1000):
            clf = FGNClassifier(hidden=3, batch_size=batch_size, max_iter=3, device="cpu", random_state=random_state)
            with tolerate_convergence_warning():
                clf.fit(X, y)
            fits.setdefault(batch_size, []).append(fa.to_numpy(clf.theta_))
    for thetas in fits.values():
        numpy.testing.assert_array_equal(thetas[0], thetas[1])  # None twice
        numpy.testing.assert_array_equal(thetas[0], thetas[2])  # None is 0
        assert not numpy.array_equal(thetas[0], thetas[3])  # the seed does matter


def test_random_state_seeds_the_initial_parameters():
    X, y = softmax_problem()
    with pytest.warns(ConvergenceWarning, match="max_iter=0"):
        clf = FGNClassifier(device="cpu", random_state=3, max_iter=0).fit(X, y)
    theta0 = fa.LinearHead(X.shape[1], 4).init_params(seed=3, dtype="float64")  # zero biases: centred already
    numpy.testing.assert_array_equal(fa.to_numpy(clf.theta_), theta0)
    a = FGNClassifier(device="cpu", random_state=1).fit(X, y)
    b = FGNClassifier(device="cpu", random_state=1).fit(X, y)
    numpy.testing.assert_array_equal(a.coef_, b.coef_)


@pytest.mark.parametrize(
    "data_dtype, dtype, expected",
    [
        (numpy.float64, None, numpy.float64),
        (numpy.float32, None, numpy.float32),
        (numpy.int64, None, numpy.float64),  # as scikit-learn: anything but float32 becomes float64
        (numpy.float64, "float32", numpy.float32),
        (numpy.float32, "float64", numpy.float64),
    ],
)
def test_dtype_follows_the_input_unless_forced(data_dtype, dtype, expected):
    X, y = softmax_problem(n_samples=100)
    X = (X * 10).astype(data_dtype)
    with tolerate_convergence_warning():
        clf = FGNClassifier(hidden=None, device="cpu", dtype=dtype, max_iter=3).fit(X, y)
    assert clf.theta_.dtype == expected and clf.coef_.dtype == expected and clf.intercept_.dtype == expected
    two = FGNClassifier(hidden=3, device="cpu", dtype=dtype, max_iter=1)
    with tolerate_convergence_warning():
        assert all(w.dtype == expected for w in two.fit(X, y).coefs_)


def test_output_biases_are_centred():
    X, y = softmax_problem()
    for hidden in (None, 3):
        with tolerate_convergence_warning():
            clf = FGNClassifier(hidden=hidden, device="cpu", max_iter=5).fit(X, y)
        b = clf.intercept_ if hidden is None else clf.intercepts_[1]
        assert abs(b.sum()) < 1e-12 * numpy.abs(b).sum() and numpy.abs(b).max() > 1e-3


def test_max_iter_reached_warns():
    X, y = softmax_problem()
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        clf = FGNClassifier(device="cpu", max_iter=2, random_state=0).fit(X, y)
    assert clf.n_iter_ == 2


def test_mini_batch_fit():
    X, y = softmax_problem(n_samples=400)
    with tolerate_convergence_warning():
        clf = FGNClassifier(device="cpu", batch_size=100, max_iter=5, random_state=0).fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5 * 4  # 5 epochs of 4 mini-batches
    # From log(4) ~ 1.39 at the start (near-zero weights) to well below; full batch reaches 0.67.
    assert clf.objective_ < 0.7 * numpy.log(4)
    assert clf.score(X, y) > 0.6


# ---- errors ----------------------------------------------------------------------


def test_single_class_raises():
    X, _ = softmax_problem()
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        FGNClassifier(device="cpu").fit(X, numpy.full(len(X), "only"))


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"device": "tpu"}, ValueError, "`device` must be one of"),
        ({"dtype": "float16"}, TypeError, "`dtype` must be 'float32' or 'float64'"),
        ({"hidden": 0}, ValueError, "`hidden` must be >= 1"),
        ({"hidden": 2.5}, TypeError, "`hidden` must be an integer"),
        ({"hidden": 4, "activation": "sigmoid"}, ValueError, "`activation` must be one of"),
        ({"l2": -1.0}, ValueError, "`l2` must be finite and >= 0"),
        ({"damping": 0.0}, ValueError, "`damping` must be > 0"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be >= 1"),
        ({"method": "newton"}, ValueError, r"`method` must be one of .*got 'newton'"),
        ({"method": "ggn-pcg", "solver": "cg"}, ValueError, "`solver` must be one of .* for method 'ggn-pcg'"),
        ({"method": "fgn-compensated", "solver": "cholesky"}, ValueError, "`solver` must be one of"),
    ],
)
def test_bad_parameters_raise_at_fit(params, error, match):
    X, y = softmax_problem(n_samples=50)
    clf = FGNClassifier(**{"device": "cpu", **params})  # __init__ only stores
    with pytest.raises(error, match=match):
        clf.fit(X, y)


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_gpu_without_one_names_the_extra_to_install():
    X, y = softmax_problem(n_samples=50)
    with pytest.raises(RuntimeError, match=r"not available.*pip install 'fgn_arrays\[gpu-cuda12\]'"):
        FGNClassifier(device="gpu").fit(X, y)


def test_feature_count_mismatch_at_predict():
    X, y = softmax_problem()
    clf = FGNClassifier(device="cpu", random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])


# ---- the l2 convention: l2 = 1 / (C N) is scikit-learn's LogisticRegression(C) -----


# A tight `tol` where a test compares optima closely: the default 1e-4 (LogisticRegression's)
# leaves coef_ about 3e-3 from the optimum on softmax_problem(). 1e-8, not smaller: FGN's
# steps are accepted by a decrease of the float64 objective, which stops being measurable
# once ||grad||_inf is near 1e-9 on these problems, and minimize no longer stops on a small
# relative change of the objective, so tol=1e-10 would run to max_iter.
TIGHT_TOL = 1e-8


def test_l2_convention_matches_logistic_regression_multiclass():
    X, y = softmax_problem(n_samples=300, n_classes=4)
    N, C_sk = len(y), 0.5
    l2 = 1.0 / (C_sk * N)
    clf = FGNClassifier(l2=l2, tol=TIGHT_TOL, max_iter=300, dtype="float64", device="cpu", random_state=0).fit(X, y)
    lr = LogisticRegression(C=C_sk, tol=1e-10, max_iter=10_000).fit(X, y)
    assert lr.coef_.shape == (4, X.shape[1])  # multinomial: the same parametrisation
    ours, theirs = objective(clf.coef_, clf.intercept_, X, y, l2), objective(lr.coef_, lr.intercept_, X, y, l2)
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours == pytest.approx(clf.objective_, rel=1e-9)
    # Both at the same (strictly convex) optimum.
    numpy.testing.assert_allclose(clf.coef_, lr.coef_, atol=1e-3)


@pytest.mark.parametrize(
    "method, solver", [("fgn-compensated", "auto"), ("fgn", "auto"), ("fgn", "cholesky"), ("ggn-pcg", "auto")]
)
def test_every_method_reaches_logistic_regressions_optimum(method, solver):
    X, y = softmax_problem(n_samples=300, n_classes=4)
    N, C_sk = len(y), 0.5
    l2 = 1.0 / (C_sk * N)
    clf = FGNClassifier(method=method, solver=solver, l2=l2, tol=TIGHT_TOL, max_iter=300, dtype="float64",
                        device="cpu", random_state=0).fit(X, y)
    assert clf.n_iter_ < 300  # stopped by tol (no ConvergenceWarning, an error here)
    lr = LogisticRegression(C=C_sk, tol=1e-10, max_iter=10_000).fit(X, y)
    ours, theirs = objective(clf.coef_, clf.intercept_, X, y, l2), objective(lr.coef_, lr.intercept_, X, y, l2)
    # The objective is quadratic near the optimum: ||grad||_inf <= 1e-8 puts it within ~1e-14.
    assert ours == pytest.approx(theirs, rel=1e-10)
    # ||theta - theta*|| <= ||grad||_2 / l2 ~ sqrt(28) 1e-8 / 6.7e-3 ~ 1e-5 (the penalty makes
    # the weights' objective l2-strongly convex); observed below 3e-7 for every method.
    numpy.testing.assert_allclose(clf.coef_, lr.coef_, rtol=0, atol=1e-5)
    # Softmax logits are invariant to a shift of all intercepts: compare them centred.
    numpy.testing.assert_allclose(clf.intercept_ - clf.intercept_.mean(), lr.intercept_ - lr.intercept_.mean(),
                                  rtol=0, atol=1e-5)


def test_l2_convention_binary_is_twice():
    # Two softmax rows, w_0 = -w_1 at the optimum: (l2/2)(|w_0|^2 + |w_1|^2) = (l2/4)|w_1 - w_0|^2,
    # so binary LogisticRegression(C) (one vector w_1 - w_0) corresponds to l2 = 2 / (C N).
    X, y = softmax_problem(n_samples=300, n_classes=2, seed=1)
    N, C_sk = len(y), 0.5
    clf = FGNClassifier(l2=2.0 / (C_sk * N), tol=1e-10, max_iter=300, dtype="float64", device="cpu", random_state=0)
    clf.fit(X, y)
    lr = LogisticRegression(C=C_sk, tol=1e-10, max_iter=10_000).fit(X, y)
    numpy.testing.assert_allclose(clf.coef_, lr.coef_, rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(clf.intercept_, lr.intercept_, rtol=1e-4, atol=1e-6)


# scikit-learn's optimum on the bundled data (min_per_class=50, all 15,260 rows) at
# LogisticRegression C = 10, i.e. l2 = 1 / (10 N), in the objective() above: from
# LogisticRegression(solver="newton-cg", C=10, tol=1e-8, max_iter=1000) (0.67503717;
# tol=1e-5 gives 0.67503716, tol=1e-4 0.67504093). Stored, not recomputed: that fit
# takes a minute or more on two cores, and the optimum is a property of the data.
WORDNET50_C10_OPTIMUM = 0.67503717


def test_wordnet_objective_matches_logistic_regression():
    """On the bundled data (15,260 rows, 133 classes), FGN's defaults reach scikit-learn's optimum to 1e-3."""
    from fgn_arrays.datasets import load_wordnet_glosses

    data = load_wordnet_glosses(min_per_class=50)
    X, y = data.X, data.y
    N, C_sk = len(y), 10.0
    l2 = 1.0 / (C_sk * N)
    t0 = time.perf_counter()
    with tolerate_convergence_warning():  # the assertion below says how far it got
        clf = FGNClassifier(l2=l2, device="cpu", random_state=0).fit(X, y)
    seconds = time.perf_counter() - t0
    ours = objective(clf.coef_, clf.intercept_, X, y, l2)
    assert ours == pytest.approx(WORDNET50_C10_OPTIMUM, rel=1e-3), (
        f"FGN objective {ours:.6f} vs scikit-learn's optimum {WORDNET50_C10_OPTIMUM} "
        f"after {clf.n_iter_} steps, {seconds:.0f} s"
    )


# ---- GPU ----------------------------------------------------------------------------


def test_gpu_round_trip(gpu_xp):
    X, y = softmax_problem()
    # TIGHT_TOL: see test_l2_convention_matches_logistic_regression_multiclass.
    gpu = FGNClassifier(device="gpu", dtype="float64", tol=TIGHT_TOL, max_iter=200, random_state=0).fit(X, y)
    cpu = FGNClassifier(device="cpu", dtype="float64", tol=TIGHT_TOL, max_iter=200, random_state=0).fit(X, y)
    assert gpu.device_ == "gpu" and isinstance(gpu.theta_, gpu_xp.ndarray)
    assert isinstance(gpu.coef_, numpy.ndarray)
    for method in ("predict", "predict_proba", "decision_function"):
        out = getattr(gpu, method)(X)
        assert isinstance(out, numpy.ndarray)
    numpy.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-6)
    # CuPy inputs are accepted too (copied to the host for validation).
    numpy.testing.assert_array_equal(gpu.predict(gpu_xp.asarray(X)), gpu.predict(X))
    assert FGNClassifier(device="auto").fit(X, y).device_ == "gpu"


# ---- scikit-learn stays optional -------------------------------------------------


def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True, timeout=300)


def test_import_does_not_import_sklearn():
    proc = run_python(
        """
        import sys
        import fgn_arrays
        assert "FGNClassifier" in fgn_arrays.__all__
        assert not any(m == "sklearn" or m.startswith("sklearn.") for m in sys.modules), "sklearn imported"
        fgn_arrays.FGNClassifier  # first use imports it
        assert "sklearn" in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_sklearn_gives_clear_import_error():
    proc = run_python(
        """
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        import fgn_arrays
        for get in (lambda: fgn_arrays.FGNClassifier, lambda: __import__("fgn_arrays").FGNClassifier):
            try:
                get()
            except ImportError as exc:
                assert "pip install scikit-learn" in str(exc), exc
            else:
                raise AssertionError("no ImportError")
        try:
            from fgn_arrays import FGNClassifier
        except ImportError as exc:
            assert "pip install scikit-learn" in str(exc), exc
        else:
            raise AssertionError("no ImportError")
        # The scikit-learn-free core (what the command line uses) still works.
        import numpy
        from fgn_arrays.estimator import fit_head, head_logits
        X = numpy.random.default_rng(0).standard_normal((40, 3))
        y = (X[:, 0] > 0).astype(numpy.int64)
        head, result = fit_head(X, y, 2, device="cpu", seed=0)
        assert head_logits(head, result.theta, X).shape == (40, 2)
        """
    )
    assert proc.returncode == 0, proc.stderr


# ---- sample weights, class weights, warm start ------------------------------------


def imbalanced_problem(n_samples=300, n_features=6, seed=1):
    """Labels of four classes in proportions about 8:4:2:1 (so that class weights matter)."""
    rng = numpy.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W = rng.standard_normal((4, n_features))
    Z = X @ W.T + numpy.log([8.0, 4.0, 2.0, 1.0]) + rng.gumbel(size=(n_samples, 4))
    return X, numpy.argmax(Z, axis=1)


def weighted_objective(W, b, X, y, s, l2):
    """``sum_i s_i CE_i / sum_i s_i + (l2/2) ||W||^2`` in float64 (reference, as :func:`objective`)."""
    Z = X @ W.T + b
    ce = scipy.special.logsumexp(Z, axis=1) - Z[numpy.arange(len(y)), y]
    return float(s @ ce / s.sum() + 0.5 * l2 * numpy.sum(W**2))


@pytest.mark.parametrize("class_weight", ["balanced", {0: 0.5, 2: 3.0}])
@pytest.mark.parametrize("with_sample_weight", [False, True])
def test_class_weight_reaches_logistic_regressions_optimum(class_weight, with_sample_weight):
    X, y = imbalanced_problem()
    sw = numpy.random.default_rng(2).uniform(0.2, 2.0, len(y)) if with_sample_weight else None
    C_sk = 0.5
    lr = LogisticRegression(C=C_sk, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=sw)
    # the rows' weights by scikit-learn's own definition, and l2 = 1 / (C_sk sum_i s_i)
    per_class = compute_class_weight(class_weight, classes=numpy.arange(4), y=y, sample_weight=sw)
    s = per_class[y] * (1.0 if sw is None else sw)
    l2 = 1.0 / (C_sk * s.sum())
    clf = FGNClassifier(l2=l2, class_weight=class_weight, tol=TIGHT_TOL, max_iter=300, device="cpu")
    clf.fit(X, y, sample_weight=sw)
    ours = weighted_objective(clf.coef_, clf.intercept_, X, y, s, l2)
    theirs = weighted_objective(lr.coef_, lr.intercept_, X, y, s, l2)
    assert ours == pytest.approx(theirs, rel=1e-6) and ours <= theirs * (1 + 1e-9)
    assert ours == pytest.approx(clf.objective_, rel=1e-9)
    numpy.testing.assert_allclose(clf.coef_, lr.coef_, atol=1e-4)
    numpy.testing.assert_allclose(clf.intercept_, lr.intercept_, atol=1e-4)  # both centred


def test_sample_weight_integer_equals_repeated_rows_and_zero_drops():
    X, y = softmax_problem(n_samples=120)
    sw = numpy.random.default_rng(3).integers(0, 4, len(y))
    kwargs = dict(l2=1e-2, tol=TIGHT_TOL, max_iter=300, device="cpu")
    weighted = FGNClassifier(**kwargs).fit(X, y, sample_weight=sw)
    repeated = FGNClassifier(**kwargs).fit(numpy.repeat(X, sw, axis=0), numpy.repeat(y, sw))
    numpy.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=0, atol=1e-6 * numpy.abs(repeated.coef_).max())
    numpy.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=0, atol=1e-6)
    assert weighted.objective_ == pytest.approx(repeated.objective_, rel=1e-10)


@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (-numpy.ones(50), "sample_weight"),
        (numpy.ones(49), "sample_weight"),
        (numpy.r_[numpy.nan, numpy.ones(49)], "sample_weight"),
        (numpy.zeros(50), "Sample weights must contain at least one non-zero number"),  # scikit-learn's check
    ],
)
def test_bad_sample_weight_raises_naming_it(sample_weight, match):
    X, y = softmax_problem(n_samples=50)
    with pytest.raises(ValueError, match=match):
        FGNClassifier(device="cpu").fit(X, y, sample_weight=sample_weight)


def test_class_weight_with_an_unknown_label_raises():
    X, y = softmax_problem(n_samples=50)
    with pytest.raises(ValueError, match=r"are not in class_weight"):
        FGNClassifier(device="cpu", class_weight={7: 2.0}).fit(X, y)


def test_warm_start_resumes_and_needs_fewer_steps():
    X, y = softmax_problem(n_samples=400)
    kwargs = dict(tol=1e-6, max_iter=300, device="cpu")
    clf = FGNClassifier(l2=1e-3, warm_start=True, **kwargs).fit(X, y)
    theta, damping = clf.theta_.copy(), clf.damping_
    # max_iter=0: the refit stays where the fit ended (no fresh initialisation)
    with pytest.warns(ConvergenceWarning):
        clf.set_params(max_iter=0).fit(X, y)
    numpy.testing.assert_array_equal(clf.theta_, theta)
    assert clf.damping_ == damping
    warm = clf.set_params(l2=1.2e-3, max_iter=300).fit(X, y)
    cold = FGNClassifier(l2=1.2e-3, **kwargs).fit(X, y)
    assert warm.n_iter_ < cold.n_iter_ / 2, (warm.n_iter_, cold.n_iter_)
    assert warm.objective_ == pytest.approx(cold.objective_, rel=1e-8)
    # without warm_start a refit starts afresh, and takes as long as the first fit
    again = FGNClassifier(l2=1.2e-3, **kwargs).fit(X, y).fit(X, y)
    assert again.n_iter_ == cold.n_iter_


def test_warm_start_needs_the_same_problem():
    X, y = softmax_problem(n_samples=100)
    with tolerate_convergence_warning():
        clf = FGNClassifier(warm_start=True, device="cpu", max_iter=2).fit(X, y)
        with pytest.raises(ValueError, match="warm_start=True needs the classes of the previous fit"):
            clf.fit(X, numpy.where(y == 3, 2, y))
        with pytest.raises(ValueError, match="X has 5 features, but FGNClassifier is expecting 6 features"):
            clf.fit(X[:, :5], y)
        with pytest.raises(ValueError, match="warm_start=True needs the head of the previous fit"):
            clf.set_params(hidden=4).fit(X, y)
