"""`scaledb check`: find results that could mislead, and say how to repair each."""

from __future__ import annotations

import sys

import click

from scaling_db.cli import cli
from scaling_db.cli.common import counted, emit_json, get_workspace, json_option, workspace_option


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--rerun-damaged", is_flag=True,
              help="Reset damaged runs to pending (log, state and status removed) so `scaledb run` trains "
                   "them again from scratch.")
@workspace_option
@json_option
def check(targets: tuple[str, ...], rerun_damaged: bool, workspace: str | None, as_json: bool) -> None:
    """Check every run's log, status and saved state, and the database against them.

    TARGETS (default: all runs) are specs, experiments or run ids. Each problem is printed with
    the command that repairs it. Exit status 1 when anything is wrong, 0 when all is consistent.
    Runs being trained right now are skipped.
    """
    from scaling_db.cli.run_commands import resolve_targets
    from scaling_db.store.check import check_workspace, reset_damaged

    ws = get_workspace(workspace).require_existing()
    run_ids = resolve_targets(ws, targets, write=False) if targets else None
    suffix = f" -w {ws.root}" if workspace else ""
    report = check_workspace(ws, run_ids, workspace_flag=suffix.strip())
    reset = reset_damaged(ws, report.damaged) if rerun_damaged else []
    if as_json:
        emit_json(dict(report.to_dict(), workspace=str(ws.root), reset=reset))
    else:
        for problem in report.problems:
            click.echo(f"{problem.format()}\n  fix: {problem.fix}")
        damaged = report.damaged
        click.echo(f"{counted(report.runs_checked, 'run')} checked: " + (
            f"{counted(len(report.problems), 'problem')}, {counted(len(damaged), 'run')} damaged"
            if report.problems else "no problems"))
        if reset:
            click.echo(f"{counted(len(reset), 'damaged run')} reset to pending; train them again with "
                       f"`scaledb run {' '.join(reset)}{suffix}`")
        elif damaged:
            click.echo(f"`scaledb check --rerun-damaged{suffix}` resets the damaged runs to pending.")
    if report.problems:
        sys.exit(1)
