"""Property tests of fgn_step and ggn_step against dense float64 references.

Conventions
-----------
``H = G + l2 M + damping I`` with ``G = G_FGN`` (:func:`fgn_arrays.fgn_step`) or
``G = G_GGN`` (:func:`fgn_arrays.ggn_step`), ``M = diag(weight mask)`` and
``g = lin.grad + l2 M theta``; the exact step is ``delta* = -H^-1 g``.
``H64`` and ``g64`` are built by ``tests/reference.py`` in float64 from the
same ``theta`` and ``X`` as the step (float32 inputs are upcast exactly), never
from the library. A step working in ``dtype`` (machine epsilon ``eps``) is
allowed the rounding slack

    slack = 30 eps (||H64||_2 ||delta|| + ||g64||)

on its residual ``||H64 delta + g64||``. The contract checked here:

- always (damping 0 or in [1e-38, 1e8], float32 or float64, both heads, both
  row-space solvers): ``direction`` is finite, ``predicted_decrease`` and
  ``residual`` are finite floats, nothing raises;
- ``converged`` implies ``predicted_decrease > 0``,
  ``||H64 delta + g64|| <= rtol ||g64|| + slack`` and a predicted decrease equal
  to ``-(g64^T delta + 1/2 delta^T (H64 - damping I) delta)``;
- on well-conditioned problems (float64: ``damping >= 1e-3 ||G||_2`` and
  ``rtol >= 1e-8``; float32: ``damping >= 1e-2 ||G||_2`` and ``rtol >= 1e-3``)
  the step says ``converged``.

Problems are tiny (P <= 47), so every dense matrix and eigen-decomposition is
cheap; they are built once per (head, seed, scale, dtype) and cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fgn_arrays as fa

# --------------------------------------------------------------------------
# Problems and their dense float64 references
# --------------------------------------------------------------------------

LINEAR = ("linear", 12, 6, None, 4)  # (kind, N, D, H, C): P = 28
TWO_LAYER = ("two_layer", 10, 5, 4, 3)  # P = 20 + 4 + 12 + 3 = 39
HEADS = {"linear": LINEAR, "two_layer": TWO_LAYER}
# Logit scales: 2 gives moderate margins; 30 makes rows very confident (right
# or wrong), so that w_i = p_i (1 - p_i) is tiny (~e^-30 and below).
SCALES = (2.0, 30.0)
SEEDS = range(4)
SLACK_FACTOR = 30


class Dense:
    """A problem's Linearization and its dense float64 references (no l2, no damping)."""

    def __init__(self, kind, seed, scale, dtype):
        _, N, D, H, C = HEADS[kind]
        if kind == "linear":
            theta, X, y = ref.random_linear_problem(N, D, C, seed=seed, scale=scale)
            head = fa.LinearHead(D, C)
        else:
            theta, X, y = ref.random_two_layer_problem(N, D, H, C, seed=seed, scale=scale)
            head = fa.TwoLayerHead(D, H, C, activation="tanh")
        theta, X = theta.astype(dtype), X.astype(dtype)
        self.dtype = np.dtype(dtype)
        self.lin = head.linearize(theta, X, y)
        # The references see the step's own inputs, upcast exactly.
        theta64, X64 = theta.astype(np.float64), X.astype(np.float64)
        if kind == "linear":
            Z = ref.linear_logits_ref(theta64, X64, C)
            Jz = ref.linear_logit_jacobian_ref(theta64, X64, C)
            mask = np.r_[np.ones(C * D), np.zeros(C)]
        else:
            Z = ref.two_layer_logits_ref(theta64, X64, H, C, "tanh")
            Jz = ref.two_layer_logit_jacobian_ref(theta64, X64, H, C, "tanh")
            mask = ref.two_layer_weight_mask_ref(D, H, C)
        J = ref.margin_jacobian_ref(Jz, Z, y)
        self.theta, self.mask, self.n_params = theta64, mask, theta64.size
        # mean-CE gradient (1/N) J^T r, r_i = -(1 - p_i) summed over the competitors
        self.grad = J.T @ ref.residual_ref(Z, y) / N
        self.G = {"fgn": ref.fgn_ref(J, Z, y), "ggn": ref.ggn_ref(Jz, Z)}
        self.G_norm = {k: float(np.linalg.eigvalsh(v)[-1]) for k, v in self.G.items()}
        self.margins = ref.margin_ref(Z, y)["margin"]

    def system(self, curvature, damping, l2):
        """``(H64, g64, H64 - damping I)`` for the step's curvature, damping and l2."""
        A = self.G[curvature] + l2 * np.diag(self.mask)
        H = A + damping * np.eye(self.n_params)
        g = self.grad + l2 * self.mask * self.theta
        return H, g, A


@functools.lru_cache(maxsize=None)
def dense(kind, seed, scale, dtype_name):
    return Dense(kind, seed, scale, np.dtype(dtype_name))


def run_step(curvature, d, damping, l2, rtol, solver):
    """``fgn_step`` with ``solver``, or ``ggn_step`` with ``solver`` as its preconditioner."""
    if curvature == "fgn":
        return fa.fgn_step(d.lin, damping, l2=l2, solver=solver, rtol=rtol)
    return fa.ggn_step(d.lin, damping, l2=l2, rtol=rtol, precond=solver)


def well_conditioned(d, curvature, damping, rtol):
    """Whether the contract requires ``converged`` (module docstring)."""
    G_norm = d.G_norm[curvature]
    if d.dtype == np.float64:
        return damping >= 1e-3 * G_norm and rtol >= 1e-8
    return damping >= 1e-2 * G_norm and rtol >= 1e-3


def check_always(res, d):
    """The guarantees of every step, converged or not."""
    delta = np.asarray(res.direction)
    assert delta.shape == (d.n_params,)
    assert delta.dtype == d.dtype
    assert np.all(np.isfinite(delta)), f"non-finite direction; status {res.status!r}"
    assert isinstance(res.predicted_decrease, float) and math.isfinite(res.predicted_decrease)
    assert isinstance(res.residual, float) and math.isfinite(res.residual), res.residual
    assert res.residual >= 0.0
    assert isinstance(res.converged, bool)
    assert isinstance(res.status, str) and res.status


def check_converged(res, d, curvature, damping, l2, rtol):
    """What ``converged=True`` promises, measured on the dense float64 system."""
    eps = float(np.finfo(d.dtype).eps)
    H, g, A = d.system(curvature, damping, l2)
    eig = np.linalg.eigvalsh(H)
    H_norm, lam_min = float(max(abs(eig[0]), abs(eig[-1]))), float(eig[0])
    delta = np.asarray(res.direction, dtype=np.float64)
    d_norm, g_norm = float(np.linalg.norm(delta)), float(np.linalg.norm(g))
    slack = SLACK_FACTOR * eps * (H_norm * d_norm + g_norm)
    info = f"status {res.status!r}, n_iter {res.n_iter}, solver {res.solver!r}"

    # (a) a converged step is a descent step of its model
    assert res.predicted_decrease > 0, f"converged with predicted_decrease {res.predicted_decrease}; {info}"

    # (b) the true residual meets the tolerance, up to the rounding of `dtype`
    true_res = float(np.linalg.norm(H @ delta + g))
    assert true_res <= rtol * g_norm + slack, (
        f"||H delta + g|| = {true_res:.3e} > rtol ||g|| + slack = {rtol * g_norm:.3e} + {slack:.3e}; {info}"
    )
    # ... so the error is bounded by the smallest eigenvalue, where that is
    # resolved in float64 (eigvalsh is accurate to ~1e-16 ||H||).
    if lam_min > 1e3 * np.finfo(np.float64).eps * H_norm:
        exact = np.linalg.solve(H, -g)
        err = float(np.linalg.norm(delta - exact))
        assert err <= 1.01 * (rtol * g_norm + slack) / lam_min, f"||delta - delta*|| = {err:.3e}; {info}"

    # the reported residual is the relative one of this system, to rounding
    if g_norm > 0:
        assert abs(res.residual - true_res / g_norm) <= 0.1 * true_res / g_norm + 3 * slack / g_norm, (
            f"residual {res.residual:.3e} vs dense {true_res / g_norm:.3e}; {info}"
        )

    # the predicted decrease is the model's, -(g^T delta + 1/2 delta^T (H - damping I) delta)
    pred = -(g @ delta + 0.5 * delta @ A @ delta)
    pred_slack = SLACK_FACTOR * eps * (g_norm * d_norm + H_norm * d_norm**2)
    # float64: 1e-6 relative; float32: 1e-2 relative (its g and G carry
    # float32 rounding amplified by the conditioning of w_i in the logits)
    pred_rtol = 1e-6 if d.dtype == np.float64 else 1e-2
    assert abs(res.predicted_decrease - pred) <= pred_rtol * abs(pred) + pred_slack, (
        f"predicted_decrease {res.predicted_decrease!r} vs dense {pred!r}; {info}"
    )


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

dampings = st.one_of(
    st.just(0.0),
    st.floats(math.log10(1e-38), math.log10(1e8)).map(lambda e: float(10.0**e)),
)
rtols = st.floats(math.log10(1e-8), math.log10(0.5)).map(lambda e: float(10.0**e))
dtypes = st.sampled_from(["float32", "float64"])
kinds = st.sampled_from(["linear", "two_layer"])
l2s = st.sampled_from([0.0, 1e-2])
seeds = st.sampled_from(list(SEEDS))
scales = st.sampled_from(list(SCALES))

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------


# (curvature, solver): fgn_step's solvers, ggn_step's preconditioners
STEPS = [("fgn", "cg"), ("fgn", "cholesky"), ("ggn", None), ("ggn", "jacobi"), ("ggn", "fgn")]
STEP_IDS = ["fgn-cg", "fgn-cholesky", "ggn", "ggn-jacobi", "ggn-fgn"]


@pytest.mark.parametrize("curvature, solver", STEPS, ids=STEP_IDS)
@SETTINGS
@given(damping=dampings, rtol=rtols, dtype=dtypes, kind=kinds, l2=l2s, seed=seeds, scale=scales)
def test_steps_are_finite_and_honest(curvature, solver, damping, rtol, dtype, kind, l2, seed, scale):
    d = dense(kind, seed, scale, dtype)
    if (curvature, solver, damping) == ("ggn", "fgn", 0.0):
        with pytest.raises(ValueError, match="needs `damping` > 0"):
            run_step(curvature, d, damping, l2, rtol, solver)
        return
    res = run_step(curvature, d, damping, l2, rtol, solver)
    check_always(res, d)
    if res.converged:
        check_converged(res, d, curvature, damping, l2, rtol)
    if well_conditioned(d, curvature, damping, rtol):
        assert res.converged, f"well-conditioned step did not converge: {res.status!r}"


# --------------------------------------------------------------------------
# Explicit cases: the extremes, and convergence where it is owed
# --------------------------------------------------------------------------

EXTREME_DAMPINGS = [0.0, 1e-38, 1e-30, 1e-20, 1e-12, 1e-6, 1.0, 1e4, 1e8]


@pytest.mark.parametrize("curvature, solver", STEPS, ids=STEP_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["linear", "two_layer"])
@pytest.mark.parametrize("scale", SCALES)
def test_extreme_dampings_are_finite_and_honest(curvature, solver, dtype, kind, scale):
    d = dense(kind, 0, scale, dtype)
    for damping in EXTREME_DAMPINGS:
        if damping == 0.0 and (curvature, solver) == ("ggn", "fgn"):
            continue  # refused with a ValueError (test_steps_are_finite_and_honest)
        for l2 in (0.0, 1e-2):
            res = run_step(curvature, d, damping, l2, 1e-6, solver)
            check_always(res, d)
            if res.converged:
                check_converged(res, d, curvature, damping, l2, 1e-6)


def test_confident_problem_has_tiny_curvature_weights():
    # The scale-30 problems are the ones meant: some rows have w_i far below float32's eps.
    for kind in HEADS:
        d = dense(kind, 0, 30.0, "float64")
        w = np.asarray(d.lin.curvature_weights)
        assert np.min(w) < 1e-10 and np.max(np.abs(d.margins)) > 20


# Damping relative to ||G||_2 at or above which the contract owes convergence.
OWED = {"float64": (1e-3, [1e-8, 1e-6, 1e-3, 0.5]), "float32": (1e-2, [1e-3, 1e-2, 0.5])}


@pytest.mark.parametrize("curvature, solver", STEPS, ids=STEP_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["linear", "two_layer"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_well_conditioned_steps_converge(curvature, solver, dtype, kind, scale, l2):
    rel, rtol_list = OWED[dtype]
    for seed in (0, 1):
        d = dense(kind, seed, scale, dtype)
        G_norm = d.G_norm[curvature]
        for factor in (1.0, 10.0, 1e3):
            damping = rel * factor * G_norm
            if damping > 1e8:
                continue
            for rtol in rtol_list:
                res = run_step(curvature, d, damping, l2, rtol, solver)
                check_always(res, d)
                assert res.converged, (
                    f"seed {seed}, damping {damping:.3e} (= {rel * factor:g} ||G||), rtol {rtol:g}: {res.status!r}"
                )
                check_converged(res, d, curvature, damping, l2, rtol)


@pytest.mark.parametrize("curvature, solver", STEPS, ids=STEP_IDS)
@pytest.mark.parametrize("kind", ["linear", "two_layer"])
def test_float64_tight_tolerance_matches_dense_solve(curvature, solver, kind):
    # Moderate damping, rtol 1e-10: the direction is delta* to ~cond * 1e-10.
    d = dense(kind, 1, 2.0, "float64")
    damping, l2 = 1e-2 * d.G_norm[curvature], 1e-2
    H, g, A = d.system(curvature, damping, l2)
    res = run_step(curvature, d, damping, l2, 1e-10, solver)
    assert res.converged
    exact = np.linalg.solve(H, -g)
    cond = np.linalg.cond(H)
    np.testing.assert_allclose(res.direction, exact, rtol=0, atol=10 * cond * 1e-10 * np.linalg.norm(exact))
    pred = -(g @ exact + 0.5 * exact @ A @ exact)
    np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-6)
    assert res.residual <= 1e-10 * (1 + 1e-3)


# --------------------------------------------------------------------------
# The issue's probe
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def probe(pass_method=True):
    """The issue's problem after 3 full-batch FGN iterations, and its dense float64 pieces.

    ``pass_method=False`` leaves out ``method="fgn"`` (minimize's default), so
    that the steps are checked even where minimize does not take ``method``.
    """
    X, y, _ = fa.datasets.make_heads_problem(40, 30, 2, seed=3)
    X = np.asarray(X, dtype=np.float64)
    head = fa.LinearHead(30, 2)
    kwargs = {"method": "fgn"} if pass_method else {}
    theta = fa.minimize(
        head, np.zeros(head.n_params), X, y, curvature_rows=None, solver="cg", l2=0.0, max_iter=3, **kwargs
    ).theta
    theta = np.asarray(theta, dtype=np.float64)
    lin = head.linearize(theta, X, y)
    C = 2
    Z = ref.linear_logits_ref(theta, X, C)
    J = ref.margin_jacobian_ref(ref.linear_logit_jacobian_ref(theta, X, C), Z, y)
    g = J.T @ ref.residual_ref(Z, y) / X.shape[0]
    return lin, ref.fgn_ref(J, Z, y), g


PROBE_CASES = [(1e-3, 0.1), (1e-4, 0.1), (1e-4, 1e-2), (1e-4, 1e-6)]


def check_probe(lin, G, g, damping, rtol):
    res = fa.fgn_step(lin, damping, rtol=rtol, solver="cg")
    assert np.all(np.isfinite(res.direction))
    assert math.isfinite(res.predicted_decrease) and math.isfinite(res.residual)
    H = G + damping * np.eye(G.shape[0])
    if res.converged:
        assert res.predicted_decrease > 0, f"converged with predicted_decrease {res.predicted_decrease}"
        delta = np.asarray(res.direction, dtype=np.float64)
        slack = SLACK_FACTOR * np.finfo(np.float64).eps * (
            np.linalg.norm(H, 2) * np.linalg.norm(delta) + np.linalg.norm(g)
        )
        assert np.linalg.norm(H @ delta + g) <= rtol * np.linalg.norm(g) + slack
    if rtol == 1e-6:
        assert res.converged, res.status
        exact = np.linalg.solve(H, -g)
        pred = -(g @ exact + 0.5 * exact @ G @ exact)
        np.testing.assert_allclose(res.predicted_decrease, pred, rtol=1e-6)


@pytest.mark.parametrize("damping, rtol", PROBE_CASES)
def test_issue_probe_is_honest(damping, rtol):
    # Built inside the test: a minimize() that rejects `method=` fails this test, not its setup.
    check_probe(*probe(pass_method=True), damping, rtol)


@pytest.mark.parametrize("damping, rtol", PROBE_CASES)
def test_issue_probe_is_honest_default_method(damping, rtol):
    check_probe(*probe(pass_method=False), damping, rtol)
