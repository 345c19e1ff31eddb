"""The Levenberg-Marquardt FGN training loop."""

from dataclasses import replace

import numpy as np
import pytest
from reference import random_linear_problem

import fgn_arrays as fa
from fgn_arrays import methods, optim
from fgn_arrays.step import DiagonalDamping

METHODS = ["fgn", "fgn-compensated", "ggn-pcg"]


def problem(N=200, D=5, C=4, seed=0):
    _, X, _ = random_linear_problem(N, D, C, seed=seed)
    rng = np.random.default_rng(seed)
    W = 2.0 * rng.standard_normal((C, D))
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(X @ W.T + gumbel, axis=1)
    return fa.LinearHead(D, C), X, y


def objective(head, theta, X, y, l2):
    # mean cross-entropy + l2/2 ||W||^2, from scratch
    W, b = theta[: head.n_classes * head.n_features].reshape(head.n_classes, -1), theta[-head.n_classes :]
    Z = X @ W.T + b
    Z = Z - Z.max(axis=1, keepdims=True)
    log_p = Z[np.arange(len(y)), y] - np.log(np.exp(Z).sum(axis=1))
    return -log_p.mean() + 0.5 * l2 * np.sum(W * W)


@pytest.mark.parametrize("method", METHODS)
def test_monotone_decrease_to_the_optimum(method):
    head, X, y = problem()
    l2 = 1e-2
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, max_iter=200, tol=1e-9, method=method)
    assert res.method == method
    accepted = np.array(res.history["objective"])[np.array(res.history["accepted"])]
    assert np.all(np.diff(accepted) < 0)  # every accepted step decreases the objective
    assert res.converged, res.status
    # Strongly convex: the optimum has a zero gradient; compare with SciPy's L-BFGS-B.
    from scipy.optimize import minimize as sp_minimize

    ref = sp_minimize(lambda t: objective(head, t, X, y, l2), np.zeros(head.n_params), method="L-BFGS-B",
                      options=dict(ftol=1e-15, gtol=1e-10, maxiter=5000))
    assert res.objective == pytest.approx(ref.fun, rel=1e-7)
    assert res.objective == pytest.approx(objective(head, res.theta, X, y, l2), rel=1e-12)
    assert res.grad_norm < 1e-5


def test_overshooting_unit_steps_raise_the_damping_and_only_decreases_are_taken():
    head, X, y = problem(seed=1)
    l2 = 1e-4
    # A tiny initial damping makes the first plain FGN unit steps overshoot.
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, damping=1e-8, max_iter=200, method="fgn")
    h = res.history
    rho = np.array(h["rho"])
    assert np.any(rho < 0), "expected at least one overshooting unit step from damping 1e-8"
    objectives = [objective(head, np.zeros(head.n_params), X, y, l2)] + h["objective"]
    for k in range(len(rho)):
        if k + 1 < len(h["damping"]) and rho[k] < methods.RHO_GROW:
            # the model over-promised: the damping grows by DAMPING_INCREASE
            assert h["damping"][k + 1] == pytest.approx(h["damping"][k] * methods.DAMPING_INCREASE)
        if h["accepted"][k]:
            # a strict decrease, along delta (a > 0)
            assert objectives[k + 1] < objectives[k] and h["step_size"][k] > 0
        else:
            # rejected: the objective stays where it was
            assert h["step_size"][k] == 0.0 and h["momentum"][k] == 0.0
            assert objectives[k + 1] == pytest.approx(objectives[k], rel=1e-12)
    assert res.converged, res.status
    assert res.objective == pytest.approx(objective(head, res.theta, X, y, l2), rel=1e-12)
    assert np.all(np.isfinite(rho))


def test_fgn_is_the_papers_algorithm(monkeypatch):
    # method="fgn": the damped FGN step with Lam = damping I + l2 M on all rows, the unit step, LM damping.
    head, X, y = problem(N=300)
    calls = []
    real = methods._fgn_step

    def spy(curv, lam, g, *args, **kwargs):
        calls.append((curv.n_samples, type(lam), lam.damping, kwargs["own_gradient"]))
        return real(curv, lam, g, *args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("method='fgn' must not use the Kronecker damping")

    monkeypatch.setattr(methods, "_fgn_step", spy)
    monkeypatch.setattr(methods, "kronecker_fgn_step", forbidden)
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-3, max_iter=200, method="fgn", tol=1e-8)
    h = res.history
    assert [c[0] for c in calls] == [300] * len(h["objective"])  # every row, every step
    assert all(c[1] is DiagonalDamping and c[3] for c in calls)
    assert [c[2] for c in calls] == h["damping"]
    for k, accepted in enumerate(h["accepted"]):
        assert (h["step_size"][k], h["momentum"][k]) == ((1.0, 0.0) if accepted else (0.0, 0.0))
        if k + 1 < len(h["damping"]):
            assert h["damping"][k + 1] == methods.LevenbergMarquardt().update(h["damping"][k], h["rho"][k])
    assert res.converged, res.status


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_the_solver_never_changes_the_model(solver, monkeypatch):
    # Both solvers of method="fgn" solve the same damped FGN system (the same damping object).
    head, X, y = problem(N=100)
    kinds = []
    real = methods._fgn_step

    def spy(curv, lam, *args, **kwargs):
        kinds.append(type(lam))
        return real(curv, lam, *args, **kwargs)

    monkeypatch.setattr(methods, "_fgn_step", spy)
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-2, max_iter=100, method="fgn", solver=solver,
                      tol=1e-9)
    assert set(kinds) == {DiagonalDamping}
    ref = fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-2, max_iter=100, method="fgn", solver="cg",
                      tol=1e-9)
    assert res.objective == pytest.approx(ref.objective, rel=1e-12)


def test_the_issue_probe_has_finite_rho_and_no_growth_on_good_steps():
    # issue 12: 13 of 25 steps had rho = NaN and the damping doubled on accepted, good steps.
    X, y, _ = fa.datasets.make_heads_problem(40, 30, 2, seed=3)
    head = fa.LinearHead(30, 2)
    res = fa.minimize(head, np.zeros(head.n_params), X, y, method="fgn", curvature_rows=None, solver="cg",
                      l2=0.0, max_iter=25, tol=0.0)
    h = res.history
    assert np.all(np.isfinite(h["rho"]))
    for k in range(len(h["rho"]) - 1):
        if h["rho"][k] > methods.RHO_GROW:
            assert h["damping"][k + 1] <= h["damping"][k]


def test_a_step_that_never_decreases_is_rejected(monkeypatch):
    # A step pointing uphill: the unit step increases the objective and the subspace
    # correction would reverse delta (a < 0), so the step is rejected and theta stays.
    head, X, y = problem()
    real = methods.kronecker_fgn_step

    def uphill(*args, **kwargs):
        step = real(*args, **kwargs)
        return replace(step, direction=-step.direction)

    monkeypatch.setattr(methods, "kronecker_fgn_step", uphill)
    theta0 = 0.1 * np.ones(head.n_params)
    res = fa.minimize(head, theta0, X, y, l2=1e-3, max_iter=3)
    assert res.history["accepted"] == [False, False, False]
    assert res.history["step_size"] == [0.0, 0.0, 0.0] and res.history["momentum"] == [0.0, 0.0, 0.0]
    assert all(r < 0 for r in res.history["rho"])
    np.testing.assert_array_equal(res.theta, theta0)
    assert res.history["damping"] == [1.0, 2.0, 8.0]  # Nielsen: x2, then x4


def test_levenberg_marquardt_rule():
    rule = methods.LevenbergMarquardt()
    assert rule.update(1.0, 0.1) == 2.0
    assert rule.update(1.0, 0.4) == 1.0
    assert rule.update(1.0, 0.6) == pytest.approx(0.1)
    assert rule.update(1.0, 0.0) == 2.0  # no predicted decrease: rho = 0
    assert rule.update(1e8, -1.0) == 1e8
    assert rule.update(1e-8, 1.0) == 1e-8


def test_nielsen_rule():
    rule = methods.Nielsen()
    assert rule.update(1.0, 1.0) == pytest.approx(0.1)  # 1 - 1 = 0, floored at 1/10
    assert rule.update(1.0, 0.5) == pytest.approx(1.0)  # 1 - 0 = 1
    assert rule.update(1.0, 0.25) == pytest.approx(1.125)  # 1 - (-0.5)^3
    # rejections in a row: x2, x4, x8; a success resets nu
    assert [rule.update(1.0, -1.0), rule.update(1.0, 0.0), rule.update(1.0, -0.5)] == [2.0, 4.0, 8.0]
    rule.update(1.0, 0.75)
    assert rule.update(1.0, -1.0) == 2.0
    assert rule.update(1e8, -1.0) == 1e8 and rule.update(1e-8, 1.0) == 1e-8


@pytest.mark.parametrize("method, rule", [("fgn", methods.LevenbergMarquardt), ("fgn-compensated", methods.Nielsen),
                                          ("ggn-pcg", methods.Nielsen)])
def test_each_method_follows_its_damping_rule(method, rule):
    head, X, y = problem(seed=2)
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-3, max_iter=12, tol=0.0, method=method)
    h, replay = res.history, rule()
    for k in range(len(h["rho"]) - 1):
        assert h["damping"][k + 1] == replay.update(h["damping"][k], h["rho"][k])


def test_history_callback_and_verbose(capsys):
    head, X, y = problem()
    seen = []

    def callback(theta, record):
        seen.append(record)
        return len(seen) == 3  # stop after three steps

    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-3, callback=callback, verbose=1)
    assert res.status == "stopped by callback" and res.n_iter == 3
    assert set(res.history) == set(optim.HISTORY_KEYS)
    assert all(len(v) == 3 for v in res.history.values())
    assert seen[-1]["seconds"] >= 0 and isinstance(seen[-1]["accepted"], bool)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["iter", "objective", "|grad|_inf"] and len(out) == 4


def test_warm_start_reuses_coefficients(monkeypatch):
    head, X, y = problem()
    x0s = []
    real = methods.kronecker_fgn_step

    def spy(*args, **kwargs):
        x0s.append(kwargs.get("x0"))
        return real(*args, **kwargs)

    monkeypatch.setattr(methods, "kronecker_fgn_step", spy)
    fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-3, max_iter=4)
    assert len(x0s) == 4 and x0s[0] is None
    assert all(x is not None and x.shape == (len(y),) for x in x0s[1:])
    # with a curvature subsample the rows change at every step: no warm start
    x0s.clear()
    fa.minimize(head, np.zeros(head.n_params), X, y, l2=1e-3, max_iter=4, curvature_rows=50)
    assert len(x0s) == 4 and all(x is None for x in x0s)


def test_minibatches_decrease_the_full_objective():
    head, X, y = problem(N=600)
    l2 = 1e-3
    start = objective(head, np.zeros(head.n_params), X, y, l2)
    res = fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, batch_size=100, max_iter=3, random_state=0)
    assert res.n_iter == 3
    assert len(res.history["objective"]) == 3 * 6  # 6 batches per epoch
    assert res.objective < 0.7 * start
    again = fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, batch_size=100, max_iter=3, random_state=0)
    np.testing.assert_array_equal(again.theta, res.theta)  # seeded shuffling


def test_float32_stays_float32():
    head, X, y = problem()
    res = fa.minimize(head, np.zeros(head.n_params, np.float32), X.astype(np.float32), y, l2=1e-3, max_iter=5)
    assert res.theta.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(damping=0.0), ValueError, r"`damping` must be > 0"),
        (dict(damping=-1.0), ValueError, r"`damping` must be finite and >= 0"),
        (dict(l2=-1.0), ValueError, r"`l2` must be finite and >= 0"),
        (dict(max_iter=-1), ValueError, r"`max_iter` must be >= 0"),
        (dict(batch_size=0), ValueError, r"`batch_size` must be >= 1"),
        (dict(tol=np.nan), ValueError, r"`tol` must be finite"),
        (dict(callback=3), TypeError, r"`callback` must be callable"),
        (dict(curvature_rows=0), ValueError, r"`curvature_rows` must be >= 1"),
        (dict(curvature_rows="all"), TypeError, r"`curvature_rows` must be an integer"),
        (dict(solver="lu"), ValueError, r"`solver` must be one of"),
        (dict(solver=3), TypeError, r"`solver` must be a string"),
        (dict(method="fgn-compensated", solver="cholesky"), ValueError, r"`solver` must be one of \('auto', 'cg'\)"),
        (dict(method="ggn-pcg", solver="cg"), ValueError, r"`solver` must be one of \('auto',\) for method"),
        (dict(method="newton"), ValueError, r"`method` must be one of \('fgn', 'fgn-compensated', 'ggn-pcg'\)"),
        (dict(method=None), TypeError, r"`method` must be a string"),
        (dict(max_iter=2.5), TypeError, r"`max_iter` must be an integer"),
        (dict(damping="1"), TypeError, r"`damping` must be a real number"),
        (dict(tol=None), TypeError, r"`tol` must be a real number"),
        (dict(random_state="a"), TypeError, r"`random_state` must be an int"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    head, X, y = problem()
    with pytest.raises(exc, match=match):
        fa.minimize(head, np.zeros(head.n_params), X, y, **kwargs)


def test_head_must_be_a_head():
    _, X, y = problem()
    with pytest.raises(TypeError, match=r"`head` must be a head such as fa.LinearHead; got NoneType"):
        fa.minimize(None, np.zeros(24), X, y)


def test_curvature_subsample_is_seeded_and_still_converges():
    # 600 rows, 100 curvature rows per step: the same seed gives the same run; the optimum is reached.
    head, X, y = problem(N=600)
    l2 = 1e-2
    runs = [fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, max_iter=200, tol=1e-9,
                        curvature_rows=100, random_state=seed) for seed in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0].theta, runs[1].theta)
    assert runs[0].history["objective"] != runs[2].history["objective"]
    full = fa.minimize(head, np.zeros(head.n_params), X, y, l2=l2, max_iter=200, tol=1e-9, curvature_rows=None)
    for res in runs + [full]:
        assert res.converged, res.status
        assert res.objective == pytest.approx(objective(head, full.theta, X, y, l2), rel=1e-8)


@pytest.mark.parametrize("hidden", [None, 6])
def test_curvature_rows_are_taken_from_the_cached_forward_pass(hidden):
    # Linearization._take(rows) must equal a fresh linearization on those rows.
    _, X, y = problem(N=50)
    head = fa.LinearHead(5, 4) if hidden is None else fa.TwoLayerHead(5, hidden, 4)
    theta = head.init_params(seed=3, dtype="float64") + 0.1
    rows = np.array([3, 7, 7, 20, 49])
    taken = head.linearize(theta, X, y)._take(rows)
    fresh = head.linearize(theta, X[rows], y[rows])
    assert type(taken) is type(fresh) and taken.n_samples == 5
    for name in ("logits", "U", "X", "y"):
        np.testing.assert_array_equal(getattr(taken, name), getattr(fresh, name))
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        np.testing.assert_array_equal(getattr(taken.stats, name), getattr(fresh.stats, name))
    v = np.random.default_rng(0).standard_normal(head.n_params)
    np.testing.assert_allclose(taken.margin_jvp(v), fresh.margin_jvp(v), rtol=1e-13)
    np.testing.assert_allclose(taken.grad, fresh.grad, rtol=1e-13)
    np.testing.assert_allclose(taken.margin_gram_diag(), fresh.margin_gram_diag(), rtol=1e-13)
