"""Experiment 1: the exact decomposition ``G_GGN = G_FGN + G_dropped``, checked densely in float64.

Setup
-----
For each number of classes ``C`` and each head, a problem from
:func:`fgn_arrays.datasets.make_heads_problem` (``N`` rows, competitor
concentration 0.5, the given seed) and a point ``theta`` with logits of
order ``log(3 (C - 1))``:

* linear head: ``theta = [W_true, b]``, ``W_true`` the generating weights,
  ``b ~ Normal(0, 0.1^2)``;
* two-layer head (tanh): ``init_params`` weights, ``W2`` times 3, biases
  ``~ Normal(0, 0.1^2)``.

The three curvature matrices are built densely from the library's products
(:func:`fgn_arrays.experiments._common.dense_curvatures`). To keep ``P``
dense-sized (``P <= ~2000``) the feature and hidden sizes shrink as ``C``
grows: ``D = min(8, 2000 // C - 1)`` for the linear head and
``H = min(4, max(1, 2000 // C - 1))`` hidden units (``D = 8``) for the
two-layer head.

Measured, per (head, C, seed)
-----------------------------
``residual``
    ``||G_GGN - G_FGN - G_dropped||_F / ||G_GGN||_F`` (rounding only).
``min_eig_dropped``, ``min_eig_difference``
    The smallest eigenvalues of ``G_dropped`` and of ``G_GGN - G_FGN``,
    divided by ``||G_GGN||_2``: the decomposition says both are ``>= 0``;
    rounding allows ``-1e-12``.
``max_abs_dropped``
    ``max |G_dropped|``: exactly 0 for ``C = 2``.
``dropped_norm_ratio``, ``dropped_trace_ratio``
    ``||G_dropped||_2 / ||G_GGN||_2`` and ``tr G_dropped / tr G_GGN``: how
    much curvature FGN drops.
"""

from __future__ import annotations

import time

import numpy
import scipy.linalg

from ..datasets import make_heads_problem
from ..heads import LinearHead, TwoLayerHead
from ..margin import competitor_probs
from ._common import dense_curvatures, q_entropy

__all__ = ["CLASSES", "QUICK_CLASSES", "problem", "run"]

CLASSES = (2, 3, 10, 100, 1000)
QUICK_CLASSES = (2, 3, 10, 100)
HEADS = ("linear", "two-layer")
N_SAMPLES = 128
CONCENTRATION = 0.5
MAX_PARAMS = 2000


def sizes(head, n_classes):
    """``(D, H)`` of the problem for ``head`` and ``C = n_classes`` (``H = 0`` for the linear head)."""
    if head == "linear":
        return min(8, MAX_PARAMS // n_classes - 1), 0
    return 8, min(4, max(1, MAX_PARAMS // n_classes - 1))


def problem(head, n_classes, seed=0, n_samples=N_SAMPLES):
    """``(model, theta, X, y)``, float64 NumPy, for one cell of the experiment (module docstring)."""
    D, H = sizes(head, n_classes)
    X, y, W_true = make_heads_problem(n_samples, D, n_classes, CONCENTRATION, seed=seed)
    rng = numpy.random.default_rng([seed, n_classes, 1 if head == "linear" else 2])
    if head == "linear":
        model = LinearHead(D, n_classes)
        theta = model.flatten(W_true, 0.1 * rng.standard_normal(n_classes))
    else:
        model = TwoLayerHead(D, H, n_classes, activation="tanh")
        W1, _, W2, _ = model.unflatten(model.init_params(seed=seed, dtype="float64"))
        theta = model.flatten(W1, 0.1 * rng.standard_normal(H), 3.0 * W2, 0.1 * rng.standard_normal(n_classes))
    return model, numpy.asarray(theta, dtype=numpy.float64), X, y


def _extreme_eigenvalue(G, which):
    P = G.shape[0]
    index = [0, 0] if which == "min" else [P - 1, P - 1]
    return float(scipy.linalg.eigh(G, eigvals_only=True, subset_by_index=index, driver="evr")[0])


def measure(model, theta, X, y):
    """The measured columns of one cell (module docstring), as a dict."""
    lin = model.linearize(theta, X, y)
    G_fgn, G_ggn, G_dropped = dense_curvatures(lin)
    ggn_norm = _extreme_eigenvalue(G_ggn, "max")
    dropped_norm = _extreme_eigenvalue(G_dropped, "max")
    return {
        "ggn_norm": ggn_norm,
        "residual": float(numpy.linalg.norm(G_ggn - G_fgn - G_dropped) / numpy.linalg.norm(G_ggn)),
        "min_eig_dropped": _extreme_eigenvalue(G_dropped, "min") / ggn_norm,
        "min_eig_difference": _extreme_eigenvalue(G_ggn - G_fgn, "min") / ggn_norm,
        "max_abs_dropped": float(numpy.max(numpy.abs(G_dropped))),
        "dropped_norm_ratio": dropped_norm / ggn_norm,
        "dropped_trace_ratio": float(numpy.trace(G_dropped) / numpy.trace(G_ggn)),
        "q_entropy": q_entropy(competitor_probs(model.logits(theta, X), y), y),
    }


def run(classes=CLASSES, heads=HEADS, seeds=(0,), progress=None):
    """One record per (head, C, seed); see the module docstring for the columns.

    Parameters
    ----------
    classes : sequence of int
        Numbers of classes, each ``>= 2``.
    heads : sequence of {"linear", "two-layer"}
    seeds : sequence of int
    progress : callable, optional
        Called with each record as it is finished (the command prints a line).

    Returns
    -------
    list of dict
    """
    records = []
    for head in heads:
        for n_classes in classes:
            for seed in seeds:
                t0 = time.perf_counter()
                model, theta, X, y = problem(head, n_classes, seed)
                D, H = sizes(head, n_classes)
                record = {"head": head, "n_classes": n_classes, "n_samples": X.shape[0], "n_features": D,
                          "n_hidden": H, "n_params": model.n_params, "seed": seed}
                record.update(measure(model, theta, X, y))
                record["seconds"] = time.perf_counter() - t0
                records.append(record)
                if progress is not None:
                    progress(record)
    return records
