"""What the cluster backends (Slurm, Ray) share: choosing runs, recording jobs, following them.

The cluster runners place manifests onto workers on other machines; those workers call
`scaling_db.training.execute.execute_run` on a workspace directory that every node sees (a shared
filesystem), exactly as the local runner's processes do. Nothing here trains or touches the
database: workers write their run's log and status file; the driver (or `scaledb ingest`)
loads them, so the DuckDB file keeps a single writer. Stop requests (`cancel` files) are
`scaling_db.training.control`'s; cancelling and job states across backends are `runners.jobs`'.

Job ids: the status file's `backend` and `job_id` name where a run was placed. The driver
records them at submission (only while no process holds the run, so it never overwrites a
worker's newer status) and the worker records them again when it starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from runners.contract import ProgressSink, RunReport
from scaling_db.errors import RunBusy
from scaling_db.training.control import StopRequest, cancel_requested, clear_cancel
from scaling_db.training.execute import (
    SourceBuilder, build_token_source, execute_run, lock_is_held, reset_run, run_lock, split_pending,
)
from scaling_db.training.records import RunState, RunStatus, utc_now
from scaling_db.workspace import Workspace

# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


def execute_on_worker(
    root: str, run_id: str, *, backend: str, job_id: str | None, device: str, threads: int | None,
    retry_failed: bool, flag: threading.Event | None = None,
    build_source: SourceBuilder = build_token_source,
) -> dict[str, Any]:
    """A worker's whole job for one run: `execute_run`, unless a cancel was requested first.

    `force` is never passed: the driver resets forced runs before submitting them, so a job
    that Slurm restarts or Ray retries resumes instead of starting over again.
    `build_source` (picklable) makes the run's token stream. Returns the final status as JSON
    (what the backend sends back to the driver).
    """
    workspace = Workspace(root)
    if cancel_requested(workspace, run_id):
        return workspace.read_status(run_id).model_dump(mode="json")
    status = execute_run(
        workspace, run_id, device=device, threads=threads, retry_failed=retry_failed,
        stop=StopRequest(workspace, run_id, flag), backend=backend, job_id=job_id, build_source=build_source,
    )
    return status.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def plan_runs(
    workspace: Workspace, run_ids: Sequence[str], *, backend: str, force: bool, retry_failed: bool,
    active: Callable[[list[RunStatus]], dict[str, str]] | None = None,
) -> tuple[RunReport, list[str]]:
    """Which runs to submit; a report holding the others (done: skipped; queued elsewhere: in_flight).

    `active(statuses)` names the runs whose recorded job is still queued or running on the
    backend (run_id -> job id): those are not submitted twice. Forced runs are reset here, under
    their lock, so that workers never reset anything.
    """
    report = RunReport(backend=backend)
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
    except RunBusy:
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
    except RunBusy:  # still held: a process is alive and will write its own final status
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


def finish_run(report: RunReport, run_id: str, status: RunStatus,
               on_run_done: Callable[[str], None] | None, follower: StatusFollower) -> None:
    """Record a run's final status in the report; hand finished runs to `on_run_done` (ingest)."""
    report.statuses[run_id] = status
    follower.done(run_id, status)
    if status.status.done and on_run_done is not None:
        on_run_done(run_id)
