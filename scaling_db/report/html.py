"""The experiment report: one self-contained HTML file with the figures, fits and runs.

Figures are embedded as PNG data URIs (no external files or scripts needed to view it), and
each is also saved beside the report as .png and .html (interactive) for papers and slides.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from scaling_db import __version__
from scaling_db.report.analyses import FitOutcome
from scaling_db.plot.export import PNG_SCALE, chart_to_html, chart_to_png_bytes
from scaling_db.report.cache import cached_render
from scaling_db.spec.revisions import SUPERSEDED_NOTE
from scaling_db.training.records import utc_now
from scaling_db.workspace import Workspace, atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Figure:
    name: str
    chart: alt.TopLevelMixin | None
    error: str | None = None  # why the figure could not be drawn (e.g. too few runs yet)


def _num(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return f"{int(v):,}"
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else html.escape(str(v))


def _fits_table(outcomes: list[FitOutcome]) -> str:
    rows = []
    for o in outcomes:
        for r in o.table():
            ci = f"[{_num(r['lo'])}, {_num(r['hi'])}]" if r["lo"] is not None else ""
            rows.append(f"<tr><td>{html.escape(o.request.name)}</td><td>{html.escape(o.request.law)}</td>"
                        f"<td>{html.escape(str(r['quantity']))}</td><td>{_num(r['estimate'])}</td><td>{ci}</td></tr>")
    notes = []
    for o in outcomes:
        line = f"<li><b>{html.escape(o.request.name)}</b>: {html.escape(o.formula())}; {o.fit.n_points} points"
        if "r2" in o.fit.stats:
            line += f", R² = {o.fit.stats['r2']:.4f}"
        if o.boot is not None:
            line += (f"; {o.boot.n_requested - o.boot.n_failed} bootstrap refits, resampling whole groups "
                     f"of {html.escape(o.boot.group)}")
        else:
            line += f"; {html.escape(o.intervals_method)}"
        if o.irreducible is not None:
            ir = o.irreducible
            line += (f"; fitted floor E = {ir.fitted:.4g} vs exact entropy rate {ir.true:.4g} "
                     f"({'inside' if ir.covered else 'outside'} the interval)")
        if o.fit.excluded:
            line += "; excluded: " + "; ".join(f"{html.escape(str(i))} ({html.escape(r)})" for i, r in o.fit.excluded)
        notes.append(line + "</li>")
    head = "<tr><th>fit</th><th>law</th><th>quantity</th><th>estimate</th><th>95% interval</th></tr>"
    return f"<table>{head}{''.join(rows)}</table><ul>{''.join(notes)}</ul>"


def _runs_table(runs: pd.DataFrame) -> str:
    cols = [c for c in ("name", "status", "n_params", "n_params_nonembed", "tokens", "flops", "loss", "entropy_rate")
            if c in runs.columns]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_num(r[c])}</td>" for c in cols) + "</tr>" for _, r in runs.iterrows())
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = """
body { font-family: Helvetica, Arial, 'DejaVu Sans', sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
td, th { border-bottom: 1px solid #eee; padding: 0.25em 0.8em; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; } .error { color: #a00; }
.meta { color: #666; font-size: 0.85em; }
"""


def write_report(ws: Workspace, experiment: str, description: str, spec_path: str, outcomes: list[FitOutcome],
                 figures: list[Figure], runs: pd.DataFrame, *, n_superseded: int = 0,
                 failed_runs: dict[str, str] | None = None) -> Path:
    """Write reports/<experiment>/report.html (plus each figure as .png and .html) and return its path.

    `n_superseded`: runs of earlier spec revisions left out of it, said in one line. `failed_runs`
    (run -> why) puts a banner at the top: the fits and figures miss those runs.
    """
    out_dir = ws.report_dir(experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for fig in figures:
        if fig.chart is None:
            parts.append(f"<figure><figcaption>{html.escape(fig.name)}</figcaption>"
                         f"<p class='error'>not drawn: {html.escape(fig.error or '')}</p></figure>")
            continue
        # Rendered once per format, and not at all when the same chart was rendered before (cache.py).
        png = cached_render(fig.chart, ".png", chart_to_png_bytes, ws.cache_dir, PNG_SCALE)
        atomic_write_bytes(out_dir / f"{fig.name}.png", png)
        atomic_write_bytes(out_dir / f"{fig.name}.html", cached_render(
            fig.chart, ".html", lambda c: chart_to_html(c).encode(), ws.cache_dir, PNG_SCALE))
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(fig.name)}' src='{uri}'>"
                     f"<figcaption>{html.escape(fig.name)} (<a href='{fig.name}.html'>interactive</a>, "
                     f"<a href='{fig.name}.png'>png</a>)</figcaption></figure>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(experiment)}: scaledb report</title>
<style>{STYLE}</style></head><body>
{_failed_banner(failed_runs or {})}<h1>{html.escape(experiment)}</h1>
<p>{html.escape(description)}</p>
<p class="meta">spec {html.escape(spec_path)} · workspace {html.escape(str(ws.root))} · scaledb {__version__} · {utc_now()}</p>
<h2>Fits</h2>{_fits_table(outcomes) if outcomes else '<p>No fits declared in the spec.</p>'}
<h2>Figures</h2>{''.join(parts) or '<p>No plots declared in the spec.</p>'}
<h2>Runs</h2>{_runs_table(runs)}
{f"<p class='meta'>{n_superseded} runs {html.escape(SUPERSEDED_NOTE)}.</p>" if n_superseded else ""}
</body></html>
"""
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path


def _failed_banner(failed_runs: dict[str, str]) -> str:
    if not failed_runs:
        return ""
    items = "".join(f"<li>{html.escape(run)}: {html.escape(why)}</li>" for run, why in failed_runs.items())
    return (f"<div class='error' id='incomplete'><strong>Incomplete: {len(failed_runs)} run(s) have no result; "
            f"the fits and figures below leave them out.</strong><ul>{items}</ul></div>\n")
