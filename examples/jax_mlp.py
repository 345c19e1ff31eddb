"""Any model: a JAX MLP with two hidden layers, trained by FGN steps whose logit JVP/VJP come from JAX through DLPack.

The model ``Z = W3 tanh(W2 tanh(W1 x + b1) + b2) + b3`` is written in JAX,
on the CPU, in float32 (JAX's default). At each point, ``jax.linearize``
(``jax.jvp`` evaluated once, its linear part kept) gives the logits and the
logit JVP from one forward pass, and ``jax.linear_transpose`` of that JVP
gives the logit VJP (what ``jax.vjp`` computes). The arrays cross between
JAX and fgn_arrays through DLPack, without copies: fgn_arrays reads the JAX
outputs with ``numpy.from_dlpack`` and JAX reads the NumPy vectors of
fgn_arrays with ``jax.numpy.from_dlpack``.

:class:`fgn_arrays.CallableHead` makes the three a head, which
:func:`fgn_arrays.minimize` trains with ``method="fgn"``; plain gradient
descent (``jax.value_and_grad``) gets the same budget of passes over the
data (one forward pass, one JVP or one VJP over the batch is one pass; a
gradient-descent step is two).

Usage (``pip install "fgn_arrays[examples]"``, or ``pip install "jax[cpu]"``)::

    python examples/jax_mlp.py            # N=2048 rows, 200 passes
    python examples/jax_mlp.py --quick    # a small problem (CI)
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the example runs on the CPU

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fgn_arrays as fa  # noqa: E402
from numpy_mlp import MLP as NumpyMLP  # noqa: E402  (this folder: the same layout, problem and pass count)
from numpy_mlp import Counted, make_problem, report, settings  # noqa: E402


def to_jax(a):
    """A NumPy array as a JAX array: through DLPack without a copy (JAX copies a misaligned or read-only one)."""
    try:
        return jnp.from_dlpack(a)
    except BufferError:  # NumPy exports no read-only array to this DLPack consumer
        return jnp.asarray(a)


class MLP(NumpyMLP):
    """The NumPy example's ``D -> H -> H -> C`` tanh MLP (same flat layout), its logits and products in JAX, float32."""

    def __init__(self, n_features, n_hidden, n_classes):
        super().__init__(n_features, n_hidden, n_classes)
        primal = jax.ShapeDtypeStruct((self.n_params,), jnp.float32)

        @jax.jit
        def linearize(theta, X):
            # one forward pass: the logits and the JVP's linear function (a pytree of the residuals)
            return jax.linearize(lambda t: self.logits(t, X), theta)

        @jax.jit
        def jvp(linear, v):
            return linear(v)

        @jax.jit
        def vjp(linear, A):
            # the transpose of the JVP: A -> Jz^T A
            return jax.linear_transpose(linear, primal)(A)[0]

        @jax.jit
        def loss_and_grad(theta, X, y, mask, l2):
            def loss(t):
                Z = self.logits(t, X)
                ce = jnp.mean(jax.nn.logsumexp(Z, axis=1) - jnp.take_along_axis(Z, y[:, None], axis=1)[:, 0])
                return ce + 0.5 * l2 * jnp.sum(mask * t * t)

            return jax.value_and_grad(loss)(theta)

        self._linearize, self._jvp, self._vjp, self.loss_and_grad = linearize, jvp, vjp, loss_and_grad

    def logits(self, theta, X):
        W1, b1, W2, b2, W3, b3 = self.unflatten(theta)
        a1 = jnp.tanh(X @ W1.T + b1)
        a2 = jnp.tanh(a1 @ W2.T + b2)
        return a2 @ W3.T + b3

    def weight_mask(self):
        return super().weight_mask().astype(np.float32)

    def init(self, seed=0):
        return super().init(seed).astype(np.float32)

    def linearize(self, theta, X):
        """For :class:`fgn_arrays.CallableHead`: ``(Z, jvp, vjp)`` at ``theta``, JAX arrays out, DLPack both ways."""
        Z, linear = self._linearize(to_jax(theta), to_jax(X))
        return Z, lambda v: self._jvp(linear, to_jax(v)), lambda A: self._vjp(linear, to_jax(A))


def train_fgn(model, X, y, l2, budget):
    """``fa.minimize(method="fgn")`` until ``budget`` passes are spent; ``(theta, passes, steps)``."""
    counted = Counted(model.linearize)
    head = fa.CallableHead(model.n_params, model.n_classes, counted, weight_mask=model.weight_mask())
    # theta0 (and X, y) may be JAX arrays too: minimize reads them through DLPack. X stays NumPy here:
    # JAX exports read-only buffers, which JAX then cannot take back through DLPack (to_jax would copy)
    res = fa.minimize(head, jnp.asarray(model.init()), X, y, method="fgn", l2=l2, damping=1.0,
                      max_iter=10_000, tol=0.0, callback=lambda theta, record: counted.passes >= budget)
    return res.theta, counted.passes, len(res.history["objective"])


def train_gd(model, X, y, l2, passes, learning_rates):
    """Gradient descent (``jax.value_and_grad``), ``passes // 2`` steps, at each learning rate; the best ``(f, lr)``."""
    X, y, mask = jnp.asarray(X), jnp.asarray(y), jnp.asarray(model.weight_mask())
    best = (np.inf, None)
    for lr in learning_rates:
        theta = jnp.asarray(model.init())
        for _ in range(passes // 2):
            _, g = model.loss_and_grad(theta, X, y, mask, l2)
            theta = theta - lr * g
        f = float(model.loss_and_grad(theta, X, y, mask, l2)[0])
        if np.isfinite(f) and f < best[0]:
            best = (f, lr)
    return best


def main():
    N, D, H, C, K = settings(__doc__.splitlines()[0])
    l2 = 1e-4
    X, y = make_problem(N, D, C)
    X = X.astype(np.float32)
    model = MLP(D, H, C)
    mask = jnp.asarray(model.weight_mask())

    def objective(theta):
        return float(model.loss_and_grad(jnp.asarray(theta), jnp.asarray(X), jnp.asarray(y), mask, l2)[0])

    f0 = objective(model.init())
    theta, passes, steps = train_fgn(model, X, y, l2, K)
    f_fgn = objective(theta)
    f_gd, lr = train_gd(model, X, y, l2, passes, [0.1, 0.3, 1.0, 3.0, 10.0])
    report(f"JAX MLP {D}-{H}-{H}-{C} (P={model.n_params}), N={N} float32 rows on {jax.devices()[0].platform}, "
           f"l2={l2}", f0, f_fgn, passes, steps, f_gd, lr)


if __name__ == "__main__":
    main()
