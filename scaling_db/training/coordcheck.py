"""Coordinate checks (Tensor Programs V, Sec. 7 / Fig. 5): is the parameterization width-stable?

A coordinate check trains the spec's model for a few steps at several widths and records the
mean |activation| of each layer at every step. Under muP these curves lie on top of each other
across widths; under SP (with Adam) the hidden and output activations grow with width after
the first update. The runs are ordinary runs of a derived experiment `<experiment>-coordcheck`
(constant LR, checkpoints at steps 0..N, one eval batch), so their activations are stored like
any other metric (`act_mean_abs.<layer>` in each checkpoint record, measured on the first
held-out batch) and a summary is written to `reports/<experiment>-coordcheck/coordcheck.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scaling_db.spec.compiler import CompiledExperiment, compile_source
from scaling_db.errors import RunError, SpecError, SpecProblem
from scaling_db.spec.manifest import compute_run_id
from scaling_db.training.records import read_log
from scaling_db.spec.loader import SpecSource, display_path, read_spec_source
from scaling_db.workspace import Workspace, atomic_write_text

METRIC_PREFIX = "act_mean_abs."
DEFAULT_WIDTHS = (64, 128, 256, 512)
_MUP_ONLY = ("alpha_emb", "alpha_out", "zero_init_query", "zero_init_readout")


@dataclass(frozen=True)
class CoordPoint:
    parameterization: str
    width: int
    step: int
    layer: str
    mean_abs: float


def coordcheck_experiment(
    spec_path: str | Path,
    *,
    widths: Sequence[int],
    steps: int = 4,
    parameterizations: Sequence[str] | None = None,
) -> CompiledExperiment:
    """The spec's model at each width (x each parameterization), trained `steps` steps at constant LR."""
    source = read_spec_source(spec_path)
    data = json.loads(json.dumps(source.data))  # a deep copy of plain YAML data
    model, train = data.get("model", {}), data.get("train", {})
    if model.get("kind") != "transformer":
        raise SpecError(display_path(Path(spec_path)), [
            SpecProblem(display_path(Path(spec_path)), None, "model.kind",
                        f"a coordinate check needs a transformer (got {model.get('kind')!r})")])
    base = dict(model.get("parameterization") or {"kind": "sp"})
    kinds = list(parameterizations or [base.get("kind", "sp")])
    params = []
    for kind in kinds:
        p = {k: v for k, v in base.items() if kind == "mup" or k not in _MUP_ONLY}
        params.append({**p, "kind": kind})
    batch = int(train.get("batch_size", 64))
    context = int(model.get("context", 50))
    train.pop("tokens", None)
    train.update({
        "steps": steps,
        "schedule": {"kind": "constant", "warmup_frac": 0.0},
        "checkpoints": {"kind": "linear", "count": steps},
        "eval_tokens": batch * context,  # one batch: the activations are measured on it
    })
    data["train"] = train
    data["experiment"] = f"{data.get('experiment', 'spec')}-coordcheck"
    data["sweep"] = {"axes": {"model.d_model": [int(w) for w in widths], "model.parameterization": params}}
    data.pop("analysis", None)
    compiled = compile_source(SpecSource(source.path, data, source.lines))
    runs = []
    for m in compiled.runs:  # add step 0: the activations at initialisation
        m = m.model_copy(update={"train": m.train.model_copy(update={"checkpoint_steps": list(range(steps + 1))})})
        runs.append(m.model_copy(update={"run_id": compute_run_id(m.model_dump(mode="json"))}))
    return CompiledExperiment(
        experiment=compiled.experiment, spec_path=compiled.spec_path, spec_hash=compiled.spec_hash,
        description=f"coordinate check of {compiled.spec_path}", analysis=compiled.analysis, runs=runs,
        upstream=compiled.upstream,
    )


def collect_coordcheck(workspace: Workspace, compiled: CompiledExperiment) -> list[CoordPoint]:
    """The recorded mean |activation| of every layer, step, width and parameterization."""
    points = []
    for m in compiled.runs:
        status = workspace.read_status(m.run_id)
        if not status.status.done:
            raise RunError(f"coordinate-check run {m.run_id} ({m.name}) is {status.status.value}; run it first.")
        for record in read_log(workspace.log_path(m.run_id)):
            for name, value in record.metrics.items():
                if name.startswith(METRIC_PREFIX):
                    points.append(CoordPoint(m.model.parameterization.kind, m.model.d_model, record.step,
                                             name.removeprefix(METRIC_PREFIX), value))
    return points


def write_coordcheck(workspace: Workspace, experiment: str, points: list[CoordPoint]) -> Path:
    path = workspace.report_dir(experiment) / "coordcheck.json"
    atomic_write_text(path, json.dumps([asdict(p) for p in points], indent=1) + "\n")
    return path


def spread_by_layer(points: list[CoordPoint], step: int) -> dict[tuple[str, str], dict[int, float]]:
    """{(parameterization, layer): {width: mean_abs}} at one step."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for p in points:
        if p.step == step:
            out.setdefault((p.parameterization, p.layer), {})[p.width] = p.mean_abs
    return out


def growth(values: dict[int, float]) -> float:
    """Ratio of the widest model's value to the narrowest's (1 = flat in width)."""
    widths = sorted(values)
    lo, hi = values[widths[0]], values[widths[-1]]
    return hi / lo if lo else float("inf") if hi else 1.0

