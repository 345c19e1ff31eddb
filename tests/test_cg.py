"""Tests of fgn_arrays.cg against scipy.sparse.linalg.cg and numpy.linalg.solve.

References are dense float64 systems built here, independently of the code
under test. The cases taking the ``xp`` fixture run the same checks on NumPy,
on the CPU stand-in for CuPy and on CuPy (skipped when no GPU is present).
"""

import dataclasses

import numpy as np
import pytest
import scipy.sparse.linalg

from fgn_arrays._backend import to_numpy
from fgn_arrays.cg import CGResult, cg

CONVERGED = "converged: ||r|| <= max(rtol*||b||, atol)"
ZERO_RHS = "zero right-hand side"
MAXITER = "maxiter reached"
NONFINITE = "breakdown: non-finite value"
CURVATURE = "breakdown: p^T A p <= 0"
PRECOND = "breakdown: r^T M^-1 r <= 0"


def _spd(n, cond, seed):
    """Random SPD (n, n) float64 matrix with eigenvalues log-spaced in [1, cond]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.logspace(0, np.log10(cond), n)) @ Q.T


def _rhs(n, seed):
    return np.random.default_rng(seed + 1000).standard_normal(n)


def _scipy_cg(A, b, **kwargs):
    """(x, n_iter) of scipy.sparse.linalg.cg; n_iter counted by its callback."""
    count = [0]

    def cb(_):
        count[0] += 1

    x, info = scipy.sparse.linalg.cg(A, b, callback=cb, **kwargs)
    return x, count[0], info


class CountingMatvec:
    """v -> A v, counting calls; returns `bad` on call number `bad_call`."""

    def __init__(self, A, bad_call=None, bad=np.nan):
        self.A, self.bad_call, self.bad, self.calls = A, bad_call, bad, 0

    def __call__(self, v):
        self.calls += 1
        out = self.A @ v
        if self.calls == self.bad_call:
            out = np.full_like(out, self.bad)
        return out


# --- agreement with SciPy and with a direct solve -------------------------------


@pytest.mark.parametrize("n, cond, seed", [(5, 10.0, 0), (30, 1e2, 1), (80, 1e3, 2)])
@pytest.mark.parametrize("use_x0", [False, True])
def test_solution_matches_scipy_and_solve(n, cond, seed, use_x0):
    A, b = _spd(n, cond, seed), _rhs(n, seed)
    x0 = np.random.default_rng(seed + 7).standard_normal(n) if use_x0 else None
    res = cg(lambda v: A @ v, b, x0, rtol=1e-12)
    x_ref, _, info = _scipy_cg(A, b, x0=x0, rtol=1e-12, maxiter=10 * n)
    x_solve = np.linalg.solve(A, b)
    assert info == 0
    assert res.converged and res.status == CONVERGED
    assert np.linalg.norm(res.x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
    # ||x - x*|| / ||x*|| <= cond * ||r|| / ||b||
    assert np.linalg.norm(res.x - x_solve) <= cond * 2e-12 * np.linalg.norm(x_solve)
    assert res.residual_norm <= 1e-12 * np.linalg.norm(b)
    # The recursive residual tracks the true one.
    true_res = np.linalg.norm(b - A @ res.x)
    assert abs(true_res - res.residual_norm) <= 1e-13 * cond * np.linalg.norm(b)


@pytest.mark.parametrize("rtol", [1e-2, 1e-4, 1e-6, 1e-8])
@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("jacobi", [False, True])
def test_iteration_count_matches_scipy(rtol, seed, jacobi):
    n = 60
    d = np.logspace(0, 1.5, n)
    A = d[:, None] * _spd(n, 50.0, seed) * d[None, :]
    b = _rhs(n, seed)
    inv_diag = 1.0 / np.diag(A)
    precond = (lambda r: inv_diag * r) if jacobi else None
    M = np.diag(inv_diag) if jacobi else None
    res = cg(lambda v: A @ v, b, rtol=rtol, precond=precond)
    x_ref, n_ref, info = _scipy_cg(A, b, rtol=rtol, M=M)
    assert info == 0 and res.converged
    # Our dot products are float64 sums in index order, SciPy's go through BLAS:
    # on the long ill-conditioned runs rounding moves the count by a few iterations.
    assert abs(res.n_iter - n_ref) <= max(1, 0.02 * n_ref)
    assert n_ref >= 2  # the comparison is not trivial
    assert res.residual_norm <= rtol * np.linalg.norm(b)
    # The true residual agrees with the recursive one to rounding.
    true_res = np.linalg.norm(b - A @ res.x)
    assert abs(true_res - res.residual_norm) <= 1e-10 * np.linalg.norm(b)


@pytest.mark.parametrize("dtype, rtol, tol", [("float64", 1e-10, 1e-8), ("float32", 1e-5, 1e-3)])
def test_against_numpy_solve(xp, dtype, rtol, tol):
    # float32: residual can only reach ~n * eps32 * cond, hence the looser tol.
    n, cond = 40, 1e2
    A, b = _spd(n, cond, 5), _rhs(n, 5)
    A_xp, b_xp = xp.asarray(A, dtype=dtype), xp.asarray(b, dtype=dtype)
    res = cg(lambda v: A_xp @ v, b_xp, rtol=rtol)
    assert type(res.x) is type(b_xp)
    assert res.x.dtype == np.dtype(dtype)
    assert res.converged
    x = to_numpy(res.x).astype(np.float64)
    x_solve = np.linalg.solve(A, b)
    assert np.linalg.norm(x - x_solve) <= tol * np.linalg.norm(x_solve)


def test_jacobi_preconditioner_reduces_iterations():
    # Diagonally dominant SPD matrix C, rows and columns scaled over 4 decades.
    n = 100
    rng = np.random.default_rng(11)
    B = rng.uniform(-1.0, 1.0, (n, n)) / n
    C = B + B.T + 2.0 * np.eye(n)
    assert np.all(np.diag(C) > np.sum(np.abs(C), axis=1) - np.diag(C))
    d = np.sqrt(np.logspace(-2, 2, n))
    A = d[:, None] * C * d[None, :]
    b = rng.standard_normal(n)
    inv_diag = 1.0 / np.diag(A)
    plain = cg(lambda v: A @ v, b, rtol=1e-8)
    jacobi = cg(lambda v: A @ v, b, rtol=1e-8, precond=lambda r: inv_diag * r)
    assert plain.converged and jacobi.converged
    assert 3 * jacobi.n_iter < plain.n_iter
    x_solve = np.linalg.solve(A, b)
    assert np.linalg.norm(jacobi.x - x_solve) <= 1e-6 * np.linalg.norm(x_solve)
    _, n_ref, _ = _scipy_cg(A, b, rtol=1e-8, M=np.diag(inv_diag))
    assert abs(jacobi.n_iter - n_ref) <= 1


# --- dtypes ---------------------------------------------------------------------


@pytest.mark.parametrize("x0_dtype", [None, "float32", "float64"])
def test_float32_in_float32_out(x0_dtype):
    n = 20
    A, b = _spd(n, 10.0, 6).astype(np.float32), _rhs(n, 6).astype(np.float32)
    x0 = None if x0_dtype is None else np.ones(n, dtype=x0_dtype)
    res = cg(lambda v: (A @ v).astype(np.float64), b, x0, rtol=1e-4)
    assert res.x.dtype == np.float32
    assert res.converged
    rel = np.linalg.norm(b - A.astype(np.float64) @ res.x) / np.linalg.norm(b)
    assert rel <= 1e-3
    assert isinstance(res.residual_norm, float) and isinstance(res.n_iter, int)


def test_integer_rhs_is_solved_in_float64():
    A = np.diag([2.0, 4.0, 8.0])
    res = cg(lambda v: A @ v, np.array([2, 4, 8]), rtol=1e-12)
    assert res.x.dtype == np.float64
    np.testing.assert_allclose(res.x, [1.0, 1.0, 1.0], rtol=1e-12)


# --- status paths -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_warm_start_at_solution_returns_zero_iterations(xp, dtype):
    n = 25
    A, b = _spd(n, 20.0, 7), _rhs(n, 7)
    x_star = np.linalg.solve(A, b)
    A_xp = xp.asarray(A, dtype=dtype)
    calls = []
    res = cg(
        lambda v: calls.append(1) or A_xp @ v,
        xp.asarray(b, dtype=dtype),
        xp.asarray(x_star, dtype=dtype),
        rtol=1e-4,
    )
    assert res.n_iter == 0 and res.converged and res.status == CONVERGED
    assert len(calls) == 1  # only r_0 = b - A x_0
    np.testing.assert_array_equal(to_numpy(res.x), x_star.astype(dtype))
    assert res.residual_norm <= 1e-4 * np.linalg.norm(b)


@pytest.mark.parametrize("with_x0", [False, True])
def test_zero_rhs(xp, with_x0):
    b = xp.zeros(6, dtype="float32")
    x0 = xp.full(6, 3.0, dtype="float32") if with_x0 else None

    def matvec(v):
        raise AssertionError("matvec must not be called for b == 0")

    res = cg(matvec, b, x0)
    assert res.status == ZERO_RHS
    assert res.converged and res.n_iter == 0 and res.residual_norm == 0.0
    assert res.x.dtype == np.float32 and res.x.shape == (6,)
    np.testing.assert_array_equal(to_numpy(res.x), np.zeros(6))


def test_atol_stops_earlier_than_rtol():
    A, b = _spd(40, 1e2, 8), _rhs(40, 8)
    atol = 1e-3 * np.linalg.norm(b)
    strict = cg(lambda v: A @ v, b, rtol=1e-10)
    loose = cg(lambda v: A @ v, b, rtol=1e-10, atol=atol)
    assert loose.converged and strict.converged
    assert loose.n_iter < strict.n_iter
    assert 1e-10 * np.linalg.norm(b) < loose.residual_norm <= atol
    _, n_ref, _ = _scipy_cg(A, b, rtol=1e-10, atol=atol)
    assert abs(loose.n_iter - n_ref) <= 1


@pytest.mark.parametrize("maxiter", [1, 3, 7])
def test_maxiter_reached(xp, maxiter):
    n = 50
    A, b = _spd(n, 1e3, 9), _rhs(n, 9)
    A_xp = xp.asarray(A)
    res = cg(lambda v: A_xp @ v, xp.asarray(b), rtol=1e-12, maxiter=maxiter)
    assert res.status == MAXITER
    assert not res.converged
    assert res.n_iter == maxiter
    x = to_numpy(res.x)
    true_res = np.linalg.norm(b - A @ x)
    assert res.residual_norm > 1e-12 * np.linalg.norm(b)
    np.testing.assert_allclose(res.residual_norm, true_res, rtol=1e-8)
    # Same iterate as SciPy after the same number of steps.
    x_ref, n_ref, info = _scipy_cg(A, b, rtol=1e-12, maxiter=maxiter)
    assert info == maxiter and n_ref == maxiter
    np.testing.assert_allclose(x, x_ref, rtol=1e-10, atol=1e-12 * np.linalg.norm(x_ref))


def test_maxiter_zero_returns_x0():
    A, b = _spd(10, 10.0, 10), _rhs(10, 10)
    x0 = np.full(10, 0.5)
    res = cg(lambda v: A @ v, b, x0, maxiter=0)
    assert res.status == MAXITER and not res.converged and res.n_iter == 0
    np.testing.assert_array_equal(res.x, x0)
    assert res.x is not x0
    np.testing.assert_allclose(res.residual_norm, np.linalg.norm(b - A @ x0), rtol=1e-14)


def test_default_maxiter_is_ten_n():
    # rtol = atol = 0 can only stop at maxiter here: ||r_k|| decays but stays > 0.
    n = 4
    A, b = _spd(n, 1e6, 12), _rhs(n, 12)
    calls = CountingMatvec(A)
    res = cg(calls, b, rtol=0.0)
    assert res.status == MAXITER and not res.converged
    assert res.n_iter == 10 * n and calls.calls == 10 * n
    assert 0.0 < res.residual_norm < 1e-8 * np.linalg.norm(b)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)


@pytest.mark.parametrize("check_every", [1, 2, 5])
def test_breakdown_on_indefinite_matrix(check_every):
    # diag(1, -1, 2), b = 1: x_1 = 1.5 * 1, then p_2 = (3, 6, 1.5), p_2^T A p_2 = -22.5.
    A = np.diag([1.0, -1.0, 2.0])
    b = np.ones(3)
    res = cg(lambda v: A @ v, b, check_every=check_every, maxiter=20)
    assert res.status == CURVATURE
    assert not res.converged
    assert res.n_iter == 1
    np.testing.assert_array_equal(res.x, [1.5, 1.5, 1.5])
    assert np.all(np.isfinite(res.x))
    np.testing.assert_allclose(res.residual_norm, np.linalg.norm(b - A @ res.x), rtol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_breakdown_on_random_indefinite_matrix_is_finite(seed):
    # Eigenvalues in [-1, 3]: the first step is fine, the second meets p^T A p <= 0.
    rng = np.random.default_rng(seed)
    n = 30
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.linspace(-1.0, 3.0, n)) @ Q.T
    b = rng.standard_normal(n)
    every = cg(lambda v: A @ v, b, rtol=1e-12, check_every=1)
    rare = cg(lambda v: A @ v, b, rtol=1e-12, check_every=4)
    for res in (every, rare):
        assert res.status == CURVATURE and not res.converged
        assert np.all(np.isfinite(res.x))
        np.testing.assert_allclose(res.residual_norm, np.linalg.norm(b - A @ res.x), rtol=1e-10)
    assert rare.n_iter == every.n_iter >= 1
    np.testing.assert_array_equal(rare.x, every.x)
    # Each step taken decreased the residual or at least moved x off 0.
    assert np.linalg.norm(every.x) > 0


def test_exact_convergence_between_check_points():
    # A = 2 I: x_1 = b / 2 exactly and r_1 = 0, so r^T z = 0 freezes the iterate;
    # the check point at k = 5 reports convergence with the 1 step that produced x.
    b = np.array([1.0, -2.0, 4.0])
    res = cg(lambda v: 2.0 * v, b, rtol=0.0, check_every=5)
    assert res.status == CONVERGED and res.converged
    assert res.n_iter == 1 and res.residual_norm == 0.0
    np.testing.assert_array_equal(res.x, b / 2.0)


def test_breakdown_on_indefinite_preconditioner():
    A, b = _spd(8, 10.0, 13), _rhs(8, 13)
    res = cg(lambda v: A @ v, b, precond=lambda r: -r)
    assert res.status == PRECOND
    assert not res.converged and res.n_iter == 0
    np.testing.assert_array_equal(res.x, np.zeros(8))
    np.testing.assert_allclose(res.residual_norm, np.linalg.norm(b), rtol=1e-14)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("check_every", [1, 2, 5])
def test_nonfinite_matvec_returns_last_finite_iterate(bad, check_every):
    n = 30
    A, b = _spd(n, 1e2, 14), _rhs(n, 14)
    # Calls 1 and 2 give x_1 and x_2; call 3 (for p_3) returns `bad`.
    ref = cg(lambda v: A @ v, b, rtol=1e-12, maxiter=2)
    res = cg(CountingMatvec(A, bad_call=3, bad=bad), b, rtol=1e-12, check_every=check_every)
    assert res.status == NONFINITE
    assert not res.converged
    assert res.n_iter == 2
    assert np.all(np.isfinite(res.x))
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.residual_norm == ref.residual_norm


def test_nonfinite_single_entry_in_matvec():
    n = 10
    A, b = _spd(n, 10.0, 15), _rhs(n, 15)

    def matvec(v):
        out = A @ v
        out[3] = np.nan
        return out

    res = cg(matvec, b)
    assert res.status == NONFINITE and res.n_iter == 0 and not res.converged
    np.testing.assert_array_equal(res.x, np.zeros(n))


def test_nonfinite_matvec_at_x0():
    A, b = _spd(5, 10.0, 16), _rhs(5, 16)
    x0 = np.ones(5)
    res = cg(CountingMatvec(A, bad_call=1), b, x0)
    assert res.status == NONFINITE and res.n_iter == 0 and not res.converged
    np.testing.assert_array_equal(res.x, x0)
    assert res.residual_norm == np.inf


@pytest.mark.parametrize("check_every", [1, 2])
def test_overflowing_iterate_falls_back_to_last_check_point(check_every):
    # A = eps I with x* = b / eps beyond float64: alpha_1 and p^T A p are finite but
    # x_1 = alpha_1 p_1 overflows, so the check point returns the saved x_0 = 0.
    eps = 1e-280 / 3e20
    b = np.full(3, 1e10)
    res = cg(lambda v: eps * v, b, maxiter=5, check_every=check_every)
    assert res.status == NONFINITE
    assert not res.converged and res.n_iter == 0
    np.testing.assert_array_equal(res.x, np.zeros(3))
    np.testing.assert_allclose(res.residual_norm, np.linalg.norm(b), rtol=1e-14)


class SwitchingPrecond:
    """Identity preconditioner that returns `bad(r)` on call number `bad_call`."""

    def __init__(self, bad_call, bad):
        self.bad_call, self.bad, self.calls = bad_call, bad, 0

    def __call__(self, r):
        self.calls += 1
        return self.bad(r) if self.calls == self.bad_call else r


@pytest.mark.parametrize("check_every", [1, 3])
def test_nonfinite_precond_freezes_and_keeps_matvec_input_finite(check_every):
    n = 12
    A, b = _spd(n, 10.0, 20), _rhs(n, 20)
    seen = []

    def matvec(v):
        seen.append(bool(np.all(np.isfinite(v))))
        return A @ v

    ref = cg(lambda v: A @ v, b, maxiter=1)
    precond = SwitchingPrecond(2, lambda r: np.full_like(r, np.nan))
    res = cg(matvec, b, precond=precond, check_every=check_every, maxiter=10)
    assert res.status == NONFINITE and not res.converged and res.n_iter == 1
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.residual_norm == ref.residual_norm
    # The NaN z_1 freezes x_1 in iteration 1; the loop runs on to the first check point.
    assert len(seen) == {1: 1, 3: 3}[check_every] and all(seen)


@pytest.mark.parametrize("check_every", [1, 3])
def test_overflowing_direction_freezes_at_last_finite_iterate(check_every):
    # A = diag(1, 10), b = 1e-3: on its 2nd call the preconditioner scales r by
    # ~1.5e311 (in two finite steps), so r^T z and beta stay finite but
    # p_2 = z_1 + beta_2 p_1 overflows; alpha_2 is masked and x stays x_1.
    d = np.array([1.0, 10.0])
    b = np.full(2, 1e-3)
    precond = SwitchingPrecond(2, lambda r: r * 1e300 * 1.467e11)
    ref = cg(lambda v: d * v, b, maxiter=1)
    res = cg(lambda v: d * v, b, precond=precond, check_every=check_every, maxiter=10)
    assert res.status == NONFINITE and not res.converged and res.n_iter == 1
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.residual_norm == ref.residual_norm


# --- check_every and callback -------------------------------------------------------


@pytest.mark.parametrize("check_every", [1, 2, 3, 7, 1000])
def test_check_every_same_solution(xp, check_every):
    n = 60
    A, b = _spd(n, 1e2, 17), _rhs(n, 17)
    A_xp = xp.asarray(A)
    base = cg(lambda v: A_xp @ v, xp.asarray(b), rtol=1e-10)
    res = cg(lambda v: A_xp @ v, xp.asarray(b), rtol=1e-10, check_every=check_every)
    assert res.converged and res.status == CONVERGED
    # Convergence is tested on the device at every iteration and freezes x:
    # the check points only read it, so the result is the same.
    assert res.n_iter == base.n_iter
    np.testing.assert_array_equal(to_numpy(res.x), to_numpy(base.x))
    assert res.residual_norm == base.residual_norm
    x_solve = np.linalg.solve(A, b)
    assert np.linalg.norm(to_numpy(res.x) - x_solve) <= 1e-7 * np.linalg.norm(x_solve)
    assert res.residual_norm <= 1e-10 * np.linalg.norm(b)


@pytest.mark.parametrize("check_every", [2, 3, 4, 10])
def test_check_every_at_maxiter_gives_same_iterate(check_every):
    n = 50
    A, b = _spd(n, 1e3, 18), _rhs(n, 18)
    base = cg(lambda v: A @ v, b, rtol=1e-14, maxiter=9)
    res = cg(lambda v: A @ v, b, rtol=1e-14, maxiter=9, check_every=check_every)
    assert res.status == MAXITER and res.n_iter == 9 == base.n_iter
    np.testing.assert_array_equal(res.x, base.x)
    assert res.residual_norm == base.residual_norm


@pytest.mark.parametrize("check_every", [1, 4])
def test_callback_called_once_per_iteration(check_every):
    n = 30
    A, b = _spd(n, 1e2, 19), _rhs(n, 19)
    seen = []
    res = cg(lambda v: A @ v, b, rtol=1e-8, check_every=check_every,
             callback=lambda xk: seen.append(xk.copy()))
    assert res.converged
    # Once per loop iteration: after convergence, the frozen x until the check point.
    assert len(seen) == -(-res.n_iter // check_every) * check_every
    for xk in seen[res.n_iter - 1:]:
        np.testing.assert_array_equal(xk, res.x)
    # The iterates are those of SciPy, one per iteration. The dot products are
    # float64 sums in index order here and BLAS's there: CG amplifies that
    # rounding once it loses orthogonality (here from about iteration 12, as a
    # plain CG with exactly rounded dots does too), so the early iterates are
    # compared to rounding and the converged one to the solution.
    ref = []
    scipy.sparse.linalg.cg(A, b, rtol=1e-14, maxiter=res.n_iter,
                           callback=lambda xk: ref.append(xk.copy()))
    assert len(ref) == res.n_iter
    for xk, xk_ref in zip(seen[:10], ref[:10]):
        assert np.linalg.norm(xk - xk_ref) <= 1e-14 * np.linalg.norm(xk_ref)
    x_solve = np.linalg.solve(A, b)
    assert np.linalg.norm(res.x - x_solve) <= 1e-6 * np.linalg.norm(x_solve)


def test_result_is_frozen():
    res = cg(lambda v: 2.0 * v, np.ones(3))
    assert isinstance(res, CGResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.n_iter = 5
    np.testing.assert_allclose(res.x, 0.5 * np.ones(3), rtol=1e-14)
    assert res.n_iter == 1 and res.converged


# --- bad arguments ------------------------------------------------------------------

_A3 = np.diag([1.0, 2.0, 3.0])


def _mv(v):
    return _A3 @ v


_BAD_ARGUMENTS = [
    # (overrides of matvec=_mv, b=ones(3), error, message pattern)
    ({"matvec": None}, TypeError, r"`matvec` must be callable; got NoneType\."),
    ({"matvec": _A3}, TypeError, r"`matvec` must be callable; got ndarray\."),
    ({"precond": 3}, TypeError, r"`precond` must be callable or an array; got int\."),
    ({"precond": np.ones(4)}, ValueError, r"`precond`, as an array, must have the shape of `b`, \(3,\); got \(4,\)\."),
    ({"precond": np.array([1.0, 0.0, 1.0])}, ValueError, r"`precond`, as an array, must be finite and > 0"),
    ({"precond": np.array([1.0, np.nan, 1.0])}, ValueError, r"`precond`, as an array, must be finite and > 0"),
    ({"callback": "x"}, TypeError, r"`callback` must be callable; got str\."),
    ({"b": [1.0, 2.0, 3.0]}, TypeError, r"`b` must be a numpy\.ndarray or cupy\.ndarray"),
    ({"x0": [0.0, 0.0, 0.0]}, TypeError, r"`x0` must be a numpy\.ndarray"),
    ({"b": np.ones(3) + 1j}, TypeError, r"`b` must be real; got dtype complex128\."),
    ({"x0": np.ones(3, complex)}, TypeError, r"`x0` must be real; got dtype complex128\."),
    ({"b": np.ones((3, 1))}, ValueError, r"`b` must be 1-D; got shape \(3, 1\)\."),
    ({"b": np.array(1.0)}, ValueError, r"`b` must be 1-D; got shape \(\)\."),
    ({"b": np.array([1.0, np.nan, 0.0])}, ValueError, r"`b` must be finite; got a NaN"),
    ({"b": np.array([1.0, np.inf, 0.0])}, ValueError, r"`b` must be finite; got a NaN or inf"),
    ({"x0": np.ones(4)}, ValueError, r"`x0` must have the shape of `b`, \(3,\); got \(4,\)\."),
    ({"x0": np.array([0.0, np.nan, 0.0])}, ValueError, r"`x0` must be finite"),
    (
        {"matvec": lambda v: np.ones(4)},
        ValueError,
        r"`matvec` must return an array of shape \(3,\); got shape \(4,\)\.",
    ),
    (
        {"matvec": lambda v: 1.0},
        ValueError,
        r"`matvec` must return an array of shape \(3,\); got shape None\.",
    ),
    (
        {"precond": lambda r: r[:2]},
        ValueError,
        r"`precond` must return an array of shape \(3,\); got shape \(2,\)\.",
    ),
]


@pytest.mark.parametrize("overrides, error, match", _BAD_ARGUMENTS)
def test_bad_arguments(overrides, error, match):
    kwargs = {"matvec": _mv, "b": np.ones(3), **overrides}
    with pytest.raises(error, match=match):
        cg(**kwargs)


# The scalar arguments: a wrong type is a TypeError, a wrong value of the right
# type a ValueError; either message names the argument and shows what arrived.
_WRONG_TYPES = [
    ("rtol", "a", r"'a'"),
    ("rtol", "1e-5", r"'1e-5'"),
    ("rtol", None, r"None"),
    ("atol", None, r"None"),
    ("atol", "0", r"'0'"),
    ("maxiter", 2.5, r"2\.5"),
    ("maxiter", "3", r"'3'"),
    ("maxiter", True, r"True"),  # a bool is not a count
    ("check_every", 1.5, r"1\.5"),
    ("check_every", "8", r"'8'"),
]
_WRONG_VALUES = [
    ("rtol", -1, r"-1"),
    ("rtol", -1.0, r"-1\.0"),
    ("rtol", float("nan"), r"nan"),
    ("rtol", float("inf"), r"inf"),
    ("atol", -1e-3, r"-0\.001"),
    ("atol", float("inf"), r"inf"),
    ("maxiter", -1, r"-1"),
    ("check_every", 0, r"\b0\b"),
    ("check_every", -2, r"-2"),
]


@pytest.mark.parametrize("name, value, shown", _WRONG_TYPES, ids=[f"{n}={v!r}" for n, v, _ in _WRONG_TYPES])
def test_wrong_argument_types_raise_type_error(name, value, shown):
    with pytest.raises(TypeError, match=rf"`{name}`.*{shown}"):
        cg(_mv, np.ones(3), **{name: value})


@pytest.mark.parametrize("name, value, shown", _WRONG_VALUES, ids=[f"{n}={v!r}" for n, v, _ in _WRONG_VALUES])
def test_wrong_argument_values_raise_value_error(name, value, shown):
    with pytest.raises(ValueError, match=rf"`{name}`.*{shown}"):
        cg(_mv, np.ones(3), **{name: value})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rtol": np.float32(1e-3)},
        {"atol": np.float64(0.5), "rtol": np.int64(0)},
        {"maxiter": np.int64(2), "check_every": np.int32(1)},
        {"maxiter": np.uint8(5), "check_every": np.int64(2)},
    ],
)
def test_numpy_scalars_accepted_as_arguments(kwargs):
    plain = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in kwargs.items()}
    res = cg(_mv, np.ones(3), **kwargs)
    ref = cg(_mv, np.ones(3), **plain)
    assert res.n_iter == ref.n_iter >= 1
    assert res.status == ref.status
    np.testing.assert_array_equal(res.x, ref.x)
