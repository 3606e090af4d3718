"""Stopping a run from outside: `cancel` files and the per-step stop request.

A run's `cancel` file (`runs/<run_id>/cancel`) asks it to stop. The executing process polls for
it (about twice a second, from the trainer's per-step `stop` callback): the run saves its state
at the next step and ends `pending`; a run that has not started yet does not start.
`scaledb cancel` writes it; the next request to run the run removes it. It works the same on
every backend and needs no connection to the process that started the run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from scaling_db.training.records import utc_now
from scaling_db.workspace import Workspace, atomic_write_text

#: How often (seconds) a worker looks for a `cancel` file; the trainer polls `stop` every step,
#: so this bounds the filesystem traffic on a shared workspace, not the reaction time.
CANCEL_POLL_S = 0.5


def cancel_path(workspace: Workspace, run_id: str) -> Path:
    return workspace.run_dir(run_id) / "cancel"


def cancel_requested(workspace: Workspace, run_id: str) -> bool:
    return cancel_path(workspace, run_id).exists()


def request_cancel(workspace: Workspace, run_id: str, reason: str = "scaledb cancel") -> None:
    atomic_write_text(cancel_path(workspace, run_id), f"{utc_now()} {reason}\n")


def clear_cancel(workspace: Workspace, run_id: str) -> None:
    cancel_path(workspace, run_id).unlink(missing_ok=True)


class StopRequest:
    """The `stop` callback handed to `execute_run`: an in-process flag or a `cancel` file.

    Called once per training step, so the flag is checked every time and the file (a stat on
    a possibly remote filesystem) at most every `poll_s` (default `CANCEL_POLL_S`).
    """

    def __init__(self, workspace: Workspace, run_id: str, flag: threading.Event | None = None,
                 poll_s: float | None = None):
        self.workspace, self.run_id, self.flag = workspace, run_id, flag
        self.poll_s = CANCEL_POLL_S if poll_s is None else poll_s
        self._next_check = 0.0
        self._cancelled = False

    def __call__(self) -> bool:
        if self.flag is not None and self.flag.is_set():
            return True
        now = time.monotonic()
        if not self._cancelled and now >= self._next_check:
            self._next_check = now + self.poll_s
            self._cancelled = cancel_requested(self.workspace, self.run_id)
        return self._cancelled
