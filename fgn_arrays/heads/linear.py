"""Linear softmax head ``Z = X W^T + b`` and its hand-derived margin Jacobian products.

Conventions
-----------
``theta = [W (C, D) row-major, b (C)]``, ``P = C D + C``. With ``u_i = e_{y_i} - q_i``
the margin Jacobian row is ``J_i = [u_i x_i^T, u_i]``, so

    J v     = rowsum(U ⊙ (X V_W^T + v_b))
    J^T a   = [(a ⊙ U)^T X,  U^T a]   (a ⊙ X when C > D: U^T (a ⊙ X))
    J D J^T = (U U^T) ⊙ (s_W X X^T + s_b)        (D = s_W on W, s_b on b)

Each product is one GEMM plus fused per-row work.
"""

from __future__ import annotations

from .. import kernels
from ._base import Head, Linearization, _check_counts

__all__ = ["LinearHead"]


class LinearHead(Head):
    """Linear softmax classifier head ``Z = X W^T + b``.

    Parameters
    ----------
    n_features : int
        ``D``, the number of input features.
    n_classes : int
        ``C >= 2``.

    Notes
    -----
    ``theta = [W (C, D), b (C)]`` flattened row-major. ``init_params`` draws
    ``W_cd ~ N(0, 0.01^2)`` and sets ``b = 0``. The ``l2`` penalty covers ``W``
    only.
    """

    _affine_logits = True

    def __init__(self, n_features, n_classes):
        self.n_features, self.n_classes = _check_counts(n_features, n_classes)
        self.shapes = ((self.n_classes, self.n_features), (self.n_classes,))
        self.is_weight = (True, False)

    def __repr__(self):
        return f"LinearHead(n_features={self.n_features}, n_classes={self.n_classes})"

    def _init_scales(self):
        return (0.01, 0.0)

    def _logits(self, xp, theta, X):
        W, b = self.unflatten(theta)
        # Z = X W^T + b
        Z = xp.matmul(X, W.T)
        Z += b
        return Z, None

    def _linearization(self, xp, theta, X, y, Z, cache):
        return _LinearLinearization(self, xp, theta, X, y, Z)


class _LinearLinearization(Linearization):
    """Linearization of :class:`LinearHead` (see the module's Conventions)."""

    def _logits_jvp(self, v):
        V_W, v_b = self.head.unflatten(v)
        # Jz v = X V_W^T + v_b
        return self.xp.matmul(self.X, V_W.T) + v_b

    def _logits_vjp(self, A):
        xp = self.xp
        out = xp.empty(self.n_params, dtype=self.dtype)
        g_W, g_b = self.head.unflatten(out)
        # Jz^T A = [A^T X, sum_i A_i]
        xp.matmul(A.T, self.X, out=g_W)
        xp.sum(A, axis=0, out=g_b)
        return out

    def _margin_jvp(self, v):
        V_W, v_b = self.head.unflatten(v)
        # (J v)_i = u_i . (V_W x_i + v_b): one GEMM, then one fused pass over U.
        return kernels.row_dot(self.xp, self.U, self.xp.matmul(self.X, V_W.T), v_b)

    def _margin_vjp(self, a):
        xp, U, X = self.xp, self.U, self.X
        if self.head.n_classes <= self.head.n_features:
            # J^T a = Jz^T (a ⊙ U): one fused pass over U, then one GEMM.
            return self._logits_vjp(kernels.scale_rows(xp, U, a))
        # C > D: scale the smaller X instead, J^T a = [U^T (a ⊙ X), U^T a].
        out = xp.empty(self.n_params, dtype=self.dtype)
        g_W, g_b = self.head.unflatten(out)
        xp.matmul(U.T, kernels.scale_rows(xp, X, a), out=g_W)
        xp.matmul(U.T, a, out=g_b)
        return out

    def _margin_gram(self, weight_scale, bias_scale):
        xp, U, X = self.xp, self.U, self.X
        # J D J^T = (U U^T) ⊙ (s_W X X^T + s_b)
        K = xp.matmul(X, X.T)
        K *= K.dtype.type(weight_scale)
        K += K.dtype.type(bias_scale)
        K *= xp.matmul(U, U.T)
        return K

    def _margin_gram_diag(self, weight_scale, bias_scale):
        xp, U, X = self.xp, self.U, self.X
        # diag = ||u_i||^2 (s_W ||x_i||^2 + s_b)
        return kernels.row_dot(xp, U, U) * (weight_scale * kernels.row_dot(xp, X, X) + bias_scale)

    def _output_layer(self):
        return self.X, 0

    def _hidden_gram_diag(self, weight_scale, bias_scale):
        return self.xp.zeros(self.n_samples, dtype=self.dtype)

    def _cost_flops(self):
        N, D, C = self.n_samples, self.head.n_features, self.head.n_classes
        # JVP: X V_W^T (2 N C D); VJP: G^T X (2 N C D); fused row passes O(N C).
        # Gram: X X^T (2 N^2 D) and U U^T (2 N^2 C).
        return {"product": 4 * N * C * D + 4 * N * C, "gram": 2 * N * N * (C + D)}
