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

import pandas as pd

from scaling_db.report.analyses import Outcome
from scaling_db.report.comparisons import run_analysis
from scaling_db.report.published import PublishedCheck, check_published
from scaling_db.spec.compiler import CompiledExperiment, compile_spec
from scaling_db.store.ingest import IngestReport, ingest_runs
from scaling_db.store.query import run_query
from scaling_db.report.html import Figure, write_report
from scaling_db.training.coordcheck import DEFAULT_WIDTHS, coordcheck_experiment
from scaling_db.training.records import RunState
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
    failed_runs: dict[str, str]  # run_id -> why it has no result (failed, or never ran)
    runs: pd.DataFrame  # the experiment's runs (final_loss rows, any status)
    upstream: pd.DataFrame  # its upstream runs (teachers), the same columns
    published: list[PublishedCheck]  # the spec's published values beside the measured ones


def reproduce(
    ws: Workspace,
    spec_path: str | Path,
    run_pending: Callable[[list[str]], None],
    *,
    bootstrap: int | None = None,
    smoke: bool = False,
) -> ReproduceResult:
    """Run the experiment of `spec_path` end to end and write its report into the workspace.

    `smoke` runs the spec's `smoke:` size instead (see `read_spec_source`).
    """
    compiled = compile_spec(spec_path, smoke=smoke)
    ws.write_compiled(compiled)
    run_ids = [m.run_id for m in [*compiled.upstream, *compiled.runs]]  # teachers first
    run_pending(run_ids)
    run_ids += _coordinate_check(ws, spec_path, compiled, run_pending)
    failed_runs = runs_without_result(ws, run_ids)
    loaded = ingest_runs(ws, run_ids)
    done = run_analysis(ws, compiled.experiment, compiled.analysis, bootstrap_n=bootstrap)
    fits, fit_errors = done.outcomes, done.errors
    study = Study(compiled.experiment, compiled.description, compiled.spec_path, compiled.analysis, True)
    figures = draw_figures(ws, study, fit_errors)
    runs = run_query(ws, "final_loss", params={"experiment": compiled.experiment, "status": "any"})
    superseded = run_query(ws, sql="SELECT count(*) AS n FROM superseded_runs WHERE experiment = $experiment",
                           params={"experiment": compiled.experiment})
    names = {m.run_id: m.name for m in [*compiled.upstream, *compiled.runs]}
    published = check_published(compiled.analysis.published, fits, fit_errors)
    report = write_report(ws, compiled.experiment, compiled.description, compiled.spec_path, fits, figures, runs,
                          errors=fit_errors, n_superseded=int(superseded.n.iloc[0]),
                          failed_runs={f"{names[r]} ({r})": why for r, why in failed_runs.items()},
                          published=published)
    return ReproduceResult(compiled, loaded, fits, fit_errors, figures, report, failed_runs, runs,
                           upstream_runs(ws, [m.run_id for m in compiled.upstream]), published)


def _coordinate_check(ws: Workspace, spec_path: str | Path, compiled: CompiledExperiment,
                      run_pending: Callable[[list[str]], None]) -> list[str]:
    """Run the coordinate check a declared `coordcheck` plot draws (its runs' ids; none if not declared)."""
    if not any(p.kind == "coordcheck" for p in compiled.analysis.plots):
        return []
    kinds = sorted({m.model.parameterization.kind for m in compiled.runs if m.model.kind == "transformer"})
    check = coordcheck_experiment(spec_path, widths=DEFAULT_WIDTHS, parameterizations=kinds or None)
    ws.write_compiled(check)
    ids = [m.run_id for m in check.runs]
    run_pending(ids)
    return ids


def upstream_runs(ws: Workspace, run_ids: list[str]) -> pd.DataFrame:
    """The final rows of these upstream runs (any experiment, revision and status)."""
    if not run_ids:
        return pd.DataFrame()
    experiments = run_query(ws, sql="SELECT DISTINCT experiment FROM runs WHERE list_contains($ids, run_id)",
                            params={"ids": run_ids})["experiment"]
    rows = [run_query(ws, "final_loss", params={"experiment": e, "status": "any", "revision": "all"})
            for e in experiments]
    found = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["run_id"])
    return found[found["run_id"].isin(run_ids)].reset_index(drop=True)


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
