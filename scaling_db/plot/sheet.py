"""A contact sheet: every figure of an experiment on one page, for a quick visual review."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import altair as alt

from scaling_db.errors import PlotError
from scaling_db.plot.theme import HEIGHT, WIDTH, apply_theme

Cell = tuple[str, "alt.TopLevelMixin | str"]  # (figure name, its chart, or why it could not be drawn)


def _bare(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """A copy without its own config: Altair concatenates only charts that carry none."""
    copy = chart.copy(deep=False)
    copy.config = alt.Undefined
    return copy


def _not_drawn(name: str, why: str) -> alt.Chart:
    """A text cell the size of a panel saying which figure is missing and why."""
    lines = textwrap.wrap(f"not drawn: {why}", 58)[:14] or ["not drawn"]
    data = alt.Data(values=[{"i": i, "line": line} for i, line in enumerate(lines)])
    return (alt.Chart(data).mark_text(align="left", baseline="top", dx=-WIDTH / 2 + 8, color="#9a3412")
            .encode(y=alt.Y("i:O", axis=None), text="line:N")
            .properties(width=WIDTH, height=min(HEIGHT, 18 * len(lines) + 10), title=name))


_CHANNELS = ("color", "fill", "stroke", "strokeDash", "shape", "size", "opacity")


def _independent(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Each figure keeps its own colours and legends: concatenated views would otherwise merge
    scales that share a channel (one figure's FLOP budgets in another's experiment legend)."""
    return (chart.resolve_scale(**{c: "independent" for c in _CHANNELS})
            .resolve_legend(**{c: "independent" for c in _CHANNELS}))


def contact_sheet(cells: Sequence[Cell], *, columns: int = 2, title: str | None = None) -> alt.VConcatChart:
    """The cells in a grid, `columns` across: each a figure, or (a string) the reason it is missing.

    Every chart keeps its own title and scales; the sheet carries the scaledb theme once.
    """
    if not cells:
        raise PlotError("contact_sheet: no figures to lay out (the spec declares no plots).")
    if columns < 1:
        raise PlotError(f"contact_sheet: columns must be at least 1 (got {columns}).")
    views = [_not_drawn(name, chart) if isinstance(chart, str) else _bare(chart) for name, chart in cells]
    rows = [_independent(alt.hconcat(*views[i:i + columns], spacing=24)) for i in range(0, len(views), columns)]
    sheet = _independent(alt.vconcat(*rows, spacing=28))
    if title:
        sheet = sheet.properties(title=alt.Title(title, fontSize=16))
    return apply_theme(sheet)
