"""A tiny teacher_lm experiment (a 40-step teacher, two 4-step students) for the teacher tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import REPO

CORPUS = REPO / "specs" / "data" / "tiny_corpus.txt"
TEACHER = {"kind": "teacher_lm", "corpus": str(CORPUS), "n_layers": 1, "d_model": 16, "context": 16,
           "train_tokens": 40_000}


def teacher_spec(folder: Path, experiment: str = "students", widths: tuple[int, ...] = (8, 16),
                 **data: object) -> Path:
    """Write a teacher_lm spec (teacher fields overridden by `data`) and return its path."""
    spec = {
        "experiment": experiment,
        "data": {**TEACHER, **data},
        "model": {"kind": "transformer", "n_layers": 1, "d_model": 8, "d_head": 8, "context": 16},
        "train": {"optimizer": {"kind": "adamw", "lr": 1e-2}, "batch_size": 4, "steps": 4,
                  "checkpoints": {"kind": "linear", "count": 2}, "eval_tokens": 64},
        "sweep": {"axes": {"model.d_model": list(widths)}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
