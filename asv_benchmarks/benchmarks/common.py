"""What the benchmarks share: backends, sizes, synthetic batches and timing helpers.

Conventions
-----------
Every benchmark is parameterized over ``backend`` and ``n_classes`` (``C``):

- ``backend``: ``"cpu"`` (NumPy + Numba) always; ``"gpu"`` (CuPy + Numba CUDA)
  only where :func:`fgn_arrays.gpu_available` says so when asv imports this
  module. A ``"gpu"`` case set up where there is no GPU, and a ``C`` above
  the backend's largest, raise ``NotImplementedError`` in ``setup``, which
  asv reports as skipped.
- ``n_classes``: 10, 100, 1000, 10000 (and 100000, on the GPU only) for the
  linear head; 10 and 1000 for the two-layer head (``H = 256``, tanh).

Sizes, float32 throughout:

==============================  =========  ==========
benchmark                        CPU (N,D)  GPU (N,D)
==============================  =========  ==========
products, steps, iterations      1024, 256  1024, 1024
CG iteration / GEMM-floor ratio  512, 256   1024, 1024
==============================  =========  ==========

Data: ``X ~ N(0, 1)``; labels drawn from a random linear softmax model
``W* ~ N(0, 9/D)`` (Gumbel-max sampling); the linear head's ``theta`` is at
half the true weights, ``[W*/2, 0]``, so the margins are neither all right nor
all wrong; the two-layer head starts at ``head.init_params(seed=0)``. Steps
use damping ``1e-2``, ``l2 = 0``, CG ``rtol = 1e-6``; ``ggn_step`` stops at
``GGN_MAXITER`` iterations at most so that every case ends.

Every case's first ``setup`` builds the batch and calls each function its
class times once (Numba and CuPy JIT compilation, BLAS and cuBLAS start-up),
outside the timed region; asv re-runs ``setup`` before every timed sample,
and the later calls reuse what the first one built (the timed functions do
not change it). GPU timings end with a stream synchronisation inside the
timed function (:func:`synced`). ``peakmem_*`` benchmarks measure the host
process, so they run on the CPU only.

Timing
------
Threads: the first ``setup`` of a case, after its warm-up, pins the BLAS
and OpenMP thread pools (NumPy's and SciPy's OpenBLAS, through
``threadpoolctl``) and Numba's parallel kernels to ``THREADS`` threads, 1
unless the environment sets ``FGN_BENCH_THREADS``, for the rest of that
case's process. A thread pool that spins up, or competes with another
process for the cores, moves a single timing by more than the step from one
``C`` to the next (SciPy's OpenBLAS left at two threads made a Cholesky step
vary from 0.04 to 2 s on two busy cores); one thread measures the cost, not
the scheduling.

Repeats (``TIMING``, the asv attributes of every ``time_*`` benchmark):
``rounds = 1`` (one process per case), ``repeat = (3, 10, 1.0)`` (at least
3 timed calls, at most 10, no new call after 1 s beyond the third),
``number = 1`` (each sample one call: the slowest take seconds),
``warmup_time = 0`` (``setup`` already called each function). asv reports
the median sample, so one disturbed call of three does not move it.
``asv run --quick`` overrides all of these with a single call per case: its
timings show that every benchmark runs, not how the cost grows with ``C``.

Where the time falls as ``C`` grows, that is the solve, not noise: a step's
time is its CG iterations (``*Iterations.track_*``) times the cost of one
(``time_row_space_cg_iteration``). At ``C = 1000`` the two-layer head's
probabilities at ``init_params`` are near ``1/C``, so the curvature weights
``w_i = p_i (1 - p_i)`` are small, the damped row-space system is close to
the identity and CG stops after a few iterations (3 against 20 at ``C =
10``): ``TwoLayerHeadSteps.time_fgn_step_cg`` is faster at ``C = 1000``.
"""

from __future__ import annotations

import os
import time

import numpy as np

import fgn_arrays as fa
from fgn_arrays.step import row_space_operator
from fgn_arrays._timing import synchronize

__all__ = [
    "BACKENDS",
    "DAMPING",
    "GGN_MAXITER",
    "LINEAR_CLASSES",
    "RTOL",
    "THREADS",
    "TIMING",
    "TWO_LAYER_CLASSES",
    "LinearCase",
    "TwoLayerCase",
    "best_of_interleaved",
    "make_data",
    "pin_threads",
    "row_space_matvec",
    "synced",
]

HAS_GPU = fa.gpu_available()
BACKENDS = ["cpu", "gpu"] if HAS_GPU else ["cpu"]

# Largest C each backend runs.
MAX_CLASSES = {"cpu": 10_000, "gpu": 100_000}
LINEAR_CLASSES = [10, 100, 1000, 10_000] + ([100_000] if HAS_GPU else [])
TWO_LAYER_CLASSES = [10, 1000]

# (N, D) per backend.
SIZES = {"cpu": (1024, 256), "gpu": (1024, 1024)}
RATIO_SIZES = {"cpu": (512, 256), "gpu": (1024, 1024)}
N_HIDDEN = 256

DAMPING = 1e-2
RTOL = 1e-6
GGN_MAXITER = 200

# Threads of BLAS, OpenMP and Numba while timing (see the module's "Timing").
THREADS = int(os.environ.get("FGN_BENCH_THREADS", "1"))
# asv's timing attributes of every time_* benchmark (see the module's "Timing").
TIMING = {"rounds": 1, "repeat": (3, 10, 1.0), "number": 1, "warmup_time": 0.0}

_thread_limits = None  # threadpoolctl's limiter, kept for the life of the process


def pin_threads(n_threads=THREADS):
    """Pin BLAS/OpenMP (``threadpoolctl``) and Numba's parallel kernels to ``n_threads``, for this process.

    Called by the first ``setup`` of each case after its warm-up (asv runs each
    case in its own process); the limits are not restored. ``threadpoolctl``
    limits the libraries loaded when it is called: SciPy's OpenBLAS (the
    Cholesky solves) is loaded by ``scipy.linalg``, imported here first.
    """
    global _thread_limits
    import numba
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, so that it is limited too)
    from threadpoolctl import threadpool_limits

    _thread_limits = threadpool_limits(limits=n_threads)
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))


def namespace(backend, n_classes):
    """``numpy`` or ``cupy`` for ``backend``; ``NotImplementedError`` (asv: skipped) where it cannot run."""
    if backend == "gpu" and not HAS_GPU:
        raise NotImplementedError("backend 'gpu' needs CuPy and a CUDA GPU")
    if n_classes > MAX_CLASSES[backend]:
        raise NotImplementedError(f"n_classes={n_classes} is above the {backend} maximum {MAX_CLASSES[backend]}")
    if backend == "gpu":
        import cupy

        return cupy
    return np


def make_data(N, D, C, seed=0):
    """Float32 ``X (N, D)``, labels ``y (N,)`` and the true weights ``W* (C, D)``, on the host.

    ``y_i = argmax_k (x_i . w*_k + Gumbel noise)``: a draw from the softmax of
    the random linear model ``W* ~ N(0, 9/D)``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    # Scaled before the cast: a NumPy float64 scalar times a float32 array is float64 (NEP 50).
    W = ((3.0 / np.sqrt(D)) * rng.standard_normal((C, D))).astype(np.float32)
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(X @ W.T + gumbel, axis=1)
    return X, y, W


def synced(xp, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, then wait for the GPU's queued work (nothing on the CPU)."""
    out = fn(*args, **kwargs)
    synchronize(xp)
    return out


def best_of_interleaved(xp, fns, repeats=30):
    """Best wall time in seconds of each of ``fns``, called in turn ``repeats`` times.

    Alternating the calls exposes each function to the same load, so a ratio
    of two best times is not skewed by a burst that hit one of them. One
    untimed call of each comes first; with ``xp`` CuPy, each call ends with a
    stream synchronisation inside the timed region.
    """
    for fn in fns:
        synced(xp, fn)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            synced(xp, fn)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def row_space_matvec(lin, damping):
    """One row-space CG iteration of :func:`fgn_arrays.fgn_step` (``l2 = 0``), as a function of ``a (N,)``.

    ``a -> a + s ⊙ J (Lam^-1 J^T (s ⊙ a))``: one margin VJP and one margin JVP.
    """
    return row_space_operator(lin, damping)[2]


class _Case:
    """``setup`` of a benchmark class: the batch, its linearization, then ``warm_up``.

    Attributes set for the benchmark methods: ``xp``, ``head``, ``lin``,
    ``v (P,)`` and ``a (N,)`` (random float32 vectors), and what ``warm_up``
    sets. The first ``setup`` of a case in a process pins the threads and
    builds them; later ones (asv re-runs ``setup`` before each sample) reuse
    them.
    """

    param_names = ["backend", "n_classes"]
    sizes = SIZES
    cpu_only = False
    rounds = TIMING["rounds"]
    repeat = TIMING["repeat"]
    number = TIMING["number"]
    warmup_time = TIMING["warmup_time"]

    _prepared = {}  # (class, backend, n_classes) -> the attributes of a set-up instance

    def setup(self, backend, n_classes):
        if self.cpu_only and backend != "cpu":
            raise NotImplementedError(f"{type(self).__name__} measures the host process: CPU only")
        namespace(backend, n_classes)  # NotImplementedError (skipped) where the case cannot run
        key = (type(self), backend, n_classes)
        if key not in self._prepared:
            self._prepare(backend, n_classes)
            pin_threads()  # after the warm-up: every library the case calls is loaded
            self._prepared[key] = dict(vars(self))
        vars(self).update(self._prepared[key])

    def _prepare(self, backend, n_classes):
        xp = self.xp = namespace(backend, n_classes)
        N, D = self.sizes[backend]
        X, y, W = make_data(N, D, n_classes)
        self.head, theta = self.make_head(D, n_classes, W)
        self.lin = self.head.linearize(xp.asarray(theta), xp.asarray(X), xp.asarray(y))
        rng = np.random.default_rng(1)
        self.v = xp.asarray(rng.standard_normal(self.head.n_params).astype(np.float32))
        self.a = xp.asarray(rng.standard_normal(N).astype(np.float32))
        self.warm_up()
        synchronize(xp)

    def make_head(self, D, C, W):  # pragma: no cover - abstract
        raise NotImplementedError

    def warm_up(self):
        """Call once each function the class times (JIT compilation happens here)."""


class LinearCase(_Case):
    """``fa.LinearHead(D, C)`` at ``theta = [W*/2, 0]``."""

    params = [BACKENDS, LINEAR_CLASSES]

    def make_head(self, D, C, W):
        theta = np.concatenate([0.5 * W.ravel(), np.zeros(C, np.float32)])
        return fa.LinearHead(D, C), theta


class TwoLayerCase(_Case):
    """``fa.TwoLayerHead(D, 256, C, activation="tanh")`` at ``init_params(seed=0)``.

    Skipped (``NotImplementedError``) while ``fgn_arrays`` has no ``TwoLayerHead``.
    """

    params = [BACKENDS, TWO_LAYER_CLASSES]

    def make_head(self, D, C, W):
        TwoLayerHead = getattr(fa, "TwoLayerHead", None)
        if TwoLayerHead is None:
            raise NotImplementedError("this fgn_arrays has no TwoLayerHead")
        head = TwoLayerHead(D, N_HIDDEN, C, activation="tanh")
        return head, head.init_params(seed=0, dtype="float32", device="cpu")
