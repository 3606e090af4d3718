"""Test doubles shared by the training tests (importable by spawned worker processes too)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from scaling_db.spec.compiler import compile_spec
from scaling_db.workspace import Workspace


class FakeWalkSource:
    """A random walk on a fixed random digraph: every token has `degree` equally likely successors.

    Same interface as `scaling_db.sources` token sources: deterministic in (split, index),
    train and eval drawn from different seeds.
    """

    def __init__(self, vocab_size: int = 32, degree: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.seed = seed
        self.successors = np.stack([rng.choice(vocab_size, size=degree, replace=False) for _ in range(vocab_size)])
        self.entropy_rate = math.log(degree)

    def batch(self, split: str, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, {"train": 0, "eval": 1}[split], index])
        out = np.empty((batch_size, seq_len), dtype=np.int64)
        out[:, 0] = rng.integers(0, self.vocab_size, batch_size)
        picks = rng.integers(0, self.successors.shape[1], (batch_size, seq_len - 1))
        for t in range(1, seq_len):
            out[:, t] = self.successors[out[:, t - 1], picks[:, t - 1]]
        return out

def fake_build_token_source(manifest, workspace):
    """A `build_source` for `execute_run` and the runners (module level: picklable for workers)."""
    return FakeWalkSource(vocab_size=manifest.model.vocab_size)


SPEC = {
    "experiment": "tiny",
    "data": {"kind": "graph_walk", "graph": {"kind": "erdos_renyi_gnm", "n": 32, "m": 64}},
    "model": {"kind": "transformer", "n_layers": 2, "d_model": 32, "d_head": 8, "context": 16},
    "train": {
        "optimizer": {"kind": "adamw", "lr": 3e-3},
        "schedule": {"kind": "cosine", "warmup_frac": 0.1},
        "batch_size": 8,
        "steps": 40,
        "checkpoints": {"kind": "log", "count": 6, "first": 2},
        "eval_tokens": 64,
    },
}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) and "kind" not in v else v
    return out


def write_spec(directory: Path, name: str = "tiny.yaml", **sections) -> Path:
    spec = merge(SPEC, sections)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def compiled_workspace(tmp_path: Path, **sections) -> tuple[Workspace, list[str]]:
    """A workspace under tmp_path with the tiny spec (plus overrides) compiled into it."""
    spec = write_spec(tmp_path, **sections)
    ws = Workspace(tmp_path / "ws")
    compiled = compile_spec(spec)
    ws.write_compiled(compiled)
    return ws, [m.run_id for m in compiled.runs]


def main(argv: list[str]) -> None:
    """`python tests/fakes.py ROOT RUN_ID [THREADS]`: execute one run with the fake source (for kill tests)."""
    import scaling_db.training.trainer  # noqa: F401 - import torch first, so "running" means training is near
    from scaling_db.training.execute import execute_run

    execute_run(Workspace(argv[0]), argv[1], device="cpu", threads=int(argv[2]) if len(argv) > 2 else 1,
                build_source=fake_build_token_source)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
