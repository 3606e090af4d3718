"""The whole experiment in one call: compile, run what is pending, load, fit, plot, report.

Every stage is idempotent, so running it again skips finished runs (the runner checks their
status), loads only what changed (ingest is incremental), and reuses the fits and rendered
figures whose inputs did not change (`report.cache`, keyed by content hashes). The runner is passed in (`run_pending`) so this module stays free of execution
backends: the CLI hands it the local runner.

Runs that did not end as a result (failed, or still pending because the runner could not run
them) are named, with why, in `ReproduceResult.failed_runs` and in a banner at the top of the
report, so a report built from part of the experiment never looks complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaling_db.report.analyses import FitOutcome, FitRequest, store_outcome
from scaling_db.report.cache import cached_figure, cached_fit
from scaling_db.spec.compiler import CompiledExperiment, compile_spec
from scaling_db.errors import ScaledbError
from scaling_db.report.figures import FigureRequest
from scaling_db.store.ingest import IngestReport, ingest_runs
from scaling_db.store.query import run_query
from scaling_db.report.html import Figure, write_report
from scaling_db.training.records import RunState
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class ReproduceResult:
    compiled: CompiledExperiment
    ingest: IngestReport
    fits: list[FitOutcome]
    fit_errors: dict[str, str]
    figures: list[Figure]
    report: Path
    failed_runs: dict[str, str]  # run_id -> why it has no result (failed, or never ran)


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
    run_ids = [m.run_id for m in [*compiled.upstream, *compiled.runs]]  # teachers first
    run_pending(run_ids)
    failed_runs = runs_without_result(ws, run_ids)
    loaded = ingest_runs(ws, run_ids)
    fits, fit_errors = [], {}
    for decl in compiled.analysis.fits:
        req = FitRequest.from_decl(decl, compiled.experiment)
        if bootstrap is not None:
            req = FitRequest(**{**req.__dict__, "bootstrap": bootstrap})
        try:
            fits.append(store_outcome(ws, cached_fit(ws, req)))
        except ScaledbError as exc:  # one fit failing (e.g. too few runs yet) must not lose the others
            fit_errors[decl.name] = str(exc)
    figures = []
    for i, decl in enumerate(compiled.analysis.plots):
        name = decl.out or (f"{decl.kind}-{decl.fit}" if decl.fit else decl.kind)
        if decl.fit in fit_errors:
            figures.append(Figure(name, None, f"fit {decl.fit} failed: {fit_errors[decl.fit]}"))
            continue
        req = FigureRequest(kind=decl.kind, experiment=compiled.experiment, fit=decl.fit, query=decl.query, x=decl.x)
        try:
            figures.append(Figure(name, cached_figure(ws, req)))
        except ScaledbError as exc:
            figures.append(Figure(name, None, str(exc)))
    runs = run_query(ws, "final_loss", params={"experiment": compiled.experiment, "status": "any"})
    superseded = run_query(ws, sql="SELECT count(*) AS n FROM superseded_runs WHERE experiment = $experiment",
                           params={"experiment": compiled.experiment})
    names = {m.run_id: m.name for m in [*compiled.upstream, *compiled.runs]}
    report = write_report(ws, compiled.experiment, compiled.description, compiled.spec_path, fits, figures, runs,
                          n_superseded=int(superseded.n.iloc[0]),
                          failed_runs={f"{names[r]} ({r})": why for r, why in failed_runs.items()})
    return ReproduceResult(compiled, loaded, fits, fit_errors, figures, report, failed_runs)


def runs_without_result(ws: Workspace, run_ids: list[str]) -> dict[str, str]:
    """The runs that are neither finished nor diverged (a divergence is a result), with why."""
    out = {}
    for run_id in run_ids:
        status = ws.read_status(run_id)
        if status.status == RunState.FAILED:
            out[run_id] = (status.error or "failed").strip().splitlines()[0]
        elif not status.status.done:
            out[run_id] = f"not run to the end ({status.status.value}, step {status.step or 0})"
    return out
