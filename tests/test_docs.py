"""The documentation cannot rot silently: its tutorials run, their printed output is checked, its links resolve.

Tutorials (``docs/tutorials/*.md``)
    Each page's ```python blocks run in order in one namespace (as a reader
    would paste them), with BLAS and Numba on one thread (the runtime of a
    page must not depend on what else shares the cores). A ```text block
    right after a ```python block is that block's printed output: the test
    compares it with what the block prints, text exactly and numbers to a
    relative tolerance (float32 results differ in their last digits between
    BLAS builds and between CPU and GPU; integers, which count iterations and
    steps, to ``COUNT_RTOL``, since one more or one fewer iteration is a
    rounding difference too); wall-clock times (``0.42 s``) are shown but not
    compared. The block that imports CuPy runs on
    CuPy where there is a GPU and on the CPU stand-in for CuPy elsewhere
    (``cp`` bound to the stand-in's namespace), as in test_readme.py. The JAX
    page needs jax (skipped without it).
asv tutorial
    Its commands are shell, not Python: each ``asv ...`` line must parse with
    asv's own command-line parser (when asv is installed), and the commands
    README's recipe shares with it must read the same in both.
Getting started
    README's two set-up commands appear there verbatim, and every extra it
    names is an extra of pyproject.toml.
References
    No page cites a file that is not in the repository (the design notes and
    style guide are not), and every repository path a page names exists.
The site (where the docs extra is installed)
    ``sphinx-build -W`` builds it, and ``docs/check_site.py`` finds nothing
    loaded from the network, MathJax served from the site itself, the
    derivation's equations numbered, and (where Node.js is installed) every
    expression of every page typeset by that MathJax.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HAS_GPU

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
CUPY_IMPORT = "import cupy as cp\n"
# A fenced block: its language and its text (MyST/CommonMark, three backticks).
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.S | re.M)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# Integers in printed output (iteration and step counts; shapes are asserted exactly by the tests).
COUNT_RTOL = 0.25
# A wall-clock time in printed output ("0.42 s"): shown on the page, never compared.
SECONDS = re.compile(r"\b\d+(?:\.\d+)? s\b")


def fenced_blocks_of(text):
    """``[(language, text), ...]`` of the fenced blocks of a Markdown text, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def fenced_blocks(path):
    return fenced_blocks_of(path.read_text())


def blocks_with_output(path):
    """``[(code, expected_output or None), ...]``: each ```python block and the ```text block right after it."""
    blocks = fenced_blocks(path)
    out = []
    for i, (lang, text) in enumerate(blocks):
        if lang == "python":
            following = blocks[i + 1] if i + 1 < len(blocks) else (None, None)
            out.append((text, following[1] if following[0] == "text" else None))
    return out


def assert_same_output(printed, expected, rtol, where):
    """Text equal token for token; numbers to ``rtol`` (integers: ``COUNT_RTOL``); times not compared."""
    printed, expected = SECONDS.sub("# s", printed), SECONDS.sub("# s", expected)
    got_lines, want_lines = printed.strip().splitlines(), expected.strip().splitlines()
    assert len(got_lines) == len(want_lines), f"{where}: printed\n{printed}\nthe page shows\n{expected}"
    for got, want in zip(got_lines, want_lines):
        got_numbers, want_numbers = NUMBER.findall(got), NUMBER.findall(want)
        assert NUMBER.sub("#", got).split() == NUMBER.sub("#", want).split(), f"{where}: printed {got!r}, page {want!r}"
        for g, w in zip(got_numbers, want_numbers):
            tolerance = max(rtol, COUNT_RTOL) if re.fullmatch(r"[-+]?\d+", w) else rtol
            assert math.isclose(float(g), float(w), rel_tol=tolerance, abs_tol=1e-12), (
                f"{where}: printed {got!r}, the page shows {want!r} ({g} vs {w}, rtol {tolerance})"
            )


@contextlib.contextmanager
def one_thread():
    """BLAS/OpenMP (threadpoolctl) and Numba on one thread, restored afterwards."""
    import numba
    from threadpoolctl import threadpool_limits

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        numba.set_num_threads(threads)


def run_page(name, rtol=1e-3):
    """Run a tutorial's Python blocks in one namespace, checking each shown output; return the namespace."""
    from fgn_arrays.testing import use_standin

    path = TUTORIALS / name
    namespace = {"__name__": f"docs_{path.stem}"}
    blocks = blocks_with_output(path)
    assert blocks, f"{path} has no Python blocks"
    with one_thread(), contextlib.ExitStack() as standin:
        for k, (code, expected) in enumerate(blocks, start=1):
            if CUPY_IMPORT in code and not HAS_GPU:
                # from here on, the page's CuPy is the stand-in (as CuPy stays imported for a reader)
                namespace["cp"] = standin.enter_context(use_standin())
                code = code.replace(CUPY_IMPORT, "")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, str(path), "exec"), namespace)
            if expected is not None:
                assert_same_output(printed.getvalue(), expected, rtol, f"{path.name}, Python block {k}")
    return namespace


# -- the tutorials ------------------------------------------------------------


def test_every_tutorial_is_tested():
    pages = {p.name for p in TUTORIALS.glob("*.md")} - {"index.md"}
    assert pages == {"numpy_cupy.md", "wordnet.md", "jax.md", "asv.md"}


def test_numpy_cupy_page():
    ns = run_page("numpy_cupy.md")
    # the FGN steps lower the loss, and both backends took the same path
    assert ns["losses_cpu"][0] > ns["losses_cpu"][-1] + 0.5
    # (float32 on both; on a real GPU cuBLAS sums in another order, hence 1e-4 rather than equality)
    np.testing.assert_allclose(ns["losses_gpu"], ns["losses_cpu"], rtol=1e-4)
    np.testing.assert_allclose(ns["theta_gpu"].get(), ns["theta_cpu"], rtol=1e-4, atol=1e-4)  # .get(): CuPy or stand-in


def test_wordnet_page():  # a ConvergenceWarning of LogisticRegression fails it: the page says both converge
    ns = run_page("wordnet.md")
    assert ns["X_train"].shape == (3287, 384) and ns["fgn"].coef_.shape == (30, 384)
    # same objective, so the same fit: the two optima agree, and so do the predictions on most test rows
    f_fgn, f_sk = ns["objectives"]["FGNClassifier"], ns["objectives"]["LogisticRegression"]
    assert abs(f_fgn - f_sk) <= 2e-4 * f_sk
    assert ns["agree"] > 0.97
    assert ns["fgn"].n_iter_ < ns["fgn"].max_iter


def test_jax_page():
    pytest.importorskip("jax")
    ns = run_page("jax.md", rtol=2e-2)  # float32 trajectories of JAX; XLA versions reorder sums
    # one FGN step decreases the objective, and training goes further
    assert ns["step"].converged and ns["f_after_step"] < ns["f0"]
    assert ns["res"].objective < ns["f_after_step"] and ns["res"].n_iter == 20
    assert ns["calls"]["jvp"] > ns["calls"]["forward"] > 0  # CG iterations: one JVP and one VJP each


# -- the asv tutorial -----------------------------------------------------------


def asv_commands(text):
    """The ``asv ...`` command lines of the shell blocks of a text (prompt and comment removed)."""
    commands = []
    for lang, block in fenced_blocks_of(text):
        if lang not in ("console", "bash", "shell", "sh"):
            continue
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ").split("  #")[0].strip()
            if line.startswith("asv "):
                commands.append(line)
    return commands


def readme_asv_commands():
    """README's indented asv recipe lines (comments removed)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return {line.strip().split("  #")[0].strip() for line in lines if line.startswith("    asv ")}


def test_asv_page_commands_parse():
    asv_commands_module = pytest.importorskip("asv.commands")
    commands = asv_commands((TUTORIALS / "asv.md").read_text())
    assert len(commands) >= 6
    parser, _ = asv_commands_module.make_argparser()
    for line in commands:
        for command in line.split("&&"):  # `asv publish && asv preview`
            argv = shlex.split(command.replace("$(git rev-parse HEAD)", "0123abcd"))
            assert argv[0] == "asv", f"docs/tutorials/asv.md: {line!r}"
            try:
                parser.parse_args(argv[1:])
            except SystemExit:  # argparse's error, already printed to stderr
                pytest.fail(f"docs/tutorials/asv.md: asv rejects {command.strip()!r}")


def test_asv_page_agrees_with_readme():
    page = set(asv_commands((TUTORIALS / "asv.md").read_text()))
    readme = readme_asv_commands()
    assert readme, "README.md no longer shows its asv recipe"
    # every step of README's recipe is in the tutorial, written the same way
    assert readme <= page, f"README's asv commands missing from the tutorial: {sorted(readme - page)}"


# -- getting started --------------------------------------------------------------


def test_getting_started_quotes_readme():
    page = (DOCS / "getting_started.md").read_text()
    readme = (ROOT / "README.md").read_text()
    setup = [line.strip() for line in readme.splitlines() if line.startswith("    python -m venv .venv")]
    assert len(setup) == 2, "README.md should show its two set-up commands"
    for command in setup:
        assert f"    {command}\n" in page, f"getting_started.md does not quote README's {command!r}"
    for extra in ("gpu-cuda12", "gpu-cuda13"):
        assert f"pip install '.[{extra}]'" in readme and f"pip install '.[{extra}]'" in page


def test_getting_started_extras_exist():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomli = pytest.importorskip("tomli")
        tomllib = tomli
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    page = (DOCS / "getting_started.md").read_text()
    named = set(re.findall(r"^\| `([\w-]+)` \|", page, flags=re.M))
    assert named >= {"gpu-cuda12", "gpu-cuda13", "test", "demo"}
    assert named <= extras, f"getting_started.md names extras pyproject.toml lacks: {sorted(named - extras)}"
    assert extras <= named, f"extras of pyproject.toml getting_started.md does not list: {sorted(extras - named)}"


# -- references -------------------------------------------------------------------

# Files that live outside the repository (the project's notes): a page must not cite them.
OUTSIDE = ("DESIGN.md", "DESIGN §", "STYLE.md", "PAPER.md", "../shared", "/work/", "issue14")
# Repository paths a page may name, e.g. `scripts/bench_methods.py`, `examples/jax_mlp.py`.
REPO_PATH = re.compile(r"\b((?:scripts|examples|asv_benchmarks|tests|fgn_arrays|docs|\.ci)/[\w./-]*\w)")


def doc_sources():
    return sorted(p for p in DOCS.rglob("*") if p.suffix in (".md", ".rst") and "_build" not in p.parts)


def test_docs_cite_no_file_outside_the_repository():
    for page in doc_sources():
        text = page.read_text()
        for name in OUTSIDE:
            assert name not in text, f"{page.relative_to(ROOT)} cites {name!r}, which is not in the repository"


def test_repository_paths_named_in_the_docs_exist():
    missing = []
    for page in doc_sources():
        for path in set(REPO_PATH.findall(page.read_text())):
            target = ROOT / path
            if not target.exists() and not target.with_suffix(".py").exists():  # `fgn_arrays/heads/callable` etc.
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)


# -- the built site ---------------------------------------------------------------


def test_site_builds_with_math_offline(tmp_path):
    for module in ("sphinx", "pydata_sphinx_theme", "numpydoc", "myst_parser", "sphinx-mathjax-offline"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install '.[docs]')")
    site = tmp_path / "html"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(site)],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert build.returncode == 0, f"sphinx-build -W failed:\n{build.stdout}\n{build.stderr}"
    check = [sys.executable, str(DOCS / "check_site.py"), str(site)]
    if shutil.which("node") or shutil.which("nodejs"):
        check.insert(2, "--render")
    result = subprocess.run(check, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"docs/check_site.py:\n{result.stdout}\n{result.stderr}"
