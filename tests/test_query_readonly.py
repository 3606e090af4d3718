"""Queries read; they never write (issue 11): every statement that writes files, loads extensions,
changes settings or writes tables is refused, and the database and workspace files are byte for
byte unchanged afterwards. Files beside the database are read only when asked for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import QueryError
from scaling_db.store.database import connect_sandboxed
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query

from store_fakes import finish_runs, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    ws, manifests = make_workspace(tmp_path_factory.mktemp("readonly") / "ws")
    finish_runs(ws, manifests, steps=range(1, 4))
    ingest_runs(ws)
    return ws


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(ws, sql: str, **kwargs) -> QueryError:
    before = checksums(ws.root)
    with pytest.raises(QueryError) as caught:
        run_query(ws, sql=sql, **kwargs)
    assert checksums(ws.root) == before, f"{sql!r} changed files"
    return caught.value


WRITING = [
    "COPY (SELECT 'x') TO '{log}'",
    "COPY runs TO '{ws}/runs.csv'",
    "EXPORT DATABASE '{ws}/export'",
    "COPY FROM DATABASE scaledb TO other",
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD json",
    "UPDATE EXTENSIONS",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET threads",
    "SET VARIABLE x = 1",
    "PRAGMA threads = 1",
    "PRAGMA enable_profiling",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "ATTACH '{ws}/other.duckdb' AS other",
    "DETACH scaledb",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE TABLE t AS SELECT 1",
    "CREATE MACRO m(x) AS x",
    "INSERT INTO runs SELECT * FROM runs",
    "DELETE FROM checkpoints",
    "BEGIN TRANSACTION",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{ws}/x.csv'",
    "SELECT 1; COPY (SELECT 'x') TO '{log}'",
    "-- name: sneaky\nCOPY (SELECT 'x') TO '{log}'",
]


@pytest.mark.parametrize("template", WRITING)
def test_writing_statements_are_refused_and_change_no_file(ws, template: str):
    log = ws.log_path(ws.run_ids()[0])
    error = refused(ws, template.format(log=log, ws=ws.root))
    assert "refused" in str(error) and "queries may not modify the database, write files" in str(error)


def test_refused_statements_are_refused_with_files_allowed_too(ws):
    log = ws.log_path(ws.run_ids()[0])
    refused(ws, f"COPY (SELECT 'x') TO '{log}'", allow_files=True)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM runs", "FROM runs SELECT count(*) AS n", "SHOW TABLES", "DESCRIBE runs",
    "PRAGMA table_info('runs')", "EXPLAIN SELECT * FROM runs", "VALUES (1)",
    "-- a comment first\nSELECT 1 AS one",
])
def test_reading_statements_run(ws, sql: str):
    before = checksums(ws.root)
    assert len(run_query(ws, sql=sql)) >= 1
    assert checksums(ws.root) == before


def test_files_beside_the_database_are_read_only_when_allowed(ws, tmp_path: Path):
    mine = tmp_path / "mine.csv"
    mine.write_text("d_model,label\n16,small\n")
    sql = f"SELECT r.d_model, m.label FROM runs AS r JOIN read_csv('{mine}') AS m USING (d_model)"
    error = refused(ws, sql)
    assert "not other files" in str(error) and "--allow-files" in str(error)
    assert run_query(ws, sql=sql, allow_files=True).label.tolist() == ["small"]


def test_the_connection_itself_cannot_write(ws):
    """Second line of defence: a statement that got past the check still cannot write or unlock."""
    con = connect_sandboxed(ws.db_path)
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT 'x') TO '{ws.root / 'x.csv'}'")
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM runs")
    finally:
        con.close()
    assert not (ws.root / "x.csv").exists()


def test_cli_refuses_and_allows_files(ws, tmp_path: Path):
    log = ws.log_path(ws.run_ids()[0])
    before = log.read_bytes()
    result = CliRunner().invoke(cli, ["query", "-w", str(ws.root), "--sql", f"COPY (SELECT 'x') TO '{log}'"])
    assert result.exit_code != 0 and result.output.startswith("Error: query (inline SQL): `COPY")
    assert log.read_bytes() == before
    mine = tmp_path / "mine.csv"
    mine.write_text("a\n7\n")
    result = CliRunner().invoke(cli, ["query", "-w", str(ws.root), "--allow-files", "--format", "csv",
                                      "--sql", f"SELECT a FROM read_csv('{mine}')"])
    assert result.exit_code == 0 and result.output == "a\n7\n"


def test_more_than_one_statement_is_refused_not_cut_to_the_last(ws):
    """DuckDB runs every statement and returns the last one's rows: `SELECT 1; SELECT 2` gave 2."""
    err = refused(ws, "SELECT 1 AS a; SELECT 2 AS a")
    assert "2 statements vs 1: a query is one statement" in str(err)
    assert run_query(ws, sql="SELECT 1 AS a;")["a"].tolist() == [1]  # a trailing semicolon is one statement


def test_query_takes_json_like_every_command(ws):
    runner = CliRunner()
    as_json = runner.invoke(cli, ["query", "-w", str(ws.root), "--json", "--sql", "SELECT 7 AS a"])
    as_format = runner.invoke(cli, ["query", "-w", str(ws.root), "--format", "json", "--sql", "SELECT 7 AS a"])
    assert as_json.exit_code == 0 and as_json.stdout == as_format.stdout and '"a"' in as_json.stdout
    both = runner.invoke(cli, ["query", "-w", str(ws.root), "--json", "--format", "csv", "--sql", "SELECT 7 AS a"])
    assert both.exit_code == 2 and "--json and --format csv ask for two formats" in both.output


def test_a_typo_in_a_law_is_a_usage_error_and_ctrl_c_exits_130(ws, monkeypatch):
    result = CliRunner().invoke(cli, ["fit", "--query", "final_loss", "--law", "power_lw", "-w", str(ws.root)])
    assert result.exit_code == 2 and "'power_lw' is not one of" in result.output and "'power_law'" in result.output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("scaling_db.store.query.run_query", interrupted)
    result = CliRunner().invoke(cli, ["query", "final_loss", "-w", str(ws.root)])
    assert result.exit_code == 130 and "Interrupted." in result.output and "Aborted" not in result.output
