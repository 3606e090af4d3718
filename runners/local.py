"""The local runner: run a sweep's manifests on this machine, one process per CPU share or GPU.

It holds no training logic: it decides which runs need running, places them onto workers and
calls `scaling_db.training.execute.execute_run` there. Placement:
- CPU: `workers` processes (default: cores // the largest `resources.threads` of the runs), each
  with max(1, cores // workers) torch threads (two 1-thread processes beat one 2-thread
  process for tiny models: DESIGN.md, measured 1.96x);
- CUDA: one process per visible GPU, each pinned with CUDA_VISIBLE_DEVICES.
With one worker the runs execute in this process (no start-up cost, plain tracebacks).

Workers are spawned (never forked: torch's thread pools do not survive a fork) and pull run ids
from a queue, so a long run never holds up the short ones behind it. Ctrl-C sets a shared stop
flag: each worker's current run saves its state at the next step boundary and is left
`pending`; a second Ctrl-C terminates the workers, whose runs resume from their last saved
state. A worker that dies (out of memory, killed) marks its run `failed` and is replaced.
`on_run_done(run_id)` is called in this process as each run reaches a final state.
`scaledb cancel` (a `cancel` file in the run's folder, see `runners.cluster`) stops a chosen
run the same way, or keeps a queued one from starting.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from runners.cluster import StopRequest, cancel_requested, clear_cancel
from scaling_db.errors import RunError, ScaledbError
from scaling_db.training.execute import execute_run, split_pending
from scaling_db.training.upstream import add_pending_upstream, order_waves
from scaling_db.training.records import RunState, RunStatus, utc_now
from scaling_db.workspace import Workspace

Device = Literal["auto", "cpu", "cuda"]


class ProgressSink(Protocol):
    """Where the runner reports progress (the CLI passes a `RichProgress`)."""

    def start(self, total_steps: int, runs: int, skipped: int) -> None: ...
    def run_started(self, run_id: str, name: str, steps: int) -> None: ...
    def update(self, run_id: str, step: int, steps: int, tokens_per_s: float | None) -> None: ...
    def run_done(self, run_id: str, status: RunStatus | None) -> None: ...
    def close(self) -> None: ...


@dataclass
class LocalRunReport:
    """What happened: final statuses (skipped runs included), runner-level errors, interruption."""

    statuses: dict[str, RunStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    def count(self, state: RunState) -> int:
        return sum(1 for s in self.statuses.values() if s.status == state)


@dataclass(frozen=True)
class Placement:
    workers: int
    threads: int
    gpus: list[int] | None  # one GPU index per worker when running on CUDA


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_placement(n_runs: int, *, workers: int | None, device: Device, threads_per_run: int = 1) -> Placement:
    """How many worker processes, with how many torch threads each, on which GPUs."""
    cores = available_cores()
    gpus = 0
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
        if device == "cuda" and gpus == 0:
            raise RunError("--device cuda, but torch sees no CUDA device. Use --device cpu or auto.")
    if gpus:
        n = min(workers or gpus, gpus, max(1, n_runs))
        return Placement(n, max(1, cores // n), list(range(n)))
    n = workers or max(1, cores // max(1, threads_per_run))
    n = max(1, min(n, n_runs))
    return Placement(n, max(1, cores // n), None)


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


def _worker_loop(
    index: int, root: str, tasks: Any, results: Any, stop: Any, threads: int, gpu: int | None,
    device: str, force: bool, retry_failed: bool, worker_init: Callable[[], None] | None,
) -> None:
    # The driver owns Ctrl-C: it sets `stop`, and runs end at a step boundary with state saved.
    # SIGTERM (sent to the whole process group, e.g. by a job scheduler) stops the same way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if worker_init is not None:
        worker_init()
    workspace = Workspace(root)
    results.put(("ready", index))

    def progress(p: Any) -> None:
        results.put(("progress", index, p.run_id, p.step, p.steps, p.tokens_per_s))

    parent = os.getppid()

    def should_stop() -> bool:
        # An orphaned worker (the driver was killed) saves its run and leaves too.
        return terminated.is_set() or stop.is_set() or os.getppid() != parent

    while not should_stop():
        run_id = tasks.get()
        if run_id is None:
            break
        results.put(("start", index, run_id))
        if cancel_requested(workspace, run_id):  # `scaledb cancel` while it waited: do not start
            results.put(("done", index, run_id, workspace.read_status(run_id).model_dump(mode="json")))
            continue
        cancel = StopRequest(workspace, run_id)
        try:
            status = execute_run(workspace, run_id, device=device, threads=threads, force=force,
                                 retry_failed=retry_failed, stop=lambda: should_stop() or cancel(),
                                 progress=progress)
            results.put(("done", index, run_id, status.model_dump(mode="json")))
        except Exception as exc:  # a run the executor could not even start (locked, no manifest)
            results.put(("error", index, run_id, f"{type(exc).__name__}: {exc}"))
    results.put(("exit", index))


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


class _StopOnFirstInterrupt:
    """First Ctrl-C (or SIGTERM) sets a flag: runs stop cleanly at a step boundary; a second Ctrl-C raises."""

    def __init__(self) -> None:
        self.flag = threading.Event()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopOnFirstInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.flag.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_local(
    workspace: Workspace,
    run_ids: Sequence[str],
    *,
    workers: int | None = None,
    device: Device = "auto",
    force: bool = False,
    retry_failed: bool = False,
    on_run_done: Callable[[str], None] | None = None,
    progress: ProgressSink | None = None,
    worker_init: Callable[[], None] | None = None,
) -> LocalRunReport:
    """Execute the runs that need it (pending, interrupted; all with `force`; failed with `retry_failed`).

    `worker_init` (a picklable top-level function) runs first in every process that executes
    runs, e.g. to register a data source in tests. Returns when every run is done or, after
    Ctrl-C, when every worker has saved its state.
    """
    report = LocalRunReport()
    pending, done = split_pending(workspace, run_ids, force=force, retry_failed=retry_failed)
    todo = [status.run_id for status in pending]
    report.statuses.update(done)
    report.skipped.extend(done)
    manifests = {r: workspace.load_manifest(r) for r in todo}
    # unfinished upstream runs (teachers) join the work, in waves that finish before their students
    manifests = add_pending_upstream(workspace, manifests, retry_failed=retry_failed)
    todo = list(manifests)
    for run_id in todo:  # a new request to run supersedes an earlier `scaledb cancel`
        clear_cancel(workspace, run_id)
    steps = {r: (m.train.steps if m.train.kind == "lm" else 1) for r, m in manifests.items()}
    threads_per_run = max((m.resources.threads for m in manifests.values()), default=1)
    if progress is not None:
        progress.start(sum(steps.values()), len(todo), len(report.skipped))
    if not todo:
        if progress is not None:
            progress.close()
        return report
    names = {r: m.name for r, m in manifests.items()}
    try:
        for wave in order_waves(manifests):
            placement = plan_placement(len(wave), workers=workers, device=device, threads_per_run=threads_per_run)
            if placement.workers == 1 and placement.gpus is None:
                _run_in_process(workspace, wave, placement, device, force, retry_failed, on_run_done,
                                progress, worker_init, report, names, steps)
            else:
                _run_pool(workspace, wave, placement, device, force, retry_failed, on_run_done,
                          progress, worker_init, report, names, steps)
            if report.interrupted:
                break
    finally:
        if progress is not None:
            progress.close()
    return report


def _finish(report: LocalRunReport, run_id: str, status: RunStatus,
            on_run_done: Callable[[str], None] | None, progress: ProgressSink | None) -> None:
    report.statuses[run_id] = status
    if progress is not None:
        progress.run_done(run_id, status)
    if status.status.done and on_run_done is not None:
        on_run_done(run_id)


def _run_in_process(
    workspace: Workspace, todo: list[str], placement: Placement, device: str, force: bool,
    retry_failed: bool, on_run_done: Callable[[str], None] | None, progress: ProgressSink | None,
    worker_init: Callable[[], None] | None, report: LocalRunReport, names: dict[str, str],
    steps: dict[str, int],
) -> None:
    if worker_init is not None:
        worker_init()

    def on_progress(p: Any) -> None:
        if progress is not None:
            progress.update(p.run_id, p.step, p.steps, p.tokens_per_s)

    with _StopOnFirstInterrupt() as interrupt:
        for run_id in todo:
            if interrupt.flag.is_set():
                break
            if progress is not None:
                progress.run_started(run_id, names[run_id], steps[run_id])
            if cancel_requested(workspace, run_id):
                _finish(report, run_id, workspace.read_status(run_id), on_run_done, progress)
                continue
            cancel = StopRequest(workspace, run_id, interrupt.flag)
            try:
                status = execute_run(workspace, run_id, device=device, threads=placement.threads, force=force,
                                     retry_failed=retry_failed, stop=cancel, progress=on_progress)
            except KeyboardInterrupt:
                report.interrupted = True
                report.statuses[run_id] = workspace.read_status(run_id)
                return
            except ScaledbError as exc:
                report.errors[run_id] = str(exc)
                if progress is not None:
                    progress.run_done(run_id, None)
                continue
            _finish(report, run_id, status, on_run_done, progress)
        report.interrupted = interrupt.flag.is_set()


def _run_pool(
    workspace: Workspace, todo: list[str], placement: Placement, device: str, force: bool,
    retry_failed: bool, on_run_done: Callable[[str], None] | None, progress: ProgressSink | None,
    worker_init: Callable[[], None] | None, report: LocalRunReport, names: dict[str, str],
    steps: dict[str, int],
) -> None:
    ctx = mp.get_context("spawn")
    tasks, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    for run_id in todo:
        tasks.put(run_id)
    for _ in range(placement.workers):
        tasks.put(None)  # one "no more work" per worker
    # On CUDA, torch in the worker sees only its GPU, as cuda:0.
    worker_device = "cuda" if placement.gpus is not None else device

    def spawn(index: int) -> Any:
        gpu = placement.gpus[index] if placement.gpus is not None else None
        proc = ctx.Process(
            target=_worker_loop, name=f"scaledb-worker-{index}", daemon=True,
            args=(index, str(workspace.root), tasks, results, stop, placement.threads, gpu,
                  worker_device, force, retry_failed, worker_init),
        )
        proc.start()
        return proc

    procs: dict[int, Any] = {}
    current: dict[int, str | None] = dict.fromkeys(range(placement.workers))
    exited: set[int] = set()
    ready: set[int] = set()  # workers that got as far as taking work
    hard_stop = False
    callbacks = {"on_run_done": on_run_done}

    def handle(msg: tuple) -> None:
        kind, index = msg[0], msg[1]
        if kind == "start":
            current[index] = msg[2]
            if progress is not None:
                progress.run_started(msg[2], names.get(msg[2], msg[2]), steps.get(msg[2], 0))
        elif kind == "progress":
            if progress is not None:
                progress.update(msg[2], msg[3], msg[4], msg[5])
        elif kind == "done":
            current[index] = None
            _finish(report, msg[2], RunStatus.model_validate(msg[3]), callbacks["on_run_done"], progress)
        elif kind == "error":
            current[index] = None
            report.errors[msg[2]] = msg[3]
            if progress is not None:
                progress.run_done(msg[2], None)
        elif kind == "ready":
            ready.add(index)
        elif kind == "exit":
            exited.add(index)

    def check_dead() -> None:
        for index, proc in list(procs.items()):
            if index in exited or proc.is_alive():
                continue
            # Died without saying goodbye: give its message queue a moment, then blame its run.
            proc.join()
            drain(0.05)
            if index in exited:
                continue
            run_id = current.get(index)
            exited.add(index)
            if run_id is not None:
                why = f"worker process died (exit code {proc.exitcode}; killed, or out of memory?)"
                status = workspace.read_status(run_id).model_copy(
                    update={"status": RunState.FAILED, "error": why, "finished_at": utc_now(), "updated_at": utc_now()})
                workspace.write_status(status)
                current[index] = None
                _finish(report, run_id, status, callbacks["on_run_done"], progress)
            if index not in ready:
                # It never started: a replacement would fail the same way.
                raise RunError(f"a worker process could not start (exit code {proc.exitcode}); "
                               "run with --workers 1 to see the error")
            if not stop.is_set():  # replace it so the queue keeps draining
                exited.discard(index)
                ready.discard(index)
                procs[index] = spawn(index)
                current[index] = None

    def drain(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                handle(results.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return

    deferred: Exception | None = None

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # handled below as a Ctrl-C: stop cleanly

    previous_term = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        try:
            for i in range(placement.workers):
                procs[i] = spawn(i)
        except KeyboardInterrupt:
            report.interrupted = True
            stop.set()
        while len(exited) < len(procs):
            try:
                drain(0.25)
                check_dead()
            except KeyboardInterrupt:
                if stop.is_set():
                    raise
                report.interrupted = True
                stop.set()  # runs save their state at the next step and come back pending
            except Exception as exc:
                # on_run_done raised: let the workers save their runs, then raise it.
                if deferred is None:
                    deferred = exc
                callbacks["on_run_done"] = None
                stop.set()
    except BaseException:
        # A second Ctrl-C: stop now. Runs resume from their last saved state.
        hard_stop = True
        stop.set()
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        for proc in procs.values():
            proc.join(timeout=10 if not hard_stop else 2)
        if hard_stop:
            for run_id in filter(None, current.values()):
                status = workspace.read_status(run_id)
                if status.status == RunState.RUNNING:
                    workspace.write_status(status.model_copy(update={"status": RunState.PENDING, "updated_at": utc_now()}))
        tasks.cancel_join_thread()
        results.cancel_join_thread()
    if deferred is not None:
        raise deferred
    report.interrupted = report.interrupted or stop.is_set()


# ---------------------------------------------------------------------------------------------
# Progress display
# ---------------------------------------------------------------------------------------------


class RichProgress:
    """Runs done / total with an ETA (by training steps), and a line per run in flight."""

    def __init__(self, console: Any = None):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._overall: Any = None
        self._tasks: dict[str, Any] = {}
        self._done_steps: dict[str, int] = {}
        self._runs = 0
        self._finished = 0

    def start(self, total_steps: int, runs: int, skipped: int) -> None:
        self._runs = runs
        self._progress.start()
        detail = f"{skipped} already done" if skipped else ""
        self._overall = self._progress.add_task(self._overall_text(), total=max(1, total_steps), detail=detail)

    def _overall_text(self) -> str:
        return f"[bold]runs {self._finished}/{self._runs}"

    def run_started(self, run_id: str, name: str, steps: int) -> None:
        self._tasks[run_id] = self._progress.add_task(f"  {name}", total=max(1, steps), detail="starting")
        self._done_steps.setdefault(run_id, 0)

    def update(self, run_id: str, step: int, steps: int, tokens_per_s: float | None) -> None:
        task = self._tasks.get(run_id)
        if task is None:
            return
        rate = f"{tokens_per_s / 1e3:,.1f}k tok/s" if tokens_per_s else ""
        self._progress.update(task, completed=step, total=steps, detail=f"step {step}/{steps} {rate}")
        delta = step - self._done_steps.get(run_id, 0)
        self._done_steps[run_id] = step
        self._progress.advance(self._overall, max(0, delta))

    def run_done(self, run_id: str, status: RunStatus | None) -> None:
        task = self._tasks.pop(run_id, None)
        if task is not None:
            self._progress.remove_task(task)
        if status is not None and status.status.done:
            self._finished += 1
        self._progress.update(self._overall, description=self._overall_text())

    def close(self) -> None:
        self._progress.stop()
