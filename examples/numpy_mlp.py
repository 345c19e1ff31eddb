"""Any model: a hand-written NumPy MLP with three layers, trained by FGN steps from its own Jacobian products.

The model is ``Z = W3 tanh(W2 tanh(W1 x + b1) + b2) + b3``, written here in
plain NumPy with its forward pass, its logit JVP (forward mode) and its logit
VJP (backpropagation). :class:`fgn_arrays.CallableHead` turns them into a
head that :func:`fgn_arrays.minimize` trains with ``method="fgn"`` (damped
FGN steps solved by CG in row space); plain gradient descent gets the same
budget of passes over the data, counted as calls of the model (one forward
pass, one JVP or one VJP over the batch is one pass; a gradient-descent
step is two: forward and VJP).

Usage::

    python examples/numpy_mlp.py            # N=2048 rows, 200 passes
    python examples/numpy_mlp.py --quick    # a small problem (CI)
"""

import argparse

import numpy as np

import fgn_arrays as fa


class MLP:
    """Three layers, ``D -> H -> H -> C``, tanh after the first two, with a flat ``theta``.

    Layout (row-major, in order): ``W1 (H, D), b1 (H), W2 (H, H), b2 (H), W3 (C, H), b3 (C)``.
    """

    def __init__(self, n_features, n_hidden, n_classes):
        D, H, C = n_features, n_hidden, n_classes
        self.shapes = [(H, D), (H,), (H, H), (H,), (C, H), (C,)]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.n_params = sum(self.sizes)
        self.n_classes = C

    def unflatten(self, theta):
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            parts.append(theta[start : start + size].reshape(shape))
            start += size
        return parts

    def weight_mask(self):
        """1 on the weights, 0 on the biases (what ``l2`` penalises)."""
        return np.concatenate([np.full(size, float(len(shape) == 2)) for shape, size in zip(self.shapes, self.sizes)])

    def init(self, seed=0):
        rng = np.random.default_rng(seed)
        parts = [rng.standard_normal(s) / np.sqrt(s[1]) if len(s) == 2 else np.zeros(s) for s in self.shapes]
        return np.concatenate([p.ravel() for p in parts])

    def forward(self, theta, X):
        W1, b1, W2, b2, W3, b3 = self.unflatten(theta)
        a1 = np.tanh(X @ W1.T + b1)
        a2 = np.tanh(a1 @ W2.T + b2)
        return a2 @ W3.T + b3, (a1, a2)

    def linearize(self, theta, X):
        """``(Z, jvp, vjp)`` at ``theta``: one forward pass, its activations kept for the products."""
        W1, b1, W2, b2, W3, b3 = self.unflatten(theta)
        Z, (a1, a2) = self.forward(theta, X)
        s1, s2 = 1 - a1 * a1, 1 - a2 * a2  # tanh'

        def jvp(v):
            # forward mode: the tangents of h1, a1, h2, a2, Z along v
            V1, c1, V2, c2, V3, c3 = self.unflatten(v)
            da1 = s1 * (X @ V1.T + c1)
            da2 = s2 * (da1 @ W2.T + a1 @ V2.T + c2)
            return da2 @ W3.T + a2 @ V3.T + c3

        def vjp(A):
            # backpropagation of the logit cotangents A (N, C)
            g2 = (A @ W3) * s2
            g1 = (g2 @ W2) * s1
            grads = [g1.T @ X, g1.sum(0), g2.T @ a1, g2.sum(0), A.T @ a2, A.sum(0)]
            return np.concatenate([g.ravel() for g in grads])

        return Z, jvp, vjp


def make_problem(n_samples, n_features, n_classes, seed=0):
    """Features and labels of a random two-layer teacher, with label noise from Gumbel draws."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    T1 = rng.standard_normal((2 * n_features, n_features)) / np.sqrt(n_features)
    T2 = 3 * rng.standard_normal((n_classes, 2 * n_features)) / np.sqrt(2 * n_features)
    scores = np.tanh(X @ T1.T) @ T2.T + rng.gumbel(size=(n_samples, n_classes))
    return X, np.argmax(scores, axis=1)


class Counted:
    """The model's callables, counting passes over the batch (forward, JVP, VJP: one each)."""

    def __init__(self, linearize):
        self.passes, self._linearize = 0, linearize

    def __call__(self, theta, X):
        self.passes += 1
        Z, jvp, vjp = self._linearize(theta, X)
        return Z, self._count(jvp), self._count(vjp)

    def _count(self, fn):
        def counted(x):
            self.passes += 1
            return fn(x)

        return counted


def objective(head, theta, X, y, l2):
    """``L = mean CE + (l2/2) ||weights||^2`` and its gradient (one forward pass and one VJP)."""
    lin = head.linearize(theta, X, y)
    mask = lin.weight_mask
    return lin.loss + 0.5 * l2 * float(np.sum(mask * theta * theta)), lin.grad + l2 * mask * theta


def train_fgn(model, X, y, l2, budget):
    """``fa.minimize(method="fgn")`` until ``budget`` passes are spent; ``(objective, passes, steps)``."""
    counted = Counted(model.linearize)
    head = fa.CallableHead(model.n_params, model.n_classes, counted, weight_mask=model.weight_mask())
    res = fa.minimize(head, model.init(), X, y, method="fgn", l2=l2, damping=1.0, max_iter=10_000, tol=0.0,
                      callback=lambda theta, record: counted.passes >= budget)
    passes = counted.passes
    f, _ = objective(fa.CallableHead(model.n_params, model.n_classes, model.linearize,
                                     weight_mask=model.weight_mask()), res.theta, X, y, l2)
    return f, passes, len(res.history["objective"])


def train_gd(model, X, y, l2, passes, learning_rates):
    """Gradient descent, ``passes // 2`` steps, at each learning rate; ``(objective, lr)`` of the best."""
    head = fa.CallableHead(model.n_params, model.n_classes, model.linearize, weight_mask=model.weight_mask())
    best = (np.inf, None)
    for lr in learning_rates:
        theta = model.init()
        for _ in range(passes // 2):
            f, g = objective(head, theta, X, y, l2)
            theta = theta - lr * g
        f, _ = objective(head, theta, X, y, l2)
        if np.isfinite(f) and f < best[0]:
            best = (f, lr)
    return best


def settings(description):
    """``(N, D, H, C, K)`` from the command line: the problem's sizes and the budget of passes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small problem and budget (CI)")
    parser.add_argument("--passes", type=int, default=None, help="budget K of passes over the data")
    args = parser.parse_args()
    N, D, H, C, K = (256, 8, 16, 4, 60) if args.quick else (2048, 32, 64, 10, 200)
    return N, D, H, C, args.passes or K


def report(title, f0, f_fgn, passes, steps, f_gd, lr):
    """Print the objectives of FGN and gradient descent after the same number of passes."""
    print(title)
    rows = [
        ("initial objective", f0, ""),
        ("FGN (fa.minimize, method='fgn')", f_fgn, f"after {passes} passes ({steps} steps)"),
        (f"gradient descent (best lr={lr:g})", f_gd, f"after {2 * (passes // 2)} passes ({passes // 2} steps)"),
    ]
    for label, value, note in rows:
        print(f"  {label:<36} {value:.6f}  {note}".rstrip())


def main():
    N, D, H, C, K = settings(__doc__.splitlines()[0])
    l2 = 1e-4
    X, y = make_problem(N, D, C)
    model = MLP(D, H, C)
    f0, _ = objective(fa.CallableHead(model.n_params, C, model.linearize, weight_mask=model.weight_mask()),
                      model.init(), X, y, l2)
    f_fgn, passes, steps = train_fgn(model, X, y, l2, K)
    f_gd, lr = train_gd(model, X, y, l2, passes, [0.1, 0.3, 1.0, 3.0, 10.0])
    report(f"NumPy MLP {D}-{H}-{H}-{C} (P={model.n_params}), N={N} float64 rows, l2={l2}",
           f0, f_fgn, passes, steps, f_gd, lr)


if __name__ == "__main__":
    main()
