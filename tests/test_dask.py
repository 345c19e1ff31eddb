"""Fits on Dask arrays (fgn_arrays._dask) against the in-memory fits, on a LocalCluster of two worker processes.

The references are the library's own in-memory paths (``head.linearize``,
``fa.minimize`` on NumPy arrays), which the other test files check against
dense float64 references: here the claim is that a Dask batch changes
nothing but the rounding. float64 throughout, so that "the same to
rounding" is a tight tolerance: 1e-10 relative for one evaluation, 1e-6
for a whole fit (its steps' accept/reject decisions and stopping can turn
on rounding only near the optimum).

CuPy chunks run on the CuPy stand-in (``fgn_arrays.testing``, in this
process: the threaded scheduler, since the stand-in is registered here
only) and on real CuPy on a GPU machine (marker ``gpu``), against the same
in-memory NumPy references.
"""

import os
import subprocess
import sys
import threading

import numpy
import pytest
import scipy.sparse

import fgn_arrays as fa
from fgn_arrays.compensation import output_covariance
from fgn_arrays.methods import Subspace, objective

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from conftest import to_host  # noqa: E402
from fgn_arrays._dask import DaskBatch  # noqa: E402

N, D, H, C = 300, 7, 6, 5
# Rows of curvature per step: fewer than N, so that the sampling across chunks is exercised.
CURVATURE_ROWS = 64
EVAL_RTOL = 1e-10  # one pass: float64 sums in another order
FIT_RTOL = 1e-6  # a whole fit (see the module docstring)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
                                       silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _problem(seed=0, n=N):
    rng = numpy.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    W = rng.normal(size=(C, D))
    y = numpy.argmax(X @ W.T + rng.gumbel(size=(n, C)), axis=1)
    weights = rng.integers(0, 4, size=n).astype(numpy.float64)  # zeros included: rows the fit drops
    return X, y, weights


HEADS = {"linear": lambda: fa.LinearHead(D, C), "two-layer": lambda: fa.TwoLayerHead(D, H, C, "tanh")}
# (rows, row chunks of X, of y): one chunk, ragged last chunks, chunks of one row (on fewer rows: a task
# each), misaligned y.
CHUNKINGS = {"one": (N, N, N), "ragged": (N, 37, 50), "rows": (40, 1, 1), "uneven": (N, (100, 150, 50), 64)}


def _rel(a, b):
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    return float(numpy.max(numpy.abs(a - b)) / max(numpy.max(numpy.abs(b)), 1e-300))


def test_import_does_not_need_dask():
    code = "import fgn_arrays, sys; assert 'dask' not in sys.modules and 'distributed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("head_name", list(HEADS))
def test_objective_and_gradient_match_in_memory(client, head_name, chunking, weighted):
    n, x_chunks, y_chunks = CHUNKINGS[chunking]
    X, y, w = _problem(n=n)
    head = HEADS[head_name]()
    theta = head.init_params(seed=1, dtype="float64")
    theta += 0.3 * numpy.random.default_rng(2).normal(size=theta.shape)
    sw = w if weighted else None
    batch = DaskBatch(head, theta, da.from_array(X, chunks=(x_chunks, D)), da.from_array(y, chunks=y_chunks),
                      None if sw is None else da.from_array(sw, chunks=y_chunks))
    keep = numpy.ones(n, bool) if sw is None else sw > 0
    ref = head.linearize(theta, X[keep], y[keep], None if sw is None else sw[keep])
    lin = batch.linearize(theta)
    assert batch.n_samples == int(keep.sum())
    l2 = 0.01
    assert _rel(objective(lin, l2), objective(ref, l2)) < EVAL_RTOL
    assert _rel(lin.grad, ref.grad) < EVAL_RTOL
    # the whole-batch sums of "fgn-compensated": the plane's model and the output-feature covariance
    rng = numpy.random.default_rng(3)
    dirs = [rng.normal(size=theta.shape), rng.normal(size=theta.shape)]
    sums = Subspace(lin, dirs, None).model_sums(lin, l2)
    ref_sums = Subspace(ref, dirs, None).model_sums(ref, l2)
    assert _rel(sums, ref_sums) < EVAL_RTOL
    e, V = lin._output_covariance()
    e_ref, V_ref = output_covariance(ref)
    assert _rel((V * e) @ V.T, (V_ref * e_ref) @ V_ref.T) < EVAL_RTOL


def _fit_both(head, X, y, sw, chunks, **kwargs):
    theta0 = head.init_params(seed=1, dtype="float64")
    kwargs = {**dict(l2=1e-2, tol=1e-8, curvature_rows=CURVATURE_ROWS, random_state=5, max_iter=150), **kwargs}
    ref = fa.minimize(head, theta0, X, y, sample_weight=sw, **kwargs)
    res = fa.minimize(head, theta0, da.from_array(X, chunks=(chunks, D)), da.from_array(y, chunks=chunks),
                      sample_weight=None if sw is None else da.from_array(sw, chunks=chunks), **kwargs)
    return ref, res


@pytest.mark.parametrize(
    "head_name, method, weighted",
    [("linear", "fgn", False), ("linear", "fgn-compensated", True), ("two-layer", "fgn", True),
     ("two-layer", "fgn-compensated", False)],
)
def test_fit_matches_in_memory(client, head_name, method, weighted):
    X, y, w = _problem(seed=4)
    head = HEADS[head_name]()
    ref, res = _fit_both(head, X, y, w if weighted else None, 41, method=method, max_iter=60)
    assert res.converged == ref.converged and res.n_iter > 5
    assert isinstance(res.theta, numpy.ndarray)
    assert _rel(res.theta, ref.theta) < FIT_RTOL
    assert abs(res.objective - ref.objective) <= FIT_RTOL * abs(ref.objective)
    # the same steps, to rounding, until the optimum
    k = min(10, len(ref.history["objective"]))
    assert _rel(res.history["objective"][:k], ref.history["objective"][:k]) < FIT_RTOL


def test_one_pass_per_evaluation(client, monkeypatch):
    """"fgn": one dask.compute per step (objective, gradient and the next step's rows together)."""
    X, y, _ = _problem(seed=4)
    head = HEADS["linear"]()
    computes = []
    original = dask.compute

    def counting(*args, **kwargs):
        computes.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", counting)
    res = fa.minimize(head, head.init_params(seed=1, dtype="float64"), da.from_array(X, chunks=(50, D)),
                      da.from_array(y, chunks=50), method="fgn", l2=1e-2, curvature_rows=CURVATURE_ROWS, max_iter=5,
                      tol=0.0)
    assert res.n_iter == 5
    # the checks of the values, the starting point, one per step; the final point is the last step's
    assert len(computes) == 1 + 1 + 5


def test_small_batch_is_fit_in_memory(client):
    """No more rows than curvature_rows: the batch is gathered and the fit is the in-memory one."""
    X, y, w = _problem(seed=6, n=120)
    head = HEADS["linear"]()
    theta0 = head.init_params(seed=1, dtype="float64")
    ref = fa.minimize(head, theta0, X, y, sample_weight=w, l2=1e-2, method="fgn-compensated")
    res = fa.minimize(head, theta0, da.from_array(X, chunks=(33, D)), y, sample_weight=da.from_array(w, chunks=33),
                      l2=1e-2, method="fgn-compensated")
    numpy.testing.assert_allclose(res.theta, ref.theta, rtol=1e-12, atol=1e-14)


def test_worker_lost_mid_fit_is_recovered(client, tmp_path):
    """A worker killed in the middle of a pass: Dask recomputes its chunks elsewhere, the fit is unchanged."""
    X, y, _ = _problem(seed=4)
    head = HEADS["linear"]()
    flag = str(tmp_path / "kill")

    def maybe_die(block, flag):
        # the first task to claim the flag kills its worker process, in the middle of a pass
        import os

        try:
            os.rename(flag, flag + ".claimed")
        except OSError:
            return block
        os._exit(1)

    Xd = da.from_array(X, chunks=(30, D)).map_blocks(maybe_die, flag, dtype=X.dtype)
    kwargs = dict(method="fgn-compensated", l2=1e-2, tol=1e-8, curvature_rows=CURVATURE_ROWS, random_state=5)

    def arm(theta, record):
        # after the first step: the next pass loses a worker
        if not os.path.exists(flag + ".claimed") and not os.path.exists(flag):
            open(flag, "w").close()

    theta0 = head.init_params(seed=1, dtype="float64")
    ref = fa.minimize(head, theta0, X, y, **kwargs)
    res = fa.minimize(head, theta0, Xd, da.from_array(y, chunks=30), callback=arm, **kwargs)
    assert os.path.exists(flag + ".claimed"), "no worker was killed"
    assert res.converged
    assert _rel(res.theta, ref.theta) < FIT_RTOL


def test_classifier_on_dask(client):
    pytest.importorskip("sklearn")
    X, y, w = _problem(seed=7)
    labels = numpy.array(["ant", "bee", "cat", "dog", "eel"])[y]
    kwargs = dict(l2=1e-2, tol=1e-8, device="cpu", class_weight="balanced")
    ref = fa.FGNClassifier(**kwargs).fit(X, labels, sample_weight=w)
    Xd = da.from_array(X, chunks=(64, D))
    clf = fa.FGNClassifier(**kwargs).fit(Xd, da.from_array(labels, chunks=64), sample_weight=w)
    assert _rel(clf.coef_, ref.coef_) < FIT_RTOL
    numpy.testing.assert_array_equal(clf.classes_, ref.classes_)
    for name in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        out = getattr(clf, name)(Xd)
        assert isinstance(out, da.Array), name
        assert out.chunks[0] == Xd.chunks[0]
        expected = getattr(clf, name)(X)
        if name == "predict":
            numpy.testing.assert_array_equal(out.compute(), expected)
        else:
            numpy.testing.assert_allclose(out.compute(), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expecting 7 features"):
        clf.predict(da.zeros((4, 3), chunks=2))


def test_errors_name_what_to_use(client):
    X, y, w = _problem()
    head = HEADS["linear"]()
    theta0 = head.init_params(seed=1, dtype="float64")
    Xd, yd = da.from_array(X, chunks=(50, D)), da.from_array(y, chunks=50)
    with pytest.raises(ValueError, match="'ggn-pcg'.*'fgn-compensated'"):
        fa.minimize(head, theta0, Xd, yd, method="ggn-pcg")
    with pytest.raises(ValueError, match="curvature_rows=None.*pass an int"):
        fa.minimize(head, theta0, Xd, yd, method="fgn", curvature_rows=None)
    with pytest.raises(ValueError, match="batch_size"):
        fa.minimize(head, theta0, Xd, yd, batch_size=32)
    bad = X.copy()
    bad[3, 2] = numpy.nan
    with pytest.raises(ValueError, match="`X` must be finite; got 1 NaN"):
        fa.minimize(head, theta0, da.from_array(bad, chunks=(50, D)), yd)
    with pytest.raises(ValueError, match=r"`y` must be integers in \[0, 5\); got max 7"):
        fa.minimize(head, theta0, Xd, da.from_array(numpy.where(y == 0, 7, y), chunks=50))
    with pytest.raises(ValueError, match="`sample_weight` must be >= 0"):
        fa.minimize(head, theta0, Xd, yd, sample_weight=da.from_array(-w, chunks=50))
    with pytest.raises(ValueError, match="must have shape"):
        fa.minimize(head, theta0, Xd[:, :5], yd)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fa.minimize(head, theta0, Xd[Xd[:, 0] > 0], yd)
    with pytest.raises(TypeError, match="`y` must be integers"):
        fa.minimize(head, theta0, Xd, yd.astype(float))
    sparse = Xd.map_blocks(scipy.sparse.csr_matrix, meta=scipy.sparse.csr_matrix((0, D)))
    with pytest.raises(TypeError, match="`X`'s chunks must be NumPy or CuPy arrays; got scipy.sparse"):
        fa.minimize(head, theta0, sparse, yd)
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="'auto' or 'cpu'"):
        fa.FGNClassifier(device="gpu").fit(Xd, yd)


def test_callback_runs_on_the_client(client):
    """The loop runs in this process: a callback sees NumPy parameters, from the main thread."""
    X, y, _ = _problem()
    head = HEADS["linear"]()
    seen = []

    def callback(theta, record):
        seen.append((type(theta), threading.current_thread() is threading.main_thread()))

    fa.minimize(head, head.init_params(seed=1, dtype="float64"), da.from_array(X, chunks=(100, D)),
                da.from_array(y, chunks=100), l2=1e-2, curvature_rows=CURVATURE_ROWS, max_iter=3, callback=callback)
    assert seen and all(t is numpy.ndarray and main for t, main in seen)


# ---- CuPy chunks (the stand-in here; CuPy on a GPU machine) ------------------------------


def _device_dask(gpu_xp, a, chunks):
    """The NumPy array ``a`` as a Dask array of ``gpu_xp`` chunks."""
    meta = gpu_xp.asarray(numpy.empty((0,) * a.ndim, dtype=a.dtype))
    return da.from_array(a, chunks=chunks).map_blocks(gpu_xp.asarray, dtype=a.dtype, meta=meta)


@pytest.fixture
def threads():
    """The threaded scheduler, in this process (where the stand-in is registered), whatever client is active."""
    with dask.config.set(scheduler="threads"):
        yield


@pytest.mark.parametrize("labels_on_device", [False, True])
@pytest.mark.parametrize("head_name", list(HEADS))
def test_device_chunks_objective_and_gradient(gpu_xp, threads, head_name, labels_on_device):
    """One pass over CuPy chunks: the in-memory NumPy values to 1e-10, on the device, with a ragged last chunk."""
    X, y, w = _problem()
    head = HEADS[head_name]()
    theta = head.init_params(seed=1, dtype="float64")
    theta += 0.3 * numpy.random.default_rng(2).normal(size=theta.shape)
    yd, wd = ((_device_dask(gpu_xp, y, 37), _device_dask(gpu_xp, w, 37)) if labels_on_device
              else (da.from_array(y, chunks=50), w))
    batch = DaskBatch(head, gpu_xp.asarray(theta), _device_dask(gpu_xp, X, (37, D)), yd, wd)
    keep = w > 0
    ref = head.linearize(theta, X[keep], y[keep], w[keep])
    lin = batch.linearize(gpu_xp.asarray(theta))
    assert batch.n_samples == int(keep.sum())
    assert isinstance(lin.grad, gpu_xp.ndarray)
    assert _rel(to_host(objective(lin, 0.01)), objective(ref, 0.01)) < EVAL_RTOL
    assert _rel(to_host(lin.grad), ref.grad) < EVAL_RTOL
    dirs = [numpy.random.default_rng(3 + k).normal(size=theta.shape) for k in range(2)]
    sums = Subspace(lin, [gpu_xp.asarray(d) for d in dirs], None).model_sums(lin, 0.01)
    assert _rel(to_host(sums), Subspace(ref, dirs, None).model_sums(ref, 0.01)) < EVAL_RTOL
    e, V = (to_host(a) for a in lin._output_covariance())
    e_ref, V_ref = output_covariance(ref)
    assert _rel((V * e) @ V.T, (V_ref * e_ref) @ V_ref.T) < EVAL_RTOL
    # the curvature rows come back on the device, as the in-memory rows
    rows = numpy.array([0, 5, 36, 37, 200])
    sub = lin._take(gpu_xp.asarray(rows))
    kept = numpy.flatnonzero(keep)[rows]
    assert isinstance(sub.X, gpu_xp.ndarray)
    numpy.testing.assert_array_equal(to_host(sub.X), X[kept])
    numpy.testing.assert_array_equal(to_host(sub.y), y[kept])


@pytest.mark.parametrize("head_name, method", [("linear", "fgn-compensated"), ("two-layer", "fgn")])
def test_device_chunks_fit_matches_in_memory(gpu_xp, threads, head_name, method):
    X, y, w = _problem(seed=4)
    head = HEADS[head_name]()
    theta0 = head.init_params(seed=1, dtype="float64")
    kwargs = dict(l2=1e-2, tol=1e-8, curvature_rows=CURVATURE_ROWS, random_state=5, max_iter=60, method=method)
    ref = fa.minimize(head, theta0, X, y, sample_weight=w, **kwargs)
    res = fa.minimize(head, gpu_xp.asarray(theta0), _device_dask(gpu_xp, X, (41, D)), da.from_array(y, chunks=41),
                      sample_weight=_device_dask(gpu_xp, w, 41), **kwargs)
    assert isinstance(res.theta, gpu_xp.ndarray)
    assert res.converged == ref.converged and res.n_iter == ref.n_iter > 5
    assert _rel(to_host(res.theta), ref.theta) < FIT_RTOL


def test_device_chunks_errors(gpu_xp, threads):
    X, y, _ = _problem()
    head = HEADS["linear"]()
    theta0 = head.init_params(seed=1, dtype="float64")
    Xd, yd = _device_dask(gpu_xp, X, (50, D)), _device_dask(gpu_xp, y, 50)
    with pytest.raises(TypeError, match=r"CuPy chunks but `theta0` is a NumPy array.*to_device\(theta0, 'gpu'\)"):
        fa.minimize(head, theta0, Xd, yd)
    with pytest.raises(TypeError, match=r"NumPy chunks but `theta0` is a CuPy array.*to_device\(theta0, 'cpu'\)"):
        fa.minimize(head, gpu_xp.asarray(theta0), da.from_array(X, chunks=(50, D)), yd)
    bad = X.copy()
    bad[3, 2] = numpy.inf
    with pytest.raises(ValueError, match="`X` must be finite; got 1 NaN or infinite"):
        fa.minimize(head, gpu_xp.asarray(theta0), _device_dask(gpu_xp, bad, (50, D)), yd)
    with pytest.raises(ValueError, match=r"`y` must be integers in \[0, 5\); got min -1"):
        fa.minimize(head, gpu_xp.asarray(theta0), Xd, _device_dask(gpu_xp, numpy.where(y == 0, -1, y), 50))
    with pytest.raises(ValueError, match="`sample_weight` must be finite"):
        fa.minimize(head, gpu_xp.asarray(theta0), Xd, yd, sample_weight=gpu_xp.asarray(numpy.full(N, numpy.nan)))


def test_classifier_on_device_chunks(gpu_xp, threads):
    """FGNClassifier on CuPy chunks fits on the device (device="auto"); predictions are Dask arrays of NumPy chunks."""
    pytest.importorskip("sklearn")
    n = 2600  # more rows than the 2048 curvature rows: the fit makes passes
    X, y, w = _problem(seed=7, n=n)
    labels = numpy.array(["ant", "bee", "cat", "dog", "eel"])[y]
    kwargs = dict(l2=1e-2, tol=1e-8, dtype="float64", class_weight="balanced", random_state=3)
    ref = fa.FGNClassifier(device="cpu", **kwargs).fit(da.from_array(X, chunks=(400, D)), labels, sample_weight=w)
    Xd = _device_dask(gpu_xp, X, (400, D))
    clf = fa.FGNClassifier(device="auto", **kwargs).fit(Xd, da.from_array(labels, chunks=400),
                                                        sample_weight=_device_dask(gpu_xp, w, 400))
    assert clf.device_ == "gpu" and isinstance(clf.theta_, gpu_xp.ndarray)
    assert clf.n_iter_ == ref.n_iter_ > 3
    assert _rel(clf.coef_, ref.coef_) < FIT_RTOL
    for name in ("predict", "predict_proba", "decision_function"):
        out = getattr(clf, name)(Xd)
        assert isinstance(out, da.Array) and isinstance(out._meta, numpy.ndarray), name
        values = out.compute()
        assert isinstance(values, numpy.ndarray), name
        expected = getattr(ref, name)(X)
        if name == "predict":
            numpy.testing.assert_array_equal(values, expected)
        else:
            numpy.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="'auto' or 'gpu' for a Dask `X` with CuPy chunks"):
        fa.FGNClassifier(device="cpu").fit(Xd, labels)
    with pytest.raises(ValueError, match="'auto' or 'cpu' for a Dask `X` with NumPy chunks"):
        fa.FGNClassifier(device="gpu").fit(da.from_array(X, chunks=(400, D)), labels)


@pytest.mark.gpu
def test_cupy_chunks_on_worker_processes(client):
    """Real CuPy only: CuPy chunks made on the workers, theta and the sums serialized between processes."""
    cupy = pytest.importorskip("cupy")
    X, y, _ = _problem(seed=4)
    head = HEADS["linear"]()
    theta0 = head.init_params(seed=1, dtype="float64")
    kwargs = dict(l2=1e-2, tol=1e-8, curvature_rows=CURVATURE_ROWS, random_state=5, method="fgn-compensated")
    ref = fa.minimize(head, theta0, X, y, **kwargs)
    res = fa.minimize(head, cupy.asarray(theta0), _device_dask(cupy, X, (41, D)), da.from_array(y, chunks=41),
                      **kwargs)
    assert _rel(to_host(res.theta), ref.theta) < FIT_RTOL
