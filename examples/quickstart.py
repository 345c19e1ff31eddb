"""Quick start: a linear softmax head on a synthetic batch.

Prints the true-vs-rest margins, the exact GGN = FGN + dropped split on one
direction, and timings of the fused margin kernel and of the curvature
products. Runs on the GPU too: ``python examples/quickstart.py --device gpu``.
"""

import argparse

import numpy as np

import fgn_arrays as fa
from fgn_arrays._timing import best_of


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2048)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--n-classes", type=int, default=1000)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    N, D, C = args.n_samples, args.n_features, args.n_classes

    # A synthetic batch with signal: labels drawn from a random linear softmax
    # model, evaluated at half of its weights so margins spread around zero.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (3.0 / np.sqrt(D)) * rng.standard_normal((C, D)).astype(np.float32)
    gumbel = -np.log(-np.log(rng.uniform(size=(N, C))))
    y = np.argmax(X @ W.T + gumbel, axis=1)
    head = fa.LinearHead(D, C)
    theta = fa.to_device(head.flatten(0.5 * W, np.zeros(C, np.float32)), args.device)
    X, y = fa.to_device(X, args.device), fa.to_device(y, args.device)

    lin = head.linearize(theta, X, y)
    margins = fa.to_numpy(lin.stats.margin)
    print(f"LinearHead(D={D}, C={C}) on N={N} float32 rows, device={args.device}")
    print(f"  mean cross-entropy     {lin.loss:.6f}")
    print(f"  margins m_i            min {margins.min():+.3f}  median {np.median(margins):+.3f}  max {margins.max():+.3f}")

    v = fa.to_device(rng.standard_normal(head.n_params).astype(np.float32), args.device)
    ggn_v, fgn_v, dropped_v = (float((v * f(lin, v)).sum()) for f in (fa.ggn_matvec, fa.fgn_matvec, fa.dropped_matvec))
    print(f"  v.G_GGN v              {ggn_v:.6e}")
    print(f"  v.G_FGN v + v.G_drop v {fgn_v + dropped_v:.6e}   (FGN keeps {fgn_v / ggn_v:.1%})")

    Z = lin.logits

    def timed(f):
        return best_of(f, xp=lin.xp)

    print("  timings (best of 5, ms):")
    print(f"    margin_stats         {1e3 * timed(lambda: fa.margin_stats(Z, y)):8.3f}")
    print(f"    fgn_matvec           {1e3 * timed(lambda: fa.fgn_matvec(lin, v)):8.3f}")
    print(f"    ggn_matvec           {1e3 * timed(lambda: fa.ggn_matvec(lin, v)):8.3f}")
    step = fa.fgn_step(lin, damping=1.0, l2=1e-4)
    print(f"  FGN step (damping 1, l2 1e-4, solver {step.solver}): predicted decrease {step.predicted_decrease:.4f}")
    print(f"    fgn_step             {1e3 * timed(lambda: fa.fgn_step(lin, damping=1.0, l2=1e-4)):8.3f}")


if __name__ == "__main__":
    main()
