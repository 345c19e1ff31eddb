"""FGN, full GGN and dropped-term products against dense float64 matrices.

The references (``tests/reference.py``) build each curvature matrix from explicit
per-example ``C x C`` covariance matrices and the explicit ``(N, C, P)`` logit
Jacobian of the linear head; the library's matrix-free products are turned into
dense matrices by applying them to the identity columns.
"""

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import fgn_arrays as fa

# See test_linear.py: float64 products of this size round at ~1e-16 relative to
# the largest entry; 1e-12 tolerates any summation order.
RTOL64 = 1e-12
# float32 (eps ~ 6e-8), sums of at most a few dozen terms: 1e-5.
RTOL32 = 1e-5

SHAPES = [(N, D, C) for N in (1, 5, 7) for D in (1, 3) for C in (2, 3, 6)]
SHAPE_IDS = [f"N{N}-D{D}-C{C}" for N, D, C in SHAPES]
OPERATORS = ["fgn", "ggn", "dropped"]


class Case:
    """A random linear-head problem, its Linearization and the dense references."""

    def __init__(self, N, D, C, seed=0, scale=1.0, dtype=np.float64):
        theta, X, y = ref.random_linear_problem(N, D, C, seed=seed, scale=scale)
        self.N, self.D, self.C, self.P = N, D, C, C * D + C
        self.theta = theta.astype(dtype)
        self.X = X.astype(dtype)
        self.y = y
        self.head = fa.LinearHead(D, C)
        self.lin = self.head.linearize(self.theta, self.X, y)
        self.Z = ref.linear_logits_ref(self.theta, self.X, C)
        self.Jz = ref.linear_logit_jacobian_ref(self.theta, self.X, C)
        self.J = ref.margin_jacobian_ref(self.Jz, self.Z, y)
        self.dense = {
            "fgn": ref.fgn_ref(self.J, self.Z, y),
            "ggn": ref.ggn_ref(self.Jz, self.Z),
            "dropped": ref.dropped_ref(self.Jz, self.Z, y),
        }
        # every operator is measured on the scale of the full GGN (the largest)
        self.scale = float(np.max(np.abs(self.dense["ggn"])))
        self.v = np.random.default_rng(seed + 1000).standard_normal(self.P).astype(dtype)

    def matvec(self, name):
        return lambda v: getattr(fa, f"{name}_matvec")(self.lin, v)

    def matrix(self, name):
        return ref.matrix_of(self.matvec(name), self.P, dtype=self.theta.dtype)


@pytest.fixture(params=SHAPES, ids=SHAPE_IDS)
def case(request):
    N, D, C = request.param
    return Case(N, D, C, seed=N * 100 + D * 10 + C)


# --------------------------------------------------------------------------
# The references themselves
# --------------------------------------------------------------------------


def test_reference_dropped_closed_form(case):
    # law of total covariance: GGN - FGN = (1/N) sum (1 - p) Jz^T (diag q - q q^T) Jz
    direct = ref.dropped_direct_ref(case.Jz, case.Z, case.y)
    ref.assert_close(case.dense["dropped"], direct, rtol=RTOL64, scale=case.scale)


def test_reference_ggn_is_hessian_of_mean_cross_entropy(case):
    # For a linear head the logits are linear in theta, so the GGN is the exact
    # Hessian of the mean cross-entropy: compare with central differences of the
    # (reference) gradient. FD error ~1e-10 on O(1) entries.
    def grad_at(t):
        Z = ref.linear_logits_ref(t, case.X, case.C)
        J = ref.margin_jacobian_ref(case.Jz, Z, case.y)
        return J.T @ ref.residual_ref(Z, case.y) / case.N

    H_fd = ref.fd_jacobian(grad_at, case.theta, eps=1e-5)
    ref.assert_close(case.dense["ggn"], H_fd, rtol=1e-7, scale=case.scale)


# --------------------------------------------------------------------------
# Products against dense matrices
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPERATORS)
def test_matvec_matches_dense(case, name):
    out = getattr(fa, f"{name}_matvec")(case.lin, case.v)
    assert isinstance(out, np.ndarray)
    assert out.shape == (case.P,)
    assert out.dtype == np.float64
    expected = case.dense[name] @ case.v
    ref.assert_close(out, expected, rtol=RTOL64, scale=case.scale * np.linalg.norm(case.v, 1))


@pytest.mark.parametrize("name", OPERATORS)
def test_matrix_matches_dense_and_is_symmetric(case, name):
    G = case.matrix(name)
    ref.assert_close(G, case.dense[name], rtol=RTOL64, scale=case.scale)
    ref.assert_close(G, G.T, rtol=RTOL64, scale=case.scale)


def test_ggn_is_fgn_plus_dropped(case):
    fgn, ggn, dropped = (case.matrix(name) for name in OPERATORS)
    ref.assert_close(ggn, fgn + dropped, rtol=RTOL64, scale=case.scale)


def test_fgn_is_weighted_margin_gauss_newton(case):
    # G_FGN v = (1/N) J^T (w * (J v)), w = p (1 - p) = sigmoid(m) sigmoid(-m),
    # composed from the library's own products
    m = case.lin.stats.margin
    w = special.expit(m) * special.expit(-m)
    expected = case.lin.margin_vjp(w * case.lin.margin_jvp(case.v)) / case.N
    ref.assert_close(fa.fgn_matvec(case.lin, case.v), expected, rtol=RTOL64)


def test_ggn_composes_logit_products(case):
    # G_GGN v = (1/N) Jz^T (diag(p) - p p^T) Jz v, with the library's logit products
    P_hat = ref.softmax_ref(case.Z)
    zv = case.lin.logits_jvp(case.v)
    Hzv = P_hat * zv - P_hat * np.sum(P_hat * zv, axis=1, keepdims=True)
    expected = case.lin.logits_vjp(Hzv) / case.N
    v_scale = case.scale * np.linalg.norm(case.v, 1)
    ref.assert_close(fa.ggn_matvec(case.lin, case.v), expected, rtol=RTOL64, scale=v_scale)


@pytest.mark.parametrize("name", ["fgn", "dropped", "ggn"])
def test_psd(case, name):
    G = case.matrix(name)
    eigs = np.linalg.eigvalsh(0.5 * (G + G.T))
    assert eigs.min() >= -1e-12 * max(case.scale, 1e-300), (name, eigs.min(), case.scale)
    # and they agree with the reference spectrum
    ref.assert_close(eigs, np.linalg.eigvalsh(case.dense[name]), rtol=1e-11, scale=case.scale)


@pytest.mark.parametrize(("N", "D"), [(1, 1), (5, 3), (7, 1), (7, 3)])
def test_dropped_vanishes_for_two_classes(N, D):
    c = Case(N, D, 2, seed=N + D)
    dropped = c.matrix("dropped")
    bound = 1e-14 * np.linalg.norm(c.dense["ggn"])
    assert np.linalg.norm(dropped) <= bound, (np.linalg.norm(dropped), bound)
    ref.assert_close(c.matrix("fgn"), c.matrix("ggn"), rtol=RTOL64, scale=c.scale)
    # the dropped term is not zero in general: check that C = 3 sees it
    c3 = Case(N, D, 3, seed=N + D)
    assert np.linalg.norm(c3.matrix("dropped")) > 1e-6 * np.linalg.norm(c3.dense["ggn"])


def test_products_are_mean_scaled():
    # Repeating the batch twice must not change a mean-scaled operator.
    c = Case(5, 3, 4, seed=9)
    X2 = np.concatenate([c.X, c.X])
    y2 = np.concatenate([c.y, c.y])
    lin2 = c.head.linearize(c.theta, X2, y2)
    for name in OPERATORS:
        f = getattr(fa, f"{name}_matvec")
        v_scale = c.scale * np.linalg.norm(c.v, 1)
        ref.assert_close(f(lin2, c.v), f(c.lin, c.v), rtol=RTOL64, scale=v_scale, err_msg=name)
    ref.assert_close(lin2.grad, c.lin.grad, rtol=RTOL64)
    assert abs(lin2.loss - c.lin.loss) <= RTOL64 * abs(c.lin.loss)


def test_large_logits_products_finite():
    # Badly misclassified and very confident rows (w_i -> 0) must not produce NaN/inf.
    c = Case(7, 3, 6, seed=13, scale=3e3)
    for name in OPERATORS:
        out = getattr(fa, f"{name}_matvec")(c.lin, c.v)
        assert np.all(np.isfinite(out)), name
        # Every operator is ~0 here (saturated softmax); agreement on the scale
        # of an O(1) curvature. Relative accuracy is test_confident_rows_accuracy.
        ref.assert_close(out, c.dense[name] @ c.v, rtol=1e-12, scale=np.linalg.norm(c.v, 1))


@pytest.mark.parametrize("C", [2, 3])
@pytest.mark.parametrize("bias", [15.0, 30.0, 40.0])
def test_confident_rows_accuracy(C, bias):
    # One class dominates every row (softmax prob 1 - O(e^-bias)); rows 0-1 are
    # confidently right, row 2 confidently wrong. The curvature is tiny but its
    # entries are all well-defined numbers, and p_k (1 - p_k) must not be formed
    # as p_k - p_k^2 (which cancels to 0 as p_k -> 1): the operators must keep
    # relative accuracy, symmetry and positive semi-definiteness.
    rng = np.random.default_rng(5)
    D = 2
    W = 0.1 * rng.standard_normal((C, D))
    b = np.zeros(C)
    b[0] = bias
    theta = np.concatenate([W.ravel(), b])
    X = rng.standard_normal((3, D))
    y = np.array([0, 0, 1])
    lin = fa.LinearHead(D, C).linearize(theta, X, y)
    Z = ref.linear_logits_ref(theta, X, C)
    Jz = ref.linear_logit_jacobian_ref(theta, X, C)
    P = C * D + C
    dense = {
        "ggn": ref.ggn_ref(Jz, Z),
        "fgn": ref.fgn_ref(ref.margin_jacobian_ref(Jz, Z, y), Z, y),
        "dropped": ref.dropped_ref(Jz, Z, y),
    }
    scale = float(np.max(np.abs(dense["ggn"])))
    assert 0.0 < scale < 1e-5
    for name in OPERATORS:
        G = ref.matrix_of(lambda v, f=getattr(fa, f"{name}_matvec"): f(lin, v), P)
        ref.assert_close(G, dense[name], rtol=RTOL64, scale=scale, err_msg=name)
        ref.assert_close(G, G.T, rtol=RTOL64, scale=scale, err_msg=name)
        assert np.linalg.eigvalsh(0.5 * (G + G.T)).min() >= -RTOL64 * scale, name
    if C == 2:
        G = ref.matrix_of(lambda v: fa.dropped_matvec(lin, v), P)
        assert np.linalg.norm(G) <= 1e-14 * np.linalg.norm(dense["ggn"])


# --------------------------------------------------------------------------
# float32
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("N", "D", "C"), [(1, 1, 2), (5, 3, 3), (7, 3, 6)])
@pytest.mark.parametrize("name", OPERATORS)
def test_float32_matvec(N, D, C, name):
    c = Case(N, D, C, seed=41, dtype=np.float32)
    out = getattr(fa, f"{name}_matvec")(c.lin, c.v)
    assert out.dtype == np.float32
    # float32 rounding (RTOL32), measured on the scale of the full GGN product:
    # the dropped term may legitimately be formed as GGN - FGN, which cancels.
    ref.assert_close(
        out,
        c.dense[name] @ c.v.astype(np.float64),
        rtol=RTOL32,
        scale=c.scale * np.linalg.norm(c.v.astype(np.float64), 1),
    )


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("length_delta", [-1, 1])
def test_matvec_wrong_length(name, length_delta):
    c = Case(5, 3, 3, seed=2)
    with pytest.raises(ValueError, match=r"\bv\b"):
        getattr(fa, f"{name}_matvec")(c.lin, np.ones(c.P + length_delta))


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
def test_property_ggn_decomposition_and_adjoint(N, D, C, log_scale, seed):
    c = Case(N, D, C, seed=seed, scale=10.0**log_scale)
    v_scale = c.scale * np.linalg.norm(c.v, 1)
    fgn_v = fa.fgn_matvec(c.lin, c.v)
    ggn_v = fa.ggn_matvec(c.lin, c.v)
    dropped_v = fa.dropped_matvec(c.lin, c.v)
    ref.assert_close(ggn_v, fgn_v + dropped_v, rtol=RTOL64, scale=v_scale)
    ref.assert_close(ggn_v, c.dense["ggn"] @ c.v, rtol=1e-11, scale=v_scale)
    # margin map adjoint: <J v, a> = <v, J^T a>
    a = np.random.default_rng(seed).standard_normal(N)
    gap = abs(float(np.dot(c.lin.margin_jvp(c.v), a)) - float(np.dot(c.v, c.lin.margin_vjp(a))))
    assert gap <= RTOL64 * np.linalg.norm(c.J) * np.linalg.norm(c.v) * np.linalg.norm(a)
    # the dropped term is PSD: v^T G_dropped v >= 0 up to rounding
    assert float(np.dot(c.v, dropped_v)) >= -RTOL64 * v_scale * np.linalg.norm(c.v, 1)
