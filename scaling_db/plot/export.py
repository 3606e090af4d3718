"""Writing charts to files, and to bytes for embedding in a report.

Static formats are rendered in-process by vl-convert (a bundled Vega/Deno runtime): no browser,
no network. HTML is written self-contained (the Vega libraries inlined), so it opens offline.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

from scaling_db.errors import PlotError

FORMATS = (".html", ".json", ".svg", ".png", ".pdf")
PNG_SCALE = 2.0  # device pixels per CSS pixel: sharp in print and on high-density screens


def _vl_version() -> str | None:
    # Render with the Vega-Lite version Altair wrote the spec for (altair 6 -> "6.4").
    version = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    return version if version in vlc.get_vegalite_versions() else None


def _spec(chart: alt.TopLevelMixin, where: str) -> dict[str, Any]:
    if not isinstance(chart, alt.TopLevelMixin):
        raise PlotError(f"{where}: expected an Altair chart (got {type(chart).__name__}).")
    try:
        return chart.to_dict()
    except Exception as exc:  # schema validation: a chart Vega-Lite would reject
        raise PlotError(f"{where}: the chart is not a valid Vega-Lite spec: {exc}") from exc


def _convert(fn: Any, spec: dict[str, Any], where: str, **kw: Any) -> Any:
    try:
        return fn(spec, vl_version=_vl_version(), **kw)
    except (ValueError, RuntimeError) as exc:
        raise PlotError(f"{where}: Vega could not render the chart: {exc}") from exc


def chart_to_png_bytes(chart: alt.TopLevelMixin, *, scale: float = PNG_SCALE) -> bytes:
    """The chart as PNG bytes (`scale` device pixels per CSS pixel)."""
    return _convert(vlc.vegalite_to_png, _spec(chart, "png"), "png", scale=scale)


def chart_to_svg(chart: alt.TopLevelMixin) -> str:
    """The chart as an SVG document, to write or inline into HTML."""
    return _convert(vlc.vegalite_to_svg, _spec(chart, "svg"), "svg")


def chart_to_html(chart: alt.TopLevelMixin) -> str:
    """The chart as a self-contained interactive HTML page (the Vega libraries inlined)."""
    return _convert(vlc.vegalite_to_html, _spec(chart, "html"), "html", bundle=True)


def chart_to_data_uri(chart: alt.TopLevelMixin, *, scale: float = PNG_SCALE) -> str:
    """The chart as a `data:image/png;base64,...` URI for an `<img src=...>` in a report."""
    return "data:image/png;base64," + base64.b64encode(
        chart_to_png_bytes(chart, scale=scale)).decode("ascii")


def save_chart(chart: alt.TopLevelMixin, path: str | Path, *, scale: float = PNG_SCALE) -> Path:
    """Write the chart to `path`; the extension picks the format (see FORMATS). Returns the path."""
    path = Path(path)
    ext = path.suffix.lower()
    where = str(path)
    if ext not in FORMATS:
        raise PlotError(
            f"{where}: unknown figure format {ext or '(no extension)'!r} "
            f"(supported: {', '.join(FORMATS)}). Give the output file one of these extensions."
        )
    spec = _spec(chart, where)
    data: str | bytes
    if ext == ".json":
        data = json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
    elif ext == ".html":
        data = _convert(vlc.vegalite_to_html, spec, where, bundle=True)
    elif ext == ".svg":
        data = _convert(vlc.vegalite_to_svg, spec, where)
    elif ext == ".png":
        data = _convert(vlc.vegalite_to_png, spec, where, scale=scale)
    else:
        data = _convert(vlc.vegalite_to_pdf, spec, where)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise PlotError(f"{where}: cannot write the figure ({exc.strerror}).") from exc
    return path
