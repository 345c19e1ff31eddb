"""Quick start: a linear softmax head on a synthetic batch.

Prints the true-vs-rest margins, the exact GGN = FGN + dropped split on one
direction, and timings of the fused margin kernel and of the curvature
products. Runs on the GPU too: ``python examples/quickstart.py --device gpu``.
"""

import argparse
import time

import numpy as np

import fgn_arrays as fa


def best_of(fn, repeats=5):
    """Best wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2048)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--n-classes", type=int, default=1000)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    N, D, C = args.n_samples, args.n_features, args.n_classes

    rng = np.random.default_rng(0)
    X = fa.to_device(rng.standard_normal((N, D)).astype(np.float32), args.device)
    y = fa.to_device(rng.integers(0, C, size=N), args.device)
    head = fa.LinearHead(D, C)
    theta = head.init_params(seed=0, dtype="float32", device=args.device) * 100

    lin = head.linearize(theta, X, y)
    margins = fa.to_numpy(lin.stats.margin)
    print(f"LinearHead(D={D}, C={C}) on N={N} float32 rows, device={args.device}")
    print(f"  mean cross-entropy     {lin.loss:.6f}")
    print(f"  margins m_i            min {margins.min():+.3f}  median {np.median(margins):+.3f}  max {margins.max():+.3f}")

    v = fa.to_device(rng.standard_normal(head.n_params).astype(np.float32), args.device)
    ggn_v, fgn_v, dropped_v = (float((v * f(lin, v)).sum()) for f in (fa.ggn_matvec, fa.fgn_matvec, fa.dropped_matvec))
    print(f"  v.G_GGN v              {ggn_v:.6e}")
    print(f"  v.G_FGN v + v.G_drop v {fgn_v + dropped_v:.6e}   (FGN keeps {fgn_v / ggn_v:.1%})")

    sync = (lambda: None) if args.device == "cpu" else (lambda: __import__("cupy").cuda.Device().synchronize())
    Z = lin.logits

    def timed(f):
        return best_of(lambda: (f(), sync()))

    print("  timings (best of 5, ms):")
    print(f"    margin_stats         {1e3 * timed(lambda: fa.margin_stats(Z, y)):8.3f}")
    print(f"    fgn_matvec           {1e3 * timed(lambda: fa.fgn_matvec(lin, v)):8.3f}")
    print(f"    ggn_matvec           {1e3 * timed(lambda: fa.ggn_matvec(lin, v)):8.3f}")


if __name__ == "__main__":
    main()
