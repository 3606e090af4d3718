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
    final_checkpoints, run_summary   views: the last checkpoint of each run; runs + it

Guarantees:
- (run_id, step) is the primary key of `checkpoints`: a row can be replaced, never doubled.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from scaling_db import __version__
from scaling_db.errors import StoreError
from scaling_db.workspace import Workspace

#: Seconds a writer (or reader) keeps retrying DuckDB's file lock before giving up.
DEFAULT_LOCK_TIMEOUT_S = 10.0
LOCK_TIMEOUT_ENV = "SCALEDB_LOCK_TIMEOUT_S"

RUN_STATUSES = ("pending", "running", "finished", "failed", "diverged", "unknown")

#: Every scaledb connection: no replacement scans (DuckDB would otherwise read a Python variable
#: named like a missing table, so `FROM x` could silently query a local), no progress bar (it
#: would draw on a runner's or the CLI's stderr).
CONNECTION_CONFIG = {"python_enable_replacements": False}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1_TABLES = (
    """
    CREATE TABLE experiments (
        experiment   VARCHAR PRIMARY KEY,
        source       VARCHAR NOT NULL,
        spec_path    VARCHAR,
        spec_hash    VARCHAR,
        description  VARCHAR,
        n_planned    INTEGER,
        n_dropped    INTEGER,
        info         JSON,
        created_at   TIMESTAMP NOT NULL,
        updated_at   TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE runs (
        run_id             VARCHAR PRIMARY KEY,
        experiment         VARCHAR NOT NULL,
        name               VARCHAR,
        status             VARCHAR NOT NULL,
        config_id          VARCHAR,
        model_kind         VARCHAR,
        n_params           BIGINT,
        n_params_nonembed  BIGINT,
        n_params_embed     BIGINT,
        n_layers           INTEGER,
        d_model            INTEGER,
        n_heads            INTEGER,
        d_ff               INTEGER,
        context            INTEGER,
        vocab_size         INTEGER,
        parameterization   VARCHAR,
        optimizer          VARCHAR,
        lr                 DOUBLE,
        weight_decay       DOUBLE,
        schedule           VARCHAR,
        batch_size         INTEGER,
        steps              BIGINT,
        tokens_budget      BIGINT,
        flops_budget_6n_nonembed DOUBLE,
        flops_budget_6n    DOUBLE,
        flops_budget_exact DOUBLE,
        seed               BIGINT,
        data_seed          BIGINT,
        data_source        VARCHAR,
        entropy_rate       DOUBLE,
        vars               JSON,
        tags               VARCHAR[],
        manifest           JSON,
        git_sha            VARCHAR,
        device             VARCHAR,
        "precision"        VARCHAR,
        backend            VARCHAR,
        job_id             VARCHAR,
        host               VARCHAR,
        last_step          BIGINT,
        error              VARCHAR,
        diverged_at_step   BIGINT,
        created_at         TIMESTAMP,
        started_at         TIMESTAMP,
        finished_at        TIMESTAMP,
        updated_at         TIMESTAMP,
        ingested_at        TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE checkpoints (
        run_id             VARCHAR NOT NULL,
        step               BIGINT NOT NULL,
        tokens             BIGINT,
        flops_6n_nonembed  DOUBLE,
        flops_6n           DOUBLE,
        flops_exact        DOUBLE,
        train_loss         DOUBLE,
        eval_loss          DOUBLE,
        lr                 DOUBLE,
        wall_time_s        DOUBLE,
        tokens_per_s       DOUBLE,
        PRIMARY KEY (run_id, step)
    )
    """,
    """
    CREATE TABLE metrics (
        run_id  VARCHAR NOT NULL,
        step    BIGINT NOT NULL,
        name    VARCHAR NOT NULL,
        value   DOUBLE,
        PRIMARY KEY (run_id, step, name)
    )
    """,
    """
    CREATE TABLE fits (
        fit_id           VARCHAR PRIMARY KEY,
        experiment       VARCHAR,
        name             VARCHAR,
        law              VARCHAR NOT NULL,
        formula          VARCHAR,
        params           JSON NOT NULL,
        intervals        JSON,
        stats            JSON,
        "columns"        JSON,
        y                VARCHAR,
        settings         JSON,
        query_name       VARCHAR,
        query_sql        VARCHAR,
        query_params     JSON,
        run_ids          JSON,
        excluded         JSON,
        n_points         INTEGER,
        objective        DOUBLE,
        scaledb_version  VARCHAR,
        created_at       TIMESTAMP NOT NULL,
        extra            JSON
    )
    """,
    """
    CREATE TABLE ingest_state (
        run_id        VARCHAR PRIMARY KEY,
        log_path      VARCHAR,
        log_offset    BIGINT NOT NULL,
        log_lines     BIGINT NOT NULL,
        log_size      BIGINT,
        log_mtime_ns  BIGINT,
        log_head      VARCHAR,
        manifest_sig  VARCHAR,
        status_sig    VARCHAR,
        problems      JSON,
        ingested_at   TIMESTAMP NOT NULL
    )
    """,
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

_V1_COMMENTS = {
    "experiments": "One row per experiment: compiled from a spec (source='spec') or imported from a table "
                   "(source='import').",
    "runs": "One row per run: sweep parameters as columns, the full manifest as JSON, the status file's fields.",
    "checkpoints": "One row per evaluated checkpoint, unique on (run_id, step). FLOPs in three conventions; "
                   "losses in nats/token.",
    "metrics": "Extra named metrics of a checkpoint (long format).",
    "fits": "Stored scaling-law fits with the query and runs that produced their data.",
    "ingest_state": "Internal: how far each run's log has been loaded (byte offset, line count), "
                    "for incremental ingest.",
}

_V1_COLUMN_COMMENTS = {
    ("runs", "status"): "pending | running | finished | failed | diverged | unknown (unreadable status.json)",
    ("runs", "config_id"): "hash of the run identity without train.seed and data.seed: seed replicates share it",
    ("runs", "tokens_budget"): "training tokens the run is planned for (samples for closed-form learners)",
    ("runs", "flops_budget_exact"): "planned training FLOPs, exact count incl. attention (Chinchilla App. F)",
    ("runs", "vars"): "free sweep variables of the point, e.g. {\"flop_budget\": 1e15}",
    ("runs", "manifest"): "the whole run manifest; reach any field with manifest->>'$.path.to.field'",
    ("runs", "last_step"): "last logged checkpoint step according to status.json",
    ("checkpoints", "flops_6n_nonembed"): "training FLOPs so far, 6*N_nonembed*tokens (Kaplan et al. 2020)",
    ("checkpoints", "flops_6n"): "training FLOPs so far, 6*N*tokens with embeddings counted",
    ("checkpoints", "flops_exact"): "training FLOPs so far incl. attention (Chinchilla App. F); "
                                    "imports: the table's own compute column",
    ("checkpoints", "train_loss"): "mean training loss since the previous checkpoint (nats/token); NULL if non-finite",
    ("checkpoints", "eval_loss"): "held-out loss at this checkpoint (nats/token); NULL if non-finite (diverged)",
    ("checkpoints", "wall_time_s"): "training wall time since the run first started",
}


def _comment_statements() -> tuple[str, ...]:
    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    tables = (f"COMMENT ON TABLE {t} IS {quote(c)}" for t, c in _V1_COMMENTS.items())
    columns = (f"COMMENT ON COLUMN {t}.{c} IS {quote(text)}" for (t, c), text in _V1_COLUMN_COMMENTS.items())
    return (*tables, *columns)


#: Every schema change, in order. Never edit a released migration: append a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: experiments, runs, checkpoints, metrics, fits, ingest_state",
              _V1_TABLES + _comment_statements()),
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


def connect(
    path: str | Path, *, read_only: bool = False, lock_timeout_s: float | None = None
) -> duckdb.DuckDBPyConnection:
    """A raw DuckDB connection to `path`, retrying DuckDB's file lock with backoff."""
    path = Path(path)
    timeout = _lock_timeout(lock_timeout_s)
    if read_only and not path.exists():
        raise StoreError(
            f"{path}: no result database yet. Run `scaledb ingest` (or a sweep) to create it."
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=CONNECTION_CONFIG)
            con.execute("SET enable_progress_bar = false")
            return con
        except duckdb.ConnectionException as exc:
            if "different configuration" in str(exc):
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


def _check_readable_version(path: Path, version: int) -> None:
    if version != latest_version():
        newer = version > latest_version()
        raise StoreError(
            f"{path}: database schema is version {version} vs {latest_version()} expected. "
            + ("It was written by a newer scaledb; upgrade scaledb." if newer
               else "Run `scaledb ingest` once to upgrade it.")
        )


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
                _check_readable_version(path, schema_version(con))
            else:
                migrate(con)
        except duckdb.Error as exc:
            if _is_damaged(exc):
                raise damaged_database_error(path, exc) from None
            raise
        yield con
    finally:
        con.close()


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
    as `run_ids`; `objective` defaults to `stats['objective']`.
    """
    row: dict[str, Any] = {}
    extra: dict[str, Any] = dict(record.get("extra") or {})
    for key, value in record.items():
        key = _FIT_ALIASES.get(key, key)
        if key == "extra":
            continue
        if key in _FIT_JSON or key in _FIT_TEXT or key in _FIT_OTHER:
            if key not in row:
                row[key] = value
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
