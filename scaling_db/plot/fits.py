"""Fitted parameters compared across groups: one law fitted per experiment, graph family, kappa, ..."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

from scaling_db.plot._frame import PADDING, finite, has_values, inline, require
from scaling_db.plot.theme import INK, OKABE_ITO, apply_theme, label


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
