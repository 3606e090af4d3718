"""Fitted laws: a law over its points (one or one per group), and a fitted parameter across groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from scaling_db.errors import PlotError
from scaling_db.plot._frame import (PADDING, finite, finite_positive, has_values, inline, log_x,
                                    log_y, require)
from scaling_db.plot.theme import INK, MUTED, OKABE_ITO, apply_theme, label

_LEGEND_INK = "#555555"  # legend swatches for line styles (fit, extrapolation, floor) whatever their colour


def _segments(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve cut where `extrapolated` flips; each piece starts at the previous one's end."""
    curve = curve.sort_values("x").reset_index(drop=True)
    flag = curve["extrapolated"].astype(bool).to_numpy()
    seg = np.concatenate([[0], np.cumsum(flag[1:] != flag[:-1])])
    pieces = []
    for s in np.unique(seg):
        idx = np.flatnonzero(seg == s)
        if s > 0:  # join to the previous piece so the line has no gap
            idx = np.concatenate([[idx[0] - 1], idx])
        piece = curve.iloc[idx].assign(_segment=int(s),
                                       _part="extrapolation" if flag[idx[-1]] else "fit")
        pieces.append(piece)
    return pd.concat(pieces, ignore_index=True)


def _clip_band(curve: pd.DataFrame, points: pd.Series, factor: float | None) -> tuple[pd.DataFrame, list[str]]:
    """The band cut to [lowest point / factor, highest point x factor], and a note saying where it was cut.

    With few runs, resamples that drop the smallest model make the band explode there; drawn in
    full it would squash the points into a line. Cut, it must say so.
    """
    if factor is None:
        return curve, []
    top, bottom = factor * float(points.max()), float(points.min()) / factor
    notes = []
    if (curve["hi"] > top).any():
        notes.append(f"band cut at {factor:g}× the highest point (it reaches {curve['hi'].max():.3g})")
    if (curve["lo"] < bottom).any():
        notes.append(f"band cut at the lowest point / {factor:g} (it reaches {curve['lo'].min():.3g})")
    return curve.assign(hi=curve["hi"].clip(upper=top), lo=curve["lo"].clip(lower=bottom)), notes


def scaling_fit(points_df: pd.DataFrame, curve_df: pd.DataFrame, formula: str | Sequence[str], *,
                x: str = "n_params", y: str = "loss", floor: float | None = None,
                floor_label: str | None = None, band_label: str = "95% confidence band",
                group: str | None = None, group_order: Sequence[str] | None = None,
                clip_band: float | None = 2.0, title: str | None = None) -> alt.LayerChart:
    """A fitted law over its points: band, fit line, dashed extrapolation, entropy-rate floor.

    `points_df`: columns `x`, `y`; optional `excluded` (bool: drawn hollow, left out of the fit),
    `name` or `run_id` (tooltip). `curve_df`: the law evaluated on a grid, columns `x`, `y`;
    optional `lo`, `hi` (the band) and `extrapolated` (bool: drawn dashed). `formula` (a line, or
    one per group) is shown under the title; `floor` (the true entropy rate, where known) is a
    dotted rule named in the legend. `group` (a column of both frames) draws one law per group,
    one colour each, in `group_order`. The band is cut at `clip_band` times the points' range
    (None: never), and the subtitle says where it was cut.
    """
    chart = "scaling_fit"
    points = require(chart, points_df, [x, y, *([group] if group else [])], what="points frame")
    curve = require(chart, curve_df, ["x", "y", *([group] if group else [])], what="curve frame")
    points = finite_positive(chart, points, [x, y], what="points frame")
    curve = finite_positive(chart, curve, ["x", "y"], what="curve frame").copy()
    curve["extrapolated"] = (curve["extrapolated"].fillna(False).astype(bool) if "extrapolated" in curve
                             else False)
    clip_notes: list[str] = []
    if has_values(curve, "lo", "hi"):
        curve, clip_notes = _clip_band(curve, points[y], clip_band)
    if floor is not None and (not np.isfinite(floor) or floor <= 0):
        raise PlotError(f"{chart}: floor must be a finite positive loss (got {floor!r}).")
    xt, yt = label(x), label(y)
    xext = [points[x], curve["x"]]
    yext = [points[y], curve["y"], curve.get("lo", []), curve.get("hi", []), [] if floor is None else [floor]]

    def xe(field: str) -> alt.X:
        return log_x(field, xt, extent=xext, like=x)

    def ye(field: str) -> alt.Y:
        return log_y(field, yt, extent=yext, like=y)

    color: alt.Color | dict = alt.value(OKABE_ITO[0])
    if group:
        points, curve, color = _by_group(points, curve, group, group_order)
        group = "_group"
    keys = [group] if group else []
    floor_text = (floor_label or "entropy rate") + (f": {floor:.4g}" if floor is not None else "")
    dash = _line_styles(floor_text if floor is not None else None)

    layers: list[alt.Chart] = []
    if has_values(curve, "lo", "hi"):
        band = finite_positive(chart, curve, ["lo", "hi"], what="curve frame")
        layers.append(alt.Chart(inline(band[["x", "lo", "hi", *keys]])).mark_area(opacity=0.18).encode(
            x=xe("x"), y=ye("lo"), y2="hi:Q", color=color, **({"detail": f"{group}:N"} if group else {})))
    layers.append(alt.Chart(inline(_fit_segments(curve, group))).mark_line(strokeWidth=2.2).encode(
        x=xe("x"), y=ye("y"), color=color, strokeDash=dash, detail="_segment:N"))
    cols = [c for c in dict.fromkeys([x, y, "name", "run_id", "excluded", *keys]) if c in points]
    layers += _points_layer(points[cols], x, y, xe(x), ye(y), color if group else alt.value(INK))
    if floor is not None:
        ref = pd.DataFrame({"y": [floor], "_part": [floor_text]})
        layers.append(alt.Chart(inline(ref)).mark_rule(color=MUTED, strokeWidth=1.4)
                      .encode(y=ye("y"), strokeDash=dash))
    subtitle = _fit_subtitle(formula, points, curve, band_label, clip_notes)
    return apply_theme(alt.layer(*layers).properties(
        title=alt.Title(title or f"{yt.capitalize()} vs {xt}", subtitle=subtitle)))


def _fit_subtitle(formula: str | Sequence[str], points: pd.DataFrame, curve: pd.DataFrame, band_label: str,
                  clip_notes: list[str]) -> list[str]:
    """The law(s), then what the marks mean: one line each, as a paper column is narrow."""
    excluded = "excluded" in points and points["excluded"].fillna(False).astype(bool).any()
    notes = ([f"shaded: {band_label}"] if has_values(curve, "lo", "hi") else []) + clip_notes + (
        ["hollow: excluded from the fit"] if excluded else [])
    return ([formula] if isinstance(formula, str) else list(formula)) + notes


def _line_styles(floor_text: str | None) -> alt.StrokeDash:
    """Solid fit, dashed extrapolation and (where there is one) the dotted floor, in one legend
    beside the plot (below it for a journal), never over the points."""
    domain = ["fit", "extrapolation", *([floor_text] if floor_text is not None else [])]
    return alt.StrokeDash("_part:N", title=None,
                          scale=alt.Scale(domain=domain, range=[[1, 0], [6, 4], [2, 3]][:len(domain)]),
                          legend=alt.Legend(direction="vertical", columns=1, symbolStrokeColor=_LEGEND_INK))


def _by_group(points: pd.DataFrame, curve: pd.DataFrame, group: str, group_order: Sequence[str] | None
              ) -> tuple[pd.DataFrame, pd.DataFrame, alt.Color]:
    """Both frames with the group as `_group` (Vega-Lite reads a dotted field such as vars.rung as
    a nested path), and one colour per group in `group_order`."""
    order = [str(g) for g in (group_order or list(dict.fromkeys(points[group].astype(str))))]
    points = points.drop(columns="_group", errors="ignore").assign(_group=points[group].astype(str))
    curve = curve.drop(columns="_group", errors="ignore").assign(_group=curve[group].astype(str))
    scale = alt.Scale(domain=order, range=OKABE_ITO[:len(order)] if len(order) <= len(OKABE_ITO) else OKABE_ITO)
    # solid legend swatches, not the pale band's
    color = alt.Color("_group:N", title=label(group), sort=order, scale=scale, legend=alt.Legend(symbolOpacity=1))
    return points, curve, color


def _fit_segments(curve: pd.DataFrame, group: str | None) -> pd.DataFrame:
    """The law's line cut into fitted and extrapolated segments, per group."""
    pieces = [_segments(part[["x", "y", "extrapolated"]]).assign(**({group: value} if group else {}))
              for value, part in (curve.groupby(group, sort=False) if group else [(None, curve)])]
    seg = pd.concat(pieces, ignore_index=True)
    seg["_segment"] = seg["_segment"].astype(str) + (("|" + seg[group]) if group else "")
    return seg


def _points_layer(points: pd.DataFrame, x: str, y: str, xe: alt.X, ye: alt.Y,
                  color: alt.Color | dict) -> list[alt.Chart]:
    """The fitted points, filled (ink, or their group's colour), and those left out of the fit, hollow."""
    tip = [c for c in ("name", "run_id") if c in points][:1]
    excluded = points["excluded"].fillna(False).astype(bool) if "excluded" in points else pd.Series(False, points.index)
    tooltip = [*(f"{c}:N" for c in tip), alt.Tooltip(f"{x}:Q", format=".3~s"), alt.Tooltip(f"{y}:Q", format=".4f")]
    layers = []
    for hollow, part in ((False, points[~excluded]), (True, points[excluded])):
        if part.empty:
            continue
        mark = (alt.Chart(inline(part)).mark_point(size=46, strokeWidth=1.5, opacity=0.9, filled=not hollow,
                                                   **({"fill": "white"} if hollow else {})))
        layers.append(mark.encode(x=xe, y=ye, color=color, tooltip=tooltip))
    return layers


def fit_parameters(df: pd.DataFrame, *, parameter: str = "alpha", group: str = "group",
                   order: Sequence[str] | None = None, failed: Mapping[str, str] | None = None,
                   interval_label: str = "95% bootstrap interval", explain: str | None = None,
                   title: str | None = None) -> alt.LayerChart:
    """One fitted parameter per group with its interval as an error bar, groups along x.

    `df`: one row per fitted group, columns `group` (the value; drawn in `order`, default the
    rows' order) and `estimate`; optional `lo`, `hi` (the interval; rows without one are drawn
    hollow). `parameter` names the y axis; `explain` (e.g. "L = E + A N^-alpha") says what it is.
    `failed` (group -> why) lists the groups with no fit in the subtitle, so none vanishes unsaid.
    """
    chart = "fit_parameters"
    df = finite(chart, require(chart, df, ["group", "estimate"]), ["estimate"]).copy()
    df["group"] = df["group"].astype(str)
    order = [str(g) for g in (order if order is not None else df["group"])]
    has_int = has_values(df, "lo", "hi")
    df["_interval"] = df[["lo", "hi"]].notna().all(axis=1) if has_int else False
    cols = ["group", "estimate", "_interval", *(["lo", "hi"] if has_int else [])]
    base = alt.Chart(inline(df[cols]))
    x = alt.X("group:N", title=label(group), sort=order, scale=alt.Scale(domain=order),
              axis=alt.Axis(labelAngle=0 if len(order) <= 6 else -35, labelLimit=140))
    ytitle = f"fitted {parameter}"
    y = alt.Y("estimate:Q", title=ytitle, scale=alt.Scale(zero=False, padding=PADDING))
    layers = []
    if has_int:
        layers.append(base.mark_rule(color=OKABE_ITO[0], strokeWidth=1.8).encode(
            x=x, y=alt.Y("lo:Q", title=ytitle), y2="hi:Q").transform_filter(alt.datum._interval))
    layers.append(base.mark_point(size=60, strokeWidth=1.6, color=OKABE_ITO[0], filled=True).encode(
        x=x, y=y, fill=alt.condition(alt.datum._interval, alt.value(OKABE_ITO[0]), alt.value("white")),
        tooltip=["group:N", alt.Tooltip("estimate:Q", title=parameter, format=".4g"),
                 *([alt.Tooltip("lo:Q", format=".4g"), alt.Tooltip("hi:Q", format=".4g")] if has_int else [])]))
    notes = [f"bars: {interval_label}"] if has_int else []
    if not df["_interval"].all():
        notes.append("hollow: no interval")
    subtitle = ([f"{parameter} in {explain}"] if explain else []) + (["; ".join(notes)] if notes else [])
    if failed:
        subtitle.append("not fitted: " + "; ".join(f"{g} ({_short(why)})" for g, why in failed.items()))
    body = alt.layer(*layers)  # as wide as the theme's view (config.view.discreteWidth)
    heading = alt.Title(title or f"Fitted {parameter} per {label(group)}", subtitle=subtitle,
                        subtitleColor=INK if failed else alt.Undefined)
    return apply_theme(body.properties(title=heading))


def _short(text: str, limit: int = 90) -> str:
    """A reason cut to fit a subtitle line (the report and `scaledb fit` give it in full)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
