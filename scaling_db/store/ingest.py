"""Loading runs into the result database: manifests, status files and checkpoint logs.

`ingest_runs` is idempotent: the database mirrors the files. Loading twice, or after a resume
that replayed steps, leaves exactly one row per (run_id, step) (the last line written for a
step wins). What it reads, per run, from `<workspace>/runs/<run_id>/`:

    manifest.json  -> a `runs` row (sweep parameters as columns, the manifest as JSON)
    status.json    -> the status columns of that row (missing file: pending)
    log.jsonl      -> `checkpoints` rows (and `metrics` rows for each record's extra metrics)

Incremental: `ingest_state` remembers, per run, the byte offset and line count of the log up to
its last complete line, the log's size and mtime, a hash of its first bytes, and signatures of
the manifest and status files. An unchanged run is not read at all; a grown log is read from
the stored offset; a log that shrank or whose first bytes changed (the run was restarted from
scratch) is reloaded from the start, replacing that run's rows.

Lines: a last line without its newline is an interrupted (or in-progress) write: it is skipped
and reported, and loaded by a later ingest once complete. A corrupt line elsewhere is skipped
and reported by path and line number; the run's other lines still load, and other runs are not
affected. Non-finite numbers (NaN/inf losses of a diverged run) are stored as NULL.

Transactions: every run's rows (runs, checkpoints, metrics, ingest_state) are written in one
transaction together with the other runs of its batch, so a reader never sees half a run.

Writers: one at a time (DuckDB's rule). A long load closes and reopens the database between
batches (~250 MB of logs, about a million checkpoints, each), so runners loading their own run and
readers get in meanwhile.

Speed: the clean logs of a batch read from the start are parsed in one call of Arrow's JSON
reader (`logs.parse_whole_logs`: one buffer, its threads). Other logs (appends, a run just
finished, torn tails, a batch whose logs differ in metric names) are parsed whole one by one
(`logs.parse_log`: Arrow, several in threads, else one `json.loads` call); only a log with a bad
line is read line by line, to name that line. With metrics, Arrow parses 3x faster than DuckDB's
read_json.

Uniqueness without a primary key (schema 3): `checkpoints` and `metrics` carry no index, whose
upkeep was the largest cost of a load after parsing (docs/performance.md). One row per (run_id, step)
(and metric name) is kept by the writes themselves, in the batch's transaction: a reloaded run's
rows are deleted before its log goes in, an appended line's step is deleted before the line goes
in (a resume replays steps), and a run without ingest state but with a `runs` row (state lost, or
loaded by an older scaledb) is treated as a reload. A killed load leaves its whole transaction
out. Nothing else writes these rows but `external` imports, which replace an experiment whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from scaling_db.errors import StoreError
from scaling_db.store.database import open_store, utc_now
from scaling_db.store.experiments import known_experiments, read_experiment, refresh_experiments, write_experiments
from scaling_db.store.logs import LogRows, concat, last_logged_step, parse_log, parse_whole_logs
from scaling_db.store.runs import SkippedLine, read_run_files
from scaling_db.store.tables import DAMAGED, RUNS_SCHEMA, STATE_SCHEMA
from scaling_db.training.records import RunState, lost_final_checkpoint
from scaling_db.workspace import Workspace

# Re-exported: the loaders' row types and the report's line type belong to the ingest interface.
__all__ = ["IngestReport", "SkippedLine", "ingest_runs"]

#: Threads parsing logs at once (Arrow's JSON reader releases the GIL).
PARSE_THREADS = min(8, os.cpu_count() or 1)
#: A batch (one transaction) holds at most this many bytes of log, or this many runs. Each batch
#: costs an open, a commit and a close; 256 MB loads 1,000 x 1,000-checkpoint logs ~20% faster
#: than 96 MB did, and holds the writer's lock for about 2 s here (readers wait up to 10 s).
BATCH_BYTES = 256 << 20
BATCH_RUNS = 2000
#: A load's connection checkpoints at a commit that wrote more than this (see `_open_for_load`).
CHECKPOINT_AT_COMMIT = "1KB"
#: Bytes at the start of a log whose hash tells "same log, grown" from "new log" (a run reset).
HEAD_BYTES = 4096


# -- report --------------------------------------------------------------------------------------

@dataclass
class IngestReport:
    """What one `ingest_runs` call did."""

    runs_seen: int = 0
    runs_loaded: int = 0  # runs whose rows changed (new log lines, status or manifest)
    runs_unchanged: int = 0  # skipped without reading: nothing changed since the last ingest
    rows_loaded: int = 0  # checkpoint rows written (inserted or replaced)
    metric_rows: int = 0
    skipped: list[SkippedLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_loaded / self.seconds if self.seconds > 0 else float("nan")

    def merge(self, other: "IngestReport") -> "IngestReport":
        return IngestReport(
            self.runs_seen + other.runs_seen, self.runs_loaded + other.runs_loaded,
            self.runs_unchanged + other.runs_unchanged, self.rows_loaded + other.rows_loaded,
            self.metric_rows + other.metric_rows, self.skipped + other.skipped, self.seconds + other.seconds,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = [dict(asdict(s), where=s.format()) for s in self.skipped]
        return out


# -- per-run plan --------------------------------------------------------------------------------

@dataclass
class _Run:
    run_id: str
    run_dir: Path
    manifest_sig: str = ""
    status_sig: str = ""
    log_size: int = 0
    log_mtime_ns: int = 0
    has_log: bool = False
    prior: dict[str, Any] | None = None
    #: "none" (no log), "unchanged", "append" (read from the stored offset), "reload" (from 0)
    log_action: str = "none"
    start_offset: int = 0
    start_line: int = 0
    delete_rows: bool = False  # the run's existing rows go before its log is read again
    ends_with_newline: bool = True
    head: str = ""
    # filled while loading
    new_offset: int = 0
    new_lines: int = 0
    problems: list[SkippedLine] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.jsonl"

    @property
    def bytes_to_read(self) -> int:
        return max(0, self.log_size - self.start_offset) if self.log_action in ("append", "reload") else 0


def _sig(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    return f"{st.st_mtime_ns}:{st.st_size}"


def _head_hash(path: Path, upto: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read(min(HEAD_BYTES, upto))).hexdigest()


def _plan(run: _Run, full: bool) -> None:
    """Decide what to read for one run from its files' sizes and the stored ingest state."""
    run.manifest_sig = _sig(run.run_dir / "manifest.json")
    run.status_sig = _sig(run.run_dir / "status.json")
    prior = run.prior
    try:
        st = run.log_path.stat()
        run.has_log, run.log_size, run.log_mtime_ns = True, st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        run.has_log = False
    if not run.has_log:
        # A log that existed and is gone means the run was reset: its rows go too.
        run.log_action = "none"
        run.delete_rows = bool(prior and prior["log_offset"] > 0) or full
        return
    if prior is None or full:
        run.log_action, run.delete_rows = "reload", prior is not None or full
    elif run.log_size == prior["log_size"] and run.log_mtime_ns == prior["log_mtime_ns"]:
        run.log_action = "unchanged"
    elif run.log_size < prior["log_offset"] or (
        prior["log_offset"] > 0 and _head_hash(run.log_path, prior["log_offset"]) != prior["log_head"]
    ):
        run.log_action, run.delete_rows = "reload", True
    else:
        run.log_action = "append"
        run.start_offset, run.start_line = int(prior["log_offset"]), int(prior["log_lines"])
    if run.log_action == "unchanged":
        run.new_offset, run.new_lines = int(prior["log_offset"]), int(prior["log_lines"])
    elif run.log_size > 0:
        with open(run.log_path, "rb") as fh:
            fh.seek(run.log_size - 1)
            run.ends_with_newline = fh.read(1) == b"\n"


def _changed(run: _Run) -> bool:
    prior = run.prior
    if prior is None or run.log_action not in ("unchanged", "none") or run.delete_rows:
        return True
    return prior["manifest_sig"] != run.manifest_sig or prior["status_sig"] != run.status_sig


def _read_log(run: _Run) -> tuple[LogRows, bool]:
    """Parse a run's log from `start_offset` (see `logs.parse_log`): its rows, and whether they are
    fresh (the run has no rows in the database: a plain INSERT takes them)."""
    mine = LogRows()
    read = parse_log(run.log_path, run.run_id, run.start_offset, run.log_size, run.start_line, mine)
    run.new_offset, run.new_lines = read.new_offset, read.new_lines
    run.problems.extend(read.problems)
    return mine, run.start_offset == 0 and (run.prior is None or run.delete_rows)


def _read_logs(runs: list[_Run]) -> LogRows:
    """Parse the logs of `runs`, several at once when there are several."""
    out = LogRows()
    if len(runs) > 1 and PARSE_THREADS > 1:
        with ThreadPoolExecutor(PARSE_THREADS) as pool:
            parsed = list(pool.map(_read_log, runs))
    else:
        parsed = [_read_log(run) for run in runs]
    for rows, fresh in parsed:
        out.extend(rows, fresh)
    return out


# -- the loader ------------------------------------------------------------------------------------

def _resolve_runs(ws: Workspace, runs: Iterable[str | os.PathLike[str]] | None) -> list[str]:
    if runs is None:
        return ws.run_ids()
    ids: list[str] = []
    for item in runs:
        text = os.fspath(item)
        if isinstance(item, os.PathLike) or os.sep in text or (Path(text) / "manifest.json").exists():
            path = Path(text).resolve()
            if path.parent != ws.runs_dir.resolve():
                raise StoreError(
                    f"{text}: not a run directory of workspace {ws.root} (expected {ws.runs_dir}/<run_id>). "
                    "Pass the run's own workspace."
                )
            ids.append(path.name)
        else:
            ids.append(text)
    return list(dict.fromkeys(ids))


def _load_state(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not run_ids:
        return {}
    cur = con.execute(
        "SELECT run_id, log_offset, log_lines, log_size, log_mtime_ns, log_head, manifest_sig, status_sig, problems "
        "FROM ingest_state WHERE list_contains(?, run_id)", [run_ids]
    )
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def _batches(runs: list[_Run]) -> Iterable[list[_Run]]:
    batch: list[_Run] = []
    size = 0
    for run in runs:
        if batch and (size + run.bytes_to_read > BATCH_BYTES or len(batch) >= BATCH_RUNS):
            yield batch
            batch, size = [], 0
        batch.append(run)
        size += run.bytes_to_read
    if batch:
        yield batch


def _load_batch(con: duckdb.DuckDBPyConnection, ws: Workspace, batch: list[_Run], report: IngestReport) -> None:
    now = utc_now()
    rows_by_run = {}
    for run in batch:
        row = read_run_files(run.run_dir, run.run_id, now, run.problems)
        if row is not None:
            rows_by_run[run.run_id] = row
    known = known_experiments(con, {r["experiment"] for r in rows_by_run.values()})
    foreign = {name for name, row in known.items() if row["source"] == "import"}
    for run in batch:
        if run.run_id in rows_by_run and rows_by_run[run.run_id]["experiment"] in foreign:
            run.problems.append(SkippedLine(
                str(run.run_dir / "manifest.json"), None, "file",
                f"experiment {rows_by_run[run.run_id]['experiment']!r} holds imported runs; run not loaded. "
                "Re-import that table under another --experiment name.",
            ))
            del rows_by_run[run.run_id]
    loading = [r for r in batch if r.run_id in rows_by_run]
    reading = [r for r in loading if r.log_action in ("append", "reload")]
    whole = [r for r in reading if r.log_action == "reload" and r.ends_with_newline and r.log_size > 0]
    together = LogRows()
    counts = parse_whole_logs([(r.log_path, r.run_id, r.log_size) for r in whole], together) if len(whole) > 1 \
        else None
    if counts is not None:
        for run, n in zip(whole, counts):
            run.new_offset, run.new_lines = run.log_size, n
        parsed = {id(r) for r in whole}  # by identity: dataclass equality compares every field
        reading = [r for r in reading if id(r) not in parsed]
    log_rows = _read_logs(reading)
    log_rows.extend(together, fresh=True)
    for run in loading:
        _judge_finished(run, rows_by_run[run.run_id])
    counts = _write_batch(con, ws, loading, rows_by_run, log_rows, known, now=now)
    report.runs_loaded += len(loading)
    report.rows_loaded += counts[0]
    report.metric_rows += counts[1]
    for run in batch:
        report.skipped.extend(run.problems)


#: What a run whose log lacks its final checkpoint needs (said with every such problem).
DAMAGED_FIX = (f"run stored as '{DAMAGED}': queries and fits leave it out. Train it again: "
               "`scaledb check --rerun-damaged`, then `scaledb run`")


def _judge_finished(run: _Run, row: dict[str, Any]) -> None:
    """A run whose status says finished but whose log lacks its final checkpoint (a torn last line,
    or a last step short of the status file's) is stored as damaged, and the problem says so; the
    checkpoints it has are loaded all the same."""
    if row["status"] != RunState.FINISHED.value:
        return
    torn = run.has_log and run.log_size > run.new_offset
    last = last_logged_step(run.log_path, run.new_offset, run.run_id) if run.has_log and not torn else None
    why = lost_final_checkpoint(RunState.FINISHED, row["last_step"], last, torn)
    planned = f"{run.log_mtime_ns}:{run.log_size}" if run.has_log else "missing"
    if why is None or _sig(run.log_path) != planned:
        return  # complete; or the log moved since it was planned (the run just wrote its last line)
    row["status"] = DAMAGED
    line = None
    if torn:  # the reader called it a write in progress: in a finished run it is not one
        line = next((p.line for p in run.problems if p.kind == "truncated"), None)
        run.problems = [p for p in run.problems if p.kind != "truncated"]
    run.problems.append(SkippedLine(str(run.log_path), line, "damaged", f"{why}; {DAMAGED_FIX}"))


def _mark_orphans(con: duckdb.DuckDBPyConnection, loading: list[_Run]) -> None:
    """Runs without ingest state whose rows are in the database all the same (the state was lost,
    or an older scaledb loaded them): their rows are replaced, like a reload's. Found by the
    `runs` row that every load writes with them."""
    unknown = [r.run_id for r in loading if r.prior is None and not r.delete_rows]
    if not unknown:
        return
    found = {row[0] for row in con.execute("SELECT run_id FROM runs WHERE list_contains(?, run_id)",
                                          [unknown]).fetchall()}
    for run in loading:
        if run.run_id in found:
            run.delete_rows = True


def _insert_rows(con: duckdb.DuckDBPyConnection, tables: list[pa.Table], table: str) -> int:
    """INSERT rows into `table` (one statement for the batch); how many."""
    if not tables:
        return 0
    con.register("_log_rows", concat(tables))
    (n,), = con.execute(f"INSERT INTO {table} SELECT * FROM _log_rows").fetchall()
    con.unregister("_log_rows")
    return int(n)


def _delete_steps(con: duckdb.DuckDBPyConnection, rows: pa.Table, tables: tuple[str, ...]) -> None:
    """Delete from `tables` the rows of every (run_id, step) in `rows`."""
    con.register("_steps", rows.select(["run_id", "step"]))
    for table in tables:
        con.execute(f"DELETE FROM {table} USING (SELECT DISTINCT run_id, step FROM _steps) AS s "
                    f"WHERE {table}.run_id = s.run_id AND {table}.step = s.step")
    con.unregister("_steps")


def _write_batch(
    con: duckdb.DuckDBPyConnection, ws: Workspace, loading: list[_Run], rows_by_run: dict[str, dict[str, Any]],
    log_rows: LogRows, known: dict[str, dict[str, Any]], *, now: datetime,
) -> tuple[int, int]:
    """Write one batch in one transaction: (checkpoint rows, metric rows) written.

    No primary key guards `checkpoints` and `metrics` (schema 3): this keeps them unique. Every
    row written replaces what is there for its (run_id, step): a reloaded run's rows are all
    deleted first, an appended line's step (of checkpoints and metrics alike: the last line wins
    whole) is. Fresh rows, of runs with nothing in the database, go straight in."""
    con.execute("BEGIN TRANSACTION")
    try:
        _mark_orphans(con, loading)
        deleting = [r.run_id for r in loading if r.delete_rows]
        if deleting:
            for table in ("checkpoints", "metrics"):
                con.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id)", [deleting])
        if log_rows.upserts:  # appended lines; their metric rows come from the same lines
            _delete_steps(con, concat(log_rows.upserts), ("checkpoints", "metrics"))
        n_rows = _insert_rows(con, log_rows.tables + log_rows.upserts, "checkpoints")
        n_metrics = _insert_rows(con, log_rows.metric_tables + log_rows.metric_upserts, "metrics")
        # Replacing a row as DELETE + INSERT costs half of INSERT OR REPLACE on these wide tables.
        replacing = [r.run_id for r in loading if r.prior is not None or r.delete_rows]
        if rows_by_run:
            if replacing:
                con.execute("DELETE FROM runs WHERE list_contains(?, run_id)", [replacing])
            con.register("_runs", pa.Table.from_pylist(list(rows_by_run.values()), schema=RUNS_SCHEMA))
            con.execute("INSERT INTO runs BY NAME SELECT * FROM _runs")
            con.unregister("_runs")
            names = sorted({r["experiment"] for r in rows_by_run.values()})
            write_experiments(con, [read_experiment(ws, e, now) for e in names], known)
        if loading:
            if replacing:
                con.execute("DELETE FROM ingest_state WHERE list_contains(?, run_id)", [replacing])
            con.register("_state", pa.Table.from_pylist([_state_row(run, now) for run in loading], schema=STATE_SCHEMA))
            con.execute("INSERT INTO ingest_state SELECT * FROM _state")
            con.unregister("_state")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n_rows, n_metrics


def _state_row(run: _Run, now: datetime) -> dict[str, Any]:
    if run.log_action == "none":
        run.new_offset = run.new_lines = 0
    head = _head_hash(run.log_path, run.new_offset) if run.has_log and run.new_offset > 0 else ""
    kept = [] if run.delete_rows or run.prior is None else json.loads(run.prior.get("problems") or "[]")
    # A truncated tail is not a lasting problem: it loads once its write completes.
    lasting = kept + [asdict(p) for p in run.problems if p.kind != "truncated"]
    return {
        "run_id": run.run_id, "log_path": str(run.log_path), "log_offset": run.new_offset,
        "log_lines": run.new_lines, "log_size": run.log_size if run.has_log else None,
        "log_mtime_ns": run.log_mtime_ns if run.has_log else None, "log_head": head,
        "manifest_sig": run.manifest_sig, "status_sig": run.status_sig,
        "problems": json.dumps(lasting) if lasting else None, "ingested_at": now,
    }


def ingest_runs(
    workspace: Workspace | str | Path,
    run_ids: Iterable[str | os.PathLike[str]] | None = None,
    *,
    full: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
    lock_timeout_s: float | None = None,
) -> IngestReport:
    """Load runs (all of the workspace's, or the given run ids and/or run directories) into its database.

    Idempotent and incremental (see the module docstring); `full=True` rereads every log from the
    start. Pass `con` (an open writer connection) to load through it; otherwise the database is
    opened for writing (waiting up to `lock_timeout_s` for another writer), and closed and reopened
    between batches so that a long load lets runners and readers in every few seconds.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    started = time.perf_counter()
    ids = _resolve_runs(ws, run_ids)
    report = IngestReport(runs_seen=len(ids))
    with ExitStack() as stack:
        current = con if con is not None else _open_for_load(stack, ws, lock_timeout_s)
        prior = _load_state(current, ids)
        todo: list[_Run] = []
        for run_id in ids:
            run = _Run(run_id, ws.run_dir(run_id), prior=prior.get(run_id))
            if not (run.run_dir / "manifest.json").exists():
                report.skipped.append(SkippedLine(
                    str(run.run_dir), None, "file",
                    f"no run {run_id!r} here (no manifest.json). Compile its spec first.",
                ))
                continue
            _plan(run, full)
            if _changed(run):
                todo.append(run)
            else:
                report.runs_unchanged += 1
        for index, batch in enumerate(_batches(todo)):
            if index and con is None:
                stack.close()
                current = _open_for_load(stack, ws, lock_timeout_s)
                batch = _replan(current, batch, full, report)
            _load_batch(current, ws, batch, report)
        # Also when no run changed: a recompile can supersede runs without adding any. Runs loaded
        # by id (a runner's finished run) brought their experiments' rows up to date already.
        if run_ids is None or report.runs_loaded < len(ids):
            refresh_experiments(current, ws, utc_now())
    report.seconds = time.perf_counter() - started
    return report


def _open_for_load(stack: ExitStack, ws: Workspace, lock_timeout_s: float | None) -> duckdb.DuckDBPyConnection:
    """Open the database for one load, closed when `stack` closes.

    The load's commit checkpoints (writes its rows into the file, not the WAL): they are written
    once instead of twice (WAL at commit, file at close), and the close has nothing left to do.
    The file alone still holds every committed load, as after a close."""
    con = stack.enter_context(open_store(ws, lock_timeout_s=lock_timeout_s))
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_AT_COMMIT}'")
    return con


def _replan(con: duckdb.DuckDBPyConnection, batch: list[_Run], full: bool, report: IngestReport) -> list[_Run]:
    """After reopening: another writer may have loaded some of these runs meanwhile; plan those again."""
    fresh = _load_state(con, [r.run_id for r in batch])
    out = []
    for run in batch:
        if fresh.get(run.run_id) != run.prior:
            run = _Run(run.run_id, run.run_dir, prior=fresh.get(run.run_id))
            _plan(run, full)
            if not _changed(run):
                report.runs_unchanged += 1
                continue
        out.append(run)
    return out
