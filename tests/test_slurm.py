"""The Slurm runner against the real single-node cluster of `scripts/slurm-up` (marker `slurm`).

- a sweep goes out as one job array, through `scaledb run --backend slurm`; results are
  ingested once by the driver, `scaledb status` shows each run's job id and Slurm state;
- a running run that is preempted (a job in the higher-tier `urgent` partition takes the node)
  or sent Slurm's time-limit signal saves its state, is requeued, resumes, and ends with each
  checkpoint logged once and the same curve as an uninterrupted run;
- `scaledb cancel` stops a running run (state saved, back to pending) and removes a queued one.

The slow-down that keeps a run alive long enough to interrupt it is a `build_source`
(tests/cluster_helpers.py) that only sleeps between batches: results are unchanged.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

import cluster_helpers as H
from scaling_db.cli import cli
from scaling_db.workspace import Workspace

pytestmark = pytest.mark.slurm

try:  # the job's Python cannot import tests/: ship the helpers by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(H)
except ImportError:  # pragma: no cover - reported by the slurm_cluster fixture
    pass

DEADLINE_S = 180  # a requeue alone waits cred_expire (10 s) before the job may start again


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_sweep_runs_as_one_array_and_is_ingested_once(slurm_cluster, tmp_path):
    from scaling_db.store.database import open_store

    spec = H.write_spec(tmp_path, "slurm-sweep", widths=[16, 32, 48])
    ws_dir = tmp_path / "ws"
    out = _cli("run", str(spec), "--backend", "slurm", "--partition", slurm_cluster["partition"],
               "--time-min", "10", "--cpus", "1", "-w", str(ws_dir), "--json")
    result = json.loads(out)
    runs = {r["run_id"]: r for r in result["runs"]}
    assert len(runs) == 3 and all(r["status"] == "finished" for r in runs.values()), result
    jobs = [r["job_id"] for r in runs.values()]
    assert len({j.split("_")[0] for j in jobs}) == 1 and len(set(jobs)) == 3, f"not one array: {jobs}"
    ws = Workspace(ws_dir)
    for run_id, job in zip(runs, jobs):
        status = ws.read_status(run_id)
        assert (status.backend, status.job_id) == ("slurm", job)
    # the driver ingested every run, exactly once per (run_id, step)
    with open_store(ws, read_only=True) as con:
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (run_id, step)) FROM checkpoints").fetchone()
        ingested = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'finished'").fetchall()}
    assert n == distinct == 3 * 3 and ingested == set(runs)

    # status: scaledb's own state beside Slurm's (sacct lags a few seconds behind the jobs)
    def completed() -> list[dict] | None:
        rows = json.loads(_cli("status", str(spec), "-w", str(ws_dir), "--json"))
        return rows if all(r.get("job_state") == "COMPLETED" for r in rows) else None

    rows = H.wait_for(completed, 30, "sacct to report COMPLETED", poll=1)
    assert {(r["run_id"], r["backend"], r["job_id"], r["status"]) for r in rows} == {
        (run_id, "slurm", job, "finished") for run_id, job in zip(runs, jobs)}

    # a second run submits nothing: all done
    again = json.loads(_cli("run", str(spec), "--backend", "slurm", "-w", str(ws_dir), "--json"))
    assert sorted(again["skipped"]) == sorted(runs) and not again.get("jobs")


def _preempt(job_id: str, cluster: dict) -> None:
    """A real preemption: an exclusive job in the higher-tier partition needs the whole node."""
    subprocess.run(["sbatch", "--parsable", "-p", cluster["preempt_partition"], "--exclusive", "-t", "1",
                    "-o", "/dev/null", "--wrap", "true"], check=True, capture_output=True, timeout=30)


def _usr2(job_id: str, cluster: dict) -> None:
    """What Slurm sends before a time limit (--signal=USR2@delay), forced now."""
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)


@pytest.mark.parametrize("trigger", [_preempt, _usr2], ids=["preempt", "usr2"])
def test_interrupted_run_requeues_and_resumes_exactly(slurm_cluster, tmp_path, trigger):
    from runners.slurm import SlurmOptions, run_slurm, slurm_job_states

    spec = H.write_spec(tmp_path, "slurm-requeue", steps=240, checkpoints=8)
    ws = Workspace(tmp_path / "ws")
    [run_id] = H.compile_into(ws, spec)
    H.make_slow(ws, run_id, 0.025)  # about 6 s of training: long enough to interrupt
    thread, out = H.run_in_thread(
        run_slurm, workspace=ws, run_ids=[run_id], build_source=H.slow_source, poll_s=1, timeout_s=DEADLINE_S,
        # timeout_min >= 60: submitit counts a USR2 this early as a preemption, not a time-out
        options=SlurmOptions(partition=slurm_cluster["partition"], time_min=60))
    H.wait_for(lambda: len(H.raw_steps(ws, run_id)) >= 2, 90, "two checkpoints")
    job_id = ws.read_status(run_id).job_id
    trigger(job_id, slurm_cluster)

    # The run stops at its next step with its state saved, then the job is requeued; Slurm
    # holds a requeued job for cred_expire (10 s): release it at once to keep the test short.
    H.wait_for(lambda: ws.read_status(run_id).status.value == "pending", 30, "the run to save and stop")
    stopped_at = H.raw_steps(ws, run_id)
    assert stopped_at[-1] < 240, "the run finished before it was interrupted"

    def resumed() -> bool:
        if slurm_job_states([job_id]).get(job_id) == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        return ws.read_status(run_id).status.value in ("running", "finished")

    H.wait_for(resumed, 60, "the requeued job to resume the run", poll=0.5)
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    report = out["report"]
    assert not report.errors, report.errors
    status = ws.read_status(run_id)
    assert status.status.value == "finished" and (status.backend, status.job_id) == ("slurm", job_id)
    # each checkpoint once, and the curve of an uninterrupted run (timings aside)
    assert H.raw_steps(ws, run_id) == [30 * i for i in range(1, 9)]
    assert H.logged(ws, run_id) == H.reference_log(tmp_path, spec, run_id)
    # it really was the same job, requeued through submitit's checkpoint path
    log = next((ws.root / "slurm" / "slurm-requeue").glob(f"{job_id}_*log.err")).read_text()
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log, log


def test_cancel_stops_running_and_removes_queued_runs(slurm_cluster, tmp_path):
    from runners.slurm import SlurmOptions, run_slurm, slurm_job_states

    spec = H.write_spec(tmp_path, "slurm-cancel", widths=[16, 32], steps=400, checkpoints=8)
    ws_dir = tmp_path / "ws"
    ws = Workspace(ws_dir)
    run_ids = H.compile_into(ws, spec)
    for run_id in run_ids:
        H.make_slow(ws, run_id, 0.05)
    # submitted without waiting (as `--no-wait` does), one run at a time: the second stays queued
    report = run_slurm(ws, run_ids, SlurmOptions(partition=slurm_cluster["partition"], array_parallelism=1),
                       wait=False, build_source=H.slow_source)
    assert not report.waited and sorted(report.jobs) == sorted(run_ids)
    rows = json.loads(_cli("status", str(spec), "-w", str(ws_dir), "--json"))
    assert {(r["run_id"], r["backend"], r["job_id"]) for r in rows} == {
        (r, "slurm", j) for r, j in report.jobs.items()}
    first = H.wait_for(lambda: next((r for r in run_ids if H.raw_steps(ws, r)), None), 90, "a run to start")
    cancelled = json.loads(_cli("cancel", str(spec), "-w", str(ws_dir), "--json"))
    assert sorted(cancelled["cancelled"]) == sorted(run_ids)
    for run_id in run_ids:
        status = ws.read_status(run_id)
        assert status.status.value == "pending", status
    assert ws.state_path(first).exists(), "the running run saved its state"
    states = H.wait_for(lambda: (s := slurm_job_states(list(report.jobs.values()))) and all(
        v.startswith(("CANCELLED", "COMPLETED")) for v in s.values()) and s, 30, "the jobs to end", poll=1)
    assert any(v.startswith("CANCELLED") for v in states.values()), states
