"""Damped steps: time and peak memory of ``fgn_step`` and ``ggn_step``, and their CG iterations.

Sizes and data: see :mod:`.common`. Damping ``1e-2``, ``l2 = 0``, CG ``rtol = 1e-6``.
``ggn_step`` runs at most ``GGN_MAXITER`` (200) iterations, so its time is
bounded; ``track_ggn_cg_iterations`` reports 200 where it did not converge.
"""

from __future__ import annotations

import fgn_arrays as fa

from .common import DAMPING, GGN_MAXITER, RTOL, LinearCase, TwoLayerCase, synced


def _fgn_cg(lin, maxiter=None):
    return fa.fgn_step(lin, DAMPING, solver="cg", rtol=RTOL, maxiter=maxiter)


def _fgn_cholesky(lin):
    return fa.fgn_step(lin, DAMPING, solver="cholesky")


def _ggn(lin, maxiter=GGN_MAXITER):
    return fa.ggn_step(lin, DAMPING, rtol=RTOL, maxiter=maxiter)


class _Steps:
    """Wall time of the steps."""

    def warm_up(self):
        # One CG iteration compiles every kernel of a full solve.
        _fgn_cg(self.lin, maxiter=1)
        _fgn_cholesky(self.lin)
        _ggn(self.lin, maxiter=1)

    def time_fgn_step_cg(self, *params):
        synced(self.xp, _fgn_cg, self.lin)

    def time_fgn_step_cholesky(self, *params):
        synced(self.xp, _fgn_cholesky, self.lin)

    def time_ggn_step(self, *params):
        synced(self.xp, _ggn, self.lin)


class _StepMemory:
    """Peak resident memory of the process (batch and warm-up included) through one step."""

    cpu_only = True

    def warm_up(self):
        _fgn_cg(self.lin, maxiter=1)
        _ggn(self.lin, maxiter=1)

    def peakmem_fgn_step_cg(self, *params):
        _fgn_cg(self.lin)

    def peakmem_ggn_step(self, *params):
        _ggn(self.lin)


class _Iterations:
    """CG iterations to ``rtol = 1e-6``: row-space CG (FGN, at most ``10 N``) and parameter-space CG (GGN)."""

    def track_fgn_cg_iterations(self, *params):
        return _fgn_cg(self.lin).n_iter

    def track_ggn_cg_iterations(self, *params):
        return _ggn(self.lin).n_iter

    track_fgn_cg_iterations.unit = "iterations"
    track_ggn_cg_iterations.unit = "iterations"


class LinearHeadSteps(_Steps, LinearCase):
    """Steps of ``LinearHead``; C up to 10000 (CPU), 100000 (GPU)."""


class LinearHeadStepMemory(_StepMemory, LinearCase):
    """Peak memory of the steps of ``LinearHead`` (CPU)."""


class LinearHeadIterations(_Iterations, LinearCase):
    """CG iterations of the steps of ``LinearHead``."""


class TwoLayerHeadSteps(_Steps, TwoLayerCase):
    """Steps of ``TwoLayerHead`` (H = 256, tanh); C in {10, 1000}."""


class TwoLayerHeadStepMemory(_StepMemory, TwoLayerCase):
    """Peak memory of the steps of ``TwoLayerHead`` (CPU)."""


class TwoLayerHeadIterations(_Iterations, TwoLayerCase):
    """CG iterations of the steps of ``TwoLayerHead``."""
