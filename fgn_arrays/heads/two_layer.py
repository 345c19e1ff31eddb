"""Two-layer softmax head ``Z = phi(X W1^T + b1) W2^T + b2`` and its hand-derived margin Jacobian products.

Conventions
-----------
``theta = [W1 (H, D), b1 (H), W2 (C, H), b2 (C)]`` row-major,
``P = H D + H + C H + C``. The forward pass caches the activations
``A = phi(h) (N, H)`` and ``Phi' = phi'(h) (N, H)``, ``h = X W1^T + b1``.
With ``u_i = e_{y_i} - q_i`` and

    S = Phi' ⊙ (U W2)                (N, H),   s_i = phi'(h_i) ⊙ (W2^T u_i)

the margin Jacobian row is ``J_i = [s_i x_i^T, s_i, u_i a_i^T, u_i]``, so

    J v     = rowsum(U ⊙ (A V_W2^T + v_b2)) + rowsum(S ⊙ (X V_W1^T + v_b1))
    J^T c   = [(c ⊙ S)^T X,  S^T c,  (c ⊙ U)^T A,  U^T c]
    J D J^T = (U U^T) ⊙ (s_W A A^T + s_b) + (S S^T) ⊙ (s_W X X^T + s_b)

(``D = s_W`` on ``W1, W2``, ``s_b`` on ``b1, b2``). ``S`` is built once per
linearization (one ``(N, C) x (C, H)`` GEMM); after that a margin product is
one GEMM per layer plus fused per-row work, as for the linear head. The
logit products (used by the full-GGN and dropped-term products) go through
``W2`` each time:

    Jz v   = A V_W2^T + v_b2 + (Phi' ⊙ (X V_W1^T + v_b1)) W2^T
    Jz^T G = [T^T X,  sum_i T_i,  G^T A,  sum_i G_i],   T = Phi' ⊙ (G W2)
"""

from __future__ import annotations

import functools
import math

from .. import kernels
from .._validation import check_positive_int
from ._base import Head, Linearization, _check_counts

__all__ = ["TwoLayerHead"]

ACTIVATIONS = tuple(kernels.ACTIVATIONS)


class TwoLayerHead(Head):
    """Two-layer softmax classifier head ``Z = phi(X W1^T + b1) W2^T + b2``.

    Parameters
    ----------
    n_features : int
        ``D``, the number of input features.
    n_hidden : int
        ``H >= 1``, the width of the hidden layer.
    n_classes : int
        ``C >= 2``.
    activation : {"tanh", "relu", "gelu"}, default "tanh"
        ``phi``. ``"gelu"`` is the exact (erf) form ``x Phi(x)``, ``Phi`` the
        standard normal CDF. ``relu'(0)`` is taken as 0.

    Notes
    -----
    ``theta = [W1 (H, D), b1 (H), W2 (C, H), b2 (C)]`` flattened row-major.
    ``init_params`` draws each weight matrix from a zero-mean normal with
    Glorot's standard deviation ``sqrt(2 / (fan_in + fan_out))`` for tanh and
    He's ``sqrt(2 / fan_in)`` for relu and gelu, and sets the biases to 0.
    The ``l2`` penalty covers ``W1`` and ``W2``; ``margin_gram``'s
    ``weight_scale`` applies to both weight matrices and ``bias_scale`` to both
    biases.
    """

    def __init__(self, n_features, n_hidden, n_classes, activation="tanh"):
        self.n_features, self.n_classes = _check_counts(n_features, n_classes)
        self.n_hidden = check_positive_int(n_hidden, "n_hidden")
        if not isinstance(activation, str):
            raise TypeError(f"`activation` must be one of {ACTIVATIONS}; got {type(activation).__name__}.")
        if activation not in kernels.ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}; got {activation!r}.")
        self.activation = activation
        self._code = kernels.ACTIVATIONS[activation]
        D, H, C = self.n_features, self.n_hidden, self.n_classes
        self.shapes = ((H, D), (H,), (C, H), (C,))
        self.is_weight = (True, False, True, False)

    def __repr__(self):
        return (
            f"TwoLayerHead(n_features={self.n_features}, n_hidden={self.n_hidden}, "
            f"n_classes={self.n_classes}, activation={self.activation!r})"
        )

    def _init_scales(self):
        D, H, C = self.n_features, self.n_hidden, self.n_classes
        if self.activation == "tanh":
            # Glorot: std = sqrt(2 / (fan_in + fan_out))
            return (math.sqrt(2.0 / (D + H)), 0.0, math.sqrt(2.0 / (H + C)), 0.0)
        # He: std = sqrt(2 / fan_in)
        return (math.sqrt(2.0 / D), 0.0, math.sqrt(2.0 / H), 0.0)

    def _logits(self, xp, theta, X):
        W1, b1, W2, b2 = self.unflatten(theta)
        # h = X W1^T (+ b1, added inside the fused pass); A = phi(h), written over
        # h's buffer, and Phi' = phi'(h) in the same pass.
        h = xp.matmul(X, W1.T)
        A, dphi = kernels.activation_rows(xp, h, b1, self._code, out=h)
        # Z = A W2^T + b2
        Z = xp.matmul(A, W2.T)
        Z += b2
        return Z, (A, dphi)

    def _linearization(self, xp, theta, X, y, Z, cache):
        return _TwoLayerLinearization(self, xp, theta, X, y, Z, cache)


class _TwoLayerLinearization(Linearization):
    """Linearization of :class:`TwoLayerHead` (see the module's Conventions).

    Besides :class:`Linearization`'s attributes it holds ``activations``
    (``A = phi(h)``, shape (N, H)), ``activation_slopes`` (``Phi' = phi'(h)``,
    shape (N, H)) and ``W2`` (a view of ``theta``).
    """

    def __init__(self, head, xp, theta, X, y, Z, cache):
        super().__init__(head, xp, theta, X, y, Z)
        self.activations, self.activation_slopes = cache
        self.W2 = head.unflatten(theta)[2]

    def _take_cache(self, new, rows):
        new.activations = self.activations[rows]
        new.activation_slopes = self.activation_slopes[rows]
        new.W2 = self.W2

    @functools.cached_property
    def hidden_directions(self):
        """``S = Phi' ⊙ (U W2)``, shape (N, H): ``s_i = d m_i / d h_i``, built once."""
        S = self.xp.matmul(self.U, self.W2)
        S *= self.activation_slopes
        return S

    # ---- logit products --------------------------------------------------------

    def _logits_jvp(self, v):
        xp = self.xp
        V_W1, v_b1, V_W2, v_b2 = self.head.unflatten(v)
        # dh = X V_W1^T + v_b1;  da = Phi' ⊙ dh
        da = xp.matmul(self.X, V_W1.T)
        da += v_b1
        da *= self.activation_slopes
        # Jz v = A V_W2^T + da W2^T + v_b2
        dZ = xp.matmul(self.activations, V_W2.T)
        dZ += xp.matmul(da, self.W2.T)
        dZ += v_b2
        return dZ

    def _logits_vjp(self, G):
        xp = self.xp
        out = xp.empty(self.n_params, dtype=self.dtype)
        g_W1, g_b1, g_W2, g_b2 = self.head.unflatten(out)
        # layer 2: [G^T A, sum_i G_i]
        xp.matmul(G.T, self.activations, out=g_W2)
        xp.sum(G, axis=0, out=g_b2)
        # back through phi: T = Phi' ⊙ (G W2); layer 1: [T^T X, sum_i T_i]
        T = xp.matmul(G, self.W2)
        T *= self.activation_slopes
        xp.matmul(T.T, self.X, out=g_W1)
        xp.sum(T, axis=0, out=g_b1)
        return out

    # ---- margin products (through the cached S: no GEMM with W2) --------------

    def _margin_jvp(self, v):
        xp = self.xp
        V_W1, v_b1, V_W2, v_b2 = self.head.unflatten(v)
        # (J v)_i = u_i . (V_W2 a_i + v_b2) + s_i . (V_W1 x_i + v_b1)
        # (u_i^T W2 (phi'(h_i) ⊙ dh_i) = s_i . dh_i): one GEMM per layer, one fused pass each.
        Jv = kernels.row_dot(xp, self.U, xp.matmul(self.activations, V_W2.T), v_b2)
        Jv += kernels.row_dot(xp, self.hidden_directions, xp.matmul(self.X, V_W1.T), v_b1)
        return Jv

    def _margin_vjp(self, c):
        xp = self.xp
        out = xp.empty(self.n_params, dtype=self.dtype)
        g_W1, g_b1, g_W2, g_b2 = self.head.unflatten(out)
        # J^T c = [(c ⊙ S)^T X, S^T c, (c ⊙ U)^T A, U^T c]: one fused pass and one GEMM per layer.
        cU = kernels.scale_rows(xp, self.U, c)
        xp.matmul(cU.T, self.activations, out=g_W2)
        xp.sum(cU, axis=0, out=g_b2)
        cS = kernels.scale_rows(xp, self.hidden_directions, c)
        xp.matmul(cS.T, self.X, out=g_W1)
        xp.sum(cS, axis=0, out=g_b1)
        return out

    # ---- row-space Gram matrix -------------------------------------------------

    def _margin_gram(self, weight_scale, bias_scale):
        xp, U, S, A, X = self.xp, self.U, self.hidden_directions, self.activations, self.X
        ws, bs = self.dtype.type(weight_scale), self.dtype.type(bias_scale)
        # J D J^T = (U U^T) ⊙ (s_W A A^T + s_b)  +  (S S^T) ⊙ (s_W X X^T + s_b)
        K = xp.matmul(A, A.T)
        K *= ws
        K += bs
        T = xp.matmul(U, U.T)
        K *= T
        K1 = xp.matmul(X, X.T)
        K1 *= ws
        K1 += bs
        K1 *= xp.matmul(S, S.T, out=T)
        K += K1
        return K

    def _margin_gram_diag(self, weight_scale, bias_scale):
        xp, U, A = self.xp, self.U, self.activations
        # diag = ||u_i||^2 (s_W ||a_i||^2 + s_b) + ||s_i||^2 (s_W ||x_i||^2 + s_b)
        d = kernels.row_dot(xp, U, U) * (weight_scale * kernels.row_dot(xp, A, A) + bias_scale)
        d += self._hidden_gram_diag(weight_scale, bias_scale)
        return d

    def _hidden_gram_diag(self, weight_scale, bias_scale):
        xp, S, X = self.xp, self.hidden_directions, self.X
        # ||s_i||^2 (s_W ||x_i||^2 + s_b): the [W1, b1] rows of J
        return kernels.row_dot(xp, S, S) * (weight_scale * kernels.row_dot(xp, X, X) + bias_scale)

    def _output_layer(self):
        H, D = self.head.n_hidden, self.head.n_features
        return self.activations, H * D + H

    def _cost_flops(self):
        N, D, H, C = self.n_samples, self.head.n_features, self.head.n_hidden, self.head.n_classes
        # Margin JVP: A V_W2^T (2 N H C), X V_W1^T (2 N H D); margin VJP: (c ⊙ U)^T A
        # (2 N C H), (c ⊙ S)^T X (2 N H D); fused row passes O(N (C + H)).
        # (S = Phi' ⊙ (U W2), 2 N C H, is built once per linearization, counted in "gram".)
        product = 4 * N * H * (C + D) + 4 * N * (C + H)
        # Gram: U U^T (2 N^2 C), A A^T (2 N^2 H), S S^T (2 N^2 H), X X^T (2 N^2 D), and S.
        gram = 2 * N * N * (C + H) + 2 * N * N * (H + D) + 2 * N * C * H
        return {"product": product, "gram": gram}
