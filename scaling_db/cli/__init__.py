"""The `scaledb` command line. The only place that prints, exits, or knows about click.

Each area registers its commands from its own module (`spec_commands`, ...); the group turns
any `ScaledbError` into one `Error: ...` message and exit code 1. `--debug` (or
SCALEDB_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os

import click

from scaling_db import __version__
from scaling_db.errors import ScaledbError

#: Modules whose import registers commands on `cli`.
COMMAND_MODULES = ("spec_commands", "run_commands", "data_commands", "store_commands", "fit_commands", "plot_commands",
                   "cluster_commands", "serve_commands")


class _Group(click.Group):
    """Turns scaledb's own errors into one `Error: ...` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ScaledbError as exc:
            if ctx.obj and ctx.obj.get("debug") or os.environ.get("SCALEDB_DEBUG", "") not in ("", "0"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="scaledb")
@click.option("--debug", is_flag=True, envvar="SCALEDB_DEBUG", help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """scaledb: compile scaling-law experiment specs, run them, and ask the results database."""
    ctx.ensure_object(dict)["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"scaling_db.cli.{_name}")


def main() -> None:
    cli(prog_name="scaledb")
