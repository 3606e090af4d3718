"""`scaledb fit`: the fits a spec declares, or any law on any query result."""

from __future__ import annotations

from typing import Any

import click

from scaling_db.fit.registry import FITTERS
from scaling_db.report.analyses import FitOutcome, FitRequest, fit_request, store_outcome
from scaling_db.cli import cli
from scaling_db.cli.common import (
    emit_json, get_workspace, json_option, key_values, print_table, workspace_option,
)
from scaling_db.spec.compiler import compile_spec
from scaling_db.errors import FitError


def _num(v: Any) -> str:
    return "" if v is None or v != v else f"{v:.4g}"


def print_outcomes(outcomes: list[FitOutcome]) -> None:
    rows = []
    for o in outcomes:
        for r in o.table():
            ci = f"[{_num(r['lo'])}, {_num(r['hi'])}]" if r["lo"] is not None else ""
            rows.append([r["fit"], r["law"], r["quantity"], _num(r["estimate"]), ci])
    print_table("fits (95% bootstrap intervals over whole runs)", ["fit", "law", "quantity", "estimate", "interval"], rows)
    for o in outcomes:
        line = f"{o.request.name}: {o.formula()}  ({o.fit.n_points} points"
        line += f", R^2 = {o.fit.stats['r2']:.4f}" if "r2" in o.fit.stats else ""
        line += f", stored as {o.fit_id})" if o.fit_id else ")"
        click.echo(line)
        if o.irreducible is not None:
            covered = "inside" if o.irreducible.covered else "outside"
            click.echo(f"  fitted floor E = {o.irreducible.fitted:.4g} vs true entropy rate {o.irreducible.true:.4g} "
                       f"({o.irreducible.difference:+.3g}; truth {covered} the interval)")
        for run, reason in o.fit.excluded:
            click.echo(f"  excluded {run}: {reason}")


def outcome_json(o: FitOutcome) -> dict[str, Any]:
    rec = o.to_record()
    rec.pop("curve", None)
    rec["fit_id"] = o.fit_id
    rec["formula_fitted"] = o.formula()
    return rec


@cli.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--only", "only", multiple=True, help="Only the declared fits of these names.")
@click.option("--query", "query", default=None, help="A named query or .sql file to fit (instead of SPEC).")
@click.option("--sql", default=None, help="Inline SQL to fit (instead of SPEC).")
@click.option("--law", type=click.Choice(sorted(FITTERS)), default=None, help="The law, with --query/--sql.")
@click.option("--x", "xs", multiple=True, help="x column(s) [default: n_params; n_params and tokens for 2-D laws].")
@click.option("--y", default="loss", show_default=True, help="y column.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@click.option("--group", default="run_id", show_default=True, help="Bootstrap resamples whole groups of this column.")
@click.option("--bootstrap", "n_boot", type=int, default=None, help="Bootstrap refits [default: the spec's, or 200].")
@click.option("--name", default=None, help="Name to store an ad-hoc fit under [default: LAW].")
@click.option("--experiment", "-e", default=None, help="Experiment for ad-hoc fits (passed to the query).")
@click.option("--jobs", type=int, default=1, show_default=True, help="Processes for the bootstrap.")
@click.option("--no-store", is_flag=True, help="Do not write the fits to the database.")
@workspace_option
@json_option
def fit(spec: str | None, only: tuple[str, ...], query: str | None, sql: str | None, law: str | None,
        xs: tuple[str, ...], y: str, params: tuple[str, ...], group: str, n_boot: int | None, name: str | None,
        experiment: str | None, jobs: int, no_store: bool, workspace: str | None, as_json: bool) -> None:
    """Fit scaling laws with bootstrap intervals, and store them with their provenance.

    \b
    scaledb fit specs/ba_graph.yaml                      # the fits in the spec's analysis section
    scaledb fit --query final_loss -p experiment=ba_graph --law saturating_power_law --x n_params_nonembed
    """
    ws = get_workspace(workspace)
    if spec is not None:
        if query or sql or law:
            raise click.UsageError("give either SPEC or --query/--sql with --law, not both")
        compiled = compile_spec(spec)
        decls = [d for d in compiled.analysis.fits if not only or d.name in only]
        if not decls:
            raise FitError(f"{spec}: declares no fits" + (f" named {', '.join(only)}" if only else "")
                           + ". Add them under analysis.fits, or use --query/--sql with --law.")
        requests = [FitRequest.from_decl(d, compiled.experiment) for d in decls]
    else:
        if not (query or sql) or not law:
            raise click.UsageError("give SPEC, or --query NAME (or --sql) together with --law")
        requests = [FitRequest(name=name or law, law=law, query=query, sql=sql, params=key_values(params, "--param"),
                               x=list(xs) or None, y=y, group=group, bootstrap=200, experiment=experiment)]
    if n_boot is not None:
        requests = [FitRequest(**{**r.__dict__, "bootstrap": n_boot}) for r in requests]
    outcomes = [fit_request(ws, r, n_jobs=jobs) for r in requests]
    if not no_store:
        outcomes = [store_outcome(ws, o) for o in outcomes]
    if as_json:
        emit_json([outcome_json(o) for o in outcomes])
    else:
        print_outcomes(outcomes)
