"""Comparisons and frontiers a spec declares, run on the database and stored like any fit.

LR optima per group, the LR-transfer slope per parameterization, the muP-vs-SP parameter
efficiency, measured loss against a closed-form theory and the N <-> T symmetry of solvable
models, and compute-optimal frontiers (envelope, IsoFLOP, parametric, smooth surface) each
become a `ComparisonOutcome`: a short table of quantities with intervals and flags, notes, and a
record for the `fits` table (its `law` column holds the kind: `lr_optimum`, `lr_transfer`,
`parameter_efficiency`, `frontier_isoflop`, ...). `run_analysis` runs a whole `analysis:` section.
The statistics are the pure functions of `scaling_db.fit`; this module only fetches rows, calls
them and lays out the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.errors import FitError, ScaledbError
from scaling_db.fit import bootstrap, fit_lr_transfer, parameter_efficiency
from scaling_db.fit.frontier import FrontierFit, final_rows, frontier_fn
from scaling_db.fit.mup import fit_lr_optima
from scaling_db.fit.theory import nt_symmetry, theory_agreement
from scaling_db.report.cache import cached_fit
from scaling_db.report.analyses import (Excluded, FitRequest, Outcome, Row, failed_refits_flag, fetch_rows,
                                        fit_grouped, split_above_uniform, store_outcome)
from scaling_db.spec.schema import (AnalysisSpec, ComparisonDecl, FrontierDecl, LrOptimumDecl,
                                    LrTransferDecl, ParameterEfficiencyDecl, SymmetryDecl,
                                    TheoryAgreementDecl)
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class ComparisonOutcome:
    """One declared comparison or frontier: table rows, notes, a detail table and its record."""

    name: str
    kind: str
    rows: tuple[Row, ...]
    note_lines: tuple[str, ...]
    detail: pd.DataFrame  # per-group numbers (LR optima, frontier optima) for figures and the report
    record: dict[str, Any] = field(repr=False)
    fit_id: str | None = None

    def __repr__(self) -> str:
        return f"ComparisonOutcome({self.name}: {len(self.rows)} quantities)"

    def table(self) -> list[Row]:
        return [dict(r) for r in self.rows]

    def notes(self) -> list[str]:
        return list(self.note_lines)

    def to_record(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass(frozen=True)
class Source:
    """Where a comparison's rows came from: stored with it as provenance."""

    experiment: str
    experiments: tuple[str, ...]
    query: str | None
    sql: str
    data: pd.DataFrame  # the rows analysed: the query's, less runs left out above the uniform guess
    run_ids: tuple[str, ...] = ()  # every run the query returned
    excluded: Excluded = ()  # (run_id, why) of the runs left out


def _row(name: str, kind: str, quantity: str, estimate: float, lo: float | None = None,
         hi: float | None = None, flag: str = "") -> Row:
    return {"fit": name, "kind": kind, "quantity": quantity, "estimate": float(estimate),
            "lo": None if lo is None else float(lo), "hi": None if hi is None else float(hi),
            "flag": flag}


def _outcome(name: str, kind: str, rows: list[Row], notes: list[str], detail: pd.DataFrame,
             src: Source, settings: dict[str, Any]) -> ComparisonOutcome:
    notes = notes + [f"excluded {run}: {why}" for run, why in src.excluded]
    record = {
        "law": kind, "experiment": src.experiment or None, "name": name,
        "params": {r["quantity"]: r["estimate"] for r in rows},
        "intervals": {r["quantity"]: [r["lo"], r["hi"]] for r in rows if r["lo"] is not None},
        "query_name": src.query, "query_sql": src.sql, "run_ids": sorted(set(src.run_ids)),
        "n_points": len(src.data), "settings": settings,
        "flags": {r["quantity"]: r["flag"] for r in rows if r["flag"]},
        "notes": notes, "table": detail.replace({np.nan: None}).to_dict(orient="records"),
        "experiments": list(src.experiments) or None,
        "excluded": [[run, why] for run, why in src.excluded] or None,
    }
    return ComparisonOutcome(name, kind, tuple(rows), tuple(notes), detail, record)


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def lr_optimum_outcome(decl: LrOptimumDecl, src: Source) -> ComparisonOutcome:
    """The LR optimum per `group_by` combination; the grid best is shown beside it when it differs."""
    table = fit_lr_optima(src.data, by=decl.group_by, lr=decl.lr, y=decl.y,
                          n_around=decl.n_around, level=decl.level)
    rows = []
    for _, r in table.iterrows():
        where = _label({k: r[k] for k in decl.group_by})
        flag = r["flag"]
        if flag.startswith("edge") or not np.isfinite(r["lr_opt"]):
            rows.append(_row(decl.name, decl.kind, f"lr (grid best) {where}", r["lr_grid_best"],
                             r["lr_lo"], r["lr_hi"], flag))
            continue
        rows.append(_row(decl.name, decl.kind, f"lr* (parabola) {where}", r["lr_opt"],
                         r["lr_lo"], r["lr_hi"], flag))
        if "differs" in flag:
            rows.append(_row(decl.name, decl.kind, f"lr (grid best) {where}", r["lr_grid_best"],
                             flag="grid value with the lowest mean loss"))
    notes = [f"optimum of a parabola in log {decl.lr} through the {decl.n_around} grid values either "
             f"side of the best; {decl.level:.0%} delta-method intervals"]
    return _outcome(decl.name, decl.kind, rows, notes, table, src,
                    {"group_by": decl.group_by, "n_around": decl.n_around, "level": decl.level})


def lr_transfer_outcome(decl: LrTransferDecl, src: Source) -> ComparisonOutcome:
    """Slope of log lr* on log width per value of `decl.by` (muP: ~0; SP: ~-1)."""
    fit = fit_lr_transfer(src.data, width=decl.width, lr=decl.lr, y=decl.y,
                          parameterization=decl.by, n_around=decl.n_around, level=decl.level)
    rows = []
    for _, s in fit.slopes.iterrows():
        opt = fit.optima[fit.optima["parameterization"] == s["parameterization"]]
        flagged = opt[opt["flag"] != ""]
        left_out = [w for (p, w), _ in fit.excluded if p == s["parameterization"] and w is not None]
        flag = "; ".join(
            ([f"{len(left_out)} {decl.width} value(s) left out: optimum not bracketed"] if left_out else [])
            + ([f"{len(flagged)} of {len(opt)} optima flagged (see lr_optimum)"] if len(flagged) else [])
            + ([f"only {int(s['n_widths'])} widths"] if s["n_widths"] < 4 else []))
        rows.append(_row(decl.name, decl.kind,
                         f"d log lr*/d log {decl.width} [{decl.by}={s['parameterization']}]",
                         s["slope"], s["slope_lo"], s["slope_hi"], flag))
    notes = [f"{decl.by}={k[0]}, {decl.width}={k[1]}: {why}" if isinstance(k, tuple) else f"{k}: {why}"
             for k, why in fit.excluded]
    notes.insert(0, f"weighted least squares of log lr* on log {decl.width}; muP predicts 0, SP about -1 "
                    f"(Yang et al. 2022); {decl.level:.0%} intervals")
    detail = fit.optima.rename(columns={"parameterization": decl.by, "width": decl.width})
    return _outcome(decl.name, decl.kind, rows, notes, detail, src,
                    {"width": decl.width, "by": decl.by, "n_around": decl.n_around, "level": decl.level})


def efficiency_outcome(decl: ParameterEfficiencyDecl, src: Source, *, n_boot: int, seed: int,
                       n_jobs: int) -> ComparisonOutcome:
    """How many times more parameters `other` needs to match `reference`'s loss."""
    fit = parameter_efficiency(src.data, decl.by, reference=decl.reference, other=decl.other,
                               n=decl.n, y=decl.y, group=decl.group, saturating=decl.saturating,
                               n_boot=max(n_boot, 2), seed=seed, n_jobs=n_jobs, level=decl.level)
    boot = fit.bootstrap
    flag = failed_refits_flag(boot)
    rows = [_row(decl.name, decl.kind,
                 f"N_{decl.other} / N_{decl.reference} at equal {decl.y} ({decl.n} = {fit.target_n:.3g})",
                 fit.ratio, *fit.interval, flag)]
    notes = [f"{k}: {decl.y} = {f['A']:.3g} {decl.n}^-{f['alpha']:.3g}" + (f" + {f['E']:.3g}" if "E" in f.params else "")
             for k, f in fit.fits.items()]
    notes.append("best run per size (lowest loss over the LR grid); " + (boot.note() if boot else ""))
    detail = pd.DataFrame([{"ratio": fit.ratio, "lo": fit.interval[0], "hi": fit.interval[1],
                            "target_n": fit.target_n}])
    return _outcome(decl.name, decl.kind, rows, notes, detail, src,
                    {"by": decl.by, "reference": decl.reference, "other": decl.other, "n": decl.n,
                     "saturating": decl.saturating, "bootstrap": n_boot, "level": decl.level})


def frontier_outcome(decl: FrontierDecl, src: Source, *, n_boot: int, seed: int,
                     n_jobs: int) -> ComparisonOutcome:
    """N_opt ∝ C^a and D_opt ∝ C^b by one method, with bootstrap intervals over runs."""
    data = final_rows(src.data, c=decl.c, group=decl.group) if decl.method == "isoflop" else src.data
    fn = frontier_fn(decl.method, n=decl.n, d=decl.d, c=decl.c, y=decl.y, budget=decl.budget,
                     group=decl.group)
    boot, why_none = None, "bootstrap: 0"
    if n_boot >= 2 and decl.group in data.columns and data[decl.group].nunique() >= 3:
        # IsoFLOP: resample runs within each budget, so every budget keeps its number of runs
        strata = decl.budget if decl.method == "isoflop" and decl.budget in data.columns else None
        try:
            boot = bootstrap(fn, data, group=decl.group, n=n_boot, seed=seed, n_jobs=n_jobs,
                             level=decl.level, warm_start=False, strata=strata)
        except FitError as err:  # the full-data fit may stand where resamples cannot (tiny designs)
            why_none = str(err)
    elif n_boot >= 2:
        why_none = "fewer than 3 runs to resample"
    fit: FrontierFit = boot.fit if boot is not None else fn(data)
    ci = boot.intervals if boot is not None else {}
    kind = f"frontier_{decl.method}"
    n_levels = len(fit.optima) + len(fit.excluded)
    flags = ([f"{len(fit.excluded)} of {n_levels} compute levels left out"] if fit.excluded else []) + \
        ([] if boot is not None else ["no interval"]) + \
        ([f"only {len(fit.optima)} compute-optimal points"] if len(fit.optima) < 5 else []) + \
        [failed_refits_flag(boot)]
    flag = "; ".join(f for f in flags if f)
    rows = [_row(decl.label, kind, f"a (N_opt ∝ C^a, N = {decl.n})", fit.a, *ci.get("a", (None, None)), flag),
            _row(decl.label, kind, f"b (D_opt ∝ C^b, D = {decl.d})", fit.b, *ci.get("b", (None, None)), flag)]
    notes = [f"N_opt = {fit.coefficients[0]:.3g} C^{fit.a:.3g}, D_opt = {fit.coefficients[1]:.3g} C^{fit.b:.3g} "
             f"(C = {decl.c}); {len(fit.optima)} compute-optimal points"]
    notes += [f"left out C = {c:.3g}: {why}" if isinstance(c, float) else f"left out {c}: {why}"
              for c, why in fit.excluded[:10]]
    if boot is not None:
        notes.append("bootstrap: " + boot.note())
    else:
        notes.append(f"no intervals: {why_none}")
    return _outcome(decl.label, kind, rows, notes, fit.optima, src,
                    {"method": decl.method, "n": decl.n, "d": decl.d, "c": decl.c, "y": decl.y,
                     "budget": decl.budget, "bootstrap": n_boot, "level": decl.level,
                     # the allocation figure redraws the frontier from the same runs (report/figures.py)
                     "keep_above_uniform": decl.keep_above_uniform,
                     "coefficients": {"G_N": fit.coefficients[0], "G_D": fit.coefficients[1]},
                     **{k: v for k, v in fit.settings.items() if k != "excluded_rows"}})


def _interval(ci: tuple[float, float]) -> tuple[float | None, float | None]:
    return (None, None) if not np.all(np.isfinite(ci)) else ci


def _shared_draw_note(data: pd.DataFrame) -> list[str]:
    """Runs of one data seed share the teacher and samples: their ratios move together."""
    if "data_seed" not in data or data["data_seed"].nunique() != 1 or len(data) < 2:
        return []
    return [f"all runs share one teacher and sample draw (data_seed = {data['data_seed'].iloc[0]}): the "
            "interval is the spread across runs of that draw, not over teachers; the theory is an average "
            "over draws, so sweep data.seed to compare with it"]


def agreement_outcome(decl: TheoryAgreementDecl, src: Source, *, n_boot: int, seed: int) -> ComparisonOutcome:
    """Median measured/predicted loss over runs; runs without a prediction are named, not dropped."""
    fit = theory_agreement(src.data, y=decl.y, reference=decl.reference, n_boot=n_boot, seed=seed,
                           level=decl.level)
    worst = fit.worst
    outside = abs(fit.median - 1) > decl.tolerance
    rows = [_row(decl.name, decl.kind, f"median {decl.y} / {decl.reference}", fit.median,
                 *_interval(fit.interval),
                 f"outside 1 ± {decl.tolerance:g}: measured and theory disagree" if outside else ""),
            _row(decl.name, decl.kind, "runs compared", len(fit.compared),
                 flag=f"{len(fit.missing)} without a prediction (see notes)" if len(fit.missing) else ""),
            _row(decl.name, decl.kind, "largest |ratio - 1|", abs(worst["ratio"] - 1))]
    how = (f"median with a {decl.level:.0%} percentile bootstrap over runs ({n_boot} resamples)" if n_boot >= 2
           else "no interval (bootstrap 0)")
    notes = [f"ratio = {decl.y} / {decl.reference} per run; {how}; flagged outside 1 ± {decl.tolerance:g} "
             f"(Maloney, Roberts & Sully 2022: ~5% agreement)",
             f"largest deviation: {worst['label']} (ratio {worst['ratio']:.3g})"]
    for why, group in fit.missing.groupby("why", sort=False):
        names = group["label"].tolist()
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        notes.append(f"{len(names)} run(s) not compared, {why}: {shown}")
    notes += _shared_draw_note(src.data)
    detail = pd.concat([fit.compared, fit.missing], ignore_index=True)
    return _outcome(decl.name, decl.kind, rows, notes, detail, src,
                    {"y": decl.y, "reference": decl.reference, "tolerance": decl.tolerance,
                     "bootstrap": n_boot, "level": decl.level})


def symmetry_outcome(decl: SymmetryDecl, src: Source, *, n_boot: int, seed: int) -> ComparisonOutcome:
    """Median L(a=x, b=y) / L(a=y, b=x) over mirrored pairs, x < y; flagged when 1 is outside its interval."""
    fit = nt_symmetry(src.data, a=decl.a, b=decl.b, y=decl.y, by=decl.group_by, n_boot=n_boot, seed=seed,
                      level=decl.level)
    lo, hi = _interval(fit.ratio_interval)
    broken = lo is not None and hi is not None and not lo <= 1 <= hi
    pair = f"{decl.y}({decl.a}=x, {decl.b}=y) / {decl.y}({decl.a}=y, {decl.b}=x), x < y"
    rows = [_row(decl.name, decl.kind, f"median {pair}", fit.median_ratio, lo, hi,
                 "interval excludes 1: not symmetric" if broken else ""),
            _row(decl.name, decl.kind, "median |log ratio|", fit.median_abs_log, *_interval(fit.abs_log_interval)),
            _row(decl.name, decl.kind, "mirrored pairs", len(fit.pairs),
                 flag=f"only {len(fit.pairs)} pairs" if len(fit.pairs) < 3 else "")]
    n_seeds = int(max(fit.pairs["runs_xy"].max(), fit.pairs["runs_yx"].max()))
    notes = [f"pairs of cells ({decl.a}, {decl.b}) = (x, y) and (y, x), x != y"
             + (f", within each {', '.join(decl.group_by)}" if decl.group_by else "")
             + (f"; runs of one cell averaged (up to {n_seeds})" if n_seeds > 1 else "")
             + (f"; {decl.level:.0%} percentile bootstrap over pairs ({n_boot} resamples)" if n_boot >= 2
                else "; no interval: bootstrap 0")]
    if fit.unpaired:
        notes.append(f"{fit.unpaired} off-diagonal cell(s) have no mirror image and are not compared")
    notes += _shared_draw_note(src.data)
    return _outcome(decl.name, decl.kind, rows, notes, fit.pairs, src,
                    {"a": decl.a, "b": decl.b, "y": decl.y, "group_by": decl.group_by, "bootstrap": n_boot,
                     "level": decl.level})


def _source(ws: Workspace, experiment: str, experiments: Sequence[str], query: str, sql: str | None,
            params: dict[str, Any], extra: Sequence[str] = (), keep_above_uniform: bool = False) -> Source:
    exps = tuple(experiments) or (experiment,)
    data, text = fetch_rows(ws, None if sql else query, sql, dict(params), exps, extra)
    if data.empty:
        raise FitError(f"{query or 'sql'}: no rows for experiment(s) {', '.join(exps)}. "
                           f"Have the runs finished and been ingested?")
    ids = tuple(data["run_id"].astype(str)) if "run_id" in data.columns else ()
    kept, excluded = (data, ()) if keep_above_uniform else split_above_uniform(data)
    if kept.empty:
        raise FitError(f"{query or 'sql'}: every run's final loss is above the uniform guess ln(vocab_size) "
                       f"({len(excluded)} runs; first: {excluded[0][1]}). Train longer or check the learning "
                       f"rate, or analyse them anyway with keep_above_uniform: true (--keep-above-uniform).")
    return Source(experiment, tuple(experiments), None if sql else query, text, kept, ids,
                  tuple((str(run), why) for run, why in excluded))


def run_comparison(ws: Workspace, decl: ComparisonDecl, experiment: str, experiments: Sequence[str] = (),
                   *, bootstrap_n: int | None = None, seed: int = 0, n_jobs: int = 1,
                   sql: str | None = None) -> ComparisonOutcome:
    """Fetch a comparison's rows (all `experiments`, or `experiment`'s own) and compute it."""
    extra = [*getattr(decl, "group_by", []), getattr(decl, "by", ""), getattr(decl, "width", ""),
             getattr(decl, "a", ""), getattr(decl, "b", "")]
    src = _source(ws, experiment, experiments, decl.query, sql, decl.params, extra, decl.keep_above_uniform)
    if isinstance(decl, LrOptimumDecl):
        return lr_optimum_outcome(decl, src)
    if isinstance(decl, LrTransferDecl):
        return lr_transfer_outcome(decl, src)
    if isinstance(decl, (TheoryAgreementDecl, SymmetryDecl)):
        n_boot = decl.bootstrap if bootstrap_n is None else bootstrap_n  # < 2: no interval
        if isinstance(decl, TheoryAgreementDecl):
            return agreement_outcome(decl, src, n_boot=n_boot, seed=seed)
        return symmetry_outcome(decl, src, n_boot=n_boot, seed=seed)
    n_boot = decl.bootstrap if bootstrap_n is None else bootstrap_n
    return efficiency_outcome(decl, src, n_boot=n_boot, seed=seed, n_jobs=n_jobs)


def run_frontier(ws: Workspace, decl: FrontierDecl, experiment: str, experiments: Sequence[str] = (),
                 *, bootstrap_n: int | None = None, seed: int = 0, n_jobs: int = 1,
                 sql: str | None = None) -> ComparisonOutcome:
    """Fetch a frontier's rows (final points for isoflop, checkpoints otherwise) and fit it."""
    query = decl.query or ("final_loss" if decl.method == "isoflop" else "loss_curves")
    src = _source(ws, experiment, experiments, query, sql, decl.params, [decl.budget or ""],
                  decl.keep_above_uniform)
    n_boot = decl.bootstrap if bootstrap_n is None else bootstrap_n
    return frontier_outcome(decl, src, n_boot=n_boot, seed=seed, n_jobs=n_jobs)


@dataclass(frozen=True)
class AnalysisRun:
    """Every declared analysis's stored outcome, and why any failed (by name)."""

    outcomes: list[Outcome]
    errors: dict[str, str]


def run_analysis(ws: Workspace, experiment: str, analysis: AnalysisSpec, *, bootstrap_n: int | None = None,
                 seed: int = 0, n_jobs: int = 1, only: Sequence[str] = (), store: bool = True,
                 keep_above_uniform: bool = False) -> AnalysisRun:
    """Run a spec's fits, comparisons and frontiers and store each; one failing keeps the others.

    `keep_above_uniform` uses every declared analysis's runs above the uniform-guess loss too."""
    outcomes: list[Outcome] = []
    errors: dict[str, str] = {}
    exps = tuple(analysis.experiments)
    if keep_above_uniform:
        keep_all = {"keep_above_uniform": True}
        analysis = analysis.model_copy(update={
            "fits": [d.model_copy(update=keep_all) for d in analysis.fits],
            "comparisons": [d.model_copy(update=keep_all) for d in analysis.comparisons],
            "frontiers": [d.model_copy(update=keep_all) for d in analysis.frontiers]})

    def keep(name: str, work) -> None:
        if only and name not in only:
            return
        try:
            done = work()
        except ScaledbError as exc:  # e.g. too few runs yet: report it, carry on with the rest
            errors[name] = str(exc)
            return
        outcomes.extend(store_outcome(ws, o) if store else o for o in (done if isinstance(done, list) else [done]))

    for decl in analysis.fits:
        req = FitRequest.from_decl(decl, experiment, exps)
        if bootstrap_n is not None:
            req = FitRequest(**{**req.__dict__, "bootstrap": bootstrap_n})
        # An ungrouped fit over unchanged rows reuses its earlier outcome (report/cache.py).
        keep(decl.name, lambda req=req: fit_grouped(ws, req, seed=seed, n_jobs=n_jobs) if req.group_by
             else [cached_fit(ws, req, seed=seed, n_jobs=n_jobs)])
    for comp in analysis.comparisons:
        keep(comp.name, lambda comp=comp: run_comparison(ws, comp, experiment, exps, bootstrap_n=bootstrap_n,
                                                         seed=seed, n_jobs=n_jobs))
    for front in analysis.frontiers:
        keep(front.label, lambda front=front: run_frontier(ws, front, experiment, exps, bootstrap_n=bootstrap_n,
                                                           seed=seed, n_jobs=n_jobs))
    return AnalysisRun(outcomes, errors)
