"""Figures of the experiments (matplotlib, imported inside each function: an optional dependency).

Each function takes the experiment's records and a folder, writes PNG files
there and returns their names. Figures are kept small (about 100 dpi, a few
inches) so that the committed copies stay under 200 KB.
"""

from __future__ import annotations

import math
import os

import numpy

__all__ = ["available", "decomposition", "head", "mechanism"]

DPI = 100


def available():
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_dir, name, dpi=DPI):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=dpi)
    plt.close(fig)
    return name


def decomposition(records, out_dir):
    """``decomposition.png``: residual, smallest eigenvalues and the dropped share against ``C``."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for head, marker in (("linear", "o"), ("two-layer", "s")):
        rows = sorted((r for r in records if r["head"] == head), key=lambda r: r["n_classes"])
        C = [r["n_classes"] for r in rows]
        floor = 1e-19  # exact zeros on a log axis
        ax1.plot(C, [max(r["residual"], floor) for r in rows], marker=marker, label=f"{head}: residual")
        ax1.plot(C, [max(abs(min(r["min_eig_dropped"], 0.0)), floor) for r in rows], marker=marker, ls="--",
                 label=f"{head}: |min(0, min eig G_dropped)|")
        ax2.plot(C, [r["dropped_norm_ratio"] for r in rows], marker=marker, label=f"{head}: ||G_dropped|| / ||G_GGN||")
        ax2.plot(C, [r["dropped_trace_ratio"] for r in rows], marker=marker, ls="--",
                 label=f"{head}: tr G_dropped / tr G_GGN")
    ax1.axhline(1e-12, color="k", lw=0.8, ls=":")
    ax1.set(xscale="log", yscale="log", xlabel="classes C", ylabel="relative to ||G_GGN||",
            title="decomposition: rounding only (C=2: exact 0)")
    ax2.set(xscale="log", xlabel="classes C", ylabel="share FGN drops", ylim=(-0.02, 1.02),
            title="how much curvature FGN drops")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return [_save(plt, fig, out_dir, "decomposition.png")]


def _mean_grid(records, column, n_classes):
    kappas = sorted({r["concentration"] for r in records if r["n_classes"] == n_classes})
    dampings = sorted({r["damping"] for r in records if r["n_classes"] == n_classes})
    grid = numpy.full((len(kappas), len(dampings)), numpy.nan)
    for i, k in enumerate(kappas):
        for j, d in enumerate(dampings):
            values = [r[column] for r in records
                      if r["n_classes"] == n_classes and r["concentration"] == k and r["damping"] == d]
            grid[i, j] = numpy.mean(values)
    return kappas, dampings, grid


def _entropy_by_kappa(records, n_classes):
    by = {}
    for r in records:
        if r["n_classes"] == n_classes:
            by.setdefault(r["concentration"], []).append(r["q_entropy"])
    return {k: float(numpy.mean(v)) for k, v in by.items()}


def mechanism(records, out_dir):
    """``mechanism_heatmaps.png``, ``mechanism_damping.png``, ``mechanism_concentration.png``."""
    plt = _pyplot()
    C = max(r["n_classes"] for r in records)
    kappas, dampings, err = _mean_grid(records, "rel_error", C)
    _, _, energy = _mean_grid(records, "dropped_energy", C)
    entropy = _entropy_by_kappa(records, C)
    ylabels = [f"{k:g} (H(q)={entropy[k]:.2f})" for k in kappas]
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, grid, title, cmap in ((axes[0], numpy.log10(err), "log10 ||d_FGN - d_GGN|| / ||d_GGN||", "viridis"),
                                  (axes[1], energy, "dropped-energy ratio of d_GGN", "magma")):
        im = ax.imshow(grid, aspect="auto", origin="lower", cmap=cmap)
        ax.set_xticks(range(len(dampings)), [f"{d:.0e}" for d in dampings], rotation=60, fontsize=7)
        ax.set_yticks(range(len(kappas)), ylabels, fontsize=7)
        ax.set(xlabel="damping / ||G_GGN||", ylabel="kappa (measured q entropy, nats)", title=title)
        ax.title.set_fontsize(9)
        fig.colorbar(im, ax=ax)
    written.append(_save(plt, fig, out_dir, "mechanism_heatmaps.png"))

    fig, ax = plt.subplots(figsize=(6, 3.8))
    colors = plt.cm.viridis(numpy.linspace(0, 0.9, len(kappas)))
    for k, row, color in zip(kappas, err, colors):
        ax.plot(dampings, row, marker="o", ms=3, color=color, label=f"kappa={k:g}, H(q)={entropy[k]:.2f}")
    for k, color in ((kappas[0], colors[0]), (kappas[-1], colors[-1])):
        _, _, bound = _mean_grid([r for r in records if r["concentration"] == k], "bound", C)
        ax.plot(dampings, bound[0], ls="--", color=color, lw=1, label=f"bound, kappa={k:g}")
    ax.set(xscale="log", yscale="log", xlabel="damping / ||G_GGN||", ylabel="||d_FGN - d_GGN|| / ||d_GGN||",
           title=f"C={C}; mean over seeds (C=2: exactly 0)", ylim=(max(1e-5, numpy.nanmin(err) / 3), None))
    ax.legend(fontsize=7)
    written.append(_save(plt, fig, out_dir, "mechanism_damping.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    # one line per whole decade of damping (all of them when the grid has none)
    picks = [j for j, d in enumerate(dampings) if abs(math.log10(d) - round(math.log10(d))) < 1e-9]
    picks = picks or range(len(dampings))
    colors = plt.cm.plasma(numpy.linspace(0, 0.9, len(picks)))
    H = [entropy[k] for k in kappas]
    for j, color in zip(picks, colors):
        ax1.plot(H, err[:, j], marker="o", ms=3, color=color, label=f"damping {dampings[j]:.0e}")
    ax1.set(yscale="log", xlabel="measured mean entropy of q (nats)", ylabel="||d_FGN - d_GGN|| / ||d_GGN||",
            title="against competitor spread")
    ax1.legend(fontsize=7)
    cells = [r for r in records if r["n_classes"] == C]
    sc = ax2.scatter([r["dropped_energy"] for r in cells], [r["rel_error"] for r in cells],
                     c=[math.log10(r["damping"]) for r in cells], s=6, cmap="plasma")
    fig.colorbar(sc, ax=ax2, label="log10 damping / ||G_GGN||")
    ax2.set(yscale="log", xlabel="dropped-energy ratio of d_GGN", ylabel="||d_FGN - d_GGN|| / ||d_GGN||",
            title="every cell and seed")
    written.append(_save(plt, fig, out_dir, "mechanism_concentration.png"))
    return written


def head(summary, trajectories, diagnostics, out_dir):
    """``head_objective.png`` (objective against time and passes) and ``head_fgn_diagnostics.png``."""
    plt = _pyplot()
    configs = list(dict.fromkeys((r["dataset"], r["head"]) for r in summary))
    best = {(r["dataset"], r["head"], r["method"]): r["lr"] for r in summary if r["best"]}
    fig, axes = plt.subplots(2, len(configs), figsize=(3.6 * len(configs), 6), squeeze=False)
    for col, (dataset, head_kind) in enumerate(configs):
        methods = [m for (d, h, m) in best if d == dataset and h == head_kind]
        for method in methods:
            lr = best[(dataset, head_kind, method)]
            points = [t for t in trajectories if t["dataset"] == dataset and t["head"] == head_kind
                      and t["method"] == method and _same(t["lr"], lr)]
            label = method if not math.isfinite(lr) else f"{method} (lr {lr:g})"
            for row, x in enumerate(("seconds", "passes")):
                xs, ys = [p[x] for p in points], [p["objective"] for p in points]
                if method.startswith("sklearn"):
                    final = next(r["objective"] for r in summary if r["dataset"] == dataset
                                 and r["head"] == head_kind and r["method"] == method)
                    if math.isfinite(xs[0]):
                        axes[row, col].plot(xs, [final], marker="*", ms=9, ls="none", label=label)
                else:
                    axes[row, col].plot(xs, ys, lw=1.2, label=label)
        for row, x in enumerate(("wall time (s)", "passes over the data")):
            axes[row, col].set(yscale="log", xlabel=x, ylabel="training objective", title=f"{dataset}, {head_kind}")
            axes[row, col].title.set_fontsize(9)
        axes[0, col].legend(fontsize=6)
    written = [_save(plt, fig, out_dir, "head_objective.png", dpi=0.8 * DPI)]  # 8 panels: under 200 KB

    if diagnostics:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        for dataset, head_kind in configs:
            rows = [d for d in diagnostics if d["dataset"] == dataset and d["head"] == head_kind]
            if rows:
                steps = [d["step"] for d in rows]
                ax1.plot(steps, [d["cosine"] for d in rows], marker="o", ms=2, label=f"{dataset}, {head_kind}")
                ax2.plot(steps, [d["dropped_energy"] for d in rows], marker="o", ms=2, label=f"{dataset}, {head_kind}")
        ax1.set(xlabel="plain FGN step", ylabel="cos(d_FGN, d_GGN)", title="along the FGN trajectory")
        ax2.set(xlabel="plain FGN step", ylabel="dropped-energy ratio of d_GGN", ylim=(0, 1.02))
        ax1.legend(fontsize=7)
        written.append(_save(plt, fig, out_dir, "head_fgn_diagnostics.png"))
    return written


def _same(a, b):
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b
