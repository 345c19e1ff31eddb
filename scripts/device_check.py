"""One command for a GPU machine: environment, GPU tests, CPU/GPU parity, timing table.

Usage, from the repository root, with the packages already installed (it
installs nothing and needs no network)::

    PYTHONPATH=. python scripts/device_check.py                 # the full check, ~3 min on an H200
    PYTHONPATH=. python scripts/device_check.py --quick         # smaller sizes: a smoke run
    PYTHONPATH=. python scripts/device_check.py --out check.md  # the report as markdown, too

Sections, in this order; each one that raises is recorded, and the next runs:

1. Environment: versions of Python, NumPy, CuPy, Numba and numba-cuda; the
   GPU's name, compute capability and memory; ``fa.gpu_available()``. Without
   a GPU the script stops here with exit status 2.
2. GPU tests: ``python -m pytest -m gpu -q -p no:cacheprovider`` in a
   subprocess, with ``FGN_REQUIRE_GPU=1`` (a missing GPU fails rather than
   skips), stopped after ``--test-timeout`` seconds.
3. Parity: the linear head at N=4096, C=1000, D=256 in float64 and float32,
   on NumPy and on CuPy from the same host data: margin statistics, gradient,
   margin JVP and VJP, FGN and GGN products, and the direction of
   ``fgn_step(solver="cg", rtol=1e-6)``. Relative error (see
   :func:`relative_error`) at most 1e-12 in float64 and 1e-5 in float32; the
   CG directions, whose iteration counts may differ by rounding, get 1e-6
   and 1e-4.
4. Timing: the linear head at N=1024, D=1024, float32, C = 100 ... 100000,
   on the GPU: one row-space CG iteration (ms, and as a multiple of the
   two-GEMM floor ``X @ V_W.T`` + ``G.T @ X``), kernel launches per
   iteration (counted on the CPU stand-in for CuPy, :mod:`fgn_arrays.testing`,
   at C=100: the count does not depend on C), ``fgn_step`` with
   ``solver="cg"`` and ``"cholesky"``, and ``margin_stats``. One CG iteration
   is ``(t(k2) - t(k1)) / (k2 - k1)`` with ``t(k)`` the time of
   ``fgn_step(..., rtol=0, maxiter=k)``, ``k1 = 1`` and ``k2 = 8``, on a
   system where CG cannot converge in ``k2`` iterations (weights of scale 3,
   damping ``CG_DAMPING``; that exactly ``k`` iterations ran is checked).
   GEMMs in strict float32: the script sets ``CUPY_TF32=0``.
5. The timing table, printed last.

Exit status: 0 when every section ran and every parity check passed;
1 otherwise; 2 when no GPU was found. The targets printed beside the timings
(CG iteration <= 1.15x the floor for C >= 1e4, <= 0.10 ms at C = 100) are
not asserted. ``--device cpu`` (not in ``--help``) runs every section on
NumPy instead of CuPy: a dry run of the code paths, for use with ``--quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import fgn_arrays as fa
from fgn_arrays._timing import best_of

ROOT = Path(__file__).resolve().parent.parent

DAMPING = 1e-2
L2 = 1e-4
RTOL = 1e-6

# Relative error (max |got - want| / max |want|) allowed between NumPy and CuPy.
PARITY_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
# The CG directions: both stop at ||r|| <= 1e-6 ||b||, possibly after different
# iteration counts, so they agree to about the solver's accuracy only.
STEP_TOLERANCE = {"float64": 1e-6, "float32": 1e-4}

# Targets printed beside the timings (not asserted).
TARGET_RATIO, TARGET_RATIO_MIN_CLASSES = 1.15, 10_000
TARGET_SMALL_MS, TARGET_SMALL_CLASSES = 0.10, 100

# The per-iteration timing's system: weights of this scale (logits of standard
# deviation ~3) and this damping keep CG with rtol=0 from converging (or its
# residual from underflowing) within k2 iterations. At init_params weights the
# row-space matrix is nearly I and float32 CG reaches r = 0 in 7-18 iterations.
CG_WEIGHT_SCALE = 3.0
CG_DAMPING = 1e-5
# The stand-in counts launches at this many classes (the count does not depend on C).
STANDIN_CLASSES = 100
# Device memory needed by one timing row, in (N, C) float32 arrays: the logits
# twice (linearize's and margin_stats' input), U, the floor's G and X V^T,
# and the temporaries of a CG iteration and of margin_stats.
ROW_ARRAYS = 10


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run.

    Attributes
    ----------
    parity : tuple of int
        ``(N, C, D)`` of the parity section.
    table : tuple of int
        ``(N, D)`` of the timing table.
    classes : tuple of int
        ``C`` of each row of the timing table.
    iterations : tuple of int
        ``(k1, k2)``: the two ``maxiter`` whose time difference gives one CG iteration.
    repeats, warmup : int
        Passed to :func:`fgn_arrays._timing.best_of`.
    """

    parity: tuple
    table: tuple
    classes: tuple
    iterations: tuple
    repeats: int
    warmup: int


# k2 = 8 is CG's default check interval on the GPU: both timed runs end with
# the same single host check point, so the difference holds iterations only.
FULL = Sizes((4096, 1000, 256), (1024, 1024), (100, 1000, 10_000, 100_000), (1, 8), repeats=20, warmup=1)
QUICK = Sizes((512, 100, 64), (256, 128), (100, 1000), (1, 8), repeats=3, warmup=1)


# ---- pure helpers ---------------------------------------------------------------


def say(*args):
    """``print`` that flushes at once, so a killed run still shows what it did."""
    print(*args, flush=True)


def relative_error(got, want):
    """``max |got - want| / max |want|``, in float64.

    Parameters
    ----------
    got, want : array_like, same shape
        Host arrays (or scalars).

    Returns
    -------
    float
        0 when both are zero; ``inf`` when ``got`` is not finite or ``want``
        is zero and ``got`` is not.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"`got` must have the shape of `want`, {want.shape}; got {got.shape}.")
    if not np.all(np.isfinite(got)):
        return float("inf")
    diff = float(np.max(np.abs(got - want), initial=0.0))
    scale = float(np.max(np.abs(want), initial=0.0))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0.0 else float("inf")


def verdict(error, tolerance):
    """``"PASS"`` when ``error <= tolerance``, else ``"FAIL"`` (NaN fails)."""
    return "PASS" if error <= tolerance else "FAIL"


def per_iteration(value_1, value_2, n_iter_1, n_iter_2):
    """``(value_2 - value_1) / (n_iter_2 - n_iter_1)``: the cost of one iteration.

    Raises
    ------
    ValueError
        If ``n_iter_2 <= n_iter_1`` (no iterations to divide by).
    """
    if n_iter_2 <= n_iter_1:
        raise ValueError(f"`n_iter_2` must exceed `n_iter_1`; got {n_iter_2} and {n_iter_1}.")
    return (value_2 - value_1) / (n_iter_2 - n_iter_1)


def markdown_table(headers, rows):
    """A markdown table with padded columns.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequence
        Each row as many cells as ``headers``; cells are formatted with ``str``.

    Returns
    -------
    str
        Header line, separator line and one line per row, no trailing newline.
    """
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError(f"every row must have {len(headers)} cells; got {[len(r) for r in cells]}.")
    widths = [max(len(row[j]) for row in cells) for j in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), separator] + [line(row) for row in cells[1:]])


def target_note(C, iteration_s, ratio):
    """The target of a timing row and whether it is met, or ``""`` where there is none."""
    if C >= TARGET_RATIO_MIN_CLASSES:
        return f"<= {TARGET_RATIO}x floor: {'met' if ratio <= TARGET_RATIO else 'missed'}"
    if C == TARGET_SMALL_CLASSES:
        return f"<= {TARGET_SMALL_MS:.2f} ms: {'met' if 1e3 * iteration_s <= TARGET_SMALL_MS else 'missed'}"
    return ""


def dist_version(*names):
    """Version of the first installed distribution of ``names``, as ``"name version"``."""
    for name in names:
        try:
            return f"{importlib.metadata.version(name)} ({name})"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def ms(seconds):
    """Seconds as milliseconds with three decimals."""
    return f"{1e3 * seconds:.3f}"


# ---- the report: sections record their failures and the run goes on ---------------


class Report:
    """What the sections found, printed as it comes and kept as markdown.

    Parameters
    ----------
    out : pathlib.Path, optional
        Rewritten with the markdown so far after every section, so a run that
        is stopped still leaves what it measured.
    """

    def __init__(self, out=None):
        self.out = out
        self.failures = []
        self.blocks = []

    @contextlib.contextmanager
    def section(self, title):
        """Run the ``with`` body as a section: print its title and time; record an exception."""
        say(f"\n== {title} ==")
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:  # the run goes on; the failure is reported and sets the exit status
            say(traceback.format_exc().rstrip())
            self.fail(f"{title}: {type(exc).__name__}: {exc}")
        finally:
            say(f"({title}: {time.perf_counter() - t0:.1f} s)")
            self.save()

    def fail(self, what):
        """Record a failure (it makes the exit status 1)."""
        self.failures.append(what)
        say(f"FAIL: {what}")
        self.save()

    def add(self, block):
        """Append a markdown block to the report."""
        self.blocks.append(block)
        self.save()

    def result_line(self):
        """``"RESULT: OK"`` or the failures, one line."""
        if not self.failures:
            return "RESULT: OK"
        return f"RESULT: FAILED ({len(self.failures)}): " + "; ".join(self.failures)

    def save(self):
        """Write the markdown so far to ``out`` (nothing without ``--out``)."""
        if self.out is not None:
            self.out.write_text("\n\n".join(self.blocks + [self.result_line()]) + "\n")


# ---- 1. environment ---------------------------------------------------------------


def strict_float32():
    """Set ``CUPY_TF32=0`` (strict float32 GEMMs) before CuPy's first GEMM; say what it was."""
    before = os.environ.get("CUPY_TF32")
    os.environ["CUPY_TF32"] = "0"
    return f"{'unset' if before is None else repr(before)}, set to '0' by this script (strict float32)"


def device_namespace(device):
    """``numpy`` for ``"cpu"`` (the dry run), ``cupy`` for ``"gpu"``."""
    if device == "cpu":
        return np
    import cupy

    return cupy


def environment(device, tf32):
    """Versions, the GPU and whether fgn_arrays sees it, as ``(name, value)`` pairs."""
    info = [
        ("python", platform.python_version()),
        ("numpy", dist_version("numpy")),
        ("cupy", dist_version("cupy-cuda13x", "cupy-cuda12x", "cupy")),
        ("numba", dist_version("numba")),
        ("numba-cuda", dist_version("numba-cuda")),
        ("fgn_arrays", f"{fa.__version__} ({Path(fa.__file__).parent})"),
        ("CUPY_TF32", tf32),
        ("fa.gpu_available()", str(fa.gpu_available())),
    ]
    if device == "cpu":
        info.append(("device", "cpu: a dry run on NumPy, no GPU used"))
    return info


def gpu_properties():
    """Name, compute capability, memory, CUDA versions of GPU 0, and Numba CUDA's view."""
    import cupy
    from numba import cuda

    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return [
        ("GPU", name),
        ("compute capability", f"{props['major']}.{props['minor']}"),
        ("GPU memory", f"{props['totalGlobalMem'] / 2**30:.1f} GiB"),
        ("CUDA runtime / driver", f"{runtime.runtimeGetVersion()} / {runtime.driverGetVersion()}"),
        ("numba.cuda.is_available()", str(cuda.is_available())),
    ]


def gpu_diagnosis():
    """Why there is no usable GPU, in words: the first of the steps CuPy and fgn_arrays take that fails."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, CUDARuntimeError: the message says which
        return f"{type(exc).__name__}: {exc}"
    if count == 0:
        return "CuPy sees no CUDA device"
    try:
        importlib.import_module("fgn_arrays.kernels.cuda")  # the Numba CUDA kernels of the GPU branches
    except Exception as exc:
        return f"fgn_arrays.kernels.cuda does not import: {type(exc).__name__}: {exc}"
    return f"CuPy sees {count} device(s); fgn_arrays.gpu_available() still said False"


def show_pairs(report, pairs):
    """Print ``name: value`` lines and add them to the report as a list."""
    for name, value in pairs:
        say(f"{name:>26}: {value}")
    report.add("\n".join(f"- {name}: {value}" for name, value in pairs))


# ---- 2. GPU tests -----------------------------------------------------------------


def pytest_summary(output):
    """The pytest lines worth keeping: FAILED/ERROR lines and the closing summary line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    keep = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return keep + lines[-1:]


def run_gpu_tests(report, device, timeout):
    """``pytest -m gpu`` in a subprocess (``FGN_REQUIRE_GPU=1`` on a GPU); returns its summary line.

    A non-zero exit status or a timeout is recorded as a failure.
    """
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    env = dict(os.environ)
    if device == "gpu":
        env["FGN_REQUIRE_GPU"] = "1"
    say(f"running {' '.join(command[1:])} (FGN_REQUIRE_GPU={env.get('FGN_REQUIRE_GPU', 'unset')}, "
        f"timeout {timeout} s)")
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        say("\n".join(output.splitlines()[-40:]))
        report.add(f"GPU tests: timed out after {timeout} s")
        report.fail(f"GPU tests: timed out after {timeout} s")
        return f"timed out after {timeout} s"
    summary = pytest_summary(done.stdout)
    last = summary[-1] if summary else "no output"
    if done.returncode != 0:
        say("\n".join(done.stdout.splitlines()[-80:]))
    say("\n".join(summary))
    report.add(f"GPU tests (`pytest -m gpu`): {last}" + "".join(f"\n- {line}" for line in summary[:-1]))
    if done.returncode != 0:
        report.fail(f"GPU tests: pytest exit status {done.returncode}: {last}")
    return last


# ---- 3. parity --------------------------------------------------------------------


def parity_data(N, C, D, seed=0):
    """Host float64 data: ``X (N, D)``, labels, ``theta``, logits and random ``v (P,)``, ``a (N,)``.

    ``X ~ N(0, 1/D)``, labels uniform, ``W ~ N(0, 9)`` and ``b ~ N(0, 1)``:
    logits of standard deviation about 3, so margins range from confidently
    right to confidently wrong.
    """
    rng = np.random.default_rng(seed)
    head = fa.LinearHead(D, C)
    X = rng.standard_normal((N, D)) / np.sqrt(D)
    y = rng.integers(0, C, size=N)
    theta = np.concatenate([3.0 * rng.standard_normal(C * D), rng.standard_normal(C)])
    return {
        "X": X,
        "y": y,
        "theta": theta,
        "logits": head.logits(theta, X),
        "v": rng.standard_normal(head.n_params),
        "a": rng.standard_normal(N),
    }


def parity_quantities(xp, data, dtype):
    """Every compared quantity on the backend of ``xp``, as host arrays, and the CG iterations.

    Returns
    -------
    values : dict of str to numpy.ndarray
    n_iter : int
        Iterations of the CG step.
    """
    X, theta, Z, v, a = (xp.asarray(data[k].astype(dtype)) for k in ("X", "theta", "logits", "v", "a"))
    y = xp.asarray(data["y"])
    head = fa.LinearHead(X.shape[1], Z.shape[1])
    lin = head.linearize(theta, X, y)
    st = fa.margin_stats(Z, y)
    step = fa.fgn_step(lin, DAMPING, l2=L2, solver="cg", rtol=RTOL)
    values = {
        "margin_stats.margin": st.margin,
        "margin_stats.loss": st.loss,
        "margin_stats.prob_true": st.prob_true,
        "margin_stats.lse_rest": st.lse_rest,
        "lin.grad": lin.grad,
        "lin.margin_jvp": lin.margin_jvp(v),
        "lin.margin_vjp": lin.margin_vjp(a),
        "fa.fgn_matvec": fa.fgn_matvec(lin, v),
        "fa.ggn_matvec": fa.ggn_matvec(lin, v),
        "fgn_step(cg).direction": step.direction,
    }
    return {name: fa.to_numpy(value) for name, value in values.items()}, step.n_iter


def parity_rows(dtype, reference, device_values):
    """Table rows ``(quantity, dtype, error, tolerance, verdict)`` of one dtype."""
    rows = []
    for name, want in reference.items():
        tolerance = (STEP_TOLERANCE if name.startswith("fgn_step") else PARITY_TOLERANCE)[dtype]
        error = relative_error(device_values[name], want)
        rows.append((name, dtype, f"{error:.2e}", f"{tolerance:.0e}", verdict(error, tolerance)))
    return rows


def check_parity(report, xp, sizes):
    """Section 3, once per dtype: NumPy against ``xp``; returns the table rows of both."""
    N, C, D = sizes.parity
    table = []
    for dtype in ("float64", "float32"):
        with report.section(f"3. Parity, {dtype}"):
            say(f"linear head, N={N}, C={C}, D={D}, damping={DAMPING}, l2={L2}; "
                "relative error = max|device - numpy| / max|numpy|")
            data = parity_data(N, C, D)
            reference, n_iter_cpu = parity_quantities(np, data, dtype)
            device_values, n_iter_device = parity_quantities(xp, data, dtype)
            rows = parity_rows(dtype, reference, device_values)
            for row in rows:
                say(f"{row[0]:>24} {row[1]}: {row[2]} (tolerance {row[3]}) {row[4]}")
            say(f"CG iterations: numpy {n_iter_cpu}, device {n_iter_device}")
            table.extend(rows)
            for row in rows:
                if row[4] == "FAIL":
                    report.fail(f"parity {row[0]} {dtype}: relative error {row[2]} > {row[3]}")
    return table


# ---- 4. timing --------------------------------------------------------------------


def timing_data(N, D, C, seed=0):
    """Host float32 ``X ~ N(0, 1/D)`` of shape ``(N, D)`` and uniform labels in ``[0, C)``."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((N, D)) / np.sqrt(D)).astype(np.float32)
    return X, rng.integers(0, C, size=N)


def cg_steps(lin, k):
    """``fgn_step`` with ``rtol = 0``: exactly ``k`` row-space CG iterations on the timing system."""
    return fa.fgn_step(lin, CG_DAMPING, l2=L2, solver="cg", rtol=0.0, maxiter=k)


def timing_theta(head, xp, seed=0):
    """Weights of scale ``CG_WEIGHT_SCALE`` (see its comment), float32, on ``xp``."""
    rng = np.random.default_rng(seed)
    return xp.asarray((CG_WEIGHT_SCALE * rng.standard_normal(head.n_params)).astype(np.float32))


def standin_counts(N, D, C, iterations):
    """Kernel launches and host synchronisations per row-space CG iteration, on the stand-in.

    Counted on :mod:`fgn_arrays.testing`'s CPU stand-in for CuPy (the real
    GPU cannot count them), between ``maxiter`` of ``iterations``.

    Returns
    -------
    tuple of float, or None
        ``(launches, syncs)`` per iteration; ``None`` when the stand-in is missing.
    """
    if importlib.util.find_spec("fgn_arrays.testing") is None:
        return None
    from fgn_arrays import testing

    X, y = timing_data(N, D, C)
    counts = []
    with testing.use_standin() as sx:
        head = fa.LinearHead(D, C)
        lin = head.linearize(timing_theta(head, sx), sx.asarray(X), sx.asarray(y))
        cg_steps(lin, 1)  # warm-up: the linearization caches what every solve reuses
        for k in iterations:
            sx.counts.reset()
            step = cg_steps(lin, k)
            counts.append((step.n_iter, sx.counts.launches, sx.counts.syncs))
    (n1, launches1, syncs1), (n2, launches2, syncs2) = counts
    return per_iteration(launches1, launches2, n1, n2), per_iteration(syncs1, syncs2, n1, n2)


def memory_shortfall(xp, N, D, C):
    """A message when the GPU has too little free memory for a timing row, else ``None``."""
    if xp is np:
        return None
    xp.get_default_memory_pool().free_all_blocks()
    need = 4 * (ROW_ARRAYS * N * C + 4 * C * D + 4 * N * D)
    free, _ = xp.cuda.runtime.memGetInfo()
    if free < need:
        return f"skipped: needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


def two_gemm_floor(xp, X, C, seed=1):
    """The GEMMs of one margin JVP and one VJP, ``X @ V_W.T`` and ``G.T @ X``, as a function."""
    rng = np.random.default_rng(seed)
    N, D = X.shape
    V_W = xp.asarray(rng.standard_normal((C, D)).astype(np.float32))
    G = xp.asarray(rng.standard_normal((N, C)).astype(np.float32))
    return lambda: (xp.matmul(X, V_W.T), xp.matmul(G.T, X))


def time_row(xp, device, C, sizes):
    """One row of the timing table: times in seconds, iteration counts and notes."""
    N, D = sizes.table
    X_host, y_host = timing_data(N, D, C)
    X, y = xp.asarray(X_host), xp.asarray(y_host)
    head = fa.LinearHead(D, C)
    theta = head.init_params(seed=0, dtype="float32", device=device)
    lin = head.linearize(theta, X, y)
    hard = head.linearize(timing_theta(head, xp), X, y)

    def timed(fn):
        return best_of(fn, xp=xp, repeats=sizes.repeats, warmup=sizes.warmup)

    row = {"C": C, "floor": timed(two_gemm_floor(xp, X, C)), "notes": []}
    runs = []
    for k in sizes.iterations:
        n_iter = cg_steps(hard, k).n_iter
        if n_iter != k:
            row["notes"].append(f"maxiter={k} ran {n_iter} CG iterations, not {k}")
        runs.append((n_iter, timed(lambda k=k: cg_steps(hard, k))))
    (n1, t1), (n2, t2) = runs
    row["iteration"] = per_iteration(t1, t2, n1, n2)
    if row["iteration"] <= 0:
        row["notes"].append(f"t(maxiter={n2}) <= t(maxiter={n1}): timing noise larger than the iterations")
    for solver in ("cg", "cholesky"):
        row[f"{solver}_iters"] = fa.fgn_step(lin, DAMPING, l2=L2, solver=solver, rtol=RTOL).n_iter
        row[solver] = timed(lambda s=solver: fa.fgn_step(lin, DAMPING, l2=L2, solver=s, rtol=RTOL))
    Z = head.logits(theta, X)
    row["margin_stats"] = timed(lambda: fa.margin_stats(Z, y))
    return row


def row_cells(row, launches):
    """The markdown cells of one timed row."""
    ratio = row["iteration"] / row["floor"]
    return (
        row["C"],
        ms(row["iteration"]),
        ms(row["floor"]),
        f"{ratio:.2f}x",
        launches,
        f"{ms(row['cg'])} ({row['cg_iters']} it)",
        ms(row["cholesky"]),
        ms(row["margin_stats"]),
        target_note(row["C"], row["iteration"], ratio),
    )


TABLE_HEADERS = (
    "C",
    "CG iter (ms)",
    "2-GEMM floor (ms)",
    "iter / floor",
    "launches / iter",
    "fgn_step cg (ms)",
    "fgn_step cholesky (ms)",
    "margin_stats (ms)",
    "target",
)


def launch_overhead(xp, n=1024):
    """Wall time of one tiny launch of each kind a CG iteration makes: a CuPy elementwise operation,
    a cuBLAS GEMM, a Numba CUDA kernel (``cg_dot``), each with a stream synchronisation, in microseconds."""
    from fgn_arrays import kernels

    a = xp.ones(n, dtype=xp.float32)
    M = xp.ones((64, 64), dtype=xp.float32)
    parts = xp.zeros((4, kernels.CG_PARTS), dtype=xp.float64)
    times = {
        "elementwise (a * a)": best_of(lambda: a * a, xp=xp, repeats=50, warmup=5),
        "GEMM 64x64": best_of(lambda: M @ M, xp=xp, repeats=50, warmup=5),
        "Numba CUDA cg_dot": best_of(lambda: kernels.cg_dot(xp, a, a, parts, 0), xp=xp, repeats=50, warmup=5),
    }
    return "One launch, with its stream synchronisation: " + ", ".join(
        f"{name} {1e6 * t:.1f} us" for name, t in times.items())


def time_table(report, xp, device, sizes):
    """Section 4: the launch count, then one timed row per ``C``; returns the table's markdown."""
    N, D = sizes.table
    k1, k2 = sizes.iterations
    launches = "n/a (stand-in missing)"
    with report.section(f"4. Launches per CG iteration (CPU stand-in, C={STANDIN_CLASSES})"):
        counts = standin_counts(N, D, STANDIN_CLASSES, sizes.iterations)
        if counts is None:
            say("fgn_arrays.testing is missing: launches per iteration are n/a")
        else:
            launches = f"{counts[0]:g}"
            say(f"{counts[0]:g} launches and {counts[1]:g} host synchronisations per CG iteration "
                f"(N={N}, D={D}; the count does not depend on C)")
            report.add(f"Per row-space CG iteration, on the CPU stand-in for CuPy: {counts[0]:g} "
                       f"launches, {counts[1]:g} host synchronisations (the count does not depend on C).")
    with report.section("4. Launch overhead"):
        overhead = launch_overhead(xp)
        say(overhead)
        report.add(overhead)
    rows, notes = [], []
    for C in sizes.classes:
        with report.section(f"4. Timing, C={C}"):
            shortfall = memory_shortfall(xp, N, D, C)
            if shortfall:
                say(shortfall)
                rows.append((C,) + (shortfall,) + ("",) * (len(TABLE_HEADERS) - 2))
                continue
            try:
                row = time_row(xp, device, C, sizes)
            except Exception:
                rows.append((C, "error (see above)") + ("",) * (len(TABLE_HEADERS) - 2))
                raise
            rows.append(row_cells(row, launches))
            notes.extend(f"C={C}: {note}" for note in row["notes"])
            say(markdown_table(TABLE_HEADERS, rows[-1:]))
            for note in row["notes"]:
                say(f"note: {note}")
    header = "\n".join([
        f"Linear head, N={N}, D={D}, float32 (strict, CUPY_TF32=0), damping={DAMPING}, l2={L2}, "
        f"device={device}, best of {sizes.repeats}.",
        f"CG iter = (t(maxiter={k2}) - t(maxiter={k1})) / {k2 - k1} of fgn_step(solver='cg', rtol=0, "
        f"damping={CG_DAMPING}) with weights of scale {CG_WEIGHT_SCALE}, unless a note says otherwise; "
        "both runs end with the same single host check point, which the difference leaves out "
        "(CG checks once per 8 iterations on the GPU).",
        f"Floor = X @ V_W.T + G.T @ X. Launches counted on the CPU stand-in at C={STANDIN_CLASSES}. "
        f"fgn_step at rtol={RTOL} (iterations in brackets).",
        f"Targets (not asserted): CG iter <= {TARGET_RATIO}x floor for C >= {TARGET_RATIO_MIN_CLASSES}, "
        f"<= {TARGET_SMALL_MS:.2f} ms at C = {TARGET_SMALL_CLASSES}.",
    ])
    return "\n".join([header] + [f"Note: {n}" for n in notes] + ["", markdown_table(TABLE_HEADERS, rows)])


# ---- main -------------------------------------------------------------------------


def parse_args(argv):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    parser.add_argument("--out", type=Path, help="also write the report, in markdown, to this file")
    parser.add_argument("--skip-tests", action="store_true", help="skip section 2 (pytest -m gpu)")
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds for pytest -m gpu (default 300)")
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    """Run the sections in order; return the exit status (0 OK, 1 a failure, 2 no GPU)."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    report = Report(args.out)
    t0 = time.perf_counter()
    tf32 = strict_float32()

    with report.section("1. Environment"):
        show_pairs(report, environment(args.device, tf32))
        if args.device == "gpu" and fa.gpu_available():
            show_pairs(report, gpu_properties())
    if args.device == "gpu" and not fa.gpu_available():
        message = (f"No GPU found: fgn_arrays.gpu_available() is False ({gpu_diagnosis()}). "
                   "This script needs a CUDA GPU; nothing else was run.")
        report.fail(message)
        return 2
    xp = device_namespace(args.device)

    tests = "skipped (--skip-tests)"
    if args.skip_tests:
        say(f"\n== 2. GPU tests: {tests} ==")
    else:
        tests = "did not run (see section 2)"
        with report.section("2. GPU tests"):
            tests = run_gpu_tests(report, args.device, args.test_timeout)

    parity = check_parity(report, xp, sizes)
    if parity:
        report.add(markdown_table(("quantity", "dtype", "rel. error", "tolerance", "result"), parity))

    table = time_table(report, xp, args.device, sizes)
    report.add(table)

    say(f"\n== 5. Summary ({time.perf_counter() - t0:.0f} s) ==")
    say(f"GPU tests: {tests}")
    if parity:
        failed = sum(row[4] == "FAIL" for row in parity)
        say(f"parity: {len(parity) - failed} of {len(parity)} PASS")
    say(report.result_line())
    say("")
    say(table)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
