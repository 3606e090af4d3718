"""Parsing run logs (`log.jsonl`, one `CheckpointRecord` per line) into checkpoint and metric rows.

Pure reading, no database: `parse_log` reads a log from a byte offset, names every line it cannot
load (with its line number and why) and returns the rows as Arrow tables. Clean logs are parsed
whole by Arrow's JSON reader (in C++, without the GIL, so logs parse in parallel threads; each
record's `metrics` object becomes a struct column, one field per metric name), else by one
`json.loads` call; a log with a bad line is read line by line, to name that line. A replayed
step (a resume) keeps its last line; non-finite numbers (a diverged run's NaN loss) become NULL.
"""

from __future__ import annotations

import functools
import json
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from scaling_db.store.runs import SkippedLine
from scaling_db.store.tables import CHECKPOINT_SCHEMA, CHECKPOINTS, METRIC_SCHEMA
from scaling_db.training.records import ALLOWED_FIELDS, REQUIRED_FIELDS, CheckpointRecord, parse_line

CHECKPOINT_COLUMNS = tuple(CHECKPOINTS.names)
#: Columns of a checkpoint record that are integers; the rest after run_id are floats.
INT_COLUMNS = ("step", "tokens")
FLOAT_COLUMNS = tuple(c for c in CHECKPOINT_COLUMNS if c not in ("run_id", *INT_COLUMNS))
_REQUIRED = frozenset(REQUIRED_FIELDS)
#: Required keys whose value may be null. Arrow reads a missing key as null too, so a null in
#: these columns is looked up in its line; a null in the other required columns is never valid.
_NULLABLE_REQUIRED = tuple(n for n in REQUIRED_FIELDS
                           if type(None) in typing.get_args(CheckpointRecord.model_fields[n].annotation))
_NOT_NULL_REQUIRED = tuple(n for n in REQUIRED_FIELDS if n not in _NULLABLE_REQUIRED)

#: The checkpoint columns typed as stored; other fields are inferred from the data.
_ARROW_PARSE = pa_json.ParseOptions(explicit_schema=CHECKPOINT_SCHEMA, unexpected_field_behavior="infer")
#: Off in tests, to run the same cases through the `json.loads` reader.
ARROW_READER = True


@dataclass
class LogRead:
    """Where a parse of one log ended (past its last complete line) and what it could not load."""

    new_offset: int
    new_lines: int
    problems: list[SkippedLine]


@dataclass
class LogRows:
    """Checkpoint rows (Arrow tables, one per log read) and metric rows, for one batch.

    `tables` hold rows of runs with nothing in the database (never loaded, or just deleted for a
    reload): they go straight in. `upserts` hold appended lines, which may repeat steps already
    loaded (a resume): the rows of those steps are deleted before they go in.
    """

    tables: list[pa.Table] = field(default_factory=list)
    upserts: list[pa.Table] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in METRIC_SCHEMA.names})
    #: metric rows parsed by Arrow (METRIC_SCHEMA), beside the ones in `metrics`
    metric_tables: list[pa.Table] = field(default_factory=list)
    #: metric rows of appended lines (their steps' old rows deleted first), gathered by `extend`
    metric_upserts: list[pa.Table] = field(default_factory=list)

    def add_metrics(self, run_id: str, step: int, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            self.metrics["run_id"].append(run_id)
            self.metrics["step"].append(step)
            self.metrics["name"].append(name)
            self.metrics["value"].append(value)

    def extend(self, other: "LogRows", fresh: bool) -> None:
        """Take one log's rows: as fresh rows (a plain INSERT takes them) or as upserts."""
        (self.tables if fresh else self.upserts).extend(other.tables + other.upserts)
        metrics = list(other.metric_tables)
        if other.metrics["step"]:
            metrics.append(pa.table(other.metrics, schema=METRIC_SCHEMA))
        (self.metric_tables if fresh else self.metric_upserts).extend(metrics)


def _number(value: Any, integer: bool) -> tuple[bool, Any]:
    """(ok, value): JSON numbers only; non-finite floats become None; integral floats ok for ints."""
    if value is None:
        return True, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False, value
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                return False, value
            value = int(value)
        return True, value
    value = float(value)
    return True, value if math.isfinite(value) else None


def _check_record(rec: Any, run_id: str) -> tuple[str, str] | tuple[None, tuple[list[Any], dict[str, Any]]]:
    """Validate one parsed line: (None, (row, metrics)) or (kind, reason)."""
    if not isinstance(rec, dict):
        return "invalid", f"not a JSON object (got {type(rec).__name__})"
    keys_wrong = _keys_problem(rec)
    if keys_wrong:
        return "invalid", keys_wrong
    got = rec.get("run_id")
    if got != run_id:
        return "mismatch", f"record of run {got!r} vs {run_id!r} (the run's directory); not loaded"
    step = rec.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "invalid", f"step is not a non-negative integer (got {step!r})"
    row: list[Any] = [run_id, step]
    for name in CHECKPOINT_COLUMNS[2:]:
        ok, value = _number(rec.get(name), integer=name in INT_COLUMNS)
        if not ok:
            return "invalid", f"{name} is not a number (got {value!r})"
        row.append(value)
    metrics = rec.get("metrics") or {}
    if not isinstance(metrics, dict):
        return "invalid", f"metrics is not an object (got {type(metrics).__name__})"
    clean = {}
    for name, value in metrics.items():
        ok, value = _number(value, integer=False)
        if not ok:
            return "invalid", f"metric {name!r} is not a number (got {value!r})"
        clean[str(name)] = value
    return None, (row, clean)


def _keys_problem(rec: dict[str, Any]) -> str | None:
    """A missing required key or an unknown one, worded as `CheckpointRecord` (so `scaledb check`) says it."""
    if rec.keys() >= _REQUIRED and rec.keys() <= ALLOWED_FIELDS:
        return None
    missing = [name for name in REQUIRED_FIELDS if name not in rec]
    if missing:
        return f"not a checkpoint record ({missing[0]}: Field required)"
    extra = next(name for name in rec if name not in ALLOWED_FIELDS)
    return f"not a checkpoint record ({extra}: Extra inputs are not permitted)"


def _keys_complete(table: pa.Table, line_at: Callable[[int], bytes]) -> bool:
    """Whether every line Arrow parsed into `table` has each required key and no unknown one.

    Costs nothing on a clean log: the column names and null counts answer it; only a row with a
    null in a column that may hold one (a diverged run's NaN loss, a closed-form run's FLOPs) has
    its line read again, to tell `null` from a missing key."""
    if not ALLOWED_FIELDS.issuperset(table.column_names):
        return False
    if any(table[name].null_count for name in _NOT_NULL_REQUIRED):
        return False
    rows: set[int] = set()
    for name in _NULLABLE_REQUIRED:
        if table[name].null_count:
            rows.update(pc.indices_nonzero(pc.is_null(table[name])).to_pylist())
    for row in sorted(rows):
        try:
            rec = json.loads(line_at(row))
        except ValueError:
            return False
        if not isinstance(rec, dict) or not rec.keys() >= _REQUIRED:
            return False
    return True


@functools.lru_cache(maxsize=16)
def _typed_metrics(names: tuple[str, ...]) -> pa_json.ParseOptions:
    return pa_json.ParseOptions(
        explicit_schema=pa.schema([*CHECKPOINT_SCHEMA,
                                   pa.field("metrics", pa.struct([(n, pa.float64()) for n in names]))]),
        unexpected_field_behavior="infer")


def _parse_options(body: bytes | bytearray) -> pa_json.ParseOptions:
    """The metrics struct typed from the first record's names (Arrow then skips inferring it: 15%
    of the parse). A record with other names still parses: missing ones become NULL, which sends
    the log to the reader that names the line; extra ones are inferred."""
    try:
        metrics = json.loads(body[:body.find(b"\n")]).get("metrics")
    except (ValueError, AttributeError):
        return _ARROW_PARSE
    if not isinstance(metrics, dict) or not metrics:
        return _ARROW_PARSE
    return _typed_metrics(tuple(metrics))


def _finite_floats(table: pa.Table) -> pa.Table:
    """NaN and inf (a diverged run's loss) become NULL, as the line-by-line reader does."""
    for name in FLOAT_COLUMNS:
        col = table[name]
        if col.null_count < len(col) and not pc.all(pc.is_finite(col)).as_py():
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pc.if_else(pc.is_finite(col), col, pa.scalar(None, pa.float64())))
    return table


def _metric_rows(metrics: pa.ChunkedArray, run_id: str | pa.Array, steps: pa.Array) -> pa.Table | None:
    """The `metrics` struct column in long format (run_id, step, name, value); None if a metric is
    missing from some records or not a number (the `json.loads` reader then says which line)."""
    if pa.types.is_null(metrics.type):
        return None if metrics.null_count else pa.table({c: [] for c in METRIC_SCHEMA.names}, schema=METRIC_SCHEMA)
    if not pa.types.is_struct(metrics.type) or metrics.null_count:
        return None
    parts = []
    children = metrics.combine_chunks().flatten()  # flatten, unlike field(i), honours offsets
    for child, values in zip(metrics.type, children):
        if values.null_count or not (pa.types.is_floating(child.type) or pa.types.is_integer(child.type)):
            return None
        values = values.cast(pa.float64())
        values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))
        run_ids = pa.repeat(run_id, len(values)).cast(pa.string()) if isinstance(run_id, str) else run_id
        parts.append(pa.table([run_ids, steps,
                               pa.repeat(child.name, len(values)).cast(pa.string()), values], schema=METRIC_SCHEMA))
    return concat(parts) if parts else pa.table({c: [] for c in METRIC_SCHEMA.names}, schema=METRIC_SCHEMA)


def _parse_arrow(body: bytes, lines: list[bytes], run_id: str, out: LogRows) -> bool:
    """The common case, parsed in C++: plain JSON numbers (no NaN), one run, steps set, every record
    with the required keys and the same metric names. False, touching nothing, when any of that
    does not hold. `lines` are the body's non-blank lines."""
    if not ARROW_READER:
        return False
    try:
        table = pa_json.read_json(pa.BufferReader(body), parse_options=_parse_options(body))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    if table.num_rows != len(lines) or not _keys_complete(table, lines.__getitem__):
        return False
    if not pc.all(pc.equal(table["run_id"], run_id)).as_py() or pc.min(table["step"]).as_py() < 0:
        return False
    steps = table["step"].to_numpy()
    if len(steps) > 1 and not (steps[1:] > steps[:-1]).all():
        last = {int(step): i for i, step in enumerate(steps)}  # a replayed step: the last line wins
        table = table.take(sorted(last.values()))
    return _add_parsed(table, run_id, out)


def _add_parsed(table: pa.Table, run_ids: str | pa.Array, out: LogRows) -> bool:
    """Add a parsed log table's checkpoint rows and its metrics (as long rows) to `out`; False,
    adding nothing, when its metrics cannot be read that way."""
    metrics = None
    if "metrics" in table.column_names:
        metrics = _metric_rows(table["metrics"], run_ids, table["step"].combine_chunks())
        if metrics is None:
            return False
    out.tables.append(_finite_floats(table.select(CHECKPOINT_COLUMNS)))
    if metrics is not None and metrics.num_rows:
        out.metric_tables.append(metrics)
    return True


def parse_whole_logs(logs: list[tuple[Path, str, int]], out: LogRows) -> list[int] | None:
    """Parse whole clean logs `(path, run_id, size)` in one call of Arrow's JSON reader (its threads
    split one buffer; parsing log by log costs twice as much). Returns each log's line count, or
    None, touching nothing, unless every line of every log is a record of its run with steps
    increasing and every record names the same metrics (a sweep over depth does not: its logs
    are then parsed one by one)."""
    if not ARROW_READER:
        return None
    # Read into one buffer (no join, a copy of a few hundred MB); a blank line makes Arrow's row
    # count differ from the newline count below, which sends the batch to the per-log reader.
    body = bytearray(sum(size for _, _, size in logs))
    view, at, counts, offsets = memoryview(body), 0, [], []
    for path, _, size in logs:
        with open(path, "rb") as fh:
            if fh.readinto(view[at:at + size]) != size:
                return None
        part = view[at:at + size]
        if part[-1:] != b"\n" or part[:1] == b"\n":
            return None
        counts.append(body.count(b"\n", at, at + size))
        offsets.append(at)
        at += size
    try:
        table = pa_json.read_json(pa.BufferReader(body), parse_options=_parse_options(body))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    starts = np.concatenate([[0], np.cumsum(counts)])
    if table.num_rows != sum(counts) or not _keys_complete(table, _line_finder(body, offsets, starts)) \
            or pc.min(table["step"]).as_py() < 0:
        return None
    # Each log's slice against its own id: building the expected column (np.repeat of strings)
    # cost more than Arrow's parse of the numbers.
    column = table["run_id"]
    for (_, run_id, _), start, n in zip(logs, starts, counts):
        if not pc.all(pc.equal(column.slice(start, n), run_id)).as_py():
            return None
    run_ids = column.combine_chunks()  # checked above: each line's own run's id
    steps = table["step"].to_numpy()
    first_lines = np.cumsum(counts)[:-1]  # where the next log starts, steps start again
    rising = steps[1:] > steps[:-1]
    rising[first_lines - 1] = True
    if not rising.all():
        return None  # a replayed step: the per-log reader keeps the last line
    return counts if _add_parsed(table, run_ids, out) else None


def _line_finder(body: bytearray, offsets: list[int], starts: np.ndarray) -> Callable[[int], bytes]:
    """Row -> its line in `body`, the logs laid end to end (log i from byte `offsets[i]`, rows
    from `starts[i]`); only called for the few rows `_keys_complete` looks at."""
    def line_at(row: int) -> bytes:
        log = int(np.searchsorted(starts, row, side="right")) - 1
        begin = offsets[log]
        for _ in range(row - int(starts[log])):
            begin = body.index(b"\n", begin) + 1
        return bytes(body[begin:body.index(b"\n", begin)])
    return line_at


def _parse_bulk(body: bytes, lines: list[bytes], run_id: str, out: LogRows) -> bool:
    """Parse clean lines at once, in C++ (Arrow's JSON reader) or in one `json.loads` call (a JSON
    array); False, touching nothing, if any line is not a well-formed record of this run."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return True
    if _parse_arrow(body, lines, run_id, out):
        return True
    try:
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return False
    for rec in records:
        if type(rec) is not dict or rec.get("run_id") != run_id or not (rec.keys() >= _REQUIRED
                                                                       and rec.keys() <= ALLOWED_FIELDS):
            return False
        step = rec.get("step")
        if type(step) is not int or step < 0:
            return False
    try:
        table = pa.Table.from_pylist(records, schema=CHECKPOINT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False
    with_metrics = []
    for rec in records:
        metrics = rec.get("metrics")
        if metrics:
            kind, result = _check_record(rec, run_id)
            if kind is not None:
                return False
            with_metrics.append((rec["step"], result[1]))  # type: ignore[index]
    steps = table["step"].to_numpy()
    if len(steps) > 1 and not (steps[1:] > steps[:-1]).all():
        # a replayed step (resume): keep the last line of each step
        last = {int(step): i for i, step in enumerate(steps)}
        table = table.take(sorted(last.values()))
        with_metrics = list({step: m for step, m in with_metrics}.items())
    out.tables.append(_finite_floats(table))
    for step, metrics in with_metrics:
        out.add_metrics(run_id, step, metrics)
    return True


def concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def parse_log(path: Path, run_id: str, start_offset: int, size: int, start_line: int, out: LogRows) -> LogRead:
    """Parse the log at `path` from byte `start_offset` (line `start_line`) to `size`; rows to `out`.

    A last line without its newline is a write in progress: not loaded, reported as truncated,
    and the returned offset stops before it so a later ingest loads it once complete.
    """
    with open(path, "rb") as fh:
        fh.seek(start_offset)
        data = fh.read(max(0, size - start_offset))
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    problems = []
    if data[end:].strip():
        problems.append(SkippedLine(
            str(path), start_line + len(lines) + 1, "truncated",
            "last line has no newline (a write in progress or interrupted); not loaded yet",
        ))
    if not _parse_bulk(data[:end], lines, run_id, out):
        problems += _parse_lines(path, run_id, lines, start_line, out)
    return LogRead(start_offset + end, start_line + len(lines), problems)


def _json_problem(raw: bytes, exc: ValueError) -> str:
    """Why a line is not JSON, in the words of `scaledb check` (its parser's message)."""
    why = parse_line(raw)
    if isinstance(why, str):
        return why
    col = getattr(exc, "colno", None)  # the two parsers disagree: say what Python's found
    return f"not valid JSON ({getattr(exc, 'msg', str(exc))}{f' at column {col}' if col else ''}); line skipped"


def last_logged_step(path: Path, end: int, run_id: str) -> int | None:
    """The step of the last line before byte `end` that loads as a record of `run_id` (None: no
    such line). Reads the log backwards from `end` (a line's end), a block at a time."""
    block, pos, head = 1 << 14, end, b""
    with open(path, "rb") as fh:
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            lines = (fh.read(pos - start) + head).split(b"\n")
            head, pos = (lines.pop(0) if start > 0 else b""), start  # cut at the block's start
            for raw in reversed(lines):
                if raw.strip():
                    try:
                        kind, result = _check_record(json.loads(raw), run_id)
                    except ValueError:
                        continue
                    if kind is None:
                        return int(result[0][1])  # type: ignore[index]
    return None


def _parse_lines(path: Path, run_id: str, lines: list[bytes], start_line: int, out: LogRows) -> list[SkippedLine]:
    """Line by line, to say which line is bad and why; the good lines still load."""
    problems = []
    by_step: dict[int, tuple[list[Any], dict[str, Any]]] = {}
    for number, raw in enumerate(lines, start=start_line + 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as exc:
            problems.append(SkippedLine(str(path), number, "corrupt-line", _json_problem(raw, exc)))
            continue
        kind, result = _check_record(rec, run_id)
        if kind is not None:
            problems.append(SkippedLine(str(path), number, kind, f"{result}; line skipped"))
            continue
        row, metrics = result  # type: ignore[misc]
        by_step[row[1]] = (row, metrics)  # a replayed step: the later line wins
    if by_step:
        columns = list(zip(*(row for row, _ in by_step.values())))
        out.tables.append(pa.table(dict(zip(CHECKPOINT_COLUMNS, columns)), schema=CHECKPOINT_SCHEMA))
    for row, metrics in by_step.values():
        out.add_metrics(run_id, row[1], metrics)
    return problems
