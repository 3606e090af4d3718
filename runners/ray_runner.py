"""The Ray runner: each pending run is one Ray task with a resource request, retried if its worker dies.

(Not `runners/ray.py`: a module named `ray` inside this package would be easy to confuse with
Ray itself in imports and tracebacks.)

Each task calls `scaling_db.training.execute.execute_run` for one run id on whichever node Ray picks;
the workspace must be on a filesystem every node sees. Nothing here trains or writes the
database.

Cluster: `address=None` starts a local instance for this call (and stops it after), with
usage stats off and no dashboard; `address="auto"` or `"ray://host:10001"` / `"host:6379"`
joins an existing cluster, whose nodes must have scaledb installed (same version). If Ray is
already initialised in this process (a notebook, the tests), that connection is used as is.

Resumption: a task whose worker process dies (killed, out of memory, node lost) is run again
by Ray, up to `max_retries` times; `execute_run` then resumes the run from its `state.pt`
(the dead process's lock went with it), and the log never gets a checkpoint twice. A run
that fails by itself (an exception, NaN losses) is not retried: its status says why, and
`--retry-failed` runs it again.

The driver waits on the tasks and calls `on_run_done(run_id)` in this process as each run
ends (the CLI ingests there). Ctrl-C asks every run in flight to stop (through its `cancel`
file: state saved, run left `pending`) and waits for that; a second Ctrl-C cancels the tasks
at once (runs resume from their last saved state).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runners.contract import ProgressSink, RunReport
from runners.cluster import (
    StatusFollower,
    execute_on_worker,
    finish_run,
    plan_runs,
    record_submission,
    settle_ended_job,
)
from scaling_db.errors import BackendError
from scaling_db.training.control import clear_cancel, request_cancel
from scaling_db.training.execute import SourceBuilder, build_token_source
from scaling_db.workspace import Workspace

#: A local instance's object store: the runs send back only their status, so keep it small
#: rather than Ray's default of 30 % of RAM.
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2
#: After the first Ctrl-C, how long to wait for runs to save their state before cancelling.
STOP_WAIT_S = 60.0


@dataclass
class RayOptions:
    """What each task asks for, and which cluster; from the spec's `cluster:` section and the CLI."""

    address: str | None = None  # None: start a local instance
    cpus: float = 1  # num_cpus per task (also the run's torch threads, rounded, at least 1)
    gpus: float = 0  # num_gpus per task
    mem_gb: float | None = None  # Ray's `memory` resource per task (used for scheduling only)
    max_retries: int = 3  # re-runs of a task whose worker died
    local_cpus: int | None = None  # CPUs of a local instance [default: all]


def _import_ray() -> Any:
    # No network on many clusters' compute nodes; and a local instance needs no auth token
    # (Ray >= 2.5x otherwise writes one to ~/.ray). Users can still set both themselves.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise BackendError(f"the Ray backend needs ray ({exc}): pip install 'scaledb[ray]'") from None
    return ray


def connect(options: RayOptions) -> tuple[Any, bool]:
    """The `ray` module, connected; and whether this call started (and must shut down) Ray."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    try:
        if options.address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", num_cpus=options.local_cpus, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any start/connect failure is "cluster unreachable"
        where = "start a local Ray instance" if options.address is None else f"connect to Ray at {options.address}"
        raise BackendError(f"cannot {where}: {type(exc).__name__}: {exc}") from None
    return ray, True


def _ray_task(root: str, run_id: str, device: str, threads: int, retry_failed: bool,
              build_source: SourceBuilder) -> dict[str, Any]:
    """The body of every task (module level, so workers import it rather than unpickle it)."""
    import ray

    return execute_on_worker(root, run_id, backend="ray", job_id=ray.get_runtime_context().get_task_id(),
                             device=device, threads=threads, retry_failed=retry_failed, build_source=build_source)


class _Interrupts:
    """Counts Ctrl-C in the driver (only on the main thread, where Python delivers signals)."""

    def __init__(self) -> None:
        self.count = 0
        self.previous: Any = None

    def __enter__(self) -> "_Interrupts":
        import signal

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_ray(
    workspace: Workspace,
    run_ids: Sequence[str],
    options: RayOptions | None = None,
    *,
    device: str = "auto",
    force: bool = False,
    retry_failed: bool = False,
    on_run_done: Callable[[str], None] | None = None,
    progress: ProgressSink | None = None,
    build_source: SourceBuilder = build_token_source,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> RunReport:
    """Run the runs that need it as Ray tasks and wait for all of them (see the module docstring).

    `build_source` (picklable) makes each run's token stream in the worker (tests pass a fake).
    `timeout_s` bounds the wait (then the tasks are cancelled and
    a BackendError raised).
    """
    options = options or RayOptions()
    report, todo = plan_runs(workspace, run_ids, backend="ray", force=force, retry_failed=retry_failed)
    if not todo:
        return report
    ray, started = connect(options)
    try:
        return _run(ray, workspace, todo, options, report, device=device, retry_failed=retry_failed,
                    on_run_done=on_run_done, progress=progress, build_source=build_source,
                    poll_s=poll_s, timeout_s=timeout_s)
    finally:
        if started:
            ray.shutdown()


def _submit(ray: Any, workspace: Workspace, todo: list[str], options: RayOptions, report: RunReport, *,
            device: str, retry_failed: bool, build_source: SourceBuilder) -> dict[Any, str]:
    """One task per run, each recorded in the report and the run's status; returns ref -> run_id."""
    resources: dict[str, Any] = {"num_cpus": options.cpus, "num_gpus": options.gpus,
                                 "max_retries": options.max_retries}
    if options.mem_gb:
        resources["memory"] = int(options.mem_gb * 1024**3)
    remote = ray.remote(**resources)(_ray_task)
    threads = max(1, int(options.cpus))
    root = str(workspace.root.resolve())
    refs: dict[Any, str] = {}
    for run_id in todo:
        name = workspace.load_manifest(run_id).name
        ref = remote.options(name=f"scaledb:{name}").remote(root, run_id, device, threads, retry_failed, build_source)
        refs[ref] = run_id
        report.jobs[run_id] = ref.task_id().hex()
        report.statuses[run_id] = record_submission(workspace, run_id, "ray", report.jobs[run_id])
    return refs


def _run(ray: Any, workspace: Workspace, todo: list[str], options: RayOptions, report: RunReport, *,
         device: str, retry_failed: bool, on_run_done: Callable[[str], None] | None,
         progress: ProgressSink | None, build_source: SourceBuilder,
         poll_s: float, timeout_s: float | None) -> RunReport:
    from ray.exceptions import RayError, RayTaskError

    refs = _submit(ray, workspace, todo, options, report, device=device, retry_failed=retry_failed,
                   build_source=build_source)
    follower = StatusFollower(workspace, todo, progress)
    follower.start(len(report.skipped))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    stop_requested_at: float | None = None
    cancelled = timed_out = False
    try:
        with _Interrupts() as interrupts:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=poll_s)
                for ref in ready:
                    run_id = refs.pop(ref)
                    try:
                        ray.get(ref)
                    except RayTaskError as exc:  # the task raised (e.g. the run is locked elsewhere)
                        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                        report.errors[run_id] = f"{type(cause).__name__}: {cause}"
                    except RayError as exc:  # cancelled by us, or the worker died max_retries + 1 times
                        why = "cancelled" if cancelled else (
                            f"Ray task failed after {options.max_retries} retries: {type(exc).__name__}")
                        settle_ended_job(workspace, run_id, cancelled=cancelled, why=why)
                        report.errors[run_id] = why
                    finish_run(report, run_id, workspace.read_status(run_id), on_run_done, follower)
                follower.poll(list(refs.values()))
                if interrupts.count and stop_requested_at is None:
                    # First Ctrl-C: every run in flight saves its state and ends pending.
                    report.interrupted = True
                    stop_requested_at = time.monotonic()
                    for run_id in refs.values():
                        request_cancel(workspace, run_id, reason="Ctrl-C in the Ray driver")
                too_slow = stop_requested_at is not None and time.monotonic() - stop_requested_at > STOP_WAIT_S
                if refs and deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                if refs and not cancelled and (interrupts.count > 1 or too_slow or timed_out):
                    # Second Ctrl-C (or no end in sight): kill the tasks; runs resume from saved state.
                    cancelled = True
                    for ref in refs:
                        ray.cancel(ref, force=True)
    finally:
        follower.close()
        if report.interrupted:  # the stop requests were for this driver's tasks only
            for run_id in todo:
                clear_cancel(workspace, run_id)
    if timed_out:
        raise BackendError(f"Ray runs not done after {timeout_s:.0f} s (tasks cancelled; the runs resume "
                           "from their saved state on the next `scaledb run`)")
    return report
