"""The cluster engines themselves work (issue 7 test infrastructure, before any scaledb runner).

Slurm: the single-node cluster from `scripts/slurm-up` runs a submitit job array, and a running
submitit job that is preempted or sent its preemption signal reaches the `Checkpointable` path,
requeues and resumes from the checkpointed state. `scontrol requeue` alone does *not* call
`checkpoint()` (submitit ignores SIGTERM), the job restarts from its original arguments.

Ray: a local instance retries a task whose worker process was killed (by itself or from outside).

Recipes and timings: docs/clusters.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # a missing submitit is reported by the slurm_cluster fixture (fail under CI, skip elsewhere)
    import cloudpickle
    import submitit

    _Checkpointable = submitit.helpers.Checkpointable
except ImportError:  # pragma: no cover
    submitit = None
    _Checkpointable = object

# ---------------------------------------------------------------- Slurm (submitit)

JOB_DEADLINE_S = 150  # generous: requeued jobs wait cred_expire (10 s) + KillWait (10 s)


def _executor(folder: Path, cluster: dict, **params):
    # the job's Python cannot import this test module: ship its functions and classes by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition=cluster["partition"], cpus_per_task=1, **params)
    return ex


def _wait_done(jobs: list, timeout: float = JOB_DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while not all(job.done() for job in jobs):
        if time.monotonic() > end:
            for job in jobs:
                job.cancel(check=False)
            logs = "\n".join(f"--- {job.job_id}\n{job.stdout()}\n{job.stderr()}" for job in jobs)
            pytest.fail(f"Slurm jobs not done after {timeout}s:\n{logs}")
        time.sleep(0.5)


def _square(x: int) -> tuple[int, str | None]:
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


class Counter(_Checkpointable):
    """Counts to `n`, one step per `step_s`; checkpointable; logs events to a JSONL file."""

    def __init__(self, log: str, step_s: float = 0.5) -> None:
        self.log = log
        self.step_s = step_s
        self.step = 0

    def _event(self, event: str, **fields) -> None:
        fields.update(event=event, restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")))
        with open(self.log, "a") as fh:
            fh.write(json.dumps(fields) + "\n")

    def __call__(self, n: int, start: int = 0) -> int:
        self.step = start
        self._event("start", step=start)
        while self.step < n:
            time.sleep(self.step_s)
            self.step += 1
            self._event("step", step=self.step)
        self._event("done", step=self.step)
        return self.step

    def checkpoint(self, n: int, start: int = 0):
        self._event("checkpoint", step=self.step)
        return submitit.helpers.DelayedSubmission(self, n, self.step)


def _events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _wait_for_step(log: Path, job, min_step: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not any(e["event"] == "step" and e["step"] >= min_step for e in _events(log)):
        if time.monotonic() > end:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} never reached step {min_step}: {_events(log)}\n{job.stderr()}")
        time.sleep(0.2)


@pytest.mark.slurm
def test_slurm_job_array_completes(slurm_cluster, tmp_path):
    ex = _executor(tmp_path / "%j", slurm_cluster, timeout_min=5, slurm_array_parallelism=4)
    jobs = ex.map_array(_square, [1, 2, 3, 4])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "not one job array"
    _wait_done(jobs)
    assert [job.result() for job in jobs] == [(1, "0"), (4, "1"), (9, "2"), (16, "3")]
    # sacct (slurmdbd) reports the final state, which scaledb status will show beside its own;
    # slurmctld sends job records to slurmdbd asynchronously, so it may lag a few seconds
    end = time.monotonic() + 30
    states: list[str] = []
    while time.monotonic() < end:
        states = [job.watcher.get_state(job.job_id, mode="force") for job in jobs]
        if states == ["COMPLETED"] * 4:
            break
        time.sleep(1)
    assert states == ["COMPLETED"] * 4


def _preempt(job, cluster) -> None:
    """Real preemption: an exclusive job in the higher-tier partition needs the node."""
    out = subprocess.run(
        ["sbatch", "--parsable", "-p", cluster["preempt_partition"], "--exclusive", "-t", "1",
         "-o", "/dev/null", "--wrap", "true"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    assert out.stdout.strip()


def _signal(job, cluster) -> None:
    """What Slurm sends before a time limit (--signal=USR2@delay), forced now: to the job's steps."""
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)


@pytest.mark.slurm
@pytest.mark.parametrize("trigger", [_preempt, _signal], ids=["preempt", "usr2"])
def test_slurm_requeue_reaches_checkpoint_and_resumes(slurm_cluster, tmp_path, trigger):
    log = tmp_path / "events.jsonl"
    # timeout_min=60: submitit counts a USR2 in the first 48 min as preemption, not a time-out
    ex = _executor(tmp_path / "%j", slurm_cluster, timeout_min=60)
    job = ex.submit(Counter(str(log)), 16)
    _wait_for_step(log, job, 3)
    trigger(job, slurm_cluster)
    _wait_done([job])
    assert job.result() == 16
    events = _events(log)
    ckpt = [e for e in events if e["event"] == "checkpoint"]
    starts = [e for e in events if e["event"] == "start"]
    assert len(ckpt) == 1 and ckpt[0]["restart"] == 0 and ckpt[0]["step"] >= 3, events
    assert [(s["restart"], s["step"]) for s in starts] == [(0, 0), (1, ckpt[0]["step"])], events
    # resumed where it stopped: every step after the checkpoint is counted once
    second = [e["step"] for e in events if e["event"] == "step" and e["restart"] == 1]
    assert second == list(range(ckpt[0]["step"] + 1, 17)), events
    assert "this job is preempted" in job.stdout()


@pytest.mark.slurm
def test_slurm_scontrol_requeue_restarts_without_checkpoint(slurm_cluster, tmp_path):
    """`scontrol requeue` sends SIGTERM, which submitit ignores: no checkpoint, restart from 0.

    The job keeps running until SIGKILL (KillWait = 10 s later), so it must need longer than that.
    """
    log = tmp_path / "events.jsonl"
    ex = _executor(tmp_path / "%j", slurm_cluster, timeout_min=60)
    job = ex.submit(Counter(str(log)), 40)
    _wait_for_step(log, job, 2)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    _wait_done([job])
    assert job.result() == 40
    events = _events(log)
    assert not [e for e in events if e["event"] == "checkpoint"], events
    assert [(e["restart"], e["step"]) for e in events if e["event"] == "start"] == [(0, 0), (1, 0)], events


# ---------------------------------------------------------------- Ray


@pytest.mark.ray
def test_ray_retries_task_that_killed_its_worker(ray_local, tmp_path):
    ray = ray_local
    marker = tmp_path / "attempt1"

    @ray.remote(max_retries=2)
    def flaky(x: int, marker: str) -> tuple[int, int]:
        if not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 10, os.getpid()

    value, pid = ray.get(flaky.remote(4, str(marker)), timeout=120)
    assert value == 40
    assert pid != int(marker.read_text()), "the retry ran in a new worker process"


@pytest.mark.ray
def test_ray_retries_task_whose_worker_is_killed_mid_run(ray_local, tmp_path):
    ray = ray_local
    pidfile = tmp_path / "pid"

    @ray.remote(max_retries=2)
    def slow(pidfile: str) -> int:
        if not os.path.exists(pidfile):
            Path(pidfile).write_text(str(os.getpid()))
            time.sleep(120)
        return os.getpid()

    ref = slow.remote(str(pidfile))
    end = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < end, "task never started"
        time.sleep(0.1)
    first = int(pidfile.read_text())
    os.kill(first, signal.SIGKILL)
    assert ray.get(ref, timeout=60) != first


@pytest.mark.ray
def test_ray_without_retries_reports_the_crash(ray_local):
    ray = ray_local
    from ray.exceptions import WorkerCrashedError

    @ray.remote(max_retries=0)
    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError):
        ray.get(crash.remote(), timeout=120)
