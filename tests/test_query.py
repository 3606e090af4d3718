"""Named SQL queries: every file in queries/ parses, runs and returns its declared columns and the
expected rows on a small designed database; queries are read-only; errors name the query."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import QueryError
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import (
    BUILTIN_QUERY_DIR, list_queries, load_query, parse_query, placeholders, run_query,
)
from scaling_db.store.database import open_store, record_fit

from store_fakes import make_workspace, write_log, write_status

SPEC = """
experiment: qtest
data:
  kind: graph_walk
  graph: {kind: barabasi_albert, n: 50, m: 2, seed: 0}
model: {kind: transformer, n_layers: 1, d_model: 16, context: 8}
train:
  optimizer: {kind: adamw, lr: 1.0e-2}
  batch_size: 4
  tokens: 2000
  checkpoints: {kind: linear, count: 3}
  eval_tokens: 256
sweep:
  vars: [flop_budget]
  axes:
    model.d_model: [16, 32]
    train.optimizer.lr: [1.0e-3, 3.0e-3, 1.0e-2]
    flop_budget: [1.0e9, 1.0e10]
  seeds: [0, 1]
"""
STEPS = range(1, 6)
SHIPPED = {"final_loss", "loss_curves", "compute_frontier", "isoflop", "best_lr", "seed_spread", "runs_by_status"}


def final_loss_of(m) -> float:
    """Designed so every query has a known answer: lr 3e-3 is best, wider is better, seed 1 is worse."""
    budget_penalty = 0.05 if m.vars["flop_budget"] < 5e9 else 0.0
    return 2.0 + 10.0 / m.model.d_model + (math.log10(m.train.optimizer.lr) - math.log10(3e-3)) ** 2 \
        + 0.01 * m.train.seed + budget_penalty


def is_failed(m) -> bool:
    return m.model.d_model == 16 and m.train.optimizer.lr == 1e-2 and m.vars["flop_budget"] > 5e9 and m.train.seed == 1


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("query")
    spec = root / "qtest.yaml"
    spec.write_text(SPEC)
    ws, manifests = make_workspace(root / "ws", spec)
    for m in manifests:
        steps = range(1, 4) if is_failed(m) else STEPS
        for step in steps:
            write_log(ws, m.run_id, [step], mode="a", n_params=m.counts.n_params,
                      loss=final_loss_of(m) + 0.1 * (5 - step))
        write_status(ws, m.run_id, "failed" if is_failed(m) else "finished", step=max(steps),
                     started_at="2026-03-01T00:00:00+00:00", finished_at="2026-03-01T01:00:00+00:00")
    assert ingest_runs(ws).rows_loaded == 23 * 5 + 3
    with open_store(ws) as con:
        record_fit(con, {"experiment": "qtest", "name": "loss_vs_params", "law": "power_law",
                         "params": {"a": 1.0}, "n_points": 23, "query_name": "final_loss"})
    return ws, {m.run_id: m for m in manifests}


# -- the files ---------------------------------------------------------------------------------

def test_the_promised_queries_ship():
    assert SHIPPED <= {q.name for q in list_queries()}


@pytest.mark.parametrize("path", sorted(BUILTIN_QUERY_DIR.glob("*.sql")), ids=lambda p: p.stem)
def test_every_query_file_has_a_complete_header(path: Path):
    query = parse_query(path.read_text(), path)  # strict: header params == SQL placeholders
    assert query.name == path.stem
    assert query.purpose and query.columns
    assert {p.name for p in query.params} == set(placeholders(query.sql))
    for param in query.params:
        assert param.doc, f"{path.name}: parameter {param.name} has no description"


@pytest.mark.parametrize("name", sorted(q.name for q in list_queries()))
def test_every_query_runs_and_returns_its_declared_columns(db, name: str):
    ws, _ = db
    query = load_query(name)
    params = {"experiment": "qtest"} if query.param("experiment") else {}
    df = run_query(ws, name, params=params)
    assert list(df.columns) == list(query.columns)
    if name in SHIPPED | {"fits"}:  # the small database holds data for these (others' may need metrics)
        assert len(df) > 0


# -- the rows --------------------------------------------------------------------------------

def test_final_loss(db):
    ws, runs = db
    df = run_query(ws, "final_loss", params={"experiment": "qtest"})
    finished = {r: m for r, m in runs.items() if not is_failed(m)}
    assert sorted(df.run_id) == sorted(finished) and (df.step == 5).all()
    for row in df.itertuples():
        m = runs[row.run_id]
        assert row.loss == pytest.approx(final_loss_of(m))
        assert row.n_params == m.counts.n_params and row.tokens == 5 * 3200
        assert row.flops == pytest.approx(6.6 * m.counts.n_params * row.tokens)
    six = run_query(ws, "final_loss", params={"experiment": "qtest", "convention": "6n", "loss": "train"})
    assert (six.flops == 6.0 * six.n_params * six.tokens).all()
    assert (six.loss == six.train_loss).all()
    every = run_query(ws, "final_loss", params={"experiment": "qtest", "status": "any"})
    assert len(every) == 24 and every.loc[every.status == "failed", "step"].tolist() == [3]


def test_loss_curves(db):
    ws, _ = db
    df = run_query(ws, "loss_curves", params={"experiment": "qtest"})
    assert len(df) == 23 * 5 + 3
    for _, curve in df.groupby("run_id"):
        assert curve.step.is_monotonic_increasing and curve.loss.is_monotonic_decreasing
    assert (df.lr_at_step == 3e-3).all()


@pytest.mark.parametrize("loss", ["eval", "train"])
def test_loss_curves_carry_each_runs_final_loss_and_the_uniform_guess(db, loss: str):
    """Every row of a run carries the loss `final_loss` gives that run (its last checkpoint's), so the
    uniform-guess rule can judge whole runs from their curves; failed runs' last checkpoints too."""
    ws, _ = db
    params = {"experiment": "qtest", "loss": loss}
    curves = run_query(ws, "loss_curves", params=params)
    final = run_query(ws, "final_loss", params={**params, "status": "any"}).set_index("run_id")
    assert curves.groupby("run_id")["final_loss"].nunique().eq(1).all()
    per_run = curves.groupby("run_id")[["final_loss", "uniform_loss"]].first()
    pd.testing.assert_series_equal(per_run["final_loss"].sort_index(), final["loss"].sort_index(), check_names=False)
    assert per_run["uniform_loss"].tolist() == pytest.approx([math.log(50)] * 24)


def test_best_lr(db):
    ws, _ = db
    df = run_query(ws, "best_lr", params={"experiment": "qtest"})
    assert df.d_model.tolist() == [16, 32]
    assert (df.best_lr == 3e-3).all() and (df.n_lrs == 3).all() and not df.at_edge.any()
    assert df.n_seeds.tolist() == [4, 4]  # 2 seeds x 2 budgets per learning rate
    assert df.best_loss.iloc[1] == pytest.approx(2.0 + 10 / 32 + 0.005 + 0.025)


def test_seed_spread(db):
    ws, runs = db
    df = run_query(ws, "seed_spread", params={"experiment": "qtest"})
    assert len(df) == 12
    assert sorted(df.n_seeds.tolist()) == [1] + [2] * 11
    pair = df[(df.d_model == 32) & (df.lr == 1e-3)]
    assert len(pair) == 2
    for row in pair.itertuples():
        assert row.std_loss == pytest.approx(0.01 / math.sqrt(2))
        assert row.max_loss - row.min_loss == pytest.approx(0.01)
        assert list(row.seeds) == [0, 1]


def test_isoflop_uses_the_budget_variable(db):
    ws, runs = db
    df = run_query(ws, "isoflop", params={"experiment": "qtest"})
    assert sorted(df.budget.unique()) == [1e9, 1e10]
    assert df.groupby("budget").size().to_dict() == {1e9: 12, 1e10: 11}
    best = df[df.is_min]
    assert len(best) == 2 and (best.d_model == 32).all() and (best.lr == 3e-3).all() and (best.seed == 0).all()
    assert (best.rank_in_budget == 1).all()


def test_isoflop_groups_by_compute_without_the_variable(tmp_path: Path):
    """Runs within `tolerance` of each other's compute form one budget, named by their geometric mean."""
    table = tmp_path / "iso.csv"
    rows = [(1e7, 1.00e18, 3.0), (2e7, 1.01e18, 2.9), (4e7, 0.99e18, 3.1),
            (2e7, 1.0e19, 2.6), (4e7, 1.02e19, 2.5), (8e7, 0.98e19, 2.55)]
    table.write_text("n,c,loss\n" + "".join(f"{n},{c},{loss}\n" for n, c, loss in rows))
    result = CliRunner().invoke(cli, ["import", str(table), "-e", "iso", "-w", str(tmp_path / "ws"),
                                      "n_params=n", "tokens=round(c / (6 * n))", "flops=c", "loss=loss"])
    assert result.exit_code == 0, result.output
    df = run_query(tmp_path / "ws", "isoflop", params={"experiment": "iso"})
    assert df.n_in_budget.tolist() == [3] * 6
    assert df.budget.iloc[0] == pytest.approx(1e18, rel=1e-3) and df.budget.iloc[-1] == pytest.approx(1e19, rel=1e-2)
    assert df[df.is_min].n_params.tolist() == [2e7, 4e7]


def test_compute_frontier(db):
    ws, _ = db
    df = run_query(ws, "compute_frontier", params={"experiment": "qtest", "bins_per_decade": "5"})
    curves = run_query(ws, "loss_curves", params={"experiment": "qtest"})
    width = 10 ** (1 / 5)
    assert ((df.bin_flops <= df.flops * (1 + 1e-12)) & (df.flops < df.bin_flops * width)).all()
    for row in df.itertuples():  # each bin's point is the lowest loss among checkpoints in the bin
        inside = curves[(curves.flops >= row.bin_flops * (1 - 1e-12)) & (curves.flops < row.bin_flops * width)]
        assert row.loss == pytest.approx(inside.loss.min())
    envelope = df[df.on_envelope]
    assert envelope.loss.is_monotonic_decreasing and envelope.loss.iloc[-1] == pytest.approx(curves.loss.min())


def test_runs_by_status(db):
    ws, _ = db
    df = run_query(ws, "runs_by_status")
    assert df[["experiment", "status", "n_runs", "n_checkpoints"]].values.tolist() == [
        ["qtest", "failed", 1, 3], ["qtest", "finished", 23, 115]]
    assert str(df.first_started_at.iloc[0]) == "2026-03-01 00:00:00"


def test_fits_query(db):
    ws, _ = db
    df = run_query(ws, "fits", params={"experiment": "qtest"})
    assert df.law.tolist() == ["power_law"] and json.loads(df.params.iloc[0]) == {"a": 1.0}


# -- read-only and errors --------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "DELETE FROM checkpoints",
    "UPDATE runs SET status = 'failed'",
    "INSERT INTO fits (fit_id, law, params, created_at) VALUES ('x', 'l', '{}', now())",
    "DROP TABLE runs",
    "CREATE TABLE sneaky AS SELECT 1",
    "ALTER TABLE runs ADD COLUMN x INT",
])
def test_queries_cannot_modify_the_database(db, sql: str):
    ws, _ = db
    with pytest.raises(QueryError, match="may not modify the database"):
        run_query(ws, sql=sql)
    assert run_query(ws, sql="SELECT count(*) AS n FROM checkpoints").n.tolist() == [118]
    assert "x" not in run_query(ws, sql="SELECT * FROM runs LIMIT 1").columns


def test_query_errors_name_the_query_and_the_problem(db):
    ws, _ = db
    with pytest.raises(QueryError, match=r"query final_los: no such query \(did you mean `final_loss`\?"):
        run_query(ws, "final_los", params={"experiment": "qtest"})
    with pytest.raises(QueryError, match=r"query final_loss: missing parameter experiment"):
        run_query(ws, "final_loss")
    with pytest.raises(QueryError, match=r"unknown parameter 'experimnt' \(did you mean `experiment`\?"):
        run_query(ws, "final_loss", params={"experimnt": "qtest"})
    with pytest.raises(QueryError, match=r"parameter convention is '6N' vs one of exact, 6n, 6n_nonembed\. "
                                         r"Did you mean `6n`\?"):
        run_query(ws, "final_loss", params={"experiment": "qtest", "convention": "6N"})
    with pytest.raises(QueryError, match=r"no experiment 'qtst' in the database \(did you mean `qtest`\?"):
        run_query(ws, "final_loss", params={"experiment": "qtst"})
    with pytest.raises(QueryError, match=r"parameter bins_per_decade must be int \(got 'many'"):
        run_query(ws, "compute_frontier", params={"experiment": "qtest", "bins_per_decade": "many"})
    with pytest.raises(QueryError, match=r"bins_per_decade must be > 0 \(got 0\)"):  # was a NaN bin
        run_query(ws, "compute_frontier", params={"experiment": "qtest", "bins_per_decade": "0"})
    with pytest.raises(QueryError, match=r"query \(inline SQL\): Catalog Error: Table with name nope"):
        run_query(ws, sql="SELECT * FROM nope")
    # `query` is a local variable inside run_query: DuckDB must not scan it in place of a table.
    with pytest.raises(QueryError, match=r"Table with name query does not exist"):
        run_query(ws, sql="SELECT * FROM query")
    with pytest.raises(QueryError, match=r"missing parameter width"):
        run_query(ws, sql="SELECT * FROM runs WHERE d_model = $width")
    with pytest.raises(QueryError, match="exactly one"):
        run_query(ws)


def test_inline_sql_and_query_files_with_parameters(db, tmp_path: Path):
    ws, _ = db
    df = run_query(ws, sql="SELECT count(*) AS n FROM runs WHERE d_model = $width", params={"width": 32})
    assert df.n.tolist() == [12]
    path = tmp_path / "wide.sql"
    path.write_text("-- name: wide\n-- purpose: wide runs\n-- params: width = 32: minimum width\n"
                    "-- columns: n\nSELECT count(*) AS n FROM runs WHERE d_model >= $width\n")
    assert run_query(ws, path).n.tolist() == [12]
    assert run_query(ws, str(path), params={"width": "16"}).n.tolist() == [24]


def test_header_must_match_the_sql(tmp_path: Path):
    path = tmp_path / "broken.sql"
    path.write_text("-- name: broken\n-- params: a (required): x\nSELECT $b\n")
    with pytest.raises(QueryError, match=r"uses \$b without declaring them .* declares a but never uses them"):
        load_query(path)


def test_workspace_and_env_query_directories_come_first(db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws, _ = db
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "final_loss.sql").write_text("-- name: final_loss\n-- purpose: mine\n-- columns: n\nSELECT 7 AS n\n")
    monkeypatch.setenv("SCALEDB_QUERY_PATH", str(extra))
    assert run_query(ws, "final_loss").n.tolist() == [7]
    assert {q.name: q.purpose for q in list_queries(ws)}["final_loss"] == "mine"


# -- CLI -----------------------------------------------------------------------------------------

def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_query_formats(db, tmp_path: Path):
    ws, _ = db
    w = ["--workspace", str(ws.root)]
    table = invoke("query", "best_lr", "experiment=qtest", *w)
    assert table.exit_code == 0 and "0.003" in table.output
    csv = invoke("query", "final_loss", "--param", "experiment=qtest", "--format", "csv", *w)
    assert csv.exit_code == 0 and csv.output.splitlines()[0].startswith("run_id,experiment,name")
    assert len(csv.output.splitlines()) == 24
    js = invoke("query", "--sql", "SELECT d_model, count(*) AS n FROM runs GROUP BY 1 ORDER BY 1", "-f", "json", *w)
    assert json.loads(js.output) == [{"d_model": 16, "n": 12}, {"d_model": 32, "n": 12}]
    out = tmp_path / "curves.parquet"
    pq = invoke("query", "loss_curves", "experiment=qtest", "-f", "parquet", "--out", str(out), *w)
    assert pq.exit_code == 0 and len(pd.read_parquet(out)) == 118
    wide = invoke("query", "final_loss", "experiment=qtest", *w)
    assert wide.exit_code == 0 and "run_id" in wide.output


def test_cli_query_errors_are_one_line(db):
    ws, _ = db
    result = CliRunner().invoke(cli, ["query", "final_loss", "--workspace", str(ws.root)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: query final_loss: missing parameter experiment")
    result = CliRunner().invoke(cli, ["query", "--sql", "DELETE FROM runs", "--workspace", str(ws.root)])
    assert result.exit_code == 1 and "may not modify the database" in result.output
    result = CliRunner().invoke(cli, ["query", "final_loss", "experiment=qtest", "-f", "parquet",
                                      "--workspace", str(ws.root)])
    assert result.exit_code == 2 and "--out" in result.output


def test_cli_queries_lists_names_purposes_and_params():
    result = invoke("queries", "--json")
    listed = {q["name"]: q for q in json.loads(result.output)}
    assert SHIPPED <= set(listed)
    assert listed["final_loss"]["params"][0] == {"name": "experiment", "required": True, "default": None,
                                                 "choices": [], "doc": "the experiment's name"}
    text = invoke("queries")
    assert "compute_frontier" in text.output


def test_cli_ingest(tmp_path: Path):
    ws, manifests = make_workspace(tmp_path / "ws")
    for m in manifests:
        write_log(ws, m.run_id, range(1, 4))
    with open(ws.log_path(manifests[0].run_id), "a") as fh:
        fh.write('{"run_id": "x"')
    result = CliRunner().invoke(cli, ["ingest", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "5 runs loaded, 15 checkpoint rows" in result.output
    assert f"{ws.log_path(manifests[0].run_id)}:4: last line has no newline" in result.output
    again = CliRunner().invoke(cli, ["ingest", "--workspace", str(ws.root), "--json"])
    report = json.loads(again.output)[0]
    assert report["runs_unchanged"] == 5 and report["rows_loaded"] == 0
    one = CliRunner().invoke(cli, ["ingest", str(ws.run_dir(manifests[1].run_id)), "--full", "--json"])
    assert json.loads(one.output)[0]["rows_loaded"] == 3
    bad = CliRunner().invoke(cli, ["ingest", str(tmp_path)])
    assert bad.exit_code == 1 and "neither a workspace" in bad.output
