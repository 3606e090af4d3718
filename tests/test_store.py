"""The result database itself: schema, migrations, locking, stored fits, plain-DuckDB readability."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import duckdb
import pytest

from scaling_db.store import database as store
from scaling_db.errors import StoreError
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.database import Migration, open_store, record_fit, schema_version

from store_fakes import finish_runs, make_workspace

# The columns the issue promises users can rely on in their own SQL.
PROMISED = {
    "experiments": {"experiment", "spec_path", "spec_hash", "created_at", "description", "source"},
    "runs": {
        "run_id", "experiment", "name", "status", "n_params", "n_params_nonembed", "n_params_embed", "n_layers",
        "d_model", "n_heads", "context", "vocab_size", "parameterization", "optimizer", "lr", "batch_size", "seed",
        "tokens_budget", "steps", "data_source", "entropy_rate", "manifest", "vars", "git_sha", "created_at",
        "started_at", "finished_at", "error", "diverged_at_step", "config_id",
    },
    "checkpoints": {"run_id", "step", "tokens", "flops_6n_nonembed", "flops_6n", "flops_exact", "train_loss",
                    "eval_loss", "lr", "wall_time_s", "tokens_per_s"},
    "metrics": {"run_id", "step", "name", "value"},
    "fits": {"fit_id", "experiment", "name", "law", "params", "intervals", "settings", "query_name", "query_sql",
             "run_ids", "n_points", "objective", "scaledb_version", "created_at"},
}


def test_schema_has_the_promised_tables_columns_and_comments(tmp_path: Path):
    with open_store(tmp_path) as con:
        for table, columns in PROMISED.items():
            assert columns <= set(store.table_columns(con, table)), table
        comments = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
        assert all(comments[t] for t in PROMISED)
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {"final_checkpoints", "run_summary"} <= views
        # Since schema 3 the loader keeps checkpoints and metrics unique, not an index
        # (tests/test_store_ingest.py: re-ingests, resumes, killed loads never double a row).
        keys = con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY' AND table_name IN ('checkpoints', 'metrics', 'runs')"
        ).fetchall()
        assert keys == [("runs", ["run_id"])]
        assert schema_version(con) == store.latest_version()


def test_migrations_apply_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shipped = [m.version for m in store.MIGRATIONS]
    assert shipped == list(range(1, len(shipped) + 1))
    with open_store(tmp_path):
        pass
    with open_store(tmp_path) as con:  # opening again applies nothing
        assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == shipped
    n = len(shipped) + 1
    extra = Migration(n, "runs.note", ("ALTER TABLE runs ADD COLUMN note VARCHAR",))
    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, extra))
    with open_store(tmp_path) as con:
        assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == [*shipped, n]
        assert "note" in store.table_columns(con, "runs")
    with open_store(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM schema_version").fetchall() == [(n,)]


def test_a_version_2_database_keeps_its_checkpoints_and_loses_their_keys(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """Migration 3 rebuilds checkpoints and metrics without primary keys: rows, comments and the
    views over them stay."""
    with monkeypatch.context() as patched:
        patched.setattr(store, "MIGRATIONS", store.MIGRATIONS[:2])
        with open_store(tmp_path) as con:
            con.execute("INSERT INTO checkpoints (run_id, step, eval_loss) VALUES ('r', 1, 3.0), ('r', 2, 2.5)")
            con.execute("INSERT INTO metrics VALUES ('r', 2, 'act_mean_abs.embed', 0.5)")
    with open_store(tmp_path) as con:
        assert schema_version(con) == 3
        assert con.execute("SELECT step, eval_loss FROM final_checkpoints").fetchall() == [(2, 2.5)]
        assert con.execute("SELECT * FROM metrics").fetchall() == [("r", 2, "act_mean_abs.embed", 0.5)]
        assert con.execute("SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                           "AND table_name IN ('checkpoints', 'metrics')").fetchall() == [(0,)]
        comments = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
        assert comments["checkpoints"].startswith("One row per evaluated checkpoint")


def test_a_version_1_database_is_upgraded_with_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as patched:
        patched.setattr(store, "MIGRATIONS", store.MIGRATIONS[:1])
        with open_store(tmp_path) as con:
            con.execute("INSERT INTO experiments (experiment, source, created_at, updated_at) "
                        "VALUES ('old', 'spec', now()::TIMESTAMP, now()::TIMESTAMP)")
    with open_store(tmp_path) as con:
        assert schema_version(con) == store.latest_version()
        assert con.execute("SELECT experiment, revision FROM experiments").fetchall() == [("old", None)]


def test_read_only_open_of_an_older_schema_asks_for_an_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with open_store(tmp_path):
        pass
    n = store.latest_version()
    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, Migration(n + 1, "x", ("SELECT 1",))))
    with pytest.raises(StoreError, match=rf"schema is version {n} vs {n + 1} expected\. Run `scaledb ingest`"):
        with open_store(tmp_path, read_only=True):
            pass


def test_a_newer_schema_is_refused(tmp_path: Path):
    with open_store(tmp_path) as con:
        con.execute("INSERT INTO schema_version VALUES (99, 'future', now()::TIMESTAMP, '9.9')")
    with pytest.raises(StoreError, match="newer scaledb"):
        with open_store(tmp_path):
            pass
    with pytest.raises(StoreError, match="newer scaledb"):
        with open_store(tmp_path, read_only=True):
            pass


def test_reading_a_missing_database_says_how_to_create_it(tmp_path: Path):
    with pytest.raises(StoreError, match=r"no result database yet\. Run `scaledb ingest`"):
        with open_store(tmp_path, read_only=True):
            pass
    assert not (tmp_path / "scaledb.duckdb").exists()


def _hold_lock(path: str, seconds: float, ready) -> None:
    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()


def test_second_writer_waits_then_gets_a_clear_error(tmp_path: Path):
    with open_store(tmp_path):
        pass
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "scaledb.duckdb"), 2.5, ready))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            with open_store(tmp_path, lock_timeout_s=0.3):
                pass
        assert time.monotonic() - started >= 0.3
        message = str(err.value)
        assert str(tmp_path / "scaledb.duckdb") in message and "another scaledb process" in message
        assert f"PID {holder.pid}" in message
        with pytest.raises(StoreError, match="could not read"):
            with open_store(tmp_path, read_only=True, lock_timeout_s=0.2):
                pass
        # With a longer timeout the writer simply waits for the holder to finish.
        with open_store(tmp_path, lock_timeout_s=30) as con:
            assert con.execute("SELECT 1").fetchall() == [(1,)]
        assert time.monotonic() - started > 1.0
    finally:
        holder.join(30)


def test_lock_timeout_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(store.LOCK_TIMEOUT_ENV, "not-a-number")
    with pytest.raises(StoreError, match="SCALEDB_LOCK_TIMEOUT_S: not a number"):
        with open_store(tmp_path):
            pass


def test_one_process_cannot_mix_read_only_and_writer_connections(tmp_path: Path):
    with open_store(tmp_path):
        with pytest.raises(StoreError, match="already has the database open"):
            with open_store(tmp_path, read_only=True):
                pass


def test_record_fit_is_idempotent_and_keeps_unknown_keys(tmp_path: Path):
    record = {
        "experiment": "ba_graph", "name": "loss_vs_params", "law": "saturating_power_law",
        "formula": "E + A * N^-alpha", "params": {"E": 1.7, "A": 40.0, "alpha": 0.5},
        "intervals": {"E": [1.6, 1.8], "alpha": [0.4, float("inf")]},
        "columns": {"n": "n_params"}, "y": "loss", "n_points": 5,
        "stats": {"r2": 0.99, "objective": 0.0123}, "settings": {"loss": "huber", "delta": 1e-3},
        "used": ["a", "b"], "excluded": [["c", "diverged"]], "query_name": "final_loss",
        "query_sql": "SELECT 1", "bootstrap": {"n": 100},
    }
    with open_store(tmp_path) as con:
        fit_id = record_fit(con, record)
        assert record_fit(con, dict(record)) == fit_id
        assert record_fit(con, dict(record, params={"E": 1.71, "A": 40.0, "alpha": 0.5})) != fit_id
        row = con.execute(
            "SELECT law, params->>'$.alpha', intervals->'$.alpha', run_ids, objective, extra, scaledb_version "
            "FROM fits WHERE fit_id = ?", [fit_id]).fetchall()[0]
        assert con.execute("SELECT count(*) FROM fits").fetchall() == [(2,)]
    law, alpha, interval, run_ids, objective, extra, version = row
    assert law == "saturating_power_law" and float(alpha) == 0.5
    assert json.loads(interval) == [0.4, None]  # inf is not JSON: stored as null
    assert json.loads(run_ids) == ["a", "b"] and math.isclose(objective, 0.0123)
    assert json.loads(extra) == {"bootstrap": {"n": 100}} and version


def test_record_fit_keeps_run_ids_over_the_used_alias_in_any_order(tmp_path: Path):
    base = {"law": "power_law", "params": {"A": 1.0, "alpha": 0.3}}
    with open_store(tmp_path) as con:
        for record in ({**base, "used": ["a"], "run_ids": ["a", "b"]}, {**base, "run_ids": ["a", "b"], "used": ["a"]}):
            fit_id = record_fit(con, record)
            run_ids, extra = con.execute("SELECT run_ids, extra FROM fits WHERE fit_id = ?", [fit_id]).fetchall()[0]
            assert json.loads(run_ids) == ["a", "b"] and json.loads(extra) == {"used": ["a"]}


def test_record_fit_needs_a_law_and_params(tmp_path: Path):
    with open_store(tmp_path) as con:
        with pytest.raises(StoreError, match="no `law`"):
            record_fit(con, {"params": {}})
        with pytest.raises(StoreError, match="has no `params`"):
            record_fit(con, {"law": "power_law"})


def test_database_makes_sense_to_plain_duckdb(tmp_path: Path):
    ws, manifests = make_workspace(tmp_path / "ws")
    finish_runs(ws, manifests)
    ingest_runs(ws)
    con = duckdb.connect(str(ws.db_path), read_only=True)  # no scaledb code on this path
    try:
        rows = con.execute(
            "SELECT r.name, r.d_model, (r.manifest->>'$.model.d_head')::INT AS d_head, "
            "       json_extract(r.vars, '$') AS vars, f.eval_loss "
            "FROM runs r JOIN final_checkpoints f USING (run_id) ORDER BY r.d_model"
        ).fetchall()
        assert [r[1] for r in rows] == [16, 32, 48, 64, 96]
        assert all(r[2] == 16 for r in rows)
        summary = con.execute("SELECT count(*), sum(n_checkpoints) FROM run_summary").fetchall()
        assert summary == [(5, 50)]
    finally:
        con.close()


def test_the_migrated_schema_is_the_declared_one(tmp_path: Path):
    """store/tables.py is the one declaration: the migrations build exactly its columns, types and comments."""
    from scaling_db.store.tables import TABLES

    with open_store(tmp_path) as con:
        for table in TABLES:
            got = con.execute(
                "SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
                "WHERE table_name = ? ORDER BY column_index", [table.name]).fetchall()
            assert [(n, t) for n, t, _, _ in got] == [(c.name, c.sql_type) for c in table.columns]
            assert [c or "" for *_, c in got] == [c.comment for c in table.columns], table.name
            assert [nullable for _, _, nullable, _ in got] == [
                not (c.not_null or c.name in table.key_at(store.latest_version())) for c in table.columns], table.name
            assert table.arrow_schema().names == [c.name for c in table.columns]
