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


@njit(cache=True, inline="always")
def margin_values(z_label, lse_rest):
    """``(m, loss, p)`` of a row from its label's logit and ``lse_rest``; also compiled for CUDA."""
    # m_i = Z_{i,y} - logsumexp_{k != y} Z_ik
    m = z_label - lse_rest
    # loss_i = softplus(-m_i);  p_i = sigmoid(m_i) = exp(-softplus(-m_i))
    sp = _softplus(-m)
    return m, sp, math.exp(-sp)


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
        lse_rest[i] = lse
        margin[i], loss[i], prob_true[i] = margin_values(np.float64(Z[i, label]), lse)
        if mode != NO_COMPETITORS:
            # q_ik = exp(Z_ik - lse_rest_i), q_{i,y} = 0;  u_i = e_{y_i} - q_i.
            _write_competitors(Z, i, lse, Q, -1.0 if mode == MARGIN_DIRECTION else 1.0)
            Q[i, label] = 1.0 if mode == MARGIN_DIRECTION else 0.0


# Per-row formulas shared with kernels.cuda (compiled there as device
# functions). Each reads the columns k in range(first, stop, step) of row i:
# the CPU kernels pass (0, C, 1), the whole row; a GPU lane passes
# (lane, C, lanes), and the lanes' results are then summed (or, for a
# maximum, merged). Inlined into the CPU kernels, under their fastmath flags.
# `stop` is an argument, not read from the array's shape inside: in a prange
# body a shape read there keeps LLVM from vectorising the row's other loops
# (softmax_cov_rows ran 1.3-1.7x slower).


@njit(cache=True, inline="always")
def row_dot_partial(A, B, shift, i, first, stop, step):
    """``sum_k A_ik (B_ik + shift_k)`` over ``k`` in ``range(first, stop, step)``, in float64."""
    s = 0.0
    for k in range(first, stop, step):
        s += np.float64(A[i, k]) * (np.float64(B[i, k]) + np.float64(shift[k]))
    return s


@njit(parallel=True, cache=True, fastmath=_REDUCE_FLAGS)
def row_dot(A, B, shift, out):
    """out_i = sum_k A_ik (B_ik + shift_k)."""
    n_rows, n_cols = A.shape
    for i in prange(n_rows):
        out[i] = row_dot_partial(A, B, shift, i, 0, n_cols, 1)


@njit(parallel=True, cache=True)
def scale_rows(A, a, out):
    """out_ik = a_i A_ik."""
    n_rows, n_cols = A.shape
    for i in prange(n_rows):
        for k in range(n_cols):
            out[i, k] = a[i] * A[i, k]


@njit(cache=True, inline="always")
def argmax_partial(P, i, first, stop, step):
    """The first ``k`` of the largest ``P_ik`` over ``k`` in ``range(first, stop, step)`` (``first`` if empty)."""
    top = first
    for k in range(first + step, stop, step):
        if P[i, k] > P[i, top]:
            top = k
    return top


@njit(cache=True, inline="always")
def softmax_cov_gap_partial(P, V, i, v_top, first, stop, step):
    """``sum_k P_ik (v_top - V_ik)`` over ``k`` in ``range(first, stop, step)``, in float64."""
    d = 0.0
    for k in range(first, stop, step):
        d += np.float64(P[i, k]) * (v_top - np.float64(V[i, k]))
    return d


@njit(cache=True, inline="always")
def softmax_cov_write(P, V, out, i, pv, first, stop, step):
    """``out_ik = P_ik (V_ik - pv)`` over ``k`` in ``range(first, stop, step)``; the caller then sets ``out_{i,k*}``."""
    for k in range(first, stop, step):
        out[i, k] = np.float64(P[i, k]) * (np.float64(V[i, k]) - pv)


@njit(parallel=True, cache=True, fastmath=_REDUCE_FLAGS)
def softmax_cov_rows(P, V, out):
    """out_i = (diag(p_i) - p_i p_i^T) v_i = p_i ⊙ (v_i - p_i . v_i), without cancellation.

    With k* the row's most probable class, ``d = sum_j p_j (v_k* - v_j)`` is
    summed directly, ``p . v = v_k* - d`` and ``out_k* = p_k* d``: when
    ``p_i`` is nearly one-hot, ``v_k* - p . v`` is never formed by subtraction.
    """
    n_rows, n_cols = P.shape
    for i in prange(n_rows):
        top = argmax_partial(P, i, 0, n_cols, 1)
        v_top = np.float64(V[i, top])
        d = softmax_cov_gap_partial(P, V, i, v_top, 0, n_cols, 1)
        # p . v = v_k* - d;  out_k* = p_k* d
        softmax_cov_write(P, V, out, i, v_top - d, 0, n_cols, 1)
        out[i, top] = np.float64(P[i, top]) * d


# Entries of a row of `subspace_rows`' output.
SUBSPACE_SUMS = 5


@njit(cache=True, inline="always")
def subspace_partial(U, A, B, i, label, first, stop, step):
    """``(s_a, s_b, s_aa, s_ab, s_bb)`` of :func:`subspace_rows` over ``k`` in ``range(first, stop, step)``."""
    a_y = np.float64(A[i, label])
    b_y = np.float64(B[i, label])
    sa = sb = saa = sab = sbb = 0.0
    for k in range(first, stop, step):
        # q_k = -U_ik, a_k = A_ik - A_{i,y}, b_k = B_ik - B_{i,y}
        q = -np.float64(U[i, k])
        a = np.float64(A[i, k]) - a_y
        b = np.float64(B[i, k]) - b_y
        sa += q * a
        sb += q * b
        saa += q * a * a
        sab += q * a * b
        sbb += q * b * b
    return sa, sb, saa, sab, sbb


@njit(cache=True, inline="always")
def subspace_finish(w, sums):
    """A row of :func:`subspace_rows` from ``w = 1 - p_i`` and its :func:`subspace_partial` sums."""
    sa, sb, saa, sab, sbb = sums
    # [w s_a, w s_b, w (s_aa - w s_a^2), w (s_ab - w s_a s_b), w (s_bb - w s_b^2)]
    return w * sa, w * sb, w * (saa - w * sa * sa), w * (sab - w * sa * sb), w * (sbb - w * sb * sb)


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
        sums = subspace_partial(U, A, B, i, y[i], 0, n_cols, 1)
        row = subspace_finish(-np.float64(r[i]), sums)
        for j in range(SUBSPACE_SUMS):
            out[i, j] = row[j]



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


# ---- Conjugate gradient updates (fgn_arrays.cg) ------------------------------
#
# One CG iteration after its matvec q = A p is three fused passes over the
# (n,) vectors, on the CPU and on the GPU alike:
#   cg_dot        parts[PAP] <- p . q
#   cg_update_xr  alpha = rho / (p . q);  x += alpha p;  r -= alpha q;
#                 parts[RR] <- r . r,  parts[RZ] <- r . z (z = dinv ⊙ r),  parts[XBAD] <- x - x
#   cg_update_p   beta = (r . z) / rho;  p = z + beta p;  the next state
# The scalars live in a float64 `state` vector (never on the host between
# check points) and each dot product in a row of `parts` (4, CG_PARTS): one
# partial sum per GPU block (the CPU kernels write the whole sum into column 0
# and zeros elsewhere). Every kernel that needs a dot product sums its row of
# `parts` in the same order, so all GPU blocks agree on the scalars. A
# kernel reads `state` and `cg_update_p` writes the next one into another
# vector (`state_out`): GPU blocks that are still reading are never raced.

# Rows of `parts`.
CG_PAP, CG_RR, CG_RZ, CG_XBAD = 0, 1, 2, 3
# Partial sums per row (the GPU's block count for the CG kernels).
CG_PARTS = 128
# Entries of `state`: rho = r.z, whether x still moves, why it stopped (a
# CG_STOP code), iterations that moved x, the squared tolerance on ||r||, and
# ||r||^2 at the last iterate that moved.
CG_RHO, CG_ACTIVE, CG_REASON, CG_N_DONE, CG_TOL2, CG_RNORM2 = 0, 1, 2, 3, 4, 5
CG_STATE_SIZE = 8
# Why the iterate froze: breakdowns (a non-finite value, p^T A p <= 0,
# r^T M^-1 r <= 0), convergence (||r||^2 <= tol^2), overflow in an update.
CG_NONFINITE, CG_CURVATURE, CG_PRECOND, CG_CONVERGED, CG_OVERFLOW = 1, 2, 3, 4, 5


@njit(cache=True, inline="always")
def cg_alpha(state, pap):
    """``alpha = rho / (p^T A p)``, or 0 once the iterate is frozen or ``p^T A p`` is not finite and > 0."""
    if state[CG_ACTIVE] != 0.0 and math.isfinite(pap) and pap > 0.0:
        return state[CG_RHO] / pap
    return 0.0


@njit(cache=True, inline="always")
def cg_next(state, pap, rr, rz, xbad):
    """The state after an iteration, and ``beta`` (0 when the iterate froze).

    Returns ``(beta, rho, active, reason, n_done, rnorm2)``. The iteration
    moved x when it was active and ``p^T A p`` was finite and > 0. Then x
    freezes when an update overflowed (``||r||^2`` or ``x - x`` not finite),
    when ``||r||^2 <= tol^2`` (converged), or when ``rho' = r^T z`` is not
    finite and > 0 (breakdown); otherwise ``beta = rho' / rho``.
    """
    rho, active, reason = state[CG_RHO], state[CG_ACTIVE], state[CG_REASON]
    n_done, rnorm2 = state[CG_N_DONE], state[CG_RNORM2]
    beta = 0.0
    if active != 0.0:
        active = 0.0
        if not math.isfinite(pap):
            reason = CG_NONFINITE
        elif pap <= 0.0:
            reason = CG_CURVATURE
        else:
            n_done += 1.0
            if not (math.isfinite(rr) and xbad == 0.0):
                reason = CG_OVERFLOW
            else:
                rnorm2 = rr
                if rr <= state[CG_TOL2]:
                    reason = CG_CONVERGED
                elif not math.isfinite(rz):
                    reason = CG_NONFINITE
                elif rz <= 0.0:
                    reason = CG_PRECOND
                else:
                    beta, rho, active = rz / rho, rz, 1.0
    return beta, rho, active, reason, n_done, rnorm2


@njit(cache=True, inline="always")
def cg_write_state(state_out, state, beta_rho_active_reason_n_rnorm2):
    """``state_out`` = ``state`` with the entries :func:`cg_next` returned."""
    for j in range(CG_STATE_SIZE):
        state_out[j] = state[j]
    _, rho, active, reason, n_done, rnorm2 = beta_rho_active_reason_n_rnorm2
    state_out[CG_RHO] = rho
    state_out[CG_ACTIVE] = active
    state_out[CG_REASON] = reason
    state_out[CG_N_DONE] = n_done
    state_out[CG_RNORM2] = rnorm2


@njit(cache=True)
def _row_sum(parts, row):
    s = 0.0
    for j in range(parts.shape[1]):
        s += parts[row, j]
    return s


@njit(cache=True)
def cg_dot(a, b, parts, row):
    """``parts[row] <- a . b`` (float64; the sum in column 0)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += np.float64(a[i]) * np.float64(b[i])
    parts[row, :] = 0.0
    parts[row, 0] = s


@njit(cache=True)
def cg_update_xr(x, r, p, q, dinv, diagonal, parts, state):
    """``x += alpha p``, ``r -= alpha q``; the partial sums of ``r . r``, ``r . z``, ``x - x``.

    With ``diagonal`` (1), ``dinv`` is the diagonal of ``M^-1`` and
    ``z = dinv ⊙ r``; with 0, ``z`` comes from a callable, ``dinv`` is not
    read and ``parts[CG_RZ]`` is left to :func:`cg_dot`.
    """
    alpha = cg_alpha(state, _row_sum(parts, CG_PAP))
    rr = rz = xbad = 0.0
    for i in range(x.shape[0]):
        if alpha != 0.0:
            x[i] = x[i] + alpha * p[i]
            r[i] = r[i] - alpha * q[i]
        ri = np.float64(r[i])
        rr += ri * ri
        if diagonal:
            rz += ri * ri * np.float64(dinv[i])
        xbad += np.float64(x[i]) - np.float64(x[i])
    parts[CG_RR, :] = 0.0
    parts[CG_RR, 0] = rr
    parts[CG_XBAD, :] = 0.0
    parts[CG_XBAD, 0] = xbad
    if diagonal:
        parts[CG_RZ, :] = 0.0
        parts[CG_RZ, 0] = rz


@njit(cache=True)
def cg_update_p(r, p, z, dinv, diagonal, parts, state, state_out):
    """``p = z + beta p`` while the iterate moves (``z = dinv ⊙ r`` with ``diagonal``, else ``z``); the next state."""
    nxt = cg_next(state, _row_sum(parts, CG_PAP), _row_sum(parts, CG_RR), _row_sum(parts, CG_RZ),
                  _row_sum(parts, CG_XBAD))
    beta, active = nxt[0], nxt[2]
    if active != 0.0:
        for i in range(p.shape[0]):
            zi = np.float64(r[i]) * np.float64(dinv[i]) if diagonal else np.float64(z[i])
            p[i] = zi + beta * p[i]
    cg_write_state(state_out, state, nxt)
