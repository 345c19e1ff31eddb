"""scripts/device_check.py without a GPU: its command line, its no-GPU exit, its helpers and a CPU dry run.

The GPU sections cannot run here; ``--device cpu`` (a hidden flag) runs every
section on NumPy at ``--quick`` sizes, which executes the same code paths.
The subprocesses get a ``cupy`` module that fails to import, so that they
behave the same on a machine with a GPU.
"""

import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


dc = load_script()


def run_without_cupy(tmp_path, *args):
    """The script in a subprocess where ``import cupy`` raises ImportError."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "cupy.py").write_text('raise ImportError("cupy blocked by the test")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_needs_no_cupy(tmp_path):
    done = run_without_cupy(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--out" in done.stdout
    assert "--device" not in done.stdout  # the CPU dry run is a hidden flag


def test_without_a_gpu_it_stops_after_the_environment_with_status_2(tmp_path):
    out = tmp_path / "report.md"
    done = run_without_cupy(tmp_path, "--quick", "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "No GPU found" in done.stdout
    assert "cupy blocked by the test" in done.stdout  # the reason, in words
    assert "== 2. GPU tests" not in done.stdout  # nothing else ran
    assert "RESULT: FAILED (1): No GPU found" in out.read_text()


@pytest.fixture
def small_quick(monkeypatch):
    """``--quick`` at smaller sizes, with both branches of the VJP (C <= D and C > D).

    N > 64, so that the stand-in runs no kernel under the CUDA simulator.
    """
    monkeypatch.delenv("CUPY_TF32", raising=False)  # the script sets it; restored after the test
    sizes = dataclasses.replace(dc.QUICK, parity=(128, 20, 16), table=(128, 64), classes=(10, 100), repeats=1)
    monkeypatch.setattr(dc, "QUICK", sizes)


def test_cpu_dry_run_runs_every_section_and_prints_the_table_last(tmp_path, small_quick, capsys):
    out = tmp_path / "report.md"
    status = dc.main(["--device", "cpu", "--quick", "--skip-tests", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert os.environ["CUPY_TF32"] == "0"
    assert "parity: 20 of 20 PASS" in printed
    last = printed.strip().splitlines()
    assert last[-4].startswith("| C ") and last[-1].startswith("| 100 ")
    assert "error" not in last[-2] + last[-1]
    report = out.read_text()
    assert report.rstrip().endswith("RESULT: OK")
    assert "| fgn_step(cg).direction | float32 |" in report


def test_a_section_that_raises_is_recorded_and_the_next_runs(small_quick, monkeypatch, capsys):
    parity_quantities, time_row = dc.parity_quantities, dc.time_row

    def broken_parity(xp, data, dtype):
        if dtype == "float64":
            raise RuntimeError("injected parity failure")
        return parity_quantities(xp, data, dtype)

    def broken_row(xp, device, C, sizes):
        if C == 10:
            raise RuntimeError("injected timing failure")
        return time_row(xp, device, C, sizes)

    monkeypatch.setattr(dc, "parity_quantities", broken_parity)
    monkeypatch.setattr(dc, "time_row", broken_row)
    status = dc.main(["--device", "cpu", "--quick", "--skip-tests"])
    printed = capsys.readouterr().out
    assert status == 1
    assert "RESULT: FAILED (2): 3. Parity, float64: RuntimeError: injected parity failure; " in printed
    assert "parity: 10 of 10 PASS" in printed  # float32 still ran
    last = printed.strip().splitlines()
    assert last[-2].startswith("| 10 ") and "error (see above)" in last[-2]
    assert last[-1].startswith("| 100 ") and "error" not in last[-1]


def test_relative_error():
    assert dc.relative_error([1.0, -2.0], [1.0, -2.0]) == 0.0
    assert dc.relative_error([1.0, -2.5], [1.0, -2.0]) == pytest.approx(0.25)
    # normwise: a small entry's error counts against the largest entry
    assert dc.relative_error([1e-3 + 1e-6, 4.0], [1e-3, 4.0]) == pytest.approx(2.5e-7)
    assert dc.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert dc.relative_error([1e-30, 0.0], [0.0, 0.0]) == math.inf
    assert dc.relative_error([np.nan, 1.0], [1.0, 1.0]) == math.inf
    assert dc.relative_error(np.float32(1.5), 2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shape"):
        dc.relative_error(np.ones(2), np.ones(3))


def test_verdict():
    assert dc.verdict(1e-13, 1e-12) == "PASS"
    assert dc.verdict(1e-12, 1e-12) == "PASS"
    assert dc.verdict(2e-12, 1e-12) == "FAIL"
    assert dc.verdict(math.nan, 1e-12) == "FAIL"


def test_per_iteration():
    assert dc.per_iteration(1.0, 8.0, 1, 8) == pytest.approx(1.0)
    assert dc.per_iteration(10, 38, 1, 8) == 4.0
    with pytest.raises(ValueError, match="n_iter_2"):
        dc.per_iteration(1.0, 2.0, 5, 5)


def test_markdown_table():
    table = dc.markdown_table(("C", "time (ms)"), [(100, "0.080"), (100000, "7.5")])
    assert table.splitlines() == [
        "| C      | time (ms) |",
        "|--------|-----------|",
        "| 100    | 0.080     |",
        "| 100000 | 7.5       |",
    ]
    with pytest.raises(ValueError, match="2 cells"):
        dc.markdown_table(("a", "b"), [(1,)])


def test_target_note():
    assert dc.target_note(100_000, 7e-3, 1.1) == "<= 1.15x floor: met"
    assert dc.target_note(10_000, 1e-3, 1.3) == "<= 1.15x floor: missed"
    assert dc.target_note(100, 0.08e-3, 3.0) == "<= 0.10 ms: met"
    assert dc.target_note(100, 0.12e-3, 3.0) == "<= 0.10 ms: missed"
    assert dc.target_note(1000, 1.0, 9.0) == ""


def test_pytest_summary_keeps_failures_and_the_closing_line():
    output = "..F.\nsome log\nFAILED tests/test_x.py::test_a - AssertionError\n\n1 failed, 3 passed in 2.0s\n"
    assert dc.pytest_summary(output) == [
        "FAILED tests/test_x.py::test_a - AssertionError",
        "1 failed, 3 passed in 2.0s",
    ]
    assert dc.pytest_summary("") == []
