"""A run's manifest and status file -> its `runs` row, read through the typed `RunManifest` and `RunStatus`."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scaling_db.spec.manifest import ResolvedTransformer, RunManifest, canonical_json
from scaling_db.spec.schema import ClosedFormTrain
from scaling_db.store.database import to_utc
from scaling_db.store.tables import RUN_STATUSES
from scaling_db.training.records import RunStatus
from scaling_db.workspace import first_problem

#: Fields of the run identity that only pick a replicate: runs differing only here share a config_id.
SEED_FIELDS = (("train", "seed"), ("data", "seed"))


@dataclass(frozen=True)
class SkippedLine:
    """A line (or file) that was not loaded, and why. `line` is 1-based; None for a whole file."""

    path: str
    line: int | None
    kind: str  # truncated | corrupt-line | invalid | mismatch | damaged | file
    reason: str

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


def config_id(manifest: RunManifest) -> str | None:
    """Hash of the run identity without its seeds: the replicates of one configuration share it."""
    payload = manifest.identity_payload()
    for section, key in SEED_FIELDS:
        if isinstance(payload.get(section), dict):
            payload[section].pop(key, None)
    try:
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]
    except ValueError:
        return None


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


_STATUS_FIELDS = ("status", "entropy_rate", "git_sha", "device", "precision", "backend", "job_id", "host",
                  "last_step", "error", "diverged_at_step", "started_at", "finished_at", "updated_at")


def _status_columns(status: RunStatus | None, readable: bool) -> dict[str, Any]:
    """The status file's columns; an unreadable file gives status 'unknown' and nothing else."""
    if status is None:
        empty = dict.fromkeys(_STATUS_FIELDS)
        return {**empty, "status": "unknown" if not readable else "pending"}
    state = status.status.value
    return {
        "status": state if state in RUN_STATUSES else "unknown",
        "entropy_rate": _finite(status.entropy_rate),
        "git_sha": status.git_sha, "device": status.device, "precision": status.precision,
        "backend": status.backend, "job_id": status.job_id, "host": status.host,
        "last_step": status.step, "error": status.error, "diverged_at_step": status.diverged_at_step,
        "started_at": to_utc(status.started_at), "finished_at": to_utc(status.finished_at),
        # RunStatus fills a missing updated_at with now; the row says only what the file says.
        "updated_at": to_utc(status.updated_at) if "updated_at" in status.model_fields_set else None,
    }


def _model_columns(m: RunManifest) -> dict[str, Any]:
    model = m.model
    transformer = model if isinstance(model, ResolvedTransformer) else None
    return {
        "model_kind": model.kind,
        "n_layers": transformer.n_layers if transformer else None,
        "d_model": transformer.d_model if transformer else None,
        "n_heads": transformer.n_heads if transformer else None,
        "d_ff": transformer.d_ff if transformer else None,
        "context": transformer.context if transformer else None,
        "vocab_size": m.counts.vocab_size or (transformer.vocab_size if transformer else None),
        "parameterization": transformer.parameterization.kind if transformer else None,
    }


def _train_columns(m: RunManifest) -> dict[str, Any]:
    train = m.train
    lm = None if isinstance(train, ClosedFormTrain) else train
    flops = m.train_flops or {}
    return {
        "optimizer": lm.optimizer.kind if lm else None,
        "lr": _finite(lm.optimizer.lr) if lm else None,
        "weight_decay": _finite(lm.optimizer.weight_decay) if lm else None,
        "schedule": lm.schedule.kind if lm else None,
        "batch_size": lm.batch_size if lm else None,
        "steps": lm.steps if lm else None,
        "tokens_budget": lm.tokens if lm else train.samples,  # type: ignore[union-attr]
        "flops_budget_6n_nonembed": _finite(flops.get("6n_nonembed")),
        "flops_budget_6n": _finite(flops.get("6n")),
        "flops_budget_exact": _finite(flops.get("exact")),
        "seed": train.seed,
    }


def run_row(
    manifest: RunManifest, manifest_text: str, status: RunStatus | None, *, status_readable: bool = True,
    created_at: datetime | None, now: datetime,
) -> dict[str, Any]:
    """The `runs` row of one run: its typed manifest (and the file's text, stored whole) and status."""
    return {
        "run_id": manifest.run_id,
        "experiment": manifest.experiment,
        "name": manifest.name,
        "config_id": config_id(manifest),
        "n_params": manifest.counts.n_params,
        "n_params_nonembed": manifest.counts.n_params_nonembed,
        "n_params_embed": manifest.counts.n_params_embed,
        **_model_columns(manifest),
        **_train_columns(manifest),
        "data_seed": getattr(manifest.data, "seed", None),  # a corpus has no seed of its own
        "data_source": manifest.data.kind,
        "vars": json.dumps(manifest.vars, sort_keys=True),
        "tags": list(manifest.tags),
        "manifest": manifest_text,
        **_status_columns(status, status_readable),
        "created_at": created_at,
        "ingested_at": now,
    }


def read_run_files(run_dir: Path, run_id: str, now: datetime, problems: list[SkippedLine]) -> dict[str, Any] | None:
    """The runs row of the run in `run_dir`, or None (a problem appended) if its manifest is unusable."""
    manifest_path = run_dir / "manifest.json"
    try:
        text = manifest_path.read_text()
        created_at = to_utc(manifest_path.stat().st_mtime)
    except FileNotFoundError:
        problems.append(SkippedLine(str(manifest_path), None, "file",
                                    "no manifest.json: run not loaded. Compile its spec."))
        return None
    try:
        manifest = RunManifest.model_validate_json(text)
    except ValidationError as exc:
        problems.append(SkippedLine(str(manifest_path), None, "file",
                                    f"not a valid manifest ({first_problem(exc)}); run not loaded. "
                                    "`scaledb check` names the repair"))
        return None
    status, readable = _read_status(run_dir / "status.json", problems)
    row = run_row(manifest, text, status, status_readable=readable, created_at=created_at, now=now)
    row["run_id"] = run_id  # the directory names the run, as for its log lines
    return row


def _read_status(path: Path, problems: list[SkippedLine]) -> tuple[RunStatus | None, bool]:
    """(status, readable): (None, True) when there is no status file yet (the run is pending)."""
    try:
        return RunStatus.model_validate_json(path.read_bytes()), True
    except FileNotFoundError:
        return None, True
    except ValidationError as exc:
        problems.append(SkippedLine(str(path), None, "file", f"unreadable status file ({first_problem(exc)}); run "
                                    "stored as 'unknown': queries and fits leave it out. `scaledb check` names the repair"))
        return None, False
