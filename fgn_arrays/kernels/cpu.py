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
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

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

# Finite inputs only (validated at the boundary): the chunk loops may assume
# no NaN/inf, which lets LLVM vectorise their max and sum reductions.
_FINITE_FLAGS = {"reassoc", "contract", "nnan", "ninf", "nsz"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)  # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = np.float32(1.4286068203094173e-06)
_EXP_FLOOR = np.float32(-86.0)  # exp(-86) ~ 4.5e-38: float32 normal numbers, n >= -125 below
_F32_EXPONENT_BIAS, _F32_MANTISSA_BITS = 127, 23


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits`` (a free, vectorisable bitcast)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(cache=True, fastmath=_FINITE_FLAGS)
def _exp_nonpositive_f32(x):
    """exp(x) for float32 ``x <= 0``, vectorisable (no libm call); relative error < 4e-7.

    ``x = n ln 2 + r`` with ``|r| <= ln 2 / 2``, ``exp(r)`` by its degree-6
    Taylor polynomial, ``2^n`` built from its bits (biased exponent
    ``n + 127``, exact for the normal range ``n >= -126``). Below -86 the
    result is 0 (exp(-86) ~ 4.5e-38, near float32's smallest normal number;
    subnormals would lose the relative accuracy anyway).
    """
    tiny = x < _EXP_FLOOR
    x = max(x, _EXP_FLOOR)
    n = np.floor(x * _LOG2E + np.float32(0.5))  # float32: no int64 round trip (scalar on AVX2)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    p = p * _f32_from_bits((np.int32(n) + np.int32(_F32_EXPONENT_BIAS)) << np.int32(_F32_MANTISSA_BITS))
    return np.float32(0.0) if tiny else p


@njit(cache=True, fastmath=_FINITE_FLAGS)
def _chunk_max(Z, i, start, stop):
    top = Z[i, start]
    for k in range(start + 1, stop):
        top = max(top, Z[i, k])
    return top


@njit(cache=True, fastmath=_FINITE_FLAGS)
def _chunk_expsum_f32(Z, i, start, stop, top):
    # sum_k exp(Z_ik - top), Z_ik <= top, in float32 with the vectorisable exp
    s = np.float32(0.0)
    for k in range(start, stop):
        s += _exp_nonpositive_f32(Z[i, k] - top)
    return s


@njit(cache=True, fastmath=_FINITE_FLAGS)
def _chunk_expsum_f64(Z, i, start, stop, top):
    # sum_k exp(Z_ik - top) in float64 with libm's exp (full float64 accuracy)
    s = 0.0
    for k in range(start, stop):
        s += math.exp(Z[i, k] - top)
    return s


def _chunk_expsum(Z, i, start, stop, top):
    """sum_k exp(Z_ik - top) over a chunk, in Z's dtype (resolved at compile time below)."""


@overload(_chunk_expsum)
def _chunk_expsum_by_dtype(Z, i, start, stop, top):
    if Z.dtype == types.float32:
        return lambda Z, i, start, stop, top: _chunk_expsum_f32(Z, i, start, stop, np.float32(top))
    return lambda Z, i, start, stop, top: _chunk_expsum_f64(Z, i, start, stop, top)


@njit(cache=True, fastmath=_FINITE_FLAGS)
def _write_competitors_f32(Z, i, lse, Q, sign):
    # Q_ik = sign exp(Z_ik - lse) with the vectorisable float32 exp; the difference
    # in float64 (|Z| up to 1e4). Only the label's entry can be positive: the
    # caller overwrites it.
    for k in range(Z.shape[1]):
        Q[i, k] = np.float32(sign) * _exp_nonpositive_f32(np.float32(min(np.float64(Z[i, k]) - lse, 0.0)))


@njit(cache=True)
def _write_competitors_f64(Z, i, lse, Q, sign):
    for k in range(Z.shape[1]):
        Q[i, k] = sign * math.exp(Z[i, k] - lse)


def _write_competitors(Z, i, lse, Q, sign):
    """Q_ik = sign exp(Z_ik - lse) over row i, in Z's dtype (resolved at compile time below)."""


@overload(_write_competitors)
def _write_competitors_by_dtype(Z, i, lse, Q, sign):
    if Z.dtype == types.float32:
        return lambda Z, i, lse, Q, sign: _write_competitors_f32(Z, i, lse, Q, sign)
    return lambda Z, i, lse, Q, sign: _write_competitors_f64(Z, i, lse, Q, sign)


@njit(cache=True)
def _fold_logsumexp(Z, i, lo, hi, top, s):
    """Fold ``Z[i, lo:hi]`` into the running ``(top, s)``, ``s = sum exp(Z_ik - top)``.

    Chunked online logsumexp: per chunk, its maximum (rescaling ``s`` when the
    running maximum grows), then the sum of exponentials in the input dtype
    (vectorised), added to ``s`` in float64.
    """
    for start in range(lo, hi, _CHUNK):
        stop = min(start + _CHUNK, hi)
        chunk_top = np.float64(_chunk_max(Z, i, start, stop))
        if chunk_top > top:
            s *= math.exp(top - chunk_top)  # exp(-inf) = 0 on the first chunk
            top = chunk_top
        s += np.float64(_chunk_expsum(Z, i, start, stop, top))
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
            _write_competitors(Z, i, lse, Q, -1.0 if mode == MARGIN_DIRECTION else 1.0)
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


@njit(parallel=True, cache=True, fastmath=_REDUCE_FLAGS)
def subspace_rows(U, r, y, A, B, out):
    """Each row's share of the softmax cross-entropy's slope and GGN along two logit directions.

    With ``w = -r_i = 1 - p_i``, ``q_ik = -U_ik`` (the label's term drops out
    below) and the directions shifted by their label entry,
    ``a_k = A_ik - A_{i,y}``, ``b_k = B_ik - B_{i,y}``::

        s_a = sum_k q_k a_k,  s_aa = sum_k q_k a_k^2,  s_ab = ...,  s_bb = ...
        out_i = [w s_a, w s_b, w (s_aa - w s_a^2), w (s_ab - w s_a s_b), w (s_bb - w s_b^2)]

    ``w s_a = (softmax_i - e_y) . A_i`` and ``w (s_aa - w s_a^2)`` is the
    softmax variance of ``A_i`` (shifting by the label entry, where the
    softmax is ``p_i``, leaves the variance unchanged and keeps the terms
    small when ``p_i -> 1``). Accumulated in float64.
    """
    n_rows, n_cols = U.shape
    for i in prange(n_rows):
        label = y[i]
        a_y = np.float64(A[i, label])
        b_y = np.float64(B[i, label])
        sa = sb = saa = sab = sbb = 0.0
        for k in range(n_cols):
            q = -np.float64(U[i, k])
            a = np.float64(A[i, k]) - a_y
            b = np.float64(B[i, k]) - b_y
            sa += q * a
            sb += q * b
            saa += q * a * a
            sab += q * a * b
            sbb += q * b * b
        w = -np.float64(r[i])
        out[i, 0] = w * sa
        out[i, 1] = w * sb
        out[i, 2] = w * (saa - w * sa * sa)
        out[i, 3] = w * (sab - w * sa * sb)
        out[i, 4] = w * (sbb - w * sb * sb)


# ---- Hidden-layer activations (TwoLayerHead) ---------------------------------

# Which phi `activation_rows` applies (`kernels.ACTIVATIONS` maps names to codes).
TANH, RELU, GELU = 0, 1, 2

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, inline="always")
def activation_value(x, code):
    """``(phi(x), phi'(x))`` of one float64 ``x``; also compiled for CUDA (``kernels.cuda``).

    tanh: with ``e = expm1(-2|x|)``, ``tanh|x| = -e / (2 + e)`` and
    ``tanh'(x) = 1 - tanh^2 x = 4 exp(-2|x|) / (2 + e)^2``: no cancellation
    near 0, and ``tanh'`` keeps its relative accuracy at large ``|x|``
    (``1 - tanh^2`` would round to 0 beyond ``|x| ~ 19``).
    relu: ``max(x, 0)``, and ``relu'(x) = 1`` for ``x > 0``, else 0 (``relu'(0) = 0``).
    gelu (exact): ``x Phi(x)`` and ``Phi(x) + x phi(x)``, with
    ``Phi(x) = erfc(-x / sqrt 2) / 2`` (accurate in the left tail too).
    """
    if code == TANH:
        e = math.expm1(-2.0 * abs(x))
        t = -e / (2.0 + e)
        return (t if x >= 0.0 else -t), 4.0 * math.exp(-2.0 * abs(x)) / ((2.0 + e) * (2.0 + e))
    if code == RELU:
        if x > 0.0:
            return x, 1.0
        return 0.0, 0.0
    cdf = 0.5 * math.erfc(-x * _SQRT_HALF)
    return x * cdf, cdf + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@njit(parallel=True, cache=True)
def activation_rows(H, shift, code, a, dphi):
    """a_ij = phi(H_ij + shift_j), dphi_ij = phi'(H_ij + shift_j), in one pass.

    Computed in float64, stored in the outputs' dtype; ``a`` may be ``H``
    itself (each entry is read before it is written).
    """
    n_rows, n_cols = H.shape
    for i in prange(n_rows):
        for j in range(n_cols):
            f, d = activation_value(np.float64(H[i, j]) + np.float64(shift[j]), code)
            a[i, j] = f
            dphi[i, j] = d
