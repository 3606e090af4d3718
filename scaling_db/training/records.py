"""What a run writes while it trains: checkpoint records (append-only JSON Lines) and a status file.

These are the contract between runners (which write) and the store (which loads). A run's
log is `runs/<run_id>/log.jsonl`: one `CheckpointRecord` per line, appended and fsynced at each
checkpoint; a line without its trailing newline is an interrupted write, never a record:
readers skip it and `repair_log` cuts it off before the run appends again. No torch here, so
status commands and loaders stay light.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field


class RunState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    DIVERGED = "diverged"

    @property
    def done(self) -> bool:
        return self in (RunState.FINISHED, RunState.FAILED, RunState.DIVERGED)


@functools.lru_cache(maxsize=1)
def code_git_sha() -> str | None:
    """The git commit of the scaledb source tree (None when not a git checkout or no git)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunStatus(BaseModel):
    """Contents of `runs/<run_id>/status.json`, rewritten atomically on every change."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    status: RunState = RunState.PENDING
    step: int | None = Field(None, description="last logged checkpoint step")
    error: str | None = None
    diverged_at_step: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str = Field(default_factory=utc_now)
    device: str | None = None
    precision: str | None = Field(None, description="what `precision: auto` resolved to on this device")
    entropy_rate: float | None = Field(None, description="the data source's exact entropy rate, if known")
    backend: str | None = None
    job_id: str | None = None
    host: str | None = None
    git_sha: str | None = Field(None, description="commit of the scaledb code that ran it, if a git checkout")


class CheckpointRecord(BaseModel):
    """One evaluated checkpoint of one run (a row of the `checkpoints` table)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    step: int
    tokens: int
    flops_6n_nonembed: float | None
    flops_6n: float | None
    flops_exact: float | None
    train_loss: float | None = Field(description="mean training loss since the previous checkpoint")
    eval_loss: float | None
    lr: float | None
    wall_time_s: float = Field(description="training wall time since the run first started")
    tokens_per_s: float | None = None
    metrics: dict[str, float] = Field({}, description="extra named metrics (e.g. coordinate checks)")

    def to_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), allow_nan=True) + "\n"



def read_log(path: Path) -> list[CheckpointRecord]:
    """The complete records of a run's log (a last line without its newline is not a record)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")[:-1]  # whatever follows the last newline is a torn write
    return [CheckpointRecord.model_validate_json(line) for line in lines if line.strip()]


def last_record(path: Path) -> CheckpointRecord | None:
    records = read_log(path)
    return records[-1] if records else None


def repair_log(path: Path) -> list[CheckpointRecord]:
    """Cut a torn last line off the log (a write interrupted by a kill) and return its records."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    with open(path, "rb+") as fh:
        keep = fh.read().rfind(b"\n") + 1
        if keep != size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return read_log(path)


def append_record(fh: BinaryIO, record: CheckpointRecord) -> None:
    """Append one record and make it durable before the run goes on (flush + fsync)."""
    fh.write(record.to_line().encode())
    fh.flush()
    os.fsync(fh.fileno())
