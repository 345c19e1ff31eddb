"""The ``fgn-arrays`` command line (also ``python -m fgn_arrays``).

Commands
--------
``fgn-arrays demo``
    Trains an FGN softmax head on the bundled WordNet-gloss features, with a
    stratified 80/20 split, and prints objective, accuracies and time; next to
    scikit-learn's ``LogisticRegression`` at the same regularisation when
    scikit-learn is installed (the ``demo`` extra, ``pip install '.[demo]'``,
    brings it).
``fgn-arrays fit DATA.npz --out MODEL.npz``
    Trains on the arrays ``X (N, D)`` and ``y (N,)`` of ``DATA.npz`` and saves
    the model. The head is linear unless ``--hidden H`` or ``--head
    two-layer`` is given (``--hidden H`` alone means a two-layer head, as
    ``FGNClassifier(hidden=H)``).
``fgn-arrays predict MODEL.npz DATA.npz [--out PRED.npz]``
    Predicts the rows of ``DATA.npz``'s ``X``; prints the accuracy when the file
    also has ``y``.
``fgn-arrays experiments {decomposition,mechanism,head} [--quick] --out DIR``
    The paper's experiments (:mod:`fgn_arrays.experiments`): CSV files, and
    PNG figures when matplotlib is installed (the ``plots`` extra).

Conventions
-----------
The objective is ``mean cross-entropy + (l2/2) ||weights||^2`` (biases free),
so ``l2 = 1 / (C N)`` matches scikit-learn's multinomial
``LogisticRegression(C=C)`` on ``N`` training rows. Training runs through
:func:`fgn_arrays.estimator.fit_head`, the scikit-learn-free core of
:class:`fgn_arrays.FGNClassifier`: the commands need scikit-learn only for
the demo's comparison row. The demo's train/test split is this module's own
(:func:`stratified_split`, seeded), so it is the same with and without
scikit-learn.
``fit`` and ``demo`` take ``--method`` (``minimize``'s ``method``) and print
one progress line per step, whose columns ``--help`` explains.

A model file is an ``.npz`` archive (read without pickle) of:
``format`` ("fgn-arrays-model"), ``version`` (1), ``head`` ("linear" or
"two-layer"), ``n_features``, ``n_hidden`` (0 for linear), ``n_classes``,
``activation``, ``dtype`` ("float32" or "float64"), ``classes`` (the label
values, in the order of the logits) and ``theta`` (the flat parameters in the
layout of :class:`fgn_arrays.LinearHead` or :class:`fgn_arrays.TwoLayerHead`).

Bad input (a missing or unreadable file, missing arrays, wrong shapes or
dtypes, non-finite values, a model/data feature mismatch) ends the command
with one line ``fgn-arrays: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
import zipfile

import numpy
import scipy.special

from . import __version__
from ._backend import to_device, to_numpy
from .estimator import fit_head, head_logits, make_head, resolve_device
from .optim import DEFAULT_METHOD, _check_solver

PROG = "fgn-arrays"
MODEL_FORMAT, MODEL_VERSION = "fgn-arrays-model", 1
HEAD_KINDS = ("linear", "two-layer")
ACTIVATIONS = ("tanh", "relu", "gelu")
EXIT_USAGE = 2  # bad arguments or bad input files, as argparse
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive, or an empty one
METHODS = ("fgn-compensated", "fgn", "ggn-pcg")  # fgn_arrays.methods.METHODS, default first
METHOD_HELP = (
    "the step (default %(default)s): fgn-compensated = FGN damped by a Kronecker stand-in for the "
    "dropped competitor covariance, on at most 2048 curvature rows per step, length-corrected in a "
    "plane; fgn = the paper's plain damped FGN step with Levenberg-Marquardt damping, all rows; "
    "ggn-pcg = the damped full Gauss-Newton step by CG preconditioned with the FGN system. "
    "See fgn_arrays.optim.minimize."
)
# The columns of fgn_arrays.optim's progress lines (minimize's `verbose`), for --help.
PROGRESS_HELP = """\
progress (one line per step, unless --quiet):
  iter        step number (full batch: accepted and rejected steps; mini-batch: one per batch)
  objective   the objective mean CE + (l2/2)||weights||^2 on the batch (all rows when full
              batch) after the step; unchanged when the step is rejected
  |grad|_inf  largest absolute entry of that objective's gradient before the step; full-batch
              training stops when it is <= tol (fit: --tol; demo: 1e-4, as LogisticRegression)
  damping     the Levenberg-Marquardt damping lambda the step was solved with
  rho         gain ratio: actual / predicted decrease of the unit step; 0 when no decrease is
              predicted (never nan). It sets the next step's lambda: for --method fgn, rho < 0.25
              doubles it and rho > 0.5 divides it by 10; for the other methods (Nielsen's rule)
              lambda *= max(1/10, 1 - (2 rho - 1)^3) when rho > 0, else lambda *= 2, 4, 8, ...
              over consecutive rejections
  cg          conjugate-gradient iterations of the step's solve (row space; parameter space
              for ggn-pcg; 0 for a Cholesky solve)
  step        accepted (the objective decreased) or rejected (theta unchanged)
  a, b        the step taken is a*delta + b*previous step: (1, 0) for a plain step,
              (0, 0) when rejected; other values for --method fgn-compensated's correction
  s           wall-clock seconds of the step
"""


class InputError(Exception):
    """A problem with the user's files or arrays: reported in one line, exit status 2."""


# ---- entry point ---------------------------------------------------------------


def main(argv=None) -> int:
    """Run ``fgn-arrays`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fast Gauss-Newton (FGN) softmax classifiers on NumPy/CuPy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train on the bundled WordNet-gloss features and compare with scikit-learn",
        description=(
            "Train a linear FGN head on the bundled WordNet-gloss features (stratified 80/20 "
            "split, seeded, the same with and without scikit-learn) and print objective, train "
            "and test accuracy and time, next to scikit-learn's "
            "LogisticRegression(solver='newton-cg') at the same regularisation when "
            "scikit-learn is installed (pip install '.[demo]')."
        ),
        epilog=PROGRESS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--min-per-class", type=int, default=50, metavar="K",
                      help="keep classes with at least K examples (default 50; at least 20)")
    demo.add_argument("--max-iter", type=int, default=30, metavar="T",
                      help="FGN steps at most (default 30)")
    demo.add_argument("--l2", type=float, default=None,
                      help="weight penalty of the mean loss (default 1/(10 N_train), "
                           "i.e. LogisticRegression C=10)")
    demo.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=METHOD_HELP)
    demo.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    demo.add_argument("--no-sklearn", action="store_true",
                      help="skip the scikit-learn LogisticRegression comparison (it runs when "
                           "scikit-learn is installed: pip install '.[demo]')")
    demo.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    demo.set_defaults(run=run_demo)

    fit = commands.add_parser(
        "fit",
        help="train on X and y of an .npz file and save the model",
        description="Train an FGN softmax head on the arrays X (N, D) and y (N,) of DATA.npz.",
        epilog=PROGRESS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", metavar="DATA.npz")
    fit.add_argument("--out", required=True, metavar="MODEL.npz", help="where to save the model")
    fit.add_argument("--head", choices=HEAD_KINDS, default=None,
                     help="linear or two-layer (default: two-layer when --hidden is given, "
                          "else linear)")
    fit.add_argument("--hidden", type=int, default=None, metavar="H",
                     help="hidden units of a two-layer head; alone it means --head two-layer, as "
                          "FGNClassifier(hidden=H) (default 64 with --head two-layer)")
    fit.add_argument("--activation", choices=ACTIVATIONS, default="tanh",
                     help="activation of the two-layer head (default tanh)")
    fit.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=METHOD_HELP)
    fit.add_argument("--l2", type=float, default=1e-4,
                     help="weight penalty of the mean loss (default 1e-4; 1/(C N) is "
                          "LogisticRegression's C)")
    fit.add_argument("--damping", type=float, default=1.0, help="initial damping (default 1)")
    fit.add_argument("--max-iter", type=int, default=100, metavar="T",
                     help="FGN steps at most, or epochs with --batch-size (default 100)")
    fit.add_argument("--tol", type=float, default=1e-4,
                     help="stop when the objective's gradient has ||grad||_inf <= TOL (full batch), "
                          "LogisticRegression(tol=TOL)'s criterion on the same objective "
                          "(default 1e-4)")
    fit.add_argument("--batch-size", type=int, default=None, metavar="B",
                     help="mini-batch size (default: full batch)")
    fit.add_argument("--solver", choices=("auto", "cg", "cholesky"), default="auto",
                     help="solver of the FGN row-space system (default auto): fgn takes all three, "
                          "fgn-compensated auto or cg, ggn-pcg auto only; it does not change the step")
    fit.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    fit.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    fit.add_argument("--seed", type=int, default=0,
                     help="seed of the initial parameters, the curvature rows and the mini-batch "
                          "order (default 0)")
    fit.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    fit.set_defaults(run=run_fit)

    predict = commands.add_parser(
        "predict",
        help="predict the rows of an .npz file with a saved model",
        description=(
            "Predict the rows of DATA.npz's X with MODEL.npz. Without --out the labels go to "
            "stdout, one per line; the accuracy (when DATA.npz has y) goes to stderr. With "
            "--out, y_pred, proba and classes are saved and the summary goes to stdout."
        ),
    )
    predict.add_argument("model", metavar="MODEL.npz")
    predict.add_argument("data", metavar="DATA.npz")
    predict.add_argument("--out", default=None, metavar="PRED.npz",
                         help="save y_pred (N,), proba (N, C) and classes (C,) here")
    predict.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    predict.set_defaults(run=run_predict)
    # imported here: the experiments' command line imports this module
    from .experiments import _cli as experiments_cli

    experiments_cli.add_parser(commands)
    return parser


# ---- commands --------------------------------------------------------------------


def run_fit(args) -> int:
    check_options(args, ("l2", "tol"), nonneg=True)
    check_options(args, ("damping",), positive=True)
    check_counts(args, ("max_iter", "batch_size", "hidden"))
    try:
        _check_solver(args.method, args.solver)
    except ValueError:
        raise InputError(
            f"--solver {args.solver} does not go with --method {args.method}: fgn takes auto, cg or "
            "cholesky; fgn-compensated auto or cg; ggn-pcg auto."
        ) from None
    # As FGNClassifier(hidden=H): --hidden alone means a two-layer head.
    if args.head is None:
        args.head = "linear" if args.hidden is None else "two-layer"
    if args.head == "linear" and args.hidden is not None:
        raise InputError(f"--hidden {args.hidden} gives a two-layer head; it does not go with --head linear.")
    hidden = (args.hidden or 64) if args.head == "two-layer" else None
    device = device_for(args.device)
    check_writable(args.out)

    X, y = read_data(args.data, need_y=True)
    classes, y_encoded = encode_labels(y, args.data)
    head_text = f"{args.head} head (D={X.shape[1]}, " + (f"H={hidden}, " if hidden else "") + f"C={len(classes)})"
    print(f"training a {head_text} on {X.shape[0]} rows by {args.method}, {device}, {args.dtype}")
    t0 = time.perf_counter()
    head, result = fit_head(
        X, y_encoded, len(classes), hidden=hidden, activation=args.activation, method=args.method, l2=args.l2,
        damping=args.damping, max_iter=args.max_iter, batch_size=args.batch_size, tol=args.tol,
        solver=args.solver, device=device, dtype=args.dtype, seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    seconds = time.perf_counter() - t0
    Z = head_logits(head, result.theta, X)
    accuracy = float(numpy.mean(numpy.argmax(Z, axis=1) == y_encoded))
    print(f"{result.status} after {result.n_iter} iterations in {seconds:.1f} s: "
          f"objective {result.objective:.6f}, train accuracy {accuracy:.4f}")

    model = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "head": args.head,
        "n_features": head.n_features, "n_hidden": hidden or 0, "n_classes": len(classes),
        "activation": args.activation, "dtype": args.dtype, "classes": classes,
        "theta": to_numpy(result.theta),
        # For the record (not read back): how it was trained.
        "l2": args.l2, "objective": result.objective, "n_iter": result.n_iter,
    }
    write_npz(args.out, model)
    print(f"saved the model to {args.out}")
    return 0


def run_predict(args) -> int:
    device = device_for(args.device)
    if args.out is not None:
        check_writable(args.out)
    model = read_model(args.model)
    X, y = read_data(args.data, need_y=False)
    head, classes = model["head"], model["classes"]
    if X.shape[1] != head.n_features:
        raise InputError(
            f"{args.data}: X has {X.shape[1]} features, but the model {args.model} was trained "
            f"on {head.n_features}."
        )
    theta = to_device(model["theta"], device)
    Z = head_logits(head, theta, X)
    y_pred = classes[numpy.argmax(Z, axis=1)]
    accuracy = None
    if y is not None:
        if (y.dtype.kind in "US") != (classes.dtype.kind in "US"):
            kind = "string" if y.dtype.kind in "US" else "numeric"
            raise InputError(
                f"{args.data}: y holds {kind} labels, but the classes of {args.model} are "
                f"{'string' if classes.dtype.kind in 'US' else 'numeric'} ({classes[:3].tolist()}...)."
            )
        accuracy = float(numpy.mean(y_pred == y))

    if args.out is None:
        try:
            sys.stdout.write("".join(f"{label}\n" for label in y_pred.tolist()))
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `| head`: stop quietly
            sys.stdout = None
            return 0
        if accuracy is not None:
            print(f"accuracy {accuracy:.4f} on {len(y)} rows", file=sys.stderr)
        return 0
    write_npz(args.out, {"y_pred": y_pred, "proba": scipy.special.softmax(Z, axis=1), "classes": classes})
    print(f"saved {len(y_pred)} predictions to {args.out}")
    if accuracy is not None:
        print(f"accuracy {accuracy:.4f} on {len(y)} rows")
    return 0


def run_demo(args) -> int:
    from .datasets import load_wordnet_glosses

    if args.min_per_class < 20:
        raise InputError(
            f"--min-per-class must be at least 20 (the bundled file's threshold); got {args.min_per_class}."
        )
    check_counts(args, ("max_iter",))
    if args.l2 is not None:
        check_options(args, ("l2",), nonneg=True)
    device = device_for(args.device)
    sklearn = None if args.no_sklearn else import_sklearn()

    data = load_wordnet_glosses(min_per_class=args.min_per_class)
    train, test = stratified_split(data.y, test_size=0.2, seed=0)
    X_train, y_train, X_test, y_test = data.X[train], data.y[train], data.X[test], data.y[test]
    N, D = X_train.shape
    C = data.n_classes
    l2 = 1.0 / (10.0 * N) if args.l2 is None else args.l2
    C_sk = 1.0 / (l2 * N) if l2 > 0 else math.inf
    print(f"WordNet glosses (min_per_class={args.min_per_class}): {N} train / {len(test)} test rows, "
          f"{D} features, {C} classes; l2 = {l2:.3g} (LogisticRegression C = {C_sk:.4g})")

    rows = []
    print(f"FGN: linear head, {args.method}, at most {args.max_iter} steps, {device}, float32")
    t0 = time.perf_counter()
    head, result = fit_head(
        X_train, y_train, C, method=args.method, l2=l2, max_iter=args.max_iter, device=device, dtype="float32",
        seed=0, verbose=0 if args.quiet else 1,
    )
    seconds = time.perf_counter() - t0
    W, b = (to_numpy(p).astype(numpy.float64) for p in head.unflatten(result.theta))
    rows.append((f"FGN ({result.n_iter} steps)", W, b, seconds))

    if sklearn is not None:
        print("LogisticRegression(solver='newton-cg', tol=1e-4) ...", flush=True)
        clf = sklearn.LogisticRegression(solver="newton-cg", tol=1e-4, C=C_sk)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sklearn.ConvergenceWarning)
            clf.fit(X_train, y_train)
        seconds = time.perf_counter() - t0
        n_iter = int(numpy.max(clf.n_iter_))
        rows.append((f"LogisticRegression ({n_iter} iter)", clf.coef_, clf.intercept_, seconds))

    print()
    print(f"{'method':<28} {'objective (train)':>17} {'train acc':>9} {'test acc':>8} {'seconds':>8}")
    for name, W, b, seconds in rows:
        # The same formula for every row: mean CE (float64) + (l2/2) ||W||^2.
        Z_train = X_train.astype(numpy.float64) @ W.T + b
        Z_test = X_test.astype(numpy.float64) @ W.T + b
        objective = mean_cross_entropy(Z_train, y_train) + 0.5 * l2 * float(numpy.sum(W * W))
        train_acc = numpy.mean(numpy.argmax(Z_train, axis=1) == y_train)
        test_acc = numpy.mean(numpy.argmax(Z_test, axis=1) == y_test)
        print(f"{name:<28} {objective:>17.6f} {train_acc:>9.4f} {test_acc:>8.4f} {seconds:>8.2f}")
    if sklearn is None and not args.no_sklearn:
        print("(scikit-learn is not installed: pip install '.[demo]' adds the LogisticRegression row)")
    return 0


# ---- helpers ---------------------------------------------------------------------


def mean_cross_entropy(Z, y):
    """``mean_i (logsumexp(Z_i) - Z_{i, y_i})`` of float64 logits ``Z (N, C)``."""
    return float(numpy.mean(scipy.special.logsumexp(Z, axis=1) - Z[numpy.arange(len(y)), y]))


def import_sklearn():
    """The pieces of scikit-learn the demo uses, or None when it is not installed."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    return argparse.Namespace(ConvergenceWarning=ConvergenceWarning, LogisticRegression=LogisticRegression)


def stratified_split(y, test_size=0.2, seed=0):
    """Row indices ``(train, test)``, each sorted, each class split in proportion.

    In each class (in the order of ``numpy.unique(y)``), ``round(test_size *
    n_c)`` rows drawn by ``numpy.random.default_rng(seed)`` go to the test
    set, the rest to the training set. NumPy only, so the split is the same
    whether or not scikit-learn is installed.
    """
    rows = numpy.arange(len(y))
    rng = numpy.random.default_rng(seed)
    test = []
    for label in numpy.unique(y):
        members = rng.permutation(rows[y == label])
        test.append(members[: round(test_size * len(members))])
    test = numpy.sort(numpy.concatenate(test))
    return numpy.setdiff1d(rows, test), test


def device_for(device):
    try:
        return resolve_device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device}: {exc}") from None


def check_options(args, names, nonneg=False, positive=False):
    for name in names:
        value = getattr(args, name)
        if not math.isfinite(value) or (nonneg and value < 0) or (positive and value <= 0):
            bound = "> 0" if positive else ">= 0"
            raise InputError(f"--{name.replace('_', '-')} must be finite and {bound}; got {value}.")


def check_counts(args, names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1; got {value}.")


def open_npz(path, what):
    """``numpy.load`` of an .npz archive, without pickle; one-line errors for bad files."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not an .npz {what} file.")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or first_line(exc)}).") from None
    if magic == NPY_MAGIC:
        raise InputError(f"{path}: a single .npy array, not an .npz {what} file with named arrays.")
    if not magic.startswith(ZIP_MAGIC):
        raise InputError(f"{path}: not a NumPy .npz {what} file (made by numpy.savez).")
    try:
        return numpy.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz {what} file ({first_line(exc)}).") from None


def read_arrays(path, npz, names, what):
    """The arrays ``names`` of ``npz`` (all must be there)."""
    missing = [name for name in names if name not in npz.files]
    if missing:
        found = ", ".join(npz.files) or "none"
        raise InputError(f"{path}: no array {' or '.join(map(repr, missing))} in this {what} file (found: {found}).")
    out = {}
    for name in names:
        try:
            out[name] = npz[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: cannot read array {name!r} ({first_line(exc)}).") from None
    return out


def read_data(path, need_y):
    """``X (N, D)`` and ``y (N,)`` (or None when absent and not needed) of a data file, checked."""
    with open_npz(path, "data") as npz:
        names = ["X", "y"] if need_y or "y" in npz.files else ["X"]
        arrays = read_arrays(path, npz, names, "data")
    X, y = arrays["X"], arrays.get("y")
    if X.dtype.kind not in "iuf":
        raise InputError(f"{path}: X must hold real numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise InputError(f"{path}: X must be 2-D (n_samples, n_features); got shape {X.shape}.")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise InputError(f"{path}: X must have at least one row and one column; got shape {X.shape}.")
    n_bad = int(numpy.count_nonzero(~numpy.isfinite(X)))
    if n_bad:
        raise InputError(f"{path}: X must be finite; got {n_bad} NaN or infinite entries.")
    if y is not None:
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise InputError(f"{path}: y must have shape ({X.shape[0]},) to match X; got {y.shape}.")
        if y.dtype.kind not in "iubUSf":
            raise InputError(f"{path}: y must hold class labels (integers or strings); got dtype {y.dtype}.")
        if y.dtype.kind == "f" and not (numpy.isfinite(y).all() and numpy.all(y == numpy.round(y))):
            raise InputError(f"{path}: y must hold class labels (integers or strings); got non-integer floats.")
    return X, y


def encode_labels(y, path):
    """``classes`` (sorted unique labels) and ``y`` as int64 indices into them; at least 2 classes."""
    classes, y_encoded = numpy.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{path}: y must hold at least 2 classes; got 1 class ({classes[:1].tolist()[0]!r}).")
    return classes, y_encoded.astype(numpy.int64).reshape(-1)


def read_model(path):
    """A saved model: ``dict(head=..., classes=..., theta=...)``, checked against its own sizes."""
    with open_npz(path, "model") as npz:
        keys = ("format", "version", "head", "n_features", "n_hidden", "n_classes", "activation",
                "dtype", "classes", "theta")
        if "format" not in npz.files or "theta" not in npz.files:
            raise InputError(f"{path}: not an {PROG} model file (no 'format' and 'theta' arrays).")
        arrays = read_arrays(path, npz, keys, "model")
    fmt, version = str(arrays["format"]), int(arrays["version"])
    if fmt != MODEL_FORMAT or version != MODEL_VERSION:
        raise InputError(f"{path}: unknown model format {fmt!r} version {version}.")
    kind, activation, dtype = str(arrays["head"]), str(arrays["activation"]), str(arrays["dtype"])
    D, H, C = (int(arrays[k]) for k in ("n_features", "n_hidden", "n_classes"))
    if kind not in HEAD_KINDS or activation not in ACTIVATIONS or dtype not in ("float32", "float64"):
        raise InputError(f"{path}: bad model fields head={kind!r}, activation={activation!r}, dtype={dtype!r}.")
    try:
        head = make_head(D, C, H if kind == "two-layer" else None, activation)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: bad model sizes ({exc})") from None
    theta, classes = arrays["theta"], arrays["classes"]
    if theta.ndim != 1 or theta.shape[0] != head.n_params or theta.dtype != numpy.dtype(dtype):
        raise InputError(
            f"{path}: theta must be {dtype} of shape ({head.n_params},) for a {kind} head "
            f"(D={D}, H={H}, C={C}); got {theta.dtype} {theta.shape}."
        )
    if not numpy.isfinite(theta).all():
        raise InputError(f"{path}: theta has NaN or infinite entries.")
    if classes.shape != (C,):
        raise InputError(f"{path}: classes must have shape ({C},); got {classes.shape}.")
    return {"head": head, "classes": classes, "theta": theta}


def check_writable(path):
    """Fail before a long run, not after it, when ``path``'s folder does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: cannot write (no folder {folder}).")
    if os.path.isdir(path):
        raise InputError(f"{path}: cannot write (is a directory).")


def write_npz(path, arrays):
    """Save ``arrays`` to exactly ``path`` (no ``.npz`` appended)."""
    try:
        with open(path, "wb") as f:
            numpy.savez(f, **arrays)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or first_line(exc)}).") from None


def first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
