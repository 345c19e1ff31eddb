"""Sample weights: ``L = sum_i s_i loss_i / sum_i s_i + (l2/2) ||theta_w||^2``, curvature ``s_i w_i / sum s``.

Three independent checks of the weighted linearization, step and fit:

- dense float64 references of ``tests/reference.py``, one row at a time and
  summed with the weights ``c_i = s_i / sum s`` (the references never see a
  weight: a row's contribution is the reference on that row alone);
- integer weights against the same rows repeated ``s_i`` times (the
  unweighted code path);
- zero weights against the data without those rows.

Each runs on NumPy and on the CuPy stand-in (and on CuPy with a GPU).
"""

import numpy as np
import pytest
import reference as ref
from conftest import to_host

import fgn_arrays as fa
from fgn_arrays.compensation import output_covariance
from fgn_arrays.precondition import ggn_diagonal

N, D, H, C = 14, 5, 4, 4
L2, DAMPING = 1e-2, 0.3


def _problem(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "linear":
        theta, X, y = ref.random_linear_problem(N, D, C, seed=seed, scale=2.0)
        return fa.LinearHead(D, C), theta, X, y, ref.linear_logit_jacobian_ref(theta, X, C), rng
    theta, X, y = ref.random_two_layer_problem(N, D, H, C, seed=seed, scale=2.0)
    Jz = ref.two_layer_logit_jacobian_ref(theta, X, H, C, "tanh")
    return fa.TwoLayerHead(D, H, C, "tanh"), theta, X, y, Jz, rng


def _integer_weights(rng):
    s = rng.integers(0, 4, N).astype(np.float64)
    s[:2] = (3.0, 1.0)  # a positive sum whatever the draw
    return s


@pytest.mark.parametrize("kind", ["linear", "two-layer"])
def test_weighted_linearization_matches_dense_references(xp, kind):
    head, theta, X, y, Jz, rng = _problem(kind)
    s = rng.uniform(0.0, 3.0, N)
    s[3] = 0.0
    lin = head.linearize(xp.asarray(theta), xp.asarray(X), xp.asarray(y), xp.asarray(s))
    Z = ref.linear_logits_ref(theta, X, C) if kind == "linear" else ref.two_layer_logits_ref(theta, X, H, C, "tanh")
    c = s / s.sum()
    loss = ref.cross_entropy_ref(Z, y)
    grad = sum(c[i] * Jz[i].T @ (ref.softmax_ref(Z[i : i + 1])[0] - np.eye(C)[y[i]]) for i in range(N))

    def weighted(matrix_ref, *args):
        # sum_i c_i (row i's reference): each reference is mean-scaled over its one row
        return sum(c[i] * matrix_ref(*(a[i : i + 1] for a in args)) for i in range(N))

    J = ref.margin_jacobian_ref(Jz, Z, y)
    P = head.n_params
    assert lin.loss == pytest.approx(float(c @ loss), rel=1e-13)
    ref.assert_close(lin.grad, grad, rtol=1e-12)
    ref.assert_close(ref.matrix_of(lambda v: fa.fgn_matvec(lin, xp.asarray(v)), P), weighted(ref.fgn_ref, J, Z, y))
    ref.assert_close(ref.matrix_of(lambda v: fa.ggn_matvec(lin, xp.asarray(v)), P), weighted(ref.ggn_ref, Jz, Z))
    ref.assert_close(
        ref.matrix_of(lambda v: fa.dropped_matvec(lin, xp.asarray(v)), P), weighted(ref.dropped_direct_ref, Jz, Z, y)
    )
    ref.assert_close(ggn_diagonal(lin), np.diag(weighted(ref.ggn_ref, Jz, Z)), rtol=1e-12)

    # the damped FGN step solves (G_FGN + l2 M + lambda I) delta = -g with the weighted G and g
    mask = to_host(head.weight_mask())
    H_dense = weighted(ref.fgn_ref, J, Z, y) + np.diag(L2 * mask + DAMPING)
    expected = np.linalg.solve(H_dense, -(grad + L2 * mask * theta))
    for solver in ("cg", "cholesky"):
        step = fa.fgn_step(lin, DAMPING, l2=L2, solver=solver, rtol=1e-12)
        assert step.converged, solver
        ref.assert_close(step.direction, expected, rtol=1e-9, err_msg=solver)


@pytest.mark.parametrize("kind", ["linear", "two-layer"])
def test_integer_weights_equal_repeated_rows(xp, kind):
    head, theta, X, y, _, rng = _problem(kind, seed=1)
    s = _integer_weights(rng)
    rep = np.repeat(np.arange(N), s.astype(int))
    t = xp.asarray(theta)
    lw = head.linearize(t, xp.asarray(X), xp.asarray(y), xp.asarray(s))
    lr = head.linearize(t, xp.asarray(X[rep]), xp.asarray(y[rep]))
    v = xp.asarray(rng.standard_normal(head.n_params))
    assert lw.loss == pytest.approx(lr.loss, rel=1e-14)
    ref.assert_close(lw.grad, lr.grad, rtol=1e-13)
    for product in (fa.fgn_matvec, fa.ggn_matvec, fa.dropped_matvec):
        ref.assert_close(product(lw, v), product(lr, v), rtol=1e-13, err_msg=product.__name__)
    for e, f in zip(output_covariance(lw), output_covariance(lr)):
        ref.assert_close(np.abs(to_host(e)), np.abs(to_host(f)), rtol=1e-12)
    a, b = fa.fgn_step(lw, DAMPING, l2=L2, solver="cholesky"), fa.fgn_step(lr, DAMPING, l2=L2, solver="cholesky")
    ref.assert_close(a.direction, b.direction, rtol=1e-12)
    assert a.predicted_decrease == pytest.approx(b.predicted_decrease, rel=1e-12)
    a, b = fa.ggn_step(lw, DAMPING, l2=L2, rtol=1e-12), fa.ggn_step(lr, DAMPING, l2=L2, rtol=1e-12)
    ref.assert_close(a.direction, b.direction, rtol=1e-9)


def _gauge(head, theta):
    """Parameters with the output biases centred: softmax ignores a common shift of them (a flat direction)."""
    *rest, b = (to_host(p) for p in head.unflatten(theta))
    return np.concatenate([p.ravel() for p in rest] + [b - b.mean()])


@pytest.mark.parametrize("method", ["fgn", "fgn-compensated", "ggn-pcg"])
def test_fit_with_integer_weights_equals_fit_of_repeated_rows(xp, method):
    head, _, X, y, _, rng = _problem("linear", seed=2)
    s = _integer_weights(rng)
    rep = np.repeat(np.arange(N), s.astype(int))
    theta0 = head.init_params(seed=0, dtype="float64", device="cpu")
    kwargs = dict(method=method, l2=L2, tol=1e-9, max_iter=300)
    weighted = fa.minimize(head, xp.asarray(theta0), xp.asarray(X), xp.asarray(y), sample_weight=xp.asarray(s), **kwargs)
    repeated = fa.minimize(head, xp.asarray(theta0), xp.asarray(X[rep]), xp.asarray(y[rep]), **kwargs)
    assert weighted.converged and repeated.converged
    expected = _gauge(head, repeated.theta)
    np.testing.assert_allclose(_gauge(head, weighted.theta), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert weighted.objective == pytest.approx(repeated.objective, rel=1e-12)


def test_two_layer_fit_with_integer_weights_equals_repeated_rows(xp):
    # the paper's plain FGN on all rows, Cholesky: the same steps, so the same point after a fixed number of steps
    head, _, X, y, _, rng = _problem("two-layer", seed=3)
    s = _integer_weights(rng)
    rep = np.repeat(np.arange(N), s.astype(int))
    theta0 = xp.asarray(head.init_params(seed=0, dtype="float64", device="cpu"))
    kwargs = dict(method="fgn", solver="cholesky", l2=L2, tol=0.0, max_iter=15)
    weighted = fa.minimize(head, theta0, xp.asarray(X), xp.asarray(y), sample_weight=xp.asarray(s), **kwargs)
    repeated = fa.minimize(head, theta0, xp.asarray(X[rep]), xp.asarray(y[rep]), **kwargs)
    expected = _gauge(head, repeated.theta)
    np.testing.assert_allclose(_gauge(head, weighted.theta), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert weighted.history["objective"] == pytest.approx(repeated.history["objective"], rel=1e-10)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_zero_weights_drop_rows(batch_size):
    head, _, X, y, _, rng = _problem("linear", seed=4)
    s = np.ones(N)
    s[[1, 4, 9]] = 0.0
    keep = s > 0
    theta0 = head.init_params(seed=0, dtype="float64")
    kwargs = dict(l2=L2, max_iter=4, batch_size=batch_size, random_state=7)
    weighted = fa.minimize(head, theta0, X, y, sample_weight=s, **kwargs)
    dropped = fa.minimize(head, theta0, X[keep], y[keep], **kwargs)
    np.testing.assert_allclose(weighted.theta, dropped.theta, rtol=1e-12, atol=1e-14)
    assert weighted.objective == pytest.approx(dropped.objective, rel=1e-13)


def test_unit_weights_equal_no_weights():
    head, theta, X, y, _, _ = _problem("two-layer", seed=5)
    lw, lu = head.linearize(theta, X, y, np.full(N, 2.5)), head.linearize(theta, X, y)
    assert lw.loss == pytest.approx(lu.loss, rel=1e-14)
    ref.assert_close(lw.grad, lu.grad, rtol=1e-13)
    ref.assert_close(fa.fgn_step(lw, DAMPING, l2=L2).direction, fa.fgn_step(lu, DAMPING, l2=L2).direction, rtol=1e-9)


@pytest.mark.parametrize(
    "weights, error, match",
    [
        (-np.ones(N), ValueError, r"`sample_weight` must be >= 0; got min -1"),
        (np.r_[np.nan, np.ones(N - 1)], ValueError, r"`sample_weight` must be finite"),
        (np.r_[np.inf, np.ones(N - 1)], ValueError, r"`sample_weight` must be finite"),
        (np.zeros(N), ValueError, r"`sample_weight` must have a positive sum; got 0"),
        (np.ones(N + 1), ValueError, rf"`sample_weight` must have shape \({N},\); got \({N + 1},\)"),
        (np.ones((N, 1)), ValueError, r"`sample_weight` must have shape"),
        (np.ones(N, dtype=bool), TypeError, r"`sample_weight` must hold real numbers"),
        ([1.0] * N, TypeError, r"`sample_weight` must be a numpy.ndarray or cupy.ndarray"),
    ],
)
def test_bad_sample_weight_is_named(weights, error, match):
    head, theta, X, y, _, _ = _problem("linear")
    with pytest.raises(error, match=match):
        head.linearize(theta, X, y, weights)
    with pytest.raises(error, match=match):
        fa.minimize(head, theta, X, y, sample_weight=weights, max_iter=1)


def test_sample_weight_on_another_backend_is_a_type_error():
    from fgn_arrays.testing import use_standin

    head, theta, X, y, _, _ = _problem("linear")
    with use_standin() as sx:
        with pytest.raises(TypeError, match="`sample_weight` must live on the backend"):
            head.linearize(sx.asarray(theta), sx.asarray(X), sx.asarray(y), np.ones(N))
