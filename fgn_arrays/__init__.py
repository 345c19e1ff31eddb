"""fgn_arrays: Fast Gauss-Newton for multiclass cross-entropy, on NumPy and CuPy."""

from ._backend import gpu_available, to_device, to_numpy
from .cg import CGResult, cg
from .curvature import dropped_matvec, fgn_matvec, ggn_matvec
from .heads import LinearHead, Linearization, TwoLayerHead
from .margin import MarginStats, competitor_probs, margin_stats
from .step import StepResult, fgn_step, ggn_step

__version__ = "0.1.0"

__all__ = [
    "CGResult",
    "LinearHead",
    "Linearization",
    "MarginStats",
    "StepResult",
    "TwoLayerHead",
    "cg",
    "competitor_probs",
    "dropped_matvec",
    "fgn_step",
    "fgn_matvec",
    "ggn_matvec",
    "ggn_step",
    "gpu_available",
    "margin_stats",
    "to_device",
    "to_numpy",
]
