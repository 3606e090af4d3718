"""Several loaders and writers at once: nothing lost, nothing doubled, no half-loaded run seen.

Processes are spawned (not forked): a forked child would inherit the parent's open DuckDB
instance, which is not how separate scaledb processes behave.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from scaling_db.errors import StoreError
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.database import open_store, record_fit
from scaling_db.workspace import Workspace

from store_fakes import make_workspace, write_log, write_status

N_CHUNKS = 6
CHUNK = 40  # steps per chunk: each run ends with N_CHUNKS * CHUNK distinct steps


def _runner(root: str, run_ids: list[str]) -> None:
    """Log runs in chunks, interleaved; each chunk replays the last 5 steps of the previous (a resume)."""
    ws = Workspace(root)
    for run_id in run_ids:
        write_status(ws, run_id, "running")
    for chunk in range(N_CHUNKS):
        start = max(1, chunk * CHUNK - 5)
        for run_id in run_ids:
            write_log(ws, run_id, range(start, (chunk + 1) * CHUNK + 1), mode="a")
        time.sleep(0.05)
    for run_id in run_ids:
        write_status(ws, run_id, "finished", step=N_CHUNKS * CHUNK)


def _loader(root: str, rounds: int, errors) -> None:
    for _ in range(rounds):
        try:
            ingest_runs(Workspace(root), lock_timeout_s=120)
        except StoreError as exc:  # a clear lock message is acceptable; anything else is a bug
            errors.put(str(exc))
        time.sleep(0.01)


def _fit_writer(root: str, n: int) -> None:
    for i in range(n):
        with open_store(Workspace(root), lock_timeout_s=120) as con:
            record_fit(con, {"law": "power_law", "params": {"a": float(i)}, "experiment": "ba_graph"})


def _reader(root: str, expected_per_run: int, stop, bad) -> None:
    """Every run is seen with a whole number of its chunks' rows, or not at all: never half a batch."""
    ws = Workspace(root)
    while not stop.is_set():
        try:
            with open_store(ws, read_only=True, lock_timeout_s=120) as con:
                got = con.execute("SELECT run_id, count(*), count(DISTINCT step), max(step) FROM checkpoints "
                                  "GROUP BY run_id").fetchall()
        except StoreError:
            continue
        for run_id, n, distinct, top in got:
            if n != distinct or n != top or n > expected_per_run:
                bad.put(f"{run_id}: {n} rows, {distinct} distinct steps, max step {top}")
        time.sleep(0.01)


@pytest.mark.slow
def test_concurrent_loaders_and_writers_lose_and_double_nothing(tmp_path: Path):
    ws, manifests = make_workspace(tmp_path / "ws")
    root = str(ws.root)
    with open_store(ws):
        pass
    ctx = mp.get_context("spawn")
    errors, bad, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    ids = [m.run_id for m in manifests]
    procs = [ctx.Process(target=_runner, args=(root, ids[i::2])) for i in range(2)]
    procs += [ctx.Process(target=_loader, args=(root, 8, errors)) for _ in range(2)]
    procs += [ctx.Process(target=_fit_writer, args=(root, 5))]
    reader = ctx.Process(target=_reader, args=(root, N_CHUNKS * CHUNK, stop, bad))
    reader.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    stop.set()
    reader.join(60)
    assert all(p.exitcode == 0 for p in [*procs, reader])
    final = ingest_runs(ws)
    assert final.skipped == []

    problems = []
    while not bad.empty():
        problems.append(bad.get())
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    with open_store(ws, read_only=True) as con:
        per_run = dict(con.execute("SELECT run_id, count(*) FROM checkpoints GROUP BY run_id").fetchall())
        assert per_run == {m.run_id: N_CHUNKS * CHUNK for m in manifests}
        assert con.execute("SELECT count(*) FROM (SELECT DISTINCT run_id, step FROM checkpoints)").fetchall() == [
            (len(manifests) * N_CHUNKS * CHUNK,)]
        assert con.execute("SELECT count(*) FROM fits").fetchall() == [(5,)]
        assert con.execute("SELECT DISTINCT status FROM runs").fetchall() == [("finished",)]
