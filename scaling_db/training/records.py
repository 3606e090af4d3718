"""What a run writes while it trains: checkpoint records (append-only JSON Lines) and a status file.

These are the contract between runners (which write) and the store (which loads). A run's
log is `runs/<run_id>/log.jsonl`: one `CheckpointRecord` per line, appended and fsynced at each
checkpoint; a line without its trailing newline is an interrupted write, never a record:
readers skip it and `repair_log` cuts it off before the run appends again. A complete line that
is not a record (a disk or copy error) is skipped too and reported by `scan_log` with its line
number; it is never rewritten, so the evidence stays for `scaledb check`. No torch here, so
status commands and loaders stay light.

Lines are standard JSON: a non-finite number (the NaN loss of a diverged run) is written as
`null` and named in `"nonfinite": {"eval_loss": "NaN"}` (metrics as `"metrics.<name>"`), so any
JSON reader can load the log; reading gives the float back. Logs written before this with bare
`NaN`/`Infinity` still read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


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

    @model_validator(mode="before")
    @classmethod
    def _restore_nonfinite(cls, data: Any) -> Any:
        """Put back the floats a line names in `nonfinite` (they are `null` in it)."""
        if not isinstance(data, dict) or "nonfinite" not in data:
            return data
        data = dict(data, metrics=dict(data.get("metrics") or {}))
        flagged = data.pop("nonfinite")
        if not isinstance(flagged, dict) or any(text not in _NONFINITE_TEXT for text in flagged.values()):
            raise ValueError(f"nonfinite must map field names to one of {_NONFINITE_TEXT} (got {flagged!r})")
        for name, text in flagged.items():
            if name.startswith(_METRIC_PREFIX):
                data["metrics"][name.removeprefix(_METRIC_PREFIX)] = float(text)
            else:
                data[name] = float(text)
        return data

    def to_line(self) -> str:
        """The record as one line of standard JSON (non-finite numbers as null, named in `nonfinite`)."""
        data = self.model_dump(mode="json")
        flagged: dict[str, str] = {}
        for name, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                flagged[name], data[name] = _nonfinite_text(value), None
        for name, value in data["metrics"].items():
            if not math.isfinite(value):
                flagged[_METRIC_PREFIX + name], data["metrics"][name] = _nonfinite_text(value), None
        if flagged:  # only then: clean lines stay byte-identical to older logs (and the fast loaders)
            data["nonfinite"] = flagged
        return json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"


#: Keys every log line must have (`null` is a value; a missing key is not): the `CheckpointRecord`
#: fields without a default. The store's fast loaders check these, not a second copy of the schema.
REQUIRED_FIELDS: tuple[str, ...] = tuple(n for n, f in CheckpointRecord.model_fields.items() if f.is_required())
#: Keys a log line may have: the fields, and `nonfinite` (read by `_restore_nonfinite`).
ALLOWED_FIELDS: frozenset[str] = frozenset((*CheckpointRecord.model_fields, "nonfinite"))

_METRIC_PREFIX = "metrics."
_NONFINITE_TEXT = ("NaN", "Infinity", "-Infinity")  # the spellings of Python's json and JavaScript


def _nonfinite_text(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def lost_final_checkpoint(state: RunState, final_step: int | None, last_step: int | None, torn: bool) -> str | None:
    """Why a run whose status says finished lacks its final checkpoint (None: it does not, or it
    is not finished). `final_step` is the status file's last step, `last_step` the step of the
    log's last record, `torn` whether the log ends in a line without its newline.

    Such a run is `damaged`: its last curve point is not its result, so fits and queries must not
    take it as finished; only training it again repairs it (`scaledb check --rerun-damaged`)."""
    if state != RunState.FINISHED:
        return None
    if torn:
        return "torn last line (no newline) in a finished run: a write interrupted for good"
    if final_step is not None and (last_step is None or last_step < final_step):
        return (f"the log ends at step {last_step if last_step is not None else '-'} vs step {final_step}, "
                f"where status.json says the run finished: its final checkpoint is missing")
    return None


@dataclass(frozen=True)
class LogProblem:
    """A complete line of a log that is not a record. `line` is 1-based."""

    path: str
    line: int
    reason: str

    def format(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class LogRead:
    """What a log holds: its records in file order, the lines that are not records, and whether
    it ends in a torn line (a write interrupted, or in progress)."""

    records: list[CheckpointRecord]
    problems: list[LogProblem]
    torn: bool = False


def parse_line(line: bytes) -> CheckpointRecord | str:
    """A record, or why the line is not one (the wording `status`, `check` and `ingest` share)."""
    try:
        return CheckpointRecord.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')}); line skipped"
        where = ".".join(str(part) for part in first["loc"]) or "record"
        return f"not a checkpoint record ({where}: {first['msg']}); line skipped"


def scan_log(path: Path) -> LogRead:
    """Every complete line of a run's log: the records and, by line number, the lines that are not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LogRead([], [])
    lines = data.split(b"\n")
    torn = bool(lines[-1].strip())  # whatever follows the last newline is a torn write
    records: list[CheckpointRecord] = []
    problems: list[LogProblem] = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        parsed = parse_line(line)
        if isinstance(parsed, str):
            problems.append(LogProblem(str(path), number, parsed))
        else:
            records.append(parsed)
    return LogRead(records, problems, torn)


def read_log(path: Path) -> list[CheckpointRecord]:
    """The complete records of a run's log; lines that are not records are skipped (`scan_log`
    says which)."""
    return scan_log(path).records


def last_record(path: Path) -> CheckpointRecord | None:
    records = read_log(path)
    return records[-1] if records else None


def repair_log(path: Path) -> list[CheckpointRecord]:
    """Cut a torn last line off the log (a write interrupted by a kill) and return its records.

    Corrupt complete lines stay where they are (skipped by readers, reported by `scan_log`)."""
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
