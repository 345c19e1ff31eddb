"""The true-vs-rest margin map of softmax cross-entropy.

Conventions
-----------
``logits`` ``Z`` is ``(N, C)``, ``labels`` ``y`` is ``(N,)`` with values in
``[0, C)``. Every output has ``Z``'s dtype and backend. For example ``i``::

    lse_rest_i = logsumexp_{k != y_i} Z_ik
    m_i        = Z_{i,y_i} - lse_rest_i
    loss_i     = softplus(-m_i)     (= -log softmax(Z_i)[y_i], exactly)
    p_i        = sigmoid(m_i)       (= softmax(Z_i)[y_i], exactly)
    q_ik       = exp(Z_ik - lse_rest_i) for k != y_i,  q_{i,y_i} = 0

All of it is computed in log space by one fused per-row kernel, finite for
``|Z|`` up to 1e4 in float32 and float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import kernels
from ._validation import check_logits_labels

__all__ = ["MarginStats", "competitor_probs", "margin_stats"]


@dataclass(frozen=True)
class MarginStats:
    """Per-example true-vs-rest statistics, each ``(N,)``.

    Attributes
    ----------
    margin : array, shape (N,)
        ``m_i = Z_{i,y_i} - logsumexp_{k != y_i} Z_ik``.
    loss : array, shape (N,)
        ``softplus(-m_i)``, the softmax cross-entropy of example ``i``.
    prob_true : array, shape (N,)
        ``sigmoid(m_i)``, the softmax probability of the true class.
    lse_rest : array, shape (N,)
        ``logsumexp_{k != y_i} Z_ik``.
    """

    margin: Any
    loss: Any
    prob_true: Any
    lse_rest: Any


def _margin_stats(xp, Z, y, *, competitors=None):
    """Unchecked :func:`margin_stats` for validated, contiguous arrays.

    Returns ``(MarginStats, Q)``; see :func:`fgn_arrays.kernels.margin_rows`
    for ``competitors`` and ``Q``.
    """
    outs, Q = kernels.margin_rows(xp, Z, y, competitors=competitors)
    return MarginStats(*outs), Q


def margin_stats(logits, labels) -> MarginStats:
    """True-vs-rest margin, loss, true-class probability and competitor logsumexp.

    Parameters
    ----------
    logits : array of float32 or float64, shape (N, C)
        ``C >= 2``. Integer logits are read as float64.
    labels : array of int, shape (N,)
        True classes, in ``[0, C)``.

    Returns
    -------
    MarginStats
        ``margin``, ``loss``, ``prob_true``, ``lse_rest``, each ``(N,)`` in the
        dtype and on the backend of ``logits``.

    Raises
    ------
    ValueError
        Wrong shapes, ``C < 2``, labels out of range, non-finite logits.
    TypeError
        Non-integer labels, non-real logits, mixed NumPy and CuPy arrays.

    Notes
    -----
    Softmax cross-entropy is rewritten exactly through the margin:
    ``-log softmax(Z_i)[y] = log(1 + exp(lse_rest_i - Z_iy)) = softplus(-m_i)``.
    Each row is read once: an online logsumexp keeps the running maximum of
    the competitor logits and the rescaled sum of their exponentials, in
    float64 whatever the input dtype.

    Examples
    --------
    >>> import numpy as np, fgn_arrays as fa
    >>> st = fa.margin_stats(np.array([[2.0, 0.0, 0.0]]), np.array([0]))
    >>> round(float(st.margin[0]), 6), round(float(st.prob_true[0]), 6)
    (1.306853, 0.786986)
    """
    xp, Z, y = check_logits_labels(logits, labels)
    return _margin_stats(xp, Z, y)[0]


def competitor_probs(logits, labels):
    """Softmax over the competitors of each example, zero at the label.

    Parameters
    ----------
    logits : array of float32 or float64, shape (N, C)
    labels : array of int, shape (N,)

    Returns
    -------
    Q : array, shape (N, C)
        ``q_ik = exp(Z_ik - lse_rest_i)`` for ``k != y_i`` and ``q_{i,y_i} = 0``;
        each row sums to 1. Same dtype and backend as ``logits``.

    Notes
    -----
    ``q_i`` is the softmax of row ``i`` conditioned on "not the true class":
    ``softmax(Z_i) = p_i e_{y_i} + (1 - p_i) q_i``. The margin's logit gradient
    is ``u_i = e_{y_i} - q_i``.
    """
    xp, Z, y = check_logits_labels(logits, labels)
    return _margin_stats(xp, Z, y, competitors="probs")[1]
