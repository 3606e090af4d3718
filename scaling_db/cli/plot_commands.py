"""`scaledb plot | reproduce`: figures, and the whole experiment in one command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from scaling_db.spec.schema import KEEPING_PLOTS
from scaling_db.report.figures import BUILDERS, FigureRequest, build_figure
from scaling_db.plot import FORMATS, save_chart

if TYPE_CHECKING:
    from scaling_db.report.markdown import Page
    from scaling_db.workspace import Workspace


CONTACT_SHEET = "contact-sheet"


@cli.command()
@click.argument("kind", type=click.Choice([*sorted(BUILDERS), CONTACT_SHEET]))
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--experiment", "-e", default=None, help="Experiment to plot (instead of SPEC).")
@click.option("--query", default=None, help="Named query or .sql file replacing the kind's default data.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@click.option("--fit", "fit_name", default=None, help="Stored fit to draw (scaling_fit, fit_parameters).")
@click.option("--fit-param", "fit_param", default=None,
              help="fit_parameters: the fitted parameter to draw per group [default: the law's exponent].")
@click.option("--x", default=None, help="x column where the kind allows a choice (e.g. tokens or flops).")
@click.option("--title", default=None, help="Chart title.")
@click.option("--width", type=click.Choice(["column", "page"]), default=None,
              help="Style for a journal figure this wide: column (3.25 in) or page (6.75 in).")
@click.option("--keep-above-uniform", is_flag=True,
              help="isoflop, optimal_allocation: also draw runs whose final loss is above the uniform guess "
                   "ln(vocab_size) (left out by default); optimal_allocation then fits its frontiers itself.")
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False),
              help=f"Output file; its extension picks the format ({', '.join(FORMATS)}). "
                   f"contact-sheet: default <workspace>/reports/<experiment>/contact_sheet.png and .html.")
@workspace_option
def plot(kind: str, spec: str | None, experiment: str | None, query: str | None, params: tuple[str, ...],
         fit_name: str | None, fit_param: str | None, x: str | None, title: str | None, width: str | None,
         keep_above_uniform: bool, out: str | None, workspace: str | None) -> None:
    """Draw a figure of KIND for an experiment (SPEC or --experiment) to --out.

    `contact-sheet` lays out every figure SPEC declares on one page (PNG and HTML), from the
    stored fits; a figure that cannot be drawn says why in its cell.

    \b
    scaledb plot loss_curves specs/ba_graph.yaml --out curves.png
    scaledb plot scaling_fit -e ba_graph --fit loss_vs_params --width column --out fit.pdf
    scaledb plot fit_parameters -e ladder --fit by_graph --out exponents.png
    scaledb plot contact-sheet specs/ba_graph.yaml
    """
    if keep_above_uniform and kind not in KEEPING_PLOTS:
        raise click.UsageError(f"--keep-above-uniform applies to {' and '.join(KEEPING_PLOTS)} only: " + (
            "the contact sheet draws the figures as the spec declares them (keep_above_uniform: true on one)"
            if kind == CONTACT_SHEET else f"{kind} draws every run"))
    if kind == CONTACT_SHEET:
        _contact_sheet(spec, experiment, width, out, workspace)
        return
    if (spec is None) == (experiment is None):
        raise click.UsageError("give SPEC or --experiment (exactly one)")
    if out is None:
        raise click.UsageError("give --out FILE (its extension picks the format)")
    name = experiment or compile_spec(spec).experiment  # type: ignore[arg-type]
    req = FigureRequest(kind=kind, experiment=name, fit=fit_name, query=query,
                        params=key_values(params, "--param"), x=x, title=title, width=width, param=fit_param,
                        keep_above_uniform=keep_above_uniform)
    path = save_chart(build_figure(get_workspace(workspace), req), out)
    click.echo(f"wrote {path}")


def _contact_sheet(spec: str | None, experiment: str | None, width: str | None, out: str | None,
                   workspace: str | None) -> None:
    from scaling_db.report.study import read_study, write_contact_sheet

    if spec is None or experiment is not None:
        raise click.UsageError("contact-sheet takes SPEC (its declared figures), not --experiment")
    if width is not None:
        raise click.UsageError("contact-sheet lays figures out at screen size; --width is for one figure")
    for path in write_contact_sheet(get_workspace(workspace), read_study(spec), out):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: one per CPU share, or one per GPU].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--bootstrap", type=int, default=None, help="Bootstrap refits per fit [default: the spec's].")
@click.option("--smoke", is_flag=True, help="Run each spec's `smoke:` size: a quick check of the whole pipeline.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Also write each report as Markdown (OUT/<experiment>/README.md, figures as PNG beside it) "
                   "and an index OUT/README.md.")
@workspace_option
@json_option
def reproduce(specs: tuple[str, ...], workers: int | None, device: str, bootstrap: int | None, smoke: bool,
              out: str | None, workspace: str | None, as_json: bool) -> None:
    """Run a whole experiment: compile, run pending runs locally, load, fit, plot, and report.

    Running it again skips finished runs and only refits and replots. The report is
    <workspace>/reports/<experiment>/report.html, with each figure beside it as .png and .html.
    A spec without data/model/train that lists `analysis.experiments` trains nothing: it
    analyses and reports those experiments' runs together. SPECS may be several files or
    folders (every spec directly in them), run in the order their analyses need; with --json
    and several specs or a folder the output is a list, one object per spec.
    """
    from scaling_db.cli.common import EXIT_INTERRUPTED, EXIT_RUNS_FAILED
    from scaling_db.spec.collection import expand_spec_paths, order_by_dependency

    ws = get_workspace(workspace)
    paths = order_by_dependency(expand_spec_paths(specs), smoke=smoke)
    command = " ".join(["scaledb reproduce", *specs, *(["--smoke"] if smoke else []), *([f"--out {out}"] if out else [])])
    many = len(paths) > 1 or any(Path(s).is_dir() for s in specs)  # --json prints a list then
    pages, results, failed = [], [], False
    for path in paths:
        if many and not as_json:
            click.echo(f"\n== {path}")
        try:
            page = _reproduce_one(ws, path, workers, device, bootstrap, smoke, command, as_json)
        except KeyboardInterrupt:
            click.echo("Interrupted: runs saved their state; run the same command again to resume.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        failed = failed or bool(page.failed_runs)
        results.append(_print_result(ws, str(path), page, as_json, emit=not many))
        pages.append(page)
    if out:
        from scaling_db.report.markdown import write_index, write_page

        written = [(p, write_page(p, Path(out) / p.experiment, ws.cache_dir)) for p in pages]
        index = write_index(written, Path(out), command)
        if not as_json:
            click.echo(f"\nMarkdown: {index} and {len(written)} page(s) beside it")
    if as_json and many:
        emit_json(results)
    if failed:
        sys.exit(EXIT_RUNS_FAILED)


def _reproduce_one(ws: "Workspace", path: Path, workers: int | None, device: str, bootstrap: int | None,
                   smoke: bool, command: str, as_json: bool) -> "Page":
    from runners.local import run_local
    from scaling_db.cli.common import source_builder
    from scaling_db.cli.progress import progress_display
    from scaling_db.report.markdown import Page, describe_machines
    from scaling_db.reproduce import reproduce as reproduce_experiment
    from scaling_db.report.study import is_analysis_only, read_study, run_study

    if is_analysis_only(path):
        done = run_study(ws, read_study(path, smoke=smoke), bootstrap_n=bootstrap)
        study, outcomes, errors = done.study, done.analysis.outcomes, done.analysis.errors
        return Page(study.experiment, study.description, path, command, outcomes, errors, done.figures, done.runs,
                    done.published, report=done.report, smoke=smoke,
                    machine=describe_machines(ws, list(done.runs.get("run_id", []))))
    progress = progress_display(ws, as_json)

    def run_pending(run_ids: list[str]) -> None:
        with ingest_as_done(ws) as on_run_done:
            report = run_local(ws, run_ids, workers=workers, device=device,  # type: ignore[arg-type]
                               on_run_done=on_run_done, progress=progress, build_source=source_builder())
        if report.interrupted:
            raise KeyboardInterrupt

    result = reproduce_experiment(ws, path, run_pending, bootstrap=bootstrap, smoke=smoke)
    c = result.compiled
    return Page(c.experiment, c.description, path, command, result.fits, result.fit_errors, result.figures,
                result.runs, result.published, upstream=result.upstream, failed_runs=result.failed_runs,
                report=result.report, smoke=smoke,
                machine=describe_machines(ws, [m.run_id for m in [*c.upstream, *c.runs]]))


def _print_result(ws: "Workspace", spec: str, page: "Page", as_json: bool, emit: bool) -> dict[str, Any]:
    """Print one experiment's outcome, or with `as_json` its JSON object (now only if `emit`); return it."""
    from scaling_db.cli.common import echo_failed_runs

    obj = {"experiment": page.experiment, "report": str(page.report),
           "fits": [outcome_json(o) for o in page.outcomes], "fit_errors": dict(page.errors),
           "figures": {f.name: f.error or "ok" for f in page.figures}, "failed_runs": dict(page.failed_runs),
           "published": [{"analysis": c.analysis, "quantity": c.quantity, "estimate": c.estimate, "lo": c.lo,
                          "hi": c.hi, "published": c.decl.value, "source": c.decl.source, "verdict": c.verdict}
                         for c in page.published]}
    if as_json:
        if emit:
            emit_json(obj)
        return obj
    if page.outcomes:
        print_outcomes(page.outcomes)
    for name, error in page.errors.items():
        click.echo(f"fit {name} not made: {error}", err=True)
    for fig in page.figures:
        if fig.error:
            click.echo(f"figure {fig.name} not drawn: {fig.error}", err=True)
    for check in page.published:
        click.echo(f"{check.analysis} {check.quantity}: {check.sentence}")
    click.echo(f"\nreport: {page.report}")
    click.echo(f"figures: {page.report.parent}/*.png (and interactive .html)")
    if page.failed_runs:
        echo_failed_runs(ws, dict(page.failed_runs), retry=f"scaledb run {spec} --retry-failed, then reproduce again")
        click.echo(f"The report says at its top that it is incomplete: {page.report}", err=True)
    return obj
