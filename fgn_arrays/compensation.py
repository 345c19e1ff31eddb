"""A Kronecker-factored stand-in for the curvature FGN drops, used as damping by :func:`minimize`.

Conventions
-----------
Every head ends in an output layer ``Z = F W^T + b``: ``F = X`` for
:class:`LinearHead`, the activations ``A`` for :class:`TwoLayerHead`; with
``f~_i = [f_i, 1]`` its parameters form the ``C x (F_dim + 1)`` block
``[W | b]``. On that block the dropped within-competitor covariance
(``docs/derivation.md``, "Exact decomposition of the softmax covariance")
is, between classes ``k`` and ``l``,

    (1/N) sum_i (1 - p_i) (q_ik [k = l] - q_ik q_il) f~_i f~_i^T.

The compensation keeps the diagonal blocks ``k = l`` only and factorises
each as a Kronecker product, as K-FAC does:

    B_k = beta_k Sigma,   beta_k = mean_i (1 - p_i) q_ik (1 - q_ik),
    Sigma = (1/N) sum_i f~_i f~_i^T   (over the full batch).

The step solves ``(G_FGN + Lam_B) delta = -g`` with the non-diagonal damping

    Lam_B = lambda I + l2 M + B + l2 E,   B = diag(beta) (x) Sigma,

``E`` the projector on the output biases. ``l2 M + B`` is model (the
objective's penalty and the stand-in curvature); ``lambda I + l2 E`` is
damping: the objective does not penalise the output biases, but giving
them ``l2`` too makes every output block ``beta_k Sigma + (lambda + l2) I``,
a function of ``Sigma`` alone. With ``Sigma = V diag(e) V^T``,

    Lam_B^-1 [W | b]_k = V diag(1 / (beta_k e + lambda + l2)) V^T [W | b]_k,

two ``C x (F_dim + 1) x (F_dim + 1)`` GEMMs. Woodbury still gives the
``N x N`` row-space system of :func:`fgn_step`, with ``Lam_B`` in place of
the diagonal ``Lam``; the step's ``predicted_decrease`` is under the model
``G_FGN + l2 M + B``. For ``C = 2`` every ``q_ik`` is 0 or 1, so ``B = 0``
and the step is FGN's (which is then exact) damped by ``lambda I + l2 E``.
"""

from __future__ import annotations

from dataclasses import replace

from .step import _fgn_step, _penalty_quadratic


def output_covariance(lin):
    """Eigen-decomposition ``(e, V)`` of ``Sigma = (1/N) sum_i f~_i f~_i^T`` of ``lin``'s output layer.

    With sample weights ``1/N`` is ``c_i = s_i / sum_j s_j``. Built in float64
    (``F^T F``, ``F^T 1`` and ``N``, never forming ``[F, 1]``); ``e`` is
    clipped at 0 and both are returned in ``lin``'s dtype.
    """
    xp = lin.xp
    F, _ = lin._output_layer()
    n, f = F.shape
    F64 = xp.asarray(F, dtype=xp.float64)
    # Fw = F with each row times its weight: F / N after the sums, or c_i f_i
    c = lin.mean_weights
    Fw, total = (F64, n) if c is None else (F64 * c.astype(xp.float64)[:, None], 1.0)
    Sigma = xp.empty((f + 1, f + 1), dtype=xp.float64)
    Sigma[:f, :f] = Fw.T @ F64
    Sigma[:f, f] = Sigma[f, :f] = Fw.sum(axis=0)
    Sigma[f, f] = n if c is None else xp.sum(c, dtype=xp.float64)
    Sigma /= total
    e, V = xp.linalg.eigh(Sigma)
    return xp.maximum(e, 0).astype(lin.dtype), V.astype(lin.dtype)


def rotated_squares(F, V):
    """``((f~_i V)_d^2)``, shape (N, F_dim + 1): the output features in ``Sigma``'s eigenbasis, squared."""
    f = F.shape[1]
    T = F @ V[:f]
    T += V[f][None, :]
    T *= T
    return T


class KroneckerDamping:
    """``Lam_B`` of the module docstring at one linearization, for one ``lambda``.

    Parameters
    ----------
    lin : Linearization
        The rows whose curvature the step uses (``beta`` is their mean).
    eig : tuple
        ``(e, V)`` from :func:`output_covariance` (on the full batch).
    damping, l2 : float
        ``lambda > 0`` and ``l2 >= 0``.
    rotated : array, shape (N, F_dim + 1), optional
        :func:`rotated_squares` of ``lin``'s rows, when the caller has them
        (the features of a linear head do not change between steps).
    """

    def __init__(self, lin, eig, damping, l2, rotated=None):
        xp, dt = lin.xp, lin.dtype.type
        self.lin, self.damping, self.l2, self.rotated = lin, damping, l2, rotated
        self.e, self.V = eig
        F, self.offset = lin._output_layer()
        self.n_features = F.shape[1]
        # beta_k = mean_i (1 - p_i) q_ik (1 - q_ik);  1 - p_i = -r_i
        Q = lin.competitor_probs
        self.beta = xp.matmul(lin._mean_rows(-lin.residual), Q * (1 - Q))
        # R_kd = 1 / (beta_k e_d + lambda + l2)
        self.R = 1 / (self.beta[:, None] * self.e[None, :] + dt(damping + l2))
        # elsewhere Lam_B = lambda + l2 M
        self.hidden = dt(damping) + dt(l2) * lin.weight_mask[: self.offset]
        # the largest eigenvalue of Lam_B, 0-d
        self.lam_max = damping + l2 + xp.max(self.beta) * xp.max(self.e)

    def _split(self, v):
        # v -> (hidden part, W (C, F), b (C))
        f, off = self.n_features, self.offset
        C = self.lin.head.n_classes
        return v[:off], v[off : off + C * f].reshape(C, f), v[off + C * f :]

    def _rotate(self, v):
        # Y = [W | b] V, shape (C, F + 1)
        _, W, b = self._split(v)
        V, f = self.V, self.n_features
        Y = self.lin.xp.matmul(W, V[:f])
        Y += b[:, None] * V[f][None, :]
        return Y

    def _rotated_apply(self, v, R, hidden):
        # V (R ⊙ ([W | b] V)) V^T on the output block, hidden ⊙ v elsewhere
        xp, V, f = self.lin.xp, self.V, self.n_features
        Y = self._rotate(v)
        Y *= R
        out = xp.empty_like(v)
        out_hidden, out_W, out_b = self._split(out)
        out_hidden[...] = hidden * self._split(v)[0]
        xp.matmul(Y, V[:f].T, out=out_W)
        xp.matmul(Y, V[f], out=out_b)
        return out

    def solve(self, v):
        """``Lam_B^-1 v`` for ``v`` of shape (P,)."""
        return self._rotated_apply(v, self.R, 1 / self.hidden)

    def apply(self, v):
        """``Lam_B v`` for ``v`` of shape (P,)."""
        return self._rotated_apply(v, 1 / self.R, self.hidden)

    def quadratic(self, v):
        """``v^T (B + l2 M) v`` (0-d float64): the model's share of ``Lam_B``."""
        xp = self.lin.xp
        Y = self._rotate(v)
        B = xp.sum(self.beta[:, None] * self.e[None, :] * Y * Y, dtype=xp.float64)
        return B + _penalty_quadratic(self.lin, v, self.l2)

    def row_space_diag(self, s):
        """Diagonal of ``I + A Lam_B^-1 A^T``, ``A = diag(s) J``, shape (N,): CG's Jacobi preconditioner.

        Row ``i`` of the output block gives ``sum_k u_ik^2 sum_d (f~_i V)_d^2 R_kd``;
        the layers before it give ``lin._hidden_gram_diag`` at scales
        ``1/(lambda + l2)`` and ``1/lambda``.
        """
        lin, xp = self.lin, self.lin.xp
        T = self.rotated if self.rotated is not None else rotated_squares(lin._output_layer()[0], self.V)
        U2 = lin.U * lin.U
        d = xp.sum(U2 * xp.matmul(T, self.R.T), axis=1)
        d += lin._hidden_gram_diag(1 / (self.damping + self.l2), 1 / self.damping)
        return 1 + s * s * d


def kronecker_fgn_step(lin, g, damping, l2, eig, *, rtol, maxiter=None, x0=None, rotated=None, own_gradient=False):
    """The FGN step damped by ``Lam_B`` (module docstring), by row-space CG.

    Parameters
    ----------
    lin : Linearization
        The rows of the curvature (all of the batch, or a subsample of it).
    g : array, shape (P,)
        The objective's gradient (on the full batch).
    damping, l2 : float
        ``lambda > 0``, ``l2 >= 0``.
    eig : tuple
        :func:`output_covariance` of the full batch.
    rtol, maxiter, x0
        As in :func:`fgn_arrays.fgn_step`.
    rotated : array, optional
        As in :class:`KroneckerDamping`.
    own_gradient : bool, default False
        ``g`` is ``lin``'s own gradient (all of the batch): the row-space
        right-hand side is then split exactly (:mod:`fgn_arrays.step`).

    Returns
    -------
    fgn_arrays.step._Solved
        ``H = G_FGN + Lam_B``; the predicted decrease is under the model
        ``G_FGN + l2 M + B``; ``solver="cg-kronecker"``. Its scalars are left
        on the device (:meth:`~fgn_arrays.step._Solved.finish`).
    """
    lam = KroneckerDamping(lin, eig, damping, l2, rotated)
    step = _fgn_step(lin, lam, g, "cg", rtol, maxiter, x0, own_gradient=own_gradient)
    return replace(step, solver="cg-kronecker")
