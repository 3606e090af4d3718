"""Results that cannot mislead (issue 11): damaged logs, databases and workspaces are reported,
never a traceback; files respect the umask; logs are standard JSON."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import scaling_db.store.logs
import scaling_db.training.execute
import scaling_db.workspace
from conftest import REPO
from fakes import compiled_workspace, fake_build_token_source, write_spec
from scaling_db.cli import cli
from scaling_db.errors import StoreError, WorkspaceError
from scaling_db.store.database import open_store
from scaling_db.store.ingest import ingest_runs
from scaling_db.training.execute import execute_run
from scaling_db.training.records import CheckpointRecord, RunState, RunStatus, read_log, repair_log, scan_log
from scaling_db.workspace import Workspace, atomic_write_bytes, atomic_write_text

GARBAGE = b"\x8f\x00\xffA\x13{\"run_id\": \xfe\xfe garbage"


@pytest.fixture
def fake_source(monkeypatch):
    monkeypatch.setattr(scaling_db.training.execute, "build_token_source", fake_build_token_source)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def record(step: int, **values: float) -> CheckpointRecord:
    fields = dict(flops_6n_nonembed=None, flops_6n=None, flops_exact=None, train_loss=1.0, eval_loss=1.0, lr=1e-3)
    return CheckpointRecord(run_id="r", step=step, tokens=step * 10, wall_time_s=float(step), **{**fields, **values})


def corrupt_line(path: Path, line: int) -> None:
    """Replace line `line` (1-based) of a log with random bytes, as a bad disk or copy would."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = GARBAGE
    path.write_bytes(b"\n".join(lines))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A spec and workspace with its one run finished and ingested, made once (tests take copies)."""
    root = tmp_path_factory.mktemp("trained")
    spec = write_spec(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scaling_db.training.execute, "build_token_source", fake_build_token_source)
        result = invoke("run", str(spec), "-w", str(root / "ws"), "--workers", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def finished(trained, tmp_path, fake_source) -> tuple[Path, Workspace, str]:
    """A copy of `trained`: its spec, workspace and run id."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    ws = Workspace(tmp_path / "ws")
    (run_id,) = ws.run_ids()
    return tmp_path / "tiny.yaml", ws, run_id


# ---------------------------------------------------------------------------------------------
# 1. A corrupt line in a log
# ---------------------------------------------------------------------------------------------


def test_scan_log_names_the_bad_lines_and_keeps_the_rest(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(record(1).to_line().encode() + GARBAGE + b"\n" + b'{"step": 3}\n'
                     + record(4).to_line().encode() + b'{"run_id": "r", "st')
    log = scan_log(path)
    assert [r.step for r in log.records] == [1, 4] and log.torn
    assert [(p.line, p.reason.split(" (")[0]) for p in log.problems] == [
        (2, "not valid JSON"), (3, "not a checkpoint record")]
    assert log.problems[0].format().startswith(f"{path}:2: not valid JSON")
    assert [r.step for r in read_log(path)] == [1, 4]
    # repair cuts only the torn tail: the corrupt lines stay, as evidence for `scaledb check`
    assert [r.step for r in repair_log(path)] == [1, 4]
    assert GARBAGE in path.read_bytes() and path.read_bytes().endswith(b"\n")


def test_status_and_run_report_a_corrupt_line_and_go_on(finished):
    spec, ws, run_id = finished
    corrupt_line(ws.log_path(run_id), 3)
    for args in (("status",), ("run", str(spec), "--workers", "1"), ("status", "--json")):
        result = invoke(*args, "-w", str(ws.root))
        assert result.exit_code == 0, result.output
        assert f"{ws.log_path(run_id)}:3: not valid JSON" in result.output
    rows = json.loads(invoke("status", "--json", "-w", str(ws.root)).stdout)
    assert rows[0]["status"] == "finished" and rows[0]["step"] == 40
    assert rows[0]["log_problems"][0].startswith(f"{ws.log_path(run_id)}:3:")


def test_retry_failed_past_a_corrupt_line_reports_it_and_rerunning_from_scratch_repairs(finished):
    """A corrupt line is a lost checkpoint: `--retry-failed` names the line and fails the run
    (no traceback, never "finished" with a gap); `--force --only` trains it again from scratch."""
    spec, ws, run_id = finished
    corrupt_line(ws.log_path(run_id), 2)
    ws.write_status(RunStatus(run_id=run_id, status=RunState.FAILED, error="OSError: disk gone", step=40))
    result = invoke("run", str(spec), "--retry-failed", "--workers", "1", "--device", "cpu", "-w", str(ws.root))
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert f"{ws.log_path(run_id)}:2: not valid JSON" in result.output
    assert ws.read_status(run_id).status == RunState.FAILED
    assert "lacks checkpoint step(s)" in ws.read_status(run_id).error and "--force --only" in result.output
    result = invoke("run", str(spec), "--force", "--only", run_id, "--workers", "1", "--device", "cpu",
                    "-w", str(ws.root))
    assert result.exit_code == 0, result.output
    assert ws.read_status(run_id).status == RunState.FINISHED
    assert "not valid JSON" not in invoke("status", "-w", str(ws.root)).output


# ---------------------------------------------------------------------------------------------
# 6. Non-finite numbers are standard JSON
# ---------------------------------------------------------------------------------------------


def test_nonfinite_values_are_null_plus_a_flag_and_read_back():
    rec = record(2, train_loss=math.nan, eval_loss=math.inf, metrics={"a": -math.inf, "b": 1.5})
    line = rec.to_line()
    data = json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in {line}"))
    assert (data["train_loss"], data["eval_loss"], data["metrics"]) == (None, None, {"a": None, "b": 1.5})
    assert data["nonfinite"] == {"train_loss": "NaN", "eval_loss": "Infinity", "metrics.a": "-Infinity"}
    back = CheckpointRecord.model_validate_json(line)
    assert math.isnan(back.train_loss) and back.eval_loss == math.inf and back.metrics == {"a": -math.inf, "b": 1.5}
    assert "nonfinite" not in record(2).to_line()  # clean lines are as before


def test_old_logs_with_bare_nan_still_read(tmp_path):
    path = tmp_path / "log.jsonl"
    old = json.dumps(record(2).model_dump(mode="json") | {"eval_loss": math.nan, "train_loss": -math.inf})
    path.write_text(old + "\n")
    (rec,) = read_log(path)
    assert math.isnan(rec.eval_loss) and rec.train_loss == -math.inf


def test_a_bad_nonfinite_flag_is_a_bad_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(record(2).model_dump(mode="json") | {"nonfinite": {"eval_loss": "huge"}}) + "\n")
    assert [p.line for p in scan_log(path).problems] == [1]


@pytest.mark.parametrize("arrow_reader", [True, False], ids=["arrow-reader", "python-reader"])
def test_ingest_stores_null_for_flagged_and_bare_nonfinite(tmp_path, monkeypatch, arrow_reader):
    monkeypatch.setattr(scaling_db.store.logs, "ARROW_READER", arrow_reader)
    ws, (run_id,) = compiled_workspace(tmp_path)
    new = record(2, eval_loss=math.nan, metrics={"m": math.inf}).model_copy(update={"run_id": run_id})
    old = json.dumps(record(4).model_dump(mode="json") | {"run_id": run_id, "eval_loss": math.inf})
    ws.log_path(run_id).write_text(new.to_line() + old + "\n")
    report = ingest_runs(ws)
    assert not report.skipped
    with open_store(ws, read_only=True) as con:
        assert con.execute("SELECT step, eval_loss FROM checkpoints ORDER BY step").fetchall() == [(2, None), (4, None)]
        assert con.execute("SELECT name, value FROM metrics").fetchall() == [("m", None)]


# ---------------------------------------------------------------------------------------------
# 3. A damaged database
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", os.urandom(5000)], ids=["empty", "garbage"])
@pytest.mark.parametrize("read_only", [True, False], ids=["read", "write"])
def test_damaged_database_says_how_to_rebuild_it(tmp_path, content, read_only):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.db_path.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        with open_store(ws, read_only=read_only):
            pass
    message = str(caught.value)
    assert message.startswith(f"{ws.db_path}: not a readable DuckDB database")
    assert f"`mv {ws.db_path} {ws.db_path}.damaged && scaledb ingest -w {ws.root}`" in message


def test_damaged_database_cli_errors_then_rebuilds_from_the_logs(finished):
    spec, ws, run_id = finished
    ws.db_path.write_bytes(b"")
    result = invoke("query", "--sql", "SELECT count(*) AS n FROM checkpoints", "-w", str(ws.root))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {ws.db_path}: not a readable DuckDB database")
    os.replace(ws.db_path, f"{ws.db_path}.damaged")  # the printed fix
    assert invoke("ingest", "-w", str(ws.root)).exit_code == 0
    result = invoke("query", "--sql", "SELECT count(*) AS n FROM checkpoints", "-f", "csv", "-w", str(ws.root))
    assert result.stdout == f"n\n{len(read_log(ws.log_path(run_id)))}\n"


# ---------------------------------------------------------------------------------------------
# 4. A workspace that cannot be written (we may be root, where chmod does not stop writes)
# ---------------------------------------------------------------------------------------------


def _read_only_filesystem(monkeypatch) -> None:
    """Every new workspace file fails as on a read-only mount (in this process, even as root)."""
    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(scaling_db.workspace, "_create_temp", refuse)


def test_atomic_write_to_a_file_path_gives_one_workspace_error(tmp_path):
    (tmp_path / "experiments").write_text("a file where a directory belongs")
    with pytest.raises(WorkspaceError, match=r"experiments/x/experiment.json: cannot write \(Not a directory\)"):
        atomic_write_text(tmp_path / "experiments" / "x" / "experiment.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments"]


def test_atomic_write_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling_db.workspace.os, "replace", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(WorkspaceError, match="No space left on device"):
        atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_read_only_workspace_compile_and_run_give_one_error_line(finished, monkeypatch):
    spec, ws, run_id = finished
    _read_only_filesystem(monkeypatch)
    for args in (("compile", str(spec)), ("run", str(spec), "--force", "--workers", "1")):
        result = invoke(*args, "-w", str(ws.root))
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
        assert result.output.startswith("Error: ") and "Read-only file system" in result.output
    for args in (("status",), ("query", "--sql", "SELECT 1 AS one"), ("check",)):
        result = invoke(*args, "-w", str(ws.root))
        assert result.exit_code == 0, (args, result.output)


def test_compile_into_a_file_path_gives_one_error_line(tmp_path):
    spec = write_spec(tmp_path)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "experiments").write_text("not a directory")
    result = invoke("compile", str(spec), "-w", str(tmp_path / "ws"))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot write (Not a directory)" in result.output


READ_ONLY_DRIVER = """
import json, sys
from click.testing import CliRunner
from scaling_db.cli import cli
out = {}
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    out[args[0]] = [result.exit_code, result.output]
print(json.dumps(out))
"""


def test_read_only_mount(finished, tmp_path):
    """A real read-only mount (a bind mount in a private mount namespace: works as root, and as a
    user where unprivileged user namespaces are allowed)."""
    spec, ws, run_id = finished
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to make a read-only mount")
    commands = [["compile", str(spec), "-w", str(ws.root)], ["run", str(spec), "-w", str(ws.root), "--force"],
                ["status", "-w", str(ws.root)], ["check", "-w", str(ws.root)],
                ["query", "--sql", "SELECT count(*) AS n FROM runs", "-f", "csv", "-w", str(ws.root)]]
    script = (f'mount --bind "{ws.root}" "{ws.root}" && mount -o remount,bind,ro "{ws.root}" || exit 77; '
              f'touch "{ws.root}/probe" 2>/dev/null && exit 78; '
              f'exec "{sys.executable}" -c "$0" "$1"')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, READ_ONLY_DRIVER, json.dumps(commands)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode in (1, 77) and not proc.stdout:
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for command in ("compile", "run"):
        code, text = out[command]
        assert code == 1 and text.count("\n") == 1 and text.startswith("Error: "), text
        assert "Read-only file system" in text
    assert out["status"][0] == 0 and "finished" in out["status"][1]
    assert out["check"] == [0, "1 run checked: no problems\n"]
    assert out["query"] == [0, "n\n1\n"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod -w; the tests above simulate it")
def test_chmod_read_only_workspace(finished):
    spec, ws, run_id = finished
    modes = {p: p.stat().st_mode for p in [ws.root, *ws.root.rglob("*")] if p.is_dir()}
    try:
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        result = invoke("compile", str(spec), "-w", str(ws.root))
        assert result.exit_code == 1 and "Permission denied" in result.output
        assert invoke("status", "-w", str(ws.root)).exit_code == 0
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


# ---------------------------------------------------------------------------------------------
# 5. Read-only commands outside a workspace
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("ingest",), ("status",), ("query", "--sql", "SELECT 1"), ("check",)])
def test_read_only_commands_without_a_workspace_say_so_and_create_nothing(tmp_path, args):
    where = tmp_path / "nothing-here"
    result = invoke(*args, "-w", str(where))
    assert result.exit_code == 1
    assert result.output == f"Error: no scaledb workspace at {where}; compile a spec first or pass --workspace\n"
    assert not where.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 7. Files respect the umask
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_atomic_writes_respect_the_umask(tmp_path, umask):
    atomic_write_text(tmp_path / "a" / "f.json", "{}")
    assert stat.S_IMODE((tmp_path / "a" / "f.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o777 & ~umask


def test_workspace_files_respect_the_umask(tmp_path, fake_source, umask):
    ws, (run_id,) = compiled_workspace(tmp_path)
    assert execute_run(ws, run_id, device="cpu", threads=1).status == RunState.FINISHED
    files = [ws.manifest_path(run_id), ws.status_path(run_id), ws.state_path(run_id), ws.log_path(run_id),
             ws.experiment_dir("tiny") / "experiment.json"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: oct(0o666 & ~umask) for f in files}
