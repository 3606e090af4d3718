"""Fake runs for the store tests: a compiled workspace plus log and status files written the way a
runner writes them (`CheckpointRecord.to_line()`, atomic status). Importable by spawned workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

from scaling_db.spec.compiler import compile_spec
from scaling_db.training.records import CheckpointRecord, RunState, RunStatus
from scaling_db.workspace import Workspace

#: A frozen copy of the default experiment (specs/ba_graph.yaml evolves with the science; these
#: tests need 5 runs of known shape): widths 16..96, 2 layers, heads of 16, context 50, vocab 500.
BA_SPEC_TEXT = """
experiment: ba_graph
description: Unbiased random walks on a 500-node BA graph (m=2); width sweep of 2-layer transformers.
tags: [graph, width-sweep]
data:
  kind: graph_walk
  graph: {kind: barabasi_albert, n: 500, m: 2, seed: 0}
model: {kind: transformer, n_layers: 2, d_model: 64, d_head: 16, context: 50}
train:
  optimizer: {kind: adamw, lr: 3.0e-3, weight_decay: 0.01}
  schedule: {kind: cosine, warmup_frac: 0.02}
  batch_size: 64
  tokens: 400_000
  checkpoints: {kind: log, count: 12, first: 5}
  eval_tokens: 20_000
sweep:
  axes:
    model.d_model: [16, 32, 48, 64, 96]
"""


def make_workspace(root: Path, spec: Path | None = None) -> tuple[Workspace, list]:
    """A workspace with the spec (default: the frozen BA sweep) compiled into it: (workspace, manifests)."""
    ws = Workspace(root)
    if spec is None:
        root.mkdir(parents=True, exist_ok=True)
        spec = root / "ba_graph.yaml"
        spec.write_text(BA_SPEC_TEXT)
    compiled = compile_spec(spec)
    ws.write_compiled(compiled)
    return ws, compiled.runs


def record(run_id: str, step: int, *, n_params: int = 10_000, loss: float | None = None, **extra) -> CheckpointRecord:
    """A plausible checkpoint: loss falls with step, FLOPs = 6 N D in three conventions."""
    tokens = step * 3200
    loss = 2.0 + 3.0 / math.sqrt(step + 1) + 1e3 / n_params if loss is None else loss
    values = dict(
        run_id=run_id, step=step, tokens=tokens,
        flops_6n_nonembed=6.0 * n_params * 0.5 * tokens, flops_6n=6.0 * n_params * tokens,
        flops_exact=6.6 * n_params * tokens, train_loss=loss + 0.01, eval_loss=loss,
        lr=3e-3, wall_time_s=0.01 * step, tokens_per_s=320_000.0,
    )
    values.update(extra)
    return CheckpointRecord(**values)


def write_log(ws: Workspace, run_id: str, steps, *, n_params: int = 10_000, mode: str = "w", **extra) -> Path:
    path = ws.log_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        for step in steps:
            fh.write(record(run_id, step, n_params=n_params, **extra).to_line())
    return path


def write_status(ws: Workspace, run_id: str, state: str = "finished", *, raw: dict | None = None, **fields) -> None:
    """Write status.json as a runner does; `raw` adds fields RunStatus does not model (git_sha)."""
    ws.write_status(RunStatus(run_id=run_id, status=RunState(state), **fields))
    if raw:
        path = ws.status_path(run_id)
        path.write_text(json.dumps({**json.loads(path.read_text()), **raw}))


def finish_runs(ws: Workspace, manifests, steps=range(1, 11)) -> None:
    """Every run gets a full log (n_params from its manifest) and a finished status."""
    for m in manifests:
        write_log(ws, m.run_id, steps, n_params=m.counts.n_params)
        write_status(ws, m.run_id, "finished", step=max(steps), entropy_rate=1.725,
                     started_at="2026-01-01T10:00:00+00:00", finished_at="2026-01-01T11:00:00+01:00")
