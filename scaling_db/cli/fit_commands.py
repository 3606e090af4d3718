"""`scaledb fit`: the analyses a spec declares, or any law, comparison or frontier on any query."""

from __future__ import annotations

import sys
from typing import Any

import click

from scaling_db.cli import cli
from scaling_db.cli.common import (
    emit_json, get_workspace, json_option, key_values, print_table, workspace_option,
)
from scaling_db.errors import FitError
from scaling_db.fit.registry import LAW_NAMES

ANALYSES = ("lr_optimum", "lr_transfer", "parameter_efficiency", "theory_agreement", "symmetry")
FRONTIERS = ("envelope", "isoflop", "parametric", "surface")


def print_outcomes(outcomes: list[Any]) -> None:
    """Every outcome's quantities in one table, then its notes (formula, bootstrap, exclusions)."""
    from scaling_db.report.analyses import fmt_interval, fmt_num

    rows = [[r["fit"], r["kind"], r["quantity"], fmt_num(r["estimate"]), fmt_interval(r["lo"], r["hi"]),
             r.get("flag", "")]
            for o in outcomes for r in o.table()]
    # the level and method (bootstrap over runs, delta method, none) are per fit: its notes say
    print_table("fits (intervals as each fit's notes below say)",
                ["fit", "kind", "quantity", "estimate", "interval", "flag"], rows)
    for o in outcomes:
        notes = o.notes()
        click.echo(f"{o.name}: {notes[0] if notes else ''}" + (f"  (stored as {o.fit_id})" if o.fit_id else ""))
        for line in notes[1:]:
            click.echo(f"  {line}")


def outcome_json(o: Any) -> dict[str, Any]:
    rec = o.to_record()
    rec.pop("curve", None)
    rec["fit_id"] = o.fit_id
    rec["kind"] = o.kind
    rec["rows"] = o.table()
    rec["notes"] = o.notes()
    if hasattr(o, "formula"):
        rec["formula_fitted"] = o.formula()
    return rec


def _ad_hoc(ws: Any, *, query: str | None, sql: str | None, law: str | None, analysis: str | None,
            frontier: str | None, params: dict[str, Any], xs: tuple[str, ...], y: str, group: str,
            group_by: str | None, flops: str, budget: str | None, name: str | None,
            experiments: tuple[str, ...], n_boot: int | None, jobs: int, keep_above_uniform: bool) -> list[Any]:
    from scaling_db.report.analyses import FitRequest, fit_grouped
    from scaling_db.report.comparisons import run_comparison, run_frontier
    from scaling_db.spec.schema import (FrontierDecl, LrOptimumDecl, LrTransferDecl, ParameterEfficiencyDecl,
                                        SymmetryDecl, TheoryAgreementDecl)

    experiment = experiments[0] if len(experiments) == 1 else None
    many = experiments if len(experiments) > 1 else ()
    named = query or "final_loss"
    if law:
        req = FitRequest(name=name or law, law=law, query=query, sql=sql, params=params, x=list(xs) or None, y=y,
                         group=group, bootstrap=200 if n_boot is None else n_boot, experiment=experiment,
                         group_by=group_by, experiments=many, keep_above_uniform=keep_above_uniform)
        return fit_grouped(ws, req, n_jobs=jobs)
    label = {"name": name} if name else {}
    if frontier:
        decl = FrontierDecl(method=frontier, query=query, params=params, n=xs[0] if xs else "n_params",
                            d=xs[1] if len(xs) > 1 else "tokens", c=flops, y=y, budget=budget, group=group,
                            keep_above_uniform=keep_above_uniform, **label)
        return [run_frontier(ws, decl, experiment or "", many, bootstrap_n=n_boot, n_jobs=jobs, sql=sql)]
    if analysis == "theory_agreement":  # its own default query carries the prediction
        named = query or "theory_loss"
    common = {"kind": analysis, "query": named, "params": params, "y": y, "keep_above_uniform": keep_above_uniform,
              **label}
    if analysis == "theory_agreement":
        decl: Any = TheoryAgreementDecl(**common, **({"reference": xs[0]} if xs else {}))
    elif analysis == "symmetry":
        decl = SymmetryDecl(**common, **dict(zip(("a", "b"), xs)))
    elif analysis == "lr_optimum":
        decl = LrOptimumDecl(**common, **({"group_by": group_by.split(",")} if group_by else {}))
    elif analysis == "lr_transfer":
        decl = LrTransferDecl(**common, **({"by": group_by} if group_by else {}),
                              **({"width": xs[0]} if xs else {}))
    else:
        decl = ParameterEfficiencyDecl(**common, group=group, **({"by": group_by} if group_by else {}),
                                       **({"n": xs[0]} if xs else {}))
    return [run_comparison(ws, decl, experiment or "", many, bootstrap_n=n_boot, n_jobs=jobs, sql=sql)]


@cli.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--only", "only", multiple=True, help="Only the declared analyses of these names.")
@click.option("--query", "query", default=None, help="A named query or .sql file to fit (instead of SPEC).")
@click.option("--sql", default=None, help="Inline SQL to fit (instead of SPEC).")
@click.option("--law", type=click.Choice(LAW_NAMES), default=None, help="Fit this law to --query/--sql.")
@click.option("--analysis", type=click.Choice(ANALYSES), default=None,
              help="Compute this comparison on --query/--sql (LR optima, LR transfer, parameter efficiency, "
                   "measured vs theory_loss, N<->T symmetry).")
@click.option("--frontier", type=click.Choice(FRONTIERS), default=None,
              help="Fit this compute-optimal frontier (N_opt ~ C^a, D_opt ~ C^b) to --query/--sql.")
@click.option("--x", "xs", multiple=True,
              help="x column(s) [n_params; n_params and tokens for 2-D laws, frontiers and symmetry; the width for "
                   "lr_transfer; the predicted column for theory_agreement].")
@click.option("--y", default="loss", show_default=True, help="y column.")
@click.option("--group-by", "group_by", default=None,
              help="One fit per value of this column (a query column, or a manifest path such as data.kappa); "
                   "the grouping of --analysis (comma-separated for lr_optimum).")
@click.option("--flops", default="flops", show_default=True, help="Compute column for --frontier.")
@click.option("--budget", default=None, help="--frontier isoflop: the column naming each run's FLOP budget.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A query parameter (repeatable).")
@click.option("--group", default="run_id", show_default=True, help="Bootstrap resamples whole groups of this column.")
@click.option("--bootstrap", "n_boot", type=int, default=None, help="Bootstrap refits [default: the spec's, or 200].")
@click.option("--name", default=None, help="Name to store an ad-hoc analysis under [default: LAW or the kind].")
@click.option("--experiment", "-e", "experiments", multiple=True,
              help="Experiment(s) whose runs an ad-hoc analysis reads (repeat to analyse several together).")
@click.option("--jobs", type=int, default=1, show_default=True, help="Processes for the bootstrap.")
@click.option("--keep-above-uniform", is_flag=True,
              help="Also fit runs whose final loss is above the uniform guess ln(vocab_size) "
                   "(left out by default, each named with the reason: they learned nothing).")
@click.option("--no-store", is_flag=True, help="Do not write the results to the database.")
@workspace_option
@json_option
def fit(spec: str | None, only: tuple[str, ...], query: str | None, sql: str | None, law: str | None,
        analysis: str | None, frontier: str | None, xs: tuple[str, ...], y: str, group_by: str | None, flops: str,
        budget: str | None, params: tuple[str, ...], group: str, n_boot: int | None, name: str | None,
        experiments: tuple[str, ...], jobs: int, keep_above_uniform: bool, no_store: bool, workspace: str | None,
        as_json: bool) -> None:
    """Fit scaling laws, comparisons and frontiers with intervals, and store them with their provenance.

    \b
    scaledb fit specs/mup_vs_sp.yaml          # the fits, comparisons and frontiers of its analysis section
    scaledb fit --query final_loss -e ba_graph --law saturating_power_law --x n_params_nonembed
    scaledb fit --query final_loss -e mup_vs_sp --law power_law --group-by parameterization
    scaledb fit --query final_loss -e mup_vs_sp --analysis lr_transfer
    scaledb fit --sql "SELECT ... FROM runs ..." --frontier isoflop --budget budget
    """
    from scaling_db.report.analyses import store_outcome

    ws = get_workspace(workspace)
    chosen = [k for k, v in (("--law", law), ("--analysis", analysis), ("--frontier", frontier)) if v]
    errors: dict[str, str] = {}
    if spec is not None:
        if query or sql or chosen:
            raise click.UsageError("give either SPEC or --query/--sql with --law/--analysis/--frontier, not both")
        from scaling_db.report.comparisons import run_analysis
        from scaling_db.report.study import read_study

        study = read_study(spec)
        if not study.analysis.names:
            raise FitError(f"{spec}: declares no analyses. Add them under analysis.fits, analysis.comparisons or "
                           f"analysis.frontiers, or use --query/--sql with --law.")
        unknown = [n for n in only if n not in study.analysis.names]
        if unknown:
            raise FitError(f"{spec}: no analysis named {', '.join(unknown)} (vs {', '.join(study.analysis.names)}). "
                           f"Pass --only with a declared name.")
        done = run_analysis(ws, study.experiment, study.analysis, bootstrap_n=n_boot, n_jobs=jobs, only=only,
                            store=not no_store, keep_above_uniform=keep_above_uniform)
        outcomes, errors = done.outcomes, done.errors
    else:
        if not (query or sql) or len(chosen) != 1:
            raise click.UsageError("give SPEC, or --query NAME (or --sql) with one of --law, --analysis, --frontier")
        outcomes = _ad_hoc(ws, query=query, sql=sql, law=law, analysis=analysis, frontier=frontier,
                           params=key_values(params, "--param"), xs=xs, y=y, group=group, group_by=group_by,
                           flops=flops, budget=budget, name=name, experiments=experiments, n_boot=n_boot, jobs=jobs,
                           keep_above_uniform=keep_above_uniform)
        if not no_store:
            outcomes = [store_outcome(ws, o) for o in outcomes]
    if as_json:
        emit_json([outcome_json(o) for o in outcomes])
    elif outcomes:
        print_outcomes(outcomes)
    for what, why in errors.items():
        click.echo(f"Error: {what}: {why}", err=True)
    if errors:
        sys.exit(1)
