"""What the dashboard shows, read without ever holding up a writer.

Two sources, merged per run:
- the database, opened read-only for one query at a time and never waited for
  (`lock_timeout_s=0`): while `scaledb run` or `scaledb ingest` holds DuckDB's write lock the open
  fails at once and the last snapshot (or the files alone) is shown. Results are cached until the
  database file changes, so an idle dashboard does not keep opening it;
- the run directories (`status.json`, the last line of `log.jsonl`), which runners write as they
  train: fresher than the database, so a run's status and last checkpoint come from them. They are
  rescanned at most every `refresh_s` seconds, and only files whose size or mtime changed are read.

Every SQL statement goes through `scaling_db.store.query.run_query` (the dashboard's own queries
are .sql files beside this module). Nothing here writes.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.errors import QueryError, StoreError
from scaling_db.spec.plan import superseded_runs
from scaling_db.store.tables import DAMAGED, RUN_STATUSES
from scaling_db.store.query import run_query
from scaling_db.training.records import RunState, lost_final_checkpoint
from scaling_db.workspace import Workspace

SERVE_QUERY_DIR = Path(__file__).resolve().parent / "queries"

#: Run columns that can be swept; those that vary within an experiment become filters.
SWEEP_CANDIDATES = ("model_kind", "n_params", "n_params_nonembed", "n_layers", "d_model", "n_heads", "d_ff",
                    "context", "vocab_size", "parameterization", "optimizer", "lr", "weight_decay", "schedule",
                    "batch_size", "steps", "tokens_budget", "seed", "data_seed", "data_source")
#: Where each sweep column sits in a run's manifest.json (the database's `runs` row has the same
#: columns; a run the database does not have yet gets them from here).
MANIFEST_PATHS = {
    "model_kind": ("model", "kind"), "n_params": ("counts", "n_params"),
    "n_params_nonembed": ("counts", "n_params_nonembed"), "n_layers": ("model", "n_layers"),
    "d_model": ("model", "d_model"), "n_heads": ("model", "n_heads"), "d_ff": ("model", "d_ff"),
    "context": ("model", "context"), "vocab_size": ("counts", "vocab_size"),
    "parameterization": ("model", "parameterization", "kind"), "optimizer": ("train", "optimizer", "kind"),
    "lr": ("train", "optimizer", "lr"), "weight_decay": ("train", "optimizer", "weight_decay"),
    "schedule": ("train", "schedule", "kind"), "batch_size": ("train", "batch_size"), "steps": ("train", "steps"),
    "seed": ("train", "seed"), "data_seed": ("data", "seed"), "data_source": ("data", "kind"),
}
#: Progress columns, from the last checkpoint (log line or database row).
FINAL_COLUMNS = ("final_step", "final_tokens", "final_flops", "final_train_loss", "final_eval_loss")
#: A log's last record is found in its last this-many bytes (one record is ~300 bytes).
_TAIL_BYTES = 16_384


def format_value(value: Any) -> str:
    """One cell as text: integers as they are (also those stored as floats, below 1e6), other
    floats to 4 significant digits, NaN/None empty.
    Filters compare these texts, so a filter value is exactly what the table shows."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _sig(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def read_last_record(path: Path) -> dict[str, Any] | None:
    """The last complete line of a run log as a dict (a torn last line is not a record)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.split(b"\n")[:-1]):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the tail window, or a damaged one: look further back
        if isinstance(record, dict):
            return record
    return None


def read_curve(path: Path) -> pd.DataFrame:
    """Every complete, readable record of a run log as rows (damaged lines are left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pd.DataFrame()
    rows = []
    for line in data.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            record.pop("metrics", None)
            rows.append(record)
    return pd.DataFrame(rows)


def thin_curve(df: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most `max_points` rows, log-spaced by rank, always the first and the last."""
    if len(df) <= max_points:
        return df
    idx = np.unique(np.round(np.geomspace(1, len(df), max_points)).astype(int) - 1)
    return df.iloc[idx]


@dataclass
class _FileRun:
    status_sig: tuple[int, int] | None = None
    log_sig: tuple[int, int] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    row: dict[str, Any] | None = None  # from the manifest, for runs the database does not have


def _file_status(entry: _FileRun) -> str:
    """The run's status as its files say it, `damaged` where it says finished but the log lacks
    the final checkpoint (as ingest and `scaledb status` judge it)."""
    status = entry.status.get("status", "pending")
    if status not in RUN_STATUSES:
        return "unknown"
    step, last = entry.status.get("step"), (entry.last or {}).get("step")
    if status == RunState.FINISHED.value and lost_final_checkpoint(
            RunState.FINISHED, step if isinstance(step, int) else None, last if isinstance(last, int) else None,
            torn=False):
        return DAMAGED  # a torn last line shows here too: the last complete record is an earlier step
    return status


@dataclass(frozen=True)
class _ExperimentTable:
    source: pd.DataFrame  # the merged runs frame this was built from (identity = cache key)
    rows: pd.DataFrame
    texts: pd.DataFrame  # sweep columns as the table shows them
    sweep: tuple[str, ...]
    choices: dict[str, list[str]]


@dataclass(frozen=True)
class ExperimentSummary:
    name: str
    description: str
    spec_path: str
    spec_hash: str
    revision: str
    n_planned: int | None
    n_dropped: int | None
    counts: dict[str, int]
    plots: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class RunsPage:
    experiment: str
    columns: tuple[str, ...]
    sweep_columns: tuple[str, ...]
    choices: dict[str, list[str]]
    rows: list[dict[str, str]]
    total: int
    matching: int
    offset: int
    limit: int


@dataclass(frozen=True)
class RunDetail:
    run_id: str
    name: str
    experiment: str
    status: dict[str, Any]
    manifest: dict[str, Any] | None
    state_file: str
    curve: pd.DataFrame
    curve_source: str


class WorkspaceView:
    """Read-only, cached, never-blocking access to one workspace for the dashboard."""

    def __init__(self, ws: Workspace, *, refresh_s: float = 1.0, query_options: dict[str, Any] | None = None):
        self.ws = ws
        self.refresh_s = refresh_s
        self.query_options = dict(query_options or {})
        self.db_note = ""
        self._lock = threading.RLock()
        self._files: dict[str, _FileRun] = {}
        self._files_version = 0
        self._scanned_at = -math.inf
        self._db_cache: dict[str, tuple[Any, Any]] = {}
        self._merged: tuple[Any, pd.DataFrame] | None = None
        self._tables: dict[str, _ExperimentTable] = {}

    # -- database ------------------------------------------------------------------------------
    def db_signature(self) -> tuple[Any, ...] | None:
        """Changes whenever the database (or its write-ahead log) does; None if there is none."""
        main = _sig(self.ws.db_path)
        return None if main is None else (main, _sig(self.ws.db_path.with_name(self.ws.db_path.name + ".wal")))

    def query(self, name_or_path: str | Path | None = None, params: dict[str, Any] | None = None,
              sql: str | None = None) -> pd.DataFrame:
        """Run SQL through the store's query module: read-only, no lock wait (StoreError if busy)."""
        return run_query(self.ws, name_or_path, sql=sql, params=params, lock_timeout_s=0,
                         **self.query_options)

    def cached(self, key: str, build: Any) -> Any:
        """`build()` once per database version; the last good value while the database is locked."""
        sig = self.db_signature()
        with self._lock:
            hit = self._db_cache.get(key)
            if hit is not None and hit[0] == sig:
                return hit[1]
        if sig is None:
            self.db_note = "no database yet: showing the run files"
            return None
        try:
            value = build()
        except StoreError as exc:
            if isinstance(exc, QueryError):
                raise
            self.db_note = f"database not readable now, showing the run files{' and the last snapshot' if hit else ''}: {exc}"
            return hit[1] if hit else None
        self.db_note = ""
        with self._lock:
            self._db_cache[key] = (sig, value)
        return value

    def _db_runs(self) -> pd.DataFrame | None:
        return self.cached("runs", lambda: self.query(SERVE_QUERY_DIR / "serve_runs.sql"))

    def _db_experiments(self) -> pd.DataFrame | None:
        return self.cached("experiments", lambda: self.query(SERVE_QUERY_DIR / "serve_experiments.sql"))

    # -- run files -------------------------------------------------------------------------------
    def _scan_files(self) -> None:
        """Reread the status and log tail of every run whose files changed (at most every refresh_s)."""
        with self._lock:
            if time.monotonic() - self._scanned_at < self.refresh_s:
                return
            ids = self.ws.run_ids()
            gone = set(self._files) - set(ids)
            for run_id in gone:
                del self._files[run_id]
            changed = bool(gone)
            for run_id in ids:
                entry = self._files.setdefault(run_id, _FileRun())
                status_sig, log_sig = _sig(self.ws.status_path(run_id)), _sig(self.ws.log_path(run_id))
                if status_sig != entry.status_sig:
                    entry.status_sig, entry.status, changed = status_sig, self._read_status(run_id), True
                if log_sig != entry.log_sig:
                    entry.log_sig, entry.last, changed = log_sig, read_last_record(self.ws.log_path(run_id)), True
            self._files_version += changed
            self._scanned_at = time.monotonic()

    def _read_status(self, run_id: str) -> dict[str, Any]:
        try:
            status = json.loads(self.ws.status_path(run_id).read_bytes())
        except FileNotFoundError:
            return {"status": "pending"}
        except ValueError:
            return {"status": "unknown"}
        return status if isinstance(status, dict) else {"status": "unknown"}

    def _manifest_row(self, run_id: str, entry: _FileRun) -> dict[str, Any] | None:
        if entry.row is None:
            try:
                entry.row = manifest_row(run_id, json.loads(self.ws.manifest_path(run_id).read_bytes()))
            except (OSError, ValueError):
                return None  # `scaledb check` reports damaged manifests; the dashboard shows the rest
        return entry.row

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """Every run: database rows, overlaid with what the run files say now; vars as columns."""
        self._scan_files()
        db = self._db_runs()
        key = (id(db), self._files_version)
        with self._lock:
            if self._merged is not None and self._merged[0] == key:
                return self._merged[1]
            frame = self._merge(db)
            self._merged = (key, frame)
        return frame

    def _merge(self, db: pd.DataFrame | None) -> pd.DataFrame:
        known = set(db["run_id"]) if db is not None and not db.empty else set()
        extra, overlay = [], []
        for run_id, entry in self._files.items():
            if run_id not in known:
                row = self._manifest_row(run_id, entry)
                if row is None:
                    continue
                extra.append(row)
            fresh: dict[str, Any] = {"run_id": run_id, "status": _file_status(entry)}
            if entry.last:
                fresh.update(final_step=entry.last.get("step"), final_tokens=entry.last.get("tokens"),
                             final_flops=entry.last.get("flops_exact"),
                             final_train_loss=entry.last.get("train_loss"), final_eval_loss=entry.last.get("eval_loss"))
            overlay.append(fresh)
        parts = [p for p in (db, pd.DataFrame(extra)) if p is not None and not p.empty]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run_id", "experiment", "status"])
        for col in ("name", "status", *FINAL_COLUMNS):
            if col not in frame:
                frame[col] = None
        frame = frame.set_index("run_id", drop=False)
        if overlay:
            fresh = pd.DataFrame(overlay).set_index("run_id")
            fresh = fresh[fresh.index.isin(frame.index)]
            for col in fresh.columns:
                values = fresh[col].dropna()
                frame[col] = frame[col].astype(object)
                frame.loc[values.index, col] = values
        return self._expand_vars(frame.reset_index(drop=True))

    @staticmethod
    def _expand_vars(frame: pd.DataFrame) -> pd.DataFrame:
        if "vars" not in frame or frame.empty:
            return frame
        # Sweep points repeat across seeds: parse each distinct text once.
        texts = frame["vars"].where(frame["vars"].map(lambda v: isinstance(v, str) and v.startswith("{")), "{}")
        parsed = {text: json.loads(text) for text in texts.unique()}
        keys = sorted({k for d in parsed.values() for k in d})
        for key in keys:
            if key not in frame:
                frame[key] = texts.map({text: d.get(key) for text, d in parsed.items()})
        frame.attrs["vars"] = keys
        return frame

    # -- pages ---------------------------------------------------------------------------------
    def experiments(self) -> list[ExperimentSummary]:
        runs = self.runs()
        db = self._db_experiments()
        rows = {r["experiment"]: r for r in db.to_dict("records")} if db is not None else {}
        names = sorted(set(rows) | set(self.ws.experiments()) | set(runs["experiment"].dropna()))
        # Runs an edited spec no longer produces are counted apart, as `scaledb status` does.
        superseded = {name: set(superseded_runs(self.ws, name)) for name in names}
        flagged = set().union(*superseded.values()) if superseded else set()
        current = runs[~runs["run_id"].isin(flagged)] if not runs.empty else runs
        counts = current.groupby(["experiment", "status"]).size() if not current.empty else pd.Series(dtype=int)
        out = []
        for name in names:
            info = self._experiment_info(name, rows.get(name))
            by_status = {s: int(counts.get((name, s), 0)) for s in RUN_STATUSES if s != "unknown"}
            for odd in ("unknown", DAMAGED):  # counted only where there are some
                if counts.get((name, odd)):
                    by_status[odd] = int(counts[(name, odd)])
            by_status["superseded"] = len(superseded[name])
            plan = info.get("analysis") or {}
            out.append(ExperimentSummary(
                name=name, description=str(info.get("description") or ""),
                spec_path=str(info.get("spec_path") or ""), spec_hash=str(info.get("spec_hash") or ""),
                revision=str(info.get("revision") or ""),
                n_planned=len(info["run_ids"]) if isinstance(info.get("run_ids"), list) else info.get("n_planned"),
                n_dropped=len(info["dropped"]) if isinstance(info.get("dropped"), list) else info.get("n_dropped"),
                counts=by_status, plots=tuple(p for p in plan.get("plots") or [] if isinstance(p, dict)),
            ))
        return out

    def experiment(self, name: str) -> ExperimentSummary | None:
        return next((e for e in self.experiments() if e.name == name), None)

    def _experiment_info(self, name: str, row: dict[str, Any] | None) -> dict[str, Any]:
        """experiment.json when compiled here, else what the database row keeps of it."""
        path = self.ws.experiment_dir(name) / "experiment.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            pass
        if row is None:
            return {}
        info = json.loads(row["info"]) if isinstance(row.get("info"), str) else {}
        return {**info, **{k: v for k, v in row.items() if k != "info" and v is not None}}

    def _experiment_table(self, experiment: str) -> _ExperimentTable:
        """An experiment's runs with their sweep columns as text (for filters), cached until the
        runs change: formatting 10,000 rows per request would take most of a second."""
        runs = self.runs()
        with self._lock:
            hit = self._tables.get(experiment)
            if hit is not None and hit.source is runs:
                return hit
        rows = runs[runs["experiment"] == experiment]
        candidates = [c for c in (*SWEEP_CANDIDATES, *runs.attrs.get("vars", ())) if c in rows]
        sweep = [c for c in candidates if rows[c].astype(str).nunique() > 1]
        texts = pd.DataFrame({c: _format_column(rows[c]) for c in sweep}, index=rows.index)
        choices = {c: sorted(texts[c].unique(), key=_natural) for c in sweep}
        table = _ExperimentTable(source=runs, rows=rows, texts=texts, sweep=tuple(sweep), choices=choices)
        with self._lock:
            self._tables[experiment] = table
        return table

    def runs_page(self, experiment: str, *, filters: dict[str, str], status: str = "", sort: str = "name",
                  desc: bool = False, offset: int = 0, limit: int = 50) -> RunsPage:
        """One page of an experiment's runs, filtered (exact text match) and sorted on the server."""
        table = self._experiment_table(experiment)
        keep = pd.Series(True, index=table.rows.index)
        for col, value in filters.items():
            if col in table.sweep and value != "":
                keep &= table.texts[col] == value
        if status:
            keep &= table.rows["status"] == status
        shown = table.rows[keep]
        if sort in shown.columns:
            shown = shown.sort_values([sort, "run_id"], ascending=[not desc, True], na_position="last", kind="stable")
        columns = ("name", "status", *table.sweep, *FINAL_COLUMNS)
        page = shown.iloc[offset:offset + limit]
        rows = [{"run_id": r["run_id"], **{c: format_value(r.get(c)) for c in columns}}
                for r in page.to_dict("records")]
        return RunsPage(experiment=experiment, columns=columns, sweep_columns=table.sweep, choices=table.choices,
                        rows=rows, total=len(table.rows), matching=len(shown), offset=offset, limit=limit)

    def run_detail(self, run_id: str, *, max_points: int = 1000) -> RunDetail | None:
        """One run: status, manifest, state file, curve (from its log, else from the database)."""
        runs = self.runs()
        hit = runs[runs["run_id"] == run_id]
        if hit.empty:
            return None
        row = hit.iloc[0].to_dict()
        manifest_path = self.ws.manifest_path(run_id)
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
        else:
            db_row = self.cached(f"run:{run_id}", lambda: self.query(SERVE_QUERY_DIR / "serve_run.sql",
                                                                        {"run_id": run_id}))
            text = db_row["manifest"].iloc[0] if db_row is not None and not db_row.empty else None
            manifest = json.loads(text) if isinstance(text, str) else None
        entry = self._files.get(run_id)
        status = dict(entry.status) if entry else {k: row.get(k) for k in ("status", "last_step", "error")}
        status["status"] = row["status"]
        curve, source = self.curve(run_id)
        state = self.ws.state_path(run_id)
        state_sig = _sig(state)
        state_file = (f"{state} ({state_sig[1]:,} bytes, written "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(state_sig[0] / 1e9))} UTC)"
                      if state_sig else "none (no resumable state)")
        return RunDetail(run_id=run_id, name=str(row.get("name") or run_id), experiment=str(row["experiment"]),
                         status=status, manifest=manifest, state_file=state_file,
                         curve=thin_curve(curve, max_points), curve_source=source)

    def curve(self, run_id: str) -> tuple[pd.DataFrame, str]:
        """A run's checkpoints: from its log while it has one (freshest), else from the database."""
        log = self.ws.log_path(run_id)
        if log.exists():
            return read_curve(log), "log"
        df = self.cached(f"curve:{run_id}", lambda: self.query(SERVE_QUERY_DIR / "serve_run_curve.sql",
                                                                 {"run_id": run_id}))
        return (df, "database") if df is not None else (pd.DataFrame(), "none")


def manifest_row(run_id: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The dashboard's columns of a run from its manifest (None if it names no experiment)."""
    if not isinstance(manifest, dict) or not manifest.get("experiment"):
        return None
    row: dict[str, Any] = {"run_id": run_id, "experiment": manifest["experiment"], "name": manifest.get("name"),
                           "vars": json.dumps(manifest.get("vars") or {}, sort_keys=True)}
    for column, path in MANIFEST_PATHS.items():
        value: Any = manifest
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        row[column] = value
    train = manifest.get("train") if isinstance(manifest.get("train"), dict) else {}
    row["tokens_budget"] = train.get("tokens") if train.get("kind", "lm") == "lm" else train.get("samples")
    return row


def _format_column(values: pd.Series) -> pd.Series:
    """format_value over a column, once per distinct value."""
    texts = {v: format_value(v) for v in values.dropna().unique()}
    return values.map(texts).fillna("").astype(str)


def _natural(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text."""
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text
