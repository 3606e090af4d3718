"""What the cluster backends (Slurm, Ray) share: choosing runs, recording jobs, stopping, cancelling.

The cluster runners place manifests onto workers on other machines; those workers call
`scaling_db.training.execute.execute_run` on a workspace directory that every node sees (a shared
filesystem), exactly as the local runner's processes do. Nothing here trains or touches the
database: workers write their run's log and status file; the driver (or `scaledb ingest`)
loads them, so the DuckDB file keeps a single writer.

Files this module adds to a run's directory (`runs/<run_id>/`):
- `cancel`: a stop request. A worker polls for it (about twice a second, from the trainer's
  per-step `stop` callback): the run saves its state at the next step and ends `pending`; a
  run that has not started yet does not start. `scaledb cancel` writes it; the next
  submission of the run removes it. It works the same on every backend and needs no
  connection to the driver that submitted the run.

Job ids: the status file's `backend` and `job_id` name where a run was placed. The driver
records them at submission (only while no process holds the run, so it never overwrites a
worker's newer status) and the worker records them again when it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scaling_db.errors import RunError
from scaling_db.training.execute import execute_run, reset_run, run_lock, split_pending
from scaling_db.training.records import RunState, RunStatus, utc_now
from scaling_db.workspace import Workspace, atomic_write_text

if TYPE_CHECKING:  # the same progress display as the local runner's
    from runners.local import ProgressSink

#: How often (seconds) a worker looks for a `cancel` file; the trainer polls `stop` every step,
#: so this bounds the filesystem traffic on a shared workspace, not the reaction time.
CANCEL_POLL_S = 0.5


@dataclass
class ClusterRunReport:
    """What happened, as the local runner reports it (`LocalRunReport`), plus where runs went."""

    statuses: dict[str, RunStatus] = field(default_factory=dict)  # final (or, without waiting, current)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # already done
    interrupted: bool = False
    backend: str = ""
    jobs: dict[str, str] = field(default_factory=dict)  # run_id -> the backend's job / task id
    folder: str | None = None  # Slurm: submitit's folder (job scripts, pickles, logs)
    waited: bool = True  # False with --no-wait: `statuses` hold the state at submission
    in_flight: dict[str, str] = field(default_factory=dict)  # run_id -> job already queued or running

    def count(self, state: RunState) -> int:
        return sum(1 for s in self.statuses.values() if s.status == state)


# ---------------------------------------------------------------------------------------------
# Stop requests
# ---------------------------------------------------------------------------------------------


def cancel_path(workspace: Workspace, run_id: str) -> Any:
    return workspace.run_dir(run_id) / "cancel"


def cancel_requested(workspace: Workspace, run_id: str) -> bool:
    return cancel_path(workspace, run_id).exists()


def request_cancel(workspace: Workspace, run_id: str, reason: str = "scaledb cancel") -> None:
    atomic_write_text(cancel_path(workspace, run_id), f"{utc_now()} {reason}\n")


def clear_cancel(workspace: Workspace, run_id: str) -> None:
    cancel_path(workspace, run_id).unlink(missing_ok=True)


class StopRequest:
    """The `stop` callback a worker hands to `execute_run`: an in-process flag or a `cancel` file.

    Called once per training step, so the flag is checked every time and the file (a stat on
    a possibly remote filesystem) at most every `CANCEL_POLL_S`.
    """

    def __init__(self, workspace: Workspace, run_id: str, flag: threading.Event | None = None):
        self.workspace, self.run_id, self.flag = workspace, run_id, flag
        self._next_check = 0.0
        self._cancelled = False

    def __call__(self) -> bool:
        if self.flag is not None and self.flag.is_set():
            return True
        now = time.monotonic()
        if not self._cancelled and now >= self._next_check:
            self._next_check = now + CANCEL_POLL_S
            self._cancelled = cancel_requested(self.workspace, self.run_id)
        return self._cancelled


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


def execute_on_worker(
    root: str, run_id: str, *, backend: str, job_id: str | None, device: str, threads: int | None,
    retry_failed: bool, flag: threading.Event | None = None,
    worker_init: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A worker's whole job for one run: `execute_run`, unless a cancel was requested first.

    `force` is never passed: the driver resets forced runs before submitting them, so a job
    that Slurm restarts or Ray retries resumes instead of starting over again.
    Returns the final status as JSON (what the backend sends back to the driver).
    """
    if worker_init is not None:
        worker_init()
    workspace = Workspace(root)
    if cancel_requested(workspace, run_id):
        return workspace.read_status(run_id).model_dump(mode="json")
    status = execute_run(
        workspace, run_id, device=device, threads=threads, retry_failed=retry_failed,
        stop=StopRequest(workspace, run_id, flag), backend=backend, job_id=job_id,
    )
    return status.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def lock_is_held(workspace: Workspace, run_id: str) -> bool:
    """Whether some process (on any node sharing the workspace) is executing the run now."""
    try:
        with run_lock(workspace, run_id):
            return False
    except RunError:
        return True


def plan_runs(
    workspace: Workspace, run_ids: Sequence[str], *, backend: str, force: bool, retry_failed: bool,
    active: Callable[[list[RunStatus]], dict[str, str]] | None = None,
) -> tuple[ClusterRunReport, list[str]]:
    """Which runs to submit; a report holding the others (done: skipped; queued elsewhere: in_flight).

    `active(statuses)` names the runs whose recorded job is still queued or running on the
    backend (run_id -> job id): those are not submitted twice. Forced runs are reset here, under
    their lock, so that workers never reset anything.
    """
    report = ClusterRunReport(backend=backend)
    for run_id in dict.fromkeys(run_ids):
        workspace.load_manifest(run_id)  # a missing manifest fails here, not on a node
    candidates, done = split_pending(workspace, run_ids, force=force, retry_failed=retry_failed)
    report.statuses.update(done)
    report.skipped.extend(done)
    report.in_flight = active(candidates) if active is not None and candidates else {}
    todo = []
    for status in candidates:
        run_id = status.run_id
        if run_id in report.in_flight:
            report.statuses[run_id] = status
            continue
        if lock_is_held(workspace, run_id):
            report.in_flight[run_id] = status.job_id or "another process"
            report.statuses[run_id] = status
            continue
        if force:
            with run_lock(workspace, run_id):
                reset_run(workspace, run_id)
        clear_cancel(workspace, run_id)
        todo.append(run_id)
    return report, todo


def record_submission(workspace: Workspace, run_id: str, backend: str, job_id: str) -> RunStatus:
    """Note the job a run was submitted as, unless a worker already holds the run (it records its own)."""
    try:
        with run_lock(workspace, run_id):
            status = workspace.read_status(run_id)
            if status.status.done:  # finished in the moment between submitting and recording
                return status
            status = status.model_copy(update={
                "status": RunState.PENDING, "backend": backend, "job_id": job_id, "updated_at": utc_now(),
            })
            workspace.write_status(status)
            return status
    except RunError:
        return workspace.read_status(run_id)


def settle_ended_job(workspace: Workspace, run_id: str, *, cancelled: bool, why: str) -> RunStatus:
    """A job ended without leaving its run in a final state: fix a stale `running` status.

    A worker killed hard (out of memory, SIGKILL, node failure) cannot write its status; the
    run's lock is free then. Cancelled runs go back to `pending` (resumable by the next
    `scaledb run`); anything else is `failed` with `why` (resumable with --retry-failed).
    """
    try:
        with run_lock(workspace, run_id):
            status = workspace.read_status(run_id)
            if status.status != RunState.RUNNING:
                return status
            if cancelled:
                update = {"status": RunState.PENDING, "updated_at": utc_now()}
            else:
                update = {"status": RunState.FAILED, "error": why, "finished_at": utc_now(), "updated_at": utc_now()}
            status = status.model_copy(update=update)
            workspace.write_status(status)
            return status
    except RunError:  # still held: a process is alive and will write its own final status
        return workspace.read_status(run_id)


class StatusFollower:
    """Drives a `ProgressSink` from the status files the workers write (the driver polls them)."""

    def __init__(self, workspace: Workspace, run_ids: Sequence[str], progress: ProgressSink | None):
        self.workspace, self.progress = workspace, progress
        self.started: set[str] = set()
        self.steps: dict[str, int] = {}
        self.names: dict[str, str] = {}
        for run_id in run_ids:
            m = workspace.load_manifest(run_id)
            self.steps[run_id] = m.train.steps if m.train.kind == "lm" else 1
            self.names[run_id] = m.name

    def start(self, skipped: int) -> None:
        if self.progress is not None:
            self.progress.start(sum(self.steps.values()), len(self.steps), skipped)

    def poll(self, run_ids: Sequence[str]) -> None:
        if self.progress is None:
            return
        for run_id in run_ids:
            status = self.workspace.read_status(run_id)
            if status.status == RunState.RUNNING and run_id not in self.started:
                self.started.add(run_id)
                self.progress.run_started(run_id, self.names[run_id], self.steps[run_id])
            if run_id in self.started and status.step is not None:
                self.progress.update(run_id, status.step, self.steps[run_id], None)

    def done(self, run_id: str, status: RunStatus | None) -> None:
        if self.progress is not None:
            if run_id not in self.started:
                self.started.add(run_id)
                self.progress.run_started(run_id, self.names[run_id], self.steps[run_id])
            self.progress.run_done(run_id, status)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def finish_run(report: ClusterRunReport, run_id: str, status: RunStatus,
               on_run_done: Callable[[str], None] | None, follower: StatusFollower) -> None:
    """Record a run's final status in the report; hand finished runs to `on_run_done` (ingest)."""
    report.statuses[run_id] = status
    follower.done(run_id, status)
    if status.status.done and on_run_done is not None:
        on_run_done(run_id)


# ---------------------------------------------------------------------------------------------
# Cancel and status, for any backend
# ---------------------------------------------------------------------------------------------


@dataclass
class CancelReport:
    """What `cancel_runs` did, per run: `cancelled` (a stop was requested), `already_done`."""

    cancelled: dict[str, str] = field(default_factory=dict)  # run_id -> backend job id or ""
    already_done: list[str] = field(default_factory=list)
    backend_errors: list[str] = field(default_factory=list)


def cancel_runs(workspace: Workspace, run_ids: Sequence[str], *, wait_s: float = 10.0) -> CancelReport:
    """Stop the unfinished runs among `run_ids`, wherever they are queued or running.

    Every unfinished run gets a `cancel` file (running runs save their state and end `pending`;
    queued ones will not start). Slurm jobs are then removed with `scancel` (queued ones at once;
    running ones get `wait_s` to save first). Runs whose process is gone but whose status still
    says `running` are set back to `pending`. The next `scaledb run` resumes all of them.
    """
    report = CancelReport()
    slurm_jobs: dict[str, str] = {}
    for run_id in dict.fromkeys(run_ids):
        status = workspace.read_status(run_id)
        if status.status.done:
            report.already_done.append(run_id)
            continue
        request_cancel(workspace, run_id)
        report.cancelled[run_id] = status.job_id or ""
        if status.backend == "slurm" and status.job_id:
            slurm_jobs[run_id] = status.job_id
    if slurm_jobs:
        from runners.slurm import scancel

        # Running jobs first get the chance to stop cleanly through their cancel file.
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(lock_is_held(workspace, r) for r in slurm_jobs):
            time.sleep(0.25)
        try:
            scancel(sorted(set(slurm_jobs.values())))
        except Exception as exc:  # noqa: BLE001 - reported, the cancel files still stop the runs
            report.backend_errors.append(str(exc))
    for run_id in report.cancelled:
        settle_ended_job(workspace, run_id, cancelled=True, why="cancelled")
    return report


def backend_states(statuses: Sequence[RunStatus]) -> dict[str, str]:
    """The backend's own view of each run's job (run_id -> state), where one can be asked.

    Slurm: `sacct` (one call for all jobs). Ray tasks live only as long as the driver that
    submitted them, so there is nothing to ask once it is gone; their runs show scaledb's status.
    """
    slurm = {s.run_id: s.job_id for s in statuses if s.backend == "slurm" and s.job_id}
    if not slurm:
        return {}
    from runners.slurm import slurm_job_states

    try:
        states = slurm_job_states(list(slurm.values()))
    except Exception as exc:  # noqa: BLE001 - status must work even when the cluster does not answer
        return {run_id: f"unknown ({type(exc).__name__})" for run_id in slurm}
    return {run_id: states.get(job_id, "UNKNOWN") for run_id, job_id in slurm.items()}
