"""The result database: one DuckDB file per workspace (`<workspace>/scaledb.duckdb`).

What is in it (every table also carries a `COMMENT`, visible in the plain DuckDB CLI with
`SELECT table_name, comment FROM duckdb_tables()`):

    schema_version   one row per migration applied (version, description, applied_at)
    experiments      one row per experiment: compiled from a spec (`source = 'spec'`) or
                     imported from an external table (`source = 'import'`)
    runs             one row per run: every sweep parameter as a column, the whole manifest as
                     JSON (`manifest->>'$.model.d_head'`), the status file's fields
    checkpoints      one row per (run_id, step): tokens, FLOPs in three conventions, losses, lr
    metrics          extra named metrics of a checkpoint, long format (run_id, step, name, value)
    fits             stored fits (written by the fitting code through `record_fit`)
    ingest_state     internal: how far each run's log has been loaded (for incremental ingest)
    run_revisions    the run ids each compile (revision) of an experiment's spec produced
    final_checkpoints, run_summary   views: the last checkpoint of each run; runs + it
    superseded_runs  view: runs of an earlier revision that the current one no longer produces
    run_selection    view: (run_id, revision) for revision = 'current' | 'all' | a revision hash

Guarantees:
- One row per (run_id, step) in `checkpoints` and per (run_id, step, name) in `metrics`: a row can
  be replaced, never doubled. The loaders keep this (since schema 3 no primary key does, see
  `store.ingest`): every write of a run's rows first deletes what they replace, in the same
  transaction. The primary-key indexes were the largest cost of a load after parsing.
- The schema is versioned; `open_store` applies missing migrations (in order, each in its own
  transaction) when it opens for writing. A read-only open of an older file asks for an ingest.
- One writer at a time is DuckDB's rule (a process holding the file locks out every other
  process, readers included). `open_store` retries the lock with backoff for a bounded time,
  then raises `StoreError` naming the file. Readers open read-only; DuckDB then refuses any
  statement that would modify the file, which is what keeps queries from writing.
- All timestamps are UTC (`TIMESTAMP`, no time zone).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from scaling_db import __version__
from scaling_db.errors import StoreError
from scaling_db.store.tables import create_tables
from scaling_db.workspace import Workspace

#: Seconds a writer (or reader) keeps retrying DuckDB's file lock before giving up.
DEFAULT_LOCK_TIMEOUT_S = 10.0
LOCK_TIMEOUT_ENV = "SCALEDB_LOCK_TIMEOUT_S"

#: Every scaledb connection: no replacement scans (DuckDB would otherwise read a Python variable
#: named like a missing table, so `FROM x` could silently query a local), no progress bar (it
#: would draw on a runner's or the CLI's stderr).
CONNECTION_CONFIG = {"python_enable_replacements": False}
#: Settings of a connection that runs a user's SQL (`connect_sandboxed`): no extension is
#: installed or loaded behind the user's back, no progress bar.
SANDBOX_SETTINGS = (
    "enable_progress_bar = false",
    "autoinstall_known_extensions = false",
    "autoload_known_extensions = false",
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1_VIEWS = (
    # The last checkpoint (highest step) of each run; its loss is the run's final loss.
    """
    CREATE VIEW final_checkpoints AS
    SELECT c.*
    FROM checkpoints AS c
    JOIN (SELECT run_id, max(step) AS step FROM checkpoints GROUP BY run_id) AS last
      USING (run_id, step)
    """,
    """
    CREATE VIEW run_summary AS
    SELECT r.run_id, r.experiment, r.name, r.status, r.config_id,
           r.n_params, r.n_params_nonembed, r.n_layers, r.d_model, r.parameterization,
           r.lr, r.batch_size, r.seed, r.tokens_budget, r.data_source, r.entropy_rate,
           n.n_checkpoints,
           f.step AS final_step, f.tokens AS final_tokens,
           f.flops_6n_nonembed AS final_flops_6n_nonembed, f.flops_6n AS final_flops_6n,
           f.flops_exact AS final_flops_exact,
           f.train_loss AS final_train_loss, f.eval_loss AS final_eval_loss,
           f.wall_time_s AS final_wall_time_s
    FROM runs AS r
    LEFT JOIN final_checkpoints AS f USING (run_id)
    LEFT JOIN (SELECT run_id, count(*) AS n_checkpoints FROM checkpoints GROUP BY run_id) AS n
      USING (run_id)
    """,
)

# Spec revisions (scaling_db.spec.revisions): which runs each compile produced; runs of earlier
# revisions that the current one does not produce are superseded.
_V2_VIEWS = (
    """
    CREATE VIEW superseded_runs AS
    SELECT DISTINCT p.experiment, p.run_id
    FROM run_revisions AS p
    JOIN experiments AS e USING (experiment)
    WHERE p.run_id NOT IN (
        SELECT c.run_id FROM run_revisions AS c WHERE c.experiment = e.experiment AND c.revision = e.revision
    )
    """,
    # What a query's `revision` parameter selects: 'current' (every run but the superseded),
    # 'all', or a revision hash (the runs that compile produced).
    """
    CREATE VIEW run_selection AS
    SELECT run_id, experiment, 'all' AS revision FROM runs
    UNION ALL
    SELECT run_id, experiment, 'current' FROM runs WHERE run_id NOT IN (SELECT run_id FROM superseded_runs)
    UNION ALL
    SELECT DISTINCT run_id, experiment, revision FROM run_revisions
    """,
)


#: Every schema change, in order. Never edit a released migration: append a new one (its tables and
#: columns are declared in `tables.py` with `since=` its version).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: experiments, runs, checkpoints, metrics, fits, ingest_state",
              create_tables(1) + _V1_VIEWS),
    Migration(2, "spec revisions: experiments.revision, run_revisions, superseded_runs, run_selection",
              create_tables(2) + _V2_VIEWS),
    Migration(3, "checkpoints and metrics without primary keys: the loader keeps them unique",
              create_tables(3)),
)


def latest_version(migrations: tuple[Migration, ...] | None = None) -> int:
    return max(m.version for m in (migrations or MIGRATIONS))


# -- opening -----------------------------------------------------------------------------------

def _lock_timeout(value: float | None) -> float:
    if value is not None:
        return value
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw:
        try:
            return float(raw)
        except ValueError:
            raise StoreError(f"${LOCK_TIMEOUT_ENV}: not a number ({raw!r}). Set it to seconds, e.g. 10.") from None
    return DEFAULT_LOCK_TIMEOUT_S


def _is_lock_error(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) and "Could not set lock" in str(exc)


def _holder(exc: duckdb.Error) -> str:
    """'PID 123' from DuckDB's lock message, so the user knows which process to look at."""
    found = re.search(r"PID (\d+)", str(exc))
    return f" (PID {found.group(1)})" if found else ""


#: What DuckDB says of a file that is not (or no longer) a database: empty, garbage, cut short, bad checksums.
_DAMAGE_SIGNS = ("not a valid DuckDB database", "Corrupt database file", "Could not read enough bytes")


def _is_damaged(exc: duckdb.Error) -> bool:
    return any(sign in str(exc) for sign in _DAMAGE_SIGNS)


def damaged_database_error(path: Path, exc: duckdb.Error) -> StoreError:
    """The error for a database file DuckDB cannot read: it says how to rebuild it from the logs."""
    what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(
        f"{path}: not a readable DuckDB database ({what}). Everything in it except stored fits and "
        f"imported tables is rebuilt from the run logs: move it away and ingest again, "
        f"`mv {path} {path}.damaged && scaledb ingest -w {path.parent}`."
    )


def _retry_lock(path: Path, read_only: bool, timeout: float, open_once: Callable[[], duckdb.DuckDBPyConnection]
                ) -> duckdb.DuckDBPyConnection:
    """`open_once()`, retried with backoff while another process holds DuckDB's file lock."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return open_once()
        except (duckdb.ConnectionException, duckdb.ResourceInUseException) as exc:
            if "different configuration" in str(exc) or "file handle conflict" in str(exc):
                raise StoreError(
                    f"{path}: this process already has the database open "
                    f"{'read-only' if not read_only else 'for writing'}; DuckDB allows one mode per "
                    "process. Close that connection (leave its `with open_store(...)` block) first."
                ) from None
            raise StoreError(f"{path}: cannot open the database ({exc})") from None
        except duckdb.Error as exc:
            if _is_damaged(exc):
                raise damaged_database_error(path, exc) from None
            if not _is_lock_error(exc):
                raise StoreError(f"{path}: cannot open the database ({exc})") from None
            if time.monotonic() >= deadline:
                what = "write to" if not read_only else "read"
                raise StoreError(
                    f"{path}: could not {what} the database: another scaledb process{_holder(exc)} has it "
                    f"open (waited {timeout:g} s vs the lock timeout). DuckDB allows one writer and no "
                    f"readers beside it; wait for that process to finish, or raise ${LOCK_TIMEOUT_ENV}."
                ) from None
            # Jittered exponential backoff: many runners finishing at once must not retry in step.
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.5))
            delay = min(delay * 1.6, 0.25)


def _missing(path: Path) -> StoreError:
    return StoreError(f"{path}: no result database yet. Run `scaledb ingest` (or a sweep) to create it.")


def connect(
    path: str | Path, *, read_only: bool = False, lock_timeout_s: float | None = None
) -> duckdb.DuckDBPyConnection:
    """A raw DuckDB connection to `path`, retrying DuckDB's file lock with backoff."""
    path = Path(path)
    if read_only and not path.exists():
        raise _missing(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)

    def open_once() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(path), read_only=read_only, config=CONNECTION_CONFIG)
        con.execute("SET enable_progress_bar = false")
        return con

    return _retry_lock(path, read_only, _lock_timeout(lock_timeout_s), open_once)


def connect_sandboxed(
    path: str | Path, *, allow_files: bool = False, lock_timeout_s: float | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection for running a user's SQL: `path` attached read-only, settings locked.

    The database is ATTACHed to a fresh in-memory DuckDB (rather than opened with a config) so that
    these settings apply to this connection alone: DuckDB shares one instance, and its settings,
    between connections to the same file in a process. Afterwards: no file access beside the
    database unless `allow_files` (no COPY TO, EXPORT, ATTACH, INSTALL, reading a CSV), no
    extension autoloading, and `lock_configuration` so no statement can undo any of it.
    """
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    quoted = "'" + str(path).replace("'", "''") + "'"

    def open_once() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config=CONNECTION_CONFIG)
        try:
            con.execute(f"ATTACH {quoted} AS {_quote_ident(path.stem)} (READ_ONLY)")
            con.execute(f"USE {_quote_ident(path.stem)}")
            for setting in SANDBOX_SETTINGS + (() if allow_files else ("enable_external_access = false",)):
                con.execute(f"SET {setting}")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    return _retry_lock(path, True, _lock_timeout(lock_timeout_s), open_once)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of the open database (0 for an empty file)."""
    # Asking the table directly is ~30x cheaper than asking duckdb_tables() whether it exists,
    # and this runs on every open (a runner loading one run pays for it).
    try:
        (version,), = con.execute("SELECT max(version) FROM schema_version").fetchall()
    except duckdb.CatalogException:
        return 0
    return int(version or 0)


def migrate(con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...] | None = None) -> list[int]:
    """Apply the migrations the database lacks, in order; each in one transaction. Idempotent."""
    migrations = migrations or MIGRATIONS
    current = schema_version(con)
    if current == latest_version(migrations):
        return []  # the common case, checked without writing anything
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL, scaledb_version VARCHAR)"
    )
    if current > latest_version(migrations):
        raise StoreError(
            f"database schema is version {current} vs {latest_version(migrations)} known to scaledb {__version__}: "
            "it was written by a newer scaledb. Upgrade scaledb."
        )
    applied = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?, ?)",
                [migration.version, migration.description, utc_now(), __version__],
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise StoreError(f"migration {migration.version} ({migration.description}) failed: {exc}") from None
        applied.append(migration.version)
    return applied


def _db_path(target: Workspace | str | Path) -> Path:
    if isinstance(target, Workspace):
        return target.db_path
    path = Path(target)
    return path if path.suffix == ".duckdb" else Workspace(path).db_path


@contextmanager
def open_store(
    workspace: Workspace | str | Path,
    read_only: bool = False,
    *,
    lock_timeout_s: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the workspace's database (a Workspace, its directory, or a .duckdb path).

    Writers migrate the schema on open; readers get a read-only connection and an error if the
    schema is older than this scaledb's. The lock is retried for `lock_timeout_s` (default
    $SCALEDB_LOCK_TIMEOUT_S or 10 s). The connection is closed on exit, releasing the lock.
    """
    path = _db_path(workspace)
    con = connect(path, read_only=read_only, lock_timeout_s=lock_timeout_s)
    try:
        try:  # the first reads of the file: where a damaged one shows
            if read_only:
                _check_version(con, path)
            else:
                migrate(con)
        except duckdb.Error as exc:
            if _is_damaged(exc):
                raise damaged_database_error(path, exc) from None
            raise
        yield con
    finally:
        con.close()


@contextmanager
def open_sandboxed(
    workspace: Workspace | str | Path, *, allow_files: bool = False, lock_timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect_sandboxed` to the workspace's database, schema version checked; closed on exit."""
    path = _db_path(workspace)
    con = connect_sandboxed(path, allow_files=allow_files, lock_timeout_s=lock_timeout_s)
    try:
        _check_version(con, path)
        yield con
    finally:
        con.close()


def _check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = schema_version(con)
    if version != latest_version():
        newer = version > latest_version()
        raise StoreError(
            f"{path}: database schema is version {version} vs {latest_version()} expected. "
            + ("It was written by a newer scaledb; upgrade scaledb." if newer
               else "Run `scaledb ingest` once to upgrade it.")
        )


# -- small helpers shared by the loaders -----------------------------------------------------

def utc_now() -> datetime:
    """Now, as a naive UTC datetime (the database stores UTC without a zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_utc(value: Any) -> datetime | None:
    """An ISO-8601 string (any offset) or epoch seconds as naive UTC; None if unparseable."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
        parsed = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]
    ).fetchall()]


# -- fits ----------------------------------------------------------------------------------------

_FIT_JSON = ("params", "intervals", "stats", "columns", "settings", "query_params", "run_ids", "excluded", "extra")
_FIT_TEXT = ("fit_id", "experiment", "name", "law", "formula", "y", "query_name", "query_sql", "scaledb_version")
_FIT_OTHER = ("n_points", "objective", "created_at")
_FIT_ALIASES = {"used": "run_ids", "query": "query_name", "sql": "query_sql"}


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # NaN/inf are not JSON; a fit's infinite interval end becomes null rather than invalid JSON.
    return json.dumps(_finite(value), sort_keys=True, default=_json_default, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return value


def record_fit(con: duckdb.DuckDBPyConnection, record: Mapping[str, Any]) -> str:
    """Store one fit (e.g. `LawFit.to_record()` plus experiment, name, query_name, query_sql,
    run_ids) in `fits` and return its fit_id.

    The id is a hash of the record's content (without created_at), so storing the same fit twice
    keeps one row. Keys that are not columns are kept in the `extra` JSON column; `used` is read
    as `run_ids` when the record has no `run_ids` (else kept in `extra`; likewise `query`, `sql`);
    `objective` defaults to `stats['objective']`.
    """
    row: dict[str, Any] = {}
    extra: dict[str, Any] = dict(record.get("extra") or {})
    for key, value in record.items():
        if key == "extra":
            continue
        column = _FIT_ALIASES.get(key, key)
        if key in _FIT_ALIASES and column in record:
            extra[key] = value  # the column's own key wins, whatever the order of the keys
        elif column in _FIT_JSON or column in _FIT_TEXT or column in _FIT_OTHER:
            row[column] = value
        else:
            extra[key] = value
    if extra:
        row["extra"] = extra
    if not row.get("law"):
        raise StoreError("record_fit: the record has no `law` (got keys " + ", ".join(sorted(record)) + ")")
    if row.get("params") is None:
        raise StoreError(f"record_fit: fit of law {row['law']!r} has no `params`")
    stats = row.get("stats") or {}
    if row.get("objective") is None and isinstance(stats, Mapping) and "objective" in stats:
        row["objective"] = stats["objective"]
    row.setdefault("scaledb_version", __version__)
    created = row.pop("created_at", None)
    if not row.get("fit_id"):
        content = {k: _finite(v) for k, v in row.items() if k != "scaledb_version"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=_json_default).encode()).hexdigest()
        row["fit_id"] = digest[:16]
    created_at = to_utc(created) if created is not None and not isinstance(created, datetime) else created
    values = {k: _json(row.get(k)) for k in _FIT_JSON}
    values.update({k: (None if row.get(k) is None else str(row[k])) for k in _FIT_TEXT})
    objective = row.get("objective")
    values["objective"] = None if objective is None else float(objective)
    n_points = row.get("n_points")
    values["n_points"] = None if n_points is None else int(n_points)
    values["created_at"] = created_at or utc_now()
    columns = list(values)
    quoted = ", ".join(f'"{c}"' for c in columns)
    try:
        con.execute(
            f"INSERT OR REPLACE INTO fits ({quoted}) VALUES ({', '.join('?' for _ in columns)})",
            [values[c] for c in columns],
        )
    except duckdb.Error as exc:
        raise StoreError(f"record_fit: cannot store fit {row['fit_id']} ({exc})") from None
    return str(row["fit_id"])
