"""An experiment's report as a Markdown page with its figures as PNG beside it, and an index.

This is the form the results gallery (`docs/results/`) takes: pages a repository renders, made
only by `scaledb reproduce ... --out DIR`, never edited by hand. A page holds the spec as written
(with the comments that say how it was scaled down from the paper), the plan as it ran (runs,
parameters, tokens, FLOPs, summed wall time and the machine), every analysis's numbers with
their 95% intervals, the published values set beside them with a verdict, the figures and the
runs. The index (`write_index`) has one row per page and one per published comparison.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scaling_db import __version__
from scaling_db.plot.export import PNG_SCALE, chart_to_png_bytes
from scaling_db.report.analyses import Outcome, above_uniform_note, fmt_interval, fmt_num, mark_above_uniform
from scaling_db.report.cache import cached_render
from scaling_db.report.html import Figure
from scaling_db.report.published import PublishedCheck
from scaling_db.spec.loader import read_spec_source
from scaling_db.store.query import run_query
from scaling_db.workspace import Workspace, atomic_write_bytes, atomic_write_text

PAGE = "README.md"  # rendered by code hosts when the folder is opened


@dataclass(frozen=True)
class Page:
    """Everything one page shows; `runs` and `upstream` are rows of the `final_loss` query."""

    experiment: str
    description: str
    spec_path: Path
    command: str  # the command that regenerates the page
    outcomes: Sequence[Outcome]
    errors: Mapping[str, str]
    figures: Sequence[Figure]
    runs: pd.DataFrame
    published: Sequence[PublishedCheck]
    upstream: pd.DataFrame = field(default_factory=pd.DataFrame)
    failed_runs: Mapping[str, str] = field(default_factory=dict)  # run id -> why it has no result
    report: Path | None = None  # the workspace's HTML report of the same results
    machine: str = ""  # where the runs trained (`describe_machines`)
    smoke: bool = False


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _spec_section(path: Path) -> str:
    parts = []
    for p in read_spec_source(path).files:
        parts.append(f"`{p.name}`{' (base)' if p != path else ''}:\n\n```yaml\n{p.read_text(encoding='utf-8').rstrip()}\n```")
    return "\n\n".join(parts)


def _total(runs: pd.DataFrame, col: str) -> float | None:
    """The column's sum; None when no row has a value (FLOPs of closed-form runs)."""
    values = pd.to_numeric(runs[col], errors="coerce").dropna() if col in runs else pd.Series(dtype=float)
    return float(values.sum()) if len(values) else None


def _sum(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def describe_machines(ws: Workspace, run_ids: Sequence[str]) -> str:
    """Where the runs trained, as recorded with each (device and host); this machine's cores are
    named only for runs that trained here."""
    found = run_query(ws, sql="SELECT device, host, count(*) AS n FROM runs WHERE list_contains($ids, run_id) "
                              "GROUP BY ALL ORDER BY n DESC", params={"ids": [str(r) for r in run_ids]})
    here = socket.gethostname()
    parts = [f"{r['device'] or 'unknown device'} on {'this machine' if r['host'] == here else r['host'] or 'an unknown host'}"
             + (f" ({platform.machine()}, {os.cpu_count()} CPU cores)" if r["host"] == here else "")
             + (f" ({int(r['n'])} runs)" if len(found) > 1 else "") for _, r in found.iterrows()]
    return "; ".join(parts) or "no recorded machine"


def _plan_section(page: Page) -> str:
    runs, up = page.runs, page.upstream
    status = runs["status"].value_counts().to_dict() if "status" in runs else {}
    states = ", ".join(f"{n} {s}" for s, n in sorted(status.items())) or "none"
    n_col = "n_params_nonembed" if "n_params_nonembed" in runs else "n_params"
    sizes = pd.to_numeric(runs.get(n_col, pd.Series(dtype=float)), errors="coerce").dropna()
    size = f"{fmt_num(sizes.min(), 3)} to {fmt_num(sizes.max(), 3)}" if len(sizes) else "n/a"
    wall = _sum(_total(runs, "wall_time_s"), _total(up, "wall_time_s")) or 0.0
    rows = [
        ("runs", f"{len(runs)} ({states})" + (f", plus {len(up)} upstream (trained once, reused)" if len(up) else "")),
        (f"parameters ({n_col})", size),
        ("tokens (or samples), all runs", fmt_num(_sum(_total(runs, "tokens"), _total(up, "tokens")), 3)),
        ("training FLOPs (exact convention)", fmt_num(_sum(_total(runs, "flops"), _total(up, "flops")), 3)
         or "n/a (closed-form solutions)"),
        ("wall time, summed over runs", f"{wall / 60:.1f} min, {page.machine or 'machine not recorded'}"),
    ]
    out = _table(["", ""], rows)
    if len(up):
        out += "\n\nUpstream runs (the data sources' teachers):\n\n" + _table(
            ["run", "status", "parameters", "tokens", "final loss"],
            [(r["name"], r["status"], fmt_num(r.get("n_params"), 3), fmt_num(r.get("tokens"), 3),
              fmt_num(r.get("loss"), 4)) for _, r in up.iterrows()])
    return out


def _results_section(page: Page) -> str:
    rows = [(o.name, r["quantity"], fmt_num(r["estimate"]), fmt_interval(r["lo"], r["hi"]), r.get("flag") or "")
            for o in page.outcomes for r in o.table()]
    parts = [_table(["analysis", "quantity", "estimate", "95% interval", "flag"], rows) if rows
             else "No analysis produced numbers."]
    parts += [f"- **{name}** not computed: {why}" for name, why in page.errors.items()]
    for o in page.outcomes:
        notes = o.notes()
        if notes:
            parts.append(f"Notes on `{o.name}`:\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)


def _published_section(checks: Sequence[PublishedCheck]) -> str:
    if not checks:
        return "The spec names no published values for these results."
    parts = []
    for c in checks:
        text = f"- **{c.analysis}, {c.quantity}**: {c.sentence}"
        if c.decl.note:
            text += f" *{c.decl.note.strip()}*"
        parts.append(text)
    return "\n".join(parts)


def _figures_section(page: Page, out_dir: Path, cache_dir: Path) -> str:
    parts = []
    for fig in page.figures:
        if fig.chart is None:
            parts.append(f"**{fig.name}**: not drawn ({fig.error}).")
            continue
        png = cached_render(fig.chart, ".png", chart_to_png_bytes, cache_dir, PNG_SCALE)
        atomic_write_bytes(out_dir / f"{fig.name}.png", png)
        label = " (diagnostic)" if fig.diagnostic else ""
        parts.append(f"**{fig.name}**{label}\n\n![{fig.name}]({fig.name}.png)")
    return "\n\n".join(parts) or "The spec declares no figures."


def _runs_section(runs: pd.DataFrame) -> str:
    """The runs, a finished run above the uniform-guess loss marked as `scaledb status` marks it."""
    runs, n_above = mark_above_uniform(runs)
    cols = [c for c in ("name", "status", "n_params_nonembed", "tokens", "flops", "loss", "entropy_rate",
                        "wall_time_s") if c in runs.columns]
    table = _table(cols, [[fmt_num(v, 4) if isinstance(v, float) else v for v in r]
                          for r in runs[cols].itertuples(index=False)])
    return table + (f"\n\n{above_uniform_note(n_above)}." if n_above else "")


def write_page(page: Page, out_dir: Path, cache_dir: Path) -> Path:
    """Write out_dir/README.md and the figures' PNGs beside it; return the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    banner = ""
    if page.smoke:
        banner += "> **Smoke size**: the spec's `smoke:` section shrank this run to check the pipeline. These numbers are not results.\n\n"
    if page.failed_runs:
        banner += (f"> **Incomplete**: {len(page.failed_runs)} run(s) have no result; the numbers below leave them out.\n"
                   + "".join(f"> - {run}: {why}\n" for run, why in page.failed_runs.items()) + "\n")
    text = f"""# {page.experiment}

{banner}{page.description}

Generated by scaledb {__version__} with `{page.command}`; do not edit by hand.

## Plan, as it ran

{_plan_section(page)}

## Results (95% intervals)

{_results_section(page)}

## Against published values

{_published_section(page.published)}

## Figures

{_figures_section(page, out_dir, cache_dir)}

## Spec

{_spec_section(page.spec_path)}

## Runs

{_runs_section(page.runs)}
"""
    path = out_dir / PAGE
    atomic_write_text(path, text)
    return path


def write_index(pages: Sequence[tuple[Page, Path]], out_dir: Path, command: str) -> Path:
    """out_dir/README.md: one row per page, then every published comparison with its verdict."""
    rows = [(f"[{p.experiment}]({path.parent.relative_to(out_dir).as_posix()}/{PAGE})", p.description, len(p.runs),
             f"{(_sum(_total(p.runs, 'wall_time_s'), _total(p.upstream, 'wall_time_s')) or 0.0) / 60:.1f}",
             len(p.failed_runs) or "") for p, path in pages]
    total_wall = sum((_sum(_total(p.runs, "wall_time_s"), _total(p.upstream, "wall_time_s")) or 0.0) for p, _ in pages)
    rows.append(("**all**", "", sum(len(p.runs) for p, _ in pages), f"{total_wall / 60:.1f}",
                 sum(len(p.failed_runs) for p, _ in pages) or ""))
    checks = [(p.experiment, c.analysis, c.quantity, fmt_num(c.estimate, 3), fmt_interval(c.lo, c.hi),
               f"{fmt_num(c.decl.value, 3)} ({c.decl.source})", c.verdict) for p, _ in pages for c in p.published]
    smoke = ("> **Smoke size**: these pages were made at the specs' `smoke:` sizes; they check the pipeline, "
             "not the science.\n\n") if any(p.smoke for p, _ in pages) else ""
    published = (_table(["experiment", "analysis", "quantity", "measured", "95% interval", "published", "verdict"],
                        checks) if checks else "No spec names a published value.")
    text = f"""# Results gallery

{smoke}Every page here is generated by scaledb {__version__} from the specs it names, with `{command}`;
nothing is written by hand. Wall times are the runs' training clocks summed, on the machine that made them.

{_table(["experiment", "what", "runs", "wall time (min)", "runs without result"], rows)}

## Published values

{published}
"""
    path = out_dir / PAGE
    atomic_write_text(path, text)
    return path
