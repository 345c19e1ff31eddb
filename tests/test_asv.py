"""The asv suite's set-up (asv_benchmarks/benchmarks) and CI's checks around it (asv_benchmarks/ci.py).

The suite itself runs in CI (``.ci/run``: ``asv run`` then ``asv publish``);
these tests check, in process and on the smallest cases, what a timing run
cannot show: the dtype of every operand, the thread pinning, the repeats,
the reuse of a case's set-up, and the graph check.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy
import pytest

ASV = Path(__file__).resolve().parent.parent / "asv_benchmarks"
sys.path.insert(0, str(ASV))
from benchmarks import common, products, steps  # noqa: E402

CASE_CLASSES = [
    cls
    for module in (products, steps)
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, common._Case) and not cls.__name__.startswith("_")
    and cls not in (common.LinearCase, common.TwoLayerCase)
]


def load_ci():
    spec = importlib.util.spec_from_file_location("asv_ci", ASV / "ci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_pinning(monkeypatch):
    """``setup`` without touching this process's thread pools; counts the calls."""
    calls = []
    monkeypatch.setattr(common, "pin_threads", lambda *args: calls.append(args))
    monkeypatch.setattr(common._Case, "_prepared", {})
    return calls


def test_every_case_class_is_found():
    names = {cls.__name__ for cls in CASE_CLASSES}
    assert {"LinearHeadProducts", "TwoLayerHeadProducts", "LinearHeadGemmFloor", "LinearHeadSteps",
            "TwoLayerHeadSteps", "LinearHeadIterations", "LinearHeadStepMemory"} <= names


def test_make_data_is_float32():
    # A NumPy float64 scalar times a float32 array is float64 (NEP 50): the suite once ran the
    # linear head in float64 while its GEMM floor was float32.
    X, y, W = common.make_data(64, 16, 5)
    assert X.dtype == numpy.float32 and W.dtype == numpy.float32 and y.shape == (64,)


@pytest.mark.parametrize("cls", CASE_CLASSES, ids=lambda cls: cls.__name__)
def test_setup_is_float32_and_reused(cls, no_pinning):
    bench = cls()
    bench.setup("cpu", 10)
    assert len(no_pinning) == 1  # pinned once, after the warm-up
    lin = bench.lin
    assert lin.X.dtype == lin.logits.dtype == numpy.float32
    assert bench.v.dtype == bench.a.dtype == numpy.float32
    if cls is products.LinearHeadGemmFloor:
        assert bench.V.dtype == bench.G.dtype == numpy.float32  # the floor's GEMMs in the iteration's dtype
    # asv runs setup again before each sample: the same batch, no new warm-up or pinning
    again = cls()
    again.setup("cpu", 10)
    assert again.lin is lin and len(no_pinning) == 1


def test_gpu_case_without_gpu_is_skipped(no_pinning):
    if common.HAS_GPU:
        pytest.skip("a GPU is present")
    with pytest.raises(NotImplementedError, match="backend 'gpu' needs CuPy"):
        products.LinearHeadProducts().setup("gpu", 10)
    with pytest.raises(NotImplementedError, match="CPU only"):
        steps.LinearHeadStepMemory().setup("gpu", 10)


@pytest.mark.parametrize("cls", CASE_CLASSES, ids=lambda cls: cls.__name__)
def test_timing_attributes(cls):
    # One process per case, at least 3 timed single calls, no warm-up beyond setup's
    # (benchmarks/common.py, "Timing"); asv reads these attributes from the class.
    assert cls.rounds == 1 and cls.number == 1 and cls.warmup_time == 0
    min_repeat, max_repeat, max_time = cls.repeat
    assert 3 <= min_repeat <= max_repeat and max_time > 0


def test_pin_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numba

    before = numba.get_num_threads()
    limits = threadpoolctl.threadpool_limits(limits=None)  # restores the pools below
    try:
        common.pin_threads(1)
        info = threadpoolctl.threadpool_info()
        assert info and all(pool["num_threads"] == 1 for pool in info), info  # SciPy's BLAS too
        assert numba.get_num_threads() == 1
    finally:
        common._thread_limits.restore_original_limits()
        limits.restore_original_limits()
        numba.set_num_threads(before)


def test_best_of_interleaved():
    calls = []
    best = common.best_of_interleaved(numpy, [lambda: calls.append("a"), lambda: calls.append("b")], repeats=4)
    assert calls == ["a", "b"] * 5  # one untimed call of each, then in turn
    assert len(best) == 2 and all(0 <= t < 1 for t in best)


def test_ci_config(tmp_path):
    pytest.importorskip("asv")
    ci = load_ci()
    path = ci.write_config(str(tmp_path), "topic", source=str(ASV / "asv.conf.json"))
    with open(path) as f:
        conf = json.load(f)
    assert conf["repo"] == str(ASV.parent) and conf["benchmark_dir"] == str(ASV / "benchmarks")
    assert conf["branches"] == ["topic"]
    for key in ("results_dir", "html_dir", "env_dir"):
        assert conf[key].startswith(str(tmp_path))
    assert conf["matrix"] == {"req": {"threadpoolctl": [""]}}  # installed next to the package by asv


def test_ci_graphs(tmp_path, capsys):
    ci = load_ci()
    (tmp_path / "results").mkdir()
    names = ["products.A.time_x", "steps.B.track_y"]
    (tmp_path / "results" / "benchmarks.json").write_text(json.dumps({**{n: {} for n in names}, "version": 2}))
    env = tmp_path / "html" / "graphs" / "arch-x86_64" / "branch-main" / "python-3.11"
    env.mkdir(parents=True)
    (env / "products.A.time_x.json").write_text("[]")
    summary = tmp_path / "html" / "graphs" / "summary"
    summary.mkdir()
    (summary / "steps.B.track_y.json").write_text("[]")  # the front page's: not a graph of the benchmark
    assert ci.main(["graphs", str(tmp_path)]) == 1
    assert "no graph for: steps.B.track_y" in capsys.readouterr().err
    (env / "steps.B.track_y.json").write_text("[]")
    assert ci.main(["graphs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "graphs of all 2 benchmarks" in out
    assert os.path.join("graphs", "arch-x86_64", "branch-main", "python-3.11", "steps.B.track_y.json") in out
