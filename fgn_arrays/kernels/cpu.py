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


# Classes per chunk of the online logsumexp: 2 KiB of float32, well inside L1.
_CHUNK = 512


@njit(cache=True, inline="always", fastmath=_REDUCE_FLAGS)
def _fold_logsumexp(Z, i, lo, hi, top, s):
    """Fold ``Z[i, lo:hi]`` into the running ``(top, s)``, ``s = sum exp(Z_ik - top)``.

    Chunked online logsumexp: per chunk, its maximum (rescaling ``s`` when the
    running maximum grows), then the sum of exponentials in the input dtype
    (vectorisable), added to ``s`` in float64.
    """
    for start in range(lo, hi, _CHUNK):
        stop = min(start + _CHUNK, hi)
        chunk_top = Z[i, start]
        for k in range(start + 1, stop):
            chunk_top = max(chunk_top, Z[i, k])
        if np.float64(chunk_top) > top:
            s *= math.exp(top - np.float64(chunk_top))  # exp(-inf) = 0 on the first chunk
            top = np.float64(chunk_top)
        top_native = Z.dtype.type(top)  # exact: top is one of the Z_ik
        chunk_sum = Z.dtype.type(0.0)
        for k in range(start, stop):
            chunk_sum += math.exp(Z[i, k] - top_native)
        s += np.float64(chunk_sum)
    return top, s


@njit(parallel=True, cache=True)
def margin_rows(Z, y, margin, loss, prob_true, lse_rest, Q, mode):
    """True-vs-rest margin statistics, and optionally q or u, one row per task.

    Each row is loaded from memory once, in L1-sized chunks; the optional
    write of ``Q`` sweeps the row again with the float64 logsumexp.
    """
    n_samples, n_classes = Z.shape
    for i in prange(n_samples):
        label = y[i]
        # logsumexp over the competitors k != y_i: the classes before the
        # label, then those after it (no mask inside the loops).
        top, s = _fold_logsumexp(Z, i, 0, label, -np.inf, 0.0)
        top, s = _fold_logsumexp(Z, i, label + 1, n_classes, top, s)
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
            # q_ik = exp(Z_ik - lse_rest_i), q_{i,y} = 0;  u_i = e_{y_i} - q_i.
            # The difference is taken in float64 (|Z| up to 1e4), the exp in the input dtype.
            sign = -1.0 if mode == MARGIN_DIRECTION else 1.0
            for k in range(n_classes):
                Q[i, k] = sign * math.exp(Z.dtype.type(np.float64(Z[i, k]) - lse))
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
    """out_i = (diag(p_i) - p_i p_i^T) v_i = p_i ⊙ (v_i - p_i . v_i), without cancellation.

    With k* the row's most probable class, ``d = sum_j p_j (v_k* - v_j)`` is
    summed directly, ``p . v = v_k* - d`` and ``out_k* = p_k* d``: when
    ``p_i`` is nearly one-hot, ``v_k* - p . v`` is never formed by subtraction.
    """
    n_rows, n_cols = P.shape
    for i in prange(n_rows):
        top = 0
        for k in range(1, n_cols):
            if P[i, k] > P[i, top]:
                top = k
        v_top = np.float64(V[i, top])
        d = 0.0
        for k in range(n_cols):
            d += np.float64(P[i, k]) * (v_top - np.float64(V[i, k]))
        pv = v_top - d
        for k in range(n_cols):
            out[i, k] = np.float64(P[i, k]) * (np.float64(V[i, k]) - pv)
        out[i, top] = np.float64(P[i, top]) * d
