"""Fits and figures from the database, on a synthetic workspace with a known law.

The runs are compiled from a real spec, but their logs are written from
L = E + A N^-alpha + B D^-beta (+ a learning-rate penalty and noise) instead of training, so
these tests check the query -> fit -> store -> figure path in seconds, against known values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scaling_db.report.analyses import FitRequest, fit_request, load_stored_fit, store_outcome
from scaling_db.cli import cli
from scaling_db.spec.compiler import compile_spec
from scaling_db.errors import FitError, PlotError
from scaling_db.report.figures import BUILDERS, FigureRequest, build_figure
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query
from scaling_db.training.records import CheckpointRecord, RunState, RunStatus
from scaling_db.report.html import Figure, write_report
from scaling_db.workspace import Workspace

# Every final loss of every experiment below stays under the uniform guess ln(vocab_size) (graphs of
# 1000 nodes: 6.9 nats), as a trained run's does: fits leave runs above it out (test_above_uniform.py).
E, A, ALPHA, B, BETA = 1.5, 20.0, 0.35, 150.0, 0.3
SPEC = """
experiment: synth
data: {kind: graph_walk, graph: {kind: barabasi_albert, n: 1000, m: 2}}
model: {kind: transformer, n_layers: 2, d_model: 16, d_head: 8, context: 16}
train:
  optimizer: {kind: adamw, lr: 1.0e-2}
  batch_size: 8
  tokens: 200_000
  checkpoints: {kind: log, count: 8, first: 2}
sweep:
  axes:
    model.parameterization: [{kind: sp, base_width: 16}, {kind: mup, base_width: 16}]
    model.d_model: [16, 32, 64, 128]
    train.optimizer.lr: {geomspace: [1.0e-3, 1.0e-1], num: 5}
  seeds: [0, 1]
analysis:
  fits:
    - {name: by_params, law: saturating_power_law, x: [n_params_nonembed], bootstrap: 30}
    - {name: by_params_pl, law: power_law, x: [n_params_nonembed], bootstrap: 0}
"""


def synthetic_loss(n: float, d: float, lr: float, width: int, param: str, rng: np.random.Generator) -> float:
    best_lr = 1e-2 if param == "mup" else 1e-2 * (16 / width)  # muP transfers, SP drifts
    penalty = 0.05 * np.log(lr / best_lr) ** 2
    return float(E + A * n**-ALPHA + B * d**-BETA + penalty + rng.normal(0, 0.003))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Workspace:
    tmp = tmp_path_factory.mktemp("synth")
    ws = Workspace(tmp / "ws")
    add_synthetic_experiment(ws, tmp / "synth.yaml", SPEC)
    return ws


def add_synthetic_experiment(ws: Workspace, path: Path, text: str, seed: int = 0, loss_fn=synthetic_loss) -> None:
    """Compile `text`, write logs from the known law (or `loss_fn`, called like `synthetic_loss`)
    instead of training, and ingest them."""
    path.write_text(text)
    compiled = compile_spec(path)
    ws.write_compiled(compiled)
    rng = np.random.default_rng(seed)
    for m in compiled.runs:
        lines = []
        for step in m.train.checkpoint_steps:
            tokens = step * m.train.batch_size * m.model.context
            loss = loss_fn(m.counts.n_params_nonembed, tokens, m.train.optimizer.lr, m.model.d_model,
                                  m.model.parameterization.kind, rng)
            lines.append(CheckpointRecord(
                run_id=m.run_id, step=step, tokens=tokens,
                **{f"flops_{k}": v * tokens for k, v in m.flops_per_token.items()},
                train_loss=loss + 0.01, eval_loss=loss, lr=m.train.optimizer.lr, wall_time_s=step * 0.01,
            ).to_line())
        ws.log_path(m.run_id).write_text("".join(lines))
        ws.write_status(RunStatus(run_id=m.run_id, status=RunState.FINISHED, step=m.train.steps, entropy_rate=E))
    ingest_runs(ws)


def test_saturating_fit_recovers_the_law_and_stores_provenance(synth: Workspace) -> None:
    out = fit_request(synth, FitRequest(name="by_params", law="saturating_power_law", query="final_loss",
                                        x=["n_params_nonembed"], bootstrap=30, experiment="synth"))
    assert out.fit.n_points == 80 and out.boot is not None
    assert 0.2 < out.fit.params["alpha"] < 0.6
    assert out.true_floor == E and out.irreducible is not None
    stored = store_outcome(synth, out)
    row = load_stored_fit(synth, "synth", "by_params")
    assert row["fit_id"] == stored.fit_id and row["law"] == "saturating_power_law"
    assert len(json.loads(row["run_ids"])) == 80
    assert "FROM runs" in row["query_sql"]


def test_without_a_bootstrap_the_floor_is_not_judged_against_an_interval(synth: Workspace) -> None:
    out = fit_request(synth, FitRequest(name="by_params", law="saturating_power_law", query="final_loss",
                                        x=["n_params_nonembed"], bootstrap=0, experiment="synth"))
    floor = next(n for n in out.notes() if n.startswith("fitted floor E"))
    assert floor.endswith("; no interval to judge it by)") and "side the interval" not in floor


def test_two_input_law_recovers_exponents(synth: Workspace) -> None:
    sql = ("SELECT r.run_id, r.n_params_nonembed AS n_params, c.tokens, c.eval_loss AS loss FROM runs r "
           "JOIN checkpoints c USING (run_id) WHERE r.experiment = 'synth' AND r.lr = 0.01 "
           "AND r.parameterization = 'mup' AND c.step > 2")
    out = fit_request(synth, FitRequest(name="nd", law="chinchilla", query=None, sql=sql, bootstrap=0))
    assert out.fit.params["alpha"] == pytest.approx(ALPHA, abs=0.1)
    assert out.fit.params["beta"] == pytest.approx(BETA, abs=0.1)


def test_fit_errors_name_the_problem(synth: Workspace) -> None:
    with pytest.raises(FitError, match="no column\\(s\\) width"):
        fit_request(synth, FitRequest(name="bad", law="power_law", x=["width"], experiment="synth"))
    with pytest.raises(FitError, match="takes 2 x column"):
        fit_request(synth, FitRequest(name="bad", law="chinchilla", x=["a", "b", "c"], experiment="synth"))
    with pytest.raises(FitError, match=r"unknown law \('cubic' vs one of power_law"):
        FitRequest(name="bad", law="cubic").columns()


@pytest.mark.parametrize("kind", sorted(set(BUILDERS) - {"coordcheck", "isoflop", "scaling_fit", "theory_curves", "fit_parameters"}))
def test_every_figure_kind_builds_from_the_database(synth: Workspace, kind: str) -> None:
    chart = build_figure(synth, FigureRequest(kind=kind, experiment="synth"))
    spec = chart.to_dict()
    assert spec["config"] and ('"values"' in json.dumps(spec) or "datasets" in spec)


def test_scaling_fit_figure_draws_the_stored_curve_and_floor(synth: Workspace) -> None:
    store_outcome(synth, fit_request(synth, FitRequest(name="curve", law="saturating_power_law",
                                                       x=["n_params_nonembed"], bootstrap=20, experiment="synth")))
    spec = json.dumps(build_figure(synth, FigureRequest(kind="scaling_fit", experiment="synth", fit="curve")).to_dict())
    assert "entropy rate" in spec and "n_params_nonembed" in spec and "strokeDash" in spec


def test_figure_errors(synth: Workspace) -> None:
    with pytest.raises(PlotError, match="unknown plot kind 'pie'"):
        build_figure(synth, FigureRequest(kind="pie", experiment="synth"))
    with pytest.raises(PlotError, match="name the stored fit"):
        build_figure(synth, FigureRequest(kind="scaling_fit", experiment="synth"))


def test_report_embeds_figures_and_reports_undrawn_ones(synth: Workspace) -> None:
    out = fit_request(synth, FitRequest(name="r", law="saturating_power_law", x=["n_params_nonembed"],
                                        bootstrap=0, experiment="synth"))
    chart = build_figure(synth, FigureRequest(kind="loss_curves", experiment="synth"))
    path = write_report(synth, "synth", "desc", "synth.yaml", [out],
                        [Figure("loss_curves", chart), Figure("isoflop", None, "no budgets")], out.data)
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 1 and "not drawn: no budgets" in html
    assert "true floor (entropy rate, nats)" in html and (path.parent / "loss_curves.png").exists()


def test_cli_fit_and_plot(synth: Workspace, tmp_path: Path) -> None:
    spec = tmp_path / "synth.yaml"
    spec.write_text(SPEC)
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", str(spec), "-w", str(synth.root), "--json", "--only", "by_params_pl"])
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.output)
    assert rec["law"] == "power_law" and rec["fit_id"] and rec["n_points"] == 80
    res = runner.invoke(cli, ["fit", "--sql", "SELECT n_params, eval_loss AS loss FROM final_checkpoints JOIN runs USING (run_id)",
                              "--law", "power_law", "-w", str(synth.root), "--no-store"])
    assert res.exit_code == 0 and "power_law" in res.output
    res = runner.invoke(cli, ["fit", "--query", "final_loss", "-w", str(synth.root)])
    assert res.exit_code == 2 and "with one of --law, --analysis, --frontier" in res.output
    out = tmp_path / "fig.svg"
    res = runner.invoke(cli, ["plot", "lr_sweep", "-e", "synth", "-w", str(synth.root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<svg")
    res = runner.invoke(cli, ["plot", "lr_sweep", "-e", "synth", "-w", str(synth.root), "--out", str(tmp_path / "x.gif")])
    assert res.exit_code == 1 and "x.gif" in res.output


# -- declared comparisons, grouped fits, frontiers (issue 16) ---------------------------------------

COMPARISONS = {
    "fits": [{"name": "by_param", "law": "power_law", "x": ["n_params_nonembed"], "bootstrap": 0,
              "group_by": "parameterization"}],
    "comparisons": [{"kind": "lr_optimum"}, {"kind": "lr_transfer"},
                    {"kind": "parameter_efficiency", "bootstrap": 30}],
    "frontiers": [{"method": "envelope", "bootstrap": 10}],
}


def test_spec_declared_comparisons_are_stored_like_fits(synth: Workspace) -> None:
    from scaling_db.report.comparisons import run_analysis
    from scaling_db.spec.schema import AnalysisSpec

    done = run_analysis(synth, "synth", AnalysisSpec.model_validate(COMPARISONS), n_jobs=1)
    assert not done.errors
    by_name = {o.name: o for o in done.outcomes}
    assert set(by_name) == {"by_param[parameterization=mup]", "by_param[parameterization=sp]", "lr_optimum",
                            "lr_transfer", "parameter_efficiency", "frontier_envelope"}
    slopes = {r["quantity"]: r for r in by_name["lr_transfer"].table()}
    mup = slopes["d log lr*/d log d_model [parameterization=mup]"]
    sp = slopes["d log lr*/d log d_model [parameterization=sp]"]
    assert mup["lo"] < 0 < mup["hi"] and sp["lo"] < -1 < sp["hi"]  # the synthetic truth: 0 and -1
    assert "1 d_model value(s) left out: optimum not bracketed" in sp["flag"]  # sp at width 128: grid edge
    optima = {r["quantity"]: r for r in by_name["lr_optimum"].table()}
    edge = optima["lr (grid best) parameterization=sp, d_model=128"]
    assert edge["estimate"] == 1e-3 and edge["flag"].startswith("edge: best LR is the grid's smallest")
    assert optima["lr* (parabola) parameterization=mup, d_model=64"]["estimate"] == pytest.approx(1e-2, rel=0.05)
    front = by_name["frontier_envelope"].table()
    assert [r["quantity"][:2] for r in front] == ["a ", "b "] and all(r["lo"] is not None for r in front)
    stored = run_query(synth, sql="SELECT name, law, params, intervals, run_ids FROM fits WHERE experiment = 'synth'")
    kinds = dict(zip(stored["name"], stored["law"]))
    assert kinds["lr_transfer"] == "lr_transfer" and kinds["frontier_envelope"] == "frontier_envelope"
    assert kinds["by_param[parameterization=sp]"] == "power_law"
    row = stored[stored["name"] == "parameter_efficiency"].iloc[0]
    assert len(json.loads(row["run_ids"])) == 80 and len(json.loads(row["intervals"])) == 1


SECOND = SPEC.replace("experiment: synth", "experiment: synth_b").replace("m: 2}", "m: 3}").replace(
    "model.d_model: [16, 32, 64, 128]", "model.d_model: [16, 32, 64]").replace("  seeds: [0, 1]\n", "")


def test_cli_grouped_fits_comparisons_and_analysis_only_spec_across_experiments(synth: Workspace,
                                                                               tmp_path: Path) -> None:
    add_synthetic_experiment(synth, tmp_path / "synth_b.yaml", SECOND, seed=1)
    runner = CliRunner()
    w = ["-w", str(synth.root)]
    res = runner.invoke(cli, ["fit", "--query", "final_loss", "-e", "synth", "--law", "power_law",
                              "--x", "n_params_nonembed", "--group-by", "data.graph.m", "--bootstrap", "0",
                              "-e", "synth_b", "--json", *w])
    assert res.exit_code == 0, res.output
    assert [r["name"] for r in json.loads(res.output)] == ["power_law[data.graph.m=2]", "power_law[data.graph.m=3]"]
    table = runner.invoke(cli, ["fit", "--query", "final_loss", "-e", "synth", "--law", "power_law", "--x",
                                "n_params_nonembed", "--group-by", "data.graph.m", "--bootstrap", "0", "-e", "synth_b", *w])
    # each row names its group (rich took `[data.graph.m=2]` for markup and printed `power_law` for both)
    rows = [line for line in table.output.splitlines() if "│ alpha" in line]
    assert [line.split("│")[0].strip() for line in rows] == ["power_law[data.graph.m=2]", "power_law[data.graph.m=3]"]
    res = runner.invoke(cli, ["fit", "--query", "final_loss", "-e", "synth", "--analysis", "lr_transfer", "--json", *w])
    assert res.exit_code == 0, res.output
    (rec,) = json.loads(res.output)
    sp = rec["rows"][1]
    assert sp["quantity"] == "d log lr*/d log d_model [parameterization=sp]" and "not bracketed" in sp["flag"]
    spec = tmp_path / "both.yaml"
    spec.write_text("experiment: graphs_m2_m3\ndescription: both graphs together\nanalysis:\n"
                    "  experiments: [synth, synth_b]\n"
                    "  fits: [{name: by_m, law: power_law, x: [n_params_nonembed], bootstrap: 0, group_by: experiment}]\n"
                    "  comparisons: [{kind: lr_transfer}]\n"
                    "  plots: [{kind: lr_sweep}]\n")
    res = runner.invoke(cli, ["fit", str(spec), "--json", *w])
    assert res.exit_code == 0, res.output
    recs = {r["name"]: r for r in json.loads(res.output)}
    assert set(recs) == {"by_m[experiment=synth]", "by_m[experiment=synth_b]", "lr_transfer"}
    assert recs["lr_transfer"]["experiment"] == "graphs_m2_m3" and len(recs["lr_transfer"]["run_ids"]) == 80 + 30
    res = runner.invoke(cli, ["reproduce", str(spec), *w])
    assert res.exit_code == 0, res.output
    report = (synth.report_dir("graphs_m2_m3") / "report.html").read_text()
    assert "by_m[experiment=synth_b]" in report and "lr_sweep.png" in report
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: nothing\nanalysis: {fits: []}\n")
    res = runner.invoke(cli, ["fit", str(bad), *w])
    assert res.exit_code == 1 and "must list analysis.experiments" in res.output


MARIN_SQL = ("SELECT r.run_id, r.n_params, c.tokens, c.flops_exact AS flops, c.eval_loss AS loss, "
             "(r.vars->>'$.budget')::DOUBLE AS budget FROM runs r JOIN final_checkpoints c USING (run_id) "
             "WHERE r.experiment = 'marin_dclm'")


@pytest.mark.reference
def test_isoflop_frontier_of_an_imported_table_of_final_points(reference_dir: Path, tmp_path: Path) -> None:
    """Marin's DCLM IsoFLOP sweep (85 final points, no run logs) through `scaledb fit --sql --frontier`.

    No exponents are published with the table; the checks are internal: the budget written in each
    run's name and grouping the measured FLOPs give the same frontier, a + b is within 0.05 of 1
    (C ∝ N D for final points), every budget with >= 3 sizes is used, and the bootstrap interval
    brackets the estimate.
    """
    from scaling_db.store.external import import_table, parse_mapping

    path = reference_dir / "marin_isoflops" / "isoflop-dclm.csv"
    budget = "var.budget=CAST(regexp_extract(\"Name\", 'isoflop-([0-9.e+]+)-', 1) AS DOUBLE)"
    import_table(tmp_path, path, "marin_dclm", parse_mapping([
        "n_params=parameter_count", "tokens=throughput/total_tokens", "loss=eval/paloma/macro_loss",
        'flops="throughput/total_gflops" * 1e9', "name=Name", budget]))
    runner = CliRunner()
    by_name = runner.invoke(cli, ["fit", "--sql", MARIN_SQL, "--frontier", "isoflop", "--budget", "budget",
                                  "--bootstrap", "50", "--json", "-w", str(tmp_path)])
    assert by_name.exit_code == 0, by_name.output
    (rec,) = json.loads(by_name.output)
    a, b = rec["params"]["a (N_opt ∝ C^a, N = n_params)"], rec["params"]["b (D_opt ∝ C^b, D = tokens)"]
    lo, hi = rec["intervals"]["a (N_opt ∝ C^a, N = n_params)"]
    assert 0.3 < a < 0.6 and abs(a + b - 1) < 0.05 and lo < a < hi
    assert rec["law"] == "frontier_isoflop" and len(rec["run_ids"]) == 85 and rec["n_points"] == 85
    grouped = runner.invoke(cli, ["fit", "--sql", MARIN_SQL, "--frontier", "isoflop", "--bootstrap", "0",
                                  "--json", "--no-store", "-w", str(tmp_path)])
    assert grouped.exit_code == 0, grouped.output
    (g,) = json.loads(grouped.output)
    assert g["params"]["a (N_opt ∝ C^a, N = n_params)"] == pytest.approx(a, abs=0.02)
    stored = run_query(tmp_path, sql="SELECT count(*) AS n FROM fits WHERE law = 'frontier_isoflop'")
    assert stored["n"].iloc[0] == 1  # --no-store wrote nothing


def test_shipped_mup_vs_sp_analyses_and_the_embedding_lr_ablation(tmp_path: Path) -> None:
    """specs/mup_vs_sp.yaml and its ablation, on synthetic logs: every declared analysis is made."""
    from scaling_db.report.study import read_study, run_study

    repo = Path(__file__).resolve().parents[1] / "specs"
    ws = Workspace(tmp_path / "ws")
    add_synthetic_experiment(ws, tmp_path / "mup_vs_sp.yaml", (repo / "mup_vs_sp.yaml").read_text()
                             .replace("extends: ba_graph.yaml", f"extends: {repo / 'ba_graph.yaml'}"))
    ablation = tmp_path / "mup_vs_sp_embed_lr.yaml"
    add_synthetic_experiment(ws, ablation, (repo / "mup_vs_sp_embed_lr.yaml").read_text(), seed=1)
    base = run_study(ws, read_study(tmp_path / "mup_vs_sp.yaml"), bootstrap_n=20)
    assert not base.analysis.errors, base.analysis.errors
    assert {o.name for o in base.analysis.outcomes} == {
        "loss_vs_params[vars.variant=mup]", "loss_vs_params[vars.variant=sp]", "lr_optimum", "lr_transfer",
        "parameter_efficiency"}
    fit = next(o for o in base.analysis.outcomes if o.name == "loss_vs_params[vars.variant=sp]")
    assert fit.fit.n_points == 3 and "best run per d_model" in fit.notes()[0]  # one run per width
    study = read_study(ablation)
    assert study.trains and study.experiments == ("mup_vs_sp", "mup_vs_sp_embed_lr")
    done = run_study(ws, study, bootstrap_n=20)
    assert not done.analysis.errors, done.analysis.errors
    slopes = next(o for o in done.analysis.outcomes if o.name == "lr_transfer").table()
    assert [r["quantity"].split("=")[1] for r in slopes] == ["mup]", "sp]", "sp_emb_lr]"]
    assert all("only 3 widths" in r["flag"] for r in slopes)  # honest about the small sweep
    assert {f.name for f in done.figures if f.error} == set()


def test_shipped_isoflop_spec_declares_three_frontiers(tmp_path: Path) -> None:
    from scaling_db.report.comparisons import run_analysis
    from scaling_db.report.study import read_study

    repo = Path(__file__).resolve().parents[1] / "specs"
    ws = Workspace(tmp_path / "ws")
    add_synthetic_experiment(ws, tmp_path / "isoflop.yaml", (repo / "isoflop.yaml").read_text()
                             .replace("extends: ba_graph.yaml", f"extends: {repo / 'ba_graph.yaml'}"))
    study = read_study(tmp_path / "isoflop.yaml")
    done = run_analysis(ws, study.experiment, study.analysis, bootstrap_n=10, only=[f.label for f in study.analysis.frontiers])
    made = {o.name: o for o in done.outcomes}
    assert set(made) == {"frontier_isoflop", "frontier_parametric", "frontier_envelope"} and not done.errors
    for o in made.values():
        a, b = o.table()
        assert a["quantity"].startswith("a (N_opt ∝ C^a") and b["quantity"].startswith("b (D_opt ∝ C^b")
        assert 0 < a["estimate"] < 1 and 0 < b["estimate"] < 1
    # 3 budgets: the IsoFLOP frontier rests on 3 points and says so next to the number
    assert "only 3 compute-optimal points" in made["frontier_isoflop"].table()[0]["flag"]
    # the allocation figure redraws the stored frontiers and labels them with the table's numbers
    from scaling_db.report.analyses import fmt_interval
    from scaling_db.report.figures import FigureRequest, build_figure

    chart = build_figure(ws, FigureRequest(kind="optimal_allocation", experiment=study.experiment)).to_dict()
    labels = {r["_series"] for r in chart["data"]["values"]}
    for name, o in made.items():
        a = o.table()[0]
        interval = fmt_interval(a["lo"], a["hi"]) or "(no interval)"
        assert f"{name.removeprefix('frontier_')}: a = {a['estimate']:.2g} {interval}" in labels


def test_figures_from_the_database_for_a_journal(synth: Workspace, tmp_path: Path) -> None:
    from scaling_db.plot import save_chart

    width = "column"  # both widths of every chart kind render in test_plot
    for kind in sorted(set(BUILDERS) - {"coordcheck", "isoflop", "scaling_fit", "theory_curves", "fit_parameters"}):
        chart = build_figure(synth, FigureRequest(kind=kind, experiment="synth", width=width))
        assert save_chart(chart, tmp_path / f"{kind}.pdf").read_bytes()[:5] == b"%PDF-"
        assert save_chart(chart, tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
    curves = build_figure(synth, FigureRequest(kind="loss_curves", experiment="synth")).to_dict()
    text = json.dumps(curves)
    assert '"field": "n_params_nonembed"' in text and "entropy rate (exact): 1.5" in text
    lr = build_figure(synth, FigureRequest(kind="optimal_lr", experiment="synth")).to_dict()
    assert "hollow: best LR on the grid's edge (not bracketed)" in lr["title"]["subtitle"][1]  # sp, width 128
    assert "SP: slope -0.99 [" in json.dumps(lr, ensure_ascii=False)  # the transfer slope in the legend
    with pytest.raises(PlotError, match="unknown width"):
        build_figure(synth, FigureRequest(kind="lr_sweep", experiment="synth", width="poster"))


# SPEC's runs, one per width
SMALL_SPEC = (SPEC.split("sweep:")[0].replace("experiment: synth", "experiment: small")
              + "sweep:\n  axes:\n    model.d_model: [16, 32, 48, 64, 96, 128]\n")


def test_a_fit_names_the_runs_its_query_left_out_as_not_finished(tmp_path: Path) -> None:
    """A damaged status file (`unknown`) or a finished run whose log lost its final checkpoint
    (`damaged`) drops out of final_loss; the fit names them rather than fitting fewer points silently."""
    ws = Workspace(tmp_path / "ws")
    add_synthetic_experiment(ws, tmp_path / "small.yaml", SMALL_SPEC)
    by_width = {ws.load_manifest(r).model.d_model: r for r in ws.run_ids()}
    ws.status_path(by_width[48]).write_text('{"status": "finis')
    log = ws.log_path(by_width[96]).read_bytes()
    ws.log_path(by_width[96]).write_bytes(log[:log.rstrip(b"\n").rfind(b"\n") + 100])
    ingest_runs(ws)
    req = FitRequest(name="pl", law="power_law", x=["n_params_nonembed"], bootstrap=0, experiment="small")
    out = fit_request(ws, req)
    assert out.fit.n_points == 4
    assert out.left_out == (("small-d48", "unknown"), ("small-d96", "damaged"))
    assert "left out, not finished: small-d48 (unknown), small-d96 (damaged); `scaledb status` says why" in out.notes()
    assert fit_request(ws, FitRequest(**{**req.__dict__, "params": {"status": "any"}})).left_out == ()
    result = CliRunner().invoke(cli, ["fit", "--query", "final_loss", "-e", "small", "--law", "power_law", "--x",
                                      "n_params_nonembed", "--bootstrap", "0", "--no-store", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "left out, not finished: small-d48 (unknown), small-d96 (damaged)" in result.output
    # the report's fits (cached) say it too, also when the outcome comes from the cache
    from scaling_db.report.cache import cached_fit

    for _ in range(2):
        assert cached_fit(ws, req).left_out == (("small-d48", "unknown"), ("small-d96", "damaged"))


def test_a_fit_whose_bootstrap_lost_many_refits_says_so_beside_each_number() -> None:
    """Four runs: a quarter of the resamples hold only two distinct sizes, which cannot determine a
    saturating law; those refits fail, and the interval describes only the rest (as frontier rows say)."""
    import pandas as pd

    from scaling_db.report.analyses import fit_frame

    n = np.array([1e3, 1e4, 1e5, 1e6])
    data = pd.DataFrame({"run_id": [f"r{i}" for i in range(4)], "n_params": n, "loss": 2 + 50 * n ** -0.3})
    req = FitRequest(name="four", law="saturating_power_law", x=["n_params"], bootstrap=100)
    out = fit_frame(req, data, "SELECT ...")
    assert out.boot is not None and out.boot.n_failed > 10
    flag = f"{out.boot.n_failed} of 100 refits failed: interval conditional on the rest"
    assert all(flag in row["flag"] for row in out.table() if row["quantity"] in ("E", "A", "alpha"))


def test_a_query_with_no_rows_says_so_not_that_columns_are_missing() -> None:
    """Every run diverged: no experiment's rows came back, so the frame has no columns either."""
    import pandas as pd

    from scaling_db.report.analyses import fit_frame

    with pytest.raises(FitError, match=r"fit f: the query returned no rows\. Have the runs finished"):
        fit_frame(FitRequest(name="f", law="power_law", bootstrap=0), pd.DataFrame(), "SELECT ...")
