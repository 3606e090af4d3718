"""Importing runs from elsewhere: a CSV (or Parquet/JSON) table of published runs becomes an
experiment of its own, queried and fitted with the same tools as compiled runs.

A mapping names, for each scaledb column, the source column (or a DuckDB SQL expression over
the source columns) that provides it:

    n_params=params tokens=tokens loss=val_loss                       (final points: a run per row)
    run=model,peak_lr,sweep,total_steps step=current_steps ...        (checkpoint curves)
    flops="throughput/total_gflops" * 1e9                             (an expression)
    var.flop_budget=budget                                            (a sweep variable, into `vars`)

Required: n_params, tokens, loss. A value that is exactly a source column name (or, failing
that, a unique case-insensitive match) is that column; anything else is an SQL expression.

Runs: without `run`, every row is a run of its own, keyed by the row's whole content; with
`run` (one column, a comma-separated list of columns, or an expression), rows sharing the key
form one run's checkpoint curve (`step` says which checkpoint; without it, one row per run).
Run ids are synthetic: 12 hex digits of SHA-256 over ("import", experiment, run key), so the
same table imported again gives the same ids. Run-level columns (n_params, lr, ...) must be
constant within a run; the manifest JSON holds the source, the mapping and the run's last row.

FLOPs: `flops` (or `flops_exact`) is the table's own compute column, stored as flops_exact,
whatever convention the authors used; flops_6n (and flops_6n_nonembed, with n_params_nonembed)
are computed as 6*N*D when not mapped.

Idempotent: an import replaces every run of that experiment (in one transaction); importing
into an experiment compiled from a spec is refused. Rows lacking a required value, or with a
numeric cell that is not valid for its column (not a number, not whole where a count is, out of
range: `_value_problem`), are skipped and reported by file, line, column and value, never
rounded or stored; for a (run, step) given twice, the later row wins and the earlier is
reported.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from scaling_db.errors import StoreError
from scaling_db.store.experiments import upsert_experiments
from scaling_db.store.runs import SkippedLine
from scaling_db.store.tables import CHECKPOINT_SCHEMA, RUNS_SCHEMA
from scaling_db.spec.manifest import canonical_json
from scaling_db.store.database import CONNECTION_CONFIG, open_store, utc_now
from scaling_db.workspace import Workspace

#: Where each mappable name goes: "run" (constant per run), "ckpt" (per checkpoint) or "key".
NUMERIC_RUN = {
    "n_params": "int", "n_params_nonembed": "int", "n_params_embed": "int", "lr": "float", "weight_decay": "float",
    "batch_size": "int", "seed": "int", "d_model": "int", "n_layers": "int", "n_heads": "int", "d_ff": "int",
    "context": "int", "vocab_size": "int", "tokens_budget": "int", "steps": "int", "entropy_rate": "float",
}
TEXT_RUN = ("name", "parameterization", "data_source", "optimizer", "schedule")
CHECKPOINT_TARGETS = {
    "step": "int", "tokens": "int", "loss": "float", "eval_loss": "float", "train_loss": "float",
    "flops": "float", "flops_exact": "float", "flops_6n": "float", "flops_6n_nonembed": "float",
    "wall_time_s": "float",
}
TARGETS = ("run", *NUMERIC_RUN, *TEXT_RUN, *CHECKPOINT_TARGETS)
#: The smallest value a numeric column accepts (exclusive when True): sizes and counts are > 0,
#: losses, FLOPs, times, rates and steps >= 0; seeds may be any integer. `tokens` is > 0 when
#: each row is a run, >= 0 in checkpoint curves (a step-0 evaluation); see `_limit`.
_POSITIVE = ("n_params", "batch_size", "d_model", "n_layers", "n_heads", "d_ff", "context", "vocab_size",
             "tokens_budget")
_ANY_SIGN = ("seed",)
REQUIRED = ("n_params", "tokens", "loss")
#: Columns that pick a replicate, not a configuration: left out of config_id.
_NOT_CONFIG = ("seed", "name")


@dataclass
class ImportReport:
    experiment: str
    source: str
    rows_read: int = 0
    runs: int = 0
    checkpoints: int = 0
    replaced_runs: int = 0  # runs of the experiment's previous import, now replaced
    skipped: list[SkippedLine] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = [dict(asdict(s), where=s.format()) for s in self.skipped]
        return out


def parse_mapping(items: list[str]) -> dict[str, str]:
    """`["n_params=params", "loss=val_loss"]` -> {"n_params": "params", ...}, checking the names."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise StoreError(f"--map {item!r}: expected NAME=COLUMN (e.g. n_params=params).")
        if key in mapping:
            raise StoreError(f"--map {key}: given twice ({mapping[key]!r} and {value!r}).")
        mapping[key] = value
    return mapping


def _check_targets(mapping: dict[str, str]) -> None:
    for key in mapping:
        if key.startswith("var.") and len(key) > 4:
            continue
        if key not in TARGETS:
            close = difflib.get_close_matches(key, TARGETS, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise StoreError(f"--map {key}: not a column scaledb knows ({hint}known: {', '.join(TARGETS)}, var.NAME).")
    missing = [r for r in REQUIRED if r not in mapping and not (r == "loss" and "eval_loss" in mapping)]
    if missing:
        raise StoreError(f"import: no mapping for {', '.join(missing)} (required: {', '.join(REQUIRED)}). "
                         f"Add --map {missing[0]}=COLUMN.")
    if "flops" in mapping and "flops_exact" in mapping:
        raise StoreError("--map flops and flops_exact name the same column (flops is stored as flops_exact); give one.")
    if "loss" in mapping and "eval_loss" in mapping:
        raise StoreError("--map loss and eval_loss name the same column (loss is stored as eval_loss); give one.")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expression(target: str, value: str, columns: list[str]) -> str:
    """The SQL for one mapped value: a column (exact, else unique case-insensitive) or an expression."""
    if value in columns:
        return _quote(value)
    folded = [c for c in columns if c.lower() == value.lower()]
    if len(folded) == 1:
        return _quote(folded[0])
    if target == "run":
        parts = [p.strip() for p in value.split(",")]
        if len(parts) > 1 and all(p in columns for p in parts):
            # a list of columns: the key is their values as a JSON list
            return "to_json([" + ", ".join(f"CAST({_quote(p)} AS VARCHAR)" for p in parts) + "])::VARCHAR"
    return f"({value})"


def _read_table(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    reader = {".parquet": "read_parquet", ".json": "read_json_auto", ".jsonl": "read_json_auto"}.get(
        path.suffix.lower(), "read_csv")
    try:
        con.execute(f"CREATE TABLE src AS SELECT row_number() OVER () AS _row, * FROM {reader}(?)", [str(path)])
    except duckdb.Error as exc:
        raise StoreError(f"{path}: cannot read the table ({str(exc).splitlines()[0]})") from None


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clean(value: Any) -> Any:
    """A JSON-able Python value (NaN -> None, numpy/Decimal -> float/int)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (int, str, bool)):
        return value
    try:
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    except (TypeError, ValueError):
        return str(value)


def _as(kind: str, value: Any) -> Any:
    """A checked value (`_value_problem` found none) as the column's type; a missing one as None."""
    if _missing(value):
        return None
    value = _clean(value)
    if kind == "int":
        return int(float(value)) if not isinstance(value, int) else value
    if kind == "float":
        return float(value)
    return str(value)


def _missing(raw: Any) -> bool:
    """An empty or NaN cell (an infinite one is a value, and a problem)."""
    value = _clean(raw)
    if value is None:
        return not (isinstance(raw, float) and math.isinf(raw))
    try:
        return isinstance(value, str) and math.isnan(float(value))
    except ValueError:
        return False


def _limit(target: str, curves: bool) -> tuple[float, bool] | None:
    """(lowest value, whether it is excluded) for a numeric column; None when any sign will do."""
    if target in _ANY_SIGN:
        return None
    if target in _POSITIVE or (target == "tokens" and not curves):
        return 0.0, True
    return 0.0, False


def _value_problem(target: str, kind: str, raw: Any, curves: bool) -> str | None:
    """Why a mapped cell is not a valid value for its numeric column (None: valid or empty).

    Empty and NaN cells are missing values (required ones are reported as such); anything else
    that is not a finite number of the right kind and sign is a problem, never rounded or kept.
    """
    if _missing(raw):
        return None
    value = raw if isinstance(raw, float) else _clean(raw)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{target} is {value!r}, not a number"
    shown = str(value)  # a number as the table writes it (2.5, inf, 1e+20), a string unquoted
    if math.isinf(number):
        return f"{target} is {shown}, not a finite number"
    if kind == "int" and not number.is_integer():
        return f"{target} is {shown}, not a whole number (round it in the mapping: {target}=round(COL))"
    limit = _limit(target, curves)
    if limit is not None and (number <= limit[0] if limit[1] else number < limit[0]):
        return f"{target} is {shown}, not {'>' if limit[1] else '>='} {limit[0]:g}"
    return None


def _row_problems(rec: dict[str, Any], curves: bool) -> list[str]:
    """Every mapped numeric cell of one row that `_value_problem` refuses, in mapping order."""
    kinds = {**NUMERIC_RUN, **CHECKPOINT_TARGETS}
    found = (_value_problem(k, kinds[k], v, curves) for k, v in rec.items() if k in kinds)
    return [p for p in found if p]


def import_table(
    workspace: Workspace | str | Path,
    path: str | Path,
    experiment: str,
    mapping: dict[str, str],
    *,
    where: str | None = None,
    description: str | None = None,
    lock_timeout_s: float | None = None,
) -> ImportReport:
    """Import an external table of runs as `experiment` (replacing its previous import)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    path = Path(path).resolve()
    if not path.is_file():
        raise StoreError(f"{path}: no such file.")
    if not experiment or any(c in experiment for c in "/\\") or experiment != experiment.strip():
        raise StoreError(f"--experiment {experiment!r}: give a plain name (no slashes or surrounding spaces).")
    _check_targets(mapping)
    report = ImportReport(experiment=experiment, source=str(path))
    source = _read_mapped(path, mapping, where)
    report.rows_read = source.rows_read
    runs = _group_runs(source, path, experiment, report)
    now = utc_now()
    file_hash = _file_hash(path)
    origin = {"kind": "import", "path": str(path), "sha256": file_hash, "map": mapping, "where": where}
    run_rows, ckpt = [], {c: [] for c in CHECKPOINT_SCHEMA.names}
    for run_id, run in runs.items():
        _check_constant(path, run, sorted(run["rows"]))
        run_rows.append(_run_row(run_id, run, experiment, origin, now))
        _add_checkpoints(ckpt, run_id, run, run_rows[-1])
    report.runs = len(run_rows)
    report.checkpoints = len(ckpt["step"])
    if not run_rows:
        raise StoreError(f"{path}: no row could be imported ({report.rows_read} read, {len(report.skipped)} skipped"
                         + (f"; check --where {where!r}" if where else "") + ").")
    experiment_row = {
        "experiment": experiment, "source": "import", "spec_path": str(path), "spec_hash": file_hash[:12],
        "revision": None, "description": description, "n_planned": len(run_rows), "n_dropped": None,
        "info": json.dumps({"map": mapping, "where": where, "rows_read": report.rows_read,
                            "rows_skipped": len(report.skipped), "columns": source.columns, "sha256": file_hash},
                           default=str),
        "created_at": now, "updated_at": now,
    }
    with open_store(ws, lock_timeout_s=lock_timeout_s) as con:
        report.replaced_runs = _replace_experiment(con, experiment_row, run_rows, ckpt)
    return report


@dataclass(frozen=True)
class _Source:
    """The source table read and mapped: its columns, the mapped rows (`_row` first) and the raw rows."""

    columns: list[str]
    names: list[str]
    mapped: list[tuple[Any, ...]]
    raw_rows: dict[int, tuple[Any, ...]]
    rows_read: int


def _read_mapped(path: Path, mapping: dict[str, str], where: str | None) -> _Source:
    """Read the table into an in-memory DuckDB and evaluate the mapping (and --where) over it."""
    mem = duckdb.connect(config=CONNECTION_CONFIG)
    try:
        _read_table(mem, path)
        # The mapping and --where are the user's SQL: once the table is in memory, nothing else is
        # read or written, and no setting can change.
        for setting in ("enable_external_access = false", "lock_configuration = true"):
            mem.execute(f"SET {setting}")
        columns = [r[0] for r in mem.execute("DESCRIBE src").fetchall() if r[0] != "_row"]
        selects = [f"{_expression(t, v, columns)} AS {_quote(t)}" for t, v in mapping.items()]
        sql = f"SELECT _row, {', '.join(selects)} FROM src" + (f" WHERE {where}" if where else "") + " ORDER BY _row"
        try:
            if [st.type.name for st in duckdb.extract_statements(sql)] != ["SELECT"]:
                raise StoreError(f"--where {where!r}: not one filter expression (it ends the SELECT; "
                                 "write a condition such as \"eval = 'c4_val'\").")
            mapped = mem.execute(sql).fetchall()
        except duckdb.Error as exc:
            _explain_mapping_error(mem, mapping, where, columns, exc)
        raw_rows = {r[0]: r[1:] for r in mem.execute("SELECT * FROM src").fetchall()}
        (rows_read,), = mem.execute("SELECT count(*) FROM src").fetchall()
    finally:
        mem.close()
    return _Source(columns, ["_row", *mapping], mapped, raw_rows, rows_read)


def _group_runs(source: _Source, path: Path, experiment: str, report: ImportReport) -> dict[str, dict[str, Any]]:
    """Rows grouped into runs (by the `run` key, else each row alone), keyed by synthetic run id."""
    # CSV line of a row: the header is line 1 (multi-line quoted fields would shift this).
    line_of = (lambda row: row + 1) if path.suffix.lower() == ".csv" else (lambda row: row)
    runs: dict[str, dict[str, Any]] = {}
    for values in source.mapped:
        rec = dict(zip(source.names, values))
        row = rec.pop("_row")
        loss_key = "loss" if "loss" in rec else "eval_loss"
        lacking = [k for k in ("n_params", "tokens", loss_key) if _missing(rec.get(k))]
        problems = _row_problems(rec, curves="run" in rec)
        if lacking or problems:
            what = ([f"no value for {', '.join(lacking)}"] if lacking else []) + problems
            report.skipped.append(SkippedLine(str(path), line_of(row), "invalid",
                                              f"{'; '.join(what)}; row skipped"))
            continue
        original = {c: _clean(v) for c, v in zip(source.columns, source.raw_rows[row])}
        key = str(rec["run"]) if rec.get("run") is not None else canonical_json(original)
        run_id = hashlib.sha256(f"import\0{experiment}\0{key}".encode()).hexdigest()[:12]
        run = runs.setdefault(run_id, {"key": key, "rows": {}, "first_line": line_of(row)})
        step = _as("int", rec.get("step")) if "step" in rec else _as("int", rec.get("steps")) if "steps" in rec else 0
        if step is None:
            report.skipped.append(SkippedLine(str(path), line_of(row), "invalid", "no value for step; row skipped"))
            continue
        if step in run["rows"]:
            earlier = run["rows"][step]["line"]
            report.skipped.append(SkippedLine(
                str(path), earlier, "duplicate",
                f"run {key} step {step} appears again at line {line_of(row)}; the later row wins",
            ))
        run["rows"][step] = {"rec": rec, "original": original, "line": line_of(row)}
    return runs


def _run_row(run_id: str, run: dict[str, Any], experiment: str, origin: dict[str, Any], now: Any) -> dict[str, Any]:
    """The `runs` row of one imported run, from its last row (run-level values are constant)."""
    steps = sorted(run["rows"])
    final = run["rows"][steps[-1]]
    rec = final["rec"]
    fields = {k: _as(kind, rec.get(k)) for k, kind in NUMERIC_RUN.items() if k in rec}
    fields.update({k: _as("str", rec.get(k)) for k in TEXT_RUN if k in rec})
    if "tokens_budget" not in fields:
        fields["tokens_budget"] = max(_as("int", run["rows"][s]["rec"]["tokens"]) for s in steps)
    var_values = {k[4:]: _clean(rec[k]) for k in rec if k.startswith("var.")}
    config = {k: v for k, v in fields.items() if k not in _NOT_CONFIG}
    config_id = hashlib.sha256(canonical_json({"experiment": experiment, **config, "vars": var_values})
                               .encode()).hexdigest()[:12]
    manifest = {"experiment": experiment, "source": origin, "run_key": run["key"], "row": final["original"]}
    return {
        "run_id": run_id, "experiment": experiment, "status": "finished", "config_id": config_id,
        "name": fields.get("name") or (run["key"] if rec.get("run") is not None else None),
        **{k: v for k, v in fields.items() if k != "name"},
        "vars": json.dumps(var_values, sort_keys=True), "tags": ["imported"],
        "manifest": json.dumps(manifest, sort_keys=True), "created_at": now, "ingested_at": now,
    }


def _add_checkpoints(ckpt: dict[str, list[Any]], run_id: str, run: dict[str, Any], run_row: dict[str, Any]) -> None:
    """Append one imported run's checkpoint rows (columns of `checkpoints`) to `ckpt`."""
    n, n_ne = run_row.get("n_params"), run_row.get("n_params_nonembed")
    for step in sorted(run["rows"]):
        r = run["rows"][step]["rec"]
        tokens = _as("int", r["tokens"])
        ckpt["run_id"].append(run_id)
        ckpt["step"].append(step)
        ckpt["tokens"].append(tokens)
        ckpt["flops_exact"].append(_as("float", r.get("flops", r.get("flops_exact"))))
        ckpt["flops_6n"].append(_as("float", r["flops_6n"]) if "flops_6n" in r else 6.0 * n * tokens)
        ckpt["flops_6n_nonembed"].append(
            _as("float", r["flops_6n_nonembed"]) if "flops_6n_nonembed" in r
            else (6.0 * n_ne * tokens if n_ne is not None else None))
        ckpt["eval_loss"].append(_as("float", r.get("loss", r.get("eval_loss"))))
        ckpt["train_loss"].append(_as("float", r.get("train_loss")))
        ckpt["lr"].append(None)
        ckpt["wall_time_s"].append(_as("float", r.get("wall_time_s")))
        ckpt["tokens_per_s"].append(None)


def _replace_experiment(con: duckdb.DuckDBPyConnection, experiment_row: dict[str, Any],
                        run_rows: list[dict[str, Any]], ckpt: dict[str, list[Any]]) -> int:
    """Replace the experiment's runs and checkpoints in one transaction; how many runs were replaced."""
    experiment = experiment_row["experiment"]
    found = con.execute("SELECT source FROM experiments WHERE experiment = ?", [experiment]).fetchall()
    if found and found[0][0] != "import":
        raise StoreError(
            f"--experiment {experiment}: that experiment holds runs compiled from a spec (source "
            f"{found[0][0]!r} vs 'import'). Import under another name."
        )
    con.execute("BEGIN TRANSACTION")
    try:
        old = "SELECT run_id FROM runs WHERE experiment = ?"
        (replaced,), = con.execute(f"SELECT count(*) FROM ({old})", [experiment]).fetchall()
        for table in ("checkpoints", "metrics"):
            con.execute(f"DELETE FROM {table} WHERE run_id IN ({old})", [experiment])
        con.execute("DELETE FROM runs WHERE experiment = ?", [experiment])
        con.execute("DELETE FROM run_revisions WHERE experiment = ?", [experiment])
        con.register("_import_runs", pa.Table.from_pylist(run_rows, schema=RUNS_SCHEMA))
        con.execute("INSERT INTO runs BY NAME SELECT * FROM _import_runs")
        con.unregister("_import_runs")
        con.register("_import_ckpt", pa.table(ckpt, schema=CHECKPOINT_SCHEMA))
        con.execute("INSERT INTO checkpoints SELECT * FROM _import_ckpt")
        con.unregister("_import_ckpt")
        upsert_experiments(con, [experiment_row])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(replaced)


def _check_constant(path: Path, run: dict[str, Any], steps: list[int]) -> None:
    """Run-level values must not change between a run's rows (else the run key is too coarse)."""
    if len(steps) < 2:
        return
    first = run["rows"][steps[0]]
    for step in steps[1:]:
        other = run["rows"][step]
        for key in (*NUMERIC_RUN, *TEXT_RUN):
            if key in first["rec"] and _clean(first["rec"][key]) != _clean(other["rec"][key]):
                raise StoreError(
                    f"{path}:{other['line']}: rows of run {run['key']} differ in {key} "
                    f"({_clean(other['rec'][key])!r} vs {_clean(first['rec'][key])!r} at line {first['line']}). "
                    "Add the columns that tell runs apart to --map run=COL1,COL2,..."
                )


def _explain_mapping_error(mem: duckdb.DuckDBPyConnection, mapping: dict[str, str], where: str | None,
                           columns: list[str], exc: duckdb.Error) -> None:
    """Find which mapping (or the filter) fails and raise a message naming it and the columns."""
    for target, value in mapping.items():
        try:
            mem.execute(f"SELECT {_expression(target, value, columns)} FROM src LIMIT 1").fetchall()
        except duckdb.Error as inner:
            close = difflib.get_close_matches(value, columns, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise StoreError(
                f"--map {target}={value}: not a column of the table and not a valid expression ({hint}"
                f"columns: {', '.join(columns)}). DuckDB: {str(inner).splitlines()[0]}"
            ) from None
    if where:
        raise StoreError(f"--where {where!r}: {str(exc).splitlines()[0]} (columns: {', '.join(columns)})") from None
    raise StoreError(f"import: {str(exc).splitlines()[0]}") from None
