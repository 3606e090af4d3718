"""`scaledb check`: every kind of damage is found, named with its fix, and the fix works."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

import scaling_db.training.execute
from fakes import fake_build_token_source, write_spec
from scaling_db.cli import cli
from scaling_db.store.check import check_workspace
from scaling_db.store.ingest import ingest_runs
from scaling_db.training.execute import run_lock
from scaling_db.training.records import RunState, RunStatus, read_log
from scaling_db.workspace import Workspace

TIMING_FIELDS = {"wall_time_s", "tokens_per_s"}
STEPS = 20


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A spec with two runs, trained and ingested once for the module (tests work on copies)."""
    root = tmp_path_factory.mktemp("trained")
    spec = write_spec(root, sweep={"axes": {"model.d_model": [16, 32]}},
                      train={"steps": STEPS, "checkpoints": {"kind": "log", "count": 5, "first": 2}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scaling_db.training.execute, "build_token_source", fake_build_token_source)
        result = invoke("run", str(spec), "-w", str(root / "ws"), "--workers", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(trained, tmp_path, monkeypatch) -> Workspace:
    monkeypatch.setattr(scaling_db.training.execute, "build_token_source", fake_build_token_source)
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    return Workspace(tmp_path / "ws")


def check(ws: Workspace) -> list[tuple[str | None, str, str]]:
    """(run_id, kind, fix) of each problem found."""
    return [(p.run_id, p.kind, p.fix) for p in check_workspace(ws).problems]


def drop_line(ws: Workspace, run_id: str, line: int) -> None:
    lines = ws.log_path(run_id).read_bytes().split(b"\n")
    del lines[line - 1]
    ws.log_path(run_id).write_bytes(b"\n".join(lines))


def curve(ws: Workspace, run_id: str) -> list[dict]:
    return [{k: v for k, v in r.model_dump().items() if k not in TIMING_FIELDS} for r in read_log(ws.log_path(run_id))]


def test_a_consistent_workspace_is_clean(ws):
    result = invoke("check", "-w", str(ws.root))
    assert result.exit_code == 0, result.output
    assert result.output == "2 runs checked: no problems\n"


def test_corrupt_line_is_found_and_rerunning_from_scratch_gives_the_same_curve(ws):
    a, b = ws.run_ids()
    before = curve(ws, a)
    lines = ws.log_path(a).read_bytes().split(b"\n")
    lines[2] = b"\x8f\x00garbage\xff"
    ws.log_path(a).write_bytes(b"\n".join(lines))
    result = invoke("check", "-w", str(ws.root))
    assert result.exit_code == 1
    assert f"{ws.log_path(a)}:3: not valid JSON" in result.output
    assert f"  fix: scaledb run {a} --force -w {ws.root}\n" in result.output
    assert "2 runs checked: 3 problems, 1 run damaged" in result.output  # line, missing step, database rows
    report = json.loads(invoke("check", "--json", "-w", str(ws.root)).stdout)
    assert report["damaged"] == [a] and {p["kind"] for p in report["problems"]} == {
        "corrupt-line", "missing-steps", "db-steps"}

    result = invoke("check", "--rerun-damaged", "-w", str(ws.root))
    assert result.exit_code == 1 and f"1 damaged run reset to pending; train them again with `scaledb run {a} -w" \
        in result.output
    assert ws.read_status(a).status == RunState.PENDING and not ws.log_path(a).exists()
    assert ws.read_status(b).status == RunState.FINISHED
    assert invoke("run", a, "-w", str(ws.root), "--workers", "1", "--device", "cpu").exit_code == 0
    assert curve(ws, a) == before  # deterministic on CPU: the same curve, bit for bit
    result = invoke("check", "-w", str(ws.root))
    assert result.exit_code == 0, result.output


def test_finished_run_missing_a_checkpoint(ws):
    a, _ = ws.run_ids()
    drop_line(ws, a, 4)
    step = ws.load_manifest(a).train.checkpoint_steps[3]
    (problem, db) = check_workspace(ws).problems
    assert (problem.kind, problem.damaged) == ("missing-steps", True)
    assert problem.message == f"checkpoint steps {step} missing (4 of 5 logged, run finished)"
    assert (db.kind, db.fix) == ("db-steps", "scaledb ingest --full")
    assert db.message == f"run {a}: checkpoint rows of steps {step} not in the log"


def test_lines_after_a_failure_or_divergence(ws):
    a, b = ws.run_ids()
    steps = ws.load_manifest(a).train.checkpoint_steps
    ws.write_status(RunStatus(run_id=a, status=RunState.FAILED, step=steps[2], error="OSError: x"))
    ws.write_status(RunStatus(run_id=b, status=RunState.DIVERGED, step=steps[-1], diverged_at_step=steps[3]))
    ingest_runs(ws)
    problems = check_workspace(ws).problems
    assert [(p.run_id, p.kind) for p in problems] == [(a, "after-end"), (b, "after-end")]
    assert problems[0].message == f"steps {', '.join(map(str, steps[3:]))} logged after the failure at step {steps[2]}"
    assert problems[1].message.endswith(f"logged after the divergence at step {steps[3]}")


def test_steps_off_the_schedule_and_records_of_another_run(ws):
    a, b = ws.run_ids()
    records = read_log(ws.log_path(a))
    off = records[1].model_copy(update={"step": records[1].step + 1})
    other = records[1].model_copy(update={"run_id": b})
    with open(ws.log_path(a), "a") as fh:
        fh.write(off.to_line() + other.to_line())
    kinds = {p.kind: p for p in check_workspace(ws).problems if p.run_id == a}
    # its last record is no longer the final checkpoint: ingest would store the run as damaged
    assert set(kinds) == {"off-schedule", "foreign-record", "db-steps", "db-status"}
    assert kinds["db-status"].message == f"run {a} is 'finished' in the database vs 'damaged' from its status file and log"
    assert kinds["foreign-record"].message == f"holds records of other runs ({b})"


def test_unfinished_run_state_file(ws):
    a, _ = ws.run_ids()
    ws.write_status(RunStatus(run_id=a, status=RunState.PENDING, step=STEPS))
    ingest_runs(ws)
    assert check(ws) == []  # interrupted with a good state: resumable
    ws.state_path(a).write_bytes(b"not a zip")
    assert check(ws) == [(a, "state", f"scaledb run {a} --force")]
    ws.state_path(a).unlink()
    (problem,) = check_workspace(ws).problems
    assert problem.message.startswith(f"no saved state although checkpoints up to step {STEPS} are logged")


def test_torn_last_line_of_an_unfinished_run_is_repaired_by_resuming(ws):
    a, _ = ws.run_ids()
    ws.write_status(RunStatus(run_id=a, status=RunState.PENDING, step=STEPS))
    ingest_runs(ws)
    with open(ws.log_path(a), "ab") as fh:
        fh.write(b'{"run_id": "')
    assert check(ws) == [(a, "torn-line", f"scaledb run {a}")]
    assert invoke("run", a, "-w", str(ws.root), "--workers", "1", "--device", "cpu").exit_code == 0
    assert check(ws) == []


def test_stale_running_status_and_runs_being_trained(ws):
    a, b = ws.run_ids()
    for run_id in (a, b):
        ws.write_status(RunStatus(run_id=run_id, status=RunState.RUNNING, step=STEPS, host=socket.gethostname(),
                                  backend="local"))
    ingest_runs(ws)
    with run_lock(ws, b):  # b is being trained: not judged
        assert check(ws) == [(a, "stale-running", f"scaledb run {a}")]
        # status says so too (it showed both as plainly `running`), and writes no lock file of its own
        (ws.run_dir(a) / "lock").unlink(missing_ok=True)
        rows = {r["run_id"]: r for r in json.loads(invoke("status", "-w", str(ws.root), "--json").output)}
        assert (rows[a]["stale"], rows[b]["stale"]) == (True, False)
        assert not (ws.run_dir(a) / "lock").exists()
        table = invoke("status", "-w", str(ws.root)).output
        assert table.count("running (stale: no process holds it; `scaledb run` resumes it)") == 1


def test_database_behind_the_files(ws):
    a, b = ws.run_ids()
    ws.write_status(RunStatus(run_id=a, status=RunState.FAILED, step=STEPS, error="x"))
    assert check(ws) == [(a, "db-status", "scaledb ingest")]
    assert invoke("ingest", "-w", str(ws.root)).exit_code == 0
    assert check(ws) == []
    ws.db_path.unlink()
    assert check(ws) == [(None, "database", "scaledb ingest")]


def test_damaged_database_is_reported_with_the_rebuild(ws):
    ws.db_path.write_bytes(b"garbage" * 100)
    ((run_id, kind, fix),) = check(ws)
    assert (run_id, kind) == (None, "database")
    assert fix == f"mv {ws.db_path} {ws.db_path}.damaged && scaledb ingest -w {ws.root}"


def test_check_a_spec_or_run_subset(ws):
    a, b = ws.run_ids()
    drop_line(ws, b, 2)
    assert invoke("check", a, "-w", str(ws.root)).exit_code == 0
    result = invoke("check", str(ws.root.parent / "tiny.yaml"), "-w", str(ws.root))
    assert result.exit_code == 1 and b in result.output


def test_unreadable_status_and_manifest_files(ws):
    a, b = ws.run_ids()
    ws.status_path(a).write_bytes(b"\x00garbage")
    ws.manifest_path(b).write_text("{}")
    problems = {p.run_id: p for p in check_workspace(ws).problems}
    assert (problems[a].kind, problems[a].fix, problems[a].damaged) == ("status", f"scaledb run {a} --force", True)
    assert (problems[b].kind, problems[b].damaged) == ("manifest", False)
    assert problems[b].fix == f"rm {ws.manifest_path(b)}, then compile the spec it came from again"
    assert invoke("check", "--rerun-damaged", "-w", str(ws.root)).exit_code == 1
    assert ws.read_status(a).status == RunState.PENDING


def cut_last_line(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:start] + data[start:start + keep])


def db_statuses(ws: Workspace) -> dict[str, str]:
    from scaling_db.store.database import open_store
    with open_store(ws, read_only=True) as con:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())


@pytest.mark.parametrize("damage", ["torn", "short"])
def test_a_finished_run_without_its_final_checkpoint_is_damaged_in_ingest_status_and_check(ws, damage):
    """status.json says finished, the log lacks the final checkpoint: ingest stores the run as
    damaged (fits and final_loss leave it out), `status` shows it, and `check` agrees with both."""
    a, b = ws.run_ids()
    path = ws.log_path(a)
    if damage == "torn":
        cut_last_line(path)
    else:
        drop_line(ws, a, 5)
    result = invoke("ingest", "-w", str(ws.root))
    assert result.exit_code == 0, result.output
    said = f"{path}:5: torn last line (no newline) in a finished run" if damage == "torn" else \
        f"{path}: the log ends at step {read_log(path)[-1].step} vs step {STEPS}, where status.json says"
    assert said in result.output and "`scaledb check --rerun-damaged`" in result.output
    assert "write in progress" not in result.output
    assert db_statuses(ws) == {a: "damaged", b: "finished"}
    assert [(p.run_id, p.kind) for p in check_workspace(ws).problems if p.kind.startswith("db-")] == []
    status = invoke("status", "--json", "-w", str(ws.root))
    assert status.exit_code == 0
    rows = {r["run_id"]: r for r in json.loads(status.stdout)}
    assert (rows[a]["status"], rows[b]["status"]) == ("damaged", "finished")
    assert rows[a]["damage"][0].startswith(f"{path}: ")
    shown = invoke("status", "-w", str(ws.root))
    assert "1 damaged, 1 finished" in shown.output and f"warning: {path}: " in shown.output
    assert invoke("check", "--rerun-damaged", "-w", str(ws.root)).exit_code == 1
    assert invoke("run", str(ws.root.parent / "tiny.yaml"), "-w", str(ws.root), "--workers", "1").exit_code == 0
    assert db_statuses(ws) == {a: "finished", b: "finished"} and check(ws) == []


def test_damaged_run_files_leave_status_showing_the_others(ws):
    a, b = ws.run_ids()
    ws.status_path(a).write_text('{"status": "finis')
    ws.manifest_path(b).write_bytes(ws.manifest_path(b).read_bytes()[:200])
    result = invoke("status", "-w", str(ws.root))
    assert result.exit_code == 0, result.output
    assert "1 damaged, 1 unknown" in result.output
    assert f"warning: {ws.status_path(a)}: unreadable status file (Invalid JSON: EOF while parsing a string" \
        in result.output
    assert f"warning: {ws.manifest_path(b)}: not a valid manifest (Invalid JSON: EOF while parsing" in result.output
    ingest = invoke("ingest", "-w", str(ws.root))
    assert f"{ws.status_path(a)}: unreadable status file (Invalid JSON: " in ingest.output
    assert f"{ws.manifest_path(b)}: not a valid manifest (Invalid JSON: " in ingest.output
    problem = next(p for p in check_workspace(ws).problems if p.kind == "status")
    assert problem.fix == f"scaledb run {a} --force"  # no command rewrites a status file; the message says so
    assert f"its log holds every checkpoint (through step {STEPS})" in problem.message
    assert "trains it again from scratch" in problem.message
