"""`scaledb plot | reproduce`: figures, and the whole experiment in one command."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from scaling_db.cli import cli
from scaling_db.cli.common import (
    emit_json,
    get_workspace,
    ingest_as_done,
    json_option,
    key_values,
    workspace_option,
)
from scaling_db.cli.fit_commands import outcome_json, print_outcomes
from scaling_db.spec.compiler import compile_spec
from scaling_db.report.figures import BUILDERS, FigureRequest, build_figure
from scaling_db.plot import FORMATS, save_chart

if TYPE_CHECKING:
    from scaling_db.reproduce import ReproduceResult
    from scaling_db.workspace import Workspace


@cli.command()
@click.argument("kind", type=click.Choice(sorted(BUILDERS)))
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--experiment", "-e", default=None, help="Experiment to plot (instead of SPEC).")
@click.option("--query", default=None, help="Named query or .sql file replacing the kind's default data.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@click.option("--fit", "fit_name", default=None, help="Stored fit to draw (scaling_fit).")
@click.option("--x", default=None, help="x column where the kind allows a choice (e.g. tokens or flops).")
@click.option("--title", default=None, help="Chart title.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help=f"Output file; its extension picks the format ({', '.join(FORMATS)}).")
@workspace_option
def plot(kind: str, spec: str | None, experiment: str | None, query: str | None, params: tuple[str, ...],
         fit_name: str | None, x: str | None, title: str | None, out: str, workspace: str | None) -> None:
    """Draw a figure of KIND for an experiment (SPEC or --experiment) to --out.

    \b
    scaledb plot loss_curves specs/ba_graph.yaml --out curves.png
    scaledb plot scaling_fit -e ba_graph --fit loss_vs_params --out fit.pdf
    """
    if (spec is None) == (experiment is None):
        raise click.UsageError("give SPEC or --experiment (exactly one)")
    name = experiment or compile_spec(spec).experiment  # type: ignore[arg-type]
    req = FigureRequest(kind=kind, experiment=name, fit=fit_name, query=query,
                        params=key_values(params, "--param"), x=x, title=title)
    path = save_chart(build_figure(get_workspace(workspace), req), out)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: one per CPU share, or one per GPU].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bootstrap", type=int, default=None, help="Bootstrap refits per fit [default: the spec's].")
@workspace_option
@json_option
def reproduce(spec: str, workers: int | None, device: str, bootstrap: int | None, workspace: str | None,
              as_json: bool) -> None:
    """Run a whole experiment: compile, run pending runs locally, load, fit, plot, and report.

    Running it again skips finished runs and only refits and replots. The report is
    <workspace>/reports/<experiment>/report.html, with each figure beside it as .png and .html.
    """
    from runners.local import run_local
    from scaling_db.cli.common import EXIT_INTERRUPTED, EXIT_RUNS_FAILED, source_builder
    from scaling_db.cli.progress import progress_display
    from scaling_db.reproduce import reproduce as reproduce_experiment

    ws = get_workspace(workspace)
    progress = progress_display(ws, as_json)

    def run_pending(run_ids: list[str]) -> None:
        report = run_local(ws, run_ids, workers=workers, device=device,  # type: ignore[arg-type]
                           on_run_done=ingest_as_done(ws), progress=progress, build_source=source_builder())
        if report.interrupted:
            raise KeyboardInterrupt

    try:
        result = reproduce_experiment(ws, spec, run_pending, bootstrap=bootstrap)
    except KeyboardInterrupt:
        click.echo("Interrupted: runs saved their state; run the same command again to resume.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        emit_json({"experiment": result.compiled.experiment, "report": str(result.report),
                   "fits": [outcome_json(o) for o in result.fits], "fit_errors": result.fit_errors,
                   "figures": {f.name: f.error or "ok" for f in result.figures},
                   "failed_runs": result.failed_runs})
    else:
        _print_reproduced(ws, spec, result)
    if result.failed_runs:
        sys.exit(EXIT_RUNS_FAILED)


def _print_reproduced(ws: "Workspace", spec: str, result: "ReproduceResult") -> None:
    from scaling_db.cli.common import echo_failed_runs

    if result.fits:
        print_outcomes(result.fits)
    for name, error in result.fit_errors.items():
        click.echo(f"fit {name} not made: {error}", err=True)
    for fig in result.figures:
        if fig.error:
            click.echo(f"figure {fig.name} not drawn: {fig.error}", err=True)
    click.echo(f"\nreport: {result.report}")
    click.echo(f"figures: {result.report.parent}/*.png (and interactive .html)")
    if result.failed_runs:
        echo_failed_runs(ws, result.failed_runs, retry=f"scaledb run {spec} --retry-failed, then reproduce again")
        click.echo(f"The report says at its top that it is incomplete: {result.report}", err=True)
