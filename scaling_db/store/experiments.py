"""Experiments rows and spec revisions: `experiments/<experiment>/experiment.json` -> the database.

An experiment's row holds its spec path, hash, current revision and counts; `run_revisions`
holds the run ids of each of its revisions (see `scaling_db.spec.revisions`), from which the
`superseded_runs` and `run_selection` views say which runs the current revision no longer
produces. Rows are rewritten only when the file says something new.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from scaling_db.spec.revisions import SpecRevision, revisions_of
from scaling_db.store.database import open_store, to_utc, utc_now
from scaling_db.store.tables import REVISIONS_SCHEMA
from scaling_db.workspace import Workspace

#: The experiments columns compared to decide whether a row must be rewritten.
EXPERIMENT_FIELDS = ("source", "spec_path", "spec_hash", "revision", "description", "n_planned", "n_dropped", "info")


@dataclass(frozen=True)
class ExperimentFile:
    """What one experiment.json says: its experiments row and its revisions."""

    row: dict[str, Any]
    revisions: list[SpecRevision] = field(default_factory=list)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def read_experiment(ws: Workspace, experiment: str, now: datetime) -> ExperimentFile:
    """The experiments row (source 'spec') and revisions of a compiled experiment; a missing or
    unreadable file gives a row of NULLs, so its runs still load."""
    path = ws.experiment_dir(experiment) / "experiment.json"
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    revisions = revisions_of(info)
    # Run ids live in run_revisions; `info` keeps the rest (the revisions without their run ids).
    kept = {k: v for k, v in info.items() if k not in ("run_ids", "revisions")}
    if revisions:
        kept["revisions"] = [{"revision": r.revision, "compiled_at": r.compiled_at, "n_runs": len(r.run_ids)}
                             for r in revisions]
    row = {
        "experiment": experiment,
        "source": "spec",
        "spec_path": _str(info.get("spec_path")),
        "spec_hash": _str(info.get("spec_hash")),
        "revision": revisions[-1].revision if revisions else None,
        "description": _str(info.get("description")),
        "n_planned": len(info["run_ids"]) if isinstance(info.get("run_ids"), list) else None,
        "n_dropped": len(info["dropped"]) if isinstance(info.get("dropped"), list) else None,
        "info": json.dumps(kept, default=str) if info else None,
        "created_at": now,
        "updated_at": now,
    }
    return ExperimentFile(row, revisions)


def upsert_experiments(con: duckdb.DuckDBPyConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update experiments rows; `created_at` keeps its first value."""
    for row in rows:
        cols = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("experiment", "created_at"))
        con.execute(
            f"INSERT INTO experiments ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT (experiment) DO UPDATE SET {updates}",
            [row[c] for c in cols],
        )


def known_experiments(con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored experiments rows among `names` (to skip rewriting unchanged ones)."""
    names = list(names)
    if not names:
        return {}
    cur = con.execute(f"SELECT experiment, {', '.join(EXPERIMENT_FIELDS)} FROM experiments "
                      "WHERE list_contains(?, experiment)", [names])
    return {row[0]: dict(zip(EXPERIMENT_FIELDS, row[1:])) for row in cur.fetchall()}


def _changed(files: Sequence[ExperimentFile], known: dict[str, dict[str, Any]]) -> list[ExperimentFile]:
    return [f for f in files if f.row["experiment"] not in known
            or any(f.row[k] != known[f.row["experiment"]][k] for k in EXPERIMENT_FIELDS)]


def write_experiments(con: duckdb.DuckDBPyConnection, files: Sequence[ExperimentFile],
                      known: dict[str, dict[str, Any]]) -> int:
    """Upsert the experiments (and replace the revisions) whose file changed; how many did.
    Call inside the caller's transaction."""
    changed = _changed(files, known)
    if not changed:
        return 0
    upsert_experiments(con, [f.row for f in changed])
    names = [f.row["experiment"] for f in changed]
    con.execute("DELETE FROM run_revisions WHERE list_contains(?, experiment)", [names])
    rows = {(f.row["experiment"], rev.revision, run_id): to_utc(rev.compiled_at)
            for f in changed for rev in f.revisions for run_id in rev.run_ids}
    if rows:
        keys = list(rows)
        table = pa.table({"experiment": [k[0] for k in keys], "revision": [k[1] for k in keys],
                          "run_id": [k[2] for k in keys], "compiled_at": list(rows.values())},
                         schema=REVISIONS_SCHEMA)
        con.register("_revisions", table)
        con.execute("INSERT INTO run_revisions SELECT * FROM _revisions")
        con.unregister("_revisions")
    return len(changed)


def refresh_experiments(con: duckdb.DuckDBPyConnection, ws: Workspace, now: datetime) -> int:
    """Bring the rows of every compiled experiment up to date (a recompile that added no run still
    supersedes some); experiments holding imported runs are left alone. One transaction, if any."""
    names = ws.experiments()
    known = known_experiments(con, names)
    files = [read_experiment(ws, name, now) for name in names if known.get(name, {}).get("source") != "import"]
    if not _changed(files, known):
        return 0
    con.execute("BEGIN TRANSACTION")
    try:
        n = write_experiments(con, files, known)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n


def sync_experiments(ws: Workspace) -> int:
    """`refresh_experiments` in its own connection, right after a compile: the runs a new revision
    supersedes leave fits, queries and figures at once, not at the next ingest. Without a
    database there is nothing to bring up to date (its first load writes every row)."""
    if not ws.db_path.exists():
        return 0
    with open_store(ws) as con:
        return refresh_experiments(con, ws, utc_now())
