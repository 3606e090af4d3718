"""Figures from the database: each plot kind's query, fit and chart, glued together.

`scaling_db.plot` draws charts from DataFrames and knows nothing of the store; this module
knows which named query (and which stored fit) feeds each kind, so `scaledb plot KIND` and the
report build the same figure the same way. `--query` replaces a kind's default data source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from scaling_db import plot
from scaling_db.report.analyses import (
    Excluded, fetch_rows, fmt_interval, load_stored_fit, make_fit_fn, split_above_uniform,
)
from scaling_db.errors import FitError, PlotError
from scaling_db.fit import (
    compare_frontiers,
    fit_lr_transfer,
    fit_saturating_power_law,
    frontier_envelope,
    frontier_isoflop,
    frontier_surface,
    window_sensitivity,
)
from scaling_db.fit.frontier import final_rows, frontier_fn, isoflop_minima
from scaling_db.fit.mup import fit_lr_optima
from scaling_db.store.query import run_query
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class FigureRequest:
    kind: str
    experiment: str
    fit: str | None = None
    query: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    x: str | None = None
    title: str | None = None
    experiments: tuple[str, ...] = ()  # draw the runs of these experiments together
    width: str | None = None  # "column" (3.25 in) or "page" (6.75 in): the paper theme at that width
    param: str | None = None  # fit_parameters: the fitted parameter to draw (default: the law's exponent)
    # isoflop, optimal_allocation: draw (and fit here) the runs above the uniform guess too
    keep_above_uniform: bool = False


#: A sweep variable naming the parameterization variant (specs/mup_vs_sp.yaml): where runs have
#: it, muP-vs-SP figures draw one series per variant instead of per `parameterization` kind.
VARIANT = "vars.variant"


def _query(ws: Workspace, req: FigureRequest, default: str, **extra: Any) -> pd.DataFrame:
    params = {**extra, **req.params}
    exps = list(req.experiments) or [req.experiment]
    df, _ = fetch_rows(ws, req.query or default, None, params, exps, optional_columns=[VARIANT])
    if VARIANT in df.columns and "parameterization" in df.columns:
        df = df.assign(parameterization=df[VARIANT].fillna(df["parameterization"]).astype(str))
    if df.empty:
        raise PlotError(f"{req.kind}: query {req.query or default} returned no rows for experiment(s) "
                        f"{', '.join(exps)}. Have the runs finished and been ingested?")
    return df


def _true_floor(ws: Workspace, df: pd.DataFrame) -> float | None:
    """The source's exact entropy rate when every run shares one (graph walks, bigrams)."""
    if "entropy_rate" in df:
        values = df["entropy_rate"].dropna().unique()
    else:
        ids = sorted({str(r) for r in df["run_id"]})
        values = run_query(ws, sql="SELECT DISTINCT entropy_rate FROM runs WHERE list_contains($ids, run_id) "
                                   "AND entropy_rate IS NOT NULL", params={"ids": ids})["entropy_rate"].to_numpy()
    return float(values[0]) if len(values) == 1 and values[0] > 0 else None


def _loss_curves(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "loss_curves")
    size = "n_params_nonembed" if "n_params_nonembed" in df and df["n_params_nonembed"].gt(0).all() else "n_params"
    return plot.loss_curves(df, x=req.x or "tokens", color=size, floor=_true_floor(ws, df),
                            title=req.title or f"{req.experiment}: loss curves")


def _scaling_fit(ws: Workspace, req: FigureRequest) -> alt.Chart:
    if req.fit is None:
        raise PlotError("scaling_fit: name the stored fit to draw (--fit NAME, or `fit:` in the spec's plot)")
    group_by, order = None, None
    try:
        records = [{k: _json_field(v) for k, v in load_stored_fit(ws, req.experiment, req.fit).items()}]
    except FitError as missing:
        try:  # a fit declared with group_by is stored as one fit per group: draw them all
            groups = load_stored_groups(ws, req.experiment, req.fit)
        except PlotError:
            raise missing from None
        group_by, order = groups.group_by, [str(v) for v in groups.order if str(v) in groups.records]
        records = [groups.records[v] for v in order]
    first = records[0]
    if not (first.get("extra") or {}).get("curve"):
        raise PlotError(f"scaling_fit: fit {req.fit!r} has no one-input curve to draw (law {first['law']}).")
    x = (first.get("columns") or {}).get("x", "n_params")
    y = first.get("y") or "loss"
    data = _fit_rows(ws, req, first)
    points, curves, formulas = [], [], []
    for rec in records:
        extra = rec.get("extra") or {}
        value = str(extra.get("group_value")) if group_by else None
        points.append(_fitted_points(data, rec).assign(**({group_by: value} if group_by else {})))
        curves.append(pd.DataFrame(extra["curve"]).assign(**({group_by: value} if group_by else {})))
        formula = _formula(rec["law"], rec["params"], x)
        formulas.append(f"{value}: {formula}" if group_by else formula)
    floors = {(r.get("extra") or {}).get("true_floor") for r in records}
    floor = floors.pop() if len(floors) == 1 else None
    if len(floors) > 1 or (group_by and None in floors and floor is None):
        formulas.append("exact entropy rates differ by group: not drawn")
    return plot.scaling_fit(pd.concat(points, ignore_index=True), pd.concat(curves, ignore_index=True), formulas,
                            x=x, y=y, floor=floor, floor_label="entropy rate (exact)", group=group_by,
                            group_order=order, title=req.title or f"{req.experiment}: {req.fit}")


def _fit_rows(ws: Workspace, req: FigureRequest, rec: dict[str, Any]) -> pd.DataFrame:
    """The rows the stored fit's query returns now, over the experiments it was fitted on, with the
    parameters it was fitted with (a FLOPs convention moves every point), then the request's."""
    extra = rec.get("extra") or {}
    exps = extra.get("experiments") or [rec.get("experiment") or req.experiment]
    query, sql = (rec["query_name"], None) if rec.get("query_name") else (None, rec["query_sql"])
    params = {k: v for k, v in (rec.get("query_params") or {}).items() if k != "experiment"}
    data, _ = fetch_rows(ws, query, sql, {**params, **req.params}, exps)
    return data


def _fitted_points(data: pd.DataFrame, rec: dict[str, Any]) -> pd.DataFrame:
    """The points a stored fit used (its `used` run ids; best-per fits keep only those), and those it
    excluded (marked `excluded`); every row when the data has no run ids."""
    used = {str(i) for i in (rec.get("extra") or {}).get("used") or rec.get("run_ids") or []}
    excluded = {str(i) for i, _ in rec.get("excluded") or []}
    if "run_id" not in data or not used:
        return data
    ids = data["run_id"].astype(str)
    return data[ids.isin(used | excluded)].assign(excluded=ids.isin(excluded))


def _json_field(value: Any) -> Any:
    """DuckDB returns JSON columns as text; the stored fit's nested fields as Python values."""
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value


def _formula(law: str, p: dict[str, float], x: str) -> str:
    if law == "saturating_power_law":
        return f"L = {p['E']:.3g} + {p['A']:.3g}·{x}^-{p['alpha']:.3g}"
    if law == "power_law":
        return f"L = {p['A']:.3g}·{x}^-{p['alpha']:.3g}"
    return law + ": " + ", ".join(f"{k}={v:.3g}" for k, v in p.items())


#: The exponent of each law, drawn by fit_parameters unless the request names another parameter.
EXPONENTS = ("alpha", "alpha_N", "k")


@dataclass(frozen=True)
class StoredGroups:
    """The newest stored fits of a grouped fit: the column, every group in order, each fitted one's record."""

    group_by: str
    order: list[Any]
    records: dict[str, dict[str, Any]]  # str(value) -> the stored record (JSON fields decoded)
    failed: dict[str, str]  # str(value) -> why that group has no fit


def load_stored_groups(ws: Workspace, experiment: str, name: str) -> StoredGroups:
    """The groups of the grouped fit `name` as last stored: which fitted (their records) and which not."""
    rows = run_query(ws, sql="SELECT * FROM fits WHERE experiment = $e AND starts_with(name, $prefix) "
                             "ORDER BY created_at DESC, fit_id", params={"e": experiment, "prefix": f"{name}["})
    recs = [{k: _json_field(v) for k, v in r.items()} for r in rows.to_dict(orient="records")]
    recs = [r for r in recs if (r.get("extra") or {}).get("group_by")]
    if not recs:
        raise PlotError(f"no stored grouped fit {name!r} for experiment {experiment!r} (a fit declared with "
                        f"group_by). Run `scaledb fit` (or `scaledb reproduce`) on the spec first.")
    newest = recs[0]["extra"]
    if "groups" not in newest:
        raise PlotError(f"grouped fit {name!r} was stored by an older scaledb without its list of groups. "
                        f"Run `scaledb fit` on the spec again.")
    by_value: dict[str, dict[str, Any]] = {}
    for r in recs:  # newest first: the first record of each group wins
        by_value.setdefault(str(r["extra"].get("group_value")), r)
    order = [g["value"] for g in newest["groups"]]
    failed = {str(g["value"]): g["error"] for g in newest["groups"] if g["error"]}
    records = {str(v): by_value[str(v)] for v in order if str(v) not in failed and str(v) in by_value}
    failed.update({str(v): "no stored fit" for v in order if str(v) not in failed and str(v) not in records})
    return StoredGroups(newest["group_by"], order, records, failed)


def _fit_parameters(ws: Workspace, req: FigureRequest) -> alt.Chart:
    if req.fit is None:
        raise PlotError("fit_parameters: name the grouped fit to draw (--fit NAME, or `fit:` in the spec's plot)")
    groups = load_stored_groups(ws, req.experiment, req.fit)
    first = next(iter(groups.records.values()))
    names = list(first["params"])
    param = req.param or next((p for p in EXPONENTS if p in names), None)
    if param is None or param not in names:
        raise PlotError(f"fit_parameters: fit {req.fit!r} has no parameter {param or 'exponent'!r} (law "
                        f"{first['law']}: {', '.join(names)}). Choose one with --fit-param (or `param:`).")
    rows = []
    for value, rec in groups.records.items():
        lo, hi = ((rec.get("intervals") or {}).get(param) or [None, None])[:2]
        rows.append({"group": value, "estimate": rec["params"][param], "lo": lo, "hi": hi})
    boot = first["extra"].get("bootstrap") or {}
    level = f"{boot['level']:.0%} bootstrap interval over {boot.get('group', 'run_id')}s" if boot else "interval"
    x = (first.get("columns") or {}).get("x", "x")
    return plot.fit_parameters(pd.DataFrame(rows), parameter=param, group=groups.group_by,
                               order=[str(v) for v in groups.order], failed=groups.failed, interval_label=level,
                               explain=_formula_symbols(first["law"], x),
                               title=req.title or f"{req.experiment}: {param} of {req.fit} per {groups.group_by}")


def _formula_symbols(law: str, x: str) -> str:
    """The law in symbols with its input named, e.g. `L = E + A·N^-alpha, N = n_params_nonembed`."""
    forms = {"saturating_power_law": "L = E + A·x^-alpha", "power_law": "L = A·x^-alpha",
             "exponential": "L = A·exp(-k x)", "saturating_exponential": "L = E + A·exp(-k x)"}
    return f"{forms[law]}, x = {x}" if law in forms else law


def _compute_frontier(ws: Workspace, req: FigureRequest) -> alt.Chart:
    checkpoints = _query(ws, req, "loss_curves")
    envelope = _query(ws, FigureRequest(**{**req.__dict__, "query": None}), "compute_frontier")
    envelope = envelope[envelope["on_envelope"]] if "on_envelope" in envelope else envelope
    return plot.compute_frontier(checkpoints, envelope, title=req.title or f"{req.experiment}: compute frontier")


def _isoflop(ws: Workspace, req: FigureRequest) -> alt.Chart:
    """The slices without the runs that learned nothing (as the IsoFLOP frontier leaves them out),
    and each budget's minimum where the frontier takes it: the vertex of its parabola."""
    df, above = _learned(_query(ws, req, "isoflop").rename(columns={"budget": "flop_budget"}), req)
    if df.empty:
        raise _all_above_uniform("isoflop", above, "slice")
    left_out = _left_out_note({str(run) for run, _ in above})
    notes = [left_out] if left_out else []
    try:
        optima, no_minimum = isoflop_minima(df, budget="flop_budget")
    except FitError as err:  # fewer than 3 usable runs in all
        raise PlotError(f"isoflop: {err}") from None
    minima = optima.rename(columns={"flops": "flop_budget", "n_opt": "n_params", "loss_opt": "loss"})
    notes += [f"no minimum at {c:.3g} FLOPs: {why}" for c, why in no_minimum]
    marked = ("diamonds: minimum of each budget's parabola (the IsoFLOP frontier's N_opt)" if not minima.empty
              else "no budget's parabola has its minimum inside its sizes: no N_opt to mark")
    return plot.isoflop(df, minima, title=req.title or f"{req.experiment}: IsoFLOP slices",
                        subtitle=[marked, *notes])


def _stored_frontier_rows(ws: Workspace, req: FigureRequest) -> tuple[list[dict[str, Any]], set[str], list[str]]:
    """The frontiers the experiment's analysis stored, redrawn from the same rows and settings, and
    labelled with the stored exponents and intervals, so the figure and the fits table agree; the
    runs left out of them above the uniform-guess loss; and why a stored one could not be redrawn."""
    stored = run_query(ws, sql="SELECT * FROM fits WHERE experiment = $e AND law LIKE 'frontier_%' "
                              "QUALIFY row_number() OVER (PARTITION BY name ORDER BY created_at DESC) = 1 "
                              "ORDER BY name", params={"e": req.experiment})
    rows: list[dict[str, Any]] = []
    left_out: set[str] = set()
    not_drawn: list[str] = []
    for _, rec in stored.iterrows():
        settings, extra = _json_field(rec["settings"]) or {}, _json_field(rec["extra"]) or {}
        method = settings.get("method")
        params = {k: v for k, v in (_json_field(rec["query_params"]) or {}).items() if k != "experiment"}
        budget = settings.get("budget")
        data, _ = fetch_rows(ws, rec["query_name"], None if rec["query_name"] else rec["query_sql"], params,
                             extra.get("experiments") or [req.experiment], [budget or ""])
        data, above = (data, ()) if settings.get("keep_above_uniform") else split_above_uniform(data)
        if method == "isoflop":
            data = final_rows(data, c=settings.get("c", "flops"))
        try:
            fit = frontier_fn(method, n=settings.get("n", "n_params"), d=settings.get("d", "tokens"),
                              c=settings.get("c", "flops"), y=settings.get("y", "loss"), budget=budget)(data)
        except FitError as err:
            not_drawn.append(_not_drawn(method, err))
            continue
        key = next((k for k in (_json_field(rec["params"]) or {}) if k.startswith("a ")), None)
        ci = (_json_field(rec["intervals"]) or {}).get(key) if key else None
        label = f"{method}: a = {fit.a:.2g}" + (f" {fmt_interval(*ci)}" if ci else " (no interval)")
        # the parametric frontier is a formula, not points: drawn over the compute the runs span
        span = data[settings.get("c", "flops")] if method == "parametric" else None
        rows += _allocation_rows(method, fit, label, span)
        left_out |= {str(run) for run, _ in above}
    return rows, left_out, not_drawn


def _not_drawn(method: str, err: FitError) -> str:
    return f"{method} not drawn: {str(err).split('. ')[0]}"


def _allocation_rows(method: str, fit: Any, label: str, span: pd.Series | None = None) -> list[dict[str, Any]]:
    rows = [] if span is not None else [
        {"approach": method, "flops": o["flops"], "n_opt": o["n_opt"], "d_opt": o["d_opt"], "kind": "point",
         "label": label} for _, o in fit.optima.iterrows()]
    lo, hi = (span.min(), span.max()) if span is not None else (fit.optima["flops"].min(), fit.optima["flops"].max())
    grid = np.geomspace(lo, hi, 30)
    rows += [{"approach": method, "flops": c, "n_opt": n, "d_opt": d, "kind": "curve", "label": label}
             for c, n, d in zip(grid, fit.n_opt(grid), fit.d_opt(grid))]
    return rows


def _learned(df: pd.DataFrame, req: FigureRequest) -> tuple[pd.DataFrame, Excluded]:
    """The rows of runs that learned something, and the runs left out; every row if the request keeps them."""
    return (df, ()) if req.keep_above_uniform else split_above_uniform(df)


def _all_above_uniform(chart: str, above: Excluded, what: str) -> PlotError:
    return PlotError(f"{chart}: every run's final loss is above the uniform guess ln(vocab_size) ({len(above)} "
                     f"runs; first: {above[0][1]}): no {what} to draw. Train longer or check the learning rate.")


def _left_out_note(runs: set[str]) -> str | None:
    return (f"{len(runs)} run(s) above the uniform guess ln(vocab_size) left out: they learned nothing"
            if runs else None)


def _optimal_allocation(ws: Workspace, req: FigureRequest) -> alt.Chart:
    # a query of the figure's own, or every run kept, is fitted here: stored frontiers used neither
    stored = _stored_frontier_rows(ws, req) if not (req.query or req.keep_above_uniform) else ([], set(), [])
    rows, left_out, not_drawn = stored
    if rows:
        return plot.optimal_allocation(pd.DataFrame(rows), paper=req.width,
                                       notes=[n for n in (_left_out_note(left_out), *not_drawn) if n],
                                       title=req.title or f"{req.experiment}: compute-optimal allocation")
    # no stored frontier: fit them here, leaving out runs that learned nothing as the analysis does
    checkpoints, above = _learned(_query(ws, req, "loss_curves"), req)
    if checkpoints.empty:
        raise _all_above_uniform("optimal_allocation", above, "frontier")
    checkpoints = checkpoints[checkpoints["tokens"] > 0]
    final = checkpoints.sort_values("step").groupby("run_id").tail(1)
    summary = compare_frontiers(checkpoints, final=final, methods=("envelope", "surface"), n_boot=50, n_jobs=1)
    rows, not_drawn = [], []
    builders = {"envelope": lambda: frontier_envelope(checkpoints),
                "surface": lambda: frontier_surface(checkpoints),
                "isoflop": lambda: frontier_isoflop(final)}
    for method, build in builders.items():
        try:
            fit = build()
        except FitError as err:
            not_drawn.append(_not_drawn(method, err))
            continue
        label = method
        hit = summary[summary["method"] == method] if "method" in summary else pd.DataFrame()
        if not hit.empty and np.isfinite(hit["a"].iloc[0]):
            r = hit.iloc[0]
            label = f"{method}: a = {r['a']:.2g} {fmt_interval(r['a_lo'], r['a_hi'])}"
        rows += _allocation_rows(method, fit, label)
    if not rows:
        raise PlotError(f"optimal_allocation: no frontier method could be fitted ({'; '.join(not_drawn)})")
    left = _left_out_note({str(run) for run, _ in above})
    return plot.optimal_allocation(pd.DataFrame(rows), paper=req.width, notes=[n for n in (left, *not_drawn) if n],
                                   title=req.title or f"{req.experiment}: compute-optimal allocation")


def _lr_sweep(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "final_loss")
    return plot.lr_sweep(df, paper=req.width, title=req.title or f"{req.experiment}: loss vs learning rate")


def _optimal_lr(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "final_loss")
    table = fit_lr_optima(df, by=["parameterization", "d_model"])
    table = table[np.isfinite(table["lr_opt"])]
    if table.empty:
        raise PlotError("optimal_lr: no width has enough learning rates to locate an optimum (need 3)")
    edge = table["flag"].str.startswith("edge")
    table = table.assign(edge=edge, lr_lo=table["lr_lo"].where(~edge), lr_hi=table["lr_hi"].where(~edge))
    slopes = fit_lr_transfer(df, width="d_model").slopes
    labels = {}
    for _, s in slopes.iterrows():
        name = {"sp": "SP", "mup": "µP"}.get(str(s["parameterization"]), str(s["parameterization"]))
        labels[s["parameterization"]] = f"{name}: slope {s['slope']:.2g} {fmt_interval(s['slope_lo'], s['slope_hi'])}"
    if labels:
        table = table.assign(label=[labels.get(p, p) for p in table["parameterization"]])
    return plot.optimal_lr(table, title=req.title or f"{req.experiment}: optimal learning rate")


def _mup_vs_sp(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "final_loss")
    x = req.x or "n_params_nonembed"
    # every run is drawn (faint) and a line joins the best run (best LR) of each width
    return plot.loss_vs_params_by_param(df, x=x, title=req.title or f"{req.experiment}: muP vs SP")


def _coordcheck(ws: Workspace, req: FigureRequest) -> alt.Chart:
    experiment = req.experiment if req.experiment.endswith("-coordcheck") else f"{req.experiment}-coordcheck"
    df = _query(ws, FigureRequest(**{**req.__dict__, "experiment": experiment, "experiments": ()}),
                "coordcheck")
    return plot.coordcheck(df, paper=req.width, title=req.title or f"{req.experiment}: coordinate check")


def _window_sensitivity(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "final_loss")
    x = req.x or "n_params"
    windows = window_sensitivity(make_fit_fn("saturating_power_law", [x], "loss"), df, scale=x)
    table = windows.table.rename(columns={"alpha": "exponent"})
    # short labels (the axis title names the column): "drop 2 smallest, 1 largest"
    table["window"] = [f"drop {k} smallest, {m} largest" for k, m in zip(table["drop_smallest"], table["drop_largest"])]
    full = fit_saturating_power_law(df, x=x, y="loss")
    lo, hi = full.intervals.get("alpha", (np.nan, np.nan))
    return plot.window_sensitivity(table, bootstrap=(lo, hi) if np.isfinite(lo) else None, paper=req.width,
                                   window_title=f"sizes of {plot.label(x)} fitted",
                                   title=req.title or f"{req.experiment}: fit-window sensitivity of alpha")


def _theory_curves(ws: Workspace, req: FigureRequest) -> alt.Chart:
    df = _query(ws, req, "theory_loss")
    x = req.x or "n_features"
    return plot.theory_curves(df, _theory_grid(ws, df) if x == "n_features" else None, x=x,
                              title=req.title or f"{req.experiment}: test loss vs random features")


def _theory_grid(ws: Workspace, df: pd.DataFrame, points: int = 60) -> pd.DataFrame | None:
    """The deterministic equivalent on a fine grid of N for each T that has a theory value, when
    those runs share one data distribution (seeds aside); else None (lines join the runs' values)."""
    from scaling_db.sources.random_features import deterministic_equivalent_loss, spectrum
    from scaling_db.spec.data import RandomFeaturesData

    have = df[df["theory_loss"].notna()]
    if have.empty:
        return None
    found = run_query(ws, sql="SELECT DISTINCT manifest->>'$.data' AS data FROM runs WHERE list_contains($ids, run_id)",
                      params={"ids": sorted({str(r) for r in have["run_id"]})})
    configs = {json.dumps({k: v for k, v in json.loads(d).items() if k != "seed"}, sort_keys=True)
               for d in found["data"]}
    if len(configs) != 1:
        return None
    data = RandomFeaturesData.model_validate(json.loads(configs.pop()))
    lam = spectrum(data)
    grid = np.unique(np.geomspace(df["n_features"].min(), df["n_features"].max(), points).round().astype(int))
    cap = 2 * float(df["loss"].max())  # the curve runs up to the highest measured point, not to infinity
    rows = []
    for t in sorted(have["samples"].unique()):
        near = np.round(t * (1 + np.array([-1, 1])[:, None] * np.geomspace(0.005, 0.3, 12))).ravel()
        for n in np.unique(np.concatenate([grid, near[(near >= grid[0]) & (near <= grid[-1])]])):
            v = deterministic_equivalent_loss(lam, data.sigma_w, int(n), int(t))
            if 0 < v < cap:
                rows.append({"n_features": int(n), "samples": int(t), "theory_loss": v})
    return pd.DataFrame(rows) if rows else None


BUILDERS = {
    "loss_curves": _loss_curves,
    "scaling_fit": _scaling_fit,
    "compute_frontier": _compute_frontier,
    "isoflop": _isoflop,
    "optimal_allocation": _optimal_allocation,
    "lr_sweep": _lr_sweep,
    "optimal_lr": _optimal_lr,
    "mup_vs_sp": _mup_vs_sp,
    "coordcheck": _coordcheck,
    "window_sensitivity": _window_sensitivity,
    "theory_curves": _theory_curves,
    "fit_parameters": _fit_parameters,
}


#: Kinds that check the numbers rather than present them: the report shows them in a
#: separate, labelled "Diagnostics" section.
DIAGNOSTIC_KINDS = frozenset({"coordcheck", "window_sensitivity"})


def build_figure(ws: Workspace, req: FigureRequest) -> alt.Chart:
    """The chart of `req.kind` for an experiment, from its queries and stored fits; with
    `req.width` ("column" or "page") styled for a journal at that width."""
    try:
        builder = BUILDERS[req.kind]
    except KeyError:
        raise PlotError(f"unknown plot kind {req.kind!r} (kinds: {', '.join(BUILDERS)})") from None
    if req.width is not None and req.width not in plot.PAPER_WIDTHS:
        raise PlotError(f"{req.kind}: unknown width ({req.width!r} vs one of {', '.join(plot.PAPER_WIDTHS)}). "
                        f"Use column (3.25 in) or page (6.75 in).")
    chart = builder(ws, req)
    return plot.for_paper(chart, req.width) if req.width else chart

