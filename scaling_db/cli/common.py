"""Options and output helpers shared by every command: the same `--workspace` and `--json` everywhere."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scaling_db.workspace import DEFAULT_DIRNAME, ENV_VAR, Workspace

F = Callable[..., Any]

#: Exit codes (README, "The command line"). Diverged runs are a result: they exit 0.
EXIT_ERROR = 1  # a scaledb error (bad spec, no workspace, backend unreachable): one `Error: ...` line
EXIT_USAGE = 2  # click's own: an unknown option or a bad value
EXIT_RUNS_FAILED = 3  # some runs failed or could not be run (the summary names each and why)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: runs saved their state; the same command resumes them


def workspace_option(fn: F) -> F:
    return click.option(
        "--workspace", "-w", "workspace", envvar=ENV_VAR, type=click.Path(file_okay=False),
        default=None, help=f"Workspace directory [default: ${ENV_VAR} or ./{DEFAULT_DIRNAME}].",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def get_workspace(path: str | None) -> Workspace:
    return Workspace.resolve(path)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def console() -> Console:
    # Tables go to stdout; width fixed when not a terminal so piped output is stable.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    # Cells are Text, never markup: rich would take `[data.kappa=0.0]` in a fit's name for a tag and drop it.
    table = Table(title=None if title is None else Text(title), title_justify="left", show_edge=False,
                  header_style="bold")
    for col in columns:
        table.add_column(Text(col), overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    console().print(table)


def counted(n: int, noun: str) -> str:
    """`1 run`, `2 runs`: a count with its noun in the right number."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def key_values(items: tuple[str, ...], what: str) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict (the value may contain `=`)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        out[key.strip()] = value
    return out


def load_runs(ws: Workspace, run_ids: list[str]) -> None:
    """Load runs into the database from this (driver) process, the single writer. A database
    held by another writer past the lock timeout is not fatal: the runs' logs are the record,
    and the next `scaledb ingest` loads them."""
    from scaling_db.errors import StoreError
    from scaling_db.store.ingest import ingest_runs

    try:
        ingest_runs(ws, run_ids)
    except StoreError as exc:
        click.echo(f"note: {len(run_ids)} run(s) not loaded into the database yet ({exc}); "
                   "`scaledb ingest` will.", err=True)


def sync_revisions(ws: Workspace) -> None:
    """After writing compiled experiments: tell the database their new revisions, so runs they
    supersede leave fits and queries now. A busy or damaged database is not fatal to the
    compile (its files are written); the warning says what stays stale until `scaledb ingest`."""
    from scaling_db.errors import StoreError
    from scaling_db.store.experiments import sync_experiments

    try:
        sync_experiments(ws)
    except StoreError as exc:
        click.echo(f"warning: the database does not know this compile's revision yet ({exc}); until "
                   "`scaledb ingest` succeeds, fits and queries still use the runs it supersedes.", err=True)


@contextmanager
def ingest_as_done(ws: Workspace) -> Iterator[Callable[[str], None]]:
    """A runner's `on_run_done` that loads finished runs in the background from this (driver)
    process, the single writer; runs finishing close together share one load
    (`store.loader.RunLoader`). Leaving the block waits for the loads. A database held by another
    writer past the lock timeout is not fatal: the runs' logs are the record, `scaledb ingest`
    loads them."""
    from scaling_db.store.loader import RunLoader

    loader = RunLoader(ws)
    try:
        yield loader.submit
    finally:
        loader.close()
        if loader.failed:
            why = next(iter(loader.failed.values()))
            click.echo(f"note: {len(loader.failed)} run(s) not loaded into the database yet ({why}); "
                       "`scaledb ingest` will.", err=True)


def source_builder() -> Any:
    """How runs get their data: the real sources, or what a test passed as `obj={"build_source": ...}`."""
    from scaling_db.training.execute import build_token_source

    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return (obj or {}).get("build_source") or build_token_source


def echo_failed_runs(ws: Workspace, failures: dict[str, str], retry: str) -> None:
    """The failed runs, one line each with why, and how to run them again (on stderr)."""
    if not failures:
        return
    click.echo(f"{len(failures)} run{'s' if len(failures) != 1 else ''} failed:", err=True)
    for run_id, why in failures.items():
        name = ws.load_manifest(run_id).name if ws.manifest_path(run_id).exists() else run_id
        click.echo(f"  {name} ({run_id}): {why}", err=True)
    click.echo(f"Fix the cause, then run them again: {retry}", err=True)
