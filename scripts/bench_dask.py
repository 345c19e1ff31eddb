"""Out-of-core benchmark: fit a linear head on a zarr store larger than the workers' memory, with Dask.

    python scripts/bench_dask.py                       # the issue's size: N = 1e7, D = 128, C = 100, float32
    python scripts/bench_dask.py --rows 1000000        # smaller, same layout

1. Writes a synthetic head problem (a teacher ``W``, Gumbel noise, ``y =
   argmax(X W^T + b + noise)``) chunk by chunk into a zarr store (``X``
   float32, ``y`` int64): the data are never in memory at once. The store
   is kept and reused when its size matches.
2. Starts a ``distributed.LocalCluster`` (``--workers`` processes, one
   thread each, ``--memory-limit`` each) and fits ``fa.minimize`` on
   ``da.from_zarr`` views of the store (``--method``, ``l2 = 1 / N``
   i.e. scikit-learn's ``C = 1``), to ``tol`` or ``--max-iter`` steps; f*
   is the lowest objective of that run, and the table gives the passes
   and the time it took to reach ``f* (1 + 1e-3)``.
   (``--passes-only``: no fits, steps 3 and 4 only.)
3. Times one pass (objective and gradient) on the cluster against the
   same computation in memory with NumPy on the first ``--slice-rows``
   rows, scaled by ``N / slice_rows``.
4. Samples every worker's resident memory (``psutil``, twice a second)
   throughout; reports the peak of each, in each phase (the passes, each
   fit).
5. When ``dask_ml`` imports, fits ``dask_ml.linear_model.LogisticRegression
   (solver="lbfgs")`` in the same run. It fits *binary* logistic
   regression only (dask-glm; its ``multi_class`` is not implemented), so
   it runs on the binary problem "class 0 against the rest" of the same
   store, next to FGN on that binary problem, at the same ``C`` (see its
   row's note for what differs).

Prints a Markdown table and writes it with the raw numbers to ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import threading
import time

import numpy

import fgn_arrays as fa


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=float, default=1e7)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--chunk-rows", type=int, default=100_000)
    p.add_argument("--store", default="/tmp/fgn_bench_dask.zarr")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="3GB")
    p.add_argument("--slice-rows", type=float, default=1e6)
    p.add_argument("--method", default="fgn-compensated")
    p.add_argument("--curvature-rows", type=int, default=2048)
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--skip-dask-ml", action="store_true")
    p.add_argument("--passes-only", action="store_true", help="time passes and memory; no fits")
    p.add_argument("--dask-ml-max-iter", type=int, default=100)
    p.add_argument("--json", default=None)
    return p.parse_args()


# ---- the data -------------------------------------------------------------------------------


def write_store(path, n, d, c, chunk_rows, seed=0):
    """The problem, chunk by chunk, into ``path`` (zarr); skipped when a store of this size is there."""
    import zarr

    shape_attrs = {"rows": n, "features": d, "classes": c, "chunk_rows": chunk_rows, "seed": seed}
    if os.path.exists(path):
        root = zarr.open_group(path, mode="r")
        if dict(root.attrs) == shape_attrs:
            return 0.0
    t0 = time.perf_counter()
    root = zarr.open_group(path, mode="w")
    root.attrs.update(shape_attrs)
    X = root.create_array("X", shape=(n, d), chunks=(chunk_rows, d), dtype="float32")
    y = root.create_array("y", shape=(n,), chunks=(chunk_rows,), dtype="int64")
    teacher = numpy.random.default_rng(seed)
    W = teacher.normal(0, 1.5 / math.sqrt(d), size=(c, d)).astype(numpy.float32)
    b = teacher.normal(0, 0.5, size=c).astype(numpy.float32)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rng = numpy.random.default_rng([seed, start])
        Xc = rng.standard_normal((stop - start, d), dtype=numpy.float32)
        Z = Xc @ W.T + b + rng.gumbel(size=(stop - start, c)).astype(numpy.float32)
        X[start:stop] = Xc
        y[start:stop] = Z.argmax(axis=1)
    return time.perf_counter() - t0


# ---- measurements -------------------------------------------------------------------------


class MemoryPeaks:
    """Peak resident memory of every worker process in each phase, sampled from a thread while running.

    ``peaks[phase][worker]``: bytes; :meth:`phase` names the phase that runs next.
    """

    def __init__(self, client, every=0.5):
        self.client, self.every, self.peaks = client, every, {}
        self._phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def phase(self, name):
        self._phase = name

    @staticmethod
    def _rss():
        import psutil

        return psutil.Process().memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            try:
                peaks = self.peaks.setdefault(self._phase, {})
                for worker, rss in self.client.run(self._rss).items():
                    peaks[worker] = max(peaks.get(worker, 0), rss)
            except Exception:  # a worker restarting: sample again next time
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def count_passes():
    """Count :meth:`fgn_arrays._dask.DaskBatch.run_pass` calls (time-stamped)."""
    from fgn_arrays import _dask

    stamps = []
    original = _dask.DaskBatch.run_pass

    def run_pass(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        stamps.append(time.perf_counter())
        return out

    _dask.DaskBatch.run_pass = run_pass
    return stamps


def in_memory_pass(head, theta, X, y, repeats=3):
    """Seconds of one objective-and-gradient evaluation in memory (best of ``repeats``)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        lin = head._linearize(numpy, theta, X, y, None)
        lin.grad, lin.loss  # noqa: B018 - evaluated for the timing
        best = min(best, time.perf_counter() - t0)
    return best


def dask_pass(batch, theta, repeats=3):
    """Seconds of one pass over the Dask batch (objective and gradient; best of ``repeats``)."""
    best = math.inf
    for k in range(repeats):
        t0 = time.perf_counter()
        batch.linearize(theta + numpy.float32(k * 1e-3)).grad  # noqa: B018 - a new theta: a new pass
        best = min(best, time.perf_counter() - t0)
    return best


def to_target(trace, f_star, t_start, rtol=1e-3):
    """``(passes, seconds)`` to the first step at or below ``f* (1 + rtol)`` in ``trace``."""
    for passes, t, f in trace:
        if f <= f_star * (1 + rtol):
            return passes, t - t_start
    return None, None


def fit_fgn(head, theta0, X, y, args, l2, passes, label):
    trace = []
    t_start = time.perf_counter()
    n0 = len(passes)

    def callback(theta, record):
        trace.append((len(passes) - n0, time.perf_counter(), record["objective"]))

    res = fa.minimize(head, theta0, X, y, method=args.method, l2=l2, tol=args.tol, max_iter=args.max_iter,
                      curvature_rows=args.curvature_rows, callback=callback, verbose=1)
    total = time.perf_counter() - t_start
    f_star = min([res.objective] + [f for _, _, f in trace])
    n_pass, secs = to_target(trace, f_star, t_start)
    return dict(label=label, objective=res.objective, f_star=f_star, n_iter=res.n_iter, status=res.status,
                passes_total=len(passes) - n0, seconds_total=total, passes_to_target=n_pass,
                seconds_to_target=secs, trace=trace, t_start=t_start)


def fit_dask_ml(X, y, C, args):
    """``dask_ml.linear_model.LogisticRegression(solver="lbfgs")`` on binary ``y``, with its evaluations' trace.

    dask-glm's lbfgs makes one ``dask.compute`` (a pass) per evaluation of
    ``sum_i loss_i + (1 / (2 C)) ||beta||^2`` (``beta`` with the intercept);
    the trace divides it by ``N`` (the mean form of FGN's objective).
    ``pgtol`` is on that sum's gradient: ``tol * N``.
    """
    import dask
    import dask_glm.algorithms as algorithms
    from dask_ml.linear_model import LogisticRegression

    n = X.shape[0]
    trace = []
    original = dask.compute

    def counting(*a, **k):
        out = original(*a, **k)
        if len(out) == 2 and numpy.ndim(out[0]) == 0:  # (loss, gradient) of an evaluation
            trace.append((len(trace) + 1, time.perf_counter(), float(out[0]) / n))
        return out

    algorithms.compute = counting  # dask-glm calls the name it imported
    try:
        t0 = time.perf_counter()
        model = LogisticRegression(solver="lbfgs", C=C, max_iter=args.dask_ml_max_iter, tol=1e-6 * n).fit(X, y)
        total = time.perf_counter() - t0
    finally:
        algorithms.compute = original
    return model, dict(label="dask_ml LogisticRegression(lbfgs), binary", passes_total=len(trace),
                       seconds_total=total, objective=min(f for _, _, f in trace), trace=trace, t_start=t0)


def main():
    args = parse_args()
    import dask.array as da
    import distributed

    n, d, c = int(args.rows), args.features, args.classes
    gen_seconds = write_store(args.store, n, d, c, args.chunk_rows)
    print(f"store {args.store}: N={n} D={d} C={c} (written in {gen_seconds:.1f} s; 0 = reused)", flush=True)
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                       memory_limit=args.memory_limit, dashboard_address=":0")
    client = distributed.Client(cluster)
    X = da.from_zarr(args.store, component="X")
    y = da.from_zarr(args.store, component="y")
    head = fa.LinearHead(d, c)
    theta0 = head.init_params(seed=0, dtype="float32")
    l2 = 1.0 / n  # scikit-learn's C = 1
    passes = count_passes()
    rows = {}

    with MemoryPeaks(client) as memory:
        # a pass on the cluster against a pass in memory on a slice, scaled
        from fgn_arrays._dask import DaskBatch

        memory.phase("pass")
        batch = DaskBatch(head, theta0, X, y, None)
        t_dask = dask_pass(batch, theta0)
        s = min(int(args.slice_rows), n)
        Xs, ys = X[:s].compute(), y[:s].compute()
        t_mem = in_memory_pass(head, theta0, Xs, ys) * (n / s)
        del Xs, ys
        rows["pass"] = dict(dask_seconds=t_dask, numpy_seconds_scaled=t_mem, slice_rows=s)
        print(f"pass: dask {t_dask:.2f} s, numpy {t_mem:.2f} s (x{n / s:g} of {s} rows)", flush=True)

        if not args.passes_only:
            memory.phase("fgn")
            rows["fgn"] = fit_fgn(head, theta0, X, y, args, l2, passes, f"fa.minimize({args.method!r})")
            del rows["fgn"]["trace"], rows["fgn"]["t_start"]
            print(rows["fgn"], flush=True)

        if not (args.skip_dask_ml or args.passes_only):
            try:
                importlib.import_module("dask_ml")
            except ImportError as exc:
                rows["dask_ml"] = dict(skipped=f"dask_ml does not import: {exc}")
            else:
                yb = (y == 0).astype("int64")
                l2_binary = 2.0 / n  # binary LogisticRegression(C=1) on a 2-class softmax head
                head2 = fa.LinearHead(d, 2)
                memory.phase("fgn_binary")
                fgn2 = fit_fgn(head2, head2.init_params(seed=0, dtype="float32"), X, yb, args, l2_binary, passes,
                               f"fa.minimize({args.method!r}), binary")
                memory.phase("dask_ml")
                model, info = fit_dask_ml(X, yb, 1.0, args)
                # one f* for both: the lower of the two runs' objectives (mean form, see fit_dask_ml)
                f_star = min(fgn2["f_star"], info["objective"])
                for r in (fgn2, info):
                    r["f_star_common"] = f_star
                fgn2["passes_to_target"], fgn2["seconds_to_target"] = to_target(
                    fgn2.pop("trace"), f_star, fgn2.pop("t_start"))
                info["passes_to_target"], info["seconds_to_target"] = to_target(
                    info.pop("trace"), f_star, info.pop("t_start"))
                rows["fgn_binary"], rows["dask_ml"] = fgn2, info
                print(fgn2, info, flush=True)

    rows["peak_worker_memory_gb"] = {phase: {w: m / 1e9 for w, m in peaks.items()}
                                     for phase, peaks in memory.peaks.items() if phase != "start"}
    rows["config"] = dict(vars(args), rows=n, cores=os.cpu_count())
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    client.close()
    cluster.close()


def table(rows):
    n = rows["config"]["rows"]
    p = rows["pass"]
    out = [
        f"N = {n:,}, D = {rows['config']['features']}, C = {rows['config']['classes']}, float32, "
        f"{rows['config']['workers']} workers x {rows['config']['memory_limit']}, {rows['config']['cores']} cores",
        "",
        "| | passes to f*(1+1e-3) | time to f*(1+1e-3) | passes (total) | time (total) | final objective |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("fgn", "fgn_binary", "dask_ml"):
        r = rows.get(key)
        if not r or "skipped" in r:
            continue
        target = ("-" if r.get("passes_to_target") is None else r["passes_to_target"],
                  "-" if r.get("seconds_to_target") is None else f"{r['seconds_to_target']:.1f} s")
        f = r.get("objective", r.get("objective_sklearn_form"))
        out.append(f"| {r['label']} | {target[0]} | {target[1]} | {r['passes_total']} | {r['seconds_total']:.1f} s "
                   f"| {f:.6f} |")
    out += ["", f"one pass (objective + gradient): Dask {p['dask_seconds']:.2f} s; NumPy in memory "
                f"{p['numpy_seconds_scaled']:.2f} s (a {p['slice_rows']:,}-row slice, x{n / p['slice_rows']:g})",
            "peak worker memory (each worker): " + "; ".join(
                f"{phase} " + ", ".join(f"{m:.2f} GB" for m in peaks.values())
                for phase, peaks in rows["peak_worker_memory_gb"].items())]
    return "\n".join(out)


if __name__ == "__main__":
    main()
