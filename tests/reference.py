"""Dense float64 references for the tests, written from the math of docs/derivation.md alone.

Conventions
-----------
Everything here is plain NumPy/SciPy in float64 and shares no code with
``fgn_arrays`` (the package is never imported). Sizes in the tests are tiny, so
the references favour the obvious construction over speed: per-example loops,
explicit ``(N, C, P)`` logit Jacobians built entry by entry, explicit ``C x C``
covariance matrices. Shapes: ``X (N, D)``, ``y (N,)``, ``Z (N, C)``,
``theta (P,)``, logit Jacobian ``Jz (N, C, P)``, margin Jacobian ``J (N, P)``.
Curvature matrices are mean-scaled ``(P, P)``, without l2 or damping.

Parameter layouts (row-major, concatenated in this order):

- linear head: ``theta = [W (C, D), b (C)]``, ``Z = X W^T + b``;
- two-layer head: ``theta = [W1 (H, D), b1 (H), W2 (C, H), b2 (C)]``,
  ``h = X W1^T + b1``, ``a = phi(h)``, ``Z = a W2^T + b2``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "assert_close",
    "competitor_probs_ref",
    "cross_entropy_ref",
    "dropped_direct_ref",
    "dropped_ref",
    "fd_jacobian",
    "fgn_ref",
    "ggn_ref",
    "linear_logit_jacobian_ref",
    "linear_logits_ref",
    "linear_unflatten_ref",
    "margin_jacobian_ref",
    "margin_ref",
    "matrix_of",
    "random_linear_problem",
    "residual_ref",
    "softmax_ref",
    "two_layer_logit_jacobian_fd_ref",
    "two_layer_logit_jacobian_ref",
    "two_layer_logits_ref",
    "two_layer_unflatten_ref",
]


# --------------------------------------------------------------------------
# Assertions and problem generators
# --------------------------------------------------------------------------


def _host(x):
    """``x`` as a float64 NumPy array (copies CuPy and stand-in device arrays to the host)."""
    if hasattr(x, "get") and not isinstance(x, np.ndarray):
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, rtol=1e-12, scale=None, err_msg=""):
    """Entry-wise ``|actual - expected| <= rtol * (|expected| + scale)``.

    ``scale`` defaults to ``max |expected|`` (1 when that is 0), so entries much
    smaller than the largest one are compared on the scale of the whole array
    rather than on their own, which is what summation error allows. The shapes
    must match exactly and every entry must be finite.
    """
    a = _host(actual)
    e = _host(expected)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}. {err_msg}"
    assert np.all(np.isfinite(a)), f"non-finite entries in actual. {err_msg}"
    if scale is None:
        scale = float(np.max(np.abs(e))) if e.size else 1.0
        scale = scale if scale > 0 else 1.0
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def random_linear_problem(n_samples, n_features, n_classes, seed=0, scale=1.0):
    """Random ``(theta, X, y)`` for the linear head with logits of size ~``scale``.

    Biases are non-zero on purpose (``init_params`` gives zero biases, which
    would hide a bias-layout bug).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W = rng.standard_normal((n_classes, n_features)) * (scale / math.sqrt(n_features + 1))
    b = rng.standard_normal(n_classes) * (scale / math.sqrt(n_features + 1))
    theta = np.concatenate([W.ravel(), b])
    y = rng.integers(0, n_classes, size=n_samples)
    return theta, X, y


def matrix_of(matvec, n, dtype=np.float64):
    """Dense ``(n, n)`` matrix of a linear map, column ``j`` = ``matvec(e_j)``."""
    cols = []
    for j in range(n):
        e = np.zeros(n, dtype=dtype)
        e[j] = 1.0
        cols.append(_host(matvec(e)))
    return np.stack(cols, axis=1)


def fd_jacobian(f, theta, eps=1e-6):
    """Central-difference Jacobian of ``f`` at ``theta``, shape ``f(theta).shape + (P,)``.

    ``(f(theta + eps e_j) - f(theta - eps e_j)) / (2 eps)``, in float64;
    truncation error O(eps^2), rounding error O(1e-16 / eps).
    """
    theta = np.asarray(theta, dtype=np.float64)
    out_shape = np.shape(f(theta))
    jac = np.empty(out_shape + (theta.size,))
    for j in range(theta.size):
        tp = theta.copy()
        tm = theta.copy()
        tp[j] += eps
        tm[j] -= eps
        f_plus = np.asarray(f(tp), dtype=np.float64)
        f_minus = np.asarray(f(tm), dtype=np.float64)
        jac[..., j] = (f_plus - f_minus) / (2.0 * eps)
    return jac


# --------------------------------------------------------------------------
# Softmax and the true-vs-rest margin
# --------------------------------------------------------------------------


def softmax_ref(Z):
    """Row-wise softmax, shifted by the row maximum."""
    Z = np.asarray(Z, dtype=np.float64)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def cross_entropy_ref(Z, y):
    """Per-example softmax cross-entropy ``-log softmax(Z_i)[y_i]``, via the full logsumexp.

    Independent of :func:`margin_ref` (no margin, no competitor set): used to
    cross-check that ``softplus(-m)`` is exactly the cross-entropy.
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    return special.logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), y]


def margin_ref(Z, y):
    """True-vs-rest margin statistics, one example at a time.

    lse_rest_i = logsumexp_{k != y_i} Z_ik,   m_i = Z_{i, y_i} - lse_rest_i,
    loss_i = softplus(-m_i),                  p_i = sigmoid(m_i).

    Returns
    -------
    dict with keys ``margin``, ``loss``, ``prob_true``, ``lse_rest``, each ``(N,)``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    N, C = Z.shape
    lse_rest = np.empty(N)
    for i in range(N):
        mask = np.arange(C) != y[i]
        lse_rest[i] = special.logsumexp(Z[i, mask])
    margin = Z[np.arange(N), y] - lse_rest
    # softplus(-m) = log(1 + exp(-m)) = logaddexp(0, -m), stable for |m| large.
    loss = np.logaddexp(0.0, -margin)
    prob_true = special.expit(margin)
    return {"margin": margin, "loss": loss, "prob_true": prob_true, "lse_rest": lse_rest}


def _true_and_rest_probs(Z, y):
    """``p_i = softmax(Z_i)[y_i]`` and ``1 - p_i``, the latter summed over the
    competitors' softmax probabilities (accurate when ``p_i -> 1``)."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    P_hat = softmax_ref(Z)
    rows = np.arange(Z.shape[0])
    p = P_hat[rows, y]
    rest = np.array([math.fsum(np.delete(P_hat[i], y[i])) for i in rows])
    return p, rest


def residual_ref(Z, y):
    """``r_i = -(1 - p_i)``, with ``1 - p_i`` summed over the competitors."""
    return -_true_and_rest_probs(Z, y)[1]


def competitor_probs_ref(Z, y):
    """``q_ik = exp(Z_ik - lse_rest_i)`` for ``k != y_i``, ``q_{i, y_i} = 0``; shape ``(N, C)``."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    N, C = Z.shape
    Q = np.zeros((N, C))
    for i in range(N):
        mask = np.arange(C) != y[i]
        Q[i, mask] = special.softmax(Z[i, mask])
    return Q


# --------------------------------------------------------------------------
# Linear head
# --------------------------------------------------------------------------


def linear_unflatten_ref(theta, n_features, n_classes):
    """``(W (C, D), b (C,))`` copies from the row-major layout ``[W, b]``."""
    theta = np.asarray(theta, dtype=np.float64)
    D, C = n_features, n_classes
    assert theta.shape == (C * D + C,)
    W = np.empty((C, D))
    for c in range(C):
        for d in range(D):
            W[c, d] = theta[c * D + d]
    b = np.array([theta[C * D + c] for c in range(C)])
    return W, b


def linear_logits_ref(theta, X, C):
    """``Z_ic = sum_d W_cd x_id + b_c``, summed with ``math.fsum`` (correctly rounded)."""
    X = np.asarray(X, dtype=np.float64)
    N, D = X.shape
    W, b = linear_unflatten_ref(theta, D, C)
    Z = np.empty((N, C))
    for i in range(N):
        for c in range(C):
            Z[i, c] = math.fsum([W[c, d] * X[i, d] for d in range(D)] + [b[c]])
    return Z


def linear_logit_jacobian_ref(theta, X, C):
    """Explicit ``Jz (N, C, P)``: ``dZ_ic / dW_cd = x_id``, ``dZ_ic / db_c = 1``, else 0.

    ``theta`` only fixes ``P`` (the linear head's logits are linear in theta).
    """
    X = np.asarray(X, dtype=np.float64)
    N, D = X.shape
    P = C * D + C
    assert np.asarray(theta).shape == (P,)
    Jz = np.zeros((N, C, P))
    for i in range(N):
        for c in range(C):
            for d in range(D):
                Jz[i, c, c * D + d] = X[i, d]
            Jz[i, c, C * D + c] = 1.0
    return Jz


def margin_jacobian_ref(Jz, Z, y):
    """Margin Jacobian ``J (N, P)``, ``J_i = u_i^T Jz_i`` with ``u_i = e_{y_i} - q_i``."""
    Jz = np.asarray(Jz, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y)
    N, C, P = Jz.shape
    Q = competitor_probs_ref(Z, y)
    J = np.empty((N, P))
    for i in range(N):
        u = -Q[i].copy()
        u[y[i]] += 1.0
        J[i] = u @ Jz[i]
    return J


# --------------------------------------------------------------------------
# Curvature matrices (mean-scaled, no l2, no damping)
# --------------------------------------------------------------------------


def ggn_ref(Jz, Z):
    """``G_GGN = (1/N) sum_i Jz_i^T (diag(p_i) - p_i p_i^T) Jz_i`` with ``p_i = softmax(Z_i)``."""
    Jz = np.asarray(Jz, dtype=np.float64)
    N, C, P = Jz.shape
    Phat = softmax_ref(Z)
    G = np.zeros((P, P))
    for i in range(N):
        p = Phat[i]
        H = -np.outer(p, p)
        # diagonal p_k - p_k^2 = p_k (1 - p_k), with 1 - p_k = sum_{j != k} p_j
        # (no cancellation when p_k -> 1)
        for k in range(C):
            H[k, k] = p[k] * math.fsum(p[j] for j in range(C) if j != k)
        G += Jz[i].T @ H @ Jz[i]
    return G / N


def fgn_ref(J, Z, y):
    """``G_FGN = (1/N) sum_i w_i J_i^T J_i``, ``w_i = p_i (1 - p_i)``.

    ``p_i = softmax(Z_i)[y_i]``; ``1 - p_i`` is summed over the competitors.
    """
    J = np.asarray(J, dtype=np.float64)
    N, P = J.shape
    p, one_minus_p = _true_and_rest_probs(Z, y)
    w = p * one_minus_p
    G = np.zeros((P, P))
    for i in range(N):
        G += w[i] * np.outer(J[i], J[i])
    return G / N


def dropped_ref(Jz, Z, y):
    """``G_dropped = G_GGN - G_FGN`` (by definition)."""
    J = margin_jacobian_ref(Jz, Z, y)
    return ggn_ref(Jz, Z) - fgn_ref(J, Z, y)


def dropped_direct_ref(Jz, Z, y):
    """``(1/N) sum_i (1 - p_i) Jz_i^T (diag(q_i) - q_i q_i^T) Jz_i`` (DESIGN §1 closed form).

    Equal to :func:`dropped_ref` by the law of total covariance; the tests check it.
    """
    Jz = np.asarray(Jz, dtype=np.float64)
    N, C, P = Jz.shape
    Q = competitor_probs_ref(Z, y)
    _, one_minus_p = _true_and_rest_probs(Z, y)
    G = np.zeros((P, P))
    for i in range(N):
        q = Q[i]
        G += one_minus_p[i] * (Jz[i].T @ (np.diag(q) - np.outer(q, q)) @ Jz[i])
    return G / N


# --------------------------------------------------------------------------
# Two-layer head (kept for the two-layer tests)
# --------------------------------------------------------------------------


def _phi(h, activation):
    if activation == "tanh":
        return np.tanh(h)
    if activation == "relu":
        return np.maximum(h, 0.0)
    if activation == "gelu":
        # exact GELU: h * Phi(h), Phi the standard normal CDF
        return h * 0.5 * (1.0 + special.erf(h / math.sqrt(2.0)))
    raise ValueError(f"unknown activation {activation!r}")


def _phi_prime(h, activation):
    if activation == "tanh":
        return 1.0 - np.tanh(h) ** 2
    if activation == "relu":
        return (h > 0).astype(np.float64)
    if activation == "gelu":
        # d/dh [h Phi(h)] = Phi(h) + h phi(h), phi the standard normal density
        cdf = 0.5 * (1.0 + special.erf(h / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
        return cdf + h * pdf
    raise ValueError(f"unknown activation {activation!r}")


def two_layer_unflatten_ref(theta, n_features, n_hidden, n_classes):
    """``(W1 (H, D), b1 (H,), W2 (C, H), b2 (C,))`` copies from ``[W1, b1, W2, b2]``."""
    theta = np.asarray(theta, dtype=np.float64)
    D, H, C = n_features, n_hidden, n_classes
    sizes = [H * D, H, C * H, C]
    assert theta.shape == (sum(sizes),)
    offsets = np.cumsum([0] + sizes)
    W1 = theta[offsets[0] : offsets[1]].reshape(H, D).copy()
    b1 = theta[offsets[1] : offsets[2]].copy()
    W2 = theta[offsets[2] : offsets[3]].reshape(C, H).copy()
    b2 = theta[offsets[3] : offsets[4]].copy()
    return W1, b1, W2, b2


def two_layer_logits_ref(theta, X, H, C, activation):
    """``Z = phi(X W1^T + b1) W2^T + b2`` in float64."""
    X = np.asarray(X, dtype=np.float64)
    W1, b1, W2, b2 = two_layer_unflatten_ref(theta, X.shape[1], H, C)
    a = _phi(X @ W1.T + b1, activation)
    return a @ W2.T + b2


def two_layer_logit_jacobian_fd_ref(theta, X, H, C, activation, eps=1e-6):
    """``Jz (N, C, P)`` by central differences of :func:`two_layer_logits_ref`.

    For relu keep pre-activations away from 0 (the kink) by more than ``eps``.
    """
    return fd_jacobian(lambda t: two_layer_logits_ref(t, X, H, C, activation), theta, eps)


def two_layer_logit_jacobian_ref(theta, X, H, C, activation):
    """``Jz (N, C, P)`` from the hand formula, entry by entry.

    dZ_ic/dW2_{c,j} = a_ij,  dZ_ic/db2_c = 1,
    dZ_ic/dW1_{j,d} = W2_{c,j} phi'(h_ij) x_id,  dZ_ic/db1_j = W2_{c,j} phi'(h_ij).
    relu'(0) is taken as 0.
    """
    X = np.asarray(X, dtype=np.float64)
    N, D = X.shape
    W1, b1, W2, b2 = two_layer_unflatten_ref(theta, D, H, C)
    h = X @ W1.T + b1
    a = _phi(h, activation)
    dphi = _phi_prime(h, activation)
    o_W1, o_b1 = 0, H * D
    o_W2 = o_b1 + H
    o_b2 = o_W2 + C * H
    P = o_b2 + C
    Jz = np.zeros((N, C, P))
    for i in range(N):
        for c in range(C):
            for j in range(H):
                Jz[i, c, o_W2 + c * H + j] = a[i, j]
                s = W2[c, j] * dphi[i, j]
                for d in range(D):
                    Jz[i, c, o_W1 + j * D + d] = s * X[i, d]
                Jz[i, c, o_b1 + j] = s
            Jz[i, c, o_b2 + c] = 1.0
    return Jz


def random_two_layer_problem(n_samples, n_features, n_hidden, n_classes, seed=0, scale=1.0, kink_gap=1e-3):
    """Random ``(theta, X, y)`` for the two-layer head.

    Pre-activations ``h = X W1^T + b1`` are of size ~1.5 (inside tanh's and
    gelu's curved range) and logits of size ~``scale``; all biases are
    non-zero. Every ``|h_ij|`` is kept above ``kink_gap`` (``b1_j`` is moved
    in steps of ``2 kink_gap`` until it is), so that central differences with
    ``eps < kink_gap`` never straddle relu's kink.
    """
    rng = np.random.default_rng(seed)
    N, D, H, C = n_samples, n_features, n_hidden, n_classes
    X = rng.standard_normal((N, D))
    W1 = rng.standard_normal((H, D)) * (1.5 / math.sqrt(D + 1))
    b1 = rng.standard_normal(H) * (1.5 / math.sqrt(D + 1))
    W2 = rng.standard_normal((C, H)) * (scale / math.sqrt(H + 1))
    b2 = rng.standard_normal(C) * (scale / math.sqrt(H + 1))
    for j in range(H):
        while np.min(np.abs(X @ W1[j] + b1[j])) <= kink_gap:
            b1[j] += 2.0 * kink_gap
    theta = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    y = rng.integers(0, C, size=N)
    return theta, X, y


def two_layer_weight_mask_ref(n_features, n_hidden, n_classes):
    """0/1 ``(P,)`` mask of ``W1`` and ``W2`` in ``[W1, b1, W2, b2]``."""
    D, H, C = n_features, n_hidden, n_classes
    return np.concatenate([np.ones(H * D), np.zeros(H), np.ones(C * H), np.zeros(C)])


__all__ += ["random_two_layer_problem", "two_layer_weight_mask_ref"]
