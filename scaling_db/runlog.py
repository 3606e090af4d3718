"""A run's append-only checkpoint log (`runs/<run_id>/log.jsonl`): reading, repairing, appending.

A line is a record only once its newline is on disk; a kill in the middle of a write leaves a
torn last line, which readers skip and `repair_log` cuts off before the run appends again.
No torch here, so status commands and loaders stay light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from scaling_db.records import CheckpointRecord


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
