"""muP vs SP: learning-rate sweeps, optimum LR vs width, loss vs parameters, coordinate checks."""

from __future__ import annotations

import altair as alt
import pandas as pd

from scaling_db.errors import PlotError
from scaling_db.plot._frame import (PADDING, finite, finite_positive, has_values, inline, log_x,
                                    log_y, param_label, param_order, require)
from scaling_db.plot.theme import (FACET_HEIGHT, FACET_WIDTH, INK, OKABE_ITO, SEQUENTIAL,
                                   apply_theme, label, panel_height, panel_width)


def _width_color(values: pd.Series, field: str = "d_model") -> alt.Color:
    """Ordinal viridis for a handful of widths: a legend with one swatch per width."""
    return alt.Color(f"{field}:O", title=label(field),
                     scale=alt.Scale(scheme=SEQUENTIAL, domain=sorted(values.unique())))


def _param_color(order: list[str]) -> alt.Color:
    return alt.Color("_param:N", title="parameterization", sort=order,
                     scale=alt.Scale(domain=order, range=OKABE_ITO[:len(order)]))


def lr_sweep(df: pd.DataFrame, *, y: str = "loss", loss_domain: tuple[float, float] | None = None,
             paper: str | None = None, title: str | None = None) -> alt.FacetChart:
    """Loss vs learning rate, one line per width, one panel per parameterization (shared axes).

    Columns: `parameterization` ('sp' | 'mup'), `d_model`, `lr`, `y` (default `loss`). Seeds
    (several rows per width and LR) are averaged, with a min-max bar; the best LR of each width
    is ringed. Non-finite losses (diverged runs) are left out; `loss_domain` clips the y axis.
    `paper` ("column" or "page"): panels sized so the whole figure fits that journal width.
    """
    chart = "lr_sweep"
    df = require(chart, df, ["parameterization", "d_model", "lr", y])
    df = finite_positive(chart, df, ["lr", "d_model"])
    df = finite(chart, df, [y])
    g = (df.assign(_param=param_label(df["parameterization"]))
         .groupby(["_param", "d_model", "lr"], sort=True)[y]
         .agg(_mean="mean", _min="min", _max="max", _n="size").reset_index())
    best = g.groupby(["_param", "d_model"])["_mean"].idxmin()
    g["_best"] = False
    g.loc[best, "_best"] = True
    order = param_order(g["_param"])

    xe = log_x("lr", extent=[g["lr"]])
    ye = alt.Y("_mean:Q", title=label(y), scale=alt.Scale(
        zero=False, padding=PADDING, **({"domain": list(loss_domain)} if loss_domain else {})))
    col = _width_color(g["d_model"])
    clip = loss_domain is not None
    layers = [
        alt.Chart().mark_rule(strokeWidth=1.2, clip=clip).encode(
            x=xe, y=alt.Y("_min:Q", title=label(y)), y2="_max:Q", color=col)
        .transform_filter(alt.datum._n > 1),
        alt.Chart().mark_line(strokeWidth=1.6, clip=clip).encode(x=xe, y=ye, color=col),
        alt.Chart().mark_point(size=28, filled=True, clip=clip).encode(
            x=xe, y=ye, color=col, tooltip=["_param:N", "d_model:Q",
                                            alt.Tooltip("lr:Q", format=".2e"),
                                            alt.Tooltip("_mean:Q", title=y, format=".4f")]),
        alt.Chart().mark_point(size=150, filled=False, strokeWidth=2, color=INK, clip=clip)
        .encode(x=xe, y=ye).transform_filter(alt.datum._best),
    ]
    panel = panel_width(len(order), paper, FACET_WIDTH)
    body = alt.layer(*layers, data=inline(g)).properties(width=panel, height=panel_height(panel, paper, FACET_HEIGHT))
    sub = "ringed: best learning rate per width" + (
        "; bars: min-max over seeds" if (g["_n"] > 1).any() else "")
    return apply_theme(body.facet(column=alt.Column("_param:N", title=None, sort=order))
                       .properties(title=alt.Title(title or "Learning-rate sweep", subtitle=sub)))


def optimal_lr(df: pd.DataFrame, *, x: str = "d_model", title: str | None = None) -> alt.LayerChart:
    """Optimal learning rate vs width per parameterization, with its interval; log-log.

    Columns: `parameterization`, `x` (default `d_model`), `lr_opt`; optional `lr_lo`, `lr_hi`,
    `label` (legend entry, e.g. "µP: slope -0.02 [-0.1, 0.07]"), `edge` (bool: the optimum is
    the grid's first or last value, not bracketed: drawn hollow, no interval) and
    `lr_grid_best` (the grid value with the lowest loss: drawn as a small cross beside the
    parabola's optimum).
    """
    chart = "optimal_lr"
    df = require(chart, df, ["parameterization", x, "lr_opt"])
    df = finite_positive(chart, df, [x, "lr_opt"])
    data = df.assign(_param=(df["label"].astype(str) if "label" in df
                             else param_label(df["parameterization"])),
                     _edge=df["edge"].astype(bool) if "edge" in df else False)
    order = param_order(data["_param"])
    interval = ["lr_lo", "lr_hi"] if has_values(df, "lr_lo", "lr_hi") else []
    grid = ["lr_grid_best"] if has_values(df, "lr_grid_best") else []
    keep = ["_param", x, "lr_opt", "_edge", *interval, *grid]
    base = alt.Chart(inline(data[keep].sort_values(x)))
    col = _param_color(order)
    xe = log_x(x, extent=[data[x]])
    yext = [data[c] for c in ("lr_opt", *interval, *grid)]
    layers = []
    if interval:
        layers.append(base.mark_rule(strokeWidth=1.6).encode(
            x=xe, y=log_y("lr_lo", label("lr_opt"), extent=yext, like="lr"), y2="lr_hi:Q",
            color=col).transform_filter("isValid(datum.lr_lo) && isValid(datum.lr_hi)"))
    layers.append(base.mark_line().encode(
        x=xe, y=log_y("lr_opt", extent=yext), color=col,
        tooltip=["_param:N", f"{x}:Q", alt.Tooltip("lr_opt:Q", format=".2e")]))
    layers.append(base.mark_point(size=50, strokeWidth=1.6).encode(
        x=xe, y=log_y("lr_opt", extent=yext), color=col, stroke=col,
        fill=alt.condition(alt.datum._edge, alt.value("white"), col)))
    notes = ["bars: 95% interval of the parabola's optimum"] if interval else []
    if grid:
        layers.append(base.mark_point(shape="cross", size=36, opacity=0.8).encode(
            x=xe, y=log_y("lr_grid_best", label("lr_opt"), extent=yext, like="lr"), color=col))
        notes.append("×: best grid value")
    if data["_edge"].any():
        notes.append("hollow: best LR on the grid's edge (not bracketed)")
    sub = ["flat under µP means the learning rate transfers across width"] + (
        ["; ".join(notes)] if notes else [])
    return apply_theme(alt.layer(*layers).properties(title=alt.Title(
        title or "Optimal learning rate vs width", subtitle=sub)))


def loss_vs_params_by_param(df: pd.DataFrame, curve_df: pd.DataFrame | None = None, *,
                            x: str = "n_params", y: str = "loss",
                            title: str | None = None) -> alt.LayerChart:
    """Loss vs parameters for each parameterization: every run, and the best loss at each size.

    `df`: `parameterization`, `x` (default `n_params`), `y` (default `loss`); several rows per
    size (an LR sweep) are fine: all are drawn faint and a line joins the lowest. `curve_df`
    (optional): fitted laws, columns `parameterization`, `x`, `y`, drawn dashed.
    """
    chart = "loss_vs_params_by_param"
    df = require(chart, df, ["parameterization", x, y])
    df = finite_positive(chart, df, [x, y])
    df = df.assign(_param=param_label(df["parameterization"]))
    best = df.loc[df.groupby(["_param", x])[y].idxmin()].sort_values(x)
    order = param_order(df["_param"])
    col = _param_color(order)
    cv = None
    if curve_df is not None:
        cv = require(chart, curve_df, ["parameterization", "x", "y"], what="curve frame")
        cv = finite_positive(chart, cv, ["x", "y"], what="curve frame")
        cv = cv.assign(_param=param_label(cv["parameterization"]))[["_param", "x", "y"]]
    xext = [df[x]] + ([cv["x"]] if cv is not None else [])
    yext = [df[y]] + ([cv["y"]] if cv is not None else [])
    xe, ye = log_x(x, extent=xext), log_y(y, extent=yext)
    # The best-run line comes first so the legend shows its solid swatch, not the faint points.
    layers = [
        alt.Chart(inline(best[["_param", x, y]])).mark_line(
            strokeWidth=2, point=alt.OverlayMarkDef(size=46, filled=True))
        .encode(x=xe, y=ye, color=col, tooltip=["_param:N", alt.Tooltip(f"{x}:Q", format=".3~s"),
                                                alt.Tooltip(f"{y}:Q", format=".4f")]),
        alt.Chart(inline(df[["_param", x, y]])).mark_point(size=22, opacity=0.35, filled=True)
        .encode(x=xe, y=ye, color=col),
    ]
    if cv is not None:
        layers.append(alt.Chart(inline(cv.sort_values("x"))).mark_line(
            strokeDash=[6, 4], strokeWidth=1.4).encode(
            x=log_x("x", label(x), extent=xext, like=x), y=log_y("y", label(y), extent=yext),
            color=col))
    many = df.groupby(["_param", x]).size().max() > 1
    sub = ("line: best run at each size; faint: all runs" if many else
           "one point per run") + ("; dashed: fitted law" if curve_df is not None else "")
    return apply_theme(alt.layer(*layers).properties(title=alt.Title(
        title or "Loss vs parameters: µP vs SP", subtitle=sub)))


def coordcheck(df: pd.DataFrame, *, value: str = "act_abs_mean", facet: str = "step",
               paper: str | None = None, title: str | None = None) -> alt.Chart:
    """Coordinate check: mean |activation| vs width per layer, log axes.

    Columns: `d_model`, `layer`, `step`, `value` (default `act_abs_mean`); optional
    `parameterization` (one row of panels each). `facet="step"`: a panel per step, a colour per
    layer (as in the muP paper); `facet="layer"`: a panel per layer, a colour per step.
    Flat lines across width are what muP promises; SP's grow. `paper` ("column" or "page"):
    panels sized so the whole figure fits that journal width.
    """
    chart = "coordcheck"
    if facet not in ("step", "layer"):
        raise PlotError(f"{chart}: facet must be 'step' or 'layer' (got {facet!r}).")
    df = require(chart, df, ["d_model", "layer", "step", value])
    df = finite_positive(chart, df, ["d_model", value])
    keys = ["d_model", "layer", "step"] + (["parameterization"] if "parameterization" in df else [])
    data = df.groupby(keys, sort=False, dropna=False)[value].mean().reset_index()
    data["layer"] = data["layer"].astype(str)
    layers = list(dict.fromkeys(data["layer"]))
    steps = sorted(data["step"].unique())
    gap = 10 if paper else 20  # px between panels: many narrow panels for a journal column
    if facet == "step":
        col = alt.Color("layer:N", title="layer", sort=layers,
                        scale=alt.Scale(domain=layers, range=OKABE_ITO) if len(layers) <= 8 else
                        alt.Scale(domain=layers, scheme=SEQUENTIAL))
        column = alt.Column("step:O", title=None, sort=steps, spacing=gap,
                            header=alt.Header(labelExpr="'step ' + datum.value"))
    else:
        col = alt.Color("step:O", title="step", scale=alt.Scale(scheme=SEQUENTIAL, domain=steps))
        column = alt.Column("layer:N", title=None, sort=layers, spacing=gap)
    rows = "parameterization" in data  # a row of panels per parameterization: its header takes room
    panel = panel_width(len(steps) if facet == "step" else len(layers), paper, 170, spacing=gap,
                        extra=24 if rows else 0)
    xtitle = "d_model" if panel < 90 else None  # "width (d_model)" under each narrow panel would collide
    enc = dict(x=log_x("d_model", xtitle, extent=[data["d_model"]]), y=log_y(value, extent=[data[value]]),
               color=col, column=column,
               tooltip=["layer:N", "step:Q", "d_model:Q", alt.Tooltip(f"{value}:Q", format=".3g")])
    if "parameterization" in data:
        data["_param"] = param_label(data["parameterization"])
        enc["row"] = alt.Row("_param:N", title=None, sort=param_order(data["_param"]))
    body = (alt.Chart(inline(data)).mark_line(point=alt.OverlayMarkDef(size=24, filled=True))
            .encode(**enc).properties(width=panel, height=panel_height(panel, paper, 150)))
    return apply_theme(body.properties(title=alt.Title(
        title or "Coordinate check",
        subtitle="mean |activation| vs width: flat means width-independent updates (µP)")))
