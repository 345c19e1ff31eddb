"""Launch, synchronisation and memory budgets of the GPU path, counted on the CuPy stand-in.

The stand-in (:mod:`fgn_arrays.testing`) takes every CuPy branch on the CPU
and counts what a GPU would pay for: array operations (each one a kernel
launch), host synchronisations and device allocations. The budgets (issue
11) bound the per-iteration cost of the row-space CG, where the GPU is
launch-bound at small ``C``, and the synchronisations of an outer step of
``minimize``.
"""

import numpy as np
import pytest

import fgn_arrays as fa
from fgn_arrays import step as step_module
from fgn_arrays._backend import cholesky_solve
from fgn_arrays.cg import GPU_CHECK_EVERY
from fgn_arrays.testing import use_standin

pytestmark = pytest.mark.standin

# Per row-space CG iteration of fgn_step: array operations and host synchronisations.
CG_LAUNCH_BUDGET = 15
CG_SYNC_BUDGET = 1 / 8
# Per outer step of minimize (full batch), besides CG's check points.
MINIMIZE_SYNC_BUDGET = 3


def _linear_problem(sx, N, D, C, scale, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    head = fa.LinearHead(D, C)
    X = rng.standard_normal((N, D)).astype(dtype) / np.sqrt(D)
    y = rng.integers(0, C, N)
    theta = (scale * rng.standard_normal(head.n_params)).astype(dtype)
    return head.linearize(sx.asarray(theta), sx.asarray(X), sx.asarray(y))


def _counts(sx, fn):
    sx.counts.reset()
    out = fn()
    return out, sx.counts.launches, sx.counts.syncs, list(sx.counts.operations)


@pytest.mark.parametrize("C", [10, 1000])
def test_cg_iteration_budget(C):
    # N=1024, D=256: the sizes the issue counts at. rtol=0 never converges, so
    # each solve runs exactly maxiter iterations; the difference of two solves
    # is the cost of the iterations alone.
    with use_standin() as sx:
        lin = _linear_problem(sx, 1024, 256, C, scale=3.0)
        k1, k2 = 8, 24
        # warm-up: the linearization caches what every solve reuses (gradient, weights, diagonal)
        fa.fgn_step(lin, 1e-5, l2=1e-4, solver="cg", rtol=0.0, maxiter=1)
        s1, launches1, syncs1, _ = _counts(sx, lambda: fa.fgn_step(lin, 1e-5, l2=1e-4, solver="cg", rtol=0.0, maxiter=k1))
        s2, launches2, syncs2, ops = _counts(sx, lambda: fa.fgn_step(lin, 1e-5, l2=1e-4, solver="cg", rtol=0.0, maxiter=k2))
    assert (s1.n_iter, s2.n_iter) == (k1, k2), "the solves must run maxiter iterations"
    per_launch = (launches2 - launches1) / (k2 - k1)
    per_sync = (syncs2 - syncs1) / (k2 - k1)
    assert per_launch <= CG_LAUNCH_BUDGET, (per_launch, ops[-40:])
    assert per_sync <= CG_SYNC_BUDGET, per_sync
    # and not vacuously: a matvec is at least its two GEMMs and CG's fused updates
    assert per_launch >= 5


def test_gpu_cg_returns_a_checked_iterate_and_the_numpy_result():
    # Check points every 8 iterations on the GPU path, every iteration on NumPy:
    # the on-device convergence test freezes the iterate, so both return the
    # same iterate, with the same count.
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    A = (Q * np.logspace(0, 2, 40)) @ Q.T
    b = rng.standard_normal(40)
    ref = fa.cg(lambda v: A @ v, b, rtol=1e-9)
    with use_standin() as sx:
        A_d = sx.asarray(A)
        got, _, syncs, _ = _counts(sx, lambda: fa.cg(lambda v: A_d @ v, sx.asarray(b), rtol=1e-9))
        assert isinstance(got.x, sx.ndarray)
    assert got.converged and got.n_iter == ref.n_iter
    np.testing.assert_allclose(got.x.get(), ref.x, rtol=1e-12, atol=1e-14)
    assert got.residual_norm == pytest.approx(ref.residual_norm, rel=1e-12)
    # setup (2 transfers) + one per 8 iterations
    assert syncs <= 2 + -(-ref.n_iter // 8)
    # the recursive residual is the true one, to rounding (at ||r|| ~ 1e-9 ||b||)
    np.testing.assert_allclose(np.linalg.norm(b - A @ got.x.get()), got.residual_norm, rtol=1e-4)


# Host synchronisations of one full-batch step of minimize besides CG's check points
# (one per GPU_CHECK_EVERY iterations): the step's scalars with the candidate's objective
# and gradient norm in one transfer ("fgn-compensated": a second for its corrected
# point), and one cuSOLVER status read per Cholesky factorisation.
STEP_SYNCS = {"fgn": 1, "fgn-compensated": 2, "ggn-pcg": 1}
CHOLESKY_SYNCS = 1


@pytest.mark.parametrize("head_name", ["linear", "two-layer"])
@pytest.mark.parametrize("kwargs", [{}, {"method": "fgn"}, {"method": "fgn", "solver": "cholesky"},
                                    {"method": "ggn-pcg"}])
def test_minimize_outer_step_syncs(head_name, kwargs):
    X, y, _ = fa.datasets.make_heads_problem(600, 16, 10, seed=0)
    head = fa.LinearHead(16, 10) if head_name == "linear" else fa.TwoLayerHead(16, 12, 10)
    with use_standin() as sx:
        theta = head.init_params(seed=0, dtype="float32", device="gpu")
        X_d, y_d = sx.asarray(X.astype(np.float32)), sx.asarray(y)
        runs = {}
        for k in (3, 6):
            res, _, syncs, _ = _counts(
                sx, lambda: fa.minimize(head, theta, X_d, y_d, l2=1e-3, max_iter=k, tol=0.0, random_state=0, **kwargs)
            )
            runs[k] = (res, syncs)
    (r3, s3), (r6, s6) = runs[3], runs[6]
    assert (r3.n_iter, r6.n_iter) == (3, 6)
    method = r6.method
    cholesky = kwargs.get("solver") == "cholesky" or method == "ggn-pcg"
    budget = 0
    for n_iter in r6.history["cg_iter"][3:]:
        check_points = 0 if kwargs.get("solver") == "cholesky" else max(1, -(-n_iter // GPU_CHECK_EVERY))
        budget += check_points + STEP_SYNCS[method] + (CHOLESKY_SYNCS if cholesky else 0)
    assert s6 - s3 <= budget, (s6 - s3, budget, r6.history["cg_iter"])
    assert (s6 - s3) / 3 <= MINIMIZE_SYNC_BUDGET + max(r6.history["cg_iter"][3:]) / GPU_CHECK_EVERY
    assert s6 - s3 >= 3 * STEP_SYNCS[method]  # not vacuous


@pytest.mark.parametrize("head_name", ["linear", "two-layer"])
def test_no_float64_rows_by_classes_temporary(head_name):
    # float32 data: every (N, C) array of the GPU path stays float32 (the fused
    # kernels accumulate in float64 registers, not in float64 temporaries).
    N, D, C = 300, 12, 9
    X, y, _ = fa.datasets.make_heads_problem(N, D, C, seed=1)
    head = fa.LinearHead(D, C) if head_name == "linear" else fa.TwoLayerHead(D, 10, C)
    with use_standin() as sx:
        theta = head.init_params(seed=0, dtype="float32", device="gpu")
        X_d, y_d = sx.asarray(X.astype(np.float32)), sx.asarray(y)
        sx.counts.reset()
        fa.minimize(head, theta, X_d, y_d, l2=1e-3, max_iter=4, random_state=0)
        fa.minimize(head, theta, X_d, y_d, l2=1e-3, max_iter=2, batch_size=100, random_state=0)
        lin = head.linearize(theta, X_d, y_d)
        fa.fgn_step(lin, 1e-2, l2=1e-3, solver="cg")
        fa.ggn_step(lin, 1e-2, l2=1e-3)
        fa.dropped_matvec(lin, sx.asarray(np.ones(head.n_params, np.float32)))
        allocations = list(sx.counts.allocations)
    assert any(shape == (N, C) for shape, _ in allocations)  # the test sees the (N, C) arrays
    wide = [(shape, dtype) for shape, dtype in allocations if dtype == np.float64 and len(shape) == 2
            and shape[1] == C and shape[0] > 5]
    assert wide == []


def test_cholesky_on_the_gpu_path_raises_and_falls_back():
    # CuPy's default linalg="ignore" would hand back NaN (or garbage) for a
    # matrix that is not positive definite; cholesky_solve asks for "raise".
    K = np.array([[1.0, 2.0], [2.0, 1.0]])
    with use_standin() as sx:
        assert bool(sx.isnan(sx.linalg.cholesky(sx.asarray(K))).all())  # what "ignore" gives
        sx.counts.reset()
        assert cholesky_solve(sx.asarray(K), sx.asarray(np.ones(2))) is None
        assert sx.counts.syncs == 1  # cuSOLVER's status word
        good = cholesky_solve(sx.asarray(np.array([[4.0, 2.0], [2.0, 3.0]])), sx.asarray(np.ones(2)))
        np.testing.assert_allclose(good.get(), np.linalg.solve([[4.0, 2.0], [2.0, 3.0]], np.ones(2)), rtol=1e-14)


def test_cholesky_step_falls_back_to_cg_on_the_gpu_path(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 5))
    y = rng.integers(0, 4, 30)
    head = fa.LinearHead(5, 4)
    theta = rng.standard_normal(head.n_params)
    ref = fa.fgn_step(head.linearize(theta, X, y), 0.1, l2=0.01, solver="cg", rtol=1e-12)
    with use_standin() as sx:
        # every factorisation fails, as a float32 Gram matrix that lost definiteness would
        monkeypatch.setattr(sx.linalg, "cholesky", lambda a: (_ for _ in ()).throw(np.linalg.LinAlgError("not PD")))
        got = fa.fgn_step(head.linearize(sx.asarray(theta), sx.asarray(X), sx.asarray(y)), 0.1, l2=0.01,
                          solver="cholesky", rtol=1e-12)
    assert got.solver == "cg" and got.converged
    np.testing.assert_allclose(got.direction.get(), ref.direction, rtol=1e-12, atol=1e-14)


def test_auto_solver_counts_launch_latency_on_the_gpu_path():
    # N=512, D=64, C=10: by flops CG is cheaper (the CPU's choice); on the GPU its
    # 20 iterations of ~15 launches cost more than the Cholesky step.
    rng = np.random.default_rng(3)
    head = fa.LinearHead(64, 10)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    theta = head.init_params(seed=0)
    assert step_module._choose_solver(head.linearize(theta, X, y)) == "cg"
    with use_standin() as sx:
        lin = head.linearize(sx.asarray(theta), sx.asarray(X), sx.asarray(y))
        assert step_module._choose_solver(lin) == "cholesky"
        assert fa.fgn_step(lin, 1e-2, l2=1e-3).solver == "cholesky"
        # and CG where the flops dominate: many rows (N^3 / 3 for the factorisation)
        tall = fa.LinearHead(16, 10)
        X_tall = sx.asarray(rng.standard_normal((8000, 16)).astype(np.float32))
        lin = tall.linearize(tall.init_params(seed=0, device="gpu"), X_tall, sx.asarray(rng.integers(0, 10, 8000)))
        assert step_module._choose_solver(lin) == "cg"
