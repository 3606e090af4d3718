"""A spec's analysis as a unit: which experiments, which analyses, and the report they make.

A spec either compiles runs and analyses its own experiment, or trains nothing: it has no
`data`/`model`/`train` sections and names other experiments (`analysis: {experiments: [a, b]}`),
whose runs it analyses together. Both are read by `read_study`, run by `run_study` (fits,
comparisons and frontiers stored in `fits`, figures drawn) and reported by the same HTML writer,
so an analysis across experiments is as reproducible as one experiment's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scaling_db.errors import ScaledbError
from scaling_db.plot import save_chart
from scaling_db.plot.sheet import contact_sheet
from scaling_db.report.comparisons import AnalysisRun, run_analysis
from scaling_db.report.cache import cached_figure
from scaling_db.report.figures import DIAGNOSTIC_KINDS, FigureRequest
from scaling_db.report.html import Figure, write_report
from scaling_db.report.published import PublishedCheck, check_published
from scaling_db.spec.compiler import compile_source, validate_analysis_only
from scaling_db.spec.compiler import is_analysis_only as spec_is_analysis_only
from scaling_db.spec.loader import display_path, read_spec_source
from scaling_db.spec.schema import AnalysisSpec
from scaling_db.store.query import run_query
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class Study:
    """What a spec asks to analyse: the experiment it is filed under, and its analysis section."""

    experiment: str
    description: str
    spec_path: str
    analysis: AnalysisSpec
    trains: bool  # False: an analysis-only spec over `analysis.experiments`

    @property
    def experiments(self) -> tuple[str, ...]:
        return tuple(self.analysis.experiments) or (self.experiment,)


def is_analysis_only(path: str | Path) -> bool:
    """Whether the spec at `path` trains nothing (no data/model/train after `extends:`)."""
    return spec_is_analysis_only(read_spec_source(path))


def read_study(path: str | Path, *, smoke: bool = False) -> Study:
    """The analysis of a spec: compiled for a training spec, validated alone for an analysis-only one."""
    source = read_spec_source(path, smoke=smoke)
    if not spec_is_analysis_only(source):
        compiled = compile_source(source)
        return Study(compiled.experiment, compiled.description, compiled.spec_path, compiled.analysis, True)
    spec = validate_analysis_only(source)
    return Study(spec.experiment, spec.description, display_path(source.path), spec.analysis, False)


@dataclass(frozen=True)
class StudyResult:
    study: Study
    analysis: AnalysisRun
    figures: list[Figure]
    report: Path
    runs: pd.DataFrame  # the studied experiments' runs (final_loss rows, any status)
    published: list[PublishedCheck]  # the spec's published values beside the measured ones


def draw_figures(ws: Workspace, study: Study, errors: dict[str, str]) -> list[Figure]:
    """Every plot the spec declares; one that cannot be drawn says why instead."""
    figures = []
    for decl in study.analysis.plots:
        name = decl.out or (f"{decl.kind}-{decl.fit}" if decl.fit else decl.kind)
        if decl.fit in errors:
            figures.append(Figure(name, None, f"fit {decl.fit} failed: {errors[decl.fit]}"))
            continue
        req = FigureRequest(kind=decl.kind, experiment=study.experiment, fit=decl.fit, query=decl.query,
                            x=decl.x, experiments=tuple(study.analysis.experiments), param=decl.param,
                            keep_above_uniform=decl.keep_above_uniform)
        diagnostic = decl.kind in DIAGNOSTIC_KINDS
        try:
            figures.append(Figure(name, cached_figure(ws, req), diagnostic=diagnostic))
        except ScaledbError as exc:
            figures.append(Figure(name, None, str(exc), diagnostic=diagnostic))
    return figures


def run_study(ws: Workspace, study: Study, *, bootstrap_n: int | None = None, n_jobs: int = 1) -> StudyResult:
    """Run the study's analyses (stored in `fits`), draw its figures and write its report."""
    done = run_analysis(ws, study.experiment, study.analysis, bootstrap_n=bootstrap_n, n_jobs=n_jobs)
    figures = draw_figures(ws, study, done.errors)
    runs = []
    for e in study.experiments:
        try:
            runs.append(run_query(ws, "final_loss", params={"experiment": e, "status": "any"}))
        except ScaledbError:  # not in the database yet: its analyses already say so; the report goes on
            continue
    table = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=["name", "status"])
    published = check_published(study.analysis.published, done.outcomes, done.errors)
    report = write_report(ws, study.experiment, study.description, study.spec_path, done.outcomes, figures,
                          table, errors=done.errors, published=published)
    return StudyResult(study, done, figures, report, table, published)


def write_contact_sheet(ws: Workspace, study: Study, out: str | Path | None = None) -> list[Path]:
    """Every figure the spec declares on one page, from the stored fits (nothing is refitted); a
    figure that cannot be drawn is a cell saying why. Written as .png and .html to the report
    folder (`contact_sheet.*`), or to `out` (its format; a .png or .html gets the other beside it)."""
    figures = draw_figures(ws, study, {})
    cells = [(f.name, f.chart if f.chart is not None else f.error or "no chart") for f in figures]
    drawn = sum(f.chart is not None for f in figures)
    sheet = contact_sheet(cells, title=f"{study.experiment}: {drawn} of {len(figures)} figures drawn")
    first = Path(out) if out is not None else ws.report_dir(study.experiment) / "contact_sheet.png"
    pair = {".png": ".html", ".html": ".png"}.get(first.suffix.lower())
    paths = [first] + ([first.with_suffix(pair)] if pair else [])
    return [save_chart(sheet, path) for path in paths]
