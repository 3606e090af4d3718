"""Spec revisions (issue 11): a recompiled spec supersedes the runs it no longer produces. They stay
in the database, but the named queries, the spec's fits and figures leave them out unless asked
(`revision = 'all'` or a revision hash); status, the plan and the report say how many there are."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import QueryError
from scaling_db.report.analyses import FitRequest, fit_request
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.report.html import write_report
from scaling_db.spec.compiler import compile_spec
from scaling_db.store.database import open_store
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import list_queries, run_query
from scaling_db.workspace import Workspace

from store_fakes import finish_runs

SPEC = """
experiment: rev
data:
  kind: graph_walk
  graph: {{kind: barabasi_albert, n: 50, m: 2, seed: 0}}
model: {{kind: transformer, n_layers: 1, d_model: 16, context: 8}}
train:
  optimizer: {{kind: adamw, lr: 1.0e-2}}
  batch_size: 4
  tokens: {tokens}
  checkpoints: {{kind: linear, count: 3}}
  eval_tokens: 256
sweep:
  axes:
    model.d_model: [16, 32, 64]
"""


def _walk_data(spec: Any) -> Iterator[dict[str, Any]]:
    """Every inline `data: {values: [...]}` of a Vega-Lite spec."""
    if isinstance(spec, dict):
        if isinstance(spec.get("data"), dict) and "values" in spec["data"]:
            yield spec["data"]
        for v in spec.values():
            yield from _walk_data(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _walk_data(v)


def compile_and_finish(ws: Workspace, spec: Path, tokens: int) -> tuple[str, set[str]]:
    """Compile the spec with `train.tokens: tokens`, finish its runs (fake logs), ingest; (revision, run ids)."""
    spec.write_text(SPEC.format(tokens=tokens))
    compiled = compile_spec(spec)
    ws.write_compiled(compiled)
    finish_runs(ws, compiled.runs, steps=range(1, 4))
    ingest_runs(ws)
    return compiled.spec_hash, {m.run_id for m in compiled.runs}


@pytest.fixture(scope="module")
def revised(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("revisions")
    ws = Workspace(root / "ws")
    old = compile_and_finish(ws, root / "rev.yaml", 2000)
    new = compile_and_finish(ws, root / "rev.yaml", 4000)
    return ws, root / "rev.yaml", old, new


def test_experiment_json_records_every_revision(revised):
    ws, _, (old_rev, old_ids), (new_rev, new_ids) = revised
    info = ws.experiment_info("rev")
    assert info["revision"] == new_rev and set(info["run_ids"]) == new_ids
    assert [(r["revision"], set(r["run_ids"])) for r in info["revisions"]] == [(old_rev, old_ids), (new_rev, new_ids)]


def test_final_loss_sees_the_current_revision_unless_asked(revised):
    ws, _, (old_rev, old_ids), (_, new_ids) = revised
    assert set(run_query(ws, "final_loss", params={"experiment": "rev"}).run_id) == new_ids
    assert set(run_query(ws, "final_loss", params={"experiment": "rev", "revision": "all"}).run_id) == old_ids | new_ids
    assert set(run_query(ws, "final_loss", params={"experiment": "rev", "revision": old_rev}).run_id) == old_ids
    with pytest.raises(QueryError, match=r"no revision 'nope' of experiment 'rev' \(got 'nope' vs current, all, "):
        run_query(ws, "final_loss", params={"experiment": "rev", "revision": "nope"})


def test_superseded_runs_stay_in_the_database(revised):
    ws, _, (_, old_ids), _ = revised
    superseded = run_query(ws, sql="SELECT run_id FROM superseded_runs WHERE experiment = 'rev'")
    assert set(superseded.run_id) == old_ids
    assert len(run_query(ws, sql="SELECT * FROM runs WHERE experiment = 'rev'")) == 2 * len(old_ids)


@pytest.mark.parametrize("query", [q.name for q in list_queries() if q.param("revision") is not None])
def test_every_shipped_query_with_runs_respects_the_revision(revised, query: str):
    ws, _, (_, old_ids), (_, new_ids) = revised
    takes = {p.name for p in next(q for q in list_queries() if q.name == query).params}
    params = {k: v for k, v in {"experiment": "rev", "status": "any"}.items() if k in takes}
    current = run_query(ws, query, params=params)
    everything = run_query(ws, query, params={**params, "revision": "all"})
    if "run_id" in current:
        assert set(current.run_id) <= new_ids
        assert set(everything.run_id) - new_ids <= old_ids
    if "tokens_budget" in current:  # best_lr, seed_spread: one row per configuration
        assert current.tokens_budget.nunique() == 1 and everything.tokens_budget.nunique() == 2
    if "n_runs" in current:  # runs_by_status counts
        assert current.n_runs.sum() == len(new_ids) and everything.n_runs.sum() == len(old_ids | new_ids)


def test_the_shipped_queries_that_take_an_experiment_take_a_revision():
    for query in list_queries():
        if query.param("experiment") is not None and query.name != "fits":  # fits: stored results, no runs
            assert query.param("revision") is not None, query.name


def test_the_specs_fit_and_figures_see_only_the_current_runs(revised):
    ws, _, _, (_, new_ids) = revised
    outcome = fit_request(ws, FitRequest(name="loss_vs_params", law="power_law", bootstrap=0, experiment="rev"))
    assert set(outcome.data.run_id) == new_ids
    chart = build_figure(ws, FigureRequest(kind="loss_curves", experiment="rev")).to_dict()
    plotted = {row["run_id"] for data in _walk_data(chart) for row in data["values"] if "run_id" in row}
    assert plotted == new_ids


def test_status_plan_and_report_say_how_many_runs_are_superseded(revised, tmp_path: Path):
    ws, spec, (_, old_ids), _ = revised
    result = CliRunner().invoke(cli, ["status", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert f"rev: {len(old_ids)} runs superseded: produced by an earlier revision" in result.output
    rows = json.loads(CliRunner().invoke(cli, ["status", "-w", str(ws.root), "--json"]).output)
    assert {r["run_id"] for r in rows if r["superseded"]} == old_ids
    # the table marks them too, listed after the current runs (sweep order, then earlier revisions)
    marked = [line for line in result.output.splitlines() if "(superseded)" in line]
    assert len(marked) == len(old_ids) and all(any(r in line for r in old_ids) for line in marked)
    order = [r["run_id"] for r in rows]
    assert order == ws.experiment_info("rev")["run_ids"] + [r for r in order if r in old_ids]
    result = CliRunner().invoke(cli, ["compile", "--dry-run", "-w", str(ws.root), str(spec)])
    assert f"superseded      {len(old_ids)} runs superseded" in result.output
    path = write_report(ws, "rev", "", str(spec), [], [], run_query(ws, "final_loss", params={"experiment": "rev"}),
                        n_superseded=len(old_ids))
    assert f"{len(old_ids)} runs superseded: produced by an earlier revision" in path.read_text()


def test_going_back_to_a_revision_makes_its_runs_current_without_new_runs(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    _, old_ids = compile_and_finish(ws, tmp_path / "rev.yaml", 2000)
    _, new_ids = compile_and_finish(ws, tmp_path / "rev.yaml", 4000)
    (tmp_path / "rev.yaml").write_text(SPEC.format(tokens=2000))
    ws.write_compiled(compile_spec(tmp_path / "rev.yaml"))
    report = ingest_runs(ws, [sorted(old_ids)[0]])  # nothing to load: the experiment row still updates
    assert report.runs_loaded == 0
    assert set(run_query(ws, "final_loss", params={"experiment": "rev"}).run_id) == old_ids
    assert len(ws.experiment_info("rev")["revisions"]) == 3


def test_a_workspace_compiled_before_revisions_reads_as_one_revision(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    revision, ids = compile_and_finish(ws, tmp_path / "rev.yaml", 2000)
    path = ws.experiment_dir("rev") / "experiment.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in info.items() if k not in ("revision", "revisions")}))
    ingest_runs(ws, full=True)
    with open_store(ws, read_only=True) as con:
        assert con.execute("SELECT revision FROM experiments").fetchall() == [(revision,)]
        assert con.execute("SELECT count(*) FROM superseded_runs").fetchall() == [(0,)]
    assert set(run_query(ws, "final_loss", params={"experiment": "rev"}).run_id) == ids
    _, new_ids = compile_and_finish(ws, tmp_path / "rev.yaml", 4000)  # history continues from the old file
    assert set(run_query(ws, "final_loss", params={"experiment": "rev"}).run_id) == new_ids
    assert [r["revision"] for r in ws.experiment_info("rev")["revisions"]][0] == revision


NARROWED = SPEC.replace("model.d_model: [16, 32, 64]", "model.d_model: [32, 64]")


@pytest.mark.parametrize("command", [["compile"], ["run", "-j", "1"]])
def test_a_compile_that_supersedes_runs_takes_them_out_of_queries_at_once(tmp_path: Path, command: list[str]):
    """Narrowing the sweep of a finished experiment trains nothing and loads nothing; the runs it
    drops must still leave final_loss (and so every fit) right away, not at the next ingest."""
    ws = Workspace(tmp_path / "ws")
    _, ids = compile_and_finish(ws, tmp_path / "rev.yaml", 2000)
    (tmp_path / "rev.yaml").write_text(NARROWED.format(tokens=2000))
    kept = {m.run_id for m in compile_spec(tmp_path / "rev.yaml").runs}
    assert kept < ids  # the same runs, one fewer: nothing new to train
    result = CliRunner().invoke(cli, [*command, str(tmp_path / "rev.yaml"), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert set(run_query(ws, "final_loss", params={"experiment": "rev"}).run_id) == kept


def _hold_until(path: str, ready: Any, release: Any) -> None:
    con = duckdb.connect(path)
    ready.set()
    release.wait(120)
    con.close()


def test_a_compile_the_database_cannot_hear_of_warns_what_stays_stale(tmp_path: Path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    compile_and_finish(ws, tmp_path / "rev.yaml", 2000)
    (tmp_path / "rev.yaml").write_text(NARROWED.format(tokens=2000))
    monkeypatch.setenv("SCALEDB_LOCK_TIMEOUT_S", "0.2")
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_until, args=(str(ws.db_path), ready, release))  # another writer
    holder.start()
    try:
        assert ready.wait(60)
        result = CliRunner().invoke(cli, ["compile", str(tmp_path / "rev.yaml"), "-w", str(ws.root)])
    finally:
        release.set()
        holder.join(60)
    assert result.exit_code == 0, result.output  # the manifests are written: the compile did its job
    assert "warning: the database does not know this compile's revision yet" in result.stderr
    assert "until `scaledb ingest` succeeds, fits and queries still use the runs it supersedes" in result.stderr
