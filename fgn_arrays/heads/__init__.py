"""Classifier heads with hand-derived margin Jacobian products."""

from ._base import Head, Linearization
from .linear import LinearHead

__all__ = ["Head", "LinearHead", "Linearization"]
