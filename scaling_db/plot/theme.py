"""The one look every scaledb figure shares: fonts, sizes, palettes and axis labels.

Every chart function ends with `apply_theme`, which writes this config into the chart itself, so
a figure looks the same in a notebook, in a saved file and in a report, whatever Altair theme
happens to be enabled. `register_theme` makes the same look available to your own charts.

Palettes are colour-blind safe:
- categories: Okabe & Ito (2008), "Color Universal Design", https://jfly.uni-koeln.de/color/,
  reordered so the low-contrast yellow comes last;
- ordered quantities (model size, FLOP budget, width): viridis (van der Walt & Smith, 2015),
  cut before its pale yellow end so the largest value stays visible on white.
"""

from __future__ import annotations

import textwrap
from typing import Any, TypeVar

import altair as alt

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
             "#F0E442"]
SEQUENTIAL = {"name": "viridis", "extent": [0.0, 0.88]}  # for alt.Scale(scheme=...)
_SEQUENTIAL_RANGE = {"scheme": "viridis", "extent": [0.0, 0.88]}  # the same, as a range default
INK = "#222222"
MUTED = "#888888"
FONT = "Helvetica, Arial, DejaVu Sans, Liberation Sans, sans-serif"

WIDTH, HEIGHT = 340, 240  # one panel, in CSS pixels; PNG export doubles them
FACET_WIDTH, FACET_HEIGHT = 250, 200

CONFIG: dict[str, Any] = {
    "font": FONT,
    "background": "white",
    "padding": 8,
    "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "discreteWidth": WIDTH, "stroke": "#bbbbbb"},
    "title": {"fontSize": 14, "fontWeight": "bold", "anchor": "start", "color": INK,
              "subtitleFontSize": 11, "subtitleColor": "#444444", "subtitlePadding": 4,
              "offset": 10},
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal",
             "labelColor": INK, "titleColor": INK, "domainColor": "#444444",
             "tickColor": "#444444", "gridColor": "#ebebeb", "labelFlush": False,
             "titlePadding": 6},
    "legend": {"labelFontSize": 11, "titleFontSize": 11, "titleFontWeight": "normal",
               "labelColor": INK, "titleColor": INK, "labelLimit": 320, "titleLimit": 320,
               "symbolStrokeWidth": 2},
    "header": {"labelFontSize": 12, "titleFontSize": 12, "labelColor": INK, "titleColor": INK,
               "titleFontWeight": "normal", "labelFontWeight": "bold"},
    "range": {"category": OKABE_ITO, "ordinal": _SEQUENTIAL_RANGE, "ramp": _SEQUENTIAL_RANGE},
    "line": {"strokeWidth": 1.8},
    "point": {"size": 40, "filled": True},
    "text": {"fontSize": 11, "color": INK},
}

# Human axis titles for the database's standard columns; anything else keeps its column name.
LABELS = {
    "n_params": "parameters N",
    "n_params_nonembed": "non-embedding parameters N",
    "tokens": "tokens D",
    "flops": "compute C (FLOPs)",
    "flop_budget": "FLOP budget C",
    "loss": "eval loss (nats/token)",
    "eval_loss": "eval loss (nats/token)",
    "train_loss": "train loss (nats/token)",
    "lr": "learning rate",
    "lr_opt": "optimal learning rate",
    "d_model": "width (d_model)",
    "step": "step",
    "act_abs_mean": "mean |activation|",
    "exponent": "exponent",
}

PARAMETERIZATIONS = {"sp": "SP", "mup": "µP"}


def label(column: str) -> str:
    """The axis title for a column."""
    return LABELS.get(column, column)


def scaledb_theme() -> alt.theme.ThemeConfig:
    """The scaledb theme as an Altair theme config."""
    return alt.theme.ThemeConfig(config=CONFIG)  # type: ignore[typeddict-item]


def register_theme(*, enable: bool = False) -> None:
    """Register the theme with Altair as "scaledb" (optionally enabling it) for your own charts."""
    alt.theme.register("scaledb", enable=enable)(scaledb_theme)


C = TypeVar("C", bound=alt.TopLevelMixin)


def apply_theme(chart: C) -> C:
    """A copy of `chart` with the scaledb config written into it."""
    return chart.configure(**CONFIG)  # type: ignore[return-value]


# Journal figure widths in inches: one column and the full page of a two-column layout
# (ACM/IEEE/NeurIPS-style templates: 3.25-3.33 in and 6.75-7 in). vl-convert writes PDFs at
# 72 points per CSS pixel, so a width in inches is 72 px per inch.
PAPER_WIDTHS = {"column": 3.25, "page": 6.75}
_AXIS_ROOM = 58  # px left for the y-axis labels and title beside the plot area


def paper_config(width: str = "column") -> dict[str, Any]:
    """The theme for a journal figure `width` ("column" or "page") wide: 8-9 pt text, legends
    below the plot (never clipped at the right edge), the plot area sized to fit."""
    if width not in PAPER_WIDTHS:
        raise ValueError(f"paper width must be one of {', '.join(PAPER_WIDTHS)} (got {width!r})")
    total = PAPER_WIDTHS[width] * 72
    view_w = total - _AXIS_ROOM - 8
    return {
        **CONFIG,
        "padding": 4,
        "view": {**CONFIG["view"], "continuousWidth": view_w, "continuousHeight": round(view_w * 0.66),
                 "discreteWidth": view_w},
        "title": {**CONFIG["title"], "fontSize": 9, "subtitleFontSize": 7.5, "offset": 4,
                  "limit": total - 12},  # within the page even after rounding
        "axis": {**CONFIG["axis"], "labelFontSize": 7.5, "titleFontSize": 8.5, "titlePadding": 3,
                 "labelLimit": 80},
        "legend": {**CONFIG["legend"], "labelFontSize": 7.5, "titleFontSize": 8, "orient": "bottom",
                   "direction": "horizontal", "columns": 3 if width == "column" else 6,
                   "labelLimit": total / 2, "titleLimit": total - 8, "symbolSize": 40},
        "header": {**CONFIG["header"], "labelFontSize": 8.5, "titleFontSize": 8.5},
        "line": {"strokeWidth": 1.2},
        "point": {"size": 18, "filled": True},
        "text": {"fontSize": 7.5, "color": INK},
    }


# Average character widths, with room to spare: the 9 pt bold title and the 7.5 pt subtitle.
_CHAR_PX = {"text": 5.6, "subtitle": 4.2}


def _wrap(value: Any, limit: float, char_px: float) -> list[str]:
    lines = [value] if isinstance(value, str) else list(value)
    return [part for line in lines for part in (textwrap.wrap(str(line), int(limit / char_px)) or [""])]


def for_paper(chart: C, width: str = "column") -> C:
    """A copy of `chart` styled for a journal: `width` "column" (3.25 in) or "page" (6.75 in). Its
    title and subtitle lines are wrapped to the width, where Vega would cut them with an ellipsis."""
    config = paper_config(width)
    title = getattr(chart, "title", alt.Undefined)
    if isinstance(title, str):
        title = alt.TitleParams(text=title)
    if isinstance(title, alt.TitleParams):
        spec = title.to_dict()
        for key, char_px in _CHAR_PX.items():
            if key in spec:
                spec[key] = _wrap(spec[key], config["title"]["limit"], char_px)
        chart = chart.properties(title=alt.TitleParams(**spec))
    return chart.configure(**config)  # type: ignore[return-value]


def panel_width(n: int, width: str | None, default: int, *, y_axes: int = 1, axis_room: int = _AXIS_ROOM,
                spacing: int = 20, extra: int = 0) -> int:
    """The width of each of `n` panels side by side: `default`, or for a journal `width` ("column" or
    "page") what makes the whole figure fit it: the page less its padding, `y_axes` y axes of
    `axis_room` px each (1 when the panels share one, `n` when each has its own), the gaps, and
    `extra` px (row headers)."""
    if width is None:
        return default
    if width not in PAPER_WIDTHS:
        raise ValueError(f"paper width must be one of {', '.join(PAPER_WIDTHS)} (got {width!r})")
    total = PAPER_WIDTHS[width] * 72 - 2 * 4 - 4  # paper_config's padding both sides, and the axes' rounding
    return max(20, int((total - y_axes * axis_room - spacing * (n - 1) - extra) // n))


def panel_height(panel: int, width: str | None, default: int) -> int:
    """A panel's height: `default`, or for a journal a little less than its width (never a sliver)."""
    return default if width is None else max(80, min(default, round(panel * 0.85)))
