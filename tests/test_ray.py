"""The Ray runner against a real local Ray instance (marker `ray`; fixture `ray_local`).

- a small sweep runs as Ray tasks (through `scaledb run --backend ray`), the driver ingests
  each run once, and the status files name the Ray task of each run;
- a worker process killed with SIGKILL in the middle of a run is replaced: Ray retries the
  task, the run resumes from its saved state, and its log has each checkpoint once and the
  curve of an uninterrupted run;
- `scaledb cancel` (a `cancel` file) stops a running task cleanly: state saved, run pending.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
from click.testing import CliRunner

import cluster_helpers as H
from scaling_db.cli import cli
from scaling_db.workspace import Workspace

pytestmark = pytest.mark.ray

DEADLINE_S = 120


@pytest.fixture
def ray_workers(ray_local):
    """The session's Ray instance, with the test helpers shipped by value to its workers."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(H)  # Ray pickles with its own copy of cloudpickle
    return ray_local


def _joined(thread: threading.Thread, out: dict):
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "the Ray driver did not return"
    if "error" in out:
        raise out["error"]
    return out["report"]


def test_sweep_runs_as_tasks_and_is_ingested_once(ray_workers, tmp_path):
    from scaling_db.store.database import open_store

    spec = H.write_spec(tmp_path, "ray-sweep", widths=[16, 32, 48])
    ws_dir = tmp_path / "ws"
    result = CliRunner().invoke(cli, ["run", str(spec), "--backend", "ray", "--cpus", "1", "--max-retries", "1",
                                      "-w", str(ws_dir), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = {r["run_id"]: r for r in json.loads(result.output)["runs"]}
    assert len(runs) == 3 and all(r["status"] == "finished" for r in runs.values()), runs
    ws = Workspace(ws_dir)
    task_ids = set()
    for run_id in runs:
        status = ws.read_status(run_id)
        assert status.backend == "ray" and status.job_id and runs[run_id]["job_id"] == status.job_id
        task_ids.add(status.job_id)
    assert len(task_ids) == 3
    with open_store(ws, read_only=True) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (run_id, step)) FROM checkpoints").fetchone()
        ingested = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'finished'").fetchall()}
    assert n == distinct == 3 * 3 and ingested == set(runs)


def test_killed_worker_is_retried_and_the_run_resumes_exactly(ray_workers, tmp_path):
    from runners.ray_runner import RayOptions, run_ray

    spec = H.write_spec(tmp_path, "ray-kill", steps=240, checkpoints=8)
    ws = Workspace(tmp_path / "ws")
    [run_id] = H.compile_into(ws, spec)
    H.make_slow(ws, run_id, 0.025)  # about 6 s of training: long enough to kill mid-run
    thread, out = H.run_in_thread(run_ray, workspace=ws, run_ids=[run_id], build_source=H.slow_source,
                                 options=RayOptions(max_retries=2), timeout_s=DEADLINE_S)
    H.wait_for(lambda: len(H.raw_steps(ws, run_id)) >= 2, 90, "two checkpoints")
    pids = (ws.run_dir(run_id) / "worker.pids").read_text().split()
    assert len(pids) == 1
    os.kill(int(pids[0]), signal.SIGKILL)
    report = _joined(thread, out)
    assert not report.errors, report.errors
    status = ws.read_status(run_id)
    assert status.status.value == "finished" and status.backend == "ray"
    retried = (ws.run_dir(run_id) / "worker.pids").read_text().split()
    assert len(retried) == 2 and retried[0] != retried[1], "the task ran again in a new worker"
    assert H.raw_steps(ws, run_id) == [30 * i for i in range(1, 9)]
    assert H.logged(ws, run_id) == H.reference_log(tmp_path, spec, run_id)


def test_cancel_stops_a_running_task_with_its_state_saved(ray_workers, tmp_path):
    from runners.ray_runner import RayOptions, run_ray

    spec = H.write_spec(tmp_path, "ray-cancel", steps=400, checkpoints=4)
    ws_dir = tmp_path / "ws"
    ws = Workspace(ws_dir)
    [run_id] = H.compile_into(ws, spec)
    H.make_slow(ws, run_id, 0.05)
    thread, out = H.run_in_thread(run_ray, workspace=ws, run_ids=[run_id], build_source=H.slow_source,
                                 options=RayOptions(), timeout_s=DEADLINE_S)
    H.wait_for(lambda: ws.read_status(run_id).status.value == "running" and ws.read_status(run_id).step, 90,
               "the run to log a checkpoint")
    result = CliRunner().invoke(cli, ["cancel", str(spec), "-w", str(ws_dir), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.output)["cancelled"]) == [run_id]
    report = _joined(thread, out)
    status = ws.read_status(run_id)
    assert status.status.value == "pending" and report.statuses[run_id].status.value == "pending"
    assert H.raw_steps(ws, run_id) == [100], "stopped within the second checkpoint interval"
    import torch

    saved = torch.load(ws.state_path(run_id), weights_only=True)["step"]
    assert 100 < saved < 400, "the state was saved where the run stopped, not only at its last checkpoint"
