"""Compute-optimal frontiers: the checkpoint envelope, IsoFLOP slices, N_opt(C) and D_opt(C)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from scaling_db.plot._frame import (PADDING, axis_format, finite_positive, has_values, inline,
                                    log_x, log_y, require, size_color, thin_log)
from scaling_db.plot.theme import INK, OKABE_ITO, SEQUENTIAL, apply_theme, label, panel_height, panel_width


def compute_frontier(checkpoints_df: pd.DataFrame, envelope_df: pd.DataFrame, *,
                     x: str = "flops", y: str = "loss", color: str | None = "n_params",
                     max_points_per_run: int | None = 200,
                     title: str | None = None) -> alt.LayerChart:
    """Every checkpoint's loss vs compute (faint, one line per run) under its lower envelope.

    `checkpoints_df`: `run_id`, `x`, `y`, and `color` if given (default `n_params`; None for grey).
    `envelope_df`: the frontier (Chinchilla approach 1), columns `x`, `y`; optional `n_params`
    and `tokens` of the run that reaches it (tooltip).
    """
    chart = "compute_frontier"
    need = ["run_id", x, y] + ([color] if color else [])
    ck = require(chart, checkpoints_df, need, what="checkpoints frame")
    env = require(chart, envelope_df, [x, y], what="envelope frame")
    ck = thin_log(finite_positive(chart, ck, [x, y], what="checkpoints frame"), "run_id", x,
                  max_points_per_run)
    env = finite_positive(chart, env, [x, y], what="envelope frame").sort_values(x)
    xe = log_x(x, extent=[ck[x], env[x]])
    ye = log_y(y, extent=[ck[y], env[y]])

    if color:
        runs = alt.Chart(inline(ck[["run_id", x, y, color]])).mark_line(
            strokeWidth=1, opacity=0.4).encode(x=xe, y=ye, color=size_color(ck[color], color),
                                               detail="run_id:N")
    else:
        runs = alt.Chart(inline(ck[["run_id", x, y]])).mark_line(
            strokeWidth=1, opacity=0.4, color="#999999").encode(x=xe, y=ye, detail="run_id:N")
    tip = [alt.Tooltip(f"{x}:Q", format=".3~e"), alt.Tooltip(f"{y}:Q", format=".4f")] + [
        alt.Tooltip(f"{c}:Q", format=".3~s") for c in ("n_params", "tokens") if c in env]
    keep = [x, y] + [c for c in ("n_params", "tokens") if c in env]
    envelope = alt.Chart(inline(env[keep])).mark_line(
        color=INK, strokeWidth=2.4, point=alt.OverlayMarkDef(color=INK, size=14)).encode(
        x=xe, y=ye, tooltip=tip)
    return apply_theme(alt.layer(runs, envelope).properties(title=alt.Title(
        title or "Compute frontier",
        subtitle=f"{ck['run_id'].nunique()} runs (faint); black: lowest loss at each compute")))


def _parabolas(slices: pd.DataFrame, x: str, y: str, n: int = 60) -> pd.DataFrame:
    """For display only: a quadratic in ln(x) through each budget's slice (>= 3 points)."""
    rows = []
    for budget, g in slices.groupby("flop_budget", sort=True):
        if g[x].nunique() < 3:
            continue
        lx = np.log(g[x].to_numpy(dtype=float))
        coef = np.polyfit(lx, g[y].to_numpy(dtype=float), 2)
        grid = np.linspace(lx.min(), lx.max(), n)
        rows.append(pd.DataFrame({"flop_budget": budget, x: np.exp(grid),
                                  y: np.polyval(coef, grid)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["flop_budget", x, y])


def isoflop(slices_df: pd.DataFrame, minima_df: pd.DataFrame, curves_df: pd.DataFrame | None = None,
            *, x: str = "n_params", y: str = "loss", title: str | None = None,
            subtitle: str | list[str] = "diamonds: minimum of each budget's parabola") -> alt.LayerChart:
    """IsoFLOP slices: loss vs N per FLOP budget, a parabola through each, its minimum marked.

    `slices_df`: `flop_budget`, `x` (default `n_params`), `y` (default `loss`), one row per run.
    `minima_df`: `flop_budget`, `x`, `y` of each fitted minimum; optional `n_lo`, `n_hi` (an
    interval on the optimal N, drawn as a horizontal bar). `curves_df`: the fitted parabolas
    evaluated on a grid (`flop_budget`, `x`, `y`); when None a quadratic in log N is fitted per
    budget for display. `subtitle`: what the diamonds are, and notes (one line each).
    """
    chart = "isoflop"
    sl = require(chart, slices_df, ["flop_budget", x, y], what="slices frame")
    sl = finite_positive(chart, sl, ["flop_budget", x], what="slices frame")
    # no minimum at all (no budget's parabola bottoms out inside its sizes): the slices alone
    mn = (pd.DataFrame(columns=["flop_budget", x, y]) if minima_df.empty else
          finite_positive(chart, require(chart, minima_df, ["flop_budget", x, y], what="minima frame"),
                          ["flop_budget", x], what="minima frame"))
    cv = (_parabolas(sl, x, y) if curves_df is None else
          finite_positive(chart, require(chart, curves_df, ["flop_budget", x, y],
                                         what="curves frame"), ["flop_budget", x]))
    xe = log_x(x, extent=[sl[x], mn[x], cv[x]])
    budgets = sorted(set(sl["flop_budget"]) | set(mn["flop_budget"]) | set(cv["flop_budget"]))
    col = alt.Color("flop_budget:O", title=label("flop_budget"),
                    scale=alt.Scale(scheme=SEQUENTIAL, domain=budgets),
                    legend=alt.Legend(**axis_format("flop_budget")))
    yenc = alt.Y(f"{y}:Q", title=label(y), scale=alt.Scale(zero=False, padding=PADDING))

    layers = []
    if not cv.empty:
        layers.append(alt.Chart(inline(cv[["flop_budget", x, y]])).mark_line(
            strokeWidth=1.6).encode(x=xe, y=yenc, color=col))
    layers.append(alt.Chart(inline(sl[["flop_budget", x, y]])).mark_point(
        size=34, filled=True, opacity=0.85).encode(
        x=xe, y=yenc, color=col,
        tooltip=[alt.Tooltip("flop_budget:Q", format=".2e"), alt.Tooltip(f"{x}:Q", format=".3~s"),
                 alt.Tooltip(f"{y}:Q", format=".4f")]))
    if not mn.empty:
        layers += _minima_layers(mn, sl, cv, x, y, xe, yenc, col)
    return apply_theme(alt.layer(*layers).properties(title=alt.Title(title or "IsoFLOP slices", subtitle=subtitle)))


def _minima_layers(mn: pd.DataFrame, sl: pd.DataFrame, cv: pd.DataFrame, x: str, y: str, xe: alt.X,
                   yenc: alt.Y, col: alt.Color) -> list[alt.Chart]:
    """Each budget's minimum as a diamond, with its interval on N as a bar where there is one."""
    keep = ["flop_budget", x, y] + (["n_lo", "n_hi"] if has_values(mn, "n_lo", "n_hi") else [])
    minima = alt.Chart(inline(mn[keep]))
    layers = []
    if "n_lo" in keep:
        layers.append(minima.mark_rule(strokeWidth=2, color=INK).encode(
            x=log_x("n_lo", label(x), extent=[sl[x], mn[x], cv[x]], like=x), x2="n_hi:Q", y=yenc))
    layers.append(minima.mark_point(shape="diamond", size=130, filled=True, stroke=INK, strokeWidth=1.2).encode(
        x=xe, y=yenc, color=col,
        tooltip=[alt.Tooltip("flop_budget:Q", format=".2e"), alt.Tooltip(f"{x}:Q", title="N_opt", format=".3~s")]))
    return layers


QUANTITIES = {"n": "optimal parameters N_opt", "d": "optimal tokens D_opt"}


def _allocation_subtitle(data: pd.DataFrame) -> list[str]:
    """What the allocation figure draws, and only that: lines (bands where a law has an interval),
    points (bars where an optimum has one)."""
    has_int = data["lo"].notna() & data["hi"].notna()
    parts = []
    for is_point, mark, spread, what in ((False, "lines", "bands", "fitted laws"),
                                         (True, "points", "bars", "estimated optima")):
        rows = (data["_kind"] == "point") == is_point
        if not rows.any():
            continue
        with_int = has_int[rows].groupby(data.loc[rows, "_series"]).any()  # per series
        if with_int.all():
            parts.append(f"{mark} and {spread}: {what} with intervals")
        elif with_int.any():
            parts.append(f"{mark}: {what}; {spread}: their intervals, where computed")
        else:
            parts.append(f"{mark}: {what}")
    return parts


def _allocation_rows(chart: str, df: pd.DataFrame, x: str) -> pd.DataFrame:
    """One row per approach, compute level and quantity (N_opt, D_opt): `_series` (the legend
    entry), `_kind` (curve or point), `quantity`, `value`, `lo`, `hi`."""
    legend_field = "label" if "label" in df else "approach"
    kind = df["kind"].fillna("curve") if "kind" in df else pd.Series("curve", index=df.index)
    rows = []
    for q, name in QUANTITIES.items():
        if f"{q}_opt" not in df or not df[f"{q}_opt"].notna().any():
            continue
        part = pd.DataFrame({
            "_series": df[legend_field].astype(str), "_kind": kind.astype(str), x: df[x],
            "quantity": name, "value": df[f"{q}_opt"],
            "lo": df[f"{q}_lo"] if f"{q}_lo" in df else np.nan,
            "hi": df[f"{q}_hi"] if f"{q}_hi" in df else np.nan})
        rows.append(finite_positive(chart, part, [x, "value"], what=f"{q}_opt column"))
    return pd.concat(rows, ignore_index=True)


def optimal_allocation(frontiers_df: pd.DataFrame, *, x: str = "flops", paper: str | None = None,
                       title: str | None = None, notes: Sequence[str] = ()) -> alt.FacetChart:
    """N_opt(C) (and D_opt(C)) from each approach on shared axes, approach as colour, intervals.

    Columns: `approach`, `x` (default `flops`), `n_opt`; optional `n_lo`, `n_hi`, `d_opt`,
    `d_lo`, `d_hi`; optional `label` (the legend entry, e.g. "IsoFLOP: a = 0.49 [0.45, 0.53]")
    and `kind`: "curve" (a fitted N_opt(C) law: line and band, the default) or "point" (an
    estimated optimum, e.g. an IsoFLOP minimum: point and error bar). One panel per quantity.
    `paper` ("column" or "page"): panels sized so the whole figure fits that journal width.
    The subtitle names the marks drawn, then `notes`, one line each (e.g. which runs were left out).
    """
    chart = "optimal_allocation"
    df = require(chart, frontiers_df, ["approach", x, "n_opt"])
    df = finite_positive(chart, df, [x], what="frame")
    data = _allocation_rows(chart, df, x)
    order = list(dict.fromkeys(data["_series"]))
    col = alt.Color("_series:N", title="approach", sort=order,
                    scale=alt.Scale(domain=order, range=OKABE_ITO[:max(len(order), 1)]
                                    if len(order) <= len(OKABE_ITO) else OKABE_ITO),
                    legend=alt.Legend(orient="bottom", direction="vertical", columns=1))
    xe = log_x(x, extent=[data[x]])
    # N and D panels have their own y scales, so no shared tick list: label the decades.
    ye = log_y("value", "", like="n_params", decades=True)
    ye_lo = log_y("lo", "", like="n_params", decades=True)
    curve = alt.datum._kind != "point"
    point = alt.datum._kind == "point"
    has_int = alt.expr.isValid(alt.datum.lo) & alt.expr.isValid(alt.datum.hi)
    # The line layer comes first so the legend shows line swatches, not pale band swatches.
    layers = [
        alt.Chart().mark_line(strokeWidth=2).encode(x=xe, y=ye, color=col)
        .transform_filter(curve),
        alt.Chart().mark_area(opacity=0.15).encode(x=xe, y=ye_lo, y2="hi:Q", color=col)
        .transform_filter(curve).transform_filter(has_int),
        alt.Chart().mark_rule(strokeWidth=1.6).encode(x=xe, y=ye_lo, y2="hi:Q", color=col)
        .transform_filter(point).transform_filter(has_int),
        alt.Chart().mark_point(size=50, filled=True).encode(
            x=xe, y=ye, color=col, tooltip=["_series:N", alt.Tooltip(f"{x}:Q", format=".2e"),
                                            alt.Tooltip("value:Q", format=".3~s")])
        .transform_filter(point),
    ]
    # One journal column is too narrow for two panels with their own y axes: stack them there.
    across = 1 if paper == "column" else data["quantity"].nunique()
    panel = panel_width(across, paper, 300, y_axes=across)  # each panel has its own y axis
    body = alt.layer(*layers, data=inline(data)).properties(width=panel, height=panel_height(panel, paper, 240))
    sort = list(QUANTITIES.values())
    facet = body.facet(row=alt.Row("quantity:N", title=None, sort=sort) if across == 1 and paper else alt.Undefined,
                       column=alt.Column("quantity:N", title=None, sort=sort) if across > 1 or not paper
                       else alt.Undefined)
    # the marks on one line on screen (a line each in print), then each note on a line of its own
    marks = _allocation_subtitle(data) if paper else ["; ".join(_allocation_subtitle(data))]
    sub = [*marks, *notes]
    return apply_theme(facet.resolve_scale(y="independent").properties(title=alt.Title(
        title or "Compute-optimal allocation", subtitle=sub[0] if len(sub) == 1 else sub)))
