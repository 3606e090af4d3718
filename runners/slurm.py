"""The Slurm runner: a sweep's pending runs as one submitit job array, with requeue on preemption.

Each array task is a `SlurmRunTask` (a submitit `Checkpointable`) that calls
`scaling_db.training.execute.execute_run` for one run id on the compute node; the workspace must be on a
filesystem the nodes share. Nothing here trains or writes the database.

Preemption and time limits: submitit submits with `--signal=USR2@<signal_delay_s>`; when the
signal arrives (Slurm preempts the job, its time limit nears, or `scancel --signal=USR2`),
submitit calls `checkpoint()`. The run trains in a thread of the job's Python process so that
the signal handler (always on the main thread) can ask it to stop: the trainer polls the stop
flag every step, saves `state.pt` and ends `pending`; then `checkpoint()` returns the same task
and submitit requeues the job. On restart (same job id, `SLURM_RESTART_COUNT` + 1)
`execute_run` resumes from `state.pt`; the log never gets a checkpoint twice (the trainer skips
steps already logged). Any other restart (`scontrol requeue`, a node failure, a job that ran
on after its requeue) also just resumes from the last saved state: tasks are idempotent.

Use `time_min` >= 60 for runs that may be preempted: submitit counts a USR2 as a time-out (at
most `max_num_timeout` requeues) once the job has run `min(0.8 T, T - 10 min)` of its limit T.

Waiting (`wait=True`): one `sacct` call every `poll_s` seconds for all jobs; as each job ends,
the run's status file says how it went and `on_run_done(run_id)` runs in this process (the CLI
ingests there). A job that ends without its run in a final state (killed, out of memory) marks
the run failed. Ctrl-C only stops waiting: the jobs keep running on the cluster.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
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
from scaling_db.training.execute import SourceBuilder, build_token_source
from scaling_db.training.records import RunStatus
from scaling_db.workspace import Workspace

try:  # submitit is an optional dependency (pip install 'scaledb[slurm]')
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - reported by _submitit() when the backend is used
    _Checkpointable = object  # type: ignore[misc,assignment]

#: Job states after which a Slurm job will not run again. (`sacct` also says PREEMPTED for a
#: few seconds while a job preempted under PreemptMode=REQUEUE is already pending again:
#: `slurm_job_states` asks `squeue` about those.)
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "BOOT_FAIL", "DEADLINE", "REVOKED", "PREEMPTED")
#: States in which a job still holds (or will hold) its run.
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
                 "SUSPENDED", "CONFIGURING", "COMPLETING", "STOPPED", "SIGNALING",
                 "RESV_DEL_HOLD", "STAGE_OUT")
#: How long `checkpoint()` waits for the run to save its state (the trainer stops at the next
#: step). Slurm's grace time after a preemption signal is usually 30 s or more.
CHECKPOINT_WAIT_S = 60.0


def _submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise BackendError(f"the Slurm backend needs submitit ({exc}): pip install 'scaledb[slurm]'") from None
    return submitit


@dataclass
class SlurmOptions:
    """Where and how big each array task is; None leaves the choice to the cluster's defaults.

    Filled from the spec's `cluster:` section, then overridden by command-line options
    (`runners.contract.build_options`).
    """

    partition: str | None = None
    time_min: int = 60
    cpus: int = 1
    gpus: float = 0  # whole GPUs per node (a float only because the spec shares the field with Ray)
    mem_gb: float | None = None
    array_parallelism: int | None = None
    signal_delay_s: int | None = None  # submitit's default: 90
    max_num_timeout: int = 3
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (module load ...)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {'exclusive': True}

    def executor_parameters(self, name: str) -> dict[str, Any]:
        if self.gpus != int(self.gpus):
            raise BackendError(f"Slurm allocates whole GPUs (gpus: {self.gpus}); fractions are for Ray")
        params: dict[str, Any] = {"name": name, "timeout_min": self.time_min, "cpus_per_task": self.cpus}
        optional = {
            "slurm_partition": self.partition, "mem_gb": self.mem_gb,
            "gpus_per_node": int(self.gpus) or None, "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s, "slurm_account": self.account,
            "slurm_qos": self.qos, "slurm_constraint": self.constraint,
            "slurm_setup": self.setup or None, "slurm_additional_parameters": self.sbatch or None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


class SlurmRunTask(_Checkpointable):
    """One array task: execute one run; on USR2, save the run's state and requeue.

    Pickled by submitit with its settings only; the thread and stop flag exist only while
    `__call__` runs in the job.
    """

    def __init__(self, root: str, *, device: str = "auto", threads: int | None = None,
                 retry_failed: bool = False, build_source: SourceBuilder = build_token_source):
        self.root, self.device, self.threads = root, device, threads
        self.retry_failed, self.build_source = retry_failed, build_source
        self._flag: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_flag", "_thread")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _flag=None, _thread=None)

    def __call__(self, run_id: str) -> dict[str, Any]:
        job_id = _submitit().JobEnvironment().job_id
        self._flag = threading.Event()
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["status"] = execute_on_worker(
                    self.root, run_id, backend="slurm", job_id=job_id, device=self.device,
                    threads=self.threads, retry_failed=self.retry_failed, flag=self._flag,
                    build_source=self.build_source)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                outcome["error"] = exc

        # Daemon: if the job must exit before the run stopped, it still exits (the run resumes
        # from its last saved state).
        self._thread = threading.Thread(target=target, name=f"scaledb-{run_id}", daemon=True)
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(0.5)  # wakes for signals: submitit's USR2 handler runs here
        if "error" in outcome:
            raise outcome["error"]
        return outcome["status"]

    def checkpoint(self, run_id: str) -> Any:
        """Called by submitit on USR2: stop the run at its next step (state saved), then requeue."""
        if self._flag is not None:
            self._flag.set()
        if self._thread is not None:
            self._thread.join(CHECKPOINT_WAIT_S)
        fresh = SlurmRunTask(self.root, device=self.device, threads=self.threads,
                             retry_failed=self.retry_failed, build_source=self.build_source)
        return _submitit().helpers.DelayedSubmission(fresh, run_id)


# ---------------------------------------------------------------------------------------------
# Talking to Slurm
# ---------------------------------------------------------------------------------------------


def _slurm_command(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BackendError(f"{args[0]} not found: Slurm's client tools are not installed here") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{' '.join(args[:2])} did not answer in {timeout:.0f} s: is slurmctld up?") from None


def slurm_job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """job id (`123` or `123_4`) -> Slurm state (`PENDING`, `RUNNING`, `COMPLETED`, ...), one `sacct` call.

    Jobs that neither `sacct` nor `squeue` knows are left out.
    Queued array tasks are reported by `sacct` as ranges (`123_[4-7]`) and expanded here.
    """
    if not job_ids:
        return {}
    mains = sorted({j.split("_")[0] for j in job_ids})
    out = _slurm_command(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(mains)])
    if out.returncode:
        raise BackendError(f"sacct failed: {out.stderr.strip() or out.stdout.strip()}")
    from submitit.slurm.slurm import SlurmInfoWatcher

    info = SlurmInfoWatcher(delay_s=0).read_info(out.stdout)
    # "CANCELLED by 0" -> "CANCELLED"
    states = {j: info[j]["State"].split()[0] for j in job_ids if j in info and info[j].get("State")}
    # Just submitted (slurmctld knows jobs before slurmdbd does), or preempted and maybe
    # requeued: the controller's queue has the current word on these.
    missing = [j for j in job_ids if states.get(j, "PREEMPTED") == "PREEMPTED"]
    if missing:
        queue = _slurm_command(["squeue", "--array", "-h", "-o", "%i|%T",
                                "-j", ",".join(sorted({j.split("_")[0] for j in missing}))])
        for line in queue.stdout.splitlines():  # (it fails only for ids it does not know)
            job, _, state = line.strip().partition("|")
            if job in missing and state:
                states[job] = state
    return states


_SCANCEL_HARMLESS = re.compile(r"already completing or completed|Invalid job id specified")


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel jobs (queued or running); jobs that already ended are not an error."""
    if not job_ids:
        return
    out = _slurm_command(["scancel", *job_ids])
    problems = [line for line in out.stderr.splitlines() if line.strip() and not _SCANCEL_HARMLESS.search(line)]
    if out.returncode and problems:
        raise BackendError(f"scancel failed: {'; '.join(problems)}")


def _active_jobs(statuses: list[RunStatus]) -> dict[str, str]:
    """Runs whose recorded Slurm job is still queued or running (not to be submitted twice)."""
    recorded = {s.run_id: s.job_id for s in statuses if s.backend == "slurm" and s.job_id}
    if not recorded:
        return {}
    states = slurm_job_states(list(recorded.values()))
    return {r: j for r, j in recorded.items() if states.get(j, "").startswith(ACTIVE_STATES)}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def default_folder(workspace: Workspace, run_ids: Sequence[str]) -> Path:
    """`<workspace>/slurm/<experiment>` (or `sweep-<time>` for runs of several experiments)."""
    experiments = {workspace.load_manifest(r).experiment for r in run_ids}
    name = experiments.pop() if len(experiments) == 1 else datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    return workspace.root / "slurm" / name


def run_slurm(
    workspace: Workspace,
    run_ids: Sequence[str],
    options: SlurmOptions | None = None,
    *,
    device: str = "auto",
    force: bool = False,
    retry_failed: bool = False,
    wait: bool = True,
    folder: str | Path | None = None,
    on_run_done: Callable[[str], None] | None = None,
    progress: ProgressSink | None = None,
    build_source: SourceBuilder = build_token_source,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> RunReport:
    """Submit the runs that need it as one job array; with `wait`, follow them to the end.

    Runs already done are skipped (unless `force` / `retry_failed`, as with the local runner);
    runs whose recorded job is still queued or running are not submitted again. `build_source`
    (picklable; by value for functions of modules the job cannot import) makes each run's
    token stream in the job (tests pass a fake). `timeout_s` bounds the wait (BackendError).
    """
    options = options or SlurmOptions()
    report, todo = plan_runs(workspace, run_ids, backend="slurm", force=force, retry_failed=retry_failed,
                             active=_active_jobs)
    report.waited = wait
    if not todo:
        return report
    submitit = _submitit()
    folder = Path(folder) if folder is not None else default_folder(workspace, todo)
    report.folder = str(folder)
    experiment = workspace.load_manifest(todo[0]).experiment
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=options.max_num_timeout)
    try:
        executor.update_parameters(**options.executor_parameters(f"scaledb-{experiment}"))
    except ValueError as exc:
        raise BackendError(f"invalid Slurm options: {exc}") from None
    task = SlurmRunTask(str(workspace.root.resolve()), device=device, threads=options.cpus,
                        retry_failed=retry_failed, build_source=build_source)
    try:
        jobs = executor.map_array(task, todo)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or getattr(exc, "output", None) or exc
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise BackendError(f"sbatch rejected the job array: {str(detail).strip()}") from None
    except Exception as exc:  # submitit wraps sbatch failures in its own error types
        if type(exc).__module__.startswith("submitit"):
            raise BackendError(f"sbatch rejected the job array: {exc}") from None
        raise
    by_run = dict(zip(todo, jobs))
    for run_id, job in by_run.items():
        report.jobs[run_id] = job.job_id
        report.statuses[run_id] = record_submission(workspace, run_id, "slurm", job.job_id)
    if wait:
        wait_slurm(workspace, by_run, report, on_run_done=on_run_done, progress=progress,
                   poll_s=poll_s, timeout_s=timeout_s)
    return report


def _job_error(job: Any, state: str) -> str:
    """Why a job ended without finishing its run: its exception if it wrote one, else its state."""
    try:
        if job.paths.result_pickle.exists():
            exc = job.exception()
            if exc is not None:
                lines = [line for line in str(exc).strip().splitlines() if line.strip()]
                return f"Slurm job {job.job_id}: {lines[-1] if lines else type(exc).__name__}"
    except Exception:  # noqa: BLE001 - an unreadable result is reported by its state below
        pass
    return f"Slurm job {job.job_id} ended {state} (log: {job.paths.stderr})"


def wait_slurm(
    workspace: Workspace, jobs: dict[str, Any], report: RunReport, *,
    on_run_done: Callable[[str], None] | None = None, progress: ProgressSink | None = None,
    poll_s: float = 2.0, timeout_s: float | None = None,
) -> RunReport:
    """Follow submitted jobs (run_id -> submitit job) until each has ended; see the module docstring."""
    follower = StatusFollower(workspace, list(jobs), progress)
    follower.start(len(report.skipped))
    left = dict(jobs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while left:
            try:
                states = slurm_job_states([j.job_id for j in left.values()])
            except BackendError as exc:  # sacct hiccup: keep waiting; results files still count
                print(f"scaledb: {exc}", file=sys.stderr)
                states = {}
            for run_id, job in list(left.items()):
                state = states.get(job.job_id, "")
                # A result file is written when the task returns or raises (never on requeue).
                ended = state.startswith(FINAL_STATES) or job.paths.result_pickle.exists()
                if not ended:
                    continue
                del left[run_id]
                status = workspace.read_status(run_id)
                if not status.status.done:
                    why = _job_error(job, state or "without a result")
                    status = settle_ended_job(workspace, run_id, cancelled=state.startswith("CANCELLED"), why=why)
                    if not status.status.done:
                        report.errors[run_id] = why if not state.startswith("CANCELLED") else "cancelled"
                finish_run(report, run_id, status, on_run_done, follower)
            follower.poll(list(left))
            if left:
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendError(
                        f"{len(left)} Slurm jobs still not done after {timeout_s:.0f} s "
                        f"({', '.join(j.job_id for j in left.values())}); they keep running: "
                        "follow them with `scaledb status`.")
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # The jobs belong to the cluster now: stop watching, but neither cancel nor call the
        # runs interrupted (they go on; `scaledb status` follows them, `scaledb cancel` stops them).
        report.waited = False
    finally:
        follower.close()
    for run_id in left:
        report.statuses[run_id] = workspace.read_status(run_id)
    return report
