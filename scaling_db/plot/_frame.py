"""Helpers shared by the chart modules: input checks, inline data, log-axis encodings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from scaling_db.errors import PlotError
from scaling_db.plot.theme import PARAMETERIZATIONS, SEQUENTIAL, label

# Counts (parameters, tokens, steps) get SI labels, "1B" not "1G"; widths are written out.
_COUNTS = {"n_params", "n_params_nonembed", "tokens", "step"}
_SCIENTIFIC = {"flops", "flop_budget", "lr", "lr_opt"}
_DISCRETE = {"d_model"}
PADDING = 8  # pixels between the outermost marks and the axes


def require(chart: str, df: pd.DataFrame | None, columns: Iterable[str], *,
            what: str = "frame") -> pd.DataFrame:
    """`df` itself, or a PlotError naming the chart and whatever is missing."""
    columns = list(columns)
    if df is None or not isinstance(df, pd.DataFrame):
        raise PlotError(f"{chart}: {what} must be a pandas DataFrame (got {type(df).__name__}).")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        got = ", ".join(map(str, df.columns)) or "no columns"
        raise PlotError(
            f"{chart}: {what} is missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (got {got}; needs {', '.join(columns)}). "
            "Rename the columns or select them in the query."
        )
    if df.empty:
        raise PlotError(f"{chart}: {what} has no rows to plot. Check the query and its filters.")
    return df


def finite_positive(chart: str, df: pd.DataFrame, columns: Sequence[str], *,
                    what: str = "frame") -> pd.DataFrame:
    """The rows whose `columns` are finite and > 0: the only ones a log axis can show.

    Step 0 (tokens = 0) and diverged runs (loss = inf or NaN) are the usual rows left out.
    """
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)
    if not keep.any():
        raise PlotError(
            f"{chart}: no row of the {what} has finite, positive {', '.join(columns)} "
            "to put on log axes."
        )
    return df.loc[keep]


def finite(chart: str, df: pd.DataFrame, columns: Sequence[str], *,
           what: str = "frame") -> pd.DataFrame:
    """The rows whose `columns` are all finite numbers."""
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values).all(axis=1)
    if not keep.any():
        raise PlotError(f"{chart}: no row of the {what} has finite {', '.join(columns)}.")
    return df.loc[keep]


def has_values(df: pd.DataFrame, *columns: str) -> bool:
    """True when every column exists and at least one row has all of them set."""
    if not all(c in df.columns for c in columns):
        return False
    return bool(df[list(columns)].notna().all(axis=1).any())


def inline(df: pd.DataFrame) -> alt.Data:
    """The frame as inline Vega-Lite values (NaN and inf become null).

    Inlining here, rather than handing Altair the DataFrame, keeps the chart independent of
    Altair's global data transformer and its 5,000-row limit.
    """
    return alt.Data(values=json.loads(df.to_json(orient="records", double_precision=15)))


def thin_log(df: pd.DataFrame, by: str, x: str, max_points: int | None) -> pd.DataFrame:
    """At most `max_points` rows per `by` group, spaced evenly in log(rank) along `x`.

    On a log x axis evenly spaced checkpoints crowd at the right; keeping log-spaced ranks (and
    always the first and last) leaves the drawn curve unchanged at a fraction of the spec size.
    """
    if max_points is None:
        return df
    parts = []
    for _, g in df.sort_values([by, x]).groupby(by, sort=False):
        n = len(g)
        if n <= max_points:
            parts.append(g)
            continue
        idx = np.unique(np.round(np.geomspace(1, n, max_points)).astype(int) - 1)
        parts.append(g.iloc[idx])
    return pd.concat(parts, ignore_index=True)


def axis_format(column: str) -> dict[str, Any]:
    """Label format for a column's axis or legend: SI for counts, 1e17 for FLOPs and LRs."""
    if column in _COUNTS:
        # d3's "~s" says G for 1e9; papers say B. Three significant digits: 18k, not 17.976k.
        return {"format": ".3~s", "labelExpr": "replace(datum.label, 'G', 'B')"}
    if column in _DISCRETE:  # widths: 64, 1024, 8192 as written in configs
        return {"format": "d"}
    if column in _SCIENTIFIC:
        return {"format": ".0e", "labelExpr": "replace(datum.label, 'e+', 'e')"}
    return {}


def log_ticks(*arrays: Any) -> list[float] | None:
    """Tick values for a log axis over the data's range: 1-2-(3-)5 per decade, or powers of ten.

    Vega's own log ticks label 2, 3, ... 9 of every decade on narrow ranges, and the labels
    collide. Ranges under about a decade (a loss axis) keep Vega's linear-looking ticks (None).
    """
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return None
    lo, hi = values.min(), values.max()
    decades = np.log10(hi / lo)
    if decades < 0.9:
        return None
    if decades > 2.2:
        mantissas: tuple[float, ...] = (1.0,)
    elif decades > 1.5:
        mantissas = (1.0, 2.0, 5.0)
    else:
        mantissas = (1.0, 2.0, 3.0, 5.0)
    every = 2 if decades > 8 else 1
    ticks = [float(f"{m * 10.0**k:.6g}")
             for k in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
             if k % every == 0 for m in mantissas]
    ticks = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return ticks if len(ticks) >= 2 else None


def _log_channel(cls: type, field: str, title: str | None, extent: Any, like: str | None,
                 decades: bool, kw: dict[str, Any]) -> Any:
    ticks = log_ticks(*extent) if extent is not None else None
    if (like or field) in _DISCRETE and extent is not None:
        # A handful of widths (64, 128, 256, ...) reads best labelled exactly.
        uniq = np.unique(np.concatenate([np.asarray(a, dtype=float).ravel() for a in extent]))
        if 2 <= uniq.size <= 8:
            ticks = [float(u) for u in uniq]
    fmt = axis_format(like or field)
    if ticks is not None and not fmt:
        fmt = {"format": "~g"}
    if decades:  # panels with their own scales: label 1, 2 and 5 times powers of ten (a range
        # inside one decade still gets labels; Vega offers 2s and 5s only on narrow ranges)
        mantissa = "datum.value / pow(10, floor(log(datum.value) / LN10 + 1e-9))"
        power = " || ".join(f"abs({mantissa} - {m}) < 1e-6" for m in (1, 2, 5))
        text = fmt.get("labelExpr", "datum.label").replace(
            "datum.label", f"format(datum.value, '{fmt.get('format', '~g')}')")
        fmt = {**fmt, "labelExpr": f"{power} ? {text} : ''",
               "gridOpacity": alt.ExprRef(f"{power} ? 1 : 0"),
               "tickSize": alt.ExprRef(f"{power} ? 5 : 3")}
    axis = alt.Axis(title=label(field) if title is None else title,
                    **({"values": ticks} if ticks else {}), **fmt)
    return cls(f"{field}:Q", scale=alt.Scale(type="log", nice=False, padding=PADDING), axis=axis,
               **kw)


def log_x(field: str, title: str | None = None, *, extent: Any = None, like: str | None = None,
          decades: bool = False, **kw: Any) -> alt.X:
    """A log x encoding; `extent` (arrays of the values drawn) sets readable ticks, `like` names
    the column whose label format to use, `decades` labels powers of ten only."""
    return _log_channel(alt.X, field, title, extent, like, decades, kw)


def log_y(field: str, title: str | None = None, *, extent: Any = None, like: str | None = None,
          decades: bool = False, **kw: Any) -> alt.Y:
    """A log y encoding, as `log_x`."""
    return _log_channel(alt.Y, field, title, extent, like, decades, kw)


def size_color(values: pd.Series, field: str, *, title: str | None = None) -> alt.Color:
    """A log-scaled viridis colour for a positive size; one legend swatch per value when few."""
    uniq = sorted(pd.unique(values.dropna()))
    legend = (alt.Legend(type="symbol", values=uniq, symbolOpacity=1, **axis_format(field))
              if len(uniq) <= 10 else alt.Legend(gradientOpacity=1, **axis_format(field)))
    return alt.Color(f"{field}:Q", title=label(field) if title is None else title,
                     scale=alt.Scale(type="log", scheme=SEQUENTIAL), legend=legend)


def param_label(values: pd.Series) -> pd.Series:
    """'sp' -> 'SP', 'mup' -> 'µP'; anything else unchanged."""
    return values.map(lambda v: PARAMETERIZATIONS.get(str(v).lower(), str(v)))


def param_order(labels: Iterable[str]) -> list[str]:
    """SP before µP, then any others in order of appearance."""
    known = list(PARAMETERIZATIONS.values())
    seen = list(dict.fromkeys(labels))
    return [p for p in known if p in seen] + [p for p in seen if p not in known]
