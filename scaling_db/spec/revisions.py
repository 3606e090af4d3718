"""Spec revisions: which runs each compile of an experiment's spec produced, and which runs are superseded.

Every compile records the spec's revision (its `spec_hash`, the hash of the merged spec) and
the run ids it produces in `experiments/<experiment>/experiment.json` under `revisions`, oldest
first; `revision` and `run_ids` are those of the current (last) one. Runs that an earlier
revision produced and the current one does not (a changed `train.tokens`, a removed sweep
point) are *superseded*: kept and queryable, never deleted, but left out of the spec's fits,
figures and report and of the named queries by default (`revision = 'all'` or a revision hash
brings them back). A file written before revisions existed reads as one revision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: What the status, the plan and the report say about superseded runs, after their count.
SUPERSEDED_NOTE = ("superseded: produced by an earlier revision of the spec, not by the current one; "
                   "kept, but excluded from its fits, figures and report (query with -p revision=all)")


@dataclass(frozen=True)
class SpecRevision:
    """One compile of a spec: its hash, the run ids it produced, and when it was written (UTC, ISO)."""

    revision: str
    run_ids: tuple[str, ...]
    compiled_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "compiled_at": self.compiled_at, "run_ids": list(self.run_ids)}


def revisions_of(info: Mapping[str, Any] | None) -> list[SpecRevision]:
    """The revisions recorded in an experiment.json (parsed), oldest first; [] for none."""
    if not info:
        return []
    listed = info.get("revisions")
    if isinstance(listed, list):
        return [SpecRevision(str(r["revision"]), tuple(str(i) for i in r.get("run_ids") or ()), r.get("compiled_at"))
                for r in listed if isinstance(r, Mapping) and r.get("revision")]
    if isinstance(info.get("run_ids"), list):  # written before revisions were recorded
        return [SpecRevision(str(info.get("spec_hash") or "unknown"), tuple(str(i) for i in info["run_ids"]))]
    return []


def add_revision(history: Sequence[SpecRevision], revision: str, run_ids: Sequence[str],
                 compiled_at: str) -> list[SpecRevision]:
    """The history after a compile: unchanged when the spec is the current revision, else one more entry."""
    if history and history[-1].revision == revision and history[-1].run_ids == tuple(run_ids):
        return list(history)
    return [*history, SpecRevision(revision, tuple(run_ids), compiled_at)]


def superseded_run_ids(history: Sequence[SpecRevision], current: Sequence[str] | None = None) -> list[str]:
    """Run ids of earlier revisions that the current one (default: the last) does not produce."""
    if not history:
        return []
    keep = set(history[-1].run_ids if current is None else current)
    return sorted({r for rev in history for r in rev.run_ids} - keep)
