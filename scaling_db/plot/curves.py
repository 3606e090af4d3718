"""Training curves and fit-window sensitivity."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from scaling_db.errors import PlotError
from scaling_db.plot._frame import (PADDING, finite, finite_positive, has_values, inline, log_x,
                                    log_y, require, size_color, thin_log)
from scaling_db.plot.theme import MUTED, OKABE_ITO, apply_theme, label, panel_width

#: px for a window label such as "drop 2 smallest, 1 largest", never cut: on screen (11 px labels;
#: 130 cut it) and in the paper theme (7.5 px labels, where more room would narrow the panels)
WINDOW_LABELS, WINDOW_LABELS_PAPER = 190, 130

# What makes two runs "the same configuration, another seed"; the columns present are used.
CONFIG_COLUMNS = ("experiment", "parameterization", "n_params", "n_params_nonembed", "d_model",
                  "lr", "flop_budget")


def _color(df: pd.DataFrame, field: str) -> alt.Color:
    """A log-scaled sequential colour for a positive quantity, Okabe-Ito for categories."""
    values = pd.to_numeric(df[field], errors="coerce")
    if values.notna().all() and (values > 0).all():
        return size_color(values, field)
    return alt.Color(f"{field}:N", title=label(field), scale=alt.Scale(range=OKABE_ITO))


def loss_curves(df: pd.DataFrame, *, x: str = "tokens", y: str = "loss", color: str = "n_params",
                band: str = "minmax", config_columns: Sequence[str] | None = None,
                max_points_per_run: int | None = 300, floor: float | None = None,
                floor_label: str = "entropy rate (exact)", title: str | None = None) -> alt.LayerChart:
    """Loss vs tokens or compute, one line per run coloured by size, seed bands, log axes.

    Columns: `run_id`, `x` (tokens | flops | step), `y` (loss | train_loss), `color`; optional
    `seed`, `name` (tooltip) and the `config_columns` that define a configuration (default: those
    of CONFIG_COLUMNS present). Where a configuration has several runs (seeds), a band spans them
    at each x: `band="minmax"` (min to max) or `"std"` (mean ± one standard deviation).
    Rows with x or y <= 0 (step 0) cannot sit on log axes and are left out. `floor` (the source's
    exact entropy rate, where known) is drawn as a labelled dashed rule: no run can go below it.
    """
    chart = "loss_curves"
    if band not in ("minmax", "std"):
        raise PlotError(f"{chart}: band must be 'minmax' or 'std' (got {band!r}).")
    df = require(chart, df, ["run_id", x, y, color])
    df = finite_positive(chart, df, [x, y])
    df = thin_log(df, "run_id", x, max_points_per_run)
    keys = [c for c in (config_columns or CONFIG_COLUMNS) if c in df.columns and c != "run_id"]
    keys = list(dict.fromkeys([*keys, color]))
    cols = list(dict.fromkeys(["run_id", x, y, color, *(["name"] if "name" in df else [])]))
    runs = df[cols].assign(_layer="run")
    layers_data = [runs]

    bands = _seed_bands(df, keys, x, y, color, band)
    if bands is not None:
        layers_data.append(bands)
    data = pd.concat(layers_data, ignore_index=True)

    if floor is not None and not (np.isfinite(floor) and floor > 0):
        raise PlotError(f"{chart}: floor must be a finite positive loss (got {floor!r}).")
    col = _color(df, color)
    xe = log_x(x, extent=[data[x]])
    yext = [data[y], data.get("_lo", []), data.get("_hi", []), [] if floor is None else [floor]]
    ye = log_y(y, extent=yext)
    tooltip = [alt.Tooltip("name:N" if "name" in df else "run_id:N"),
               alt.Tooltip(f"{x}:Q", format=".3~s"), alt.Tooltip(f"{y}:Q", format=".4f")]
    lines = (alt.Chart().mark_line(strokeWidth=1.4, opacity=0.9)
             .encode(x=xe, y=ye, color=col, detail="run_id:N", tooltip=tooltip)
             .transform_filter(alt.datum._layer == "run"))
    parts: list[alt.Chart] = [lines]
    if len(layers_data) > 1:
        bands = (alt.Chart().mark_area(opacity=0.25, line=False)
                 .encode(x=xe, y=log_y("_lo", label(y), extent=yext, like=y), y2="_hi:Q", color=col,
                         detail="_config:N")
                 .transform_filter(alt.datum._layer == "band"))
        parts.insert(0, bands)
    what = {"tokens": "tokens", "flops": "compute", "step": "steps"}.get(x, label(x))
    sub = (f"bands: {'min-max' if band == 'minmax' else 'mean ± 1 sd'} over seeds"
           if len(layers_data) > 1 else [])
    body = alt.layer(*parts, data=inline(data))
    if floor is not None:
        body = alt.layer(body, _floor_rule(floor, floor_label, y, ye))
    return apply_theme(body.properties(
        title=alt.Title(title or f"{label(y).capitalize()} vs {what}", subtitle=sub)))


def _seed_bands(df: pd.DataFrame, keys: list[str], x: str, y: str, color: str, band: str) -> pd.DataFrame | None:
    """Per configuration with several runs (seeds), the band's rows at each x: `_lo`, `_hi`
    (min-max, or mean ± sd with a non-positive low end falling back to the min); None when no
    configuration has two runs."""
    config_id = df.groupby(keys, dropna=False, sort=False).ngroup().astype(str)
    n_runs = df.groupby(config_id)["run_id"].transform("nunique")
    seeded = df.assign(_config=config_id)[n_runs > 1]
    if seeded.empty:
        return None
    stats = (seeded.groupby(["_config", x], sort=False)
             .agg(_lo=(y, "min"), _hi=(y, "max"), _mean=(y, "mean"), _std=(y, "std"),
                  _n=(y, "size"), **{color: (color, "first")})
             .reset_index())
    stats = stats[stats["_n"] > 1]
    if band == "std":
        stats["_lo"] = (stats["_mean"] - stats["_std"]).where(lambda v: v > 0, stats["_lo"])
        stats["_hi"] = stats["_mean"] + stats["_std"]
    return stats[["_config", x, "_lo", "_hi", color]].assign(_layer="band")


def _floor_rule(floor: float, floor_label: str, y: str, ye: alt.Y) -> alt.Chart:
    """The source's exact loss floor as a dashed rule, named in a legend rather than written on
    the plot: the curves converge onto the rule there."""
    text = f"{floor_label}: {floor:.4g}"
    ref = alt.Chart(inline(pd.DataFrame({y: [floor], "_floor": [text]})))
    dash = alt.StrokeDash("_floor:N", title=None, scale=alt.Scale(domain=[text], range=[[2, 3]]),
                          legend=alt.Legend(symbolStrokeColor=MUTED))
    return ref.mark_rule(color=MUTED, strokeWidth=1.4).encode(y=ye, strokeDash=dash)


def window_sensitivity(
        df: pd.DataFrame, bootstrap: pd.DataFrame | tuple[float, float] | None = None, *,
        parameter: str = "exponent", window_title: str = "fit window", paper: str | None = None,
        title: str | None = None) -> alt.LayerChart | alt.FacetChart:
    """The exponent refitted on each fit window, beside the bootstrap interval of the full fit.

    `df`: one row per window, columns `window` (a label; rows keep their order) and `exponent`;
    optional `lo`, `hi` (that window's own interval) and `parameter` (one panel per parameter).
    `bootstrap`: (lo, hi), or a frame with `lo`, `hi`, optional `estimate` and `parameter`; drawn
    as a shaded band so the spread across windows can be compared with it. `paper` ("column" or
    "page"): panels sized so the whole figure, window labels included, fits that journal width.
    """
    chart = "window_sensitivity"
    df = finite(chart, require(chart, df, ["window", "exponent"]), ["exponent"]).copy()
    if "parameter" not in df:
        df["parameter"] = parameter
    df["window"] = df["window"].astype(str)
    order = list(dict.fromkeys(df["window"]))
    rows = [df.assign(_layer="window")]
    boot = None if bootstrap is None else _bootstrap_rows(chart, bootstrap, df)
    if boot is not None:
        rows.append(boot.assign(_layer="bootstrap"))
    data = pd.concat(rows, ignore_index=True)

    xtitle = label(parameter) if data["parameter"].nunique() == 1 else None
    xaxis = alt.Axis(title=xtitle, tickCount=6)
    x = alt.X("exponent:Q", axis=xaxis, scale=alt.Scale(zero=False, padding=PADDING))
    label_room = WINDOW_LABELS if paper is None else WINDOW_LABELS_PAPER
    y = alt.Y("window:N", sort=order, title=window_title, axis=alt.Axis(labelLimit=label_room))
    is_window = alt.datum._layer == "window"
    is_boot = alt.datum._layer == "bootstrap"
    layers: list[alt.Chart] = []
    if boot is not None:
        layers.append(alt.Chart().mark_rect(color=OKABE_ITO[1], opacity=0.16)
                      .encode(x=alt.X("lo:Q", axis=xaxis), x2="hi:Q")
                      .transform_filter(is_boot))
        if "estimate" in boot:
            layers.append(alt.Chart().mark_rule(color=OKABE_ITO[1], strokeWidth=1.5)
                          .encode(x=alt.X("estimate:Q", axis=xaxis)).transform_filter(is_boot))
    if has_values(df, "lo", "hi"):
        layers.append(alt.Chart().mark_rule(color=OKABE_ITO[0], strokeWidth=1.6)
                      .encode(x=alt.X("lo:Q", axis=xaxis), x2="hi:Q", y=y)
                      .transform_filter(is_window))
    layers.append(alt.Chart().mark_point(color=OKABE_ITO[0], size=60, filled=True)
                  .encode(x=x, y=y, tooltip=["window:N", alt.Tooltip("exponent:Q", format=".4f")])
                  .transform_filter(is_window))

    subtitle = _window_subtitle(df, boot)
    n_panels = data["parameter"].nunique()
    # the window labels ("drop 0 smallest, 2 largest") need more room than a numeric axis
    panel = panel_width(n_panels, paper, 300, axis_room=label_room + 20)
    body = alt.layer(*layers, data=inline(data)).properties(width=panel, height=alt.Step(26))
    heading = alt.Title(title or "Fit-window sensitivity", subtitle=subtitle)
    if df["parameter"].nunique() == 1:
        return apply_theme(body.properties(title=heading))
    facet = body.facet(column=alt.Column("parameter:N", title=None, sort=list(
        dict.fromkeys(df["parameter"])))).resolve_scale(x="independent")
    return apply_theme(facet.properties(title=heading))


def _bootstrap_rows(chart: str, bootstrap: pd.DataFrame | tuple[float, float], df: pd.DataFrame) -> pd.DataFrame:
    """The bootstrap interval(s) as rows `lo`, `hi` (`estimate`), `parameter`."""
    boot = (pd.DataFrame({"lo": [bootstrap[0]], "hi": [bootstrap[1]]}) if isinstance(bootstrap, tuple) else
            require(chart, bootstrap, ["lo", "hi"], what="bootstrap frame").copy())
    if "parameter" not in boot:
        if df["parameter"].nunique() > 1:
            raise PlotError(f"{chart}: bootstrap frame needs a `parameter` column when df has several parameters.")
        boot["parameter"] = df["parameter"].iloc[0]
    return boot


def _window_subtitle(df: pd.DataFrame, boot: pd.DataFrame | None) -> list[str]:
    """What is drawn, and (one parameter) the spread over windows beside the bootstrap's."""
    subtitle = ["points: refit per window" + (" with its interval" if has_values(df, "lo", "hi") else "")]
    if boot is not None:
        subtitle.append("shaded: bootstrap interval of the fit on all data")
    if df["parameter"].nunique() == 1:
        lo, hi = df["exponent"].min(), df["exponent"].max()
        subtitle.append(f"spread over windows: {lo:.3g} to {hi:.3g}" + (
            f"; bootstrap: {boot['lo'].iloc[0]:.3g} to {boot['hi'].iloc[0]:.3g}" if boot is not None else ""))
    return subtitle
