"""The local runner: run a sweep's manifests on this machine, one process per CPU share or GPU.

It holds no training logic: it decides which runs need running, places them onto workers and
calls `scaling_db.training.execute.execute_run` there. Placement:
- CPU: `workers` processes (default: cores // the largest `resources.threads` of the runs), each
  with max(1, cores // workers) torch threads (two 1-thread processes beat one 2-thread
  process for tiny models: two one-thread processes measured 1.96x one core);
- CUDA: one process per visible GPU, each pinned with CUDA_VISIBLE_DEVICES.
With one worker the runs execute in this process (no start-up cost, plain tracebacks).

Workers are spawned (never forked: torch's thread pools do not survive a fork) and pull run ids
from a queue, so a long run never holds up the short ones behind it. Ctrl-C sets a shared stop
flag: each worker's current run saves its state at the next step boundary and is left
`pending`; a second Ctrl-C terminates the workers, whose runs resume from their last saved
state. A worker that dies (out of memory, killed) marks its run `failed` and is replaced.
`on_run_done(run_id)` is called in this process as each run reaches a final state.
`scaledb cancel` (a `cancel` file in the run's folder, see `scaling_db.training.control`) stops a chosen
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
from typing import Any, Literal

from runners.contract import ProgressSink, RunReport
from scaling_db.errors import RunBusy, RunError, ScaledbError
from scaling_db.training.control import StopRequest, cancel_requested, clear_cancel
from scaling_db.training.execute import SourceBuilder, build_token_source, execute_run, lock_is_held, split_pending
from scaling_db.training.records import RunState, RunStatus, utc_now
from scaling_db.training.upstream import add_pending_upstream, order_waves
from scaling_db.workspace import Workspace

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Placement:
    workers: int
    threads: int
    gpus: list[int] | None  # the GPU index of each worker on CUDA (an index repeats for K runs per GPU)
    note: str | None = None  # something the user should hear about the placement


@dataclass(frozen=True)
class GpuInfo:
    index: int
    free_bytes: int
    total_bytes: int


def gpu_inventory() -> list[GpuInfo]:
    """The CUDA devices torch sees, with their free memory now (`torch.cuda.mem_get_info`)."""
    import torch

    return [GpuInfo(i, *torch.cuda.mem_get_info(i)) for i in range(torch.cuda.device_count())]


#: Memory left free on a GPU beside the runs' estimates (CUDA context, allocator slack, estimate error).
GPU_HEADROOM = 0.10


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_slots(inventory: list[GpuInfo], runs_per_device: int, run_bytes: int) -> list[int]:
    """One entry per worker: each GPU's index as many times as runs fit on it at once, at most
    `runs_per_device`, counting `run_bytes` (the runs' estimated peak) against its free memory."""
    per_gpu = []
    for gpu in inventory:
        usable = gpu.free_bytes - GPU_HEADROOM * gpu.total_bytes
        fit = runs_per_device if run_bytes <= 0 else int(max(0.0, usable) // run_bytes)
        per_gpu.append((gpu.index, min(runs_per_device, fit)))
    # round robin, so that fewer workers than slots still spread over the GPUs
    return [index for k in range(runs_per_device) for index, n in per_gpu if k < n]


def plan_placement(n_runs: int, *, workers: int | None, device: Device, threads_per_run: int = 1,
                   runs_per_device: int = 1, run_bytes: int = 0,
                   inventory: list[GpuInfo] | None = None) -> Placement:
    """How many worker processes, with how many torch threads each, on which GPUs.

    On CUDA, up to `runs_per_device` runs share each GPU, as many as its free memory holds
    (`run_bytes` each); `inventory` (default: what torch sees) lets tests fake the devices.
    """
    cores = available_cores()
    if device == "cpu":
        inventory = []
    elif inventory is None:
        inventory = gpu_inventory()
    if device == "cuda" and not inventory:
        raise RunError("--device cuda, but torch sees no CUDA device. Use --device cpu or auto.")
    if inventory:
        slots = gpu_slots(inventory, runs_per_device, run_bytes)
        if not slots:
            free = max(g.free_bytes for g in inventory) / 2**30
            raise RunError(f"no GPU has memory for a run ({run_bytes / 2**30:.1f} GiB estimated vs {free:.1f} GiB "
                           "free at most). Free GPU memory, or run smaller models.")
        n = min(workers or len(slots), len(slots), max(1, n_runs))
        note = None
        if len(slots) < runs_per_device * len(inventory):
            note = (f"{len(slots)} runs at once on {len(inventory)} GPU(s), not {runs_per_device} per GPU: "
                    f"free memory holds no more ({run_bytes / 2**30:.2f} GiB per run estimated)")
        return Placement(n, max(1, cores // n), slots[:n], note)
    n = workers or max(1, cores // max(1, threads_per_run))
    n = max(1, min(n, n_runs))
    note = ("--runs-per-device applies to GPUs; on CPU, runs share the cores (--workers)"
            if runs_per_device > 1 else None)
    return Placement(n, max(1, cores // n), None, note)


@dataclass(frozen=True)
class _Settings:
    """How every run of one `run_local` call executes (sent to each worker process)."""

    root: str
    device: str
    threads: int
    force: bool
    retry_failed: bool
    build_source: SourceBuilder


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


def _worker_loop(index: int, settings: _Settings, gpu: int | None, tasks: Any, results: Any, stop: Any) -> None:
    # The driver owns Ctrl-C: it sets `stop`, and runs end at a step boundary with state saved.
    # SIGTERM (sent to the whole process group, e.g. by a job scheduler) stops the same way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    workspace = Workspace(settings.root)
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
            status = _execute(workspace, run_id, settings, lambda: should_stop() or cancel(), progress)
            results.put(("done", index, run_id, status.model_dump(mode="json")))
        except RunBusy:  # another process took it since the driver looked: the driver waits for it
            results.put(("busy", index, run_id))
        except Exception as exc:  # a run the executor could not even start (no manifest, disk full)
            results.put(("error", index, run_id, f"{type(exc).__name__}: {exc}"))
    results.put(("exit", index))


def _execute(workspace: Workspace, run_id: str, settings: _Settings, stop: Callable[[], bool],
             progress: Callable[[Any], None]) -> RunStatus:
    return execute_run(workspace, run_id, device=settings.device, threads=settings.threads, force=settings.force,
                       retry_failed=settings.retry_failed, stop=stop, progress=progress,
                       build_source=settings.build_source)


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


@dataclass
class _Driver:
    """What the driver keeps while runs execute: the report, callbacks, and each run's name and length."""

    workspace: Workspace
    report: RunReport
    on_run_done: Callable[[str], None] | None
    progress: ProgressSink | None
    names: dict[str, str]
    steps: dict[str, int]
    elsewhere: list[str] = field(default_factory=list)  # runs another process held when this one tried

    def started(self, run_id: str) -> None:
        if self.progress is not None:
            self.progress.run_started(run_id, self.names.get(run_id, run_id), self.steps.get(run_id, 0))

    def finish(self, run_id: str, status: RunStatus) -> None:
        self.report.statuses[run_id] = status
        if self.progress is not None:
            self.progress.run_done(run_id, status)
        if status.status.done and self.on_run_done is not None:
            self.on_run_done(run_id)

    def error(self, run_id: str, why: str) -> None:
        self.report.errors[run_id] = why
        if self.progress is not None:
            self.progress.run_done(run_id, None)


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
    build_source: SourceBuilder = build_token_source,
    runs_per_device: int = 1,
) -> RunReport:
    """Execute the runs that need it (pending, interrupted; all with `force`; failed with `retry_failed`).

    `build_source` (picklable, for the worker processes) makes each run's token stream; tests
    pass a fake. Returns when every run is done or, after Ctrl-C, when every worker has saved
    its state.
    """
    report = RunReport(backend="local")
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
    try:
        if not todo:
            return report
        driver = _Driver(workspace, report, on_run_done, progress, {r: m.name for r, m in manifests.items()}, steps)
        for wave in order_waves(manifests):
            # A run another `scaledb run` is executing is waited for, not failed; one it leaves
            # unfinished (stopped, killed) is run here. Each wave's runs end before the next's start.
            while wave and not report.interrupted:
                driver.elsewhere = [r for r in wave if lock_is_held(workspace, r)]
                mine = [r for r in wave if r not in driver.elsewhere]
                if mine:
                    _run_wave(driver, mine, manifests, workers, device, threads_per_run, runs_per_device,
                              force, retry_failed, build_source)
                wave = [] if report.interrupted else _await_elsewhere(driver)
            if report.interrupted:
                break
    finally:
        if progress is not None:
            progress.close()
    return report


def _run_wave(driver: _Driver, wave: list[str], manifests: dict[str, Any], workers: int | None, device: Device,
              threads_per_run: int, runs_per_device: int, force: bool, retry_failed: bool,
              build_source: SourceBuilder) -> None:
    report = driver.report
    run_bytes = max(manifests[r].resources.peak_memory_bytes for r in wave)
    placement = plan_placement(len(wave), workers=workers, device=device, threads_per_run=threads_per_run,
                               runs_per_device=runs_per_device, run_bytes=run_bytes)
    if placement.note and placement.note not in report.notes:
        report.notes.append(placement.note)
    # On CUDA, torch in a worker sees only its GPU, as cuda:0.
    settings = _Settings(str(driver.workspace.root), "cuda" if placement.gpus is not None else device,
                         placement.threads, force, retry_failed, build_source)
    if placement.workers == 1 and placement.gpus is None:
        _run_in_process(driver, wave, settings)
    else:
        _Pool(driver, settings, placement).run(wave)


#: How often a run held by another process is looked at again while waiting for it.
POLL_ELSEWHERE_S = 1.0


def _await_elsewhere(driver: _Driver) -> list[str]:
    """Wait for the runs other processes were executing; report their final statuses, and return
    those they left unfinished (stopped or killed), which this process runs next."""
    workspace, report, waiting = driver.workspace, driver.report, list(driver.elsewhere)
    if not waiting:
        return []
    note = "run(s) being trained by another scaledb process were waited for, not run twice"
    if note not in report.notes:
        report.notes.append(note)
    for run_id in waiting:
        driver.started(run_id)
    left: list[str] = []
    with _StopOnFirstInterrupt() as interrupt:
        for run_id in waiting:
            while lock_is_held(workspace, run_id):
                if interrupt.flag.wait(POLL_ELSEWHERE_S):
                    report.interrupted = True
                    report.statuses.update({r: workspace.read_status(r) for r in waiting if r not in report.statuses})
                    return []
            status = workspace.read_status(run_id)
            if status.status.done:
                driver.finish(run_id, status)
            else:
                left.append(run_id)
    return left


def _run_in_process(driver: _Driver, todo: list[str], settings: _Settings) -> None:
    workspace, report, progress = driver.workspace, driver.report, driver.progress

    def on_progress(p: Any) -> None:
        if progress is not None:
            progress.update(p.run_id, p.step, p.steps, p.tokens_per_s)

    with _StopOnFirstInterrupt() as interrupt:
        for run_id in todo:
            if interrupt.flag.is_set():
                break
            driver.started(run_id)
            if cancel_requested(workspace, run_id):
                driver.finish(run_id, workspace.read_status(run_id))
                continue
            try:
                status = _execute(workspace, run_id, settings, StopRequest(workspace, run_id, interrupt.flag),
                                  on_progress)
            except KeyboardInterrupt:
                report.interrupted = True
                report.statuses[run_id] = workspace.read_status(run_id)
                return
            except RunBusy:
                driver.elsewhere.append(run_id)
                continue
            except Exception as exc:  # not even started (no manifest; the disk full when writing its status)
                driver.error(run_id, str(exc) if isinstance(exc, ScaledbError) else f"{type(exc).__name__}: {exc}")
                continue
            driver.finish(run_id, status)
        report.interrupted = interrupt.flag.is_set()


class _Pool:
    """Worker processes pulling run ids from a queue; this process follows their messages."""

    def __init__(self, driver: _Driver, settings: _Settings, placement: Placement):
        self.driver, self.settings, self.placement = driver, settings, placement
        self.ctx = mp.get_context("spawn")
        self.tasks, self.results, self.stop = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Event()
        self.procs: dict[int, Any] = {}
        self.current: dict[int, str | None] = dict.fromkeys(range(placement.workers))
        self.exited: set[int] = set()
        self.ready: set[int] = set()  # workers that got as far as taking work
        self.deferred: Exception | None = None  # an error of on_run_done, raised once workers stopped

    def run(self, todo: list[str]) -> None:
        for run_id in todo:
            self.tasks.put(run_id)
        for _ in range(self.placement.workers):
            self.tasks.put(None)  # one "no more work" per worker
        hard_stop = False

        def on_sigterm(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # handled as a Ctrl-C: stop cleanly

        main = threading.current_thread() is threading.main_thread()
        previous_term = signal.signal(signal.SIGTERM, on_sigterm) if main else None
        try:
            self._start_workers()
            self._follow()
        except BaseException:
            hard_stop = True  # a second Ctrl-C: stop now; runs resume from their last saved state
            self._terminate()
            raise
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
            self._join(hard_stop)
        if self.deferred is not None:
            raise self.deferred
        self.driver.report.interrupted = self.driver.report.interrupted or self.stop.is_set()

    # -- processes -----------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        gpu = self.placement.gpus[index] if self.placement.gpus is not None else None
        proc = self.ctx.Process(target=_worker_loop, name=f"scaledb-worker-{index}", daemon=True,
                                args=(index, self.settings, gpu, self.tasks, self.results, self.stop))
        proc.start()
        self.procs[index] = proc

    def _start_workers(self) -> None:
        try:
            for i in range(self.placement.workers):
                self._spawn(i)
        except KeyboardInterrupt:
            self.driver.report.interrupted = True
            self.stop.set()

    def _terminate(self) -> None:
        self.stop.set()
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()

    def _join(self, hard_stop: bool) -> None:
        for proc in self.procs.values():
            proc.join(timeout=10 if not hard_stop else 2)
        if hard_stop:  # killed mid-run: the saved state is intact, so the run is resumable
            workspace = self.driver.workspace
            for run_id in filter(None, self.current.values()):
                status = workspace.read_status(run_id)
                if status.status == RunState.RUNNING:
                    workspace.write_status(status.model_copy(update={"status": RunState.PENDING, "updated_at": utc_now()}))
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()

    # -- messages ------------------------------------------------------------------------------
    def _follow(self) -> None:
        while len(self.exited) < len(self.procs):
            try:
                self._drain(0.25)
                self._check_dead()
            except KeyboardInterrupt:
                if self.stop.is_set():
                    raise
                self.driver.report.interrupted = True
                self.stop.set()  # runs save their state at the next step and come back pending
            except Exception as exc:
                # on_run_done raised: let the workers save their runs, then raise it.
                if self.deferred is None:
                    self.deferred = exc
                self.driver.on_run_done = None
                self.stop.set()

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._handle(self.results.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return

    def _handle(self, msg: tuple) -> None:
        kind, index = msg[0], msg[1]
        if kind == "start":
            self.current[index] = msg[2]
            self.driver.started(msg[2])
        elif kind == "progress":
            if self.driver.progress is not None:
                self.driver.progress.update(msg[2], msg[3], msg[4], msg[5])
        elif kind == "done":
            self.current[index] = None
            self.driver.finish(msg[2], RunStatus.model_validate(msg[3]))
        elif kind == "error":
            self.current[index] = None
            self.driver.error(msg[2], msg[3])
        elif kind == "busy":
            self.current[index] = None
            self.driver.elsewhere.append(msg[2])
        elif kind == "ready":
            self.ready.add(index)
        elif kind == "exit":
            self.exited.add(index)

    def _check_dead(self) -> None:
        for index, proc in list(self.procs.items()):
            if index in self.exited or proc.is_alive():
                continue
            # Died without saying goodbye: give its message queue a moment, then blame its run.
            proc.join()
            self._drain(0.05)
            if index in self.exited:
                continue
            self.exited.add(index)
            self._fail_current_run(index, proc.exitcode)
            if index not in self.ready:
                # It never started: a replacement would fail the same way.
                raise RunError(f"a worker process could not start (exit code {proc.exitcode}); "
                               "run with --workers 1 to see the error")
            if not self.stop.is_set():  # replace it so the queue keeps draining
                self.exited.discard(index)
                self.ready.discard(index)
                self._spawn(index)

    def _fail_current_run(self, index: int, exitcode: int | None) -> None:
        run_id = self.current.get(index)
        if run_id is None:
            return
        why = f"worker process died (exit code {exitcode}; killed, or out of memory?)"
        workspace = self.driver.workspace
        status = workspace.read_status(run_id).model_copy(
            update={"status": RunState.FAILED, "error": why, "finished_at": utc_now(), "updated_at": utc_now()})
        workspace.write_status(status)
        self.current[index] = None
        self.driver.finish(run_id, status)
