"""The plan of a compiled experiment: which runs are new, compiled, finished or failed, and what they cost.

Wall-time estimates come from speed measured on this machine where there is any: the finished
runs in the database (`scaling_db.store.throughput.measured_throughput`) give, per device and
model shape, the trainer's steady-state tokens/s and the time a run spends outside training
steps (evaluation, records), both on the trainer's clock: a worker's start (importing torch) and
building the data source are not counted.

A training step costs a per-step overhead (Python, kernel launches, the optimizer's loop over
tensors; what dominates small models) and its FLOPs at the device's rate; the two overlap, so a
step takes about the larger of them, smoothly:

    seconds per step = sqrt(overhead_s^2 + (flops_per_step / flops_per_s)^2)      (`StepModel`)

Why not their sum: on a CPU, widths 8, 16 and 24 of `specs/ba_graph.yaml` step in the same
30 ms, and only wider ones grow, at ~80 GFLOP/s (docs/performance.md); a sum fitted to the flat
small widths either finds no compute term at all (every wider run estimated at 30 ms) or, split
at an assumed rate, counts their compute twice (1.2-1.4x too long).

The rate is measured where the measured shapes (same kind, host and device; any experiment)
show it: squared step times are linear in squared FLOPs, fitted by least squares, and the fitted
rate is used when compute is at least half of the largest measured step. Otherwise (one shape,
or shapes that are all overhead-bound) the rate is the assumed one (`--gflops`) and the overhead
what the measured steps leave beside it; a device that proved faster than assumed is taken at
its own speed. A run to do is estimated as its steps at the model's step time, plus the time
outside steps of the nearest measured shape. Without measurements the estimate is a FLOP-based
guess at the assumed GFLOP/s, and says so.

Upstream runs (teachers, trained before the experiment's runs) are rows of the plan, first and
marked `upstream`; their cost counts in the totals, not in the per-run ranges of the sweep.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scaling_db.spec.compiler import CompiledExperiment
from scaling_db.spec.manifest import RunManifest
from scaling_db.spec.revisions import revisions_of, superseded_run_ids
from scaling_db.workspace import Workspace


#: GFLOP/s of one worker assumed where nothing measured says otherwise (`--gflops`): what one CPU
#: core reached on this project's machine once compute dominated the step (the gallery's
#: d_model 256-512 runs, one thread each: 74-78 GFLOP/s; docs/performance.md). With one measured
#: shape it splits that shape's step into compute and overhead, so a low guess counts too much of
#: a small model's step as compute and overestimates wider models (30 did: 1.32x on a quiet machine).
DEFAULT_GFLOPS = 75.0


@dataclass(frozen=True)
class ThroughputSample:
    """One finished run's measured speed (see `scaling_db.store.throughput`)."""

    run_id: str
    device: str  # as the trainer resolved it: "cpu", "cuda:0", ...
    host: str
    model_kind: str
    d_model: int | None
    n_layers: int | None
    flops_per_token: float | None  # exact convention (training, 3x forward)
    tokens: int
    tokens_per_s: float | None  # the trainer's steady-state rate, evaluation excluded
    wall_time_s: float  # the trainer's clock at the last checkpoint
    tokens_per_step: int | None = None  # batch_size * context (None: not a step-based learner)

    @property
    def flops_per_s(self) -> float:
        """Training FLOP/s (the trainer's tokens/s; the whole run's when it did not say)."""
        rate = self.tokens_per_s or self.tokens / self.wall_time_s
        return rate * (self.flops_per_token or 1.0)

    @property
    def step_s(self) -> float:
        """Seconds per training step (per token when the step size is unknown)."""
        rate = self.tokens_per_s or self.tokens / self.wall_time_s
        return (self.tokens_per_step or 1) / rate

    @property
    def flops_per_step(self) -> float:
        return (self.flops_per_token or 1.0) * (self.tokens_per_step or 1)

    @property
    def other_s(self) -> float:
        """Seconds outside training steps: evaluation, writing records."""
        if not self.tokens_per_s:
            return 0.0
        return max(0.0, self.wall_time_s - self.tokens / self.tokens_per_s)


@dataclass(frozen=True)
class RunEstimate:
    seconds: float
    source: str  # "measured": scaled from finished runs; "flops": FLOP-based guess
    basis: str  # what it rests on, for people


@dataclass(frozen=True)
class StepModel:
    """Seconds per training step = sqrt(overhead_s^2 + (flops_per_step / flops_per_s)^2) (see the
    module docstring)."""

    overhead_s: float
    flops_per_s: float
    how: str  # how the two were found, for people

    def step_s(self, flops_per_step: float) -> float:
        return math.hypot(self.overhead_s, flops_per_step / self.flops_per_s)


def _device_kind(device: str) -> str:
    return device.split(":")[0]


def _shape(sample: ThroughputSample) -> str:
    return f"d_model={sample.d_model}, n_layers={sample.n_layers}" if sample.d_model else sample.model_kind


def fit_step_model(points: list[tuple[float, float]], gflops: float) -> StepModel:
    """The step model through (flops_per_step, seconds_per_step) points, one per measured shape."""
    n = len(points)
    if n > 1:
        xs, ys = [f * f for f, _ in points], [t * t for _, t in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
        intercept = my - slope * mx
        if intercept < 0:  # no room for an overhead: compute-bound, through the origin
            slope, intercept = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs), 0.0
        flops, seconds = max(points)
        if slope > 0 and flops * slope ** 0.5 >= seconds / 2:  # compute is a real part of the step
            return StepModel(intercept ** 0.5, slope ** -0.5, f"fitted to {n} shapes")
    rate = gflops * 1e9
    fastest = max(f / t for f, t in points)  # FLOP/s the device proved, were its steps all compute
    if fastest > rate:
        rate = fastest
    overhead = statistics.fmean(max(0.0, t * t - (f / rate) ** 2) for f, t in points) ** 0.5
    assumed = "its own" if rate > gflops * 1e9 else f"the assumed {gflops:g} GFLOP/s (--gflops)"
    shapes = "1 shape" if n == 1 else f"{n} shapes, overhead-bound"
    return StepModel(overhead, rate, f"{shapes}: compute at {assumed}")


def estimate_run(m: RunManifest, samples: list[ThroughputSample], gflops: float, host: str = "") -> RunEstimate:
    """Estimated seconds of one run on the trainer's clock (see the module docstring)."""
    fpt = float(m.flops_per_token["exact"]) if m.flops_per_token else None
    same = [s for s in samples if s.model_kind == m.model.kind and (s.flops_per_token is None) == (fpt is None)]
    if m.resources.device != "auto":
        same = [s for s in same if _device_kind(s.device) == m.resources.device]
    if host and any(s.host == host for s in same):
        same = [s for s in same if s.host == host]
    if len({_device_kind(s.device) for s in same}) > 1:  # `auto` picks the GPU where there is one
        same = [s for s in same if _device_kind(s.device) == "cuda"]
    if not same:
        flops = m.train_flops["exact"] if m.train_flops else 0.0
        return RunEstimate(flops / (gflops * 1e9), "flops", f"FLOP-based guess at {gflops:g} GFLOP/s")
    if fpt is None:  # closed-form learners: time per sample of the measured runs
        rate = statistics.median(s.tokens / s.wall_time_s for s in same)
        return RunEstimate(m.tokens / rate, "measured", f"measured on {len(same)} run(s) ({same[0].device})")
    by_shape: dict[float, list[ThroughputSample]] = {}
    for s in same:
        by_shape.setdefault(s.flops_per_step, []).append(s)
    model = fit_step_model([(f, statistics.median(s.step_s for s in group)) for f, group in by_shape.items()],
                           gflops)
    per_step = m.tokens // m.train.steps if m.train.kind == "lm" and m.train.steps else 1
    near = min(by_shape, key=lambda f: abs(math.log(f / (fpt * per_step))))
    group = by_shape[near]
    seconds = statistics.median(s.other_s for s in group) + m.tokens / per_step * model.step_s(fpt * per_step)
    ref = group[0]
    return RunEstimate(seconds, "measured",
                       f"measured on {len(group)} run{'s' * (len(group) > 1)} of {_shape(ref)} ({ref.device}): "
                       f"steps of {model.overhead_s * 1e3:.3g} ms overhead or FLOPs at "
                       f"{model.flops_per_s / 1e9:.3g} GFLOP/s, whichever is larger ({model.how})")


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
    #: where the estimate comes from: basis -> number of runs estimated on it
    wall_time_basis: dict[str, int]

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


def summarize_plan(compiled: CompiledExperiment, rows: list[PlanRow], gflops: float,
                   samples: list[ThroughputSample] | None = None, host: str = "") -> PlanSummary:
    """Counts, sizes, FLOPs and the serial wall time of the runs not yet finished (see `estimate_run`)."""
    runs = compiled.runs
    every = [*compiled.upstream, *runs]
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    todo = [r.manifest for r in rows if r.state not in ("finished",)]
    flops = None
    if all(m.train_flops for m in every):
        flops = {k: sum(m.train_flops[k] for m in every) for k in runs[0].train_flops}  # type: ignore[index]
    estimates = [estimate_run(m, samples or [], gflops, host) for m in todo]
    basis: dict[str, int] = {}
    for e in estimates:
        basis[e.basis] = basis.get(e.basis, 0) + 1
    wall = sum(e.seconds for e in estimates) if flops is not None or any(e.source == "measured" for e in estimates) \
        else None
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
        wall_time_basis=basis,
    )
