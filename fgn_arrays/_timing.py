"""Wall-clock timing shared by the example, the benchmark scripts and asv."""

from __future__ import annotations

import time

import numpy


def synchronize(xp) -> None:
    """Wait for the GPU's queued work when ``xp`` is a GPU namespace (CuPy); nothing on the CPU."""
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()


def best_of(fn, xp=None, repeats=5, warmup=1) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    With ``xp`` CuPy, each call is followed by a stream synchronisation inside
    the timed region.
    """
    for _ in range(warmup):
        fn()
        if xp is not None:
            synchronize(xp)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if xp is not None:
            synchronize(xp)
        best = min(best, time.perf_counter() - t0)
    return best
