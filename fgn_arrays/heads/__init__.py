"""Classifier heads with hand-derived margin Jacobian products."""

from ._base import Head, Linearization
from .callable import CallableHead, CallableLinearization, linearize_logits
from .linear import LinearHead
from .two_layer import TwoLayerHead

__all__ = [
    "CallableHead",
    "CallableLinearization",
    "Head",
    "LinearHead",
    "Linearization",
    "TwoLayerHead",
    "linearize_logits",
]
