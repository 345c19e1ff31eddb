"""Experiment 2: when does the FGN step stay close to the full GGN step? Concentration and damping.

Setup
-----
A linear head (``D`` features, ``C`` classes, float64, no ``l2``) at a point
whose logits are set by the knob, so that the knob moves the competitor
distributions ``q_i`` and nothing else:

* **Concentration knob** ``kappa >= 0`` (column ``concentration``), an
  inverse temperature on the competitors' logits. Per seed, each example
  draws a label ``y_i``, competitor scores ``s_ik ~ Normal(0, 1)``
  (``k != y_i``) and a margin ``m_i ~ Normal(0.5, 1.5^2)``; its logits are
  ``Z_ik = kappa s_ik`` for the competitors and
  ``Z_{i,y_i} = logsumexp_{k != y_i} Z_ik + m_i``. So the margins, the true
  class probabilities ``p_i = sigmoid(m_i)`` and hence the FGN weights do not
  depend on ``kappa``; ``q_i = softmax(kappa s_i)`` goes from even spread
  (``kappa = 0``) to one confuser (``kappa`` large). What is *measured* is
  reported next to the knob: the mean entropy of ``q_i`` (``q_entropy``,
  nats; ``log(C - 1)`` for even spread) and the dropped-energy ratio of
  each step.
* **The head.** ``W = sigma B`` with ``B (C, D)`` orthonormal rows drawn at
  random, and features ``x_i = W^+ Z_i + n_i``, ``n_i`` Gaussian, orthogonal
  to the rows of ``W``, of norm about 1; then ``theta = [W, 0]`` gives
  exactly the logits ``Z``. ``sigma = 10 max_i ||Z_i||`` keeps the part of
  ``x_i`` that carries the logits below 0.1 in norm, so the features (and
  the head's Jacobian, which depends on ``X`` only) are nearly the same at
  every ``kappa``. The same seed gives the same draws whatever ``kappa``.
* **Damping knob**: ``lambda = damping * ||G_GGN||_2``, ``damping`` on a log
  grid from ``1e-4`` to ``1e2`` (``||G_GGN||_2`` the largest eigenvalue,
  per problem).
* A ``C = 2`` control on the same grid (``kappa`` is moot there: recorded as
  0), where FGN is the GGN.

The two steps solve, densely in float64 with the curvature matrices of
:func:`fgn_arrays.experiments._common.dense_curvatures`,

    delta_FGN = -(G_FGN + lambda I)^-1 g,     delta_GGN = -(G_FGN + G_dropped + lambda I)^-1 g,

each through one eigendecomposition per problem. ``G_GGN`` is assembled as
``G_FGN + G_dropped`` (the decomposition experiment checks that this is the
library's ``ggn_matvec`` to rounding; the column ``decomposition_residual``
repeats the check per problem), so that for ``C = 2``, where
``dropped_matvec`` is exactly 0, the two systems are bit for bit the same.

Columns, one row per (n_classes, concentration, seed, damping)
--------------------------------------------------------------
``cosine``
    ``cos(delta_FGN, delta_GGN)``.
``rel_error``
    ``||delta_FGN - delta_GGN|| / ||delta_GGN||``.
``model_decrease_ratio``
    ``m(delta_FGN) / m(delta_GGN)`` with the damped GGN model
    ``m(d) = -(g^T d + 1/2 d^T (G_GGN + lambda I) d)``, which
    ``delta_GGN`` maximises: at most 1, and 1 only when the steps agree.
    ``model_decrease_ratio_undamped`` uses ``G_GGN`` alone.
``dropped_energy``
    ``delta_GGN^T G_dropped delta_GGN / delta_GGN^T G_GGN delta_GGN``.
``bound``, ``bound_energy``, ``bound_apriori``, ``bound_holds``
    The bounds of ``docs/derivation.md`` ("How far the FGN step is from the
    GGN step") on ``rel_error``:
    ``||G_dropped delta_GGN|| / (lambda ||delta_GGN||)``,
    ``sqrt(dropped_energy ||G_dropped||_2 ||G_GGN||_2) / lambda`` and
    ``||G_dropped||_2 / lambda`` (the first is the tightest); ``bound_holds`` is
    ``rel_error <= bound (1 + 1e-8) + 1e-13``.
``library_step_error``
    ``||d - delta_FGN|| / ||delta_FGN||`` for ``d`` the library's
    :func:`fgn_arrays.fgn_step` (row-space Cholesky, ``rtol=1e-10``): the
    dense solve above is the step the library takes.
"""

from __future__ import annotations

import math
import time

import numpy
import scipy.special

from ..heads import LinearHead
from ..margin import competitor_probs
from ..step import fgn_step
from ._common import dense_curvatures, q_entropy

__all__ = ["CONCENTRATIONS", "DAMPINGS", "problem", "run", "summarize"]

CONCENTRATIONS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
DAMPINGS = tuple(float(v) for v in numpy.logspace(-4, 2, 13))
SEEDS = (0, 1, 2, 3, 4)
SIZES = (600, 64, 16)  # N, D, C: P = C (D + 1) = 1040
QUICK = dict(concentrations=(0.0, 4.0, 16.0), dampings=(1e-4, 1e-2, 1.0, 1e2), seeds=(0, 1, 2), sizes=(200, 24, 8))
MARGIN_MEAN, MARGIN_STD = 0.5, 1.5
BOUND_RTOL, BOUND_ATOL = 1e-8, 1e-13


def problem(n_samples, n_features, n_classes, concentration, seed):
    """``(head, theta, X, y)``: the linear head whose logits the knob sets (module docstring)."""
    N, D, C = n_samples, n_features, n_classes
    if D < C + 1:
        raise ValueError(f"`n_features` must be at least n_classes + 1 = {C + 1}; got {D}.")
    rng = numpy.random.default_rng(seed)
    y = rng.integers(0, C, size=N)
    scores = rng.standard_normal((N, C))
    margins = rng.normal(MARGIN_MEAN, MARGIN_STD, size=N)
    basis = numpy.linalg.qr(rng.standard_normal((D, D)))[0].T  # orthonormal rows
    noise = rng.standard_normal((N, D - C)) / math.sqrt(D - C)
    # Z_ik = kappa s_ik (k != y_i); Z_{i,y_i} = logsumexp_{k != y_i} Z_ik + m_i
    rows = numpy.arange(N)
    Z = concentration * scores
    Z[rows, y] = -numpy.inf
    Z[rows, y] = scipy.special.logsumexp(Z, axis=1) + margins
    # W = sigma B[:C]; x_i = W^+ Z_i + n_i with n_i in the span of B[C:]
    sigma = 10.0 * float(numpy.max(numpy.linalg.norm(Z, axis=1)))
    W = sigma * basis[:C]
    X = (Z / sigma) @ basis[:C] + noise @ basis[C:]
    head = LinearHead(D, C)
    return head, head.flatten(W, numpy.zeros(C)), X, y


class _Damped:
    """``-(G + lambda I)^-1 g`` for many ``lambda`` from one eigendecomposition ``G = V diag(e) V^T``."""

    def __init__(self, G, g):
        self.eigvals, self.V = numpy.linalg.eigh(G)
        self.Vg = self.V.T @ g

    def solve(self, lam):
        return -(self.V @ (self.Vg / (self.eigvals + lam)))


def _model_decrease(g, G, d):
    # m(d) = -(g^T d + 1/2 d^T G d)
    return -(g @ d + 0.5 * d @ (G @ d))


def measure_problem(head, theta, X, y, dampings, *, check_library=True):
    """The per-problem statistics and one dict per damping (module docstring)."""
    lin = head.linearize(theta, X, y)
    G_fgn, G_ggn_lib, G_dropped = dense_curvatures(lin)
    G_ggn = G_fgn + G_dropped
    g = numpy.asarray(lin.grad, dtype=numpy.float64)
    fgn, ggn = _Damped(G_fgn, g), _Damped(G_ggn, g)
    scale = float(ggn.eigvals[-1])
    dropped_norm = float(numpy.linalg.eigvalsh(G_dropped)[-1])
    problem_stats = {
        "q_entropy": q_entropy(competitor_probs(head.logits(theta, X), y), y),
        "prob_true": float(numpy.mean(lin.stats.prob_true)),
        "dropped_trace_ratio": float(numpy.trace(G_dropped) / numpy.trace(G_ggn)),
        "dropped_norm_ratio": dropped_norm / scale,
        "ggn_norm": scale,
        "decomposition_residual": float(numpy.linalg.norm(G_ggn_lib - G_ggn) / numpy.linalg.norm(G_ggn_lib)),
    }
    cells = []
    for damping in dampings:
        lam = damping * scale
        d_fgn, d_ggn = fgn.solve(lam), ggn.solve(lam)
        n_ggn = numpy.linalg.norm(d_ggn)
        rel_error = float(numpy.linalg.norm(d_fgn - d_ggn) / n_ggn)
        energy = d_ggn @ (G_ggn @ d_ggn)
        dropped_energy = float(d_ggn @ (G_dropped @ d_ggn) / energy)
        bound = float(numpy.linalg.norm(G_dropped @ d_ggn) / (lam * n_ggn))
        damped = G_ggn + lam * numpy.eye(len(g))
        cell = {
            "damping": damping,
            "damping_abs": lam,
            "cosine": float(d_fgn @ d_ggn / (numpy.linalg.norm(d_fgn) * n_ggn)),
            "rel_error": rel_error,
            "model_decrease_ratio": float(_model_decrease(g, damped, d_fgn) / _model_decrease(g, damped, d_ggn)),
            "model_decrease_ratio_undamped": float(_model_decrease(g, G_ggn, d_fgn) / _model_decrease(g, G_ggn, d_ggn)),
            "dropped_energy": dropped_energy,
            "bound": bound,
            "bound_energy": math.sqrt(max(dropped_energy, 0.0) * dropped_norm * scale) / lam,
            "bound_apriori": dropped_norm / lam,
            "bound_holds": bool(rel_error <= bound * (1 + BOUND_RTOL) + BOUND_ATOL),
            "library_step_error": math.nan,
        }
        if check_library:
            step = fgn_step(lin, lam, solver="cholesky", rtol=1e-10)
            d_lib = numpy.asarray(step.direction, dtype=numpy.float64)
            cell["library_step_error"] = float(numpy.linalg.norm(d_lib - d_fgn) / numpy.linalg.norm(d_fgn))
        cells.append(cell)
    return problem_stats, cells


def run(concentrations=CONCENTRATIONS, dampings=DAMPINGS, seeds=SEEDS, sizes=SIZES, *, binary_control=True,
        check_library=True, progress=None):
    """One record per (n_classes, concentration, seed, damping); columns in the module docstring.

    Parameters
    ----------
    concentrations : sequence of float >= 0
    dampings : sequence of float > 0
        Relative to ``||G_GGN||_2`` of each problem.
    seeds : sequence of int
    sizes : (N, D, C)
    binary_control : bool, default True
        Also run ``C = 2`` (concentration recorded as 0) on every seed and damping.
    check_library : bool, default True
        Fill ``library_step_error`` (one :func:`fgn_arrays.fgn_step` per cell).
    progress : callable, optional
        Called with the list of records of each finished problem.

    Returns
    -------
    list of dict
    """
    N, D, C = sizes
    grid = [(C, rho) for rho in concentrations]
    if binary_control:
        grid.append((2, 0.0))
    records = []
    for n_classes, rho in grid:
        for seed in seeds:
            t0 = time.perf_counter()
            head, theta, X, y = problem(N, D, n_classes, rho, seed)
            stats, cells = measure_problem(head, theta, X, y, dampings, check_library=check_library)
            seconds = (time.perf_counter() - t0) / len(cells)
            new = [{"n_classes": n_classes, "concentration": rho, "seed": seed, **cell, **stats, "n_samples": N,
                    "n_features": D, "seconds": seconds} for cell in cells]
            records.extend(new)
            if progress is not None:
                progress(new)
    return records


def summarize(records, column="rel_error", n_classes=None):
    """Mean and max over seeds of ``column``: ``{(concentration, damping): (mean, max)}`` for one ``C``.

    ``n_classes`` defaults to the largest in ``records`` (the grid, not the ``C = 2`` control).
    """
    if n_classes is None:
        n_classes = max(r["n_classes"] for r in records)
    cells = {}
    for r in records:
        if r["n_classes"] == n_classes:
            cells.setdefault((r["concentration"], r["damping"]), []).append(r[column])
    return {key: (float(numpy.mean(v)), float(numpy.max(v))) for key, v in sorted(cells.items())}
