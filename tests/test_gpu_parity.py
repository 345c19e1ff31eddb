"""The GPU branches against the NumPy path: the same computation from the same host data.

Each test builds its problem on the host, runs it once on NumPy and once on
``gpu_xp`` (the CPU stand-in for CuPy here, CuPy on a GPU machine) and
compares the two. Device in, device out: every array a GPU call returns is a
``gpu_xp.ndarray`` in the input dtype.

Sizes
-----
Two sizes of each problem. ``simulated``: every array a fused kernel gets has
at most 64 entries, and the test asks the stand-in to run the Numba CUDA
kernels themselves there, under the CUDA simulator (``simulate_max_entries``,
0 by default), so that their launch code and reduction order are compared
too. ``twin``: more than 64 rows and parameters; the stand-in runs the
kernels' CPU twins (the GPU branches of the Python code are what differs).
On CuPy both sizes run the real kernels.

The simulator spends about 0.1 s on each block of a launch, whatever its
threads (its scheduler polls every thread), so a CG iteration there costs
about a second: the CG-based steps run at the ``twin`` size, and one
row-space CG solve (six iterations) at the ``simulated`` size.

Tolerances
----------
float64: ``rtol = 1e-12``; float32: ``rtol = 1e-5``. Both are relative to the
largest entry of the NumPy result (``reference.assert_close``): entries of a
sum can be near 0, where cancellation leaves only the rounding of the
summation order, and the GPU sums in another order (tree reductions in the
CUDA kernels; cuBLAS on a GPU). CG-based results are solved to a tolerance far
below the comparison's, so that both backends stop at the same iteration and
their iterates agree to rounding.
"""

import numpy as np
import pytest
import reference as ref
from conftest import to_host

import fgn_arrays as fa
from fgn_arrays.compensation import kronecker_fgn_step, output_covariance
from fgn_arrays.step import _on_host
from fgn_arrays.testing import DeviceArray

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
# (N, D, C, H)
SIZES = {"simulated": (6, 4, 3, 5), "twin": (80, 12, 5, 8)}
SIMULATE_MAX_ENTRIES = 64
HEADS = ["linear", "tanh", "relu", "gelu"]


def make_head(kind, D, C, H):
    if kind == "linear":
        return fa.LinearHead(D, C)
    return fa.TwoLayerHead(D, H, C, activation=kind)


def simulate_kernels(gpu_xp, size):
    """On the stand-in at the ``simulated`` size, run the Numba CUDA kernels (under the simulator); else nothing."""
    if size == "simulated" and gpu_xp.ndarray is DeviceArray:
        gpu_xp.kernels.simulate_max_entries = SIMULATE_MAX_ENTRIES


def problem(kind, size, dtype, seed=0):
    """``head`` and host ``(theta, X, y)``: ``theta`` perturbed from the initialisation, so that no logit row is flat."""
    N, D, C, H = SIZES[size]
    rng = np.random.default_rng(seed)
    head = make_head(kind, D, C, H)
    theta = head.init_params(seed=seed, dtype="float64") + 0.5 * rng.standard_normal(head.n_params)
    X = rng.standard_normal((N, D))
    y = rng.integers(0, C, size=N)
    y[:C] = np.arange(C)  # every class present
    return head, theta.astype(dtype), X.astype(dtype), y


def linearize_both(gpu_xp, head, theta, X, y):
    """``(cpu, gpu)`` Linearizations at the same host data."""
    return head.linearize(theta, X, y), head.linearize(gpu_xp.asarray(theta), gpu_xp.asarray(X), gpu_xp.asarray(y))


def assert_parity(gpu_xp, gpu_value, cpu_value, rtol, name, dtype=None):
    """``gpu_value`` is a device array (of ``dtype`` when given) equal to ``cpu_value`` up to ``rtol`` (module docstring)."""
    assert isinstance(gpu_value, gpu_xp.ndarray), f"{name}: {type(gpu_value).__name__} is not a device array"
    assert isinstance(cpu_value, np.ndarray), f"{name}: NumPy in, NumPy out"
    if dtype is not None:
        assert gpu_value.dtype == dtype and cpu_value.dtype == dtype, name
    ref.assert_close(to_host(gpu_value), cpu_value, rtol=rtol, err_msg=name)


# ---- margin statistics --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("shape", [(8, 6), (80, 7)], ids=["simulated", "twin"])
def test_margin_stats(gpu_xp, shape, scale, dtype):
    simulate_kernels(gpu_xp, "simulated" if shape[0] * shape[1] <= SIMULATE_MAX_ENTRIES else "twin")
    rng = np.random.default_rng(1)
    Z = (scale * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, shape[1], size=shape[0])
    Z_gpu, y_gpu = gpu_xp.asarray(Z), gpu_xp.asarray(y)
    cpu, gpu = fa.margin_stats(Z, y), fa.margin_stats(Z_gpu, y_gpu)
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        assert_parity(gpu_xp, getattr(gpu, name), getattr(cpu, name), RTOL[dtype], name, dtype)
    assert_parity(gpu_xp, fa.competitor_probs(Z_gpu, y_gpu), fa.competitor_probs(Z, y), RTOL[dtype], "Q", dtype)


# ---- heads: products and Gram matrices -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", HEADS)
def test_head_products(gpu_xp, kind, size, dtype):
    simulate_kernels(gpu_xp, size)
    head, theta, X, y = problem(kind, size, dtype, seed=2)
    cpu, gpu = linearize_both(gpu_xp, head, theta, X, y)
    N, C, P = len(y), head.n_classes, head.n_params
    rng = np.random.default_rng(3)
    v = rng.standard_normal(P).astype(dtype)
    a = rng.standard_normal(N).astype(dtype)
    A = rng.standard_normal((N, C)).astype(dtype)
    v_gpu, a_gpu, A_gpu = gpu_xp.asarray(v), gpu_xp.asarray(a), gpu_xp.asarray(A)
    rtol = RTOL[dtype]

    pairs = {
        "logits": (head.logits(gpu_xp.asarray(theta), gpu_xp.asarray(X)), head.logits(theta, X)),
        "grad": (gpu.grad, cpu.grad),
        "margin_jvp": (gpu.margin_jvp(v_gpu), cpu.margin_jvp(v)),
        "margin_vjp": (gpu.margin_vjp(a_gpu), cpu.margin_vjp(a)),
        "logits_jvp": (gpu.logits_jvp(v_gpu), cpu.logits_jvp(v)),
        "logits_vjp": (gpu.logits_vjp(A_gpu), cpu.logits_vjp(A)),
        "margin_gram": (gpu.margin_gram(), cpu.margin_gram()),
        "fgn_matvec": (fa.fgn_matvec(gpu, v_gpu), fa.fgn_matvec(cpu, v)),
        "ggn_matvec": (fa.ggn_matvec(gpu, v_gpu), fa.ggn_matvec(cpu, v)),
        "dropped_matvec": (fa.dropped_matvec(gpu, v_gpu), fa.dropped_matvec(cpu, v)),
    }
    for name in ("margin", "loss", "prob_true", "lse_rest"):
        pairs[f"stats.{name}"] = (getattr(gpu.stats, name), getattr(cpu.stats, name))
    for name, (gpu_value, cpu_value) in pairs.items():
        assert_parity(gpu_xp, gpu_value, cpu_value, rtol, name, dtype)
    np.testing.assert_allclose(float(gpu.loss), float(cpu.loss), rtol=rtol)


# ---- steps ---------------------------------------------------------------------------------


def assert_same_step(gpu_xp, gpu, cpu, rtol, dtype):
    """Two StepResults of the same solve: same path, directions and decreases to rounding."""
    assert (gpu.solver, gpu.converged, gpu.status, gpu.n_iter) == (cpu.solver, cpu.converged, cpu.status, cpu.n_iter)
    assert_parity(gpu_xp, gpu.direction, cpu.direction, rtol, "direction", dtype)
    if cpu.coefficients is None:
        assert gpu.coefficients is None
    else:
        assert_parity(gpu_xp, gpu.coefficients, cpu.coefficients, rtol, "coefficients", dtype)
    # The Kronecker step leaves its predicted decrease on the device (a 0-d array).
    np.testing.assert_allclose(float(gpu.predicted_decrease), float(cpu.predicted_decrease), rtol=rtol)
    assert float(cpu.predicted_decrease) > 0


# CG tolerance of the steps: far below the comparison's (module docstring).
CG_RTOL = {np.float64: 1e-13, np.float32: 1e-6}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["linear", "gelu"])
@pytest.mark.parametrize(
    "solver, size",
    [("cg", "twin"), ("cholesky", "twin"), ("auto", "twin"), ("cholesky", "simulated"), ("auto", "simulated")],
)
def test_fgn_step(gpu_xp, solver, kind, size, dtype):
    simulate_kernels(gpu_xp, size)
    head, theta, X, y = problem(kind, size, dtype, seed=4)
    cpu_lin, gpu_lin = linearize_both(gpu_xp, head, theta, X, y)
    gpu = fa.fgn_step(gpu_lin, 0.1, l2=0.01, solver=solver, rtol=CG_RTOL[dtype])
    # "auto" weighs flops against launch latency on the GPU, flops alone on the
    # CPU, so the two may choose differently: the NumPy reference runs what the GPU chose.
    assert gpu.solver == (solver if solver != "auto" else gpu.solver) and gpu.solver in ("cg", "cholesky")
    cpu = fa.fgn_step(cpu_lin, 0.1, l2=0.01, solver=gpu.solver, rtol=CG_RTOL[dtype])
    assert_same_step(gpu_xp, gpu, cpu, RTOL[dtype], dtype)


def test_fgn_step_cg_simulated(gpu_xp):
    # The row-space CG with its fused update kernels on the device (the CUDA
    # kernels under the simulator, on the stand-in): another summation order
    # than NumPy's, the same iterates to rounding.
    simulate_kernels(gpu_xp, "simulated")
    head, theta, X, y = problem("linear", "simulated", np.float64, seed=4)
    cpu_lin, gpu_lin = linearize_both(gpu_xp, head, theta, X, y)
    gpu = fa.fgn_step(gpu_lin, 0.1, l2=0.01, solver="cg", rtol=CG_RTOL[np.float64])
    cpu = fa.fgn_step(cpu_lin, 0.1, l2=0.01, solver="cg", rtol=CG_RTOL[np.float64])
    assert gpu.n_iter >= 3
    assert_same_step(gpu_xp, gpu, cpu, RTOL[np.float64], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["twin"])
@pytest.mark.parametrize("kind", ["linear", "gelu"])
def test_fgn_step_damping_zero(gpu_xp, kind, size, dtype):
    simulate_kernels(gpu_xp, size)
    head, theta, X, y = problem(kind, size, dtype, seed=5)
    cpu_lin, gpu_lin = linearize_both(gpu_xp, head, theta, X, y)
    gpu = fa.fgn_step(gpu_lin, 0.0, l2=0.05, rtol=CG_RTOL[dtype])
    cpu = fa.fgn_step(cpu_lin, 0.0, l2=0.05, rtol=CG_RTOL[dtype])
    assert gpu.solver == "cg-parameter-space"
    assert_same_step(gpu_xp, gpu, cpu, RTOL[dtype], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["twin"])
@pytest.mark.parametrize("kind", ["linear", "gelu"])
def test_ggn_step(gpu_xp, kind, size, dtype):
    simulate_kernels(gpu_xp, size)
    head, theta, X, y = problem(kind, size, dtype, seed=6)
    cpu_lin, gpu_lin = linearize_both(gpu_xp, head, theta, X, y)
    gpu = fa.ggn_step(gpu_lin, 0.1, l2=0.01, rtol=CG_RTOL[dtype])
    cpu = fa.ggn_step(cpu_lin, 0.1, l2=0.01, rtol=CG_RTOL[dtype])
    assert_same_step(gpu_xp, gpu, cpu, RTOL[dtype], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["twin"])
@pytest.mark.parametrize("kind", ["linear", "gelu"])
def test_kronecker_step(gpu_xp, kind, size, dtype):
    simulate_kernels(gpu_xp, size)
    head, theta, X, y = problem(kind, size, dtype, seed=7)
    cpu_lin, gpu_lin = linearize_both(gpu_xp, head, theta, X, y)
    g = np.random.default_rng(8).standard_normal(head.n_params).astype(dtype)
    cpu_eig, gpu_eig = output_covariance(cpu_lin), output_covariance(gpu_lin)
    # Eigenvalues, and Sigma = V diag(e) V^T (the eigenvectors' signs are the solver's choice).
    assert_parity(gpu_xp, gpu_eig[0], cpu_eig[0], RTOL[dtype], "e", dtype)
    e, V = (to_host(a).astype(np.float64) for a in gpu_eig)
    e_ref, V_ref = (a.astype(np.float64) for a in cpu_eig)
    ref.assert_close((V * e) @ V.T, (V_ref * e_ref) @ V_ref.T, rtol=RTOL[dtype], err_msg="Sigma")
    rtol = CG_RTOL[dtype]
    gpu = _on_host(kronecker_fgn_step(gpu_lin, gpu_xp.asarray(g), 0.1, 0.01, gpu_eig, rtol=rtol), rtol)
    cpu = _on_host(kronecker_fgn_step(cpu_lin, g, 0.1, 0.01, cpu_eig, rtol=rtol), rtol)
    assert gpu.solver == "cg-kronecker"
    assert_same_step(gpu_xp, gpu, cpu, RTOL[dtype], dtype)


# ---- minimize ------------------------------------------------------------------------------

# The history entries that are computed (not timed).
HISTORY = ("objective", "grad_norm", "damping", "rho", "cg_iter", "accepted", "step_size", "momentum")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [None, 80], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("kind", ["linear", "tanh"])
@pytest.mark.parametrize("method", ["fgn-compensated", "fgn", "ggn-pcg"])
def test_minimize(gpu_xp, method, kind, batch_size, dtype):
    # N = 160 rows, 100 of them in each step's curvature (full batch) and
    # mini-batches of 80 with 70: the random subsample is used in both (more
    # than 64 rows: see "Sizes").
    N, D, C, H = 160, 6, 5, 8
    rng = np.random.default_rng(9)
    head = make_head(kind, D, C, H)
    X = rng.standard_normal((N, D)).astype(dtype)
    y = rng.integers(0, C, size=N)
    theta0 = head.init_params(seed=1, dtype=np.dtype(dtype).name)
    # "auto" picks Cholesky or CG by a cost model that differs by backend (by design): CG on both here.
    solver = "cg" if method == "fgn" else "auto"
    kwargs = dict(method=method, solver=solver, l2=1e-3, max_iter=6 if batch_size is None else 2, tol=1e-10, batch_size=batch_size,
                  curvature_rows=100 if batch_size is None else 70, random_state=3)
    cpu = fa.minimize(head, theta0, X, y, **kwargs)
    gpu = fa.minimize(head, gpu_xp.asarray(theta0), gpu_xp.asarray(X), gpu_xp.asarray(y), **kwargs)
    rtol = RTOL[dtype]
    if method == "ggn-pcg" and dtype == np.float64:
        # the last steps' preconditioned CG (15 iterations near the optimum) carries
        # the rounding of the Woodbury preconditioner: 1.2e-11 measured on theta ~ 0.5
        rtol = 1e-10
    assert (gpu.n_iter, gpu.converged, gpu.status) == (cpu.n_iter, cpu.converged, cpu.status)
    assert cpu.n_iter >= 2
    assert_parity(gpu_xp, gpu.theta, cpu.theta, rtol, "theta", dtype)
    np.testing.assert_allclose(gpu.objective, cpu.objective, rtol=rtol)
    # near the optimum the gradient is at rounding level (ggn-pcg: ~5e-9): an absolute floor
    np.testing.assert_allclose(gpu.grad_norm, cpu.grad_norm, rtol=rtol, atol=1e-11)
    np.testing.assert_allclose(gpu.damping, cpu.damping, rtol=rtol)
    assert len(gpu.history["objective"]) == len(cpu.history["objective"]) >= 2
    for key in HISTORY:
        g, c = np.asarray(gpu.history[key], dtype=np.float64), np.asarray(cpu.history[key], dtype=np.float64)
        # rho = (f - f_new) / pred: near the optimum f - f_new ~ 1e-9 keeps ~7 digits of f's 16
        tol = max(rtol, 1e-6) if key == "rho" else rtol
        ref.assert_close(g, c, rtol=tol, err_msg=f"history[{key!r}]")


# ---- FGNClassifier -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:FGNClassifier did not converge")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", [None, 8], ids=["linear", "two-layer"])
def test_classifier(gpu_xp, hidden, dtype):
    assert fa.gpu_available()  # the stand-in, while registered, is a GPU
    rng = np.random.default_rng(10)
    X = rng.standard_normal((100, 6))
    y = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, size=100)]
    params = dict(hidden=hidden, l2=1e-3, max_iter=5, tol=1e-10, dtype=dtype, random_state=0)
    gpu = fa.FGNClassifier(device="gpu", **params).fit(X, y)
    cpu = fa.FGNClassifier(device="cpu", **params).fit(X, y)
    rtol = RTOL[np.dtype(dtype).type]
    assert gpu.device_ == "gpu" and cpu.device_ == "cpu"
    assert_parity(gpu_xp, gpu.theta_, cpu.theta_, rtol, "theta_", np.dtype(dtype))
    assert gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=rtol)
    X_new = rng.standard_normal((25, 6))
    for method in ("predict_proba", "decision_function"):
        got, want = getattr(gpu, method)(X_new), getattr(cpu, method)(X_new)
        assert isinstance(got, np.ndarray), method  # predictions come back to the host
        ref.assert_close(got, want, rtol=rtol, err_msg=method)
    np.testing.assert_array_equal(gpu.predict(X_new), cpu.predict(X_new))
