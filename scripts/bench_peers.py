"""One FGN row-space CG iteration of a linear head, fgn_arrays against its peers, in one process.

Usage::

    python scripts/bench_peers.py                      # CPU: NumPy, torch.func, jax.jit
    python scripts/bench_peers.py --device gpu         # GPU: CuPy, torch (CUDA), jax (GPU)
    python scripts/bench_peers.py --n-classes 10 1000 --n-samples 1024 --repeats 50

The iteration is the product ``fgn_step(solver="cg")`` applies at each CG
iteration, with ``s = sqrt(w / N)`` and ``Lam = damping I`` (``l2 = 0``)::

    a -> a + s ⊙ J Lam^-1 J^T (s ⊙ a)          (one margin VJP, one margin JVP)

Columns, each timed as the best of ``--repeats`` calls after one warm-up call
(GPU: with a synchronisation inside the timed region), and printed as the ratio
to the floor with the milliseconds beside it:

- ``floor``: the two GEMMs no implementation avoids, ``X @ V.T`` and
  ``G.T @ X`` at the same shapes (float32);
- ``fgn_arrays``: ``lin._margin_jvp``/``lin._margin_vjp`` as ``fgn_step`` calls them;
- ``numpy`` (``cupy`` on the GPU): the same iteration written plainly, with
  the dense ``U = e_y - q`` precomputed as ``linearize`` does;
- ``torch.func``: ``torch.func.vjp`` once at ``theta`` (its pullback reused),
  then ``torch.func.jvp`` per iteration (which reruns the forward pass);
- ``jax.jit``: one jitted function of ``jax.vjp`` and ``jax.jvp``.

torch and jax are optional: a column says "not installed" (or "no GPU") when
they cannot run. Each column's output is first checked against fgn_arrays
(relative 2-norm difference at most ``1e-4`` in float32); a column that
differs says "MISMATCH" and the script exits with status 1.

Data as in ``bench_solvers.py steps``: labels from a random linear softmax
model, ``theta`` at half its weights, float32. Default N=512, D=256,
C in {10, 100, 1000, 10000}, damping 1e-2.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys

import numpy as np

import fgn_arrays as fa
from fgn_arrays.step import row_space_operator
from fgn_arrays._timing import best_of, synchronize

from bench_solvers import make_batch  # scripts/ is on sys.path when this script runs

RELATIVE_TOLERANCE = 1e-4


class NotAvailable(Exception):
    """A peer that cannot run here (not installed, or no GPU for it)."""


# ---- the iteration in fgn_arrays, and the floor ---------------------------------


def fgn_iteration(lin, damping):
    """``a -> a + s ⊙ J (Lam^-1 J^T (s ⊙ a))``, exactly as ``fgn_step`` builds it."""
    return row_space_operator(lin, damping)[2]


def two_gemm_floor(xp, X, C, seed=2):
    """The GEMMs of one margin JVP (``X V^T``) and one margin VJP (``G^T X``)."""
    rng = np.random.default_rng(seed)
    N, D = X.shape
    V = xp.asarray(rng.standard_normal((C, D)).astype(np.float32))
    G = xp.asarray(rng.standard_normal((N, C)).astype(np.float32))

    def floor():
        return xp.matmul(X, V.T), xp.matmul(G.T, X)

    return floor


# ---- peers: each gets host arrays and returns (iteration, to_numpy, synchronize) ----


def numpy_peer(xp, W, b, X, y, s, lam_inv):
    """The iteration written plainly in NumPy (or CuPy): dense ``U``, GEMMs, row sums."""
    W, b, X, y, s = (xp.asarray(t) for t in (W, b, X, y, s))
    rows = xp.arange(X.shape[0])
    # U = e_y - q, q the softmax over the competitors (zero at the label)
    Z = X @ W.T + b
    Z[rows, y] = -xp.inf
    Q = xp.exp(Z - Z.max(axis=1, keepdims=True))
    Q /= Q.sum(axis=1, keepdims=True)
    U = -Q
    U[rows, y] = 1
    lam_inv = xp.float32(lam_inv)

    def iteration(a):
        # J^T (s ⊙ a) = [R^T X, sum_i R_i] with R_i = (s ⊙ a)_i u_i
        R = (s * a)[:, None] * U
        g_W, g_b = R.T @ X, R.sum(axis=0)
        # J v = rowsum(U ⊙ (X V_W^T + v_b)) at v = Lam^-1 J^T (s ⊙ a)
        Zv = X @ (lam_inv * g_W).T + lam_inv * g_b
        return a + s * (U * Zv).sum(axis=1)

    def get(x):
        return x.get() if hasattr(x, "get") else np.asarray(x)

    return iteration, xp.asarray, get, lambda: synchronize(xp)


def torch_peer(device, W, b, X, y, s, lam_inv):
    """``torch.func.vjp`` at theta once (its pullback kept), ``torch.func.jvp`` per iteration."""
    try:
        import torch
        from torch.func import jvp, vjp
    except ImportError:
        raise NotAvailable("not installed") from None
    dev = "cuda" if device == "gpu" else "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        raise NotAvailable("no GPU")
    lam_inv = float(lam_inv)
    W, b, X, s = (torch.as_tensor(t, device=dev) for t in (W, b, X, s))
    y = torch.as_tensor(y, device=dev, dtype=torch.int64)
    label = torch.nn.functional.one_hot(y, W.shape[0]).bool()

    def margins(W, b):
        # m_i = z_{i,y_i} - logsumexp_{k != y_i} z_ik
        Z = X @ W.T + b
        return Z.gather(1, y[:, None])[:, 0] - torch.logsumexp(Z.masked_fill(label, -torch.inf), dim=1)

    _, pullback = vjp(margins, W, b)

    def iteration(a):
        g_W, g_b = pullback(s * a)
        _, Jv = jvp(margins, (W, b), (lam_inv * g_W, lam_inv * g_b))
        return a + s * Jv

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    return iteration, lambda x: torch.as_tensor(x, device=dev), lambda x: x.cpu().numpy(), sync


def jax_peer(device, W, b, X, y, s, lam_inv):
    """One ``jax.jit``-compiled function: ``jax.vjp`` then ``jax.jvp`` of the margins."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise NotAvailable("not installed") from None
    try:
        dev = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    except RuntimeError:
        raise NotAvailable("no GPU") from None
    lam_inv = float(lam_inv)
    W, b, X, y, s = (jax.device_put(t, dev) for t in (W, b, X, y.astype(np.int32), s))
    label = jax.nn.one_hot(y, W.shape[0], dtype=bool)

    @jax.jit
    def iteration_at(W, b, X, y, label, s, a):
        def margins(W, b):
            # m_i = z_{i,y_i} - logsumexp_{k != y_i} z_ik
            Z = X @ W.T + b
            z_true = jnp.take_along_axis(Z, y[:, None], axis=1)[:, 0]
            return z_true - jax.nn.logsumexp(jnp.where(label, -jnp.inf, Z), axis=1)

        _, pullback = jax.vjp(margins, W, b)
        g_W, g_b = pullback(s * a)
        _, Jv = jax.jvp(margins, (W, b), (lam_inv * g_W, lam_inv * g_b))
        return a + s * Jv

    def iteration(a):
        return iteration_at(W, b, X, y, label, s, a).block_until_ready()

    return iteration, lambda x: jax.device_put(x, dev), np.asarray, lambda: None


PEERS = {"torch.func": torch_peer, "jax.jit": jax_peer}


# ---- one table -----------------------------------------------------------------


def relative_difference(x, reference):
    return float(np.linalg.norm(x - reference) / max(np.linalg.norm(reference), np.finfo(np.float32).tiny))


def timed(fn, sync, repeats):
    def call():
        fn()
        sync()

    return best_of(call, repeats=repeats)


def bench_one(C, args, xp):
    N, D = args.n_samples, args.n_features
    theta, X, y = make_batch(N, D, C, xp, seed=args.seed)
    head = fa.LinearHead(D, C)
    lin = head.linearize(theta, X, y)
    a_host = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    a = xp.asarray(a_host)

    ours = fgn_iteration(lin, args.damping)
    reference = fa.to_numpy(ours(a))
    floor = two_gemm_floor(xp, lin.X, C)
    t_floor = timed(floor, lambda: synchronize(xp), args.repeats)
    row = {"floor": t_floor, "fgn_arrays": timed(lambda: ours(a), lambda: synchronize(xp), args.repeats)}

    # The peers start from the same host data and the same s = sqrt(w / N).
    W, b = (fa.to_numpy(t) for t in head.unflatten(lin.theta))
    host = (W, b, fa.to_numpy(lin.X), fa.to_numpy(lin.y), fa.to_numpy(xp.sqrt(lin.curvature_weights / N)))
    lam_inv = np.float32(1 / args.damping)
    peers = {"cupy" if xp is not np else "numpy": lambda *h: numpy_peer(xp, *h)}
    peers.update({name: (lambda *h, make=make: make(args.device, *h)) for name, make in PEERS.items()})
    for name, make in peers.items():
        try:
            iteration, put, get, sync = make(*host, lam_inv)
        except NotAvailable as why:
            row[name] = str(why)
            continue
        a_peer = put(a_host)
        err = relative_difference(get(iteration(a_peer)), reference)
        if not err <= RELATIVE_TOLERANCE:
            row[name] = f"MISMATCH {err:.1e}"
            continue
        row[name] = timed(functools.partial(iteration, a_peer), sync, args.repeats)
    return row


def cell(value, t_floor):
    if isinstance(value, str):
        return value
    return f"{value / t_floor:6.2f}x {1e3 * value:9.3f}ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--n-classes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--damping", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=20, help="best of this many timed calls (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device == "gpu":
        if not fa.gpu_available():
            parser.error("--device gpu needs CuPy and a CUDA GPU")
        import cupy as xp
    else:
        xp = np

    where = (platform.processor() or platform.machine()) if args.device == "cpu" else "GPU"
    print(
        f"One FGN row-space CG iteration, linear head, N={args.n_samples}, D={args.n_features}, "
        f"float32, damping={args.damping}, device={args.device} ({where}), best of {args.repeats}"
    )
    print("ratio to the two-GEMM floor (X @ V.T, G.T @ X), milliseconds beside it")
    rows = {C: bench_one(C, args, xp) for C in args.n_classes}
    columns = list(next(iter(rows.values())))
    width = 19
    print(f"{'C':>6}  " + "  ".join(f"{c:>{width}}" for c in columns))
    failed = False
    for C, row in rows.items():
        failed |= any(isinstance(v, str) and v.startswith("MISMATCH") for v in row.values())
        print(f"{C:>6}  " + "  ".join(f"{cell(row[c], row['floor']):>{width}}" for c in columns))
    if failed:
        print(f"a peer's iteration differs from fgn_arrays by more than {RELATIVE_TOLERANCE} (relative 2-norm)")
        sys.exit(1)


if __name__ == "__main__":
    main()
