"""CPU kernels: Numba ``@njit(parallel=True, cache=True)``, one row per task.

Conventions
-----------
Arguments are C-contiguous NumPy arrays; ``Z`` is ``(N, C)`` float32 or
float64, ``y`` is ``(N,)`` int64. Outputs are preallocated by the caller in
``Z.dtype``; every per-row reduction accumulates in float64. Only per-row work
lives here: dense products go to BLAS through NumPy.
"""

import math

import numpy as np
from numba import njit, prange

# Reductions may be reassociated (vectorised); no assumption about NaN/inf.
_REDUCE_FLAGS = {"reassoc", "contract"}


@njit(cache=True, inline="always")
def _softplus(x):
    # softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


# What `margin_rows` writes into `Q`: nothing, q_i, or u_i = e_{y_i} - q_i.
NO_COMPETITORS, COMPETITOR_PROBS, MARGIN_DIRECTION = 0, 1, 2


@njit(parallel=True, cache=True)
def margin_rows(Z, y, margin, loss, prob_true, lse_rest, Q, mode):
    """True-vs-rest margin statistics, and optionally q or u, one row per task.

    Each row is read from memory once; the optional write of ``Q`` sweeps the
    row again while it is in cache, with the float64 logsumexp.
    """
    n_samples, n_classes = Z.shape
    for i in prange(n_samples):
        label = y[i]
        # Online logsumexp over the competitors k != y_i: keep the running
        # maximum `top` and s = sum_k exp(Z_ik - top), rescaled when top grows.
        top = -np.inf
        s = 0.0
        for k in range(n_classes):
            if k == label:
                continue
            z = np.float64(Z[i, k])
            if z > top:
                s = s * math.exp(top - z) + 1.0
                top = z
            else:
                s += math.exp(z - top)
        lse = top + math.log(s)
        # m_i = Z_{i,y} - logsumexp_{k != y} Z_ik
        m = np.float64(Z[i, label]) - lse
        lse_rest[i] = lse
        margin[i] = m
        # loss_i = softplus(-m_i);  p_i = sigmoid(m_i) = exp(-softplus(-m_i))
        sp = _softplus(-m)
        loss[i] = sp
        prob_true[i] = math.exp(-sp)
        if mode != NO_COMPETITORS:
            # q_ik = exp(Z_ik - lse_rest_i), q_{i,y} = 0;  u_i = e_{y_i} - q_i
            sign = -1.0 if mode == MARGIN_DIRECTION else 1.0
            for k in range(n_classes):
                Q[i, k] = sign * math.exp(np.float64(Z[i, k]) - lse)
            Q[i, label] = 1.0 if mode == MARGIN_DIRECTION else 0.0


@njit(parallel=True, cache=True, fastmath=_REDUCE_FLAGS)
def row_dot(A, B, shift, out):
    """out_i = sum_k A_ik (B_ik + shift_k)."""
    n_rows, n_cols = A.shape
    for i in prange(n_rows):
        s = 0.0
        for k in range(n_cols):
            s += np.float64(A[i, k]) * (np.float64(B[i, k]) + np.float64(shift[k]))
        out[i] = s


@njit(parallel=True, cache=True)
def scale_rows(A, a, out):
    """out_ik = a_i A_ik."""
    n_rows, n_cols = A.shape
    for i in prange(n_rows):
        for k in range(n_cols):
            out[i, k] = a[i] * A[i, k]


@njit(parallel=True, cache=True, fastmath=_REDUCE_FLAGS)
def softmax_cov_rows(P, V, out):
    """out_i = p_i * v_i - p_i (p_i . v_i): row i of the softmax covariance applied to V."""
    n_rows, n_cols = P.shape
    for i in prange(n_rows):
        pv = 0.0
        for k in range(n_cols):
            pv += np.float64(P[i, k]) * np.float64(V[i, k])
        for k in range(n_cols):
            out[i, k] = P[i, k] * (V[i, k] - pv)
