"""Preconditioners for parameter-space CG on the softmax GGN: the damped FGN inverse and the GGN diagonal.

Conventions
-----------
Curvature is mean-scaled, as in :mod:`fgn_arrays.curvature`. ``M_w`` is the
0/1 diagonal weight mask (``lin.weight_mask``), ``lambda`` the damping and
``l2`` the weight penalty, so the damped matrices are ``G + l2 M_w + lambda I``.
A preconditioner is a callable ``(P,) -> (P,)`` in ``lin``'s dtype and
backend, applied once per CG iteration; whatever can be computed once is
computed in the constructor.

Each takes a :class:`~fgn_arrays.heads._base.Linearization` ``lin`` that may be
a row subsample (``lin._take(rows)``) of the batch whose system is solved: it
then approximates that batch's curvature by the subsample's mean.
"""

from __future__ import annotations

import numpy

from ._backend import cholesky_factor
from .heads.linear import LinearHead
from .heads.two_layer import TwoLayerHead
from .step import DiagonalDamping, _row_scales

__all__ = ["FGNPreconditioner", "ggn_diagonal"]


class FGNPreconditioner:
    r"""``M^-1 v`` for the damped FGN matrix ``M = G_FGN + l2 M_w + lambda I``, by Woodbury.

    Parameters
    ----------
    lin : Linearization
        The linearization whose FGN curvature is inverted (``N`` rows, ``P``
        parameters); may be a row subsample of the batch being solved.
    damping : float
        ``lambda > 0``.
    l2 : float
        ``l2 >= 0``, the weight penalty (biases are not penalised).

    Attributes
    ----------
    n_rows : int
        ``N``, the size of the factorised row-space matrix.
    factor : CholeskyFactor
        Cholesky factor of the float64 row-space matrix ``K (N, N)``.

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``K`` is not numerically positive definite (it is ``I`` plus a PSD
        matrix, so only non-finite curvature can cause this).

    Notes
    -----
    With ``s = sqrt(w / N)`` (``w`` the curvature weights), ``A = diag(s) J
    (N, P)`` and the diagonal ``Lam = lambda I + l2 M_w``, ``M = A^T A + Lam``
    and Woodbury's identity gives

    .. math::

        M^{-1} v = \Lambda^{-1} v - \Lambda^{-1} A^T K^{-1} A \Lambda^{-1} v,
        \qquad K = I + A \Lambda^{-1} A^T
                  = I + (s s^T) \odot (J \Lambda^{-1} J^T).

    ``J Lam^-1 J^T`` is ``lin._margin_gram(1 / (lambda + l2), 1 / lambda)``,
    built in closed form in ``lin``'s dtype, then cast to float64; ``K`` is
    scaled, shifted and Cholesky-factorised once, in float64, here.

    Cost of the constructor: the Gram matrix (``lin.cost_flops()["gram"]``)
    plus ``N^3 / 3`` for the factorisation, ``O(N^2)`` float64 memory, and on
    the GPU one synchronisation (cuSOLVER's status). Cost of one application:
    one margin JVP and one margin VJP (``lin.cost_flops()["product"]``), two
    float64 triangular solves (``2 N^2``) and ``O(N + P)`` elementwise work;
    no synchronisation.
    """

    def __init__(self, lin, damping, l2):
        xp = lin.xp
        self.lin, self.n_rows = lin, lin.n_samples
        self._lam = DiagonalDamping(lin, damping, l2)
        # s = sqrt(w / N), float64
        self._s = xp.asarray(_row_scales(lin), dtype=xp.float64)
        # K = I + (s s^T) ⊙ (J Lam^-1 J^T), float64
        factor = cholesky_factor(self._lam.gram(self._s))
        if factor is None:
            raise numpy.linalg.LinAlgError("the row-space matrix I + A Lam^-1 A^T is not positive definite.")
        self.factor = factor

    def __call__(self, v):
        """``M^-1 v``, shape (P,), in ``lin``'s dtype and backend (``v`` is trusted, not checked)."""
        lin, xp = self.lin, self.lin.xp
        # v -> y = Lam^-1 v -> t = A y = s ⊙ J y (float64)
        y = self._lam.solve(v)
        t = self._s * xp.asarray(lin._margin_jvp(y), dtype=xp.float64)
        # -> alpha = K^-1 t (two float64 triangular solves) -> c = s ⊙ alpha, so A^T alpha = J^T c
        c = self._s * self.factor.solve(t)
        # -> M^-1 v = y - Lam^-1 J^T c
        y -= self._lam.solve(lin._margin_vjp(xp.asarray(c, dtype=lin.dtype)))
        return y


def ggn_diagonal(lin):
    r"""Diagonal of the mean-scaled softmax GGN (no ``l2``, no damping), in closed form.

    The Jacobi preconditioner of parameter-space GGN CG is the inverse of
    ``ggn_diagonal(lin) + l2 M_w + lambda``.

    Parameters
    ----------
    lin : Linearization
        Of a :class:`~fgn_arrays.LinearHead` or :class:`~fgn_arrays.TwoLayerHead`.

    Returns
    -------
    array, shape (P,)
        In ``lin``'s dtype and backend.

    Raises
    ------
    TypeError
        For a linearization of any other head.

    Notes
    -----
    The GGN's diagonal entry for parameter ``j`` is
    ``(1/N) sum_i Jz_i[:, j]^T (diag(p̂_i) - p̂_i p̂_i^T) Jz_i[:, j]``. For an
    output layer ``Z = F W^T + b`` (``F = X`` for the linear head, the hidden
    activations ``A`` for the two-layer head) ``Jz_i[:, (k, d)] = F_id e_k``, so

    .. math::

        \mathrm{diag}_{W_{kd}} = \frac1N \sum_i \hat p_{ik} (1 - \hat p_{ik}) F_{id}^2, \qquad
        \mathrm{diag}_{b_k} = \frac1N \sum_i \hat p_{ik} (1 - \hat p_{ik}).

    For the hidden layer of the two-layer head ``Jz_i[:, (h, d)] = W2[:, h]
    phi'(h_ih) x_id``, so with the per-row variance of the column ``W2[:, h]``
    under ``p̂_i``, ``q_ih = sum_k p̂_ik W2_kh^2 - (sum_k p̂_ik W2_kh)^2``,

    .. math::

        \mathrm{diag}_{W1_{hd}} = \frac1N \sum_i \phi'(h_{ih})^2 q_{ih} x_{id}^2, \qquad
        \mathrm{diag}_{b1_h} = \frac1N \sum_i \phi'(h_{ih})^2 q_{ih}.

    Both are evaluated about each row's most probable class, so that rows
    with ``p̂`` near one-hot keep their relative accuracy (see the code).

    Cost: one ``(K, N) x (N, F)`` GEMM per layer (``K`` its outputs) and, for
    the two-layer head, two ``(N, C) x (C, H)`` GEMMs for ``q``, plus
    ``O(N (C + D + H))`` elementwise work.
    """
    head = lin.head
    if not isinstance(head, (LinearHead, TwoLayerHead)):
        raise TypeError(
            f"ggn_diagonal takes a linearization of a LinearHead or TwoLayerHead; got one of "
            f"{type(head).__name__}."
        )
    xp = lin.xp
    N = lin.n_samples
    out = xp.empty(lin.n_params, dtype=lin.dtype)
    # Pivot on each row's most probable class m_i: 1 - p̂_k >= 1/2 for k != m_i, and
    # 1 - p̂_{i,m_i} = sum_{k != m_i} p̂_ik =: rest_i, a sum of positive terms
    # (1 - p̂ would cancel for confident rows).
    rows, m = xp.arange(N), xp.argmax(lin.logits, axis=1)
    p = lin.softmax
    R = p.copy()  # p̂ without the pivot class
    R[rows, m] = 0
    rest = xp.sum(R, axis=1)
    var_p = p * (1 - p)
    var_p[rows, m] = p[rows, m] * rest
    # sample weights: row i counts c_i = s_i / sum_j s_j instead of 1/N
    c = lin.mean_weights
    n = N if c is None else 1
    if c is not None:
        var_p *= c[:, None]
    # output layer Z = F W^T + b: [(p̂ (1 - p̂))^T F^2, sum_i p̂_i (1 - p̂_i)] / N
    F, offset = lin._output_layer()
    _layer_diagonal(xp, out[offset:], var_p, F, n)
    if isinstance(head, TwoLayerHead):
        # q_ih = Var_{p̂_i}(W2[:, h]) about the pivot's row w_m = W2[m_i]: with
        # E1 = sum_k R_ik (W2_kh - w_mh)^2 and E2 = sum_k R_ik (W2_kh - w_mh),
        # q = E1 - E2^2 (E2^2 <= rest E1 <= (1 - 1/C) E1: no catastrophic cancellation).
        W2 = lin.W2
        w_m = xp.take(W2, m, axis=0)
        RW = xp.matmul(R, W2)
        E1 = xp.matmul(R, W2 * W2)
        E1 -= 2 * w_m * RW
        E1 += rest[:, None] * (w_m * w_m)
        E2 = RW - rest[:, None] * w_m
        E1 -= E2 * E2
        # hidden layer h = X W1^T + b1: rows weighted by phi'(h)^2 q
        E1 *= xp.square(lin.activation_slopes)
        if c is not None:
            E1 *= c[:, None]
        _layer_diagonal(xp, out[:offset], E1, lin.X, n)
    return out


def _layer_diagonal(xp, out, weights, F, n):
    """``[weights^T F^2, sum_i weights_i] / n`` into ``out`` (a layer ``[W (K, F_dim), b (K)]``'s slice)."""
    K = weights.shape[1]
    n = F.dtype.type(n)
    W_part = out[: K * F.shape[1]].reshape(K, F.shape[1])
    xp.matmul(weights.T, F * F, out=W_part)
    W_part /= n
    b_part = out[K * F.shape[1] :]
    xp.sum(weights, axis=0, out=b_part)
    b_part /= n
