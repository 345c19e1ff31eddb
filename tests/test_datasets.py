"""Tests of fgn_arrays.datasets: the bundled WordNet-gloss data and make_heads_problem."""

import numpy
import pytest

from fgn_arrays.datasets import load_wordnet_glosses, make_heads_problem

# ---------------------------------------------------------------- WordNet glosses

N_20, C_20 = 28752, 601  # counts of the bundled file (min_per_class=20)
N_50, C_50 = 15260, 133


@pytest.fixture(scope="module")
def glosses20():
    return load_wordnet_glosses()


@pytest.fixture(scope="module")
def glosses50():
    return load_wordnet_glosses(min_per_class=50)


def test_wordnet_shapes_and_dtypes(glosses20):
    data = glosses20
    assert data.X.shape == (N_20, 384)
    assert data.X.dtype == numpy.float32
    assert data.y.shape == (N_20,)
    assert data.y.dtype == numpy.int64
    assert data.class_names.shape == (C_20,)
    assert data.class_names.dtype.kind == "U"
    assert data.n_classes == C_20
    assert data.synset_offsets.shape == (N_20,)
    assert len(numpy.unique(data.synset_offsets)) == N_20
    if data.glosses is not None:
        assert data.glosses.shape == (N_20,)
        assert all(len(g) > 0 for g in data.glosses[:100])


def test_wordnet_labels_cover_range_and_meet_threshold(glosses20, glosses50):
    for data, threshold in ((glosses20, 20), (glosses50, 50)):
        assert data.y.min() == 0
        assert data.y.max() == data.n_classes - 1
        counts = numpy.bincount(data.y, minlength=data.n_classes)
        assert counts.shape == (data.n_classes,)
        assert counts.min() >= threshold


def test_wordnet_higher_threshold_is_a_subset(glosses20, glosses50):
    assert glosses50.X.shape == (N_50, 384)
    assert glosses50.n_classes == C_50
    assert glosses50.n_classes < glosses20.n_classes
    assert glosses50.X.shape[0] < glosses20.X.shape[0]
    assert set(glosses50.class_names) <= set(glosses20.class_names)
    # Same rows, same features, consistent names after relabelling.
    rows = numpy.searchsorted(glosses20.synset_offsets, glosses50.synset_offsets)
    numpy.testing.assert_array_equal(glosses20.synset_offsets[rows], glosses50.synset_offsets)
    numpy.testing.assert_array_equal(glosses20.X[rows], glosses50.X)
    numpy.testing.assert_array_equal(
        glosses20.class_names[glosses20.y[rows]], glosses50.class_names[glosses50.y]
    )


def test_wordnet_class_names_are_ordered_by_offset(glosses20):
    offsets = [int(name.rsplit("(", 1)[1].rstrip(")")) for name in glosses20.class_names]
    assert offsets == sorted(offsets)
    assert "person (00007846)" in set(glosses20.class_names)


def test_wordnet_features_are_unit_norm(glosses20):
    norms = numpy.linalg.norm(glosses20.X.astype(numpy.float64), axis=1)
    # float16 keeps ~11 significant bits: each of 384 entries is off by <= 2^-11 relative.
    numpy.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert numpy.isfinite(glosses20.X).all()


@pytest.mark.parametrize("dtype", ["float16", "float64", numpy.float32])
def test_wordnet_dtype(dtype):
    data = load_wordnet_glosses(50, dtype=dtype)
    assert data.X.dtype == numpy.dtype(dtype)


def test_wordnet_returns_fresh_arrays(glosses20):
    data = load_wordnet_glosses()
    data.X[0] = 0.0
    assert numpy.abs(glosses20.X[0]).sum() > 0


@pytest.mark.parametrize("bad", [19, 0, -5])
def test_wordnet_rejects_small_threshold(bad):
    with pytest.raises(ValueError, match=rf"`min_per_class`.*got {bad}"):
        load_wordnet_glosses(bad)


@pytest.mark.parametrize("bad", [20.0, "20", True])
def test_wordnet_rejects_non_integer_threshold(bad):
    with pytest.raises(TypeError, match="`min_per_class`"):
        load_wordnet_glosses(bad)


def test_wordnet_rejects_bad_dtype():
    with pytest.raises(TypeError, match="`dtype`"):
        load_wordnet_glosses(dtype="int32")


# ---------------------------------------------------------------- make_heads_problem


def test_heads_problem_shapes_and_dtypes():
    X, y, W = make_heads_problem(300, 7, 11, 0.5, seed=3)
    assert X.shape == (300, 7) and X.dtype == numpy.float64
    assert y.shape == (300,) and y.dtype == numpy.int64
    assert W.shape == (11, 7) and W.dtype == numpy.float64
    assert y.min() >= 0 and y.max() < 11
    X32, y32, W32 = make_heads_problem(300, 7, 11, 0.5, seed=3, dtype="float32")
    assert X32.dtype == W32.dtype == numpy.float32
    numpy.testing.assert_array_equal(y32, y)
    numpy.testing.assert_allclose(X32, X, rtol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_heads_problem_small_class_counts(n_classes):
    X, y, W = make_heads_problem(50, 3, n_classes, 1.0)
    assert W.shape == (n_classes, 3)
    assert set(numpy.unique(y)) <= set(range(n_classes))


def test_heads_problem_is_deterministic_in_seed():
    a = make_heads_problem(200, 5, 9, 0.7, seed=42)
    b = make_heads_problem(200, 5, 9, 0.7, seed=42)
    c = make_heads_problem(200, 5, 9, 0.7, seed=43)
    for u, v in zip(a, b):
        numpy.testing.assert_array_equal(u, v)
    assert not numpy.array_equal(a[0], c[0])
    # W_true does not depend on the number of samples.
    numpy.testing.assert_array_equal(make_heads_problem(17, 5, 9, 0.7, seed=42)[2], a[2])


def test_heads_problem_labels_follow_softmax():
    # Chi-square-style check: class frequencies match the mean softmax probabilities.
    X, y, W = make_heads_problem(40000, 4, 3, 0.3, seed=5)
    z = X @ W.T
    p = numpy.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = p.mean(axis=0)
    observed = numpy.bincount(y, minlength=3) / y.shape[0]
    numpy.testing.assert_allclose(observed, expected, atol=0.015)
    # Labels are noisy: not all equal to the most probable class.
    assert 0.2 < numpy.mean(numpy.argmax(z, axis=1) != y) < 0.8


def _mean_competitor_entropy(X, y, W):
    """Mean entropy of softmax over the classes other than each example's label."""
    z = X @ W.T
    n, c = z.shape
    keep = numpy.ones((n, c), dtype=bool)
    keep[numpy.arange(n), y] = False
    zc = z[keep].reshape(n, c - 1)
    zc -= zc.max(axis=1, keepdims=True)
    p = numpy.exp(zc)
    p /= p.sum(axis=1, keepdims=True)
    return float(-(p * numpy.log(numpy.maximum(p, 1e-300))).sum(axis=1).mean())


def test_concentration_lowers_competitor_entropy():
    n, d, c = 2000, 64, 50
    h_spread = _mean_competitor_entropy(*make_heads_problem(n, d, c, 0.0, seed=0))
    h_mid = _mean_competitor_entropy(*make_heads_problem(n, d, c, 0.75, seed=0))
    h_conc = _mean_competitor_entropy(*make_heads_problem(n, d, c, 1.0, seed=0))
    assert h_spread <= numpy.log(c - 1)
    # Measured about 3.1 nats (spread) against 1.8 (concentrated) out of log(49) = 3.9.
    assert h_conc < h_spread - 0.75
    assert h_conc < h_mid < h_spread


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_samples=0), "n_samples"),
        (dict(n_features=0), "n_features"),
        (dict(n_classes=1), "n_classes"),
        (dict(competitor_concentration=-0.1), "competitor_concentration"),
        (dict(competitor_concentration=1.5), "competitor_concentration"),
        (dict(competitor_concentration=float("nan")), "competitor_concentration"),
    ],
)
def test_heads_problem_rejects_bad_values(kwargs, name):
    args = dict(n_samples=10, n_features=3, n_classes=4)
    args.update(kwargs)
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"`{name}`.*got {value}"):
        make_heads_problem(**args)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_samples=10.0), "n_samples"),
        (dict(n_classes=True), "n_classes"),
        (dict(competitor_concentration="high"), "competitor_concentration"),
        (dict(dtype="int64"), "dtype"),
    ],
)
def test_heads_problem_rejects_bad_types(kwargs, name):
    args = dict(n_samples=10, n_features=3, n_classes=4)
    args.update(kwargs)
    with pytest.raises(TypeError, match=rf"`{name}`"):
        make_heads_problem(**args)
