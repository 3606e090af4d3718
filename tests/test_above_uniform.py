"""Runs that finish above the uniform-guess loss ln(vocab_size) learned nothing: fits leave them out.

A 100-node graph (uniform guess ln 100 = 4.605 nats) and final losses L = 1.5 + 250 N^-0.5 put the
smallest width (N_nonembed = 6144: L = 4.69) above the guess and the three others below it.
The frontier tests use training curves instead: L = 1.5 + 250 N^-0.5 + 30 D^-0.3 for the widths
that learn, while width 16 stays flat just above ln 100, as a run that learned nothing does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import FitError
from scaling_db.report.analyses import FitRequest, fit_frame, fit_request, fetch_fit_data, store_outcome
from scaling_db.report.comparisons import run_comparison, run_frontier
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.report.html import write_report
from scaling_db.report.markdown import Page, write_page
from scaling_db.report.study import Study, draw_figures
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.schema import AnalysisSpec, FrontierDecl, LrOptimumDecl, PlotDecl
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query
from scaling_db.training.records import CheckpointRecord, RunState, RunStatus
from scaling_db.workspace import Workspace
from test_analysis import add_synthetic_experiment

SPEC = """
experiment: small_vocab
data: {kind: graph_walk, graph: {kind: barabasi_albert, n: 100, m: 2}}
model: {kind: transformer, n_layers: 2, d_model: 16, d_head: 8, context: 16, parameterization: {kind: mup, base_width: 16}}
train:
  optimizer: {kind: adamw, lr: 1.0e-2}
  batch_size: 8
  tokens: 20_000
  checkpoints: {kind: log, count: 3, first: 2}
sweep:
  axes:
    model.d_model: [16, 32, 64, 128]
    train.optimizer.lr: [3.0e-3, 1.0e-2, 3.0e-2]
"""
UNIFORM = float(np.log(100))
REASON = r"final loss 4\.6\d+ above uniform guess ln\(V\)=4\.605: learned nothing"


def small_vocab_loss(n: float, d: float, lr: float, width: int, param: str, rng: np.random.Generator) -> float:
    return float(1.5 + 250 * n**-0.5 + 0.01 * np.log(lr / 1e-2) ** 2 + rng.normal(0, 0.001))


def synthetic_workspace(factory: pytest.TempPathFactory, name: str, spec: str, loss_fn) -> Workspace:
    tmp = factory.mktemp(name)
    ws = Workspace(tmp / "ws")
    add_synthetic_experiment(ws, tmp / f"{name}.yaml", spec, loss_fn=loss_fn)
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return synthetic_workspace(tmp_path_factory, "small_vocab", SPEC, small_vocab_loss)


def _above(ws: Workspace) -> set[str]:
    df = run_query(ws, "final_loss", params={"experiment": "small_vocab"})
    assert df["uniform_loss"].tolist() == pytest.approx([UNIFORM] * 12)
    return set(df.loc[df["loss"] > df["uniform_loss"], "run_id"])


REQ = FitRequest(name="by_n", law="saturating_power_law", x=["n_params_nonembed"], bootstrap=20,
                 experiment="small_vocab")


def test_a_fit_leaves_out_runs_above_the_uniform_guess_and_says_why(ws: Workspace) -> None:
    above = _above(ws)
    assert len(above) == 3  # the three learning rates of width 16
    out = fit_request(ws, REQ)
    assert out.fit.n_points == 9 and {run for run, _ in out.fit.excluded} == above
    assert all(re.fullmatch(REASON, why) for _, why in out.fit.excluded)
    assert out.boot is not None and out.boot.fit.excluded == out.fit.excluded
    assert out.fit.params["alpha"] == pytest.approx(0.5, abs=0.05)
    notes = "\n".join(out.notes())
    assert all(f"excluded {run}: final loss" in notes for run in above)
    rec = out.to_record()
    assert len(rec["run_ids"]) == 12  # provenance: every run the query returned
    assert {run for run, _ in rec["excluded"]} == above and not above & set(rec["used"])


def test_keep_above_uniform_fits_them_and_all_above_is_an_error(ws: Workspace) -> None:
    kept = fit_request(ws, FitRequest(**{**REQ.__dict__, "keep_above_uniform": True, "bootstrap": 0}))
    assert kept.fit.n_points == 12 and kept.fit.excluded == ()
    data, sql = fetch_fit_data(ws, REQ)
    only_above = data[data["d_model"] == 16].reset_index(drop=True)
    with pytest.raises(FitError, match=r"every run's final loss is above the uniform guess .*3 of 3 runs; first: "
                                       + REASON + r".*keep_above_uniform: true \(--keep-above-uniform\)"):
        fit_frame(REQ, only_above, sql)


def test_comparisons_leave_them_out_too(ws: Workspace) -> None:
    out = run_comparison(ws, LrOptimumDecl(kind="lr_optimum", group_by=["d_model"]), "small_vocab")
    assert [r["quantity"] for r in out.table()] == [f"lr* (parabola) d_model={w}" for w in (32, 64, 128)]
    assert sum("above uniform guess" in line for line in out.notes()) == 3
    assert len(out.to_record()["run_ids"]) == 12 and len(out.to_record()["excluded"]) == 3
    kept = run_comparison(ws, LrOptimumDecl(kind="lr_optimum", group_by=["d_model"], keep_above_uniform=True),
                          "small_vocab")
    assert len(kept.table()) == 4


def test_cli_fit_prints_the_exclusions_and_keeps_them_on_request(ws: Workspace) -> None:
    runner = CliRunner()
    args = ["fit", "--query", "final_loss", "-e", "small_vocab", "--law", "saturating_power_law",
            "--x", "n_params_nonembed", "--bootstrap", "0", "--no-store", "-w", str(ws.root)]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "; 9 points" in res.output and res.output.count("above uniform guess ln(V)=4.605: learned nothing") == 3
    res = runner.invoke(cli, [*args, "--keep-above-uniform"])
    assert res.exit_code == 0, res.output
    assert "; 12 points" in res.output and "learned nothing" not in res.output


def test_status_marks_finished_runs_above_the_uniform_guess(ws: Workspace) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["status", "--json", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert {r["run_id"] for r in json.loads(res.output) if r["above_uniform"]} == _above(ws)
    res = runner.invoke(cli, ["status", "-w", str(ws.root)])
    assert res.output.count("finished (above uniform)") == 3
    assert "3 finished run(s) end above the uniform-guess loss ln(vocab_size)" in res.output


def _status_marked(ws: Workspace) -> set[str]:
    """The names of the runs `scaledb status` marks above the uniform guess."""
    res = CliRunner().invoke(cli, ["status", "--json", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    return {r["name"] for r in json.loads(res.output) if r["above_uniform"]}


def test_the_html_runs_table_marks_them_as_status_does(ws: Workspace) -> None:
    runs = run_query(ws, "final_loss", params={"experiment": "small_vocab", "status": "any"})
    page = write_report(ws, "small_vocab", "", "small_vocab.yaml", [], [], runs).read_text()
    marked = set(re.findall(r"<tr><td>([^<]+)</td><td>finished \(above uniform\)</td>", page))
    assert len(marked) == 3 and marked == _status_marked(ws)
    assert page.count("<td>finished</td>") == 9
    assert "3 finished run(s) end above the uniform-guess loss ln(vocab_size): they learned nothing" in page


def test_the_markdown_runs_table_marks_them_as_status_does(ws: Workspace, tmp_path: Path) -> None:
    runs = run_query(ws, "final_loss", params={"experiment": "small_vocab", "status": "any"})
    page = Page("small_vocab", "", ws.root.parent / "small_vocab.yaml", "scaledb reproduce", [], {}, [], runs, [])
    text = write_page(page, tmp_path / "page", ws.cache_dir).read_text()
    table = text.split("## Runs", 1)[1]
    marked = set(re.findall(r"^\| ([^|]+) \| finished \(above uniform\) \|", table, flags=re.M))
    assert len(marked) == 3 and marked == _status_marked(ws)
    assert len(re.findall(r"^\| [^|]+ \| finished \|", table, flags=re.M)) == 9
    assert "3 finished run(s) end above the uniform-guess loss ln(vocab_size): they learned nothing" in table
    assert "12 (12 finished)" in text  # the plan counts states, not marks


def test_closed_form_runs_have_no_uniform_guess_and_are_all_fitted(tmp_path: Path) -> None:
    """Percolation regression has no vocabulary: uniform_loss is NULL and nothing is left out,
    however large its losses."""
    spec = Path(__file__).resolve().parents[1] / "specs" / "percolation.yaml"
    ws = Workspace(tmp_path / "ws")
    compiled = compile_spec(spec)
    ws.write_compiled(compiled)
    for m in compiled.runs:
        n = m.train.samples
        ws.log_path(m.run_id).write_text(CheckpointRecord(
            run_id=m.run_id, step=1, tokens=n, flops_6n_nonembed=None, flops_6n=None, flops_exact=None,
            train_loss=0.0, eval_loss=50.0 * n**-0.3, lr=None, wall_time_s=0.1).to_line())
        ws.write_status(RunStatus(run_id=m.run_id, status=RunState.FINISHED, step=1))
    ingest_runs(ws)
    df = run_query(ws, "final_loss", params={"experiment": "percolation"})
    assert len(df) == 7 and df["uniform_loss"].isna().all()
    out = fit_request(ws, FitRequest(name="by_samples", law="power_law", x=["tokens"], bootstrap=0,
                                     experiment="percolation"))
    assert out.fit.n_points == 7 and out.fit.excluded == ()


# -- frontiers from training curves (loss_curves): whole runs go, judged by their final loss -------

CURVES_SPEC = SPEC.replace("experiment: small_vocab", "experiment: curves_vocab").replace(
    "tokens: 20_000\n  checkpoints: {kind: log, count: 3, first: 2}",
    "tokens: 200_000\n  checkpoints: {kind: log, count: 8, first: 2}")


def curves_loss(n: float, d: float, lr: float, width: int, param: str, rng: np.random.Generator) -> float:
    if width == 16:  # learned nothing: flat just above the uniform guess
        return float(UNIFORM + 0.05 + 0.5 * d**-0.3 + rng.normal(0, 0.001))
    # early checkpoints are far above ln(V) too: only a run's final loss decides
    return float(1.5 + 250 * n**-0.5 + 30 * d**-0.3 + 0.01 * np.log(lr / 1e-2) ** 2 + rng.normal(0, 0.001))


@pytest.fixture(scope="module")
def curves_ws(tmp_path_factory) -> Workspace:
    return synthetic_workspace(tmp_path_factory, "curves_vocab", CURVES_SPEC, curves_loss)


def _flat_runs(ws: Workspace) -> set[str]:
    curves = run_query(ws, "loss_curves", params={"experiment": "curves_vocab"})
    assert len(curves) == 12 * 8 and (curves["loss"] > UNIFORM).sum() > 3 * 8  # good runs start above too
    return set(curves.loc[curves["d_model"] == 16, "run_id"])


def test_the_surface_frontier_of_the_three_widths_that_learned_is_refused(curves_ws: Workspace) -> None:
    # width 16 left out, 3 widths remain: too few for the cubic surface (its minimum-norm fit
    # was arbitrary); with every run kept, 4 widths determine it
    with pytest.raises(FitError, match=r"\(3 distinct n_params and \d+ distinct tokens vs at least 4 of each\)"):
        run_frontier(curves_ws, FrontierDecl(method="surface", bootstrap=0), "curves_vocab")
    kept = run_frontier(curves_ws, FrontierDecl(method="surface", bootstrap=0, keep_above_uniform=True), "curves_vocab")
    assert kept.to_record()["n_points"] == 12 * 8


@pytest.mark.parametrize("method", ["envelope", "parametric"])
def test_curve_frontiers_leave_out_whole_runs_above_the_uniform_guess(curves_ws: Workspace, method: str) -> None:
    flat = _flat_runs(curves_ws)
    out = run_frontier(curves_ws, FrontierDecl(method=method, bootstrap=0), "curves_vocab")
    kept = run_frontier(curves_ws, FrontierDecl(method=method, bootstrap=0, keep_above_uniform=True), "curves_vocab")
    rec = out.to_record()
    assert {run for run, _ in rec["excluded"]} == flat and len(rec["excluded"]) == 3  # each run once
    assert all(re.fullmatch(REASON, why) for _, why in rec["excluded"])
    assert sum(line.startswith("excluded ") and "learned nothing" in line for line in out.notes()) == 3
    assert rec["n_points"] == 9 * 8  # every checkpoint of the runs that learned, early ones too
    assert len(rec["run_ids"]) == 12 and rec["settings"]["keep_above_uniform"] is False
    # the flat runs pulled the frontier: without them the exponent moves
    a, a_kept = out.table()[0]["estimate"], kept.table()[0]["estimate"]
    assert abs(a - a_kept) > 0.05
    assert kept.to_record()["excluded"] is None and kept.to_record()["n_points"] == 12 * 8
    if method == "envelope":  # N_opt is the winning run's size: width 16 wins no compute level now
        n_flat = run_query(curves_ws, sql="SELECT DISTINCT n_params FROM runs WHERE d_model = 16")["n_params"][0]
        assert n_flat not in set(out.detail["n_opt"]) and n_flat in set(kept.detail["n_opt"])


def test_a_curve_frontier_of_runs_all_above_the_uniform_guess_is_an_error(curves_ws: Workspace) -> None:
    sql = ("SELECT r.run_id, r.n_params, c.tokens, c.flops_exact AS flops, c.eval_loss AS loss, "
           "f.eval_loss AS final_loss, ln(r.vocab_size) AS uniform_loss FROM runs AS r "
           "JOIN checkpoints AS c USING (run_id) JOIN final_checkpoints AS f ON f.run_id = c.run_id "
           "WHERE r.experiment = 'curves_vocab' AND r.d_model = 16")
    with pytest.raises(FitError, match=r"every run's final loss is above the uniform guess .*\(3 runs; first: "
                                       + REASON + r"\).*keep_above_uniform: true \(--keep-above-uniform\)"):
        run_frontier(curves_ws, FrontierDecl(method="envelope", bootstrap=0), "curves_vocab", sql=sql)


def _allocation(ws: Workspace, keep: bool = False) -> tuple[set[float], str]:
    """The envelope's N_opt points in the allocation figure, and its subtitle."""
    req = FigureRequest(kind="optimal_allocation", experiment="curves_vocab", keep_above_uniform=keep)
    spec = build_figure(ws, req).to_dict()
    points = {r["value"] for r in spec["data"]["values"] if r["_kind"] == "point"
              and r["_series"].startswith("envelope") and r["quantity"].startswith("optimal param")}
    assert points
    return points, spec["title"]["subtitle"]


def test_the_allocation_figure_leaves_them_out_and_says_so(curves_ws: Workspace) -> None:
    """Without a stored frontier the figure fits its own by the same rule; a stored one is redrawn
    from the runs it used: without them, or with them when it was fitted with keep_above_uniform."""
    n_flat = run_query(curves_ws, sql="SELECT DISTINCT n_params FROM runs WHERE d_model = 16")["n_params"][0]
    said = "3 run(s) above the uniform guess ln(vocab_size) left out: they learned nothing"
    points, subtitle = _allocation(curves_ws)
    assert n_flat not in points and said in subtitle
    # the 3 widths left cannot determine the cubic surface: the figure says so instead of dropping it silently
    assert "surface not drawn: frontier_surface: too few distinct values" in str(subtitle)
    store_outcome(curves_ws, run_frontier(curves_ws, FrontierDecl(method="envelope", bootstrap=0,
                                                                  keep_above_uniform=True), "curves_vocab"))
    points, subtitle = _allocation(curves_ws)
    assert n_flat in points and said not in subtitle
    store_outcome(curves_ws, run_frontier(curves_ws, FrontierDecl(method="envelope", bootstrap=0), "curves_vocab"))
    points, subtitle = _allocation(curves_ws)  # the newest stored envelope is drawn
    assert n_flat not in points and said in subtitle
    # asked to keep them, the figure fits its own frontiers over every run instead of the stored one
    points, subtitle = _allocation(curves_ws, keep=True)
    assert n_flat in points and "left out" not in str(subtitle)


ISO_SPEC = SPEC.replace("experiment: small_vocab", "experiment: iso_vocab").replace("  tokens: 20_000\n", "").replace(
    "  axes:\n    model.d_model: [16, 32, 64, 128]\n    train.optimizer.lr: [3.0e-3, 1.0e-2, 3.0e-2]\n",
    "  vars: [flop_budget]\n  axes:\n    flop_budget: [3.0e11, 1.0e12, 3.0e12]\n"
    "    model.d_model: [16, 32, 64, 96, 128]\n"
    "  derive:\n    train.steps: max(1, round(flop_budget / (6 * n_params * tokens_per_step)))\n")


def iso_loss(n: float, d: float, lr: float, width: int, param: str, rng: np.random.Generator) -> float:
    if width == 128 and d < 3e5:  # the widest model on the smallest budget learned nothing
        return float(UNIFORM + 0.1)
    return float(1.5 + 60 * n**-0.5 + 300 * d**-0.4 + rng.normal(0, 0.001))


@pytest.fixture(scope="module")
def iso_ws(tmp_path_factory) -> Workspace:
    return synthetic_workspace(tmp_path_factory, "iso_vocab", ISO_SPEC, iso_loss)


def test_the_isoflop_figure_leaves_out_runs_above_the_uniform_guess_and_marks_parabola_minima(iso_ws: Workspace):
    """As the IsoFLOP frontier does: the run that learned nothing is not a slice point, and each
    budget's diamond is its parabola's vertex (before: the best run, under a subtitle that said
    parabola)."""
    from scaling_db.fit.frontier import isoflop_minima

    slices = run_query(iso_ws, "isoflop", params={"experiment": "iso_vocab"})
    flat = slices[slices["loss"] > slices["uniform_loss"]]
    assert len(slices) == 15 and len(flat) == 1
    spec = build_figure(iso_ws, FigureRequest(kind="isoflop", experiment="iso_vocab")).to_dict()
    assert spec["title"]["subtitle"][1] == ("1 run(s) above the uniform guess ln(vocab_size) left out: "
                                            "they learned nothing")
    layers = {(layer["mark"]["type"], layer["mark"].get("shape")): layer["data"]["values"] for layer in spec["layer"]}
    points = layers[("point", None)]
    assert len(points) == 14 and flat["n_params"].iloc[0] not in {
        p["n_params"] for p in points if p["flop_budget"] == flat["budget"].iloc[0]}
    kept = slices.drop(index=flat.index).rename(columns={"budget": "flop_budget"})
    optima, _ = isoflop_minima(kept, budget="flop_budget")
    diamonds = sorted((p["flop_budget"], p["n_params"]) for p in layers[("point", "diamond")])
    assert diamonds == [(pytest.approx(c), pytest.approx(n)) for c, n in zip(optima["flops"], optima["n_opt"])]
    assert not {round(n) for _, n in diamonds} & set(slices["n_params"])  # vertices, not runs


def test_the_isoflop_figure_keeps_them_when_asked_from_the_cli_or_a_spec(iso_ws: Workspace, tmp_path) -> None:
    out = tmp_path / "iso.json"
    res = CliRunner().invoke(cli, ["plot", "isoflop", "-e", "iso_vocab", "--keep-above-uniform", "--out", str(out),
                                   "-w", str(iso_ws.root)])
    assert res.exit_code == 0, res.output
    spec = json.loads(out.read_text())
    points = next(layer["data"]["values"] for layer in spec["layer"]
                  if layer["mark"]["type"] == "point" and "shape" not in layer["mark"])
    assert len(points) == 15 and "left out" not in str(spec["title"]["subtitle"])
    # a switch that would change nothing is refused, never silently ignored
    for kind in ("loss_curves", "contact-sheet"):
        res = CliRunner().invoke(cli, ["plot", kind, "-e", "iso_vocab", "--keep-above-uniform", "--out", str(out),
                                       "-w", str(iso_ws.root)])
        assert res.exit_code == 2 and "applies to isoflop and optimal_allocation only" in res.output
    with pytest.raises(ValueError, match="keep_above_uniform applies to isoflop and optimal_allocation only: "
                                         "loss_curves draws every run"):
        PlotDecl(kind="loss_curves", keep_above_uniform=True)
    # a spec's figure: the same switch, and the same figure drawn without it leaves the run out
    study = Study("iso_vocab", "", "iso_vocab.yaml", AnalysisSpec(plots=[
        PlotDecl(kind="isoflop", keep_above_uniform=True, out="kept"), PlotDecl(kind="isoflop")]), True)
    kept, default = (f.chart.to_dict()["title"]["subtitle"] for f in draw_figures(iso_ws, study, {}))
    assert "left out" not in str(kept) and "1 run(s) above the uniform guess" in str(default)
