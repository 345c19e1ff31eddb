"""Datasets for softmax-head studies: a bundled real one and a synthetic generator.

``load_wordnet_glosses``
    WordNet 3.0 noun glosses embedded by all-MiniLM-L6-v2, labelled by
    hypernym: 28,752 examples of 384 features in 601 classes (bundled, no
    download).
``make_heads_problem``
    Synthetic softmax-head problems of any size whose competitor mass is
    spread over all classes or concentrated on a few confusers.
"""

from ._synthetic import make_heads_problem
from ._wordnet import WordNetGlosses, load_wordnet_glosses

__all__ = ["WordNetGlosses", "load_wordnet_glosses", "make_heads_problem"]
