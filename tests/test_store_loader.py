"""The background loader: runs finishing while a load is under way share the next one; after every
load the file alone (no WAL) holds every loaded run."""

from __future__ import annotations

import shutil
import threading

import duckdb

from scaling_db.errors import StoreError
from scaling_db.store import loader as loader_module
from scaling_db.store.loader import RunLoader
from store_fakes import finish_runs, make_workspace


def test_runs_finishing_during_a_load_share_the_next_load(tmp_path, monkeypatch):
    ws, manifests = make_workspace(tmp_path / "ws")
    manifests = manifests[:5]
    finish_runs(ws, manifests)
    ids = [m.run_id for m in manifests]
    first_started, release = threading.Event(), threading.Event()
    real = loader_module.ingest_runs

    def ingest(ws_, batch, **kw):
        if not first_started.is_set():
            first_started.set()
            release.wait(timeout=60)  # hold the first load until the other runs are submitted
        return real(ws_, batch, **kw)

    monkeypatch.setattr(loader_module, "ingest_runs", ingest)
    with RunLoader(ws) as loader:
        loader.submit(ids[0])
        assert first_started.wait(timeout=60)
        for run_id in ids[1:]:
            loader.submit(run_id)
        release.set()
    assert loader.batches == [ids[:1], ids[1:]] and not loader.failed
    assert loader.report.runs_loaded == 5 and loader.report.rows_loaded == 50
    copy = tmp_path / "copy.duckdb"
    shutil.copy(ws.db_path, copy)  # the file alone: a WAL left beside it would not travel
    with duckdb.connect(str(copy), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT run_id) FROM checkpoints").fetchone() == (5,)


def test_a_failed_load_is_reported_not_raised(tmp_path, monkeypatch):
    ws, manifests = make_workspace(tmp_path / "ws")

    def locked(*args, **kw):
        raise StoreError("database is locked by another process")

    monkeypatch.setattr(loader_module, "ingest_runs", locked)
    loader = RunLoader(ws)
    loader.submit(manifests[0].run_id)
    loader.close()
    assert loader.failed == {manifests[0].run_id: "database is locked by another process"}
