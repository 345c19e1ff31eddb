"""Classifier heads with hand-derived margin Jacobian products."""

from ._base import Head, Linearization
from .linear import LinearHead
from .two_layer import TwoLayerHead

__all__ = ["Head", "LinearHead", "Linearization", "TwoLayerHead"]
