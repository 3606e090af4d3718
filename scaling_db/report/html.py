"""The experiment report: one self-contained HTML file with the figures, fits and runs.

Figures are embedded as PNG data URIs (no external files or scripts needed to view it), and
each is also saved beside the report as .png and .html (interactive) for papers and slides.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from scaling_db import __version__
from scaling_db.report.analyses import Outcome, above_uniform_note, fmt_interval, fmt_num, mark_above_uniform
from scaling_db.plot.export import PNG_SCALE, chart_to_html, chart_to_png_bytes
from scaling_db.report.cache import cached_render
from scaling_db.report.published import PublishedCheck
from scaling_db.spec.revisions import SUPERSEDED_NOTE
from scaling_db.training.records import utc_now
from scaling_db.workspace import Workspace, atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Figure:
    name: str
    chart: alt.TopLevelMixin | None
    error: str | None = None  # why the figure could not be drawn (e.g. too few runs yet)
    diagnostic: bool = False  # a check behind the numbers: shown under "Diagnostics"


def _num(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return f"{int(v):,}"
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else html.escape(str(v))


def _fits_table(outcomes: Sequence[Outcome], errors: Mapping[str, str] | None = None) -> str:
    rows = []
    for o in outcomes:
        for r in o.table():
            flag = f"<span class='flag'>{html.escape(r['flag'])}</span>" if r.get("flag") else ""
            rows.append(f"<tr><td>{html.escape(o.name)}</td><td>{html.escape(o.kind)}</td>"
                        f"<td>{html.escape(str(r['quantity']))}</td><td>{fmt_num(r['estimate'])}</td>"
                        f"<td>{fmt_interval(r['lo'], r['hi'])}</td><td>{flag}</td></tr>")
    notes = []
    for o in outcomes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in o.notes())
        notes.append(f"<li><b>{html.escape(o.name)}</b><ul>{items}</ul></li>")
    failed = "".join(f"<li><b>{html.escape(k)}</b>: <span class='error'>{html.escape(v)}</span></li>"
                     for k, v in (errors or {}).items())
    head = ("<tr><th>analysis</th><th>kind</th><th>quantity</th><th>estimate</th>"
            "<th>95% interval</th><th>flag</th></tr>")
    failed_html = f"<p>Not computed:</p><ul>{failed}</ul>" if failed else ""
    return f"<table>{head}{''.join(rows)}</table>{failed_html}<ul class='notes'>{''.join(notes)}</ul>"


def _runs_table(runs: pd.DataFrame) -> str:
    """The runs, a finished run above the uniform-guess loss marked as `scaledb status` marks it."""
    runs, n_above = mark_above_uniform(runs)
    cols = [c for c in ("name", "status", "n_params", "n_params_nonembed", "tokens", "flops", "loss", "entropy_rate")
            if c in runs.columns]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_num(r[c])}</td>" for c in cols) + "</tr>" for _, r in runs.iterrows())
    note = f"<p class='meta'>{html.escape(above_uniform_note(n_above))}</p>" if n_above else ""
    return f"<table><tr>{head}</tr>{body}</table>{note}"


STYLE = """
body { font-family: Helvetica, Arial, 'DejaVu Sans', sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border-bottom: 1px solid #eee; padding: 0.25em 0.8em; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; } .error { color: #a00; }
.flag { color: #a35a00; font-size: 0.85em; } ul.notes { font-size: 0.9em; }
.meta { color: #666; font-size: 0.85em; }
"""


def _figure_html(fig: Figure, out_dir: Path, cache_dir: Path) -> str:
    if fig.chart is None:
        return (f"<figure><figcaption>{html.escape(fig.name)}</figcaption>"
                f"<p class='error'>not drawn: {html.escape(fig.error or '')}</p></figure>")
    # Rendered once per format, and not at all when the same chart was rendered before (cache.py).
    png = cached_render(fig.chart, ".png", chart_to_png_bytes, cache_dir, PNG_SCALE)
    atomic_write_bytes(out_dir / f"{fig.name}.png", png)
    atomic_write_bytes(out_dir / f"{fig.name}.html", cached_render(
        fig.chart, ".html", lambda c: chart_to_html(c).encode(), cache_dir, PNG_SCALE))
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt='{html.escape(fig.name)}' src='{uri}'>"
            f"<figcaption>{html.escape(fig.name)} (<a href='{fig.name}.html'>interactive</a>, "
            f"<a href='{fig.name}.png'>png</a>)</figcaption></figure>")


def write_report(ws: Workspace, experiment: str, description: str, spec_path: str, outcomes: Sequence[Outcome],
                 figures: list[Figure], runs: pd.DataFrame, *, errors: Mapping[str, str] | None = None,
                 n_superseded: int = 0, failed_runs: dict[str, str] | None = None,
                 published: Sequence[PublishedCheck] = ()) -> Path:
    """Write reports/<experiment>/report.html (plus each figure as .png and .html) and return its path.

    `errors`: analyses that could not be computed, listed under the table. `n_superseded`: runs of
    earlier spec revisions left out of it, said in one line. `failed_runs` (run -> why) puts a
    banner at the top: the fits and figures miss those runs.
    """
    out_dir = ws.report_dir(experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [_figure_html(fig, out_dir, ws.cache_dir) for fig in figures if not fig.diagnostic]
    extra = [_figure_html(fig, out_dir, ws.cache_dir) for fig in figures if fig.diagnostic]
    diag = ("<h2>Diagnostics</h2><p class='meta'>Checks behind the numbers above (not for the paper).</p>"
            + "".join(extra)) if extra else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(experiment)}: scaledb report</title>
<style>{STYLE}</style></head><body>
{_failed_banner(failed_runs or {})}<h1>{html.escape(experiment)}</h1>
<p>{html.escape(description)}</p>
<p class="meta">spec {html.escape(spec_path)} · workspace {html.escape(str(ws.root))} · scaledb {__version__} · {utc_now()}</p>
<h2>Fits and comparisons</h2>{_fits_table(outcomes, errors) if outcomes or errors else '<p>No analyses declared in the spec.</p>'}
{_published_html(published)}<h2>Figures</h2>{''.join(parts) or '<p>No plots declared in the spec.</p>'}
{diag}
<h2>Runs</h2>{_runs_table(runs)}
{f"<p class='meta'>{n_superseded} runs {html.escape(SUPERSEDED_NOTE)}.</p>" if n_superseded else ""}
</body></html>
"""
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path


def _published_html(checks: Sequence[PublishedCheck]) -> str:
    if not checks:
        return ""
    items = "".join(f"<li><b>{html.escape(c.analysis)}, {html.escape(c.quantity)}</b>: {html.escape(c.sentence)}"
                    + (f" <i>{html.escape(c.decl.note)}</i>" if c.decl.note else "") + "</li>" for c in checks)
    return f"<h2>Against published values</h2><ul>{items}</ul>\n"


def _failed_banner(failed_runs: dict[str, str]) -> str:
    if not failed_runs:
        return ""
    items = "".join(f"<li>{html.escape(run)}: {html.escape(why)}</li>" for run, why in failed_runs.items())
    return (f"<div class='error' id='incomplete'><strong>Incomplete: {len(failed_runs)} run(s) have no result; "
            f"the fits and figures below leave them out.</strong><ul>{items}</ul></div>\n")
