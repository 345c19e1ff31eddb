"""Tests of the ``fgn-arrays`` command line (fgn_arrays.cli), in process and as ``python -m fgn_arrays``."""

import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from conftest import HAS_GPU

from fgn_arrays import _backend, cli
from fgn_arrays.estimator import head_logits, make_head

LABELS = numpy.array(["ant", "bee", "cat"])


def run_module(*args, cwd=None):
    """``python -m fgn_arrays ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "fgn_arrays", *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture
def data(tmp_path):
    """A tiny data file: X (90, 4) float32, y strings in 3 classes; and its arrays."""
    rng = numpy.random.default_rng(0)
    X = rng.standard_normal((90, 4)).astype(numpy.float32)
    W = 2.0 * rng.standard_normal((3, 4))
    y = LABELS[numpy.argmax(X @ W.T + rng.gumbel(size=(90, 3)), axis=1)]
    path = tmp_path / "data.npz"
    numpy.savez(path, X=X, y=y)
    return path, X, y


@pytest.fixture
def model(tmp_path, data):
    path = tmp_path / "model.npz"
    assert cli.main(["fit", str(data[0]), "--out", str(path), "--max-iter", "20", "--device", "cpu", "--quiet"]) == 0
    return path


# ---- fit and predict, end to end ------------------------------------------------


def test_fit_predict_subprocess(tmp_path, data):
    path, _, y = data
    model, pred = tmp_path / "m.npz", tmp_path / "p.npz"
    fit = run_module("fit", path, "--out", model, "--max-iter", "20", "--device", "cpu")
    assert fit.returncode == 0, fit.stderr
    assert " iter " in fit.stdout and "objective" in fit.stdout  # per-step progress
    assert f"saved the model to {model}" in fit.stdout

    predict = run_module("predict", model, path, "--out", pred, "--device", "cpu")
    assert predict.returncode == 0, predict.stderr
    assert "accuracy" in predict.stdout
    with numpy.load(pred) as out:
        assert out["y_pred"].shape == (90,) and set(out["y_pred"]) <= set(LABELS)
        assert out["proba"].shape == (90, 3)
        numpy.testing.assert_allclose(out["proba"].sum(axis=1), 1.0)
        numpy.testing.assert_array_equal(out["classes"], LABELS)
        accuracy = numpy.mean(out["y_pred"] == y)
    assert f"accuracy {accuracy:.4f} on 90 rows" in predict.stdout
    assert accuracy > 0.6


def test_fit_two_layer_and_predict_in_process(tmp_path, data, capsys):
    path, X, _ = data
    model = tmp_path / "two.npz"
    argv = ["fit", str(path), "--out", str(model), "--head", "two-layer", "--hidden", "5",
            "--activation", "gelu", "--max-iter", "10", "--dtype", "float64", "--device", "cpu"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    with numpy.load(model) as m:
        assert str(m["format"]) == "fgn-arrays-model" and int(m["version"]) == 1
        assert str(m["head"]) == "two-layer" and str(m["activation"]) == "gelu" and str(m["dtype"]) == "float64"
        assert (int(m["n_features"]), int(m["n_hidden"]), int(m["n_classes"])) == (4, 5, 3)
        numpy.testing.assert_array_equal(m["classes"], LABELS)
        theta = m["theta"]
    head = make_head(4, 3, 5, "gelu")
    assert theta.shape == (head.n_params,) and theta.dtype == numpy.float64
    expected = LABELS[numpy.argmax(head_logits(head, theta, X), axis=1)]

    assert cli.main(["predict", str(model), str(path), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    numpy.testing.assert_array_equal(out.splitlines(), expected)  # one label per line on stdout
    assert err.startswith("accuracy ") and err.count("\n") == 1  # the summary on stderr


def test_hidden_alone_means_two_layer(tmp_path, data, capsys):
    # As FGNClassifier(hidden=H): --hidden without --head is a two-layer head.
    model = tmp_path / "m.npz"
    argv = ["fit", str(data[0]), "--out", str(model), "--hidden", "5", "--max-iter", "3", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    assert "training a two-layer head (D=4, H=5, C=3)" in capsys.readouterr().out
    with numpy.load(model) as m:
        assert str(m["head"]) == "two-layer" and int(m["n_hidden"]) == 5
        assert m["theta"].shape == (make_head(4, 3, 5).n_params,)
    # and no --hidden, no --head: linear
    assert cli.main(["fit", str(data[0]), "--out", str(model), "--max-iter", "3", "--device", "cpu", "--quiet"]) == 0
    with numpy.load(model) as m:
        assert str(m["head"]) == "linear" and int(m["n_hidden"]) == 0


def test_predict_without_y(tmp_path, model, data, capsys):
    X = data[1]
    path = tmp_path / "x_only.npz"
    numpy.savez(path, X=X[:7])
    assert cli.main(["predict", str(model), str(path), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 7 and err == ""


def test_fit_matches_fgnclassifier(tmp_path, data):
    # The command line and FGNClassifier share one training core: same seed, same parameters
    # (output biases centred by both).
    pytest.importorskip("sklearn")
    from fgn_arrays import FGNClassifier

    path, X, y = data
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(path), "--out", str(model), "--l2", "0.01", "--max-iter", "15",
                     "--seed", "4", "--device", "cpu", "--quiet"]) == 0
    clf = FGNClassifier(l2=0.01, max_iter=15, random_state=4, device="cpu").fit(X, y)
    with numpy.load(model) as m:
        numpy.testing.assert_array_equal(m["theta"], clf.theta_)
        assert abs(float(m["theta"][-3:].sum())) < 1e-6  # the 3 output biases, centred


@pytest.mark.parametrize("method, solver", [("fgn-compensated", "cg"), ("fgn", "cholesky"), ("ggn-pcg", "auto")])
def test_fit_method(tmp_path, data, method, solver, capsys):
    path, X, y = data
    model = tmp_path / "m.npz"
    argv = ["fit", str(path), "--out", str(model), "--method", method, "--solver", solver, "--dtype", "float64",
            "--max-iter", "50", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"rows by {method}, cpu, float64" in out
    assert "converged: ||grad||_inf <= tol" in out  # the default --tol 1e-4 is reached
    with numpy.load(model) as m:
        assert m["theta"].shape == (15,) and numpy.isfinite(m["theta"]).all()


def test_fit_method_matches_fgnclassifier(tmp_path, data):
    pytest.importorskip("sklearn")
    from fgn_arrays import FGNClassifier

    path, X, y = data
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(path), "--out", str(model), "--method", "fgn", "--tol", "1e-6", "--max-iter", "50",
                     "--seed", "2", "--device", "cpu", "--quiet"]) == 0
    clf = FGNClassifier(method="fgn", tol=1e-6, max_iter=50, random_state=2, device="cpu").fit(X, y)
    with numpy.load(model) as m:
        numpy.testing.assert_array_equal(m["theta"], clf.theta_)


PROGRESS_COLUMNS = ("iter", "objective", "|grad|_inf", "damping", "rho", "cg", "step", "a", "b", "s")


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_help_explains_every_progress_column(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--method {fgn-compensated,fgn,ggn-pcg}" in text
    explained = text.split("progress (one line per step")[1]
    # Each column starts a line of the explanation ("a, b" share one).
    starts = {line.split()[0].rstrip(",") for line in explained.splitlines()[1:] if line.startswith("  ")}
    starts |= {"b"} if "  a, b " in explained else set()
    assert set(PROGRESS_COLUMNS) <= starts, set(PROGRESS_COLUMNS) - starts
    if command == "fit":
        assert "--tol TOL" in text and "(default 1e-4)" in text and "||grad||_inf <=" in text


def test_progress_header_has_the_explained_columns(tmp_path, data, capsys):
    assert cli.main(["fit", str(data[0]), "--out", str(tmp_path / "m.npz"), "--max-iter", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["iter"])
    assert tuple(header.split()) == PROGRESS_COLUMNS
    first = out.splitlines()[out.splitlines().index(header) + 1].split()
    assert len(first) == len(PROGRESS_COLUMNS) and first[6] in ("accepted", "rejected")


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "fgn-arrays")
    if not os.path.exists(script):
        pytest.skip("the fgn-arrays console script is not installed next to this Python")
    proc = subprocess.run([script, "--version"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("fgn-arrays ")


# ---- errors: one line on stderr, exit status 2, no traceback ------------------------


def bad_files(tmp_path, X, y):
    """(name, argv builder) of error cases; each writes what it needs under tmp_path."""

    def save(name, **arrays):
        path = tmp_path / name
        numpy.savez(path, **arrays)
        return str(path)

    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    def npy(name):
        path = tmp_path / name
        numpy.save(path, X)
        return str(path)

    out = str(tmp_path / "out.npz")
    return {
        "missing file": (["fit", str(tmp_path / "nope.npz"), "--out", out], "nope.npz: no such file"),
        "directory": (["fit", str(tmp_path), "--out", out], "is a directory"),
        "not an npz": (["fit", write("text.npz", "hello"), "--out", out], "not a NumPy .npz data file"),
        "npy not npz": (["fit", npy("a.npy"), "--out", out], "a single .npy array"),
        "no X": (["fit", save("noX.npz", features=X, y=y), "--out", out], "no array 'X'"),
        "no y": (["fit", save("noy.npz", X=X), "--out", out], "no array 'y'"),
        "X 1-D": (["fit", save("x1d.npz", X=X[:, 0], y=y), "--out", out], "X must be 2-D"),
        "X strings": (["fit", save("xstr.npz", X=X.astype(str), y=y), "--out", out], "X must hold real numbers"),
        "X NaN": (["fit", save("nan.npz", X=numpy.where(X > 1.5, numpy.nan, X), y=y), "--out", out],
                  "X must be finite; got"),
        "y length": (["fit", save("ylen.npz", X=X, y=y[:-1]), "--out", out], "y must have shape (90,)"),
        "y continuous": (["fit", save("yf.npz", X=X, y=X[:, 0]), "--out", out], "non-integer floats"),
        "one class": (["fit", save("one.npz", X=X, y=numpy.zeros(len(X), int)), "--out", out],
                      "at least 2 classes; got 1 class"),
        "object array": (["fit", save("obj.npz", X=X, y=numpy.array(list(y), dtype=object)), "--out", out],
                         "cannot read array 'y'"),
        "out folder": (["fit", save("ok.npz", X=X, y=y), "--out", str(tmp_path / "no" / "m.npz")],
                       "cannot write (no folder"),
        "hidden with linear": (["fit", save("ok2.npz", X=X, y=y), "--out", out, "--head", "linear", "--hidden", "3"],
                               "--hidden 3 gives a two-layer head; it does not go with --head linear"),
        "negative l2": (["fit", save("ok3.npz", X=X, y=y), "--out", out, "--l2", "-1"], "--l2 must be finite"),
        "solver for method": (["fit", save("ok6.npz", X=X, y=y), "--out", out, "--method", "ggn-pcg",
                               "--solver", "cg"], "--solver cg does not go with --method ggn-pcg"),
        "data as model": (["predict", save("ok4.npz", X=X, y=y), save("ok5.npz", X=X)],
                          "not an fgn-arrays model file"),
    }


def check_one_line_error(code, err, expected):
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fgn-arrays: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case",
    ["missing file", "directory", "not an npz", "npy not npz", "no X", "no y", "X 1-D", "X strings", "X NaN",
     "y length", "y continuous", "one class", "object array", "out folder", "hidden with linear",
     "negative l2", "solver for method", "data as model"],
)
def test_bad_input_in_process(tmp_path, data, case, capsys):
    argv, expected = bad_files(tmp_path, data[1], data[2])[case]
    code = cli.main(argv + ["--device", "cpu"] if argv[0] == "fit" else argv)
    check_one_line_error(code, capsys.readouterr().err, expected)


def test_feature_mismatch(tmp_path, model, data, capsys):
    path = tmp_path / "wide.npz"
    numpy.savez(path, X=numpy.ones((5, 6)), y=LABELS[:1].repeat(5))
    code = cli.main(["predict", str(model), str(path), "--device", "cpu"])
    check_one_line_error(code, capsys.readouterr().err, f"X has 6 features, but the model {model} was trained on 4")


def test_label_kind_mismatch(tmp_path, model, data, capsys):
    path = tmp_path / "intlabels.npz"
    numpy.savez(path, X=data[1], y=numpy.zeros(len(data[1]), int))
    code = cli.main(["predict", str(model), str(path), "--device", "cpu"])
    check_one_line_error(code, capsys.readouterr().err, "y holds numeric labels")


def test_corrupt_model(tmp_path, model, data, capsys):
    with numpy.load(model) as m:
        arrays = dict(m)
    arrays["theta"] = arrays["theta"][:-1]
    bad = tmp_path / "bad_model.npz"
    numpy.savez(bad, **arrays)
    code = cli.main(["predict", str(bad), str(data[0]), "--device", "cpu"])
    check_one_line_error(code, capsys.readouterr().err, "theta must be float32 of shape (15,)")


@pytest.mark.parametrize("case", ["not an npz", "X NaN", "data as model"])
def test_bad_input_subprocess(tmp_path, data, case):
    argv, expected = bad_files(tmp_path, data[1], data[2])[case]
    proc = run_module(*argv)
    check_one_line_error(proc.returncode, proc.stderr, expected)


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
@pytest.mark.parametrize("command", ["fit", "demo"])
def test_gpu_requested_without_gpu(data, tmp_path, capsys, command):
    argv = ["fit", str(data[0]), "--out", str(tmp_path / "m.npz")] if command == "fit" else ["demo"]
    code = cli.main(argv + ["--device", "gpu"])
    err = capsys.readouterr().err
    check_one_line_error(code, err, "--device gpu: `device` is 'gpu' but a GPU is not available")
    assert "pip install 'fgn_arrays[gpu-cuda12]' or 'fgn_arrays[gpu-cuda13]'" in err


@pytest.mark.parametrize(
    "driver, expected",
    [(None, "no CUDA driver was found here"), ((12, 4), "supports CUDA 12.4: gpu-cuda12"),
     ((13, 0), "supports CUDA 13.0: gpu-cuda13"), ((14, 1), "supports CUDA 14.1: gpu-cuda13"),
     ((11, 8), "supports CUDA 11.8 only; both extras need CUDA 12 or later")],
)
def test_gpu_error_names_the_extra_for_the_driver(monkeypatch, driver, expected):
    # The message of device="gpu" without a GPU (estimator, minimize and --device gpu share it):
    # both extras' install commands, and the one the driver's CUDA version asks for.
    monkeypatch.setattr(_backend, "_driver_cuda_version", lambda: driver)
    message = _backend._gpu_missing_message()
    assert message.startswith("`device` is 'gpu' but a GPU is not available: CuPy ")
    assert "pip install 'fgn_arrays[gpu-cuda12]' or 'fgn_arrays[gpu-cuda13]'" in message
    assert expected in message


def test_driver_cuda_version_is_read_quietly():
    version = _backend._driver_cuda_version()  # None without an NVIDIA driver
    assert version is None or (len(version) == 2 and version[0] >= 1 and all(isinstance(v, int) for v in version))
    if HAS_GPU:
        assert version is not None


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit"])  # argparse: missing DATA.npz and --out
    assert exc.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit", "data.npz", "--out", "m.npz", "--method", "newton"])
    assert exc.value.code == 2
    assert "argument --method: invalid choice: 'newton'" in capsys.readouterr().err


# ---- demo -------------------------------------------------------------------------


def test_demo_no_sklearn_subprocess():
    proc = run_module("demo", "--max-iter", "2", "--no-sklearn", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "WordNet glosses (min_per_class=50): 12208 train / 3052 test rows, 384 features, 133 classes" in out
    assert " iter " in out  # progress
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert all(col in header for col in ("objective (train)", "train acc", "test acc", "seconds"))
    assert any(line.startswith("FGN (2 steps)") for line in out.splitlines())
    assert "LogisticRegression" not in out.split(header)[1]


def test_demo_with_sklearn_in_process(capsys):
    pytest.importorskip("sklearn")
    # 8 classes of >= 300 glosses keep scikit-learn's fit short.
    assert cli.main(["demo", "--min-per-class", "300", "--max-iter", "20", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    table = out.split("\nmethod ")[1].splitlines()[1:]
    rows = {line.split(" (")[0]: line.split() for line in table}
    assert set(rows) == {"FGN", "LogisticRegression"}
    objective = {name: float(r[-4]) for name, r in rows.items()}
    # Same regularisation, same objective formula: newton-cg stops at tol=1e-4, near the
    # optimum, and FGN's 20 steps reach it too (how close exactly is test_estimator's business).
    assert objective["FGN"] == pytest.approx(objective["LogisticRegression"], rel=1e-3)
    assert objective["FGN"] < numpy.log(8)  # below the objective at zero weights


def test_demo_method(capsys):
    assert cli.main(["demo", "--min-per-class", "300", "--max-iter", "3", "--method", "ggn-pcg", "--no-sklearn",
                     "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "FGN: linear head, ggn-pcg, at most 3 steps" in out
    assert any(line.startswith("FGN (") for line in out.splitlines())


def test_demo_bad_option(capsys):
    assert cli.main(["demo", "--min-per-class", "5"]) == 2
    check_one_line_error(2, capsys.readouterr().err, "--min-per-class must be at least 20")


def test_stratified_split():
    y = numpy.repeat(numpy.arange(4), [10, 20, 30, 41])
    train, test = cli.stratified_split(y, test_size=0.2, seed=0)
    assert len(numpy.intersect1d(train, test)) == 0
    numpy.testing.assert_array_equal(numpy.sort(numpy.concatenate([train, test])), numpy.arange(len(y)))
    numpy.testing.assert_array_equal(numpy.bincount(y[test]), [2, 4, 6, 8])
    again = cli.stratified_split(y, test_size=0.2, seed=0)
    numpy.testing.assert_array_equal(again[1], test)
    assert not numpy.array_equal(cli.stratified_split(y, test_size=0.2, seed=1)[1], test)


def block_sklearn(monkeypatch):
    """Make ``import sklearn`` (and its submodules, imported or not) raise ImportError."""
    for name in [name for name in sys.modules if name == "sklearn" or name.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)


def demo_rows(out):
    """The demo's first line and its result table, ``{name: fields}`` (seconds left out)."""
    table = out.split("\nmethod ")[1].splitlines()[1:]
    rows = {line.split(" (")[0]: line.split()[:-1] for line in table if line and not line.startswith("(")}
    return out.splitlines()[0], rows


def test_demo_split_does_not_depend_on_sklearn(monkeypatch, capsys):
    # The same split, so the same FGN row, with scikit-learn installed (which adds its row)
    # and with it not importable: the split is the library's own.
    pytest.importorskip("sklearn")
    from fgn_arrays.datasets import load_wordnet_glosses

    y = load_wordnet_glosses(min_per_class=50).y
    split = cli.stratified_split(y, test_size=0.2, seed=0)
    argv = ["demo", "--min-per-class", "300", "--max-iter", "5", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    first, rows = demo_rows(capsys.readouterr().out)
    assert set(rows) == {"FGN", "LogisticRegression"}

    block_sklearn(monkeypatch)
    assert cli.import_sklearn() is None
    with pytest.raises(ImportError):
        import sklearn.model_selection  # noqa: F401
    for a, b in zip(split, cli.stratified_split(y, test_size=0.2, seed=0)):
        numpy.testing.assert_array_equal(a, b)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # same rows, same FGN run: the same objective and accuracies
    assert demo_rows(out) == (first, {"FGN": rows["FGN"]})
    assert "pip install '.[demo]' adds the LogisticRegression row" in out


def test_main_job_installs_sklearn():
    # README's first set-up command installs the demo extra, and that extra brings scikit-learn,
    # so that the main job prints its LogisticRegression row on a fresh machine.
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    python -m venv")]
    assert commands[0] == "python -m venv .venv && .venv/bin/pip install '.[demo]' && .venv/bin/fgn-arrays demo"
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("scikit-learn") for req in extras["demo"])
