"""fgn_arrays.experiments: the quick runs of the three experiments, their CSV files, the paper's predictions.

The quick runs go through the command (``fgn_arrays.experiments._cli.main``)
once per module; the claims are checked on the numbers they write. Dense
float64 references (``reference.py``) check that the experiments' matrices
and step gap are what the math says, independently of the library.
"""

import contextlib
import math
import os

import numpy as np
import pytest
import reference as ref

from fgn_arrays.experiments import _cli, decomposition, mechanism, read_csv
from fgn_arrays.experiments._common import dense_curvatures

try:  # one BLAS thread: the dense eigensolvers are faster so on a shared 2-core machine
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - scikit-learn (test extra) brings threadpoolctl
    threadpool_limits = None

MECHANISM_COLUMNS = {"concentration", "seed", "damping", "cosine", "rel_error", "model_decrease_ratio",
                     "dropped_energy", "q_entropy", "bound", "bound_energy", "bound_apriori", "bound_holds",
                     "n_classes", "library_step_error", "decomposition_residual"}
DECOMPOSITION_COLUMNS = {"head", "n_classes", "n_params", "seed", "residual", "min_eig_dropped",
                         "min_eig_difference", "max_abs_dropped", "dropped_norm_ratio", "dropped_trace_ratio"}
HEAD_COLUMNS = {"dataset", "head", "method", "lr", "objective", "test_accuracy", "seconds", "passes", "best"}
# Rounding allowance of "eigenvalue >= 0", relative to ||G_GGN|| (the issue's).
EIG_TOL = 1e-12


def one_thread():
    return threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Each experiment's quick run through the command, CSV files only: ``{name: folder}``."""
    folders = {}
    with one_thread():
        for name in ("decomposition", "mechanism", "head"):
            out = tmp_path_factory.mktemp(name)
            assert _cli.main([name, "--quick", "--no-plots", "--out", str(out)]) == 0
            folders[name] = out
    return folders


def mean_over_seeds(records, column, n_classes):
    cells = {}
    for r in records:
        if r["n_classes"] == n_classes:
            cells.setdefault((r["concentration"], r["damping"]), []).append(r[column])
    return {key: float(np.mean(v)) for key, v in cells.items()}


# ---- decomposition --------------------------------------------------------------------------


def test_decomposition_csv(quick):
    records = read_csv(quick["decomposition"] / "decomposition.csv")
    assert DECOMPOSITION_COLUMNS <= set(records[0])
    assert sorted({(r["head"], r["n_classes"]) for r in records}) == sorted(
        (h, c) for h in ("linear", "two-layer") for c in decomposition.QUICK_CLASSES)


def test_decomposition_is_exact_and_psd(quick):
    for r in read_csv(quick["decomposition"] / "decomposition.csv"):
        # ||G_GGN - G_FGN - G_dropped||_F / ||G_GGN||_F: float64 rounding of P-sized sums only
        assert r["residual"] < 1e-14, r
        assert r["min_eig_dropped"] >= -EIG_TOL, r
        assert r["min_eig_difference"] >= -EIG_TOL, r
        if r["n_classes"] == 2:
            assert r["max_abs_dropped"] == 0.0 and r["dropped_norm_ratio"] == 0.0, r
        else:
            # the dropped term is a real share of the curvature, not a rounding-sized one
            assert 0.1 < r["dropped_norm_ratio"] <= 1.0 and 0.1 < r["dropped_trace_ratio"] < 1.0, r


@pytest.mark.parametrize("head", ["linear", "two-layer"])
def test_dense_curvatures_match_reference(head):
    # The matrices the experiments measure against the dense float64 formulas of DESIGN §1.
    model, theta, X, y = decomposition.problem(head, 5, seed=3, n_samples=12)
    lin = model.linearize(theta, X, y)
    G_fgn, G_ggn, G_dropped = dense_curvatures(lin)
    Z = model.logits(theta, X)
    if head == "linear":
        Jz = ref.linear_logit_jacobian_ref(theta, X, 5)
    else:
        Jz = ref.two_layer_logit_jacobian_ref(theta, X, model.n_hidden, 5, "tanh")
    J = ref.margin_jacobian_ref(Jz, Z, y)
    ref.assert_close(G_ggn, ref.ggn_ref(Jz, Z), rtol=1e-12)
    ref.assert_close(G_fgn, ref.fgn_ref(J, Z, y), rtol=1e-12)
    ref.assert_close(G_dropped, ref.dropped_direct_ref(Jz, Z, y), rtol=1e-12)


# ---- mechanism ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mech(quick):
    return read_csv(quick["mechanism"] / "mechanism.csv")


def test_mechanism_csv(mech):
    assert MECHANISM_COLUMNS <= set(mech[0])
    grid = mechanism.QUICK
    C = grid["sizes"][2]
    expected = {(C, k, s, d) for k in grid["concentrations"] for s in grid["seeds"] for d in grid["dampings"]}
    expected |= {(2, 0.0, s, d) for s in grid["seeds"] for d in grid["dampings"]}
    got = [(r["n_classes"], r["concentration"], r["seed"], r["damping"]) for r in mech]
    assert len(got) == len(set(got)) and set(got) == expected


def test_mechanism_error_decreases_with_damping(mech):
    # The prediction: FGN is closest to the GGN when the damping is large. On the mean over
    # seeds, from damping 1e-2 ||G_GGN|| up (below, both steps tend to their finite lambda -> 0
    # limits and the gap need not be monotone; docs/reproducing.md).
    C = mechanism.QUICK["sizes"][2]
    err = mean_over_seeds(mech, "rel_error", C)
    dampings = sorted(d for d in mechanism.QUICK["dampings"] if d >= 1e-2)
    assert len(dampings) >= 3
    for kappa in mechanism.QUICK["concentrations"]:
        values = [err[(kappa, d)] for d in dampings]
        assert all(a > b for a, b in zip(values, values[1:])), (kappa, values)
        assert values[-1] < 1e-2, (kappa, values)  # damping 1e2: nearly the same step


def test_mechanism_error_decreases_with_concentration(mech):
    C = mechanism.QUICK["sizes"][2]
    err = mean_over_seeds(mech, "rel_error", C)
    entropy = mean_over_seeds(mech, "q_entropy", C)
    kappas = sorted(mechanism.QUICK["concentrations"])
    d0 = mechanism.QUICK["dampings"][0]
    # the knob does what it says on the measured axis: q's entropy falls as kappa grows
    H = [entropy[(k, d0)] for k in kappas]
    assert all(a > b for a, b in zip(H, H[1:])) and H[0] > 0.9 * math.log(C - 1) and H[-1] < 0.3, H
    for d in mechanism.QUICK["dampings"]:
        values = [err[(k, d)] for k in kappas]
        assert values[-1] < 0.6 * values[0], (d, values)  # most concentrated against least, every damping
        if d >= 1e-2:
            assert all(a > b for a, b in zip(values, values[1:])), (d, values)


def test_mechanism_binary_is_exact(mech):
    rows = [r for r in mech if r["n_classes"] == 2]
    assert len(rows) == len(mechanism.QUICK["seeds"]) * len(mechanism.QUICK["dampings"])
    for r in rows:
        assert r["rel_error"] == 0.0 and r["dropped_energy"] == 0.0 and r["bound"] == 0.0, r
        assert r["model_decrease_ratio"] == 1.0 and abs(r["cosine"] - 1.0) <= 1e-15, r


def test_mechanism_bound_holds_on_every_cell(mech):
    for r in mech:
        # docs/derivation.md, "How far the FGN step is from the GGN step"
        assert r["rel_error"] <= r["bound"] * (1 + 1e-8) + 1e-13, r
        assert r["bound"] <= r["bound_energy"] * (1 + 1e-9) + 1e-15, r
        assert r["bound"] <= r["bound_apriori"] * (1 + 1e-9) + 1e-15, r
        assert r["bound_holds"] is True
        assert r["model_decrease_ratio"] <= 1.0 + 1e-12 and -1.0 - 1e-12 <= r["cosine"] <= 1.0 + 1e-12
        assert 0.0 <= r["dropped_energy"] <= 1.0
        # the dense steps are the library's: fgn_step (row-space Cholesky) and ggn_matvec
        assert r["library_step_error"] < 1e-8 and r["decomposition_residual"] < 1e-13, r
    # the bound is not vacuous: at large damping it is within a factor 10 of the gap
    big = [r for r in mech if r["n_classes"] > 2 and r["damping"] >= 1.0]
    assert all(r["rel_error"] >= 0.1 * r["bound"] for r in big)


def test_step_gap_identity_against_dense_reference():
    # delta_FGN - delta_GGN = (F + lam I)^-1 G_dropped delta_GGN, and the model ratio
    # m(d_FGN) / m(d_GGN) = 1 - ||d_FGN - d_GGN||_B^2 / ||d_GGN||_B^2, from reference matrices.
    head, theta, X, y = mechanism.problem(40, 8, 4, 2.0, seed=1)
    Z = head.logits(theta, X)
    Jz = ref.linear_logit_jacobian_ref(theta, X, 4)
    G_ggn = ref.ggn_ref(Jz, Z)
    G_fgn = ref.fgn_ref(ref.margin_jacobian_ref(Jz, Z, y), Z, y)
    D = ref.dropped_direct_ref(Jz, Z, y)
    lin = head.linearize(theta, X, y)
    g = np.asarray(lin.grad)
    lam = 0.1 * np.linalg.eigvalsh(G_ggn)[-1]
    A, B = G_fgn + lam * np.eye(len(g)), G_ggn + lam * np.eye(len(g))
    d_fgn, d_ggn = np.linalg.solve(A, -g), np.linalg.solve(B, -g)
    ref.assert_close(d_fgn - d_ggn, np.linalg.solve(A, D @ d_ggn), rtol=1e-9)
    gap = np.linalg.norm(d_fgn - d_ggn) / np.linalg.norm(d_ggn)
    assert 1e-3 < gap <= np.linalg.norm(D @ d_ggn) / (lam * np.linalg.norm(d_ggn))

    def model(d):
        return -(g @ d + 0.5 * d @ B @ d)

    e = d_fgn - d_ggn
    assert model(d_fgn) / model(d_ggn) == pytest.approx(1 - (e @ B @ e) / (d_ggn @ B @ d_ggn), rel=1e-9)
    # and the experiment reports the same gap for this cell
    _, cells = mechanism.measure_problem(head, theta, X, y, [0.1], check_library=False)
    assert cells[0]["rel_error"] == pytest.approx(gap, rel=1e-8)


# ---- head -----------------------------------------------------------------------------------


def test_head_quick(quick):
    summary = read_csv(quick["head"] / "head_summary.csv")
    trajectories = read_csv(quick["head"] / "head_trajectories.csv")
    diagnostics = read_csv(quick["head"] / "head_fgn_diagnostics.csv")
    assert HEAD_COLUMNS <= set(summary[0])
    assert {"method", "seconds", "passes", "objective"} <= set(trajectories[0])
    assert {"step", "damping", "cosine", "dropped_energy"} <= set(diagnostics[0])
    expected = {"fgn", "default", "ggn-cg", "lbfgs", "adam", "sgd-momentum"}
    for head_kind in ("linear", "two-layer"):
        rows = [r for r in summary if r["head"] == head_kind]
        methods = {r["method"] for r in rows}
        assert methods == (expected | {"sklearn-lbfgs", "sklearn-newton-cg"} if head_kind == "linear" else expected)
        C = rows[0]["n_classes"]
        for r in rows:
            # every method leaves the start (objective about log C at init_params) and beats chance
            assert math.isfinite(r["objective"]) and r["objective"] < math.log(C), r
            assert r["test_accuracy"] > 2.0 / C, r
        assert sum(r["best"] for r in rows) == len(methods)
        diag = [d for d in diagnostics if d["head"] == head_kind]
        assert diag, head_kind
        for d in diag:
            assert -1.0 <= d["cosine"] <= 1.0 + 1e-12 and 0.0 <= d["dropped_energy"] <= 1.0, d
        # the first FGN step (damping 1, the largest) is close to the GGN step
        assert diag[0]["cosine"] > 0.9, diag[0]
    for method in expected:
        points = [t for t in trajectories if t["method"] == method and t["head"] == "linear"]
        assert points[-1]["objective"] < points[0]["objective"], method


# ---- the command ----------------------------------------------------------------------------


def check_one_line_error(code, err, expected):
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fgn-arrays: error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["heads"], "unknown experiment 'heads'"),
        (["mechanism", "--dampings", "0,1"], "--dampings must be a comma-separated list of finite numbers > 0"),
        (["mechanism", "--dampings", "1e-2,nan"], "--dampings must be"),
        (["mechanism", "--concentrations=-1,2"], "--concentrations must be"),
        (["mechanism", "--concentrations", "1,1"], "--concentrations has repeated values"),
        (["decomposition", "--classes", "1,3"], "--classes must be a comma-separated list of integers >= 2"),
        (["decomposition", "--classes", "2.5"], "--classes must be"),
        (["mechanism", "--seeds", "0"], "--seeds must be"),
        (["head", "--budget", "-3"], "--budget must be"),
        (["mechanism", "--budget", "3"], "--budget applies to the head experiment only"),
        (["head", "--seeds", "2"], "--seeds applies to decomposition and mechanism"),
    ],
)
def test_bad_input(tmp_path, capsys, argv, expected):
    code = _cli.main([*argv, "--out", str(tmp_path / "out")])
    check_one_line_error(code, capsys.readouterr().err, expected)
    assert not (tmp_path / "out").exists()  # checked before anything is run or written


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = _cli.main(["decomposition", "--quick", "--out", str(blocker)])
    check_one_line_error(code, capsys.readouterr().err, "cannot write (not a folder)")
    code = _cli.main(["decomposition", "--quick", "--out", str(blocker / "sub")])
    check_one_line_error(code, capsys.readouterr().err, "--out " + str(blocker / "sub") + ": cannot write")


def test_figures(tmp_path):
    pytest.importorskip("matplotlib")
    with one_thread():
        assert _cli.main(["mechanism", "--quick", "--out", str(tmp_path), "--seeds", "1"]) == 0
    names = {"mechanism.csv", "mechanism_heatmaps.png", "mechanism_damping.png", "mechanism_concentration.png"}
    assert names <= set(os.listdir(tmp_path))
    for name in names - {"mechanism.csv"}:
        assert 10_000 < (tmp_path / name).stat().st_size <= 200_000, name
