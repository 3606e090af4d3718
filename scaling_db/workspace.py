"""The workspace: one directory holding compiled manifests, run logs, caches and the database.

Layout (all paths relative to the workspace root):
    scaledb.duckdb                      the result database (one writer at a time)
    experiments/<experiment>/experiment.json   the compiled spec: its path and hash, description,
                                        analysis section, run ids, upstream run ids, dropped
                                        points and revisions (each compile's run ids)
    runs/<run_id>/manifest.json         the run's manifest (written once; identical on recompile)
    runs/<run_id>/status.json           pending | running | finished | failed | diverged
    runs/<run_id>/log.jsonl             append-only checkpoint records
    runs/<run_id>/state.pt              model + optimizer + data position, replaced atomically
    runs/<run_id>/lock, error.log       the running process's lock; a failed run's traceback
    runs/<run_id>/cancel                a request to stop the run (`scaledb cancel`)
    cache/                              built graphs, tokenizers, teacher models (by config hash)
    queries/                            the workspace's own named queries (optional)
    reports/<experiment>/               figures, the HTML report, coordcheck.json
    slurm/<experiment>/                 submitit's job files and logs (Slurm backend)

The root is `--workspace`, else `$SCALEDB_WORKSPACE`, else `./scaledb-workspace`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scaling_db.errors import RunError, WorkspaceError
from scaling_db.spec.manifest import RunManifest
from scaling_db.spec.revisions import add_revision, revisions_of
from scaling_db.training.records import RunState, RunStatus

ENV_VAR = "SCALEDB_WORKSPACE"
DEFAULT_DIRNAME = "scaledb-workspace"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so a reader (or a crash) never sees half a file.

    The file gets the mode `open` would give a new file (0666 less the umask), so a group can
    share a workspace. A workspace that cannot be written (read-only, full, a file where a
    directory belongs) raises `WorkspaceError` naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with mode 0666 so the umask applies (mkstemp's 0600
    would not let the group read the file the rename puts in place)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue


def _write_error(path: Path, exc: OSError) -> WorkspaceError:
    return WorkspaceError(
        f"{path}: cannot write ({exc.strerror or exc}). This command writes to the workspace: make it "
        "writable (permissions, a read-only mount, free space) or pass --workspace to use another one."
    )


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@dataclass(frozen=True)
class CompileWrite:
    """What writing a compiled experiment changed in the workspace."""

    new: list[str]
    existing: list[str]


def first_problem(exc: ValidationError) -> str:
    """What is wrong with a JSON file pydantic refused: its first problem (where, what) and how many."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    what = f"{where}: {first['msg']}" if where else first["msg"]
    n = exc.error_count()
    return what if n == 1 else f"{what}; {n} problems in all"


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> "Workspace":
        chosen = path or os.environ.get(ENV_VAR) or Path.cwd() / DEFAULT_DIRNAME
        return cls(Path(chosen))

    def exists(self) -> bool:
        """Whether the root holds a workspace: compiled runs or experiments, or a database."""
        return any((self.root / name).exists() for name in ("runs", "experiments", "scaledb.duckdb"))

    def require_existing(self) -> "Workspace":
        """This workspace, or `WorkspaceError` if there is none (read-only commands call this, so
        a mistyped path or directory is reported instead of silently creating a workspace there)."""
        if not self.exists():
            raise WorkspaceError(f"no scaledb workspace at {self.root}; compile a spec first or pass --workspace")
        return self

    # -- paths -------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "scaledb.duckdb"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def manifest_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "manifest.json"

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "log.jsonl"

    def status_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "status.json"

    def state_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "state.pt"

    def experiment_dir(self, experiment: str) -> Path:
        return self.root / "experiments" / experiment

    def report_dir(self, experiment: str) -> Path:
        return self.root / "reports" / experiment

    # -- manifests ---------------------------------------------------------------------------
    def write_compiled(self, compiled: Any) -> CompileWrite:
        """Write the manifests of a `CompiledExperiment` and its upstream runs; existing ones are left untouched."""
        new, existing = [], []
        for manifest in [*compiled.upstream, *compiled.runs]:
            path = self.manifest_path(manifest.run_id)
            if path.exists():
                existing.append(manifest.run_id)
                continue
            atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
            new.append(manifest.run_id)
        exp_dir = self.experiment_dir(compiled.experiment)
        run_ids = [m.run_id for m in compiled.runs]
        try:
            previous = json.loads((exp_dir / "experiment.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):  # first compile, or a damaged file
            previous = None
        history = add_revision(revisions_of(previous), compiled.spec_hash, run_ids,
                               datetime.now(timezone.utc).isoformat(timespec="seconds"))
        listing = {
            "experiment": compiled.experiment,
            "spec_path": compiled.spec_path,
            "spec_hash": compiled.spec_hash,
            "revision": compiled.spec_hash,
            "description": compiled.description,
            "analysis": compiled.analysis.model_dump(mode="json"),
            "run_ids": run_ids,
            "upstream_run_ids": [m.run_id for m in compiled.upstream],
            "dropped": [{"assignments": d.assignments, "reason": d.reason} for d in compiled.dropped],
            "revisions": [r.to_json() for r in history],  # every compile's runs, oldest first
        }
        atomic_write_text(exp_dir / "experiment.json", json.dumps(listing, indent=2, default=str) + "\n")
        return CompileWrite(new=new, existing=existing)

    def load_manifest(self, run_id: str) -> RunManifest:
        path = self.manifest_path(run_id)
        try:
            return RunManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RunError(f"{self.root}: no run {run_id!r} (no {path}). Compile its spec first.") from None
        except ValidationError as exc:
            raise WorkspaceError(f"{path}: not a valid manifest ({first_problem(exc)})") from None

    def run_ids(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if (p / "manifest.json").exists())

    def find_runs(self, prefix: str) -> list[str]:
        """Run ids starting with `prefix` (so users can type a short prefix, git-style)."""
        return [r for r in self.run_ids() if r.startswith(prefix)]

    def experiment_info(self, experiment: str) -> dict[str, Any]:
        path = self.experiment_dir(experiment) / "experiment.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise WorkspaceError(
                f"{self.root}: experiment {experiment!r} is not compiled here. Run `scaledb compile` first."
            ) from None

    def experiments(self) -> list[str]:
        base = self.root / "experiments"
        return sorted(p.name for p in base.iterdir() if (p / "experiment.json").exists()) if base.is_dir() else []

    # -- status ------------------------------------------------------------------------------
    def read_status(self, run_id: str) -> RunStatus:
        path = self.status_path(run_id)
        try:
            return RunStatus.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return RunStatus(run_id=run_id, status=RunState.PENDING)
        except ValidationError as exc:
            raise WorkspaceError(f"{path}: unreadable status file ({first_problem(exc)})") from None

    def write_status(self, status: RunStatus) -> None:
        atomic_write_text(self.status_path(status.run_id), status.model_dump_json(indent=2) + "\n")

