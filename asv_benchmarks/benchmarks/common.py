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

Every ``setup`` calls each function its class times once (Numba and CuPy
JIT compilation, BLAS and cuBLAS start-up), outside the timed region. GPU
timings end with a stream synchronisation inside the timed function
(:func:`synced`). ``peakmem_*`` benchmarks measure the host process, so they
run on the CPU only.
"""

from __future__ import annotations

import numpy as np

import fgn_arrays as fa
from fgn_arrays.step import row_space_operator
from fgn_arrays._timing import best_of, synchronize

__all__ = [
    "BACKENDS",
    "DAMPING",
    "GGN_MAXITER",
    "LINEAR_CLASSES",
    "RTOL",
    "TWO_LAYER_CLASSES",
    "LinearCase",
    "TwoLayerCase",
    "best_of",
    "make_data",
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
    W = (3.0 / np.sqrt(D)) * rng.standard_normal((C, D)).astype(np.float32)
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(X @ W.T + gumbel, axis=1)
    return X, y, W


def synced(xp, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, then wait for the GPU's queued work (nothing on the CPU)."""
    out = fn(*args, **kwargs)
    synchronize(xp)
    return out


def row_space_matvec(lin, damping):
    """One row-space CG iteration of :func:`fgn_arrays.fgn_step` (``l2 = 0``), as a function of ``a (N,)``.

    ``a -> a + s ⊙ J (Lam^-1 J^T (s ⊙ a))``: one margin VJP and one margin JVP.
    """
    return row_space_operator(lin, damping)[2]


class _Case:
    """``setup`` of a benchmark class: the batch, its linearization, then ``warm_up``.

    Attributes set for the benchmark methods: ``xp``, ``head``, ``lin``,
    ``v (P,)`` and ``a (N,)`` (random float32 vectors).
    """

    param_names = ["backend", "n_classes"]
    sizes = SIZES
    cpu_only = False

    def setup(self, backend, n_classes):
        if self.cpu_only and backend != "cpu":
            raise NotImplementedError(f"{type(self).__name__} measures the host process: CPU only")
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
