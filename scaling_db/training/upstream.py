"""Upstream runs: what must finish before a run starts, and the order a set of runs can go in.

A manifest names the runs it needs finished (`RunManifest.upstream`: the teacher of `teacher_lm`
data). The local runner uses all three functions below; the Slurm and Ray runners submit in the
same waves (`runners.contract.in_waves`, one job array per wave; without waiting, only the first
wave is submitted and the rest on the next call):
- `add_pending_upstream` adds the unfinished upstream runs of what it was asked to run (a
  student selected with `--only` still gets its teacher trained; a finished teacher is reused),
- `order_waves` splits runs into waves, each needing only runs of earlier waves: run a wave,
  wait for it, then the next,
- `upstream_problem`, checked by `execute_run` before it starts a run, so that whatever the
  backend, a run never trains on a missing, failed or half-trained upstream; it fails instead,
  with a message naming the upstream run.
"""

from __future__ import annotations

from collections.abc import Mapping

from scaling_db.errors import RunError
from scaling_db.spec.manifest import RunManifest
from scaling_db.training.records import RunState
from scaling_db.workspace import Workspace


def add_pending_upstream(
    workspace: Workspace, manifests: Mapping[str, RunManifest], *, retry_failed: bool = False,
) -> dict[str, RunManifest]:
    """`manifests` preceded by their upstream runs (recursively) that still need running.

    An upstream run is added when it is compiled here and not done (or failed, with
    `retry_failed`); a finished one is reused, a missing one is left to `upstream_problem`.
    """
    added: dict[str, RunManifest] = {}

    def visit(manifest: RunManifest) -> None:
        for up in manifest.upstream:
            if up in manifests or up in added or not workspace.manifest_path(up).exists():
                continue
            state = workspace.read_status(up).status
            if state.done and not (retry_failed and state == RunState.FAILED):
                continue
            upstream = workspace.load_manifest(up)
            visit(upstream)
            added[up] = upstream

    for manifest in manifests.values():
        visit(manifest)
    return {**added, **manifests}


def order_waves(manifests: Mapping[str, RunManifest]) -> list[list[str]]:
    """Run ids in waves: a run comes one wave after the latest of its upstream runs among
    `manifests` (upstream runs not among them impose nothing). Order within a wave is kept."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def depth_of(run_id: str) -> int:
        if run_id not in depth:
            if run_id in visiting:  # ids hash their upstream ids, so only hand-made manifests get here
                raise RunError(f"run {run_id}: its upstream runs form a cycle. Recompile the specs.")
            visiting.add(run_id)
            ups = [u for u in manifests[run_id].upstream if u in manifests]
            depth[run_id] = 1 + max(map(depth_of, ups)) if ups else 0
            visiting.discard(run_id)
        return depth[run_id]

    waves: list[list[str]] = []
    for run_id in manifests:
        d = depth_of(run_id)
        waves.extend([] for _ in range(d + 1 - len(waves)))
        waves[d].append(run_id)
    return waves


def upstream_problem(workspace: Workspace, manifest: RunManifest) -> str | None:
    """Why `manifest` cannot start yet (an upstream run missing or not finished), or None."""
    for up in manifest.upstream:
        if not workspace.manifest_path(up).exists():
            return (f"upstream run {up} is not in this workspace. Compile the spec again "
                    "(`scaledb run SPEC` compiles it and trains it first).")
        status = workspace.read_status(up)
        if status.status == RunState.FINISHED:
            continue
        name = workspace.load_manifest(up).name
        why = f" ({status.error})" if status.error else ""
        fix = (f"fix it, train it again (`scaledb run {up} --retry-failed`)" if status.status.done
               else f"train it first (`scaledb run {up}`)")
        return (f"upstream run {up} ({name}) is {status.status.value}{why}, not finished: {fix}, "
                "then run this one with --retry-failed.")
    return None
