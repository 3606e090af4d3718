"""Closed-form and nearest-neighbour learners: the runs of the two solvable models.

`solve(manifest, base_dir, cache_dir)` fits a `random_features` run by ridge regression
(Maloney, Roberts & Sully 2022) or a `percolation` run with Brill's nearest-neighbour regressor
(Brill 2024), and returns the losses a runner logs as the run's single checkpoint. Both are
deterministic in the manifest (data seed, training seed); see `scaling_db.sources.random_features`
and `scaling_db.sources.percolation` for the models and their theory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaling_db.errors import DataError
from scaling_db.spec.manifest import RunManifest


@dataclass(frozen=True)
class SolveResult:
    """Losses are mean squared errors; `entropy_rate` is None (these are regressions)."""

    train_loss: float | None
    eval_loss: float
    entropy_rate: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def solve(manifest: RunManifest, base_dir: Path, cache_dir: Path) -> SolveResult:
    """Fit and evaluate a closed-form run (`random_features` or `percolation` data)."""
    data, model, train = manifest.data, manifest.model, manifest.train
    if data.kind == "random_features":
        from scaling_db.sources.random_features import solve_random_features

        r = solve_random_features(data, model, train)
        return SolveResult(train_loss=r.train_loss, eval_loss=r.eval_loss, metrics=r.metrics)
    if data.kind == "percolation":
        from scaling_db.sources.percolation import solve_percolation

        p = solve_percolation(data, model, train, cache_dir)
        return SolveResult(train_loss=p.train_loss, eval_loss=p.eval_loss, metrics=p.metrics)
    raise DataError(
        f"run {manifest.run_id}: data kind {data.kind!r} trains a transformer, not a closed-form learner"
    )
