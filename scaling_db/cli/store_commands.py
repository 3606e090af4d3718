"""`scaledb ingest | query | queries | import`: the result database."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from scaling_db.cli import cli
from scaling_db.cli.common import (
    emit_json, get_workspace, json_option, key_values, print_table, workspace_option,
)
from scaling_db.errors import StoreError
from scaling_db.workspace import Workspace

FORMATS = ("table", "csv", "json", "parquet")
TABLE_MAX_COLUMNS = 8


def _targets(paths: tuple[str, ...], workspace: str | None) -> dict[Path, list[str] | None]:
    """Workspaces to ingest, each with the run ids to load (None: all of its runs)."""
    if not paths:
        return {get_workspace(workspace).require_existing().root: None}
    chosen: dict[Path, list[str] | None] = {}
    for text in paths:
        path = Path(text)
        if (path / "manifest.json").is_file() and path.resolve().parent.name == "runs":
            root = path.resolve().parent.parent
            runs = chosen.setdefault(root, [])
            if runs is not None:
                runs.append(path.resolve().name)
        elif path.is_dir() and ((path / "runs").is_dir() or (path / "scaledb.duckdb").exists()):
            chosen[path] = None
        else:
            raise StoreError(
                f"{text}: neither a workspace (with runs/) nor a run directory (with manifest.json). "
                "Give a workspace or a <workspace>/runs/<run_id> directory."
            )
    return chosen


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--full", is_flag=True, help="Reread every log from the start (default: only what changed).")
@click.option("--lock-timeout", type=float, default=None,
              help="Seconds to wait for another writer [default: $SCALEDB_LOCK_TIMEOUT_S or 10].")
@workspace_option
@json_option
def ingest(
    paths: tuple[str, ...], full: bool, lock_timeout: float | None, workspace: str | None, as_json: bool
) -> None:
    """Load run logs and statuses into the workspace's DuckDB file.

    PATHS are workspaces or run directories (default: --workspace). Idempotent: loading twice,
    or after a resume replayed steps, leaves one row per (run_id, step). Lines that cannot be
    loaded (a truncated last line, a corrupt line) are listed as FILE:LINE: WHY.
    """
    from scaling_db.store.ingest import ingest_runs

    reports = []
    for root, runs in _targets(paths, workspace).items():
        report = ingest_runs(Workspace(root), runs, full=full, lock_timeout_s=lock_timeout)
        reports.append((root, report))
    if as_json:
        emit_json([dict(report.to_dict(), workspace=str(root)) for root, report in reports])
        return
    for root, report in reports:
        rate = f", {report.rows_loaded / report.seconds:,.0f} rows/s" if report.rows_loaded and report.seconds else ""
        click.echo(
            f"{root}: {report.runs_loaded} runs loaded, {report.rows_loaded:,} checkpoint rows"
            f" ({report.runs_unchanged} runs unchanged) in {report.seconds:.2f} s{rate}"
        )
        if report.skipped:
            click.echo(f"{len(report.skipped)} problems (lines and runs not loaded, damaged runs):", err=True)
            for item in report.skipped:
                click.echo(f"  {item.format()}", err=True)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _write_result(df: Any, fmt: str, out: str | None) -> None:
    if fmt == "parquet":
        if not out:
            raise click.UsageError("--format parquet needs --out FILE (it is binary).")
        df.to_parquet(out, index=False)
    elif fmt == "csv":
        text = df.to_csv(index=False)
        Path(out).write_text(text) if out else click.echo(text, nl=False)
    elif fmt == "json":
        text = df.to_json(orient="records", date_format="iso", indent=2)
        Path(out).write_text(text + "\n") if out else click.echo(text)
    else:
        if out:
            Path(out).write_text(df.to_string(index=False) + "\n")
            return
        if len(df.columns) > TABLE_MAX_COLUMNS:
            # Too wide for a boxed table: pandas' plain layout stays readable when wide or piped.
            click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        else:
            cells = df.astype(object).where(df.notna(), None)
            rows = [[_fmt(v) for v in row] for row in cells.itertuples(index=False)]
            print_table(None, [str(c) for c in df.columns], rows)
        click.echo(f"({len(df)} rows)", err=True)


@cli.command()
@click.argument("query", required=False)
@click.argument("assignments", nargs=-1)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@click.option("--sql", default=None, help="Inline SQL instead of a named query.")
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write the result to FILE.")
@click.option("--allow-files", is_flag=True,
              help="Let the SQL read files beside the database, e.g. read_csv('mine.csv') (never write them).")
@workspace_option
@json_option
def query(query: str | None, assignments: tuple[str, ...], params: tuple[str, ...], sql: str | None, fmt: str,
          out: str | None, allow_files: bool, workspace: str | None, as_json: bool) -> None:
    """Run a named query (see `scaledb queries`), a .sql file, or --sql, read-only.

    Only reading statements run (SELECT, SHOW, DESCRIBE, EXPLAIN): COPY ... TO, EXPORT, INSTALL,
    LOAD, SET, ATTACH, CHECKPOINT and anything that writes a table are refused.

    Parameters: --param key=value, or key=value words after the query name, e.g.
    `scaledb query final_loss experiment=ba_graph convention=6n --format csv`.
    `--json` is `--format json`, as in every other command.
    """
    from scaling_db.store.query import run_query

    if as_json:
        if fmt not in ("table", "json"):
            raise click.UsageError(f"--json and --format {fmt} ask for two formats: give one")
        fmt = "json"

    if (query is None) == (sql is None):
        if query is not None and "=" in query and sql is not None:
            assignments = (query, *assignments)
            query = None
        else:
            raise click.UsageError("give a query name or .sql file, or --sql (one of them).")
    values = key_values(params, "--param")
    values.update(key_values(assignments, "KEY=VALUE"))
    df = run_query(get_workspace(workspace).require_existing(), query, sql=sql, params=values,
                   allow_files=allow_files)
    _write_result(df, fmt, out)
    if out:
        click.echo(f"{len(df)} rows -> {out}", err=True)


@cli.command("queries")
@workspace_option
@json_option
def queries_command(workspace: str | None, as_json: bool) -> None:
    """List the named queries with their purpose and parameters."""
    from scaling_db.store.query import list_queries

    found = list_queries(get_workspace(workspace))
    if as_json:
        emit_json([{"name": q.name, "purpose": q.purpose, "path": str(q.path), "columns": list(q.columns),
                    "params": [{"name": p.name, "required": p.required, "default": p.default,
                                "choices": list(p.choices), "doc": p.doc} for p in q.params]} for q in found])
        return
    print_table(None, ["query", "purpose", "params"],
                [[q.name, q.purpose, "\n".join(p.describe() for p in q.params) or "-"] for q in found])


@cli.command("import")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@click.argument("maps", nargs=-1)
@click.option("--experiment", "-e", required=True, help="Name of the experiment the runs become.")
@click.option("--map", "-m", "map_items", multiple=True, metavar="NAME=COLUMN",
              help="scaledb column = source column or SQL expression (repeatable; bare NAME=COLUMN words work too).")
@click.option("--where", default=None, help="SQL filter on the source rows, e.g. \"eval = 'c4_val'\".")
@click.option("--description", default=None, help="A line saying what the table is.")
@workspace_option
@json_option
def import_command(table: str, maps: tuple[str, ...], experiment: str, map_items: tuple[str, ...],
                   where: str | None, description: str | None, workspace: str | None, as_json: bool) -> None:
    """Import TABLE (CSV, Parquet or JSON) of external runs as an experiment of its own.

    Required: --map n_params=COL tokens=COL loss=COL. Optional: run=COL[,COL...] (rows of one
    run's curve), step=COL, flops=COL, n_params_nonembed, lr, seed, d_model, name, var.NAME=COL...
    Importing again replaces the experiment's previous import.
    """
    from scaling_db.store.external import import_table, parse_mapping

    mapping = parse_mapping([*map_items, *maps])
    report = import_table(get_workspace(workspace), table, experiment, mapping, where=where, description=description)
    if as_json:
        emit_json(report.to_dict())
        return
    replaced = f" (replacing {report.replaced_runs} runs)" if report.replaced_runs else ""
    click.echo(f"{experiment}: {report.runs} runs, {report.checkpoints} checkpoints from {report.rows_read} rows"
               f" of {table}{replaced}")
    if report.skipped:
        click.echo(f"{len(report.skipped)} rows skipped or replaced:", err=True)
        for item in report.skipped[:20]:
            click.echo(f"  {item.format()}", err=True)
        if len(report.skipped) > 20:
            click.echo(f"  ... and {len(report.skipped) - 20} more (--json lists all)", err=True)

