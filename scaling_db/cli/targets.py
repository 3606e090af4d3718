"""What a command's TARGETS name: spec files (compiled once), manifest files, experiments, run ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scaling_db.cli.common import sync_revisions
from scaling_db.errors import RunError
from scaling_db.spec.manifest import RunManifest, compute_run_id
from scaling_db.spec.schema import ClusterSpec
from scaling_db.workspace import Workspace, atomic_write_text

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Targets:
    """The run ids named (in order, without repeats) and the specs' `cluster:` sections, in order."""

    run_ids: list[str]
    clusters: list[ClusterSpec]


def resolve_targets(ws: Workspace, targets: tuple[str, ...], *, write: bool) -> list[str]:
    """Run ids named by specs (compiled, and written when `write`), manifest files, experiments or id prefixes."""
    return collect_targets(ws, targets, write=write).run_ids


def collect_targets(ws: Workspace, targets: tuple[str, ...], *, write: bool) -> Targets:
    """`resolve_targets`, with the `cluster:` sections of the specs (each spec compiled once)."""
    from scaling_db.spec.compiler import compile_spec

    run_ids: list[str] = []
    clusters: list[ClusterSpec] = []
    wrote = False
    for target in targets:
        path = Path(target)
        if path.suffix in SPEC_SUFFIXES:
            compiled = compile_spec(path)
            if write:
                ws.write_compiled(compiled)
                wrote = True
            run_ids += [m.run_id for m in [*compiled.upstream, *compiled.runs]]  # teachers first
            clusters.append(compiled.cluster)
        elif path.suffix == ".json" and path.is_file():
            run_ids.append(_adopt_manifest(ws, path, write=write))
        elif target in ws.experiments():
            info = ws.experiment_info(target)
            run_ids += info.get("upstream_run_ids", []) + info["run_ids"]
        elif found := ws.find_runs(target):
            run_ids += found
        else:
            raise RunError(
                f"{target}: not a spec (.yaml), a manifest (.json), an experiment or a run id in {ws.root}"
            )
    if wrote:
        sync_revisions(ws)
    return Targets(list(dict.fromkeys(run_ids)), clusters)


def _adopt_manifest(ws: Workspace, path: Path, *, write: bool) -> str:
    try:
        manifest = RunManifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise RunError(f"{path}: not a valid run manifest ({exc})") from None
    if compute_run_id(manifest.model_dump(mode="json")) != manifest.run_id:
        raise RunError(f"{path}: its run_id does not match its content (edited by hand?). Recompile the spec.")
    target = ws.manifest_path(manifest.run_id)
    if write and not target.exists():
        atomic_write_text(target, manifest.model_dump_json(indent=2) + "\n")
    return manifest.run_id
