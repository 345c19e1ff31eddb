"""Damped FGN and GGN steps against dense float64 solves (numpy.linalg.solve)."""

import numpy as np
import pytest
from conftest import to_host
from reference import (
    fgn_ref,
    ggn_ref,
    linear_logit_jacobian_ref,
    linear_logits_ref,
    margin_jacobian_ref,
    margin_ref,
    random_linear_problem,
)

import fgn_arrays as fa
from fgn_arrays import step as step_module


def dense_problem(N, D, C, seed=0, scale=2.0):
    """The linear head's dense float64 pieces: theta, X, y, J, G_FGN, G_GGN, mean-CE gradient, mask."""
    theta, X, y = random_linear_problem(N, D, C, seed=seed, scale=scale)
    Jz = linear_logit_jacobian_ref(theta, X, C)
    Z = linear_logits_ref(theta, X, C)
    J = margin_jacobian_ref(Jz, Z, y)
    p = margin_ref(Z, y)["prob_true"]
    grad = J.T @ (p - 1.0) / N  # (1/N) J^T r, r = -(1 - p)
    mask = np.r_[np.ones(C * D), np.zeros(C)]  # W penalised, b not
    return dict(theta=theta, X=X, y=y, J=J, fgn=fgn_ref(J, Z, y), ggn=ggn_ref(Jz, Z), grad=grad, mask=mask)


def dense_step(G, grad, theta, mask, damping, l2):
    """delta = -(G + l2 M + damping I)^-1 g, and the predicted decrease of its quadratic model."""
    g = grad + l2 * mask * theta
    H = G + l2 * np.diag(mask)
    delta = np.linalg.solve(H + damping * np.eye(len(g)), -g)
    return delta, -(g @ delta + 0.5 * delta @ H @ delta)


PAIRS = [(1.0, 0.0), (0.1, 0.0), (1e-3, 0.0), (0.5, 0.3), (1e-2, 1e-1), (10.0, 1.0)]


@pytest.mark.parametrize("damping, l2", PAIRS)
@pytest.mark.parametrize("solver", ["cg", "cholesky", "auto"])
@pytest.mark.parametrize("shape", [(6, 3, 4), (12, 2, 3), (5, 4, 7)])
def test_fgn_step_matches_dense_solve(shape, solver, damping, l2):
    d = dense_problem(*shape)
    head = fa.LinearHead(shape[1], shape[2])
    lin = head.linearize(d["theta"], d["X"], d["y"])
    res = fa.fgn_step(lin, damping, l2=l2, solver=solver, rtol=1e-12)
    delta, pred = dense_step(d["fgn"], d["grad"], d["theta"], d["mask"], damping, l2)
    assert res.converged
    assert res.solver in ("cg", "cholesky") and (solver == "auto" or res.solver == solver)
    np.testing.assert_allclose(res.direction, delta, rtol=1e-8, atol=1e-8 * np.abs(delta).max())
    np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-8)
    assert res.predicted_decrease > 0
    assert res.coefficients.shape == (shape[0],)


@pytest.mark.parametrize("damping, l2", PAIRS)
def test_ggn_step_matches_dense_solve(damping, l2):
    d = dense_problem(6, 3, 5)
    lin = fa.LinearHead(3, 5).linearize(d["theta"], d["X"], d["y"])
    res = fa.ggn_step(lin, damping, l2=l2, rtol=1e-12)
    delta, pred = dense_step(d["ggn"], d["grad"], d["theta"], d["mask"], damping, l2)
    assert res.converged and res.solver == "cg-parameter-space" and res.coefficients is None
    np.testing.assert_allclose(res.direction, delta, rtol=1e-8, atol=1e-8 * np.abs(delta).max())
    np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-8)


@pytest.mark.parametrize("damping, l2", PAIRS)
def test_fgn_equals_ggn_for_two_classes(damping, l2):
    d = dense_problem(9, 3, 2)
    lin = fa.LinearHead(3, 2).linearize(d["theta"], d["X"], d["y"])
    fgn = fa.fgn_step(lin, damping, l2=l2, solver="cholesky")
    ggn = fa.ggn_step(lin, damping, l2=l2, rtol=1e-13)
    np.testing.assert_allclose(fgn.direction, ggn.direction, rtol=1e-9, atol=1e-9 * np.abs(ggn.direction).max())
    np.testing.assert_allclose(fgn.predicted_decrease, ggn.predicted_decrease, rtol=1e-9)


def test_fgn_differs_from_ggn_for_many_classes():
    # The dropped within-competitor term matters for C > 2: a test that cannot
    # tell FGN from GGN would pass the two-class test trivially.
    d = dense_problem(8, 3, 6)
    lin = fa.LinearHead(3, 6).linearize(d["theta"], d["X"], d["y"])
    fgn = fa.fgn_step(lin, 1e-2, solver="cholesky").direction
    ggn = fa.ggn_step(lin, 1e-2, rtol=1e-12).direction
    assert np.linalg.norm(fgn - ggn) > 1e-3 * np.linalg.norm(ggn)


def test_jacobi_preconditioner_is_the_exact_diagonal():
    d = dense_problem(7, 3, 4)
    lin = fa.LinearHead(3, 4).linearize(d["theta"], d["X"], d["y"])
    damping, l2 = 0.2, 0.5
    lam = damping + l2 * d["mask"]
    K = (d["J"] / lam) @ d["J"].T
    np.testing.assert_allclose(lin.margin_gram(1 / (damping + l2), 1 / damping), K, rtol=1e-12)
    np.testing.assert_allclose(lin.margin_gram_diag(1 / (damping + l2), 1 / damping), np.diag(K), rtol=1e-12)


def test_warm_start_from_coefficients():
    d = dense_problem(20, 4, 6, seed=3)
    lin = fa.LinearHead(4, 6).linearize(d["theta"], d["X"], d["y"])
    cold = fa.fgn_step(lin, 1e-3, solver="cg", rtol=1e-10)
    warm = fa.fgn_step(lin, 1e-3, solver="cg", rtol=1e-10, x0=cold.coefficients)
    assert cold.n_iter > 2
    assert warm.n_iter == 0
    np.testing.assert_allclose(warm.direction, cold.direction, rtol=1e-12)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_float32_badly_misclassified_rows_give_finite_directions(solver):
    # Margins near -600: w_i = p (1 - p) underflows to 0 in float32 (and in
    # float64): the row-space form never divides by w_i or sqrt(w_i).
    rng = np.random.default_rng(0)
    N, D, C = 16, 5, 4
    X = rng.standard_normal((N, D)).astype(np.float32)
    y = rng.integers(0, C, size=N)
    head = fa.LinearHead(D, C)
    W = np.zeros((C, D), np.float32)
    b = np.zeros(C, np.float32)
    b[(y[0] + 1) % C] = 600.0  # rows labelled otherwise have margins ~ -600
    theta = head.flatten(W, b)
    lin = head.linearize(theta, X, y)
    assert lin.stats.margin.min() < -590
    assert np.count_nonzero(lin.curvature_weights == 0) > 0
    for damping, l2 in [(1.0, 0.0), (1e-4, 1e-3)]:
        res = fa.fgn_step(lin, damping, l2=l2, solver=solver)
        assert res.direction.dtype == np.float32
        assert np.all(np.isfinite(res.direction)) and np.isfinite(res.predicted_decrease)
        assert res.converged
    res = fa.ggn_step(lin, 1.0)
    assert res.direction.dtype == np.float32 and np.all(np.isfinite(res.direction))


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_float32_matches_float64(solver):
    d = dense_problem(10, 4, 5)
    head = fa.LinearHead(4, 5)
    lin32 = head.linearize(d["theta"].astype(np.float32), d["X"].astype(np.float32), d["y"])
    res = fa.fgn_step(lin32, 0.1, l2=0.01, solver=solver, rtol=1e-6)
    delta, _ = dense_step(d["fgn"], d["grad"], d["theta"], d["mask"], 0.1, 0.01)
    assert res.direction.dtype == np.float32
    # float32 products: ~1e-6 relative per product, amplified by the conditioning (< 1e2 here).
    np.testing.assert_allclose(res.direction, delta, rtol=1e-4, atol=1e-4 * np.abs(delta).max())


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_zero_damping_with_fewer_rows_than_params(l2):
    # N < P: G_FGN is singular. Consistent system: the minimum-norm solution.
    d = dense_problem(4, 3, 5)  # P = 20
    lin = fa.LinearHead(3, 5).linearize(d["theta"], d["X"], d["y"])
    res = fa.fgn_step(lin, 0.0, l2=l2, rtol=1e-12)
    H = d["fgn"] + l2 * np.diag(d["mask"])
    g = d["grad"] + l2 * d["mask"] * d["theta"]
    minimum_norm = -np.linalg.pinv(H, rcond=1e-12) @ g
    assert np.all(np.isfinite(res.direction))
    assert res.converged and res.solver == "cg-parameter-space"
    np.testing.assert_allclose(res.direction, minimum_norm, rtol=1e-6, atol=1e-6 * np.abs(minimum_norm).max())


def test_zero_damping_inconsistent_system_reports_non_convergence():
    # A row with w_i = 0 still contributes r_i J_i to g: G delta = -g has no
    # solution. The result must say so and stay finite, never NaN.
    rng = np.random.default_rng(1)
    N, D, C = 5, 3, 4
    X = rng.standard_normal((N, D))
    y = np.array([0, 1, 2, 3, 0])
    head = fa.LinearHead(D, C)
    b = np.array([0.0, 0.0, 0.0, 800.0])  # every row not labelled 3 is hopeless, w = 0
    lin = head.linearize(head.flatten(np.zeros((C, D)), b), X, y)
    res = fa.fgn_step(lin, 0.0, maxiter=200)
    assert np.all(np.isfinite(res.direction))
    assert not res.converged
    assert res.status


def test_auto_follows_the_cost_model():
    rng = np.random.default_rng(0)
    # Few rows, many classes: the N x N Gram matrix is cheap -> Cholesky.
    lin = fa.LinearHead(64, 500).linearize(
        fa.LinearHead(64, 500).init_params(dtype="float64"), rng.standard_normal((32, 64)), rng.integers(0, 500, 32)
    )
    assert step_module._choose_solver(lin) == "cholesky"
    assert fa.fgn_step(lin, 1.0).solver == "cholesky"
    # Many rows, few classes and features: CG iterations are cheap -> CG.
    head = fa.LinearHead(2, 3)
    lin = head.linearize(head.init_params(dtype="float64"), rng.standard_normal((3000, 2)), rng.integers(0, 3, 3000))
    assert step_module._choose_solver(lin) == "cg"
    assert fa.fgn_step(lin, 1.0).solver == "cg"


def test_step_decreases_the_objective():
    # A small step along delta decreases L = mean CE + l2/2 ||W||^2 (delta is a descent direction).
    d = dense_problem(30, 4, 5, scale=3.0)
    head = fa.LinearHead(4, 5)
    l2 = 0.01
    lin = head.linearize(d["theta"], d["X"], d["y"])
    res = fa.fgn_step(lin, 1.0, l2=l2)

    def objective(theta):
        return head.linearize(theta, d["X"], d["y"]).loss + 0.5 * l2 * np.sum(d["mask"] * theta**2)

    assert objective(d["theta"] + res.direction) < objective(d["theta"])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(damping=-1.0), ValueError, r"`damping` must be finite and >= 0; got -1.0"),
        (dict(damping=np.nan), ValueError, r"`damping` must be finite and >= 0; got nan"),
        (dict(damping=np.inf), ValueError, r"`damping` must be finite and >= 0; got inf"),
        (dict(damping=1.0, l2=-0.1), ValueError, r"`l2` must be finite and >= 0; got -0.1"),
        (dict(damping=1.0, solver="lu"), ValueError, r"`solver` must be one of"),
        (dict(damping=1.0, x0=np.zeros(3)), ValueError, r"`x0` must have shape \(6,\); got \(3,\)"),
        (dict(damping="1"), TypeError, r"`damping` must be a real number"),
        (dict(damping=1.0, maxiter=2.5), TypeError, r"`maxiter` must be an integer; got float 2.5"),
        (dict(damping=1.0, maxiter=-1), ValueError, r"`maxiter` must be >= 0; got -1"),
        (dict(damping=1.0, maxiter=-1, solver="cholesky"), ValueError, r"`maxiter` must be >= 0; got -1"),
        (dict(damping=1.0, solver=3), TypeError, r"`solver` must be a string; got int"),
        (dict(damping=1.0, rtol=1.0), ValueError, r"`rtol` must be in \[0, 1\); got 1.0"),
        (dict(damping=1.0, rtol="a"), TypeError, r"`rtol` must be a real number"),
        (dict(damping=1.0, x0=[0.0] * 6), TypeError, r"`x0` must be a numpy.ndarray or cupy.ndarray; got builtins.list"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    d = dense_problem(6, 3, 4)
    lin = fa.LinearHead(3, 4).linearize(d["theta"], d["X"], d["y"])
    damping = kwargs.pop("damping")
    with pytest.raises(exc, match=match):
        fa.fgn_step(lin, damping, **kwargs)
    if "solver" not in kwargs and "x0" not in kwargs:
        with pytest.raises(exc, match=match):
            fa.ggn_step(lin, damping, **kwargs)


@pytest.mark.parametrize(
    "precond, damping, exc, match",
    [
        ("lu", 1.0, ValueError, r"`precond` must be one of \(None, 'jacobi', 'fgn'\); got 'lu'"),
        (1, 1.0, TypeError, r"`precond` must be None or a string; got int"),
        ("fgn", 0.0, ValueError, r"`precond='fgn'` needs `damping` > 0"),
    ],
)
def test_bad_preconditioner(precond, damping, exc, match):
    d = dense_problem(6, 3, 4)
    lin = fa.LinearHead(3, 4).linearize(d["theta"], d["X"], d["y"])
    with pytest.raises(exc, match=match):
        fa.ggn_step(lin, damping, precond=precond)


def test_lin_must_be_a_linearization():
    with pytest.raises(TypeError, match=r"`lin` must be a Linearization"):
        fa.fgn_step(np.zeros(3), 1.0)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_cupy_parity(gpu_xp, solver):
    xp = gpu_xp
    d = dense_problem(40, 6, 9)
    head = fa.LinearHead(6, 9)
    lin_cpu = head.linearize(d["theta"], d["X"], d["y"])
    lin_gpu = head.linearize(xp.asarray(d["theta"]), xp.asarray(d["X"]), xp.asarray(d["y"]))
    cpu = fa.fgn_step(lin_cpu, 0.1, l2=0.01, solver=solver, rtol=1e-12)
    gpu = fa.fgn_step(lin_gpu, 0.1, l2=0.01, solver=solver, rtol=1e-12)
    assert type(gpu.direction) is xp.ndarray
    np.testing.assert_allclose(to_host(gpu.direction), cpu.direction, rtol=1e-9, atol=1e-12)
    ggn_cpu = fa.ggn_step(lin_cpu, 0.1, rtol=1e-12)
    ggn_gpu = fa.ggn_step(lin_gpu, 0.1, rtol=1e-12)
    np.testing.assert_allclose(to_host(ggn_gpu.direction), ggn_cpu.direction, rtol=1e-9, atol=1e-12)


def test_cholesky_failure_falls_back_to_cg(monkeypatch):
    # A float32 Gram matrix scaled by 1/damping can lose positive definiteness:
    # the step must then come from CG, not from a failed factorisation.
    d = dense_problem(6, 3, 4)
    lin = fa.LinearHead(3, 4).linearize(d["theta"], d["X"], d["y"])
    monkeypatch.setattr(step_module, "cholesky_solve", lambda K, b: None)
    res = fa.fgn_step(lin, 0.1, solver="cholesky", rtol=1e-12)
    delta, _ = dense_step(d["fgn"], d["grad"], d["theta"], d["mask"], 0.1, 0.0)
    assert res.solver == "cg" and res.converged and res.n_iter > 0
    np.testing.assert_allclose(res.direction, delta, rtol=1e-8, atol=1e-8 * np.abs(delta).max())
