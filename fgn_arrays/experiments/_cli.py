"""``fgn-arrays experiments {decomposition,mechanism,head} [--quick] --out DIR``.

Writes the experiment's CSV files into ``DIR`` (created when missing), and
its PNG figures when matplotlib is installed (the ``plots`` extra). Bad
input (an unknown experiment, an ``--out`` that cannot be written, bad grid
values) ends the command with one line ``fgn-arrays: error: ...`` on stderr
and exit status 2, as the other commands (:mod:`fgn_arrays.cli`).

:func:`add_parser` adds the subcommand to the ``fgn-arrays`` parser;
:func:`main` runs it on its own (``main(["mechanism", "--quick", "--out", d])``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time

from ..cli import EXIT_USAGE, PROG, InputError
from . import _plots, decomposition, head, mechanism
from ._common import write_csv

EXPERIMENTS = ("decomposition", "mechanism", "head")

DESCRIPTION = """\
Reproduce the paper's experiments (docs: "Reproducing the paper").
  decomposition  G_GGN = G_FGN + G_dropped, densely in float64, for C in 2, 3, 10, 100, 1000
                 and both heads: residual, smallest eigenvalues, G_dropped = 0 for C = 2.
  mechanism      FGN step against the full GGN step over competitor concentration x damping,
                 several seeds; the step-gap bound of docs/derivation.md on every cell.
  head           training on the WordNet features (601 and 133 classes, linear and two-layer
                 heads) by every method, each stopped at a wall-time budget.
--quick runs a reduced grid (all three together under a minute on one core)."""


def add_parser(subparsers):
    """Add the ``experiments`` subcommand to ``subparsers`` (of :func:`fgn_arrays.cli.build_parser`)."""
    parser = subparsers.add_parser(
        "experiments",
        help="reproduce the paper's experiments: CSV files (and PNG figures with matplotlib)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # A plain string, checked in `run`, so that a bad name is a one-line error like any other.
    parser.add_argument("experiment", metavar="{decomposition,mechanism,head}", help="the experiment to run")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the CSV and PNG files")
    parser.add_argument("--quick", action="store_true", help="the reduced grid that CI runs")
    parser.add_argument("--seeds", default=None, metavar="K",
                        help="number of seeds, 0..K-1 (default: decomposition 1, mechanism 5, quick 3)")
    parser.add_argument("--classes", default=None, metavar="C1,C2,...",
                        help="decomposition: numbers of classes, each >= 2 (default 2,3,10,100,1000)")
    parser.add_argument("--concentrations", default=None, metavar="K1,K2,...",
                        help="mechanism: competitor sharpness kappa values, each >= 0 "
                             "(default 0,1,2,4,8,16)")
    parser.add_argument("--dampings", default=None, metavar="L1,L2,...",
                        help="mechanism: damping relative to ||G_GGN||_2, each > 0 "
                             "(default 13 values, 1e-4 to 1e2)")
    parser.add_argument("--budget", default=None, metavar="SECONDS",
                        help="head: wall-time budget of each method and learning rate, > 0 (default 12)")
    parser.add_argument("--no-plots", action="store_true", help="CSV files only")
    parser.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    """Run the ``experiments`` command alone, with :mod:`fgn_arrays.cli`'s error handling."""
    parser = argparse.ArgumentParser(prog=f"{PROG}")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["experiments", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ---- argument checks -------------------------------------------------------------------


def _numbers(text, option, kind, check, must):
    """A comma-separated list of ``kind`` from ``--option``, each passing ``check``; InputError otherwise."""
    values = []
    for item in text.split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            value = None
        if value is None or (kind is float and not math.isfinite(value)) or not check(value):
            raise InputError(f"--{option} must be a comma-separated list of {must}; got {text!r}.")
        values.append(value)
    if len(set(values)) != len(values):
        raise InputError(f"--{option} has repeated values; got {text!r}.")
    return tuple(values)


def _count(text, option):
    return _numbers(text, option, int, lambda v: v >= 1, "one integer >= 1")[0] if text is not None else None


def _check_grid_options(args):
    """The options that apply to ``args.experiment``, parsed; the others must be absent."""
    applies = {"classes": "decomposition", "concentrations": "mechanism", "dampings": "mechanism",
               "budget": "head"}
    for option, experiment in applies.items():
        if getattr(args, option) is not None and args.experiment != experiment:
            raise InputError(f"--{option} applies to the {experiment} experiment only, not {args.experiment}.")
    if args.seeds is not None and args.experiment == "head":
        raise InputError("--seeds applies to decomposition and mechanism, not head.")
    if args.seeds is not None and "," in args.seeds:
        raise InputError(f"--seeds must be one integer >= 1; got {args.seeds!r}.")
    grid = {"seeds": _count(args.seeds, "seeds")}
    if args.classes is not None:
        grid["classes"] = _numbers(args.classes, "classes", int, lambda v: v >= 2, "integers >= 2")
    if args.concentrations is not None:
        grid["concentrations"] = _numbers(args.concentrations, "concentrations", float, lambda v: v >= 0,
                                          "finite numbers >= 0")
    if args.dampings is not None:
        grid["dampings"] = _numbers(args.dampings, "dampings", float, lambda v: v > 0, "finite numbers > 0")
    if args.budget is not None:
        grid["budget"] = _numbers(args.budget, "budget", float, lambda v: v > 0, "one number > 0")[0]
        if "," in args.budget:
            raise InputError(f"--budget must be one number > 0; got {args.budget!r}.")
    return grid


def _check_out(out):
    """Create ``out`` if needed and make sure a file can be written there, before a long run."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out}: cannot write (not a folder).")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write ({exc.strerror or type(exc).__name__}).") from None


# ---- the command -----------------------------------------------------------------------


def run(args) -> int:
    """Run ``args.experiment`` into ``args.out``; returns the exit status."""
    if args.experiment not in EXPERIMENTS:
        raise InputError(f"unknown experiment {args.experiment!r}; choose one of {', '.join(EXPERIMENTS)}.")
    grid = _check_grid_options(args)
    _check_out(args.out)
    plots = not args.no_plots and _plots.available()
    t0 = time.perf_counter()
    written = {"decomposition": _run_decomposition, "mechanism": _run_mechanism, "head": _run_head}[
        args.experiment](args, grid, plots)
    if not args.no_plots and not plots:
        print("(matplotlib is not installed: CSV files only; pip install 'fgn_arrays[plots]' for the figures)")
    print(f"{args.experiment}: {time.perf_counter() - t0:.1f} s; wrote {', '.join(written)} in {args.out}")
    return 0


def _write(args, name, records):
    try:
        write_csv(os.path.join(args.out, name), records)
    except OSError as exc:
        raise InputError(f"--out {args.out}: cannot write {name} ({exc.strerror or type(exc).__name__}).") from None
    return name


def _run_decomposition(args, grid, plots):
    classes = grid.get("classes") or (decomposition.QUICK_CLASSES if args.quick else decomposition.CLASSES)
    seeds = tuple(range(grid["seeds"] or 1))

    def progress(r):
        print(f"{r['head']:>9} C={r['n_classes']:<5} P={r['n_params']:<5} seed {r['seed']}: "
              f"residual {r['residual']:.1e}, min eig dropped {r['min_eig_dropped']:+.1e}, "
              f"min eig GGN-FGN {r['min_eig_difference']:+.1e}, max|G_dropped| {r['max_abs_dropped']:.1e}, "
              f"||G_dropped||/||G_GGN|| {r['dropped_norm_ratio']:.3f} ({r['seconds']:.1f} s)", flush=True)

    records = decomposition.run(classes=classes, seeds=seeds, progress=progress)
    written = [_write(args, "decomposition.csv", records)]
    if plots:
        written += _plots.decomposition(records, args.out)
    return written


def _run_mechanism(args, grid, plots):
    options = dict(mechanism.QUICK) if args.quick else {}
    for key in ("concentrations", "dampings"):
        if key in grid:
            options[key] = grid[key]
    if grid["seeds"]:
        options["seeds"] = tuple(range(grid["seeds"]))

    def progress(cells):
        r = cells[0]
        print(f"C={r['n_classes']:<3} kappa={r['concentration']:<5g} seed {r['seed']}: q entropy "
              f"{r['q_entropy']:.3f}, rel_error {min(c['rel_error'] for c in cells):.2e}..."
              f"{max(c['rel_error'] for c in cells):.2e}, bound holds: {all(c['bound_holds'] for c in cells)}",
              flush=True)

    records = mechanism.run(progress=progress, **options)
    written = [_write(args, "mechanism.csv", records)]
    if plots:
        written += _plots.mechanism(records, args.out)
    return written


def _run_head(args, grid, plots):
    configs = head.QUICK_CONFIGS if args.quick else head.CONFIGS
    if "budget" in grid:
        configs = tuple(dataclasses.replace(config, budget=grid["budget"]) for config in configs)
    summary, trajectories, diagnostics = head.run(configs, progress=lambda line: print(line, flush=True))
    written = [_write(args, "head_summary.csv", summary), _write(args, "head_trajectories.csv", trajectories),
               _write(args, "head_fgn_diagnostics.csv", diagnostics)]
    if plots:
        written += _plots.head(summary, trajectories, diagnostics, args.out)
    return written


if __name__ == "__main__":  # python -m fgn_arrays.experiments._cli, before the command is wired in
    sys.exit(main())
