"""Curvature-vector products: FGN, full softmax GGN, and the dropped term.

Conventions
-----------
All three are mean-scaled (with sample weights ``s``, ``1/N`` below
becomes ``c_i = s_i / sum_j s_j``) and include neither ``l2`` nor damping. With
``Jz_i = dZ_i/dtheta``, ``J_i = u_i^T Jz_i``, ``p̂_i = softmax(Z_i)``,
``p_i = p̂_{i,y_i}``, ``w_i = p_i (1 - p_i)`` and ``q_i`` the competitor softmax:

    G_GGN     = (1/N) sum_i Jz_i^T (diag(p̂_i) - p̂_i p̂_i^T) Jz_i
    G_FGN     = (1/N) sum_i w_i J_i^T J_i
    G_dropped = G_GGN - G_FGN
              = (1/N) sum_i (1 - p_i) Jz_i^T (diag(q_i) - q_i q_i^T) Jz_i     (PSD)

The split is the law of total covariance of the softmax over the event
"true class or not"; for ``C = 2`` the dropped term is exactly zero.
"""

from __future__ import annotations

from . import kernels

__all__ = ["dropped_matvec", "fgn_matvec", "ggn_matvec"]


def _fgn(lin, v):
    # v -> J v -> w ⊙ J v -> J^T (w ⊙ J v) / N
    Jv = lin._margin_jvp(v)
    return lin._mean_vjp(lin._margin_vjp, lin.curvature_weights * Jv)


def _ggn(lin, v):
    # v -> Jz v -> (diag(p̂) - p̂ p̂^T) Jz v, row by row -> Jz^T (...) / N
    dZ = lin._logits_jvp(v)
    HdZ = kernels.softmax_cov_rows(lin.xp, lin.softmax, dZ)
    return lin._mean_vjp(lin._logits_vjp, HdZ)


def _dropped(lin, v):
    # v -> Jz v -> (1 - p) ⊙ (diag(q) - q q^T) Jz v, row by row -> Jz^T (...) / N
    dZ = lin._logits_jvp(v)
    covdZ = kernels.softmax_cov_rows(lin.xp, lin.competitor_probs, dZ)
    return lin._mean_vjp(lin._logits_vjp, kernels.scale_rows(lin.xp, covdZ, -lin.residual))


def fgn_matvec(lin, v):
    """``G_FGN v = (1/N) J^T diag(w) J v``.

    Parameters
    ----------
    lin : Linearization
        From ``head.linearize(theta, X, y)``.
    v : array, shape (P,)

    Returns
    -------
    array, shape (P,)
        One margin JVP and one margin VJP.
    """
    return _fgn(lin, lin._vec(v, (lin.n_params,), "v"))


def ggn_matvec(lin, v):
    """``G_GGN v``, the full softmax generalized Gauss-Newton product.

    Each row's softmax covariance is applied as ``p̂ ⊙ d - p̂ (p̂ . d)``, with
    ``p̂ . d`` summed around the row's most probable class so that nearly
    one-hot rows keep their relative accuracy; nothing ``C x C`` is formed. One logit JVP and one logit VJP.

    Parameters
    ----------
    lin : Linearization
    v : array, shape (P,)

    Returns
    -------
    array, shape (P,)
    """
    return _ggn(lin, lin._vec(v, (lin.n_params,), "v"))


def dropped_matvec(lin, v):
    """``(G_GGN - G_FGN) v``, the within-competitor covariance term FGN drops.

    Computed directly as ``(1/N) Jz^T ((1 - p_i) (diag(q_i) - q_i q_i^T) Jz_i v)_i``,
    not as a difference, so it keeps its relative accuracy when it is much
    smaller than the GGN, and is exactly zero for two classes.

    Parameters
    ----------
    lin : Linearization
    v : array, shape (P,)

    Returns
    -------
    array, shape (P,)
    """
    return _dropped(lin, lin._vec(v, (lin.n_params,), "v"))
