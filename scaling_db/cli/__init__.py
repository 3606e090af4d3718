"""The `scaledb` command line. The only place that prints, exits, or knows about click.

Each area registers its commands from its own module (`spec_commands`, ...). The group is lazy:
`COMMANDS` names each command's module and one-line help, so `scaledb --help` and
`scaledb --version` import no command module, and a command imports only its own module (and
what that needs) when it runs; the heavy libraries (torch, pandas, scipy, statsmodels, altair)
are imported where they are used. A new command is added to `COMMANDS` (tests/test_cli_lazy.py
checks the table against the modules). The group turns any `ScaledbError` into one `Error: ...`
message and exit code 1 (a spec error gives one line per problem). `--debug` (or SCALEDB_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os

import click

from scaling_db import __version__
from scaling_db.errors import ScaledbError, SpecError

#: command name -> (module under scaling_db.cli that defines it, its one-line help for `--help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("spec_commands", "Check spec files without writing anything."),
    "compile": ("spec_commands", "Expand specs into run manifests in the workspace and print the plan."),
    "schema": ("spec_commands", "Print the JSON Schema of the spec format (for YAML language servers)."),
    "diff": ("spec_commands", "Show the manifest fields that differ between two runs (ids or unique prefixes)."),
    "data": ("data_commands", "Look at data sources."),
    "run": ("run_commands",
            "Run the pending runs of SPEC files (compiled first), manifests, experiments or run ids."),
    "status": ("run_commands",
               "List runs with status, last step and last eval loss (all runs, or those of TARGETS)."),
    "coordcheck": ("run_commands",
                   "Train SPEC's model a few steps at several widths; show mean |activation| per layer."),
    "cancel": ("cluster_commands",
               "Cancel the queued and running runs of SPEC files, experiments or run ids (any backend)."),
    "check": ("check_commands", "Check every run's log, status and saved state, and the database against them."),
    "ingest": ("store_commands", "Load run logs and statuses into the workspace's DuckDB file."),
    "queries": ("store_commands", "List the named queries with their purpose and parameters."),
    "query": ("store_commands",
              "Run a named query (see `scaledb queries`), a .sql file, or --sql, read-only."),
    "import": ("store_commands",
               "Import TABLE (CSV, Parquet or JSON) of external runs as an experiment of its own."),
    "fit": ("fit_commands",
            "Fit scaling laws, comparisons and frontiers with intervals, and store them with their provenance."),
    "plot": ("plot_commands", "Draw a figure of KIND for an experiment (SPEC or --experiment) to --out."),
    "reproduce": ("plot_commands",
                  "Run a whole experiment: compile, run pending runs locally, load, fit, plot, and report."),
    "serve": ("serve_commands",
              "Serve a live, read-only dashboard of the workspace: experiments, runs, curves, figures, fits, SQL."),
}


class _Group(click.Group):
    """Loads a command's module on first use; turns scaledb's errors into one `Error: ...` line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            # Importing the module runs its `@cli.command()` decorators, which add the command.
            importlib.import_module(f"scaling_db.cli.{COMMANDS[cmd_name][0]}")
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from `COMMANDS`, without importing the commands' modules."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ScaledbError as exc:
            if ctx.obj and ctx.obj.get("debug") or os.environ.get("SCALEDB_DEBUG", "") not in ("", "0"):
                raise
            # A spec error is one line per problem, each complete (`file:line field: what`).
            lines = [p.format() for p in exc.problems] if isinstance(exc, SpecError) else [str(exc)]
            for line in lines:
                click.echo(f"Error: {line}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:  # click's own handler would say "Aborted!" and exit 1
            # Commands that write do so in one transaction or atomic file, so nothing is half-written.
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scaledb")
@click.option("--debug", is_flag=True, envvar="SCALEDB_DEBUG", help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """scaledb: compile scaling-law experiment specs, run them, and ask the results database."""
    ctx.ensure_object(dict)["debug"] = debug


def load_all_commands() -> dict[str, click.Command]:
    """Import every command module; for tests and documentation checks (`cli.commands` after)."""
    for module in sorted({module for module, _ in COMMANDS.values()}):
        importlib.import_module(f"scaling_db.cli.{module}")
    return cli.commands


def main() -> None:
    cli(prog_name="scaledb")
