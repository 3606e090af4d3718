"""The whole experiment in one call: compile, run what is pending, load, fit, plot, report.

Every stage is idempotent, so running it again skips finished runs (the runner checks their
status), loads only what changed (ingest is incremental), and refits and replots from the
database. The runner is passed in (`run_pending`) so this module stays free of execution
backends: the CLI hands it the local runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaling_db.report.analyses import Outcome
from scaling_db.report.comparisons import run_analysis
from scaling_db.spec.compiler import CompiledExperiment, compile_spec
from scaling_db.store.ingest import IngestReport, ingest_runs
from scaling_db.store.query import run_query
from scaling_db.report.html import Figure, write_report
from scaling_db.report.study import Study, draw_figures
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class ReproduceResult:
    compiled: CompiledExperiment
    ingest: IngestReport
    fits: list[Outcome]
    fit_errors: dict[str, str]
    figures: list[Figure]
    report: Path


def reproduce(
    ws: Workspace,
    spec_path: str | Path,
    run_pending: Callable[[list[str]], None],
    *,
    bootstrap: int | None = None,
) -> ReproduceResult:
    """Run the experiment of `spec_path` end to end and write its report into the workspace."""
    compiled = compile_spec(spec_path)
    ws.write_compiled(compiled)
    run_ids = [m.run_id for m in compiled.runs]
    run_pending(run_ids)
    loaded = ingest_runs(ws, run_ids)
    done = run_analysis(ws, compiled.experiment, compiled.analysis, bootstrap_n=bootstrap)
    fits, fit_errors = done.outcomes, done.errors
    study = Study(compiled.experiment, compiled.description, compiled.spec_path, compiled.analysis, True)
    figures = draw_figures(ws, study, fit_errors)
    runs = run_query(ws, "final_loss", params={"experiment": compiled.experiment, "status": "any"})
    report = write_report(ws, compiled.experiment, compiled.description, compiled.spec_path, fits, figures, runs,
                          errors=fit_errors)
    return ReproduceResult(compiled, loaded, fits, fit_errors, figures, report)
