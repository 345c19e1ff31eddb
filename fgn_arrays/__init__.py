"""fgn_arrays: Fast Gauss-Newton for multiclass cross-entropy, on NumPy and CuPy."""

from ._backend import gpu_available, to_device, to_numpy
from .curvature import dropped_matvec, fgn_matvec, ggn_matvec
from .heads import LinearHead, Linearization
from .margin import MarginStats, competitor_probs, margin_stats

__version__ = "0.1.0"

__all__ = [
    "LinearHead",
    "Linearization",
    "MarginStats",
    "competitor_probs",
    "dropped_matvec",
    "fgn_matvec",
    "ggn_matvec",
    "gpu_available",
    "margin_stats",
    "to_device",
    "to_numpy",
]
