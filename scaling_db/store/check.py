"""`scaledb check`: is every result in the workspace what its run says it is?

Read-only. For each run it compares the files with each other and with the database:

    log.jsonl      every complete line a record of this run; no torn last line unless the run is
                   being written now; the steps those of the manifest's checkpoint schedule
                   (`train.checkpoint_steps`, resolved by the compiler), all of them for a finished
                   run, those before the divergence for a diverged one, none past the failure for a
                   failed one, and no gap below the last logged step
    status.json    readable; `running` only while a process holds the run's lock
    state.pt       present and a readable torch archive for an unfinished transformer run whose
                   progress is past its first state save (else a resume silently starts over)
    scaledb.duckdb readable; a `runs` row per run with the status file's status, and exactly the
                   log's steps as `checkpoints` rows

Every problem comes with the command that repairs it. A run whose log cannot be trusted
(`damaged`) is repaired only by training it again from scratch; training on CPU is
deterministic, so the curve comes back identical. `reset_damaged` sets such runs back to pending.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import duckdb

from scaling_db.errors import ScaledbError
from scaling_db.spec.manifest import RunManifest
from scaling_db.store.database import open_store
from scaling_db.training.execute import lock_is_held, reset_run, run_lock, stale_running
from scaling_db.store.tables import DAMAGED
from scaling_db.training.records import CheckpointRecord, LogRead, RunState, RunStatus, lost_final_checkpoint, scan_log
from scaling_db.workspace import Workspace


@dataclass(frozen=True)
class CheckProblem:
    """One thing found wrong: where, what, and the command that repairs it."""

    run_id: str | None
    path: str
    kind: str  # corrupt-line | torn-line | foreign-record | off-schedule | missing-steps | after-end |
    #            manifest | status | stale-running | state | database | db-run | db-status | db-steps
    message: str
    fix: str
    damaged: bool = False  # only training the run again from scratch repairs it
    line: int | None = None  # 1-based line of `path`, where one line is the problem

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


@dataclass
class CheckReport:
    runs_checked: int = 0
    problems: list[CheckProblem] = field(default_factory=list)

    @property
    def damaged(self) -> list[str]:
        """Run ids to train again from scratch, in order."""
        return list(dict.fromkeys(p.run_id for p in self.problems if p.damaged and p.run_id))

    def to_dict(self) -> dict[str, Any]:
        return {"runs_checked": self.runs_checked, "damaged": self.damaged,
                "problems": [dict(asdict(p), where=p.format()) for p in self.problems]}


def check_workspace(ws: Workspace, run_ids: Sequence[str] | None = None, *, workspace_flag: str = "") -> CheckReport:
    """Check the files of `run_ids` (default: every run) and the database against them.

    `workspace_flag` (e.g. `-w DIR`) ends every scaledb command given as a fix."""
    ids = list(run_ids) if run_ids is not None else ws.run_ids()
    report = CheckReport(runs_checked=len(ids))
    logs: dict[str, tuple[RunStatus, LogRead]] = {}
    for run_id in ids:
        checked = _check_run(ws, run_id, report.problems)
        if checked is not None:
            logs[run_id] = checked
    report.problems += _check_database(ws, logs)
    if workspace_flag:
        report.problems = [replace(p, fix=f"{p.fix} {workspace_flag}") if p.fix.startswith("scaledb ") else p
                           for p in report.problems]
    return report


def reset_damaged(ws: Workspace, run_ids: Sequence[str]) -> list[str]:
    """Forget the progress of damaged runs (log, state, status) so the next `scaledb run` trains
    them from scratch; returns the ids reset. A run being executed now raises `RunError`."""
    for run_id in run_ids:
        with run_lock(ws, run_id):
            reset_run(ws, run_id)
    return list(run_ids)


def _rerun(run_id: str) -> str:
    return f"scaledb run {run_id} --force"


# -- one run's files -------------------------------------------------------------------------------

def _check_run(ws: Workspace, run_id: str, out: list[CheckProblem]) -> tuple[RunStatus, LogRead] | None:
    try:
        manifest = ws.load_manifest(run_id)
    except ScaledbError as exc:
        path = ws.manifest_path(run_id)
        out.append(CheckProblem(run_id, str(path), "manifest", str(exc).removeprefix(f"{path}: "),
                                f"rm {path}, then compile the spec it came from again"))
        return None
    try:
        status = ws.read_status(run_id)
    except ScaledbError as exc:
        out.append(CheckProblem(run_id, str(ws.status_path(run_id)), "status",
                                str(exc).split(": ", 1)[-1] + _complete_log_note(ws, manifest),
                                _rerun(run_id), damaged=True))
        return None
    if lock_is_held(ws, run_id):
        return None  # being trained now: its files are moving; check it when it is done
    log = scan_log(ws.log_path(run_id))
    out += _check_log(ws, manifest, status, log)
    out += _check_state(ws, manifest, status, log)
    if stale_running(ws, status):
        out.append(CheckProblem(run_id, str(ws.status_path(run_id)), "stale-running",
                                "status is `running` but no process holds the run's lock (killed?); "
                                "running it again resumes from its last saved state", f"scaledb run {run_id}"))
    return status, log


def _complete_log_note(ws: Workspace, manifest: RunManifest) -> str:
    """Beside an unreadable status file: whether the log still holds the run's whole result."""
    logged = {r.step for r in scan_log(ws.log_path(manifest.run_id)).records if r.run_id == manifest.run_id}
    if not logged or not set(expected_steps(manifest)) <= logged:
        return ""
    return (f"; its log holds every checkpoint (through step {max(logged)}): restoring status.json from a copy "
            f"keeps the run, while the fix here trains it again from scratch (no command rewrites a status file)")


def expected_steps(manifest: RunManifest) -> list[int]:
    """The steps a complete log holds: the compiled checkpoint schedule (closed-form learners log step 1)."""
    return manifest.train.checkpoint_steps if manifest.train.kind == "lm" else [1]


def _check_log(ws: Workspace, manifest: RunManifest, status: RunStatus, log: LogRead) -> list[CheckProblem]:
    run_id, path = manifest.run_id, str(ws.log_path(manifest.run_id))
    rerun = _rerun(run_id)
    out = [CheckProblem(run_id, path, "corrupt-line", p.reason, rerun, damaged=True, line=p.line)
           for p in log.problems]
    if log.torn:
        lines = sum(1 for _ in open(path, "rb"))
        if status.status.done:
            out.append(CheckProblem(run_id, path, "torn-line", f"torn last line (no newline) in a "
                                    f"{status.status.value} run", rerun, damaged=True, line=lines))
        else:
            out.append(CheckProblem(run_id, path, "torn-line", "torn last line (an interrupted write; resuming "
                                    "the run cuts it off)", f"scaledb run {run_id}", line=lines))
    mine = [r for r in log.records if r.run_id == run_id]
    foreign = sorted({r.run_id for r in log.records} - {run_id})
    if foreign:
        out.append(CheckProblem(run_id, path, "foreign-record", f"holds records of other runs ({', '.join(foreign)})",
                                rerun, damaged=True))
    expected = expected_steps(manifest)
    logged = {r.step for r in mine}
    extra = sorted(logged - set(expected))
    if extra:
        out.append(CheckProblem(run_id, path, "off-schedule", f"steps {_steps(extra)} are not checkpoints of "
                                f"the manifest's schedule ({_steps(expected)})", rerun, damaged=True))
    missing, after = _gaps(status, expected, mine)
    if missing:
        out.append(CheckProblem(run_id, path, "missing-steps", f"checkpoint steps {_steps(missing)} missing "
                                f"({len(logged & set(expected))} of {len(expected)} logged, run "
                                f"{status.status.value})", rerun, damaged=True))
    if after:
        end = "divergence" if status.status == RunState.DIVERGED else "failure"
        out.append(CheckProblem(run_id, path, "after-end", f"steps {_steps(after)} logged after the {end} "
                                f"at step {_end_step(status)}", rerun, damaged=True))
    return out


def _end_step(status: RunStatus) -> int:
    if status.status == RunState.DIVERGED:
        return status.diverged_at_step or 0
    return status.step or 0


def _gaps(status: RunStatus, expected: list[int], mine: list[CheckpointRecord]) -> tuple[list[int], list[int]]:
    """Checkpoints that should be logged and are not; steps logged past a failure or divergence."""
    logged = {r.step for r in mine}
    if status.status == RunState.FINISHED:
        return sorted(set(expected) - logged), []
    if status.status in (RunState.DIVERGED, RunState.FAILED):
        end = _end_step(status)
        # a diverged run logs every checkpoint before the bad step (and maybe the bad one itself)
        below = [s for s in expected if s < end] if status.status == RunState.DIVERGED else [s for s in expected
                                                                                            if s <= end]
        return sorted(set(below) - logged), sorted(s for s in logged if s > end)
    last = max(logged, default=0)  # unfinished: a resume never fills a gap below what it logged
    return sorted({s for s in expected if s < last} - logged), []


def _steps(steps: list[int], shown: int = 8) -> str:
    text = ", ".join(map(str, steps[:shown]))
    return text + (f", ... ({len(steps)} in all)" if len(steps) > shown else "")


def _check_state(ws: Workspace, manifest: RunManifest, status: RunStatus, log: LogRead) -> list[CheckProblem]:
    """An unfinished transformer run with progress past its first state save needs a readable state.pt."""
    train = manifest.train
    if train.kind != "lm" or status.status in (RunState.FINISHED, RunState.DIVERGED):
        return []
    first_save = min(train.state_every, train.steps) if train.state_every else min(train.checkpoint_steps)
    last = max((r.step for r in log.records if r.run_id == manifest.run_id), default=0)
    path = ws.state_path(manifest.run_id)
    if last < first_save:
        return []
    if not path.exists():
        what = f"no saved state although checkpoints up to step {last} are logged (a resume would start over)"
    elif not _readable_archive(path):
        what = "saved state is not a readable torch archive (a resume would fail)"
    else:
        return []
    return [CheckProblem(manifest.run_id, str(path), "state", what, _rerun(manifest.run_id), damaged=True)]


def _readable_archive(path: os.PathLike[str]) -> bool:
    """torch.save writes a zip archive holding `<name>/data.pkl`; reading its directory is cheap."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


# -- the database against the files ----------------------------------------------------------------

def _check_database(ws: Workspace, runs: dict[str, tuple[RunStatus, LogRead]]) -> list[CheckProblem]:
    path = str(ws.db_path)
    if not ws.db_path.exists():
        if any(log.records for _, log in runs.values()):
            return [CheckProblem(None, path, "database", "no database yet, but runs have logged checkpoints",
                                 "scaledb ingest")]
        return []
    try:
        with open_store(ws, read_only=True) as con:
            statuses, steps = _database_rows(con, list(runs))
    except ScaledbError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        # the error names its own fix in backquotes (rebuild a damaged file, upgrade an old one)
        fix = message.rsplit("`", 2)[-2] if message.count("`") >= 2 else "wait for the other scaledb process"
        return [CheckProblem(None, path, "database", message, fix)]
    out: list[CheckProblem] = []
    for run_id, (status, log) in runs.items():
        if run_id not in statuses:
            out.append(CheckProblem(run_id, path, "db-run", f"run {run_id} is not in the database", "scaledb ingest"))
            continue
        mine = [r for r in log.records if r.run_id == run_id]
        expected = status.status.value
        if lost_final_checkpoint(status.status, status.step, mine[-1].step if mine else None, log.torn):
            expected = DAMAGED  # as ingest stores it (the log's own problem is reported above)
        if statuses[run_id] != expected:
            out.append(CheckProblem(run_id, path, "db-status", f"run {run_id} is {statuses[run_id]!r} in the "
                                    f"database vs {expected!r} from its status file and log", "scaledb ingest"))
        logged = {r.step for r in mine}
        stored = steps.get(run_id, set())
        if logged != stored:
            diff = []
            if logged - stored:
                diff.append(f"checkpoint rows of steps {_steps(sorted(logged - stored))} missing")
            if stored - logged:
                diff.append(f"checkpoint rows of steps {_steps(sorted(stored - logged))} not in the log")
            out.append(CheckProblem(run_id, path, "db-steps", f"run {run_id}: " + "; ".join(diff),
                                    "scaledb ingest --full"))
    return out


def _database_rows(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> tuple[dict[str, str], dict[str, set[int]]]:
    """Each run's status and checkpoint steps as the database has them."""
    statuses = dict(con.execute("SELECT run_id, status FROM runs WHERE list_contains(?, run_id)",
                                [run_ids]).fetchall())
    steps = {run_id: set(values) for run_id, values in con.execute(
        "SELECT run_id, list(step) FROM checkpoints WHERE list_contains(?, run_id) GROUP BY run_id",
        [run_ids]).fetchall()}
    return statuses, steps
