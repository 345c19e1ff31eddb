"""The optimizer's subspace correction: its fused row sums and its GGN model, against dense float64 references."""

import numpy as np
import pytest
from reference import (
    cross_entropy_ref,
    ggn_ref,
    linear_logit_jacobian_ref,
    linear_logits_ref,
    random_linear_problem,
    random_two_layer_problem,
    softmax_ref,
    two_layer_logit_jacobian_ref,
    two_layer_weight_mask_ref,
)

import fgn_arrays as fa
from fgn_arrays import kernels
from fgn_arrays.methods import Subspace
from fgn_arrays.testing import use_standin


def sums_ref(Z, y, A, B):
    """``[sum g.A, sum g.B, sum A^T H A, sum A^T H B, sum B^T H B]`` with the softmax's ``g_i``, ``H_i`` formed."""
    P = softmax_ref(Z)
    out = np.zeros(5)
    for i in range(len(y)):
        g = P[i].copy()
        g[y[i]] -= 1.0
        H = np.diag(P[i]) - np.outer(P[i], P[i])
        a, b = A[i].astype(np.float64), B[i].astype(np.float64)
        out += [g @ a, g @ b, a @ H @ a, a @ H @ b, b @ H @ b]
    return out


@pytest.mark.parametrize("path", ["numpy", "standin"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_subspace_sums_match_the_formed_softmax_hessian(path, dtype, rtol, scale):
    rng = np.random.default_rng(3)
    N, C = 40, 7
    Z = (scale * rng.standard_normal((N, C))).astype(dtype)
    y = rng.integers(0, C, N)
    A, B = rng.standard_normal((2, N, C)).astype(dtype)
    lin_stats, U = fa.margin._margin_stats(np, Z, y, competitors="direction")
    # r_i = -(1 - p_i), the margin residual
    r = -(1 - lin_stats.prob_true)
    if path == "numpy":
        sums = kernels.subspace_sums(np, U, r, y, A, B)
    else:
        # the GPU path (the GPU kernel's CPU twin at this size, on stand-in device arrays)
        with use_standin() as sx:
            sums = kernels.subspace_sums(sx, *(sx.asarray(a) for a in (U, r, y, A, B))).get()
    ref = sums_ref(Z, y, A, B)
    np.testing.assert_allclose(sums, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    # the curvature sums form a positive semi-definite 2 x 2 matrix
    assert sums[2] > 0 and sums[4] > 0 and sums[2] * sums[4] >= sums[3] ** 2


def test_subspace_sums_stay_accurate_when_the_label_is_certain():
    # p_i -> 1: the variance is ~ (1 - p) and must not be lost to cancellation.
    N = 3
    Z = np.array([[40.0, 0.0, 1.0, -2.0], [0.0, 35.0, 0.5, 0.2], [3.0, -1.0, 30.0, 0.0]])
    y = np.array([0, 1, 2])
    A = np.array([[0.3, -1.0, 2.0, 0.5], [1.0, 0.0, -0.5, 0.25], [2.0, 1.0, 0.0, -1.0]])
    st, U = fa.margin._margin_stats(np, Z, y, competitors="direction")
    sums = kernels.subspace_sums(np, U, -np.exp(-np.logaddexp(0, st.margin)), y, A, A)
    # reference per row: log-space probabilities, then the two-pass mean and variance of a = A - A_y
    ref = np.zeros(2)
    for i in range(N):
        p = np.exp(Z[i] - np.logaddexp.reduce(Z[i]))
        a = A[i] - A[i, y[i]]
        mean = p @ a  # = (P - e_y) . A
        ref += [mean, p @ (a - mean) ** 2]
    assert ref[1] < 1e-10  # the case this test is for
    np.testing.assert_allclose([sums[0], sums[2]], ref, rtol=1e-10)


def linear_case(l2):
    theta, X, y = random_linear_problem(30, 4, 5, seed=2, scale=2.0)
    head = fa.LinearHead(4, 5)
    Jz = linear_logit_jacobian_ref(theta, X, 5)
    mask = np.concatenate([np.ones(20), np.zeros(5)])
    return head, theta, X, y, Jz, mask, lambda t: linear_logits_ref(t, X, 5)


def two_layer_case(l2):
    theta, X, y = random_two_layer_problem(30, 4, 6, 5, seed=2, scale=2.0)
    head = fa.TwoLayerHead(4, 6, 5, activation="tanh")
    Jz = two_layer_logit_jacobian_ref(theta, X, 6, 5, "tanh")
    return head, theta, X, y, Jz, two_layer_weight_mask_ref(4, 6, 5), None


@pytest.mark.parametrize("case", [linear_case, two_layer_case])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_model_is_the_ggn_restricted_to_the_plane(case, l2):
    head, theta, X, y, Jz, mask, _ = case(l2)
    rng = np.random.default_rng(7)
    dirs = [rng.standard_normal(head.n_params) * 0.3 for _ in range(2)]
    lin = head.linearize(theta, X, y)
    images = [lin.logits_jvp(d) for d in dirs] if head._affine_logits else None
    G, H = Subspace(lin, dirs, images).model(lin, l2)
    # dense references: grad = (1/N) Jz^T (softmax - e_y) + l2 M theta, and the GGN + l2 M
    Z = np.einsum("ncp,p->nc", Jz, theta) if head._affine_logits else lin.logits
    R = softmax_ref(Z)
    R[np.arange(len(y)), y] -= 1.0
    grad = np.einsum("ncp,nc->p", Jz, R) / len(y) + l2 * mask * theta
    curv = ggn_ref(Jz, Z) + l2 * np.diag(mask)
    D = np.stack(dirs, axis=1)
    np.testing.assert_allclose(G, D.T @ grad, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(H, D.T @ curv @ D, rtol=1e-10, atol=1e-13)


def test_linear_model_matches_finite_differences_of_the_objective():
    # Affine logits: the GGN over the plane is the objective's exact Hessian there.
    head, theta, X, y, _, mask, logits = linear_case(0.05)
    l2 = 0.05
    rng = np.random.default_rng(8)
    dirs = [rng.standard_normal(head.n_params) * 0.3 for _ in range(2)]
    lin = head.linearize(theta, X, y)
    G, H = Subspace(lin, dirs, [lin.logits_jvp(d) for d in dirs]).model(lin, l2)

    def phi(c):
        t = theta + c[0] * dirs[0] + c[1] * dirs[1]
        return cross_entropy_ref(logits(t), y).mean() + 0.5 * l2 * np.sum(mask * t * t)

    eps = 1e-4
    E = np.eye(2) * eps
    G_fd = np.array([(phi(E[j]) - phi(-E[j])) / (2 * eps) for j in range(2)])
    H_fd = np.array([[(phi(E[j] + E[k]) - phi(E[j] - E[k]) - phi(-E[j] + E[k]) + phi(-E[j] - E[k])) / (4 * eps**2)
                      for k in range(2)] for j in range(2)])
    np.testing.assert_allclose(G, G_fd, rtol=1e-7)
    np.testing.assert_allclose(H, H_fd, rtol=1e-5)


@pytest.mark.parametrize("case", [linear_case, two_layer_case])
def test_points_of_the_plane_and_the_newton_step(case):
    head, theta, X, y, _, _, _ = case(0.0)
    rng = np.random.default_rng(9)
    dirs = [rng.standard_normal(head.n_params) * 0.2 for _ in range(2)]
    lin = head.linearize(theta, X, y)
    images = [lin.logits_jvp(d) for d in dirs] if head._affine_logits else None
    space = Subspace(lin, dirs, images)
    coef = (0.7, -0.4)
    at, image = space.point(coef)
    fresh = head.linearize(theta + 0.7 * dirs[0] - 0.4 * dirs[1], X, y)
    np.testing.assert_allclose(at.theta, fresh.theta, rtol=1e-15)
    np.testing.assert_allclose(at.logits, fresh.logits, rtol=1e-12, atol=1e-13)
    if head._affine_logits:
        np.testing.assert_allclose(image, fresh.logits - lin.logits, rtol=1e-12, atol=1e-13)
    else:
        assert image is None
    # the Newton step solves H t = -G from coef
    G, H = space.model(at, 0.01)
    t = np.array(space.newton(G, H, coef)) - coef
    np.testing.assert_allclose(H @ t, -G, rtol=1e-10, atol=1e-14)


def test_newton_drops_a_collinear_previous_step():
    head, theta, X, y, _, _, _ = linear_case(0.0)
    d = np.random.default_rng(10).standard_normal(head.n_params)
    lin = head.linearize(theta, X, y)
    dirs = [d, 2.0 * d]  # H is singular: the previous step adds nothing
    space = Subspace(lin, dirs, [lin.logits_jvp(v) for v in dirs])
    G, H = space.model(lin, 0.0)
    coef = space.newton(G, H, (1.0, 0.0))
    assert coef[1] == 0.0
    assert coef[0] == pytest.approx(1.0 - G[0] / H[0, 0], rel=1e-12)
