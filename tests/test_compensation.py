"""The Kronecker damping of the dropped term against dense float64 matrices built from its definition."""

import numpy as np
import pytest
from reference import (
    _phi,
    competitor_probs_ref,
    fgn_ref,
    linear_logit_jacobian_ref,
    linear_logits_ref,
    margin_jacobian_ref,
    margin_ref,
    random_linear_problem,
    random_two_layer_problem,
    two_layer_logit_jacobian_ref,
    two_layer_logits_ref,
    two_layer_unflatten_ref,
    two_layer_weight_mask_ref,
)

import fgn_arrays as fa
from fgn_arrays.compensation import KroneckerDamping, kronecker_fgn_step, output_covariance
from fgn_arrays.step import _on_host

DAMPING, L2 = 0.3, 0.05


def case(kind, C=4, N=30, D=5, H=3):
    """Head, its linearization and the dense pieces: J, G_FGN, mean-CE gradient, mask, output features, offset."""
    if kind == "linear":
        theta, X, y = random_linear_problem(N, D, C, seed=3, scale=3.0)
        head = fa.LinearHead(D, C)
        Z = linear_logits_ref(theta, X, C)
        Jz = linear_logit_jacobian_ref(theta, X, C)
        F, offset = X, 0
        mask = np.r_[np.ones(C * D), np.zeros(C)]
    else:
        theta, X, y = random_two_layer_problem(N, D, H, C, seed=3, scale=3.0)
        head = fa.TwoLayerHead(D, H, C, activation="tanh")
        Z = two_layer_logits_ref(theta, X, H, C, "tanh")
        Jz = two_layer_logit_jacobian_ref(theta, X, H, C, "tanh")
        W1, b1, _, _ = two_layer_unflatten_ref(theta, D, H, C)
        F, offset = _phi(X @ W1.T + b1, "tanh"), H * D + H
        mask = two_layer_weight_mask_ref(D, H, C)
    J = margin_jacobian_ref(Jz, Z, y)
    p = margin_ref(Z, y)["prob_true"]
    grad = J.T @ (p - 1.0) / N + L2 * mask * theta
    lin = head.linearize(theta, X, y)
    return dict(head=head, lin=lin, Z=Z, y=y, J=J, G=fgn_ref(J, Z, y), g=grad, mask=mask, F=F, offset=offset)


def dense_lam(c, damping=DAMPING, l2=L2):
    """``Lam_B = lambda I + l2 M + B`` as a dense (P, P) matrix, from the definition."""
    Z, y, F, off = c["Z"], c["y"], c["F"], c["offset"]
    N, f = F.shape
    C = Z.shape[1]
    Q = competitor_probs_ref(Z, y)
    one_minus_p = 1.0 - margin_ref(Z, y)["prob_true"]
    beta = np.mean(one_minus_p[:, None] * Q * (1 - Q), axis=0)
    Ft = np.hstack([F, np.ones((N, 1))])
    Sigma = Ft.T @ Ft / N
    P = c["J"].shape[1]
    Lam = np.diag(damping + l2 * c["mask"])
    for k in range(C):
        # class k's output parameters: W_k (row k of W) and b_k
        idx = np.r_[off + k * f + np.arange(f), off + C * f + k]
        Lam[np.ix_(idx, idx)] = beta[k] * Sigma + (damping + l2) * np.eye(f + 1)
    assert Lam.shape == (P, P)
    return Lam, beta


def damping_part(c, damping=DAMPING, l2=L2):
    """``lambda I + l2 E``, ``E`` the projector on the output biases: the part of ``Lam_B`` that is not model."""
    C = c["Z"].shape[1]
    P = c["J"].shape[1]
    E = np.zeros(P)
    E[P - C:] = 1.0  # the output biases are the last C entries for both heads
    return np.diag(damping + l2 * E)


@pytest.mark.parametrize("kind", ["linear", "two_layer"])
def test_solve_quadratic_and_diagonal_against_dense(kind):
    c = case(kind)
    lin = c["lin"]
    Lam, beta = dense_lam(c)
    lam = KroneckerDamping(lin, output_covariance(lin), DAMPING, L2)
    np.testing.assert_allclose(lam.beta, beta, rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(Lam.shape[0])
    np.testing.assert_allclose(lam.solve(v), np.linalg.solve(Lam, v), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lam.apply(v), Lam @ v, rtol=1e-10, atol=1e-12)
    assert float(lam.lam_max) == pytest.approx(np.linalg.eigvalsh(Lam).max(), rel=1e-10)
    # the model's share: B + l2 M, without lambda and without the output biases' l2 (damping)
    assert lam.quadratic(v) == pytest.approx(v @ (Lam - damping_part(c)) @ v, rel=1e-12)
    # Jacobi diagonal of I + A Lam^-1 A^T, A = diag(s) J
    s = rng.uniform(0.1, 1.0, size=lin.n_samples)
    A = s[:, None] * c["J"]
    K = np.eye(lin.n_samples) + A @ np.linalg.solve(Lam, A.T)
    np.testing.assert_allclose(lam.row_space_diag(s), np.diag(K), rtol=1e-10)


def test_two_classes_leave_only_the_output_bias_penalty():
    # C = 2: q_ik is 0 or 1, so beta = 0 and Lam_B = lambda + l2 M, plus l2 on the output biases.
    c = case("linear", C=2)
    lam = KroneckerDamping(c["lin"], output_covariance(c["lin"]), DAMPING, L2)
    np.testing.assert_array_equal(lam.beta, 0.0)
    v = np.random.default_rng(1).standard_normal(c["J"].shape[1])
    expected = v / (DAMPING + L2)  # every entry, biases included
    np.testing.assert_allclose(lam.solve(v), expected, rtol=1e-12)


def test_output_covariance_reconstructs_sigma():
    c = case("linear", N=40, D=6)
    e, V = output_covariance(c["lin"])
    Ft = np.hstack([c["F"], np.ones((40, 1))])
    np.testing.assert_allclose(V @ np.diag(e) @ V.T, Ft.T @ Ft / 40, rtol=1e-10, atol=1e-12)
    assert np.all(e >= 0)


@pytest.mark.parametrize("kind", ["linear", "two_layer"])
def test_step_solves_the_damped_system(kind):
    c = case(kind)
    lin = c["lin"]
    Lam, _ = dense_lam(c)
    M = c["G"] + Lam  # G_FGN + lambda I + l2 M + B
    step = _on_host(kronecker_fgn_step(lin, c["g"], DAMPING, L2, output_covariance(lin), rtol=1e-12), 1e-10)
    assert step.converged and step.solver == "cg-kronecker"
    assert step.residual <= 1e-10
    expected = np.linalg.solve(M, -c["g"])
    np.testing.assert_allclose(step.direction, expected, rtol=1e-8, atol=1e-10)
    # predicted decrease of the model g.d + 1/2 d^T (G_FGN + l2 M + B) d (no lambda)
    d = expected
    pred = -(c["g"] @ d + 0.5 * d @ (M - damping_part(c)) @ d)
    assert step.predicted_decrease == pytest.approx(pred, rel=1e-8)


def test_step_with_the_gradient_of_a_larger_batch():
    # Woodbury holds for any g: curvature from the first 12 rows, gradient from all 30.
    c = case("linear")
    head, lin = c["head"], c["lin"]
    sub = head.linearize(lin.theta, lin.X[:12], lin.y[:12])
    cs = dict(c, Z=c["Z"][:12], y=c["y"][:12], F=c["F"][:12], J=c["J"][:12])
    Lam, _ = dense_lam(cs)
    M = fgn_ref(cs["J"], cs["Z"], cs["y"]) + Lam
    step = _on_host(kronecker_fgn_step(sub, c["g"], DAMPING, L2, output_covariance(sub), rtol=1e-12), 1e-10)
    assert step.converged
    np.testing.assert_allclose(step.direction, np.linalg.solve(M, -c["g"]), rtol=1e-8, atol=1e-10)
