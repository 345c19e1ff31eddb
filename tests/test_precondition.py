"""Preconditioners: the damped FGN inverse (Woodbury) and the closed-form GGN diagonal.

Every quantity is compared with dense float64 references of
``tests/reference.py``, built from the explicit ``(N, C, P)`` logit Jacobian
(never from the library): ``numpy.linalg.solve(G_FGN + l2 M_w + lambda I, v)``
for the preconditioner, ``diag(G_GGN)`` for the diagonal. Each test runs on
NumPy and on the CuPy stand-in (and on CuPy where there is a GPU); the
stand-in's counters check that one application is two triangular solves.
"""

import types

import numpy as np
import pytest
import reference as ref

import fgn_arrays as fa
from fgn_arrays._backend import cholesky_factor
from fgn_arrays.precondition import FGNPreconditioner, ggn_diagonal
from fgn_arrays.testing import DeviceArray, use_standin

# float64: the Woodbury solve loses about cond(K) * eps on top of the Gram
# matrix's rounding; at these sizes that stays far below 1e-10 of the largest entry.
RTOL64 = 1e-10
# float32: the Gram matrix and the margin products are float32 (eps ~ 6e-8),
# the factorisation and the triangular solves float64; the reference uses the
# same float32 inputs, upcast exactly.
RTOL32 = 1e-4
# The GGN diagonal is a few short sums of products per entry.
RTOL_DIAG64 = 1e-12
RTOL_DIAG32 = 1e-5

HEADS = ["linear", "linear-N>P", "tanh", "relu"]


class Case:
    """A random problem for one head, its Linearization on ``xp`` and its dense float64 references."""

    def __init__(self, xp, kind, dtype=np.float64, seed=0):
        N = 12
        if kind.startswith("linear"):
            D, C = (2, 3) if kind == "linear-N>P" else (4, 5)
            theta, X, y = ref.random_linear_problem(N, D, C, seed=seed, scale=2.0)
            theta, X = theta.astype(dtype), X.astype(dtype)
            head = fa.LinearHead(D, C)
            self.Z = ref.linear_logits_ref(theta, X, C)
            self.Jz = ref.linear_logit_jacobian_ref(theta, X, C)
            self.mask = np.concatenate([np.ones(C * D), np.zeros(C)])
        else:
            D, H, C = 3, 4, 5
            theta, X, y = ref.random_two_layer_problem(N, D, H, C, seed=seed, scale=2.0)
            theta, X = theta.astype(dtype), X.astype(dtype)
            head = fa.TwoLayerHead(D, H, C, activation=kind)
            self.Z = ref.two_layer_logits_ref(theta, X, H, C, kind)
            self.Jz = ref.two_layer_logit_jacobian_ref(theta, X, H, C, kind)
            self.mask = ref.two_layer_weight_mask_ref(D, H, C)
        self.xp, self.y, self.dtype = xp, y, dtype
        self.P = theta.size
        self.lin = head.linearize(xp.asarray(theta), xp.asarray(X), xp.asarray(y))
        self.J = ref.margin_jacobian_ref(self.Jz, self.Z, y)
        rng = np.random.default_rng(seed + 1)
        self.u = rng.standard_normal(self.P).astype(dtype)
        self.v = rng.standard_normal(self.P).astype(dtype)

    def damped_fgn(self, damping, l2, rows=slice(None)):
        """Dense ``G_FGN + l2 M_w + lambda I`` of the rows ``rows`` (mean over those rows)."""
        G = ref.fgn_ref(self.J[rows], self.Z[rows], self.y[rows])
        return G + l2 * np.diag(self.mask) + damping * np.eye(self.P)


def _host(x):
    return x.get() if isinstance(x, DeviceArray) or not isinstance(x, np.ndarray) else x


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("damping", [1e-3, 1.0, 10.0])
@pytest.mark.parametrize("kind", HEADS)
def test_fgn_preconditioner_is_the_damped_fgn_inverse(xp, kind, damping, l2, dtype):
    case = Case(xp, kind, dtype)
    precond = FGNPreconditioner(case.lin, damping, l2)
    got = precond(xp.asarray(case.v))
    assert got.shape == (case.P,) and got.dtype == dtype
    assert isinstance(got, type(xp.asarray(case.v)))
    expected = np.linalg.solve(case.damped_fgn(damping, l2), case.v.astype(np.float64))
    ref.assert_close(got, expected, rtol=RTOL64 if dtype == np.float64 else RTOL32)
    assert precond.n_rows == 12


@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("kind", HEADS)
def test_fgn_preconditioner_on_a_row_subsample(xp, kind, l2):
    case = Case(xp, kind, seed=3)
    rows = np.array([0, 2, 3, 7, 11])
    precond = FGNPreconditioner(case.lin._take(xp.asarray(rows)), 0.1, l2)
    assert precond.n_rows == rows.size
    got = precond(xp.asarray(case.v))
    expected = np.linalg.solve(case.damped_fgn(0.1, l2, rows), case.v)
    ref.assert_close(got, expected, rtol=RTOL64)
    # and not the full batch's inverse: the subsample's curvature is a different matrix
    full = np.linalg.solve(case.damped_fgn(0.1, l2), case.v)
    assert np.max(np.abs(_host(got) - full)) > 1e-3 * np.max(np.abs(full))


@pytest.mark.parametrize("kind", HEADS)
def test_fgn_preconditioner_is_symmetric_and_positive(xp, kind):
    case = Case(xp, kind, seed=5)
    precond = FGNPreconditioner(case.lin, 1e-2, 1e-2)
    Mu, Mv = _host(precond(xp.asarray(case.u))), _host(precond(xp.asarray(case.v)))
    uMv, vMu = case.u @ Mv, case.v @ Mu
    assert abs(uMv - vMu) <= 1e-12 * np.linalg.norm(case.u) * np.linalg.norm(Mv)
    assert case.v @ Mv > 0 and case.u @ Mu > 0


def test_fgn_preconditioner_application_is_two_triangular_solves():
    with use_standin() as sx:
        case = Case(sx, "tanh")
        v = sx.asarray(case.v)
        sx.counts.reset()
        precond = FGNPreconditioner(case.lin, 1e-2, 1e-2)
        build_ops, build_syncs = list(sx.counts.operations), sx.counts.syncs
        sx.counts.reset()
        got = precond(v)
        ops, syncs = list(sx.counts.operations), sx.counts.syncs
        again = precond(v)
    # the factorisation runs once, in the constructor, with its one status read
    assert build_ops.count("cholesky") == 1 and build_syncs == 1, build_ops
    assert "solve_triangular" not in build_ops
    # an application: exactly two triangular solves, no factorisation, no host synchronisation
    assert ops.count("solve_triangular") == 2, ops
    assert "cholesky" not in ops and syncs == 0, ops
    # the factor is reused as it is: applying twice gives the same bits
    np.testing.assert_array_equal(got.get(), again.get())
    expected = np.linalg.solve(case.damped_fgn(1e-2, 1e-2), case.v)
    ref.assert_close(got, expected, rtol=RTOL64)


def test_cholesky_factor_solves_and_refuses_indefinite_matrices(xp):
    rng = np.random.default_rng(6)
    B = rng.standard_normal((6, 6))
    K = B @ B.T + np.eye(6)
    b = rng.standard_normal((6, 2))
    factor = cholesky_factor(xp.asarray(K))
    ref.assert_close(factor.solve(xp.asarray(b)), np.linalg.solve(K, b), rtol=1e-12)
    ref.assert_close(factor.solve(xp.asarray(b[:, 0])), np.linalg.solve(K, b[:, 0]), rtol=1e-12)
    assert cholesky_factor(xp.asarray(np.array([[1.0, 2.0], [2.0, 1.0]]))) is None


def test_fgn_preconditioner_factorises_in_float64():
    # With a float32 Gram matrix factorised in float32, damping 1e-3 and large
    # logits would lose about cond(K) * 6e-8 ~ 1e-3 of accuracy; in float64 the
    # error is the float32 rounding of the products alone.
    case = Case(np, "linear", np.float32, seed=7)
    precond = FGNPreconditioner(case.lin, 1e-3, 0.0)
    assert precond.factor.L.dtype == np.float64
    expected = np.linalg.solve(case.damped_fgn(1e-3, 0.0), case.v.astype(np.float64))
    ref.assert_close(precond(case.v), expected, rtol=RTOL32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", HEADS + ["gelu"])
def test_ggn_diagonal_is_the_dense_ggn_diagonal(xp, kind, dtype):
    case = Case(xp, kind, dtype, seed=2)
    got = ggn_diagonal(case.lin)
    assert got.shape == (case.P,) and got.dtype == dtype
    expected = np.diag(ref.ggn_ref(case.Jz, case.Z))
    ref.assert_close(got, expected, rtol=RTOL_DIAG64 if dtype == np.float64 else RTOL_DIAG32)
    # zero exactly where the reference is (a dead relu unit), positive elsewhere
    np.testing.assert_array_equal(_host(got) > 0, expected > 0)
    assert np.count_nonzero(expected) > case.P // 2


@pytest.mark.parametrize("kind", ["linear", "tanh"])
def test_ggn_diagonal_keeps_its_accuracy_on_confident_rows(xp, kind):
    # Logits of size ~300: every row's top probability is within 2e-3 of 1, where
    # p̂ (1 - p̂) and the variance of W2's columns under p̂, written naively,
    # lose ~1e-10 of relative accuracy; the reference sums 1 - p̂ exactly.
    if kind == "linear":
        theta, X, y = ref.random_linear_problem(12, 4, 5, seed=4, scale=300.0)
        head, Z, Jz = fa.LinearHead(4, 5), ref.linear_logits_ref(theta, X, 5), ref.linear_logit_jacobian_ref(theta, X, 5)
    else:
        theta, X, y = ref.random_two_layer_problem(12, 3, 4, 5, seed=4, scale=300.0)
        head = fa.TwoLayerHead(3, 4, 5)
        Z, Jz = ref.two_layer_logits_ref(theta, X, 4, 5, "tanh"), ref.two_layer_logit_jacobian_ref(theta, X, 4, 5, "tanh")
    assert np.max(1 - ref.softmax_ref(Z).max(axis=1)) < 2e-3
    lin = head.linearize(xp.asarray(theta), xp.asarray(X), xp.asarray(y))
    ref.assert_close(ggn_diagonal(lin), np.diag(ref.ggn_ref(Jz, Z)), rtol=RTOL_DIAG64)
    # and on a row subsample, the subsample's mean
    rows = np.array([1, 4, 5, 9])
    expected = np.diag(ref.ggn_ref(Jz[rows], Z[rows]))
    ref.assert_close(ggn_diagonal(lin._take(xp.asarray(rows))), expected, rtol=RTOL_DIAG64)


def test_ggn_diagonal_refuses_other_heads():
    lin = types.SimpleNamespace(head=object())
    with pytest.raises(TypeError, match=r"LinearHead or TwoLayerHead; got one of object"):
        ggn_diagonal(lin)
