"""TwoLayerHead: activations, layout, products, Gram matrix, steps, initialisation, errors.

Every quantity is compared with the dense float64 references of
``tests/reference.py``: the explicit ``(N, C, P)`` logit Jacobian written from
the hand formula (itself checked against central differences of the reference
logits), per-example margins, explicit curvature matrices, and
``numpy.linalg.solve`` for the damped steps.
"""

import math

import numpy as np
import pytest
import reference as ref
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core import config
from scipy import special

import fgn_arrays as fa
from fgn_arrays import kernels
from fgn_arrays import step as step_module
from fgn_arrays.kernels import cpu
from fgn_arrays.testing import DeviceArray

ACTIVATIONS = ["tanh", "relu", "gelu"]
CODES = {"tanh": cpu.TANH, "relu": cpu.RELU, "gelu": cpu.GELU}

# float64 products: a few short dot products per entry and two layers, rounding
# ~1e-16 relative to the largest entry; 1e-12 allows any summation order.
RTOL64 = 1e-12
# float32 (eps ~ 6e-8) through two layers, sums of at most ~20 terms, against a
# float64 reference computed from the same float32 inputs.
RTOL32 = 1e-5
# Central differences, eps = 1e-6: truncation O(eps^2) + rounding O(1e-16 / eps).
RTOL_FD = 1e-7

SHAPES = [(1, 2, 1, 2), (5, 3, 4, 3), (7, 2, 3, 6)]
SHAPE_IDS = [f"N{N}-D{D}-H{H}-C{C}" for N, D, H, C in SHAPES]


class Case:
    """A random two-layer problem, its Linearization and its float64 references."""

    def __init__(self, N, D, H, C, activation="tanh", seed=0, scale=1.0, dtype=np.float64):
        theta, X, y = ref.random_two_layer_problem(N, D, H, C, seed=seed, scale=scale)
        self.N, self.D, self.H, self.C = N, D, H, C
        self.P = H * D + H + C * H + C
        self.activation = activation
        self.theta = theta.astype(dtype)
        self.X = X.astype(dtype)
        self.y = y
        self.head = fa.TwoLayerHead(D, H, C, activation=activation)
        self.lin = self.head.linearize(self.theta, self.X, y)
        # References from the (possibly float32) inputs, upcast exactly.
        self.Z = ref.two_layer_logits_ref(self.theta, self.X, H, C, activation)
        self.Jz = ref.two_layer_logit_jacobian_ref(self.theta, self.X, H, C, activation)
        self.J = ref.margin_jacobian_ref(self.Jz, self.Z, y)
        self.stats = ref.margin_ref(self.Z, y)
        self.mask = ref.two_layer_weight_mask_ref(D, H, C)
        rng = np.random.default_rng(seed + 1000)
        self.v = rng.standard_normal(self.P).astype(dtype)
        self.a = rng.standard_normal(N).astype(dtype)
        self.A = rng.standard_normal((N, C)).astype(dtype)

    def margins_at(self, theta):
        Z = ref.two_layer_logits_ref(theta, self.X, self.H, self.C, self.activation)
        return ref.margin_ref(Z, self.y)["margin"]

    def mean_ce_at(self, theta):
        Z = ref.two_layer_logits_ref(theta, self.X, self.H, self.C, self.activation)
        return float(np.mean(ref.cross_entropy_ref(Z, self.y)))


CASE_PARAMS = [(s, act) for s in SHAPES for act in ACTIVATIONS]
CASE_IDS = [f"{i}-{a}" for i in SHAPE_IDS for a in ACTIVATIONS]


@pytest.fixture(params=CASE_PARAMS, ids=CASE_IDS)
def case(request):
    (N, D, H, C), activation = request.param
    return Case(N, D, H, C, activation=activation, seed=N * 1000 + D * 100 + H * 10 + C)


# --------------------------------------------------------------------------
# The fused activation kernel
# --------------------------------------------------------------------------

GRID = np.array([-40.0, -8.0, -3.0, -1.0, -0.3, -1e-8, 0.0, 1e-8, 0.2, 0.7, 2.0, 5.0, 30.0])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_kernel_matches_reference(activation, dtype):
    H = GRID.reshape(1, -1).repeat(3, axis=0).astype(dtype)
    shift = np.array([0.0] * 6 + [0.5] * 7, dtype=dtype)
    a, dphi = kernels.activation_rows(np, H, shift, CODES[activation])
    assert a.dtype == dphi.dtype == dtype and a.shape == dphi.shape == H.shape
    x = H.astype(np.float64) + shift.astype(np.float64)
    # float32 outputs are the float64 values rounded once: 1 ulp of float32.
    rtol = 1e-15 if dtype == np.float64 else 6e-8
    ref.assert_close(a, ref._phi(x, activation), rtol=rtol)
    ref.assert_close(dphi, ref._phi_prime(x, activation), rtol=rtol)


def test_activation_kernel_writes_in_place():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((4, 6))
    expected = np.tanh(H + 0.25)
    a, dphi = kernels.activation_rows(np, H, np.full(6, 0.25), cpu.TANH, out=H)
    assert a is H
    ref.assert_close(H, expected, rtol=1e-15)
    ref.assert_close(dphi, 1 - expected**2, rtol=1e-15)


def test_activation_tails_keep_relative_accuracy():
    x = np.array([[-30.0, -12.0, 12.0, 30.0]])
    zero = np.zeros(4)
    _, dtanh = kernels.activation_rows(np, x, zero, cpu.TANH)
    # tanh'(x) = sech^2 x = 4 e^{-2|x|} / (1 + e^{-2|x|})^2; 1 - tanh^2 would be 0 here.
    e = np.exp(-2 * np.abs(x))
    np.testing.assert_allclose(dtanh, 4 * e / (1 + e) ** 2, rtol=1e-14)
    assert np.all(dtanh > 0)
    # gelu's left tail: x Phi(x) with Phi = special.ndtr (accurate there), not 1 + erf.
    xs = np.array([[-30.0, -12.0, -6.0]])
    a, d = kernels.activation_rows(np, xs, np.zeros(3), cpu.GELU)
    pdf = np.exp(-0.5 * xs**2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(a, xs * special.ndtr(xs), rtol=1e-13)
    np.testing.assert_allclose(d, special.ndtr(xs) + xs * pdf, rtol=1e-12)
    assert np.all(a < 0)


def test_relu_derivative_at_zero_is_zero():
    x = np.array([[-1.0, -0.0, 0.0, 1e-300, 2.0]])
    a, d = kernels.activation_rows(np, x, np.zeros(5), cpu.RELU)
    np.testing.assert_array_equal(a, [[0.0, 0.0, 0.0, 1e-300, 2.0]])
    np.testing.assert_array_equal(d, [[0.0, 0.0, 0.0, 1.0, 1.0]])


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="CUDA simulator not enabled (a real GPU is present)")
@pytest.mark.parametrize("tpb", [1, 2, 8])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_activation_kernel_matches_cpu(tpb, activation, dtype):
    from fgn_arrays.kernels import cuda

    rng = np.random.default_rng(tpb)
    H = (3 * rng.standard_normal((3, 5))).astype(dtype)
    H[0, 0] = 0.0  # relu's kink
    shift = rng.standard_normal(5).astype(dtype)
    shift[0] = 0.0
    got = [np.empty_like(H), np.empty_like(H)]
    expected = [np.empty_like(H), np.empty_like(H)]
    cuda.activation_rows(H, shift, CODES[activation], *got, threads_per_block=tpb)
    cpu.activation_rows(H, shift, CODES[activation], *expected)
    # Both evaluate the same float64 formula; libm and Python's math may differ
    # by an ulp or two (float64), which at most moves a float32 rounding by 1 ulp.
    rtol = 1e-14 if dtype == np.float64 else 1.2e-7
    for g, e, name in zip(got, expected, ["a", "dphi"]):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=1e-300, err_msg=name)
    # and in place, over H itself
    H2 = H.copy()
    cuda.activation_rows(H2, shift, CODES[activation], H2, got[1], threads_per_block=tpb)
    np.testing.assert_allclose(H2, expected[0], rtol=rtol, atol=1e-300)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="CUDA simulator not enabled (a real GPU is present)")
@pytest.mark.parametrize("tpb", [0, 3, 2048])
def test_cuda_activation_threads_per_block_is_checked(tpb):
    from fgn_arrays.kernels import cuda

    H = np.zeros((1, 2))
    with pytest.raises(ValueError, match="`threads_per_block` must be a power of two"):
        cuda.activation_rows(H, np.zeros(2), cpu.TANH, np.empty_like(H), np.empty_like(H), threads_per_block=tpb)


# --------------------------------------------------------------------------
# References agree with finite differences (guards the references)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_jacobian_matches_finite_differences(activation):
    c = Case(5, 3, 4, 3, activation=activation, seed=3)
    Jz_fd = ref.two_layer_logit_jacobian_fd_ref(c.theta, c.X, c.H, c.C, activation)
    ref.assert_close(c.Jz, Jz_fd, rtol=RTOL_FD)


# --------------------------------------------------------------------------
# Layout, construction and initialisation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("D", "H", "C"), [(1, 1, 2), (3, 4, 5), (7, 2, 3)])
def test_n_params_and_layout(D, H, C):
    head = fa.TwoLayerHead(D, H, C)
    assert head.n_params == H * D + H + C * H + C
    theta = np.arange(head.n_params, dtype=np.float64)
    parts = head.unflatten(theta)
    assert [p.shape for p in parts] == [(H, D), (H,), (C, H), (C,)]
    assert all(np.shares_memory(p, theta) for p in parts)
    for got, expected in zip(parts, ref.two_layer_unflatten_ref(theta, D, H, C)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(head.flatten(*parts), theta)
    np.testing.assert_array_equal(head.weight_mask(), ref.two_layer_weight_mask_ref(D, H, C))


def test_repr_and_attributes():
    head = fa.TwoLayerHead(3, 4, 5, activation="gelu")
    assert repr(head) == "TwoLayerHead(n_features=3, n_hidden=4, n_classes=5, activation='gelu')"
    assert (head.n_features, head.n_hidden, head.n_classes, head.activation) == (3, 4, 5, "gelu")
    assert fa.TwoLayerHead(3, 4, 5).activation == "tanh"


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_init_params_scales(activation):
    D, H, C = 500, 400, 300
    head = fa.TwoLayerHead(D, H, C, activation=activation)
    theta = head.init_params(seed=0, dtype="float64")
    W1, b1, W2, b2 = head.unflatten(theta)
    if activation == "tanh":  # Glorot: sqrt(2 / (fan_in + fan_out))
        std1, std2 = math.sqrt(2 / (D + H)), math.sqrt(2 / (H + C))
    else:  # He: sqrt(2 / fan_in)
        std1, std2 = math.sqrt(2 / D), math.sqrt(2 / H)
    # 200k and 120k draws: the sample std is within ~0.2% of the truth (1 s.e.),
    # the mean within ~std / 400; 1% and 5 s.e. leave room but catch a wrong formula.
    for W, std in ((W1, std1), (W2, std2)):
        assert abs(float(np.std(W)) / std - 1) < 0.01, (float(np.std(W)), std)
        assert abs(float(np.mean(W))) < 5 * std / math.sqrt(W.size)
    np.testing.assert_array_equal(b1, np.zeros(H))
    np.testing.assert_array_equal(b2, np.zeros(C))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_params_deterministic(dtype):
    head = fa.TwoLayerHead(6, 5, 4, activation="relu")
    theta = head.init_params(seed=7, dtype=dtype, device="cpu")
    assert isinstance(theta, np.ndarray) and theta.dtype == np.dtype(dtype) and theta.shape == (head.n_params,)
    np.testing.assert_array_equal(theta, head.init_params(seed=7, dtype=dtype, device="cpu"))
    assert not np.array_equal(theta, head.init_params(seed=8, dtype=dtype, device="cpu"))
    W1, b1, W2, b2 = head.unflatten(theta)
    assert np.count_nonzero(W1) == W1.size and np.count_nonzero(W2) == W2.size
    assert not np.any(b1) and not np.any(b2)


# --------------------------------------------------------------------------
# Forward pass, stats, loss and gradient
# --------------------------------------------------------------------------


def test_logits_match_reference(case):
    Z = case.head.logits(case.theta, case.X)
    assert Z.shape == (case.N, case.C) and Z.dtype == np.float64
    ref.assert_close(Z, case.Z, rtol=RTOL64)
    ref.assert_close(case.lin.logits, case.Z, rtol=RTOL64)


def test_stats_loss_and_grad_match_reference(case):
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        ref.assert_close(getattr(case.lin.stats, name), case.stats[name], rtol=RTOL64, err_msg=name)
    expected_loss = float(np.mean(ref.cross_entropy_ref(case.Z, case.y)))
    assert math.isclose(case.lin.loss, expected_loss, rel_tol=RTOL64, abs_tol=RTOL64)
    # g = (1/N) J^T r,  r_i = -(1 - p_i)
    expected = case.J.T @ ref.residual_ref(case.Z, case.y) / case.N
    assert case.lin.grad.shape == (case.P,)
    ref.assert_close(case.lin.grad, expected, rtol=RTOL64)


def test_grad_matches_finite_differences(case):
    g_fd = ref.fd_jacobian(case.mean_ce_at, case.theta)
    ref.assert_close(case.lin.grad, g_fd, rtol=RTOL_FD)


# --------------------------------------------------------------------------
# JVPs, VJPs
# --------------------------------------------------------------------------


def test_margin_products_match_reference(case):
    jv = case.lin.margin_jvp(case.v)
    assert jv.shape == (case.N,)
    ref.assert_close(jv, case.J @ case.v, rtol=RTOL64)
    jta = case.lin.margin_vjp(case.a)
    assert jta.shape == (case.P,)
    ref.assert_close(jta, case.J.T @ case.a, rtol=RTOL64)
    J_lib = np.stack([case.lin.margin_jvp(e) for e in np.eye(case.P)], axis=1)
    ref.assert_close(J_lib, case.J, rtol=RTOL64)
    JT_lib = np.stack([case.lin.margin_vjp(e) for e in np.eye(case.N)], axis=0)
    ref.assert_close(JT_lib, case.J, rtol=RTOL64)


def test_logit_products_match_reference(case):
    zv = case.lin.logits_jvp(case.v)
    assert zv.shape == (case.N, case.C)
    ref.assert_close(zv, np.einsum("ncp,p->nc", case.Jz, case.v), rtol=RTOL64)
    zta = case.lin.logits_vjp(case.A)
    assert zta.shape == (case.P,)
    ref.assert_close(zta, np.einsum("ncp,nc->p", case.Jz, case.A), rtol=RTOL64)


def test_margin_jacobian_matches_finite_differences(case):
    # the library's whole margin Jacobian against central differences of the reference margins
    J_fd = ref.fd_jacobian(case.margins_at, case.theta)
    J_lib = np.stack([case.lin.margin_jvp(e) for e in np.eye(case.P)], axis=1)
    ref.assert_close(J_lib, J_fd, rtol=RTOL_FD)


def test_logits_jvp_matches_finite_differences(case):
    eps = 1e-6

    def f(t):
        return ref.two_layer_logits_ref(t, case.X, case.H, case.C, case.activation)

    fd = (f(case.theta + eps * case.v) - f(case.theta - eps * case.v)) / (2 * eps)
    ref.assert_close(case.lin.logits_jvp(case.v), fd, rtol=RTOL_FD)


def test_margin_products_agree_with_logit_products(case):
    # the S-based margin products equal the generic route through the logits: J v = rowsum(U ⊙ Jz v)
    U = case.lin.U
    ref.assert_close(case.lin.margin_jvp(case.v), np.sum(U * case.lin.logits_jvp(case.v), axis=1), rtol=RTOL64)
    ref.assert_close(case.lin.margin_vjp(case.a), case.lin.logits_vjp(case.a[:, None] * U), rtol=RTOL64)


def test_adjoint_identities(case):
    lhs = float(np.dot(case.lin.margin_jvp(case.v), case.a))
    rhs = float(np.dot(case.v, case.lin.margin_vjp(case.a)))
    bound = RTOL64 * np.linalg.norm(case.J) * np.linalg.norm(case.v) * np.linalg.norm(case.a)
    assert abs(lhs - rhs) <= bound, (lhs, rhs, bound)
    lhs = float(np.sum(case.lin.logits_jvp(case.v) * case.A))
    rhs = float(np.dot(case.v, case.lin.logits_vjp(case.A)))
    bound = RTOL64 * np.linalg.norm(case.Jz) * np.linalg.norm(case.v) * np.linalg.norm(case.A)
    assert abs(lhs - rhs) <= bound, (lhs, rhs, bound)


# --------------------------------------------------------------------------
# Row-space Gram matrix
# --------------------------------------------------------------------------


def test_margin_gram_is_J_JT(case):
    K = case.lin.margin_gram()
    assert K.shape == (case.N, case.N) and K.dtype == np.float64
    ref.assert_close(K, case.J @ case.J.T, rtol=RTOL64)
    ref.assert_close(K, K.T, rtol=RTOL64)
    ref.assert_close(case.lin.margin_gram_diag(), np.diag(case.J @ case.J.T), rtol=RTOL64)


@pytest.mark.parametrize(("damping", "l2"), [(1.0, 0.0), (0.2, 0.5), (1e-3, 1e-1), (10.0, 3.0)])
def test_margin_gram_with_scales_is_J_Laminv_JT(case, damping, l2):
    # J Lam^-1 J^T with Lam = damping I + l2 M (W1 and W2 penalised, b1 and b2 not)
    lam = damping + l2 * case.mask
    expected = (case.J / lam) @ case.J.T
    ws, bs = 1 / (damping + l2), 1 / damping
    ref.assert_close(case.lin.margin_gram(ws, bs), expected, rtol=RTOL64)
    ref.assert_close(case.lin.margin_gram_diag(ws, bs), np.diag(expected), rtol=RTOL64)


@pytest.mark.parametrize(("ws", "bs"), [(1.0, 0.0), (0.0, 1.0), (2.5, 0.0)])
def test_margin_gram_weights_or_biases_only(ws, bs):
    c = Case(6, 3, 4, 5, activation="gelu", seed=9)
    D = ws * c.mask + bs * (1 - c.mask)
    expected = (c.J * D) @ c.J.T
    ref.assert_close(c.lin.margin_gram(ws, bs), expected, rtol=RTOL64)
    ref.assert_close(c.lin.margin_gram_diag(ws, bs), np.diag(expected), rtol=RTOL64)


def test_cost_flops():
    N, D, H, C = 7, 3, 4, 5
    lin = Case(N, D, H, C, seed=1).lin
    flops = lin.cost_flops()
    assert flops["product"] == 4 * N * H * (C + D) + 4 * N * (C + H)
    assert flops["gram"] == 2 * N * N * (C + H) + 2 * N * N * (H + D) + 2 * N * C * H


# --------------------------------------------------------------------------
# Curvature products
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("N", "D", "H", "C"), [(5, 3, 4, 3), (7, 2, 3, 6)])
def test_curvature_products_match_dense(activation, N, D, H, C):
    c = Case(N, D, H, C, activation=activation, seed=N + D + H + C)
    dense = {
        "fgn": ref.fgn_ref(c.J, c.Z, c.y),
        "ggn": ref.ggn_ref(c.Jz, c.Z),
        "dropped": ref.dropped_direct_ref(c.Jz, c.Z, c.y),
    }
    scale = float(np.max(np.abs(dense["ggn"])))
    got = {name: ref.matrix_of(lambda v, f=getattr(fa, f"{name}_matvec"): f(c.lin, v), c.P) for name in dense}
    for name in dense:
        ref.assert_close(got[name], dense[name], rtol=RTOL64, scale=scale, err_msg=name)
    # GGN = FGN + dropped, for the library's own products
    ref.assert_close(got["ggn"], got["fgn"] + got["dropped"], rtol=RTOL64, scale=scale)
    # the dropped term is PSD and, for C > 2, not zero
    assert np.linalg.eigvalsh(0.5 * (got["dropped"] + got["dropped"].T)).min() > -1e-12 * scale
    assert np.max(np.abs(got["dropped"])) > 1e-3 * scale


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dropped_term_vanishes_for_two_classes(activation):
    c = Case(8, 3, 4, 2, activation=activation, seed=5)
    scale = float(np.max(np.abs(ref.ggn_ref(c.Jz, c.Z))))
    dropped = ref.matrix_of(lambda v: fa.dropped_matvec(c.lin, v), c.P)
    assert np.max(np.abs(dropped)) <= 1e-15 * scale
    fgn = ref.matrix_of(lambda v: fa.fgn_matvec(c.lin, v), c.P)
    ref.assert_close(fgn, ref.ggn_ref(c.Jz, c.Z), rtol=RTOL64, scale=scale)


# --------------------------------------------------------------------------
# Damped steps against dense solves
# --------------------------------------------------------------------------


def dense_step(G, grad, theta, mask, damping, l2):
    """delta = -(G + l2 M + damping I)^-1 g and its predicted decrease."""
    g = grad + l2 * mask * theta
    Hm = G + l2 * np.diag(mask)
    delta = np.linalg.solve(Hm + damping * np.eye(len(g)), -g)
    return delta, -(g @ delta + 0.5 * delta @ Hm @ delta)


def mean_ce_grad(c):
    return c.J.T @ (c.stats["prob_true"] - 1.0) / c.N


PAIRS = [(1.0, 0.0), (0.1, 0.0), (1e-3, 0.0), (0.5, 0.3), (1e-2, 1e-1), (10.0, 1.0)]


@pytest.mark.parametrize(("damping", "l2"), PAIRS)
@pytest.mark.parametrize("solver", ["cg", "cholesky", "auto"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fgn_step_matches_dense_solve(activation, solver, damping, l2):
    c = Case(9, 3, 4, 5, activation=activation, seed=17, scale=2.0)
    res = fa.fgn_step(c.lin, damping, l2=l2, solver=solver, rtol=1e-12)
    delta, pred = dense_step(ref.fgn_ref(c.J, c.Z, c.y), mean_ce_grad(c), c.theta, c.mask, damping, l2)
    assert res.converged
    assert res.solver in ("cg", "cholesky") and (solver == "auto" or res.solver == solver)
    assert res.direction.shape == (c.P,) and res.coefficients.shape == (c.N,)
    np.testing.assert_allclose(res.direction, delta, rtol=1e-8, atol=1e-8 * np.abs(delta).max())
    np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-8)
    assert res.predicted_decrease > 0


@pytest.mark.parametrize(("damping", "l2"), PAIRS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_ggn_step_matches_dense_solve(activation, damping, l2):
    c = Case(6, 3, 3, 4, activation=activation, seed=23, scale=2.0)
    res = fa.ggn_step(c.lin, damping, l2=l2, rtol=1e-12)
    delta, pred = dense_step(ref.ggn_ref(c.Jz, c.Z), mean_ce_grad(c), c.theta, c.mask, damping, l2)
    assert res.converged and res.solver == "cg-parameter-space"
    np.testing.assert_allclose(res.direction, delta, rtol=1e-8, atol=1e-8 * np.abs(delta).max())
    np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-8)


@pytest.mark.parametrize(("damping", "l2"), PAIRS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fgn_equals_ggn_for_two_classes(activation, damping, l2):
    c = Case(10, 3, 4, 2, activation=activation, seed=29, scale=2.0)
    ggn = fa.ggn_step(c.lin, damping, l2=l2, rtol=1e-13)
    for solver in ("cholesky", "cg"):
        fgn = fa.fgn_step(c.lin, damping, l2=l2, solver=solver, rtol=1e-13)
        scale = np.abs(ggn.direction).max()
        np.testing.assert_allclose(fgn.direction, ggn.direction, rtol=1e-9, atol=1e-9 * scale, err_msg=solver)
        np.testing.assert_allclose(fgn.predicted_decrease, ggn.predicted_decrease, rtol=1e-9)


def test_fgn_differs_from_ggn_for_many_classes():
    c = Case(8, 3, 4, 6, activation="tanh", seed=31, scale=2.0)
    fgn = fa.fgn_step(c.lin, 1e-2, solver="cholesky").direction
    ggn = fa.ggn_step(c.lin, 1e-2, rtol=1e-12).direction
    assert np.linalg.norm(fgn - ggn) > 1e-3 * np.linalg.norm(ggn)


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_zero_damping_minimum_norm(l2):
    c = Case(4, 3, 3, 4, activation="tanh", seed=37)  # N = 4 < P = 28: G_FGN singular
    res = fa.fgn_step(c.lin, 0.0, l2=l2, rtol=1e-12)
    Hm = ref.fgn_ref(c.J, c.Z, c.y) + l2 * np.diag(c.mask)
    g = mean_ce_grad(c) + l2 * c.mask * c.theta
    minimum_norm = -np.linalg.pinv(Hm, rcond=1e-12) @ g
    assert res.converged and res.solver == "cg-parameter-space"
    np.testing.assert_allclose(res.direction, minimum_norm, rtol=1e-6, atol=1e-6 * np.abs(minimum_norm).max())


def test_auto_follows_the_cost_model():
    rng = np.random.default_rng(0)
    # few rows, wide layers: the N x N Gram matrix is cheap -> Cholesky
    head = fa.TwoLayerHead(64, 64, 300)
    lin = head.linearize(head.init_params(dtype="float64"), rng.standard_normal((32, 64)), rng.integers(0, 300, 32))
    assert step_module._choose_solver(lin) == "cholesky"
    # many rows, narrow layers: CG iterations are cheap -> CG
    head = fa.TwoLayerHead(2, 2, 3, activation="relu")
    lin = head.linearize(head.init_params(dtype="float64"), rng.standard_normal((3000, 2)), rng.integers(0, 3, 3000))
    assert step_module._choose_solver(lin) == "cg"
    assert fa.fgn_step(lin, 1.0).solver == "cg"


def test_step_decreases_the_objective():
    c = Case(40, 4, 6, 5, activation="gelu", seed=41, scale=3.0)
    l2 = 0.01
    res = fa.fgn_step(c.lin, 1.0, l2=l2)

    def objective(theta):
        return c.head.linearize(theta, c.X, c.y).loss + 0.5 * l2 * np.sum(c.mask * theta**2)

    assert objective(c.theta + res.direction) < objective(c.theta) - 0.1 * res.predicted_decrease


# --------------------------------------------------------------------------
# float32
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_products(activation):
    c = Case(7, 3, 4, 6, activation=activation, seed=43, dtype=np.float32)
    v, a, A = (x.astype(np.float64) for x in (c.v, c.a, c.A))
    outputs = {
        "logits": (c.head.logits(c.theta, c.X), c.Z),
        "grad": (c.lin.grad, mean_ce_grad(c)),
        "margin_jvp": (c.lin.margin_jvp(c.v), c.J @ v),
        "margin_vjp": (c.lin.margin_vjp(c.a), c.J.T @ a),
        "logits_jvp": (c.lin.logits_jvp(c.v), np.einsum("ncp,p->nc", c.Jz, v)),
        "logits_vjp": (c.lin.logits_vjp(c.A), np.einsum("ncp,nc->p", c.Jz, A)),
        "margin_gram": (c.lin.margin_gram(), c.J @ c.J.T),
        "margin_gram_scaled": (c.lin.margin_gram(0.5, 4.0), (c.J * (0.5 * c.mask + 4.0 * (1 - c.mask))) @ c.J.T),
        "margin_gram_diag": (c.lin.margin_gram_diag(), np.diag(c.J @ c.J.T)),
        "fgn_matvec": (fa.fgn_matvec(c.lin, c.v), ref.fgn_ref(c.J, c.Z, c.y) @ v),
        "ggn_matvec": (fa.ggn_matvec(c.lin, c.v), ref.ggn_ref(c.Jz, c.Z) @ v),
    }
    for name, (got, expected) in outputs.items():
        assert got.dtype == np.float32, name
        ref.assert_close(got, expected, rtol=RTOL32, err_msg=name)
    assert math.isclose(c.lin.loss, float(np.mean(c.stats["loss"])), rel_tol=RTOL32)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_step_matches_float64(activation, solver):
    c = Case(10, 4, 5, 5, activation=activation, seed=47, dtype=np.float32)
    res = fa.fgn_step(c.lin, 0.1, l2=0.01, solver=solver, rtol=1e-6)
    delta, pred = dense_step(ref.fgn_ref(c.J, c.Z, c.y), mean_ce_grad(c), c.theta.astype(np.float64), c.mask, 0.1, 0.01)
    assert res.direction.dtype == np.float32 and res.coefficients.dtype == np.float32
    # float32 products (~1e-6 relative) amplified by the system's conditioning
    # (damping 0.1, curvature < 1) and CG's rtol 1e-6: 1e-5 of the largest entry.
    ref.assert_close(res.direction, delta, rtol=1e-5)
    assert math.isclose(res.predicted_decrease, pred, rel_tol=1e-5)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sigmoid", "Tanh", "", "softplus"])
def test_unknown_activation(name):
    with pytest.raises(ValueError, match=r"`activation` must be one of \('tanh', 'relu', 'gelu'\); got"):
        fa.TwoLayerHead(3, 4, 5, activation=name)


def test_activation_must_be_a_string():
    with pytest.raises(TypeError, match="`activation` must be one of"):
        fa.TwoLayerHead(3, 4, 5, activation=None)


@pytest.mark.parametrize("n_hidden", [0, -2])
def test_n_hidden_below_one(n_hidden):
    with pytest.raises(ValueError, match=rf"`n_hidden` must be >= 1; got {n_hidden}"):
        fa.TwoLayerHead(3, n_hidden, 5)


@pytest.mark.parametrize("n_hidden", [2.0, "4", True])
def test_n_hidden_not_an_integer(n_hidden):
    with pytest.raises(TypeError, match="`n_hidden` must be an integer"):
        fa.TwoLayerHead(3, n_hidden, 5)


@pytest.mark.parametrize(("n_features", "n_classes", "match"), [(0, 3, "n_features"), (3, 1, "n_classes")])
def test_bad_counts(n_features, n_classes, match):
    with pytest.raises(ValueError, match=match):
        fa.TwoLayerHead(n_features, 4, n_classes)


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_theta_length(delta):
    c = Case(5, 3, 4, 3, seed=2)
    theta = np.zeros(c.P + delta)
    with pytest.raises(ValueError, match=rf"`theta` must have shape \({c.P},\); got \({c.P + delta},\)"):
        c.head.linearize(theta, c.X, c.y)
    with pytest.raises(ValueError, match=r"`theta` must have shape"):
        c.head.logits(theta, c.X)


@pytest.mark.parametrize("shape", [(5, 2), (5, 4), (15,), (1, 5, 3)])
def test_wrong_X_shape(shape):
    c = Case(5, 3, 4, 3, seed=2)
    X = np.ones(shape)
    with pytest.raises(ValueError, match=r"`X` must have shape \(n_samples, 3\)"):
        c.head.linearize(c.theta, X, c.y)
    with pytest.raises(ValueError, match=r"`X` must have shape \(n_samples, 3\)"):
        c.head.logits(c.theta, X)


def test_product_argument_shapes():
    c = Case(5, 3, 4, 3, seed=2)
    with pytest.raises(ValueError, match=r"`v` must have shape"):
        c.lin.margin_jvp(np.ones(c.P - 1))
    with pytest.raises(ValueError, match=r"`a` must have shape"):
        c.lin.margin_vjp(np.ones(c.N + 1))
    with pytest.raises(ValueError, match=r"`A` must have shape"):
        c.lin.logits_vjp(np.ones((c.N, c.C + 1)))


def test_init_params_bad_device():
    with pytest.raises(ValueError, match="`device` must be 'cpu' or 'gpu'"):
        fa.TwoLayerHead(3, 4, 5).init_params(device="tpu")


# --------------------------------------------------------------------------
# GPU (device in, device out): on the CuPy stand-in, and on CuPy where a GPU is present
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_parity(gpu_xp, activation, dtype):
    c = Case(40, 6, 8, 9, activation=activation, seed=53, dtype=dtype)
    lin = c.head.linearize(gpu_xp.asarray(c.theta), gpu_xp.asarray(c.X), gpu_xp.asarray(c.y))
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    v, a, A = gpu_xp.asarray(c.v), gpu_xp.asarray(c.a), gpu_xp.asarray(c.A)
    pairs = {
        "logits": (lin.logits, c.lin.logits),
        "grad": (lin.grad, c.lin.grad),
        "margin_jvp": (lin.margin_jvp(v), c.lin.margin_jvp(c.v)),
        "margin_vjp": (lin.margin_vjp(a), c.lin.margin_vjp(c.a)),
        "logits_jvp": (lin.logits_jvp(v), c.lin.logits_jvp(c.v)),
        "logits_vjp": (lin.logits_vjp(A), c.lin.logits_vjp(c.A)),
        "margin_gram": (lin.margin_gram(0.5, 2.0), c.lin.margin_gram(0.5, 2.0)),
        "margin_gram_diag": (lin.margin_gram_diag(0.5, 2.0), c.lin.margin_gram_diag(0.5, 2.0)),
        "ggn_matvec": (fa.ggn_matvec(lin, v), fa.ggn_matvec(c.lin, c.v)),
    }
    for name, (gpu, cpu_value) in pairs.items():
        assert isinstance(gpu, gpu_xp.ndarray) and gpu.dtype == dtype, name
        ref.assert_close(to_host(gpu), cpu_value, rtol=rtol, err_msg=name)
    if dtype == np.float64:
        for solver in ("cg", "cholesky"):
            gpu = fa.fgn_step(lin, 0.1, l2=0.01, solver=solver, rtol=1e-12)
            cpu_step = fa.fgn_step(c.lin, 0.1, l2=0.01, solver=solver, rtol=1e-12)
            np.testing.assert_allclose(to_host(gpu.direction), cpu_step.direction, rtol=1e-9, atol=1e-12)
    theta = c.head.init_params(seed=3, dtype=dtype, device="gpu")
    assert isinstance(theta, gpu_xp.ndarray)
    np.testing.assert_array_equal(to_host(theta), c.head.init_params(seed=3, dtype=dtype, device="cpu"))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cupy_activation_kernel_matches_cpu(gpu_xp, activation):
    # The stand-in runs its CPU twin unless asked to run the Numba CUDA kernel
    # (under the simulator, one Python thread per CUDA thread): there, a small
    # shape and the request, so that the device kernel is what is compared.
    standin = gpu_xp.ndarray is DeviceArray
    shape = (4, 16) if standin else (300, 70)
    rng = np.random.default_rng(0)
    H = 3 * rng.standard_normal(shape)
    H[0, :5] = [0.0, -0.0, 1e-8, -30.0, 30.0]
    shift = rng.standard_normal(shape[1])
    shift[:5] = 0.0
    if standin:
        gpu_xp.kernels.simulate_max_entries = H.size
    a, d = kernels.activation_rows(gpu_xp, gpu_xp.asarray(H), gpu_xp.asarray(shift), CODES[activation])
    a_cpu, d_cpu = kernels.activation_rows(np, H, shift, CODES[activation])
    # device libm (libdevice) vs host libm: a few ulps of float64
    np.testing.assert_allclose(to_host(a), a_cpu, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(to_host(d), d_cpu, rtol=1e-14, atol=1e-300)


# --------------------------------------------------------------------------
# Property test
# --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 8),
    D=st.integers(1, 4),
    H=st.integers(1, 5),
    C=st.integers(2, 6),
    activation=st.sampled_from(ACTIVATIONS),
    log_scale=st.floats(-1.0, 1.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_products_and_gram(N, D, H, C, activation, log_scale, seed):
    c = Case(N, D, H, C, activation=activation, seed=seed, scale=10.0**log_scale)
    ref.assert_close(c.lin.margin_jvp(c.v), c.J @ c.v, rtol=1e-11)
    ref.assert_close(c.lin.margin_vjp(c.a), c.J.T @ c.a, rtol=1e-11)
    ref.assert_close(c.lin.margin_gram(0.7, 3.0), (c.J * (0.7 * c.mask + 3.0 * (1 - c.mask))) @ c.J.T, rtol=1e-11)
