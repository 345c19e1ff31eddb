"""The true-vs-rest margin map against an independent float64 reference."""

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, logsumexp

import fgn_arrays as fa


def reference(Z, y):
    """float64 margin statistics straight from the definitions (SciPy, masked rows)."""
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[0]
    rows = np.arange(n)
    masked = Z.copy()
    masked[rows, y] = -np.inf
    lse_rest = logsumexp(masked, axis=1)
    margin = Z[rows, y] - lse_rest
    # -log softmax(Z)[y] = lse_all - Z_y cancels for confident rows (loss ~ 1e-14),
    # so the reference loss is log(1 + exp(-m)) through NumPy's logaddexp.
    loss = np.logaddexp(0.0, -margin)
    Q = np.exp(masked - lse_rest[:, None])
    return dict(margin=margin, loss=loss, prob_true=np.exp(-loss), lse_rest=lse_rest, Q=Q)


def random_problem(rng, n, c, scale, dtype):
    Z = (scale * rng.standard_normal((n, c))).astype(dtype)
    y = rng.integers(0, c, size=n)
    return Z, y


# Relative tolerance per output dtype: float64 is limited by the reference's own
# rounding; float32 outputs carry one float32 rounding of a float64 result.
RTOL = {np.float64: 1e-12, np.float32: 2e-6}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4])
@pytest.mark.parametrize("shape", [(1, 2), (7, 3), (64, 1000)])
def test_margin_stats_matches_reference(xp, dtype, scale, shape):
    rng = np.random.default_rng(0)
    Z, y = random_problem(rng, *shape, scale, dtype)
    st_ = fa.margin_stats(xp.asarray(Z), xp.asarray(y))
    # The reference sees exactly the same (possibly float32-rounded) logits.
    ref = reference(Z, y)
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        got = to_host(getattr(st_, name))
        assert got.dtype == dtype, name
        assert np.all(np.isfinite(got)), name
        # Entries at the bottom of float32's range (p ~ 1e-30) are judged absolutely.
        atol = 1e-300 if dtype == np.float64 else 1e-37
        np.testing.assert_allclose(got, ref[name], rtol=RTOL[dtype], atol=atol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_are_finite_and_exact(xp, dtype):
    # |Z| = 1e4: a correct row (m = 2e4 - log 2), a badly wrong row (m = -2e4), a tie (m = 0).
    Z = np.array([[1e4, -1e4, -1e4], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([0, 0, 1])
    st_ = fa.margin_stats(xp.asarray(Z), xp.asarray(y))
    m, loss, p = (to_host(a) for a in (st_.margin, st_.loss, st_.prob_true))
    np.testing.assert_allclose(m, [2e4 - np.log(2.0), -2e4, 0.0], rtol=1e-6, atol=0)
    np.testing.assert_allclose(loss, [0.0, 2e4, np.log(2.0)], rtol=1e-6, atol=0)
    np.testing.assert_allclose(p, [1.0, 0.0, 0.5], rtol=1e-6, atol=0)


def test_single_pass_identities():
    rng = np.random.default_rng(1)
    Z, y = random_problem(rng, 50, 9, 3.0, np.float64)
    st_ = fa.margin_stats(Z, y)
    # The margin form is exactly the softmax cross-entropy and probability.
    log_p = log_softmax(Z, axis=1)[np.arange(50), y]
    np.testing.assert_allclose(st_.loss, -log_p, rtol=1e-12)
    np.testing.assert_allclose(st_.prob_true, np.exp(log_p), rtol=1e-12)
    # loss = softplus(-m), p = sigmoid(m): the margin carries all of the loss.
    np.testing.assert_allclose(st_.loss, np.logaddexp(0, -st_.margin), rtol=1e-13)
    np.testing.assert_allclose(st_.prob_true, 1 / (1 + np.exp(-st_.margin)), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_competitor_probs(xp, dtype):
    rng = np.random.default_rng(2)
    Z, y = random_problem(rng, 20, 6, 5.0, dtype)
    Q = to_host(fa.competitor_probs(xp.asarray(Z), xp.asarray(y)))
    ref = reference(Z, y)["Q"]
    assert Q.dtype == dtype
    assert np.all(Q[np.arange(20), y] == 0)
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(Q, ref, rtol=RTOL[dtype], atol=1e-30)
    # softmax(Z_i) = p_i e_y + (1 - p_i) q_i
    p = reference(Z, y)["prob_true"]
    P = (1 - p)[:, None] * Q
    P[np.arange(20), y] = p
    np.testing.assert_allclose(P, np.exp(log_softmax(Z.astype(np.float64), axis=1)), rtol=RTOL[dtype] * 10)


def test_float32_relative_error_against_float64():
    # float32 in, float32 out, ~1e-5 relative to the float64 computation on float64 logits.
    rng = np.random.default_rng(3)
    Z64, y = random_problem(rng, 256, 100, 10.0, np.float64)
    st32 = fa.margin_stats(Z64.astype(np.float32), y)
    st64 = fa.margin_stats(Z64, y)
    assert st32.loss.dtype == np.float32
    np.testing.assert_allclose(st32.loss, st64.loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st32.margin, st64.margin, rtol=1e-5, atol=1e-5)


def test_integer_logits_are_read_as_float64():
    st_ = fa.margin_stats(np.array([[2, 0, 0]]), np.array([0]))
    assert st_.margin.dtype == np.float64
    np.testing.assert_allclose(st_.margin, [2 - np.log(2)], rtol=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    c=st.integers(2, 40),
    scale=st.sampled_from([1e-6, 1.0, 50.0, 1e3, 1e4]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_property_against_reference(n, c, scale, seed, dtype):
    rng = np.random.default_rng(seed)
    Z, y = random_problem(rng, n, c, scale, dtype)
    st_ = fa.margin_stats(Z, y)
    ref = reference(Z, y)
    assert all(np.all(np.isfinite(getattr(st_, k))) for k in ("margin", "loss", "prob_true", "lse_rest"))
    np.testing.assert_allclose(st_.margin, ref["margin"], rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
    np.testing.assert_allclose(st_.loss, ref["loss"], rtol=RTOL[dtype] * 10, atol=1e-37)
    assert np.all((st_.prob_true >= 0) & (st_.prob_true <= 1))
    Q = fa.competitor_probs(Z, y)
    # exp(Z - lse_rest) carries lse_rest's rounding, eps * |Z| (found by hypothesis at scale 1e4: 1.4e-12)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=(1e-5 if dtype == np.float32 else 1e-12) + 10 * eps * scale)


@pytest.mark.parametrize(
    "logits, labels, exc, match",
    [
        (np.zeros((3, 1)), np.zeros(3, dtype=int), ValueError, r"n_classes >= 2 columns; got 1"),
        (np.zeros(3), np.zeros(3, dtype=int), ValueError, r"`logits` must be 2-D"),
        (np.zeros((3, 4)), np.zeros(2, dtype=int), ValueError, r"`labels` must have shape \(3,\); got \(2,\)"),
        (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"`labels` must be integers in \[0, 4\); got max 4"),
        (np.zeros((3, 4)), np.array([0, -1, 2]), ValueError, r"got min -1"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, r"`labels` must be integers; got dtype float64"),
        (np.zeros((3, 4)), np.array([True, False, True]), TypeError, r"`labels` must be integers"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), ValueError, r"`logits` must be finite; got 1"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), np.array([0, 1]), ValueError, r"`logits` must be finite"),
        (np.zeros((2, 3), dtype=np.float16), np.array([0, 1]), TypeError, r"float32 or float64; got float16"),
        (np.zeros((2, 3), dtype=complex), np.array([0, 1]), TypeError, r"`logits` must hold real numbers"),
        ([[0.0, 1.0]], np.array([0]), TypeError, r"`logits` must be a numpy.ndarray or cupy.ndarray; got builtins.list"),
    ],
)
def test_bad_inputs(logits, labels, exc, match):
    with pytest.raises(exc, match=match):
        fa.margin_stats(logits, labels)
    with pytest.raises(exc, match=match):
        fa.competitor_probs(logits, labels)


def test_float32_competitor_probs_over_the_whole_exponent_range():
    # One row with the label's logit at 0 and competitors from 0 down to -100: q_k = exp(Z_k - lse)
    # through the vectorised float32 exp keeps its relative accuracy down to exp(-86) ~ 4.5e-38
    # (near float32's smallest normal number); below that it flushes to 0.
    C = 2001
    Z = np.zeros((1, C), np.float32)
    Z[0, 1:] = np.linspace(0.0, -100.0, C - 1, dtype=np.float32)
    y = np.array([0])
    Q = fa.competitor_probs(Z, y)[0]
    d = Z[0, 1:].astype(np.float64) - logsumexp(Z[0, 1:].astype(np.float64))
    ref = np.exp(d)
    normal = d >= -86.0
    assert normal.sum() > 1500 and (~normal).sum() > 200
    # The exponent is rounded to float32 first: |d| 2^-24 relative, plus the exp's own 4e-7.
    rel = np.abs(Q[1:][normal] / ref[normal] - 1)
    assert np.all(rel <= 4e-7 + 1.5 * np.abs(d[normal]) * 2.0**-24), rel.max()
    assert np.all(Q[1:][~normal] == 0.0)
    assert Q[0] == 0.0
