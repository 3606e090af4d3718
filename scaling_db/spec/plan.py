"""The plan of a compiled experiment: which runs are new, compiled, finished or failed, and what they cost.

Upstream runs (teachers, trained before the experiment's runs) are rows of the plan, first and
marked `upstream`; their cost counts in the totals, not in the per-run ranges of the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_db.spec.compiler import CompiledExperiment
from scaling_db.spec.manifest import RunManifest
from scaling_db.spec.revisions import revisions_of, superseded_run_ids
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class PlanRow:
    manifest: RunManifest
    state: str  # "new" (never compiled here) or the run's status: pending, running, finished, ...
    upstream: bool = False  # trained first, for the experiment's runs (a teacher)


@dataclass(frozen=True)
class PlanSummary:
    n_runs: int  # the experiment's own runs
    n_upstream: int
    n_todo: int
    states: dict[str, int]
    params: tuple[int, int]
    params_nonembed: tuple[int, int]
    tokens: tuple[int, int]
    tokens_total: int
    flops: dict[str, float] | None
    wall_time_s: float | None

    @property
    def counts_line(self) -> str:
        order = ("new", "pending", "running", "finished", "failed", "diverged")
        return ", ".join(f"{self.states.get(s, 0)} {s}" for s in order if self.states.get(s) or s == "new")

    @property
    def wall_time_text(self) -> str:
        t = self.wall_time_s or 0.0
        return f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min" if t < 7200 else f"{t / 3600:.1f} h"


def plan_rows(ws: Workspace, compiled: CompiledExperiment) -> list[PlanRow]:
    """One row per run, upstream runs first."""
    rows = []
    for m in [*compiled.upstream, *compiled.runs]:
        state = ws.read_status(m.run_id).status.value if ws.manifest_path(m.run_id).exists() else "new"
        rows.append(PlanRow(m, state, upstream=m in compiled.upstream))
    return rows


def superseded_runs(ws: Workspace, experiment: str, compiled: CompiledExperiment | None = None) -> list[str]:
    """Run ids in the workspace that earlier revisions of the experiment's spec produced and its
    current revision (or `compiled`, when given: the revision about to be written) does not."""
    if experiment not in ws.experiments():
        return []
    history = revisions_of(ws.experiment_info(experiment))
    current = [m.run_id for m in compiled.runs] if compiled is not None else None
    return [r for r in superseded_run_ids(history, current) if ws.manifest_path(r).exists()]


def summarize_plan(compiled: CompiledExperiment, rows: list[PlanRow], gflops: float) -> PlanSummary:
    runs = compiled.runs
    every = [*compiled.upstream, *runs]
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    todo = [r.manifest for r in rows if r.state not in ("finished",)]
    flops = None
    wall = None
    if all(m.train_flops for m in every):
        flops = {k: sum(m.train_flops[k] for m in every) for k in runs[0].train_flops}  # type: ignore[index]
        wall = sum(m.train_flops["exact"] for m in todo) / (gflops * 1e9)  # type: ignore[index]
    return PlanSummary(
        n_runs=len(runs),
        n_upstream=len(compiled.upstream),
        n_todo=len(todo),
        states=states,
        params=(min(m.counts.n_params for m in runs), max(m.counts.n_params for m in runs)),
        params_nonembed=(min(m.counts.n_params_nonembed for m in runs), max(m.counts.n_params_nonembed for m in runs)),
        tokens=(min(m.tokens for m in runs), max(m.tokens for m in runs)),
        tokens_total=sum(m.tokens for m in every),
        flops=flops,
        wall_time_s=wall,
    )
