"""Measured losses against a closed-form theory: random features (Maloney, Roberts & Sully 2022)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from scaling_db.plot._frame import finite_positive, inline, log_x, log_y, require, size_color
from scaling_db.plot.theme import MUTED, apply_theme

THEORY_SOURCE = "deterministic equivalent (Maloney, Roberts & Sully 2022)"


def theory_curves(df: pd.DataFrame, curve: pd.DataFrame | None = None, *, x: str = "n_features",
                  color: str = "samples", y: str = "loss", theory: str = "theory_loss",
                  x_title: str = "random features N", y_title: str = "test loss (MSE)",
                  color_title: str = "samples T", title: str | None = None) -> alt.LayerChart:
    """Loss vs N on log-log axes, one colour per T: measured points, the theory as lines.

    `df` columns: `x` (N), `color` (T), `y` (measured loss), `theory` (predicted loss, missing
    where there is none); optional `name` or `run_id` (tooltip). Every run is a point (seeds of one
    cell are several). The lines join the runs' `theory` values, or, when `curve` is given
    (columns `x`, `color`, `theory`: the theory on a finer grid of N), follow it instead. They are
    drawn per T in two pieces, N < T and N > T: the theory diverges at the interpolation peak
    N = T, marked by a dotted rule in the T's colour; the measured points there show the peak.
    """
    chart = "theory_curves"
    df = require(chart, df, [x, color, y, theory])
    points = finite_positive(chart, df, [x, color, y])
    if curve is None:
        ref = pd.to_numeric(points[theory], errors="coerce")
        lines = (points.assign(**{theory: ref})[np.isfinite(ref) & (ref > 0)]
                 .groupby([color, x], as_index=False)[theory].mean())
    else:
        lines = finite_positive(chart, require(chart, curve, [x, color, theory], what="curve frame"),
                                [x, color, theory], what="curve frame")[[x, color, theory]]
    side = np.where(lines[x] < lines[color], "N < T", "N > T")
    lines = lines.assign(_segment=lines[color].astype(str) + " " + side)
    who = "name" if "name" in points else "run_id" if "run_id" in points else None
    cols = list(dict.fromkeys([x, color, y, theory, *([who] if who else [])]))
    peaks = pd.DataFrame({color: sorted(points[color].unique())}).assign(**{x: lambda d: d[color]})
    peaks = peaks[(peaks[x] >= points[x].min()) & (peaks[x] <= points[x].max())]
    data = pd.concat([points[cols].assign(_layer="run"), lines.assign(_layer="theory"),
                      peaks.assign(_layer="peak")], ignore_index=True)

    col = size_color(points[color], color, title=color_title)
    xe = log_x(x, x_title, extent=[points[x]])
    ye = log_y(y, y_title, extent=[points[y], lines[theory]])
    tooltip = [*([alt.Tooltip(f"{who}:N")] if who else []), alt.Tooltip(f"{x}:Q", title="N"),
               alt.Tooltip(f"{color}:Q", title="T"), alt.Tooltip(f"{y}:Q", format=".4g", title="measured"),
               alt.Tooltip(f"{theory}:Q", format=".4g", title="theory")]
    rules = (alt.Chart().mark_rule(strokeDash=[1, 3], strokeWidth=1, opacity=0.6)
             .encode(x=xe, color=col).transform_filter(alt.datum._layer == "peak"))
    curves = (alt.Chart().mark_line(strokeWidth=1.6)
              .encode(x=xe, y=log_y(theory, y_title, extent=[points[y], lines[theory]], like=y), color=col,
                      detail="_segment:N")
              .transform_filter(alt.datum._layer == "theory"))
    dots = (alt.Chart().mark_point(filled=True, stroke=MUTED, strokeWidth=0.5, opacity=0.9)
            .encode(x=xe, y=ye, color=col, tooltip=tooltip)
            .transform_filter(alt.datum._layer == "run"))
    body = alt.layer(rules, curves, dots, data=inline(data))
    sub = f"points: measured; lines: {THEORY_SOURCE}, which diverges at N = T (dotted)"
    return apply_theme(body.properties(title=alt.Title(title or "Test loss vs random features", subtitle=sub)))
