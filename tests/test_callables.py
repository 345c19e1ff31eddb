"""Models given by callables: fa.linearize_logits, fa.CallableHead, and the examples that use them.

A three-layer tanh MLP written with the namespace's functions (so that it
runs on NumPy, the CuPy stand-in and CuPy) supplies its own logit JVP and
VJP; its linearization is compared with dense float64 references built from
a central-difference Jacobian of a plain NumPy forward pass (no code shared
with the model's products). With the linear head's own products as the
callables, every product and step equals the linear head's.
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import reference as ref
from conftest import to_host

import fgn_arrays as fa

# Products of the callables' linearization and of LinearHead's are the same
# float64 operations (a GEMM, then the same fused row kernels), so 1e-12 leaves
# room for summation order only.
RTOL64 = 1e-12
# Against a central-difference Jacobian (eps = 1e-6): truncation O(eps^2) and
# rounding O(1e-16 / eps) on O(1) quantities.
RTOL_FD = 1e-7
ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# A three-layer model and its dense references
# ---------------------------------------------------------------------------

D, H, C, N = 3, 4, 5, 7
SHAPES = [(H, D), (H,), (H, H), (H,), (C, H), (C,)]
SIZES = [int(np.prod(s)) for s in SHAPES]
P = sum(SIZES)


def unflatten(theta):
    parts, start = [], 0
    for shape, size in zip(SHAPES, SIZES):
        parts.append(theta[start : start + size].reshape(shape))
        start += size
    return parts


def mlp_linearize(xp):
    """``linearize(theta, X) -> (Z, jvp, vjp)`` of ``Z = W3 tanh(W2 tanh(W1 x + b1) + b2) + b3`` on ``xp``."""

    def linearize(theta, X):
        W1, b1, W2, b2, W3, b3 = unflatten(theta)
        a1 = xp.tanh(X @ W1.T + b1)
        a2 = xp.tanh(a1 @ W2.T + b2)
        s1, s2 = 1 - a1 * a1, 1 - a2 * a2

        def jvp(v):
            V1, c1, V2, c2, V3, c3 = unflatten(v)
            da1 = s1 * (X @ V1.T + c1)
            da2 = s2 * (da1 @ W2.T + a1 @ V2.T + c2)
            return da2 @ W3.T + a2 @ V3.T + c3

        def vjp(A):
            g2 = (A @ W3) * s2
            g1 = (g2 @ W2) * s1
            grads = [g1.T @ X, xp.sum(g1, axis=0), g2.T @ a1, xp.sum(g2, axis=0), A.T @ a2, xp.sum(A, axis=0)]
            return xp.concatenate([xp.ravel(g) for g in grads])

        return a2 @ W3.T + b3, jvp, vjp

    return linearize


def mlp_logits_ref(theta, X):
    """The same model's logits, plain NumPy float64 (for finite differences)."""
    W1, b1, W2, b2, W3, b3 = unflatten(np.asarray(theta, dtype=np.float64))
    return np.tanh(np.tanh(X @ W1.T + b1) @ W2.T + b2) @ W3.T + b3


def mlp_weight_mask():
    return np.concatenate([np.full(size, float(len(shape) == 2)) for shape, size in zip(SHAPES, SIZES)])


class MLPCase:
    """The model at a random point, its callables' linearization on ``xp`` and dense references."""

    def __init__(self, xp, seed=0, sample_weight=False):
        rng = np.random.default_rng(seed)
        self.theta = rng.standard_normal(P)
        self.X = rng.standard_normal((N, D))
        self.y = rng.integers(0, C, N)
        self.sw = rng.uniform(0.5, 2.0, N) if sample_weight else None
        self.xp = xp
        Z, jvp, vjp = mlp_linearize(xp)(xp.asarray(self.theta), xp.asarray(self.X))
        self.lin = fa.linearize_logits(Z, xp.asarray(self.y), jvp, vjp, theta=xp.asarray(self.theta),
                                       weight_mask=mlp_weight_mask(),
                                       sample_weight=None if self.sw is None else xp.asarray(self.sw))
        # references: Jz from central differences of the NumPy forward pass
        self.Z = mlp_logits_ref(self.theta, self.X)
        self.Jz = ref.fd_jacobian(lambda t: mlp_logits_ref(t, self.X), self.theta)
        self.J = ref.margin_jacobian_ref(self.Jz, self.Z, self.y)
        c = np.full(N, 1.0 / N) if self.sw is None else self.sw / self.sw.sum()
        self.c = c
        self.v = rng.standard_normal(P)
        self.a = rng.standard_normal(N)
        self.A = rng.standard_normal((N, C))

    def dev(self, a):
        return self.xp.asarray(a)


def fgn_ref_weighted(J, Z, y, c):
    w = ref.softmax_ref(Z)[np.arange(len(y)), y]
    w = w * (1 - w)
    return (J * (c * w)[:, None]).T @ J


def ggn_ref_weighted(Jz, Z, c):
    Ph = ref.softmax_ref(Z)
    G = np.zeros((Jz.shape[2],) * 2)
    for i in range(Jz.shape[0]):
        S = np.diag(Ph[i]) - np.outer(Ph[i], Ph[i])
        G += c[i] * Jz[i].T @ S @ Jz[i]
    return G


# ---------------------------------------------------------------------------
# The three-layer model's linearization against dense references
# ---------------------------------------------------------------------------


def test_model_callables_match_finite_differences():
    # the model's own JVP and VJP are the FD Jacobian and its transpose (so the references below are its)
    case = MLPCase(np)
    _, jvp, vjp = mlp_linearize(np)(case.theta, case.X)
    Jz_model = np.stack([jvp(e) for e in np.eye(P)], axis=-1)
    ref.assert_close(Jz_model, case.Jz, rtol=RTOL_FD)
    ref.assert_close(vjp(case.A), np.einsum("ncp,nc->p", case.Jz, case.A), rtol=RTOL_FD)


@pytest.mark.parametrize("sample_weight", [False, True], ids=["mean", "sample_weight"])
def test_products_match_dense_jacobians(xp, sample_weight):
    case = MLPCase(xp, sample_weight=sample_weight)
    lin, c = case.lin, case.c
    stats = ref.margin_ref(case.Z, case.y)
    ref.assert_close(lin.stats.margin, stats["margin"], rtol=RTOL64)
    ref.assert_close(lin.loss, np.sum(c * ref.cross_entropy_ref(case.Z, case.y)), rtol=RTOL64)
    ref.assert_close(lin.logits_jvp(case.dev(case.v)), case.Jz @ case.v, rtol=RTOL_FD)
    ref.assert_close(lin.logits_vjp(case.dev(case.A)), np.einsum("ncp,nc->p", case.Jz, case.A), rtol=RTOL_FD)
    ref.assert_close(lin.margin_jvp(case.dev(case.v)), case.J @ case.v, rtol=RTOL_FD)
    ref.assert_close(lin.margin_vjp(case.dev(case.a)), case.J.T @ case.a, rtol=RTOL_FD)
    # gradient of the (weighted) mean cross-entropy: J^T (c ⊙ r)
    ref.assert_close(lin.grad, case.J.T @ (c * ref.residual_ref(case.Z, case.y)), rtol=RTOL_FD)
    G_fgn = fgn_ref_weighted(case.J, case.Z, case.y, c)
    G_ggn = ggn_ref_weighted(case.Jz, case.Z, c)
    v = case.dev(case.v)
    ref.assert_close(fa.fgn_matvec(lin, v), G_fgn @ case.v, rtol=RTOL_FD)
    ref.assert_close(fa.ggn_matvec(lin, v), G_ggn @ case.v, rtol=RTOL_FD)
    ref.assert_close(fa.dropped_matvec(lin, v), (G_ggn - G_fgn) @ case.v, rtol=RTOL_FD)


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_steps_match_dense_solves(xp, l2):
    case = MLPCase(xp, seed=1)
    lin, damping = case.lin, 0.5
    M = mlp_weight_mask()
    g = to_host(lin.grad) + l2 * M * case.theta
    G_fgn = fgn_ref_weighted(case.J, case.Z, case.y, case.c)
    G_ggn = ggn_ref_weighted(case.Jz, case.Z, case.c)
    for step, G in ((fa.fgn_step(lin, damping, l2=l2, rtol=1e-10), G_fgn),
                    (fa.ggn_step(lin, damping, l2=l2, rtol=1e-10), G_ggn)):
        expected = np.linalg.solve(G + np.diag(l2 * M + damping), -g)
        assert step.converged, step.status
        ref.assert_close(step.direction, expected, rtol=1e-6)
    assert fa.fgn_step(lin, damping).solver == "cg"  # "auto": no Gram matrix, so CG


def test_gram_diagonal_is_an_unbiased_estimate():
    # The row norms ||J_i||_D^2 are estimated (Hutchinson, a few sign probes): the same
    # every time (fixed seed), positive, and their sum (tr(J D J^T)) close to the exact one.
    case = MLPCase(np, seed=2)
    M = mlp_weight_mask()
    for ws, bs in ((1.0, 1.0), (0.25, 1.0)):
        exact = np.einsum("np,p,np->n", case.J, ws * M + bs * (1 - M), case.J)
        estimate = case.lin.margin_gram_diag(ws, bs)
        ref.assert_close(estimate, case.lin.margin_gram_diag(ws, bs), rtol=0)
        assert np.all(estimate >= 0)
        assert 0.5 < estimate.sum() / exact.sum() < 2.0


# ---------------------------------------------------------------------------
# LinearHead's own products as callables: the same products and steps
# ---------------------------------------------------------------------------


def _as_callables(xp, sample_weight):
    theta, X, y = ref.random_linear_problem(9, 4, 5, seed=3)
    sw = np.random.default_rng(4).uniform(0.5, 2.0, 9) if sample_weight else None
    head = fa.LinearHead(4, 5)
    dev = (lambda a: None if a is None else xp.asarray(a))
    lin = head.linearize(dev(theta), dev(X), dev(y), sample_weight=dev(sw))
    clin = fa.linearize_logits(lin.logits, dev(y), lin.logits_jvp, lin.logits_vjp, theta=dev(theta),
                               weight_mask=head.weight_mask(xp), sample_weight=dev(sw))
    return head, lin, clin


@pytest.mark.parametrize("sample_weight", [False, True], ids=["mean", "sample_weight"])
def test_linear_head_as_callables_gives_the_same_products(xp, sample_weight):
    head, lin, clin = _as_callables(xp, sample_weight)
    rng = np.random.default_rng(5)
    v = xp.asarray(rng.standard_normal(head.n_params))
    a = xp.asarray(rng.standard_normal(lin.n_samples))
    A = xp.asarray(rng.standard_normal(lin.logits.shape))
    assert clin.n_params == lin.n_params and clin.n_samples == lin.n_samples
    ref.assert_close(clin.loss, lin.loss, rtol=RTOL64)
    ref.assert_close(clin.grad, lin.grad, rtol=RTOL64)
    ref.assert_close(clin.weight_mask, lin.weight_mask, rtol=0)
    for name, arg in (("logits_jvp", v), ("logits_vjp", A), ("margin_jvp", v), ("margin_vjp", a)):
        ref.assert_close(getattr(clin, name)(arg), getattr(lin, name)(arg), rtol=RTOL64, err_msg=name)
    for fn in (fa.fgn_matvec, fa.ggn_matvec, fa.dropped_matvec):
        ref.assert_close(fn(clin, v), fn(lin, v), rtol=RTOL64, err_msg=fn.__name__)


@pytest.mark.parametrize("l2", [0.0, 0.2])
def test_linear_head_as_callables_gives_the_same_steps(xp, l2):
    head, lin, clin = _as_callables(xp, sample_weight=True)
    # ggn_step (precond=None) runs the same parameter-space CG on the same products
    expected, got = fa.ggn_step(lin, 0.3, l2=l2, rtol=1e-10), fa.ggn_step(clin, 0.3, l2=l2, rtol=1e-10)
    ref.assert_close(got.direction, expected.direction, rtol=RTOL64)
    assert got.n_iter == expected.n_iter and got.converged
    # fgn_step: the same row-space system; CG's Jacobi preconditioner differs (the callables'
    # Gram diagonal is estimated), so both are solved to rounding and compared with each other
    # and with LinearHead's direct Cholesky solve
    for solver in ("cg", "cholesky"):
        expected = fa.fgn_step(lin, 0.3, l2=l2, solver=solver, rtol=1e-13)
        got = fa.fgn_step(clin, 0.3, l2=l2, solver="cg", rtol=1e-13)
        assert got.solver == "cg"
        ref.assert_close(got.direction, expected.direction, rtol=RTOL64, err_msg=solver)
        ref.assert_close(got.predicted_decrease, expected.predicted_decrease, rtol=RTOL64)


def test_callable_head_trains_like_the_linear_head(xp):
    theta, X, y = ref.random_linear_problem(40, 3, 4, seed=6)
    lhead = fa.LinearHead(3, 4)

    def linearize(theta, X):
        lin = lhead.linearize(theta, X, xp.zeros(X.shape[0], dtype=xp.int64))
        return lin.logits, lin.logits_jvp, lin.logits_vjp

    chead = fa.CallableHead(lhead.n_params, 4, linearize, weight_mask=lhead.weight_mask())
    theta0, X, y = xp.asarray(0 * theta), xp.asarray(X), xp.asarray(y)
    kwargs = dict(method="fgn", l2=1e-2, solver="cg", tol=1e-10, max_iter=100)
    expected, got = fa.minimize(lhead, theta0, X, y, **kwargs), fa.minimize(chead, theta0, X, y, **kwargs)
    assert got.converged and expected.converged
    ref.assert_close(got.objective, expected.objective, rtol=1e-12)
    # the minimiser is unique (l2 > 0 on W; the biases are fixed by the gradient)
    ref.assert_close(got.theta, expected.theta, rtol=1e-7)
    ref.assert_close(chead.logits(got.theta, X), lhead.logits(got.theta, X), rtol=RTOL64)


def test_callable_head_linearize_and_mini_batches():
    case = MLPCase(np)
    head = fa.CallableHead(P, C, mlp_linearize(np), weight_mask=mlp_weight_mask())
    lin = head.linearize(case.theta, case.X, case.y)
    ref.assert_close(lin.grad, case.lin.grad, rtol=RTOL64)
    ref.assert_close(head.logits(case.theta, case.X), case.Z, rtol=RTOL64)
    # a row subset (the curvature rows of minimize) restricts the callables' products
    rows = np.array([0, 2, 5])
    sub = lin._take(rows)
    ref.assert_close(sub.margin_jvp(case.v), (case.J @ case.v)[rows], rtol=RTOL_FD)
    ref.assert_close(sub.margin_vjp(case.a[:3]), case.J[rows].T @ case.a[:3], rtol=RTOL_FD)
    res = fa.minimize(head, case.theta, case.X, case.y, method="fgn", l2=1e-3, batch_size=3, max_iter=2,
                      curvature_rows=2)
    assert np.isfinite(res.objective)


def test_callable_head_takes_any_rows():
    # X of any shape with one row per example (here images), passed to the callables as it is
    rng = np.random.default_rng(7)
    images, y = rng.standard_normal((N, 1, D)), rng.integers(0, C, N)
    inner = mlp_linearize(np)
    head = fa.CallableHead(P, C, lambda theta, X: inner(theta, X.reshape(X.shape[0], -1)))
    res = fa.minimize(head, rng.standard_normal(P), images, y, method="fgn", max_iter=3)
    assert np.isfinite(res.objective) and res.n_iter == 3


# ---------------------------------------------------------------------------
# What has no closed form raises, with what to use instead
# ---------------------------------------------------------------------------


def test_closed_form_requests_raise_clear_errors():
    case = MLPCase(np)
    with pytest.raises(ValueError, match="solver='cholesky'.*Use solver='cg'"):
        fa.fgn_step(case.lin, 1.0, solver="cholesky")
    with pytest.raises(ValueError, match="margin_gram"):
        case.lin.margin_gram()
    for precond in ("jacobi", "fgn"):
        with pytest.raises(ValueError, match=f"precond='{precond}'.*Use precond=None"):
            fa.ggn_step(case.lin, 1.0, precond=precond)
    head = fa.CallableHead(P, C, mlp_linearize(np))
    for method in ("fgn-compensated", "ggn-pcg"):
        with pytest.raises(ValueError, match=f"method '{method}'.*Use method='fgn'"):
            fa.minimize(head, case.theta, case.X, case.y, method=method)
    with pytest.raises(ValueError, match="solver='cholesky'"):
        fa.minimize(head, case.theta, case.X, case.y, method="fgn", solver="cholesky")
    with pytest.raises(NotImplementedError, match="initialisation"):
        head.init_params()


def test_without_theta():
    case = MLPCase(np)
    Z, jvp, vjp = mlp_linearize(np)(case.theta, case.X)
    lin = fa.linearize_logits(Z, case.y, jvp, vjp)  # P from the first VJP (the gradient)
    assert lin.n_params == P and lin.theta is None
    ref.assert_close(lin.grad, case.lin.grad, rtol=RTOL64)
    assert fa.fgn_step(lin, 1.0).converged
    with pytest.raises(ValueError, match="`l2` > 0 needs the parameters.*pass `theta`"):
        fa.fgn_step(lin, 1.0, l2=0.1)


# ---------------------------------------------------------------------------
# Bad callables and bad outputs: messages name the callable
# ---------------------------------------------------------------------------


def _bad_lin(jvp=None, vjp=None, theta=True):
    case = MLPCase(np)
    Z, good_jvp, good_vjp = mlp_linearize(np)(case.theta, case.X)
    return case, fa.linearize_logits(Z, case.y, jvp or good_jvp, vjp or good_vjp,
                                     theta=case.theta if theta else None)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda out: out[:, :2], ValueError, r"`logits_jvp` returned shape \(7, 2\); expected \(7, 5\)"),
        (lambda out: out.astype(np.float32), TypeError, "`logits_jvp` returned dtype float32; expected float64"),
        (lambda out: np.where(out > 0, np.nan, out), ValueError, "`logits_jvp` returned [0-9]+ NaN or infinite"),
        (lambda out: out.tolist(), TypeError, "`logits_jvp` returned builtins.list"),
    ],
    ids=["shape", "dtype", "finite", "list"],
)
def test_bad_jvp_outputs_name_the_callable(bad, error, match):
    case, _ = _bad_lin()
    good = mlp_linearize(np)(case.theta, case.X)[1]
    _, lin = _bad_lin(jvp=lambda v: bad(good(v)))
    with pytest.raises(error, match=match):
        lin.margin_jvp(case.v)
    with pytest.raises(error, match=match):
        fa.fgn_step(lin, 1.0)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda out: out[:-1], ValueError, rf"`logits_vjp` returned shape \({P - 1},\); expected \({P},\)"),
        (lambda out: out.astype(np.float32), TypeError, "`logits_vjp` returned dtype float32"),
        (lambda out: out * np.inf, ValueError, "`logits_vjp` returned [0-9]+ NaN or infinite"),
        (lambda out: float(out[0]), TypeError, "`logits_vjp` returned builtins.float"),
    ],
    ids=["shape", "dtype", "finite", "scalar"],
)
def test_bad_vjp_outputs_name_the_callable(bad, error, match):
    case, _ = _bad_lin()
    good = mlp_linearize(np)(case.theta, case.X)[2]
    with pytest.raises(error, match=match):
        _bad_lin(vjp=lambda A: bad(good(A)))[1].grad


def test_finiteness_is_checked_on_the_first_call_only(gpu_xp):
    # inside CG the outputs' metadata are checked, never their values: no host synchronisation
    case = MLPCase(gpu_xp)
    v, a = case.dev(case.v), case.dev(case.a)
    case.lin.margin_jvp(v), case.lin.margin_vjp(a)
    if hasattr(gpu_xp, "counts"):
        gpu_xp.counts.reset()
    for _ in range(3):
        case.lin.margin_jvp(v), case.lin.margin_vjp(a)
    if hasattr(gpu_xp, "counts"):
        assert gpu_xp.counts.syncs == 0


def test_outputs_on_another_backend_name_the_callable():
    from fgn_arrays.testing import use_standin

    with use_standin() as sx:
        case = MLPCase(sx)
        Z, jvp, vjp = mlp_linearize(sx)(case.dev(case.theta), case.dev(case.X))
        lin = fa.linearize_logits(Z, case.dev(case.y), lambda v: to_host(jvp(v)), vjp)
        with pytest.raises(TypeError, match="`logits_jvp` returned a numpy array; the linearization is on"):
            lin.margin_jvp(case.dev(case.v))


def test_bad_callables_and_linearize_results():
    case = MLPCase(np)
    Z, jvp, vjp = mlp_linearize(np)(case.theta, case.X)
    with pytest.raises(TypeError, match="`logits_jvp` must be callable; got numpy.ndarray"):
        fa.linearize_logits(Z, case.y, Z, vjp)
    with pytest.raises(TypeError, match="`logits_vjp` must be callable"):
        fa.linearize_logits(Z, case.y, jvp, None)
    with pytest.raises(TypeError, match="`linearize` must be callable"):
        fa.CallableHead(P, C, "model")
    with pytest.raises(ValueError, match=r"`weight_mask` must have shape \(3,\)"):
        fa.linearize_logits(Z, case.y, jvp, vjp, theta=np.zeros(3), weight_mask=np.ones(4))
    with pytest.raises(ValueError, match="`weight_mask` must hold only 0s and 1s; got 0.5"):
        fa.CallableHead(P, C, mlp_linearize(np), weight_mask=np.full(P, 0.5))
    with pytest.raises(TypeError, match="`theta` must have the dtype of `logits`"):
        fa.linearize_logits(Z, case.y, jvp, vjp, theta=case.theta.astype(np.float32))
    pairs = fa.CallableHead(P, C, lambda theta, X: (Z, jvp))
    with pytest.raises(TypeError, match=r"`linearize` must return a tuple \(logits, logits_jvp, logits_vjp\)"):
        pairs.linearize(case.theta, case.X, case.y)
    short = fa.CallableHead(P, C, lambda theta, X: (Z[:3], jvp, vjp))
    with pytest.raises(ValueError, match=r"`linearize` \(its logits\) returned shape \(3, 5\); expected \(7, 5\)"):
        short.linearize(case.theta, case.X, case.y)
    not_callable = fa.CallableHead(P, C, lambda theta, X: (Z, jvp, 3))
    with pytest.raises(TypeError, match="the logits VJP"):
        not_callable.linearize(case.theta, case.X, case.y)


def test_callables_outputs_may_be_read_only():
    # JAX hands over read-only buffers (through DLPack): the library never writes into them
    case = MLPCase(np)
    Z, jvp, vjp = mlp_linearize(np)(case.theta, case.X)

    def read_only(fn):
        def wrapped(x):
            out = fn(x)
            out.flags.writeable = False
            return out

        return wrapped

    Z.flags.writeable = False
    lin = fa.linearize_logits(Z, case.y, read_only(jvp), read_only(vjp), theta=case.theta)
    for l2 in (0.0, 0.1):
        assert fa.fgn_step(lin, 1.0, l2=l2).converged
        assert fa.ggn_step(lin, 1.0, l2=l2).converged


# ---------------------------------------------------------------------------
# The examples (run in CI)
# ---------------------------------------------------------------------------


def _run_example(name):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick"], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    values = {key: float(m) for key, m in re.findall(r"(initial|FGN|gradient descent)[^\n]*?(\d+\.\d{6})", out.stdout)}
    assert set(values) == {"initial", "FGN", "gradient descent"}, out.stdout
    assert values["FGN"] < values["initial"] and values["gradient descent"] < values["initial"], out.stdout
    return out.stdout


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numpy_mlp_example_products():
    example = _load_example("numpy_mlp")
    model = example.MLP(3, 4, 5)
    theta = model.init(seed=1) + 0.1
    X = np.random.default_rng(8).standard_normal((6, 3))
    Z, jvp, vjp = model.linearize(theta, X)
    Jz = ref.fd_jacobian(lambda t: model.forward(t, X)[0], theta)
    ref.assert_close(np.stack([jvp(e) for e in np.eye(model.n_params)], axis=-1), Jz, rtol=RTOL_FD)
    A = np.random.default_rng(9).standard_normal(Z.shape)
    ref.assert_close(vjp(A), np.einsum("ncp,nc->p", Jz, A), rtol=RTOL_FD)


def test_numpy_mlp_example_runs():
    _run_example("numpy_mlp.py")


def test_jax_mlp_example_runs():
    pytest.importorskip("jax")
    _run_example("jax_mlp.py")


def test_docstring_examples():
    import doctest

    import fgn_arrays.heads.callable as module

    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
