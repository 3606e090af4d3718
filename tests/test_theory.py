"""Measured loss against a closed-form theory, the N <-> T symmetry, and their figure: the pure
statistics on designed frames, the declared comparisons' flags and notes, and one tiny
random-features experiment run end to end (closed-form runs take well under a second each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import FitError, PlotError
from scaling_db.fit.theory import median_interval, nt_symmetry, theory_agreement
from scaling_db.plot import theory_curves
from scaling_db.report.comparisons import Source, agreement_outcome, run_analysis, symmetry_outcome
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.schema import AnalysisSpec, SymmetryDecl, TheoryAgreementDecl
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query
from scaling_db.training.execute import execute_run
from scaling_db.training.records import RunState
from scaling_db.workspace import Workspace


def agreement_frame(ratios: list[float]) -> pd.DataFrame:
    """One run per ratio with theory 1e-3, plus a peak run and a nonlinear run without theory."""
    rows = [{"run_id": f"r{i}", "name": f"run{i}", "loss": 1e-3 * r, "theory_loss": 1e-3, "theory_missing": None}
            for i, r in enumerate(ratios)]
    rows += [{"run_id": "p", "name": "peak-N50-T50", "loss": 0.05, "theory_loss": np.nan,
              "theory_missing": "interpolation peak (|N - T| <= 1)"},
             {"run_id": "q", "name": "relu-N50-T100", "loss": 0.01, "theory_loss": np.nan,
              "theory_missing": "nonlinear features"}]
    return pd.DataFrame(rows)


def source(data: pd.DataFrame) -> Source:
    ids = tuple(sorted({str(r) for r in data["run_id"]})) if "run_id" in data else ()
    return Source("rf", (), "theory_loss", "SELECT 1", data, run_ids=ids)


# -- theory_agreement ------------------------------------------------------------------------


def test_theory_agreement_median_interval_worst_and_named_missing_runs() -> None:
    fit = theory_agreement(agreement_frame([0.9, 1.0, 1.02, 1.04, 1.3]), n_boot=500)
    assert fit.median == pytest.approx(1.02)
    assert fit.interval[0] <= 1.02 <= fit.interval[1] and 0.9 <= fit.interval[0] and fit.interval[1] <= 1.3
    assert fit.worst["label"] == "run4" and fit.worst["ratio"] == pytest.approx(1.3)
    assert len(fit.compared) == 5
    assert dict(zip(fit.missing["label"], fit.missing["why"])) == {
        "peak-N50-T50": "interpolation peak (|N - T| <= 1)", "relu-N50-T100": "nonlinear features"}


def test_theory_agreement_reasons_without_a_why_column_and_with_no_theory_at_all() -> None:
    data = agreement_frame([1.0, 1.1]).drop(columns="theory_missing")
    data.loc[1, "theory_loss"] = 0.0
    fit = theory_agreement(data, n_boot=0)
    assert set(fit.missing["why"]) == {"no theory_loss", "theory_loss is not positive"}
    assert np.isnan(fit.interval).all()  # one run left, no bootstrap: no interval
    with pytest.raises(FitError, match="no run has a finite, positive theory_loss"):
        theory_agreement(data.assign(theory_loss=np.nan))
    with pytest.raises(FitError, match=r"column\(s\) not in the data \(theory_loss vs"):
        theory_agreement(data.drop(columns="theory_loss"))


def test_median_interval_is_a_percentile_bootstrap() -> None:
    values = np.arange(1.0, 102.0)  # median 51, standard error about 1.25 * 29 / 10 = 3.6: +-7 at 95%
    lo, hi = median_interval(values, n_boot=2000, seed=0, level=0.95)
    assert 39 < lo < 51 < hi < 63 and 10 < hi - lo < 22
    assert median_interval(values, n_boot=2000, seed=0, level=0.95) == (lo, hi)  # seeded


@pytest.mark.parametrize("ratios, flagged", [([0.98, 1.0, 1.03, 1.01], False), ([1.2, 1.25, 1.3, 1.22], True)])
def test_agreement_outcome_flags_a_median_outside_the_tolerance(ratios: list[float], flagged: bool) -> None:
    decl = TheoryAgreementDecl(kind="theory_agreement")
    out = agreement_outcome(decl, source(agreement_frame(ratios)), n_boot=400, seed=0)
    rows = {r["quantity"]: r for r in out.table()}
    median = rows["median loss / theory_loss"]
    assert (median["flag"] == "outside 1 ± 0.05: measured and theory disagree") is flagged
    assert rows["runs compared"]["estimate"] == 4 and rows["runs compared"]["flag"].startswith("2 without")
    notes = out.notes()
    assert any(n == "1 run(s) not compared, interpolation peak (|N - T| <= 1): peak-N50-T50" for n in notes)
    assert any(n == "1 run(s) not compared, nonlinear features: relu-N50-T100" for n in notes)
    record = out.to_record()
    assert record["law"] == "theory_agreement" and record["run_ids"] == sorted(["r0", "r1", "r2", "r3", "p", "q"])
    wider = TheoryAgreementDecl(kind="theory_agreement", tolerance=0.3)
    assert not agreement_outcome(wider, source(agreement_frame(ratios)), n_boot=0, seed=0).table()[0]["flag"]


# -- symmetry --------------------------------------------------------------------------------


def grid(loss, values=(10, 20, 40, 80), seeds=(0,)) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": f"{n}-{t}-{s}", "n_params": n, "tokens": t, "loss": loss(n, t, s)}
                         for n in values for t in values for s in seeds])


def test_symmetric_losses_give_ratio_one() -> None:
    fit = nt_symmetry(grid(lambda n, t, s: 1 / n + 1 / t + (5.0 if n == t else 0.0)), n_boot=200)
    assert len(fit.pairs) == 6 and fit.unpaired == 0  # 4 values: 4 * 3 / 2 mirrored pairs, diagonal left out
    assert fit.median_ratio == pytest.approx(1.0) and fit.median_abs_log == pytest.approx(0.0)
    assert fit.ratio_interval == pytest.approx((1.0, 1.0))


def test_asymmetric_losses_give_the_known_ratio_and_seeds_are_averaged() -> None:
    # L = N^-1 T^-0.5 (seed 1 doubles it): L(x, y) / L(y, x) = (y / x)^0.5 >= sqrt(2)
    data = grid(lambda n, t, s: (1 + s) / n / t**0.5, seeds=(0, 1))
    fit = nt_symmetry(data, n_boot=200)
    expect = sorted(np.sqrt(p["y"] / p["x"]) for _, p in fit.pairs.iterrows())
    assert sorted(fit.pairs["ratio"]) == pytest.approx(expect)
    assert (fit.pairs["runs_xy"] == 2).all() and fit.ratio_interval[0] > 1


def test_symmetry_pairs_within_groups_counts_unpaired_cells_and_refuses_no_pairs() -> None:
    both = pd.concat([grid(lambda n, t, s: 1 / n + 1 / t).assign(nonlinearity=k) for k in ("linear", "relu")])
    assert len(nt_symmetry(both, by=["nonlinearity"], n_boot=0).pairs) == 12
    lopsided = grid(lambda n, t, s: 1 / n + 1 / t)
    lopsided = lopsided[~((lopsided["n_params"] == 80) & (lopsided["tokens"] == 10))]
    assert nt_symmetry(lopsided, n_boot=0).unpaired == 1
    with pytest.raises(FitError, match=r"symmetry: no pair of runs with \(n_params, tokens\)"):
        nt_symmetry(grid(lambda n, t, s: 1.0)[lambda d: d["n_params"] <= d["tokens"]], n_boot=0)


@pytest.mark.parametrize("power, flagged", [(1.0, False), (0.5, True)])
def test_symmetry_outcome_flags_an_interval_excluding_one(power: float, flagged: bool) -> None:
    data = grid(lambda n, t, s: (1 + 0.01 * s) * (1 / n + t**-power), values=(10, 20, 40, 80, 160), seeds=(0, 1, 2))
    out = symmetry_outcome(SymmetryDecl(kind="symmetry"), source(data), n_boot=500, seed=0)
    ratio = out.table()[0]
    assert ratio["quantity"] == "median loss(n_params=x, tokens=y) / loss(n_params=y, tokens=x), x < y"
    assert (ratio["flag"] == "interval excludes 1: not symmetric") is flagged
    assert "runs of one cell averaged (up to 3)" in out.notes()[0]
    assert out.to_record()["law"] == "symmetry" and len(out.detail) == 10


# -- the figure ------------------------------------------------------------------------------


def curves_frame() -> pd.DataFrame:
    rows = []
    for n in (10, 20, 40):
        for t in (10, 20, 40):
            peak = n == t
            rows.append({"run_id": f"{n}-{t}", "name": f"N{n}-T{t}", "n_features": n, "samples": t,
                         "loss": 1.0 if peak else 1 / n + 1 / t, "theory_loss": np.nan if peak else 1 / n + 1 / t})
    return pd.DataFrame(rows)


def test_theory_curves_draws_points_and_theory_lines_split_at_the_peak() -> None:
    spec = theory_curves(curves_frame()).to_dict()
    text = json.dumps(spec)
    assert '"test loss (MSE)"' in text and '"random features N"' in text and '"samples T"' in text
    layers = spec["layer"]
    marks = [layer["mark"]["type"] for layer in layers]
    assert marks == ["rule", "line", "point"]
    line = layers[1]["encoding"]
    assert line["x"]["scale"]["type"] == "log" and line["y"]["scale"]["type"] == "log"
    assert line["detail"]["field"] == "_segment" and line["color"]["field"] == "samples"
    values = spec["data"]["values"]
    segments = {v["_segment"] for v in values if v["_layer"] == "theory"}
    assert segments == {"10 N > T", "20 N < T", "20 N > T", "40 N < T"}  # no line crosses N = T
    assert sorted(v["n_features"] for v in values if v["_layer"] == "peak") == [10, 20, 40]
    curve = pd.DataFrame({"n_features": [11, 12, 13], "samples": [10] * 3, "theory_loss": [0.5, 0.4, 0.3]})
    fine = theory_curves(curves_frame(), curve).to_dict()["data"]["values"]
    assert sorted(v["n_features"] for v in fine if v["_layer"] == "theory") == [11, 12, 13]
    with pytest.raises(PlotError, match="theory_curves: frame is missing column theory_loss"):
        theory_curves(curves_frame().drop(columns="theory_loss"))


# -- end to end: a tiny random-features experiment ------------------------------------------

SPEC = """
experiment: rf_tiny
data: {kind: random_features, latent_dim: 200, alpha: 1.0}
model: {kind: random_features, n_features: 10}
train: {kind: closed_form, samples: 10, eval_samples: 400}
sweep:
  axes:
    model.n_features: [10, 20, 40, 80]
    train.samples: [10, 20, 40, 80]
analysis:
  comparisons:
    - {kind: theory_agreement, tolerance: 0.5, bootstrap: 300}
    - {kind: symmetry, bootstrap: 300}
  plots:
    - {kind: theory_curves}
"""


@pytest.fixture(scope="module")
def rf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, AnalysisSpec]:
    root = tmp_path_factory.mktemp("rf")
    (root / "rf_tiny.yaml").write_text(SPEC)
    compiled = compile_spec(root / "rf_tiny.yaml")
    ws = Workspace(root / "ws")
    ws.write_compiled(compiled)
    for m in compiled.runs:
        assert execute_run(ws, m.run_id, device="cpu").status == RunState.FINISHED
    ingest_runs(ws)
    return ws, compiled.analysis


def test_theory_loss_query_on_closed_form_runs(rf: tuple[Workspace, AnalysisSpec]) -> None:
    df = run_query(rf[0], "theory_loss", params={"experiment": "rf_tiny"})
    assert len(df) == 16 and (df["n_features"] == df["n_params"]).all() and (df["samples"] == df["tokens"]).all()
    peak = df["n_features"] == df["samples"]
    assert df.loc[peak, "theory_loss"].isna().all() and df.loc[~peak, "theory_loss"].gt(0).all()
    assert set(df.loc[peak, "theory_missing"]) == {"interpolation peak (|N - T| <= 1)"}
    assert df.loc[~peak, "theory_missing"].isna().all() and df["population_loss"].gt(0).all()


def test_declared_theory_comparisons_are_stored_and_the_figure_builds(rf: tuple[Workspace, AnalysisSpec]) -> None:
    rf_workspace, analysis = rf
    done = run_analysis(rf_workspace, "rf_tiny", analysis)
    assert not done.errors, done.errors
    by_name = {o.name: o for o in done.outcomes}
    agreement = {r["quantity"]: r for r in by_name["theory_agreement"].table()}
    assert agreement["runs compared"]["estimate"] == 12
    assert 0.5 < agreement["median loss / theory_loss"]["estimate"] < 1.5  # one draw of a 16-run grid
    assert any(n.startswith("4 run(s) not compared, interpolation peak") and "rf_tiny-N10-T10" in n
               for n in by_name["theory_agreement"].notes())
    assert by_name["symmetry"].table()[2]["estimate"] == 6
    stored = run_query(rf_workspace, sql="SELECT name, law, run_ids FROM fits WHERE experiment = 'rf_tiny'")
    assert dict(zip(stored["name"], stored["law"])) == {"theory_agreement": "theory_agreement",
                                                        "symmetry": "symmetry"}
    assert all(len(json.loads(ids)) == 16 for ids in stored["run_ids"])
    chart = build_figure(rf_workspace, FigureRequest(kind="theory_curves", experiment="rf_tiny")).to_dict()
    theory = [v for v in chart["data"]["values"] if v["_layer"] == "theory"]
    assert len(theory) > 12 and {v["samples"] for v in theory} == {10, 20, 40, 80}  # a fine grid per T


def test_theory_comparisons_from_the_command_line(rf: tuple[Workspace, AnalysisSpec]) -> None:
    from click.testing import CliRunner

    from scaling_db.cli import cli

    ws = str(rf[0].root)
    agree = CliRunner().invoke(cli, ["fit", "--query", "theory_loss", "-e", "rf_tiny", "--analysis", "theory_agreement",
                                     "--bootstrap", "50", "--no-store", "--json", "-w", ws])
    assert agree.exit_code == 0, agree.output
    sym = CliRunner().invoke(cli, ["fit", "--query", "final_loss", "-e", "rf_tiny", "--analysis", "symmetry",
                                   "--x", "n_params", "--x", "tokens", "--bootstrap", "50", "--no-store", "-w", ws])
    assert sym.exit_code == 0, sym.output
    assert "median loss / theory_loss" in agree.stdout and "mirrored pairs" in sym.stdout


def test_shipped_random_features_spec_declares_the_theory_analyses() -> None:
    analysis = compile_spec(Path(__file__).resolve().parents[1] / "specs" / "random_features.yaml").analysis
    assert [c.kind for c in analysis.comparisons] == ["theory_agreement", "symmetry"]
    assert [p.kind for p in analysis.plots] == ["theory_curves"]
