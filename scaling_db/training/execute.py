"""Executing one run in this process: the single entry point every backend calls.

`execute_run(workspace, run_id)` reads the run's manifest, decides whether there is anything to
do (finished runs are skipped unless `force`, failed ones unless `retry_failed`), takes the run's
lock (so two processes never train the same run), checks that its upstream runs (a teacher) are
finished (else the run fails, naming the upstream run), marks it `running`, and dispatches: a
transformer manifest goes to `scaling_db.training.trainer.train_lm` (which resumes from `state.pt` when
there is one), the closed-form learners to `scaling_db.training.solvers.solve`. Whatever happens, the
status file ends in a state that says what to do next: `finished`, `diverged` (a result, not
retried), `failed` (with the error; retried by `retry_failed`) or `pending` (stopped on request
or interrupted: resumed by the next call). The full traceback of a failure goes to
`runs/<run_id>/error.log`.

How a run gets its data (`build_source`) and its closed-form solution (`solve`) are parameters
with the real ones as defaults, so tests pass fakes (picklable ones through the runners).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_db.errors import RunBusy
from scaling_db.spec.manifest import RunManifest
from scaling_db.training.records import (
    CheckpointRecord, RunState, RunStatus, append_record, code_git_sha, repair_log, utc_now,
)
from scaling_db.training.upstream import upstream_problem
from scaling_db.workspace import Workspace, atomic_write_text

if TYPE_CHECKING:
    from scaling_db.training.trainer import TokenSource, TrainProgress

#: Makes a run's token stream: `build_source(manifest, workspace)`.
SourceBuilder = Callable[[RunManifest, Workspace], "TokenSource"]
#: Fits a closed-form learner: `solve(manifest, workspace)` -> a `solvers.SolveResult`.
Solver = Callable[[RunManifest, Workspace], Any]


def build_token_source(manifest: RunManifest, workspace: Workspace) -> "TokenSource":
    """The run's token stream (graphs, tokenizers and samples are cached in the workspace; a
    teacher is read from its finished run)."""
    from scaling_db.sources import build_source

    return build_source(manifest.data, base_dir=Path(manifest.origin.base_dir), cache_dir=workspace.cache_dir,
                        runs_dir=workspace.runs_dir)


def solve_closed_form(manifest: RunManifest, workspace: Workspace) -> Any:
    """Fit a closed-form or nearest-neighbour learner (`scaling_db.training.solvers`)."""
    from scaling_db.training.solvers import solve

    return solve(manifest, base_dir=Path(manifest.origin.base_dir), cache_dir=workspace.cache_dir)


@contextmanager
def run_lock(workspace: Workspace, run_id: str) -> Iterator[None]:
    """Hold the run's lock file for the duration (released by the OS even on SIGKILL)."""
    path = workspace.run_dir(run_id) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(
                f"run {run_id} is being executed by another process (lock {path} is held). "
                "Wait for it, or stop that process."
            ) from None
        yield
    finally:
        os.close(fd)


def lock_is_held(workspace: Workspace, run_id: str) -> bool:
    """Whether some process (on any node sharing the workspace) is executing the run now. Only
    reads: a run never started has no lock file, and none is made (`status` and `check` ask too)."""
    try:
        fd = os.open(workspace.run_dir(run_id) / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False


def stale_running(workspace: Workspace, status: RunStatus) -> bool:
    """A run whose status says `running` on this machine, locally, though no process holds its lock:
    its process was killed; running it again resumes from its last saved state."""
    return (status.status == RunState.RUNNING and status.backend in (None, "local")
            and status.host == socket.gethostname() and not lock_is_held(workspace, status.run_id))


def reset_run(workspace: Workspace, run_id: str) -> None:
    """Forget a run's progress: its log, state, status and error log (the manifest stays)."""
    for path in (workspace.log_path(run_id), workspace.state_path(run_id), workspace.status_path(run_id),
                 workspace.run_dir(run_id) / "error.log"):
        path.unlink(missing_ok=True)


def needs_run(status: RunStatus, *, force: bool = False, retry_failed: bool = False) -> bool:
    """Whether `execute_run` would do anything for a run in this status."""
    if force or not status.status.done:
        return True
    return retry_failed and status.status == RunState.FAILED


def split_pending(
    workspace: Workspace, run_ids: Sequence[str], *, force: bool = False, retry_failed: bool = False,
) -> tuple[list[RunStatus], dict[str, RunStatus]]:
    """The statuses of the runs `execute_run` would work on, and the others (done) by id, in order.

    Every backend decides with this, so "what still needs running" is the same everywhere: it is
    the one place where the runs to execute are chosen, and their order (that of `run_ids`) kept.
    """
    todo: list[RunStatus] = []
    done: dict[str, RunStatus] = {}
    for run_id in dict.fromkeys(run_ids):
        status = workspace.read_status(run_id)
        if needs_run(status, force=force, retry_failed=retry_failed):
            todo.append(status)
        else:
            done[run_id] = status
    return todo, done


def execute_run(
    workspace: Workspace,
    run_id: str,
    *,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
    retry_failed: bool = False,
    stop: Callable[[], bool] | None = None,
    progress: Callable[["TrainProgress"], None] | None = None,
    backend: str = "local",
    job_id: str | None = None,
    build_source: SourceBuilder = build_token_source,
    solve: Solver = solve_closed_form,
) -> RunStatus:
    """Make one manifest happen in this process (train, resume, or solve); returns the final status.

    Failures of the run itself (including NaN losses) are recorded in its status, not raised, so
    a sweep goes on; a run locked by another process raises `RunBusy` (a `RunError`).
    """
    manifest = workspace.load_manifest(run_id)
    with run_lock(workspace, run_id):
        status = workspace.read_status(run_id)
        if not needs_run(status, force=force, retry_failed=retry_failed):
            return status
        if force:
            reset_run(workspace, run_id)
            status = RunStatus(run_id=run_id)
        if (problem := upstream_problem(workspace, manifest)) is not None:
            status = status.model_copy(update={
                "status": RunState.FAILED, "error": problem, "finished_at": utc_now(), "updated_at": utc_now(),
            })
            workspace.write_status(status)
            return status
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        status = status.model_copy(update={
            "status": RunState.RUNNING, "error": None, "diverged_at_step": None,
            "started_at": status.started_at or utc_now(), "finished_at": None, "updated_at": utc_now(),
            "backend": backend, "job_id": job_id, "host": socket.gethostname(), "git_sha": code_git_sha(),
        })
        workspace.write_status(status)
        try:
            if manifest.model.kind == "transformer":
                status = _train(workspace, manifest, status, device, stop, progress, build_source)
            else:
                status = _solve(workspace, manifest, status, solve)
        except BaseException as exc:
            status = _record_failure(workspace, status, exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        return status


def _record_failure(workspace: Workspace, status: RunStatus, exc: BaseException) -> RunStatus:
    """Write the status of a run that raised: pending again when interrupted (killed mid-step, its
    last saved state is intact, so it stays resumable), else failed, with the traceback in error.log."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        status = status.model_copy(update={"status": RunState.PENDING})
    else:
        status = status.model_copy(update={
            "status": RunState.FAILED, "error": f"{type(exc).__name__}: {exc}", "finished_at": utc_now(),
        })
        atomic_write_text(workspace.run_dir(status.run_id) / "error.log", traceback.format_exc())
    status = status.model_copy(update={"step": workspace.read_status(status.run_id).step, "updated_at": utc_now()})
    workspace.write_status(status)
    return status


def _train(
    workspace: Workspace,
    manifest: RunManifest,
    status: RunStatus,
    device: str,
    stop: Callable[[], bool] | None,
    progress: Callable[["TrainProgress"], None] | None,
    build_source: SourceBuilder,
) -> RunStatus:
    from scaling_db.training.trainer import resolve_device, resolve_precision, train_lm

    dev = resolve_device(device)
    precision = resolve_precision(manifest.train.precision, dev)
    source = build_source(manifest, workspace)
    status = status.model_copy(update={
        "device": str(dev), "precision": precision, "entropy_rate": source.entropy_rate,
    })
    workspace.write_status(status)
    outcome = train_lm(manifest, source, workspace, device=dev, precision=precision, status=status,
                       stop=stop, progress=progress)
    step = workspace.read_status(manifest.run_id).step  # the trainer advanced it
    update: dict[str, Any] = {"status": outcome.state, "step": step, "updated_at": utc_now()}
    if outcome.state == RunState.DIVERGED:
        update |= {"diverged_at_step": outcome.diverged_at_step, "finished_at": utc_now(),
                   "error": f"loss became NaN or Inf at step {outcome.diverged_at_step}"}
    elif outcome.state == RunState.FINISHED:
        update["finished_at"] = utc_now()
    status = status.model_copy(update=update)
    workspace.write_status(status)
    return status


def _solve(workspace: Workspace, manifest: RunManifest, status: RunStatus, solve: Solver) -> RunStatus:
    t0 = time.perf_counter()
    result = solve(manifest, workspace)
    record = CheckpointRecord(
        run_id=manifest.run_id, step=1, tokens=manifest.tokens,
        flops_6n_nonembed=None, flops_6n=None, flops_exact=None,
        train_loss=result.train_loss, eval_loss=result.eval_loss, lr=None,
        wall_time_s=time.perf_counter() - t0, tokens_per_s=None, metrics=dict(result.metrics),
    )
    log_path = workspace.log_path(manifest.run_id)
    if not any(r.step == 1 for r in repair_log(log_path)):
        with open(log_path, "ab") as fh:
            append_record(fh, record)
    status = status.model_copy(update={
        "status": RunState.FINISHED, "step": 1, "entropy_rate": result.entropy_rate,
        "finished_at": utc_now(), "updated_at": utc_now(), "device": "cpu",
    })
    workspace.write_status(status)
    return status
