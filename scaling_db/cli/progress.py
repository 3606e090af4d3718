"""How `scaledb run` and `scaledb reproduce` show progress: a live display on a terminal, plain
lines otherwise (Slurm, CI, nohup, a pipe), nothing with `--json`.

Both implement `runners.contract.ProgressSink`; the runners call them from the driver process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from scaling_db.cli.common import counted
from scaling_db.training.records import RunState, RunStatus, last_record
from scaling_db.workspace import Workspace

#: Seconds between the summary lines of `PlainProgress` (a log file stays readable).
SUMMARY_EVERY_S = 30.0


def progress_display(ws: Workspace, as_json: bool) -> Any:
    """The display for this output: rich on a terminal, plain lines when piped, none for --json."""
    if as_json:
        return None
    if sys.stdout.isatty():
        from scaling_db.cli.common import console

        return RichProgress(console())
    return PlainProgress(ws)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainProgress:
    """One line when a run starts and when it ends (with its final eval loss), and a summary
    line every `every_s` seconds; for output that is not a terminal."""

    def __init__(self, ws: Workspace, *, every_s: float = SUMMARY_EVERY_S,
                 echo: Callable[[str], None] = click.echo, clock: Callable[[], float] = time.monotonic):
        self.ws, self.every_s, self.echo, self.clock = ws, every_s, echo, clock
        self.runs = self.total_steps = self.ended = 0
        self.names: dict[str, str] = {}
        self.steps: dict[str, int] = {}  # run_id -> steps done in this call, for runs in flight
        self.done_steps = 0  # steps of runs that ended
        self.t0 = self.last_summary = 0.0

    def start(self, total_steps: int, runs: int, skipped: int) -> None:
        self.runs, self.total_steps = runs, total_steps
        self.t0 = self.last_summary = self.clock()
        already = f" ({skipped} already done)" if skipped else ""
        self.echo(f"scaledb: {counted(runs, 'run')} to run{already}")

    def run_started(self, run_id: str, name: str, steps: int) -> None:
        self.names[run_id] = name
        self.steps[run_id] = 0
        self.echo(f"started  {name} ({run_id}, {steps} steps)")
        self._maybe_summary()

    def update(self, run_id: str, step: int, steps: int, tokens_per_s: float | None) -> None:
        if run_id in self.steps:
            self.steps[run_id] = step
        self._maybe_summary()

    def run_done(self, run_id: str, status: RunStatus | None) -> None:
        self.ended += 1
        self.done_steps += self.steps.pop(run_id, 0)
        name = self.names.get(run_id, run_id)
        if status is None:
            self.echo(f"error    {name} ({run_id}): could not be run")
        elif status.status == RunState.FINISHED:
            record = last_record(self.ws.log_path(run_id))
            loss = f"final eval loss {record.eval_loss:.4f}" if record and record.eval_loss is not None else "no eval loss"
            self.echo(f"finished {name}: {loss}")
        elif status.status == RunState.FAILED:
            self.echo(f"failed   {name}: {status.error}")
        elif status.status == RunState.DIVERGED:
            self.echo(f"diverged {name} at step {status.diverged_at_step}")
        else:
            self.echo(f"stopped  {name} at step {status.step or 0} ({status.status.value}; resumes later)")
        self._maybe_summary()

    def _maybe_summary(self) -> None:
        now = self.clock()
        if now - self.last_summary < self.every_s:
            return
        self.last_summary = now
        steps = self.done_steps + sum(self.steps.values())
        pct = f" ({100 * steps / self.total_steps:.0f}%)" if self.total_steps else ""
        self.echo(f"progress: {self.ended}/{self.runs} runs ended, {len(self.steps)} running, "
                  f"{steps}/{self.total_steps} steps{pct}, {_duration(now - self.t0)} elapsed")

    def close(self) -> None:
        pass


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
        from rich.markup import escape  # a run's name is data, not markup

        self._tasks[run_id] = self._progress.add_task(f"  {escape(name)}", total=max(1, steps), detail="starting")
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
