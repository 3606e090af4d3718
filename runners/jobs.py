"""Cancelling runs and asking for their jobs' states, whichever backend placed them.

Above the backends (it knows Slurm's `scancel` and `sacct`); the CLI's `cancel` and `status`
use it. Stop requests themselves are `cancel` files (`scaling_db.training.control`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from runners.cluster import settle_ended_job
from scaling_db.training.execute import lock_is_held
from scaling_db.training.control import request_cancel
from scaling_db.training.records import RunStatus
from scaling_db.workspace import Workspace


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
        from runners.slurm import scancel  # (imports submitit: only when there are Slurm jobs)

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
    from runners.slurm import slurm_job_states  # (imports submitit: only when there are Slurm jobs)

    try:
        states = slurm_job_states(list(slurm.values()))
    except Exception as exc:  # noqa: BLE001 - status must work even when the cluster does not answer
        return {run_id: f"unknown ({type(exc).__name__})" for run_id in slurm}
    return {run_id: states.get(job_id, "UNKNOWN") for run_id, job_id in slurm.items()}
