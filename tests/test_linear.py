"""LinearHead: layout, logits, the Linearization's products and gradient, errors.

Every quantity is compared with the dense float64 references of
``tests/reference.py`` (explicit ``(N, C, P)`` logit Jacobians, per-example
margins), with central finite differences, or with an adjoint identity.
"""

import math

import numpy as np
import pytest
import reference as ref
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import fgn_arrays as fa

# float64 products are a handful of short dot products: rounding is ~1e-16 per
# entry relative to the largest entry, so 1e-12 leaves wide room for a different
# summation order but none for a wrong formula.
RTOL64 = 1e-12
# float32 has eps ~ 6e-8; with sums of at most ~20 terms and a float64 reference
# computed from the same (float32) inputs, 1e-5 is a safe bound on rounding.
RTOL32 = 1e-5
# Central differences with eps = 1e-6: truncation O(eps^2) plus rounding
# O(1e-16 / eps) ~ 1e-10 on O(1) quantities.
RTOL_FD = 1e-7

SHAPES = [(N, D, C) for N in (1, 5, 7) for D in (1, 3) for C in (2, 3, 6)]
SHAPE_IDS = [f"N{N}-D{D}-C{C}" for N, D, C in SHAPES]


class Case:
    """A random linear-head problem, its Linearization and its float64 references."""

    def __init__(self, N, D, C, seed=0, scale=1.0, dtype=np.float64):
        theta, X, y = ref.random_linear_problem(N, D, C, seed=seed, scale=scale)
        self.N, self.D, self.C, self.P = N, D, C, C * D + C
        self.theta = theta.astype(dtype)
        self.X = X.astype(dtype)
        self.y = y
        self.head = fa.LinearHead(D, C)
        self.lin = self.head.linearize(self.theta, self.X, self.y)
        # References use the (possibly float32) inputs, upcast exactly to float64.
        self.Z = ref.linear_logits_ref(self.theta, self.X, C)
        self.Jz = ref.linear_logit_jacobian_ref(self.theta, self.X, C)
        self.J = ref.margin_jacobian_ref(self.Jz, self.Z, y)
        self.stats = ref.margin_ref(self.Z, y)
        rng = np.random.default_rng(seed + 1000)
        self.v = rng.standard_normal(self.P).astype(dtype)
        self.a = rng.standard_normal(N).astype(dtype)
        self.A = rng.standard_normal((N, C)).astype(dtype)

    def margins_at(self, theta):
        return ref.margin_ref(ref.linear_logits_ref(theta, self.X, self.C), self.y)["margin"]

    def mean_ce_at(self, theta):
        Z = ref.linear_logits_ref(theta, self.X, self.C)
        return float(np.mean(ref.cross_entropy_ref(Z, self.y)))


@pytest.fixture(params=SHAPES, ids=SHAPE_IDS)
def case(request):
    N, D, C = request.param
    return Case(N, D, C, seed=N * 100 + D * 10 + C)


# --------------------------------------------------------------------------
# References agree with each other (guards the references themselves)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1e4])
def test_reference_margin_loss_is_cross_entropy(scale):
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((9, 5)) * scale
    y = rng.integers(0, 5, size=9)
    st_ref = ref.margin_ref(Z, y)
    ref.assert_close(st_ref["loss"], ref.cross_entropy_ref(Z, y), rtol=1e-12, scale=max(1.0, scale))
    p_softmax = ref.softmax_ref(Z)[np.arange(9), y]
    ref.assert_close(st_ref["prob_true"], p_softmax, rtol=1e-12, scale=1.0)
    Q = ref.competitor_probs_ref(Z, y)
    ref.assert_close(Q.sum(axis=1), np.ones(9))
    assert np.all(Q[np.arange(9), y] == 0.0)


def test_reference_jacobians_match_finite_differences(case):
    Jz_fd = ref.fd_jacobian(lambda t: ref.linear_logits_ref(t, case.X, case.C), case.theta)
    ref.assert_close(case.Jz, Jz_fd, rtol=RTOL_FD)
    J_fd = ref.fd_jacobian(case.margins_at, case.theta)
    ref.assert_close(case.J, J_fd, rtol=RTOL_FD)


# --------------------------------------------------------------------------
# Layout and initialisation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("D", "C"), [(1, 2), (3, 3), (4, 6)])
def test_n_params(D, C):
    assert fa.LinearHead(D, C).n_params == C * D + C


def test_unflatten_views_and_layout(case):
    W, b = case.head.unflatten(case.theta)
    assert W.shape == (case.C, case.D)
    assert b.shape == (case.C,)
    assert np.shares_memory(W, case.theta)
    assert np.shares_memory(b, case.theta)
    W_ref, b_ref = ref.linear_unflatten_ref(case.theta, case.D, case.C)
    np.testing.assert_array_equal(W, W_ref)
    np.testing.assert_array_equal(b, b_ref)


def test_flatten_round_trip(case):
    W, b = case.head.unflatten(case.theta)
    theta2 = case.head.flatten(W, b)
    assert theta2.shape == (case.P,)
    assert theta2.dtype == case.theta.dtype
    np.testing.assert_array_equal(theta2, case.theta)
    # and the other way round, from fresh (non-view) arrays
    rng = np.random.default_rng(3)
    W3 = rng.standard_normal((case.C, case.D))
    b3 = rng.standard_normal(case.C)
    W4, b4 = case.head.unflatten(case.head.flatten(W3, b3))
    np.testing.assert_array_equal(W4, W3)
    np.testing.assert_array_equal(b4, b3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("D", "C"), [(1, 2), (3, 6), (20, 4)])
def test_init_params(dtype, D, C):
    head = fa.LinearHead(D, C)
    theta = head.init_params(seed=0, dtype=dtype, device="cpu")
    assert isinstance(theta, np.ndarray)
    assert theta.shape == (head.n_params,)
    assert theta.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(theta))
    np.testing.assert_array_equal(theta, head.init_params(seed=0, dtype=dtype, device="cpu"))
    other = head.init_params(seed=1, dtype=dtype, device="cpu")
    assert not np.array_equal(theta, other)
    W, b = head.unflatten(theta)
    np.testing.assert_array_equal(b, np.zeros(C, dtype=dtype))
    assert np.count_nonzero(W) == C * D  # weights are random, not zero


# --------------------------------------------------------------------------
# Forward pass, stats, loss and gradient
# --------------------------------------------------------------------------


def test_logits_match_reference(case):
    Z = case.head.logits(case.theta, case.X)
    assert isinstance(Z, np.ndarray)
    assert Z.dtype == np.float64
    ref.assert_close(Z, case.Z, rtol=RTOL64)


def test_stats_match_reference(case):
    stats = case.lin.stats
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        got = getattr(stats, name)
        assert got.shape == (case.N,), name
        ref.assert_close(got, case.stats[name], rtol=RTOL64, err_msg=name)


def test_loss_is_mean_cross_entropy(case):
    loss = case.lin.loss
    assert isinstance(loss, float)
    expected = float(np.mean(ref.cross_entropy_ref(case.Z, case.y)))
    assert math.isclose(loss, expected, rel_tol=RTOL64, abs_tol=RTOL64)
    assert math.isclose(loss, float(np.mean(case.stats["loss"])), rel_tol=RTOL64, abs_tol=RTOL64)


def test_grad_is_margin_pullback_of_residual(case):
    # g = (1/N) J^T r,  r_i = -(1 - p_i)
    r = ref.residual_ref(case.Z, case.y)
    expected = case.J.T @ r / case.N
    grad = case.lin.grad
    assert grad.shape == (case.P,)
    assert grad.dtype == np.float64
    ref.assert_close(grad, expected, rtol=RTOL64)


def test_grad_matches_finite_differences(case):
    g_fd = ref.fd_jacobian(case.mean_ce_at, case.theta)
    ref.assert_close(case.lin.grad, g_fd, rtol=RTOL_FD)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_label_dtypes_accepted(dtype):
    c = Case(5, 3, 3, seed=4)
    lin = c.head.linearize(c.theta, c.X, c.y.astype(dtype))
    ref.assert_close(lin.grad, c.lin.grad, rtol=RTOL64)
    assert math.isclose(lin.loss, c.lin.loss, rel_tol=RTOL64)


@pytest.mark.parametrize("scale", [1e2, 3e3])
def test_large_logits_stay_finite_and_accurate(scale):
    c = Case(7, 3, 6, seed=11, scale=scale)
    assert np.max(np.abs(c.Z)) > scale / 10  # the logits really are large
    # Logits of size ~scale carry absolute rounding ~scale * 1e-16; measured on
    # the scale of each array this is still far below 1e-10.
    for name in ("margin", "loss", "lse_rest"):
        ref.assert_close(getattr(c.lin.stats, name), c.stats[name], rtol=1e-10, err_msg=name)
    ref.assert_close(c.lin.stats.prob_true, c.stats["prob_true"], rtol=1e-10, scale=1.0)
    assert math.isclose(c.lin.loss, float(np.mean(c.stats["loss"])), rel_tol=1e-10)
    r = ref.residual_ref(c.Z, c.y)
    ref.assert_close(c.lin.grad, c.J.T @ r / c.N, rtol=1e-10, scale=1.0)
    ref.assert_close(c.lin.margin_jvp(c.v), c.J @ c.v, rtol=1e-10)


def test_large_logits_float32_finite():
    c = Case(7, 3, 6, seed=12, scale=3e3, dtype=np.float32)
    stats = c.lin.stats
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        assert np.all(np.isfinite(getattr(stats, name))), name
    assert math.isfinite(float(c.lin.loss))
    assert np.all(np.isfinite(c.lin.grad))
    assert np.all(np.isfinite(c.lin.margin_jvp(c.v)))
    # float32 logits of size 1e4 are off by ~1e-3 in absolute terms; relative to
    # the size of the margins that is still ~1e-7.
    ref.assert_close(stats.margin, c.stats["margin"], rtol=RTOL32, scale=float(np.max(np.abs(c.Z))))
    ref.assert_close(stats.loss, c.stats["loss"], rtol=RTOL32, scale=float(np.max(np.abs(c.Z))))


# --------------------------------------------------------------------------
# JVPs, VJPs, Gram
# --------------------------------------------------------------------------


def test_margin_jvp_vjp_match_reference(case):
    jv = case.lin.margin_jvp(case.v)
    assert jv.shape == (case.N,)
    ref.assert_close(jv, case.J @ case.v, rtol=RTOL64)
    jta = case.lin.margin_vjp(case.a)
    assert jta.shape == (case.P,)
    ref.assert_close(jta, case.J.T @ case.a, rtol=RTOL64)
    # the whole Jacobian, one column at a time
    J_lib = np.stack([case.lin.margin_jvp(e) for e in np.eye(case.P)], axis=1)
    ref.assert_close(J_lib, case.J, rtol=RTOL64)


def test_logits_jvp_vjp_match_reference(case):
    zv = case.lin.logits_jvp(case.v)
    assert zv.shape == (case.N, case.C)
    ref.assert_close(zv, np.einsum("ncp,p->nc", case.Jz, case.v), rtol=RTOL64)
    zta = case.lin.logits_vjp(case.A)
    assert zta.shape == (case.P,)
    ref.assert_close(zta, np.einsum("ncp,nc->p", case.Jz, case.A), rtol=RTOL64)


def test_margin_jvp_matches_finite_differences(case):
    eps = 1e-6
    m_plus = case.margins_at(case.theta + eps * case.v)
    m_minus = case.margins_at(case.theta - eps * case.v)
    fd = (m_plus - m_minus) / (2 * eps)
    ref.assert_close(case.lin.margin_jvp(case.v), fd, rtol=RTOL_FD)


def test_logits_jvp_matches_finite_differences(case):
    eps = 1e-6

    def f(t):
        return ref.linear_logits_ref(t, case.X, case.C)

    fd = (f(case.theta + eps * case.v) - f(case.theta - eps * case.v)) / (2 * eps)
    ref.assert_close(case.lin.logits_jvp(case.v), fd, rtol=RTOL_FD)


def _adjoint_gap(Jv, a, v, Jta):
    """``|<J v, a> - <v, J^T a>|``."""
    return abs(float(np.dot(np.ravel(Jv), np.ravel(a))) - float(np.dot(v, Jta)))


def test_adjoint_identities(case):
    # <J v, a> = <v, J^T a>: the rounding of either side is bounded by
    # eps * |J| |v| |a| (Frobenius norm of the reference Jacobian).
    gap = _adjoint_gap(case.lin.margin_jvp(case.v), case.a, case.v, case.lin.margin_vjp(case.a))
    bound = RTOL64 * np.linalg.norm(case.J) * np.linalg.norm(case.v) * np.linalg.norm(case.a)
    assert gap <= bound, (gap, bound)
    gap = _adjoint_gap(case.lin.logits_jvp(case.v), case.A, case.v, case.lin.logits_vjp(case.A))
    bound = RTOL64 * np.linalg.norm(case.Jz) * np.linalg.norm(case.v) * np.linalg.norm(case.A)
    assert gap <= bound, (gap, bound)


def test_margin_gram(case):
    K = case.lin.margin_gram()
    assert K.shape == (case.N, case.N)
    assert K.dtype == np.float64
    ref.assert_close(K, case.J @ case.J.T, rtol=RTOL64)
    ref.assert_close(K, K.T, rtol=RTOL64)


# --------------------------------------------------------------------------
# float32
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("N", "D", "C"), [(1, 1, 2), (5, 3, 3), (7, 3, 6)])
def test_float32_products(N, D, C):
    c = Case(N, D, C, seed=21, dtype=np.float32)
    Z = c.head.logits(c.theta, c.X)
    outputs = {
        "logits": (Z, c.Z),
        "grad": (c.lin.grad, c.J.T @ ref.residual_ref(c.Z, c.y) / N),
        "margin_jvp": (c.lin.margin_jvp(c.v), c.J @ c.v.astype(np.float64)),
        "margin_vjp": (c.lin.margin_vjp(c.a), c.J.T @ c.a.astype(np.float64)),
        "logits_jvp": (c.lin.logits_jvp(c.v), np.einsum("ncp,p->nc", c.Jz, c.v.astype(np.float64))),
        "logits_vjp": (c.lin.logits_vjp(c.A), np.einsum("ncp,nc->p", c.Jz, c.A.astype(np.float64))),
        "margin_gram": (c.lin.margin_gram(), c.J @ c.J.T),
    }
    for name, (got, expected) in outputs.items():
        assert got.dtype == np.float32, name
        # float32 rounding: see RTOL32
        ref.assert_close(got, expected, rtol=RTOL32, err_msg=name)
    assert math.isclose(float(c.lin.loss), float(np.mean(c.stats["loss"])), rel_tol=RTOL32)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

LABELS = r"labels|\by\b"


def _valid():
    return Case(5, 3, 3, seed=2)


def test_too_few_classes():
    with pytest.raises(ValueError, match="n_classes"):
        fa.LinearHead(3, 1)


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_labels_out_of_range(bad):
    c = _valid()
    y = c.y.copy()
    y[2] = bad
    with pytest.raises(ValueError, match=LABELS):
        c.head.linearize(c.theta, c.X, y)


def test_float_labels_are_type_error():
    c = _valid()
    with pytest.raises(TypeError, match=LABELS):
        c.head.linearize(c.theta, c.X, c.y.astype(np.float64))


@pytest.mark.parametrize("n_labels", [4, 6])
def test_label_count_mismatch(n_labels):
    c = _valid()
    y = np.zeros(n_labels, dtype=np.int64)
    with pytest.raises(ValueError, match=LABELS + r"|\bX\b"):
        c.head.linearize(c.theta, c.X, y)


def test_labels_wrong_ndim():
    c = _valid()
    with pytest.raises(ValueError, match=LABELS):
        c.head.linearize(c.theta, c.X, c.y.reshape(-1, 1))


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_theta_length(delta):
    c = _valid()
    theta = np.zeros(c.P + delta)
    with pytest.raises(ValueError, match="theta"):
        c.head.linearize(theta, c.X, c.y)
    with pytest.raises(ValueError, match="theta"):
        c.head.logits(theta, c.X)


@pytest.mark.parametrize("n_features", [2, 4])
def test_wrong_feature_count(n_features):
    c = _valid()
    X = np.ones((c.N, n_features))
    with pytest.raises(ValueError, match=r"\bX\b"):
        c.head.linearize(c.theta, X, c.y)
    with pytest.raises(ValueError, match=r"\bX\b"):
        c.head.logits(c.theta, X)


def test_X_wrong_ndim():
    c = _valid()
    with pytest.raises(ValueError, match=r"\bX\b"):
        c.head.linearize(c.theta, c.X.ravel(), c.y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(bad):
    c = _valid()
    X = c.X.copy()
    X[1, 2] = bad
    with pytest.raises(ValueError, match=r"\bX\b"):
        c.head.linearize(c.theta, X, c.y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_theta(bad):
    c = _valid()
    theta = c.theta.copy()
    theta[0] = bad
    with pytest.raises(ValueError, match="theta"):
        c.head.linearize(theta, c.X, c.y)


@pytest.mark.parametrize("delta", [-1, 1])
def test_product_argument_shapes(delta):
    c = _valid()
    with pytest.raises(ValueError, match=r"\bv\b"):
        c.lin.margin_jvp(np.ones(c.P + delta))
    with pytest.raises(ValueError, match=r"\bv\b"):
        c.lin.logits_jvp(np.ones(c.P + delta))
    with pytest.raises(ValueError, match=r"\ba\b"):
        c.lin.margin_vjp(np.ones(c.N + delta))
    with pytest.raises(ValueError, match=r"\bA\b"):
        c.lin.logits_vjp(np.ones((c.N, c.C + delta)))


# --------------------------------------------------------------------------
# GPU (device in, device out): on the CuPy stand-in, and on CuPy where a GPU is present
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_products_match_reference(gpu_xp, dtype):
    c = Case(7, 3, 6, seed=31, dtype=dtype)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    lin = c.head.linearize(gpu_xp.asarray(c.theta), gpu_xp.asarray(c.X), gpu_xp.asarray(c.y))
    jv = lin.margin_jvp(gpu_xp.asarray(c.v))
    assert isinstance(jv, gpu_xp.ndarray)
    ref.assert_close(to_host(jv), c.J @ c.v.astype(np.float64), rtol=rtol)
    ref.assert_close(to_host(lin.margin_vjp(gpu_xp.asarray(c.a))), c.J.T @ c.a.astype(np.float64), rtol=rtol)
    ref.assert_close(to_host(lin.grad), c.J.T @ ref.residual_ref(c.Z, c.y) / c.N, rtol=rtol)
    ref.assert_close(to_host(lin.margin_gram()), c.J @ c.J.T, rtol=rtol)


def test_gpu_mixed_backends_is_type_error(gpu_xp):
    c = _valid()
    with pytest.raises(TypeError):
        c.head.linearize(gpu_xp.asarray(c.theta), c.X, c.y)


# --------------------------------------------------------------------------
# Property test
# --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 9),
    D=st.integers(1, 5),
    C=st.integers(2, 8),
    log_scale=st.floats(-2.0, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_margin_adjoint(N, D, C, log_scale, seed):
    c = Case(N, D, C, seed=seed, scale=10.0**log_scale)
    Jv = c.lin.margin_jvp(c.v)
    gap = _adjoint_gap(Jv, c.a, c.v, c.lin.margin_vjp(c.a))
    bound = RTOL64 * np.linalg.norm(c.J) * np.linalg.norm(c.v) * np.linalg.norm(c.a)
    assert gap <= bound, (gap, bound)
    ref.assert_close(Jv, c.J @ c.v, rtol=1e-11)
