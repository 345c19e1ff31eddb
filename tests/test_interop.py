"""Interop: arrays from any DLPack producer (JAX, torch, ...) wherever the library takes arrays.

The producers here are tiny classes with ``__dlpack__`` and
``__dlpack_device__`` around a NumPy array (or a device array), so that the
tests need neither JAX nor torch. Host producers are read by
``numpy.from_dlpack`` without a copy; CUDA producers by the GPU backend's
``from_dlpack`` (CuPy's; on the stand-in, a patched one that records the
call); anything else is a ``TypeError`` naming the argument.
"""

import numpy as np
import pytest
import reference as ref

import fgn_arrays as fa
from fgn_arrays._backend import as_array


class Producer:
    """A DLPack producer that is not an array the library knows: wraps ``array``'s ``__dlpack__``."""

    def __init__(self, array, device=None):
        self.array, self.device = array, device

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device if self.device is not None else self.array.__dlpack_device__()


def _problem():
    theta, X, y = ref.random_linear_problem(8, 3, 4, seed=0)
    return fa.LinearHead(3, 4), theta, X, y


def test_host_producers_are_read_without_a_copy():
    Z = np.random.default_rng(0).standard_normal((5, 3))
    out = as_array(Producer(Z), "logits")
    assert isinstance(out, np.ndarray) and np.shares_memory(out, Z)
    y = np.array([0, 1, 2, 0, 1])
    stats = fa.margin_stats(Producer(Z), Producer(y))
    ref.assert_close(stats.margin, fa.margin_stats(Z, y).margin, rtol=0)
    lin = fa.linearize_logits(Producer(Z), y, lambda v: np.zeros((5, 3)), lambda A: np.zeros(2))
    assert np.shares_memory(lin.logits, Z)


def test_heads_minimize_and_steps_take_producers():
    head, theta, X, y = _problem()
    lin = head.linearize(theta, X, y)
    plin = head.linearize(Producer(theta), Producer(X), Producer(y), sample_weight=Producer(np.ones(8)))
    ref.assert_close(plin.grad, lin.grad, rtol=1e-14)
    ref.assert_close(head.logits(Producer(theta), Producer(X)), lin.logits, rtol=0)
    v, a = np.ones(head.n_params), np.ones(8)
    ref.assert_close(plin.margin_jvp(Producer(v)), lin.margin_jvp(v), rtol=1e-14)
    ref.assert_close(plin.margin_vjp(Producer(a)), lin.margin_vjp(a), rtol=1e-14)
    ref.assert_close(fa.fgn_matvec(lin, Producer(v)), fa.fgn_matvec(lin, v), rtol=0)
    x0 = fa.fgn_step(lin, 1.0, solver="cg").coefficients
    step = fa.fgn_step(lin, 1.0, solver="cg", x0=Producer(x0))
    assert step.converged
    kwargs = dict(method="fgn", l2=1e-2, max_iter=5)
    res = fa.minimize(head, Producer(np.zeros(head.n_params)), Producer(X), Producer(y), **kwargs)
    ref.assert_close(res.theta, fa.minimize(head, np.zeros(head.n_params), X, y, **kwargs).theta, rtol=0)


def test_callables_may_return_producers():
    head, theta, X, y = _problem()
    lin = head.linearize(theta, X, y)
    clin = fa.linearize_logits(Producer(lin.logits), Producer(y), lambda v: Producer(lin.logits_jvp(v)),
                               lambda A: Producer(lin.logits_vjp(A)), theta=Producer(theta),
                               weight_mask=Producer(head.weight_mask()))
    ref.assert_close(clin.grad, lin.grad, rtol=1e-12)
    ref.assert_close(fa.ggn_matvec(clin, np.ones(head.n_params)), fa.ggn_matvec(lin, np.ones(head.n_params)),
                     rtol=1e-12)


def test_read_only_producers():
    # JAX exports read-only buffers; DLPack 1.0 carries the flag and NumPy keeps it
    head, theta, X, y = _problem()
    X = X.copy()
    X.flags.writeable = False
    theta = theta.copy()
    theta.flags.writeable = False
    res = fa.minimize(head, Producer(theta), Producer(X), y, method="fgn", l2=1e-2, max_iter=3)
    assert np.isfinite(res.objective)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda h, t, X, y: fa.margin_stats([[0.0, 1.0]], [0]), "logits"),
        (lambda h, t, X, y: h.linearize(t.tolist(), X, y), "theta"),
        (lambda h, t, X, y: h.linearize(t, X, tuple(y)), "y"),
        (lambda h, t, X, y: h.logits(t, "X"), "X"),
        (lambda h, t, X, y: fa.minimize(h, t, X.tolist(), y), "X"),
        (lambda h, t, X, y: fa.minimize(h, t, X, y, sample_weight=[1.0] * 8), "sample_weight"),
        (lambda h, t, X, y: h.linearize(t, X, y).margin_jvp(list(t)), "v"),
        (lambda h, t, X, y: h.linearize(t, X, y).logits_vjp(object()), "A"),
        (lambda h, t, X, y: fa.fgn_step(h.linearize(t, X, y), 1.0, x0=[0.0] * 8), "x0"),
        (lambda h, t, X, y: fa.fgn_matvec(h.linearize(t, X, y), 1.5j), "v"),
        (lambda h, t, X, y: fa.linearize_logits(np.zeros((8, 4)), y, abs, abs, theta=list(t)), "theta"),
        (lambda h, t, X, y: fa.linearize_logits(np.zeros((8, 4)), y, abs, abs, weight_mask={}), "weight_mask"),
    ],
)
def test_non_arrays_raise_type_errors_naming_the_argument(call, name):
    head, theta, X, y = _problem()
    with pytest.raises(TypeError, match=f"`{name}`"):
        call(head, theta, X, y)


def test_producers_on_other_devices_are_refused():
    Z = np.zeros((4, 3))
    with pytest.raises(TypeError, match="`logits` lives on DLPack device type 4"):
        fa.margin_stats(Producer(Z, device=(4, 0)), np.zeros(4, dtype=np.int64))


def test_cuda_producers_go_to_the_gpu_backend(gpu_xp, monkeypatch):
    rng = np.random.default_rng(1)
    Z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    Z_dev, y_dev = gpu_xp.asarray(Z), gpu_xp.asarray(y)
    if hasattr(gpu_xp, "counts"):
        # the stand-in has no DLPack: its from_dlpack returns the device array the producer wraps
        monkeypatch.setattr(gpu_xp, "from_dlpack", lambda x: x.array, raising=False)
        producer = Producer(Z_dev, device=(2, 0))
    else:
        producer = Producer(Z_dev)  # a real CuPy array's DLPack, on its CUDA device
    stats = fa.margin_stats(producer, y_dev)
    assert isinstance(stats.margin, type(Z_dev))
    ref.assert_close(stats.margin, fa.margin_stats(Z, y).margin, rtol=1e-12)
    with pytest.raises(TypeError, match="one backend"):
        fa.margin_stats(producer, y)  # NumPy labels with device logits


def test_producers_that_refuse_to_export_name_the_argument():
    class Refusing(Producer):
        def __dlpack__(self, **kwargs):
            raise RuntimeError("Can't export tensors that require gradient")

    with pytest.raises(TypeError, match="`logits` .*could not be read through DLPack: Can't export"):
        fa.margin_stats(Refusing(np.zeros((4, 3))), np.zeros(4, dtype=np.int64))


def test_cuda_producers_without_a_gpu_backend_name_the_argument():
    # no CuPy here: a TypeError that says what is missing; with CuPy, this fake CUDA producer
    # (host memory behind it) is refused by cupy.from_dlpack: a TypeError naming `logits` too
    fake = Producer(np.zeros((4, 3)), device=(2, 0))
    with pytest.raises(TypeError, match="`logits`"):
        fa.margin_stats(fake, np.zeros(4, dtype=np.int64))
