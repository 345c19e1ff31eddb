"""fgn_arrays: Fast Gauss-Newton for multiclass cross-entropy, on NumPy and CuPy."""

from . import datasets
from ._backend import gpu_available, to_device, to_numpy
from .cg import CGResult, cg
from .curvature import dropped_matvec, fgn_matvec, ggn_matvec
from .heads import CallableHead, LinearHead, Linearization, TwoLayerHead, linearize_logits
from .margin import MarginStats, competitor_probs, margin_stats
from .optim import OptimizeResult, minimize
from .step import StepResult, fgn_step, ggn_step

__version__ = "0.1.0"

__all__ = [
    "CGResult",
    "CallableHead",
    "FGNClassifier",
    "LinearHead",
    "Linearization",
    "MarginStats",
    "OptimizeResult",
    "StepResult",
    "TwoLayerHead",
    "cg",
    "competitor_probs",
    "datasets",
    "dropped_matvec",
    "fgn_step",
    "fgn_matvec",
    "ggn_matvec",
    "ggn_step",
    "gpu_available",
    "linearize_logits",
    "margin_stats",
    "minimize",
    "to_device",
    "to_numpy",
]


def __getattr__(name):
    # FGNClassifier needs scikit-learn, an optional dependency: imported on first
    # use, so that ``import fgn_arrays`` never imports scikit-learn.
    if name == "FGNClassifier":
        from . import estimator

        if not estimator.HAVE_SKLEARN:
            raise ImportError(estimator.SKLEARN_MISSING)
        return estimator.FGNClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
