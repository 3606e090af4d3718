"""What every execution backend (local, Slurm, Ray) implements and returns.

- `RunReport`: what happened to the runs asked for (one type for every backend);
- `ProgressSink`: where a backend reports progress (the CLI passes its display);
- `build_options`: a backend's options from the spec's typed `cluster:` section plus
  command-line flags (flags win; a flag the backend does not have is an error);
- `in_waves`: a cluster backend's call made once per wave of upstream runs (teachers first).

Every backend decides which runs need running with `scaling_db.training.execute.split_pending`
and executes each through `scaling_db.training.execute.execute_run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from scaling_db.errors import BackendError
from scaling_db.spec.schema import ClusterSpec
from scaling_db.training.records import RunState, RunStatus
from scaling_db.training.upstream import add_pending_upstream, order_waves
from scaling_db.workspace import Workspace


class ProgressSink(Protocol):
    """Where a runner reports progress (the CLI passes a rich display or plain lines)."""

    def start(self, total_steps: int, runs: int, skipped: int) -> None: ...
    def run_started(self, run_id: str, name: str, steps: int) -> None: ...
    def update(self, run_id: str, step: int, steps: int, tokens_per_s: float | None) -> None: ...
    def run_done(self, run_id: str, status: RunStatus | None) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunReport:
    """What happened: final statuses (skipped runs included), runner-level errors, interruption.

    The cluster backends also say where runs went (`backend`, `jobs`, `folder`), whether the
    driver waited for them, and which were already queued or running elsewhere (`in_flight`).
    """

    statuses: dict[str, RunStatus] = field(default_factory=dict)  # final (or, without waiting, current)
    errors: dict[str, str] = field(default_factory=dict)  # run_id -> why the runner could not run it
    skipped: list[str] = field(default_factory=list)  # already done
    interrupted: bool = False
    backend: str = "local"
    jobs: dict[str, str] = field(default_factory=dict)  # run_id -> the backend's job / task id
    folder: str | None = None  # Slurm: submitit's folder (job scripts, pickles, logs)
    waited: bool = True  # False with --no-wait: `statuses` hold the state at submission
    in_flight: dict[str, str] = field(default_factory=dict)  # run_id -> job already queued or running
    notes: list[str] = field(default_factory=list)  # what the user should hear (e.g. a placement limit)

    def count(self, state: RunState) -> int:
        return sum(1 for s in self.statuses.values() if s.status == state)

    def failures(self) -> dict[str, str]:
        """Runs that failed (in this call or, if skipped, earlier), run_id -> why, one line each."""
        out = {run_id: _one_line(status.error or "failed") for run_id, status in self.statuses.items()
               if status.status == RunState.FAILED}
        out.update({run_id: _one_line(why) for run_id, why in self.errors.items()})
        return out


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text


OptionsT = TypeVar("OptionsT")


def build_options(cls: type[OptionsT], cluster: ClusterSpec | None, flags: Mapping[str, Any],
                  backend: str) -> OptionsT:
    """`cls` (a backend's options dataclass) from the spec's `cluster:` section, then `flags`.

    Flags that are None were not given. The spec section is shared by every backend, so its
    keys another backend uses are left to that backend; a flag `cls` has no field for is an error.
    """
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(flags) - names)
    if unknown:
        raise BackendError(f"{', '.join('--' + k.replace('_', '-') for k in unknown)}: "
                           f"not an option of the {backend} backend (it has: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    if cluster is not None:
        values.update({k: v for k, v in cluster.model_dump(exclude_none=True).items() if k in names})
    values.update({k: v for k, v in flags.items() if v is not None})
    return cls(**values)


def merge_cluster(sections: list[ClusterSpec]) -> ClusterSpec | None:
    """The `cluster:` sections of several specs as one (keys set in later specs win)."""
    if not sections:
        return None
    merged: dict[str, Any] = {}
    for section in sections:
        merged.update(section.model_dump(exclude_unset=True))
    return ClusterSpec.model_validate(merged)


def in_waves(workspace: Workspace, run_ids: Sequence[str], submit: Callable[[list[str]], RunReport], *,
             wait: bool, retry_failed: bool = False) -> RunReport:
    """Run `submit` (one backend call) once per wave of upstream runs: teachers, then their students.

    Unfinished upstream runs of the runs asked for join the first wave. Without `wait` only the
    first wave is submitted (its dependants cannot start before it ends) and a note says to run
    the same command again once it has finished. Reports of the waves are merged into one.
    """
    known = [r for r in run_ids if workspace.manifest_path(r).exists()]
    manifests = add_pending_upstream(workspace, {r: workspace.load_manifest(r) for r in known},
                                     retry_failed=retry_failed)
    waves = order_waves(manifests)
    unknown = [r for r in run_ids if r not in manifests]  # the backend reports these as it always has
    if len(waves) <= 1:
        return submit([*manifests, *unknown])
    waves[0] = [*waves[0], *unknown]
    if not wait:
        report = submit(waves[0])
        later = sum(len(w) for w in waves[1:])
        report.notes.append(f"{later} runs need upstream runs (teachers) submitted now and were not submitted; "
                            f"run the same command again once those have finished.")
        return report
    merged = RunReport()
    for wave in waves:
        report = submit(wave)
        _merge(merged, report)
        if report.interrupted:
            break
    return merged


def _merge(into: RunReport, report: RunReport) -> None:
    into.statuses.update(report.statuses)
    into.errors.update(report.errors)
    into.skipped.extend(r for r in report.skipped if r not in into.skipped)
    into.jobs.update(report.jobs)
    into.in_flight.update(report.in_flight)
    into.notes.extend(n for n in report.notes if n not in into.notes)
    into.interrupted = into.interrupted or report.interrupted
    into.backend, into.waited = report.backend, report.waited
    into.folder = report.folder or into.folder

