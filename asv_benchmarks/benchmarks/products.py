"""Margin statistics, Jacobian and curvature products, and one row-space CG iteration.

Sizes and data: see :mod:`.common`. ``track_cg_iteration_over_gemm_floor`` is
the cost of one row-space CG iteration (one margin VJP and one margin JVP)
divided by the cost of the two GEMMs it cannot avoid, ``X @ V.T`` and
``G.T @ X`` at the same shapes, both timed in the same process, in turn, 30
times each (best of each; :func:`.common.best_of_interleaved`); 1 is the
floor. At ``C = 10`` both take tens of microseconds and the ratio is mostly
fixed per-call overhead.
"""

from __future__ import annotations

import numpy as np

import fgn_arrays as fa

from .common import DAMPING, RATIO_SIZES, LinearCase, TwoLayerCase, best_of_interleaved, row_space_matvec, synced


class _Products:
    """Benchmark methods shared by both heads (a mixin: asv skips names with a leading ``_``)."""

    def warm_up(self):
        self.matvec = row_space_matvec(self.lin, DAMPING)
        self.time_margin_stats()
        self.time_margin_jvp()
        self.time_margin_vjp()
        self.time_fgn_matvec()
        self.time_ggn_matvec()
        self.time_row_space_cg_iteration()
        self.time_margin_gram()

    def time_margin_stats(self, *params):
        synced(self.xp, fa.margin_stats, self.lin.logits, self.lin.y)

    def time_margin_jvp(self, *params):
        synced(self.xp, self.lin.margin_jvp, self.v)

    def time_margin_vjp(self, *params):
        synced(self.xp, self.lin.margin_vjp, self.a)

    def time_fgn_matvec(self, *params):
        synced(self.xp, fa.fgn_matvec, self.lin, self.v)

    def time_ggn_matvec(self, *params):
        synced(self.xp, fa.ggn_matvec, self.lin, self.v)

    def time_row_space_cg_iteration(self, *params):
        synced(self.xp, self.matvec, self.a)

    def time_margin_gram(self, *params):
        synced(self.xp, self.lin.margin_gram)


class LinearHeadProducts(_Products, LinearCase):
    """Products of ``LinearHead``; C up to 10000 (CPU), 100000 (GPU)."""


class TwoLayerHeadProducts(_Products, TwoLayerCase):
    """Products of ``TwoLayerHead`` (H = 256, tanh); C in {10, 1000}."""


class LinearHeadGemmFloor(LinearCase):
    """One row-space CG iteration against the two-GEMM floor; N=512, D=256 on the CPU."""

    sizes = RATIO_SIZES
    repeats = 30

    def warm_up(self):
        xp, (N, C), D = self.xp, self.lin.logits.shape, self.head.n_features
        rng = np.random.default_rng(2)
        self.matvec = row_space_matvec(self.lin, DAMPING)
        # The floor's operands in the dtype of the iteration's (float32): a mixed-dtype
        # matmul casts first and is no floor.
        self.V = xp.asarray(rng.standard_normal((C, D)), dtype=self.lin.X.dtype)
        self.G = xp.asarray(rng.standard_normal((N, C)), dtype=self.lin.X.dtype)
        self.matvec(self.a)
        self.two_gemms()

    def two_gemms(self):
        # The GEMMs of one margin JVP (X V^T) and one margin VJP (G^T X).
        xp, X = self.xp, self.lin.X
        return xp.matmul(X, self.V.T), xp.matmul(self.G.T, X)

    def track_cg_iteration_over_gemm_floor(self, backend, n_classes):
        t_iteration, t_floor = best_of_interleaved(self.xp, [lambda: self.matvec(self.a), self.two_gemms],
                                                   repeats=self.repeats)
        return t_iteration / t_floor

    track_cg_iteration_over_gemm_floor.unit = "ratio"
