"""The local runner and the `scaledb run | status` commands."""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes import FakeWalkSource, compiled_workspace, fake_build_token_source, write_spec
import runners.local
from runners.local import plan_placement, run_local
from scaling_db.cli import cli
from scaling_db.training.execute import run_lock
from scaling_db.training.records import RunState, RunStatus, read_log
from scaling_db.workspace import Workspace

TWO_WIDTHS = {"sweep": {"axes": {"model.d_model": [16, 32]}}}
ONE_DIVERGES = {
    "train": {"grad_clip": None},
    "sweep": {"axes": {"train.optimizer": [{"kind": "adamw", "lr": 3e-3}, {"kind": "sgd", "lr": 1e4}]}},
}


FAKE = {"build_source": fake_build_token_source}


def test_placement_splits_cores_between_workers(monkeypatch):
    monkeypatch.setattr("runners.local.available_cores", lambda: 8)
    assert plan_placement(10, workers=None, device="cpu") == plan_placement(10, workers=8, device="cpu")
    p = plan_placement(10, workers=3, device="cpu")
    assert (p.workers, p.threads, p.gpus) == (3, 2, None)
    assert plan_placement(10, workers=None, device="cpu", threads_per_run=4).workers == 2
    assert plan_placement(1, workers=4, device="cpu").workers == 1  # never more workers than runs
    assert plan_placement(1, workers=4, device="cpu").threads == 8
    assert plan_placement(10, workers=16, device="cpu").threads == 1


def test_in_process_runs_call_back_and_skip_finished_runs(tmp_path):
    ws, run_ids = compiled_workspace(tmp_path, **TWO_WIDTHS)
    done: list[str] = []
    report = run_local(ws, run_ids, workers=1, device="cpu", on_run_done=done.append, **FAKE)
    assert sorted(done) == sorted(run_ids) and not report.interrupted and not report.errors
    assert {s.status for s in report.statuses.values()} == {RunState.FINISHED}
    logs = {r: ws.log_path(r).read_bytes() for r in run_ids}
    again = run_local(ws, run_ids, workers=1, device="cpu", on_run_done=done.append, **FAKE)
    assert sorted(again.skipped) == sorted(run_ids) and len(done) == 2
    assert {r: ws.log_path(r).read_bytes() for r in run_ids} == logs
    forced = run_local(ws, run_ids[:1], workers=1, device="cpu", force=True, on_run_done=done.append, **FAKE)
    assert forced.skipped == [] and done[-1] == run_ids[0]


def test_pool_runs_a_sweep_where_one_run_diverges(tmp_path):
    ws, run_ids = compiled_workspace(tmp_path, **ONE_DIVERGES)
    called_in: list[tuple[str, int]] = []
    report = run_local(ws, run_ids, workers=2, device="cpu", build_source=fake_build_token_source,
                       on_run_done=lambda r: called_in.append((r, os.getpid())))
    states = sorted(s.status.value for s in report.statuses.values())
    assert states == ["diverged", "finished"]
    assert sorted(r for r, _ in called_in) == sorted(run_ids)
    assert {pid for _, pid in called_in} == {os.getpid()}  # callbacks run in the driver
    diverged = next(s for s in report.statuses.values() if s.status == RunState.DIVERGED)
    assert diverged.diverged_at_step is not None and diverged.error.startswith("loss became NaN")


class _SuicidalSource(FakeWalkSource):
    """Kills its own process (like the OOM killer) at train batch 5, the first time only."""

    def __init__(self, marker: Path, vocab_size: int):
        super().__init__(vocab_size)
        self.marker = marker

    def batch(self, split, index, batch_size, seq_len):
        if split == "train" and index == 5 and self._first_to_claim():
            os.kill(os.getpid(), signal.SIGKILL)
        return super().batch(split, index, batch_size, seq_len)


    def _first_to_claim(self) -> bool:
        # O_EXCL: of two workers reaching batch 5 at once, exactly one dies (exists()+touch() raced).
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True


def suicidal_source(marker: Path, manifest, workspace) -> _SuicidalSource:
    return _SuicidalSource(marker, manifest.model.vocab_size)


@pytest.mark.slow
def test_a_dead_worker_fails_its_run_and_the_sweep_goes_on(tmp_path):
    ws, run_ids = compiled_workspace(tmp_path, sweep={"axes": {"model.d_model": [16, 24, 32]}})
    marker = tmp_path / "killed-once"
    report = run_local(ws, run_ids, workers=2, device="cpu", build_source=functools.partial(suicidal_source, marker))
    states = sorted(s.status.value for s in report.statuses.values())
    assert states == ["failed", "finished", "finished"]
    (failed,) = [r for r, s in report.statuses.items() if s.status == RunState.FAILED]
    assert "worker process died (exit code -9" in ws.read_status(failed).error
    # --retry-failed resumes it (from its last saved state) and it finishes, each checkpoint once.
    again = run_local(ws, run_ids, workers=1, device="cpu", retry_failed=True, build_source=fake_build_token_source)
    assert again.statuses[failed].status == RunState.FINISHED
    assert [r.step for r in read_log(ws.log_path(failed))] == ws.load_manifest(failed).train.checkpoint_steps


def test_on_run_done_errors_stop_the_pool_and_propagate(tmp_path):
    ws, run_ids = compiled_workspace(tmp_path, **TWO_WIDTHS)

    def explode(run_id: str) -> None:
        raise RuntimeError("the database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        run_local(ws, run_ids, workers=2, device="cpu", build_source=fake_build_token_source, on_run_done=explode)
    for run_id in run_ids:  # nothing left claiming to run
        assert ws.read_status(run_id).status in (RunState.FINISHED, RunState.PENDING)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def invoke(*args: str, build_source=fake_build_token_source):
    """`scaledb ARGS` with runs fed by `build_source` (passed to the command through click's `obj`)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, obj={"build_source": build_source})


def test_cli_run_then_status(tmp_path):
    spec = write_spec(tmp_path, **TWO_WIDTHS)
    ws_dir = str(tmp_path / "ws")
    result = invoke("run", str(spec), "-w", ws_dir, "--workers", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.output.count("finished") >= 2 and "tiny-d16" in result.output
    result = invoke("run", str(spec), "-w", ws_dir, "--workers", "1")
    assert "2 runs already done (skipped; --force to re-run)" in result.output
    rows = json.loads(invoke("status", str(spec), "-w", ws_dir, "--json").output)
    assert [(r["status"], r["step"], r["steps"]) for r in rows] == [("finished", 40, 40)] * 2
    assert all(r["eval_loss"] > 0 for r in rows)
    table = invoke("status", "-w", ws_dir).output
    assert "2 finished" in table and "40/40" in table
    # a spec not compiled here: its runs are `new` (they were `pending`, nameless, as if queued)
    other = write_spec(tmp_path / "other", sweep={"axes": {"model.d_model": [24]}})
    result = invoke("status", str(other), "-w", ws_dir)
    assert result.exit_code == 0 and "1 new" in result.output and "pending" not in result.output
    assert "1 run(s) not compiled in this workspace yet (status new): `scaledb compile SPEC`" in result.output


def test_cli_run_only_a_pattern_and_manifest_files(tmp_path):
    spec = write_spec(tmp_path, **TWO_WIDTHS)
    ws_dir = str(tmp_path / "ws")
    result = invoke("run", str(spec), "-w", ws_dir, "--only", "*-d32", "--json")
    rows = json.loads(result.output)["runs"]
    assert [(r["name"], r["status"]) for r in rows] == [("tiny-d32", "finished")]
    ws = Workspace(ws_dir)
    pending = [r for r in ws.run_ids() if ws.read_status(r).status == RunState.PENDING]
    assert len(pending) == 1
    result = invoke("run", str(ws.manifest_path(pending[0])), "-w", ws_dir, "--json")
    assert json.loads(result.output)["runs"][0]["status"] == "finished"


def test_cli_run_reports_unknown_targets(tmp_path):
    result = CliRunner().invoke(cli, ["run", "nope", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert "Error: nope: not a spec (.yaml), a manifest (.json), an experiment or a run id" in result.output


def _broken_disk(manifest, workspace):
    raise OSError("disk gone")


def test_cli_status_shows_failures(tmp_path):
    spec = write_spec(tmp_path)
    ws_dir = str(tmp_path / "ws")
    invoke("run", str(spec), "-w", ws_dir, "--workers", "1", build_source=_broken_disk)
    out = invoke("status", "-w", ws_dir).output
    assert "failed" in out and "OSError: disk gone" in out


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_run_resumes_to_the_same_curve(tmp_path):
    """A real `scaledb run` (real graph-walk source, 2 workers) gets SIGINT mid-run."""
    sections = {"model": {"d_model": 48}, "train": {"steps": 400, "checkpoints": {"kind": "log", "count": 10, "first": 2}}}
    spec = write_spec(tmp_path, **sections, sweep={"axes": {"train.seed": [0, 1]}})
    ws_dir = tmp_path / "ws"
    cmd = [sys.executable, "-m", "scaling_db", "run", str(spec), "-w", str(ws_dir), "--workers", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ws = Workspace(ws_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until both runs have logged something
        ids = ws.run_ids()
        if len(ids) == 2 and all(read_log(ws.log_path(r)) for r in ids):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, out
    assert "Interrupted" in out
    for r in ws.run_ids():
        status = ws.read_status(r)
        assert status.status == RunState.PENDING and ws.state_path(r).exists()
        assert len(read_log(ws.log_path(r))) < 10
    subprocess.run(cmd, check=True, capture_output=True)
    # The same runs, uninterrupted, in a fresh workspace.
    subprocess.run([*cmd[:5], "-w", str(tmp_path / "ref"), *cmd[7:]], check=True, capture_output=True)
    ref = Workspace(tmp_path / "ref")
    for r in ws.run_ids():
        strip = lambda recs: [{k: v for k, v in x.model_dump().items() if k not in ("wall_time_s", "tokens_per_s")} for x in recs]
        assert strip(read_log(ws.log_path(r))) == strip(read_log(ref.log_path(r)))
        assert ws.read_status(r).status == RunState.FINISHED


def test_scaledb_cancel_stops_a_local_run_which_resumes_later(tmp_path, monkeypatch):
    from scaling_db.training.control import request_cancel

    ws, (run_id,) = compiled_workspace(tmp_path, train={"steps": 60})

    class CancelledAtTen(FakeWalkSource):
        def batch(self, split, index, batch_size, seq_len):
            if split == "train" and index == 10:
                request_cancel(ws, run_id)  # what `scaledb cancel` does from another shell
            return super().batch(split, index, batch_size, seq_len)

    monkeypatch.setattr("scaling_db.training.control.CANCEL_POLL_S", 0.0)  # look for the file at every step
    report = run_local(ws, [run_id], workers=1, device="cpu", build_source=lambda m, w: CancelledAtTen(m.model.vocab_size))
    status = report.statuses[run_id]
    assert status.status == RunState.PENDING and ws.state_path(run_id).exists()
    again = run_local(ws, [run_id], workers=1, device="cpu", **FAKE)  # a new `scaledb run` clears the request
    assert again.statuses[run_id].status == RunState.FINISHED
    assert [r.step for r in read_log(ws.log_path(run_id))] == ws.load_manifest(run_id).train.checkpoint_steps


def test_cli_run_whose_runs_were_cancelled_exits_130_not_0(tmp_path, monkeypatch):
    """Runs `scaledb cancel` stopped are pending, not done: a script must not go on as if they were."""
    from scaling_db.training.control import request_cancel

    spec = write_spec(tmp_path, train={"steps": 60})
    ws = Workspace(tmp_path / "ws")

    def cancelled_at_ten(manifest, workspace):
        class Source(FakeWalkSource):
            def batch(self, split, index, batch_size, seq_len):
                if split == "train" and index == 10:
                    request_cancel(ws, manifest.run_id)
                return super().batch(split, index, batch_size, seq_len)
        return Source(manifest.model.vocab_size)

    monkeypatch.setattr("scaling_db.training.control.CANCEL_POLL_S", 0.0)
    result = invoke("run", str(spec), "-w", str(ws.root), "--workers", "1", build_source=cancelled_at_ten)
    assert result.exit_code == 130, result.output
    assert "Cancelled: 1 run(s) stopped by `scaledb cancel` saved their state and are pending" in result.output
    assert invoke("run", str(spec), "-w", str(ws.root), "--workers", "1").exit_code == 0  # and it resumes


# ---------------------------------------------------------------------------------------------
# Exit codes and what a script sees (README: "The command line")
# ---------------------------------------------------------------------------------------------


def _disk_full_for_d16(manifest, workspace):
    if manifest.model.d_model == 16:
        raise OSError(errno.ENOSPC, "No space left on device")
    return fake_build_token_source(manifest, workspace)


def test_cli_run_exits_3_naming_each_failed_run_and_how_to_retry(tmp_path):
    spec = write_spec(tmp_path, **TWO_WIDTHS)
    ws_dir = str(tmp_path / "ws")
    result = invoke("run", str(spec), "-w", ws_dir, "--workers", "1", build_source=_disk_full_for_d16)
    assert result.exit_code == 3, result.output
    assert "1 run failed:" in result.output
    assert "  tiny-d16 (" in result.output and "No space left on device" in result.output
    assert f"scaledb run {spec} --retry-failed" in result.output
    # Again, without --retry-failed: nothing runs, and it still is not a success.
    again = invoke("run", str(spec), "-w", ws_dir, "--workers", "1")
    assert again.exit_code == 3, again.output
    assert "1 of them failed: --retry-failed runs those again" in again.output
    as_json = invoke("run", str(spec), "-w", ws_dir, "--json")
    assert as_json.exit_code == 3 and list(json.loads(as_json.output)["failed"].values()) == [
        "OSError: [Errno 28] No space left on device"]
    retried = invoke("run", str(spec), "-w", ws_dir, "--workers", "1", "--retry-failed")
    assert retried.exit_code == 0, retried.output


def test_cli_run_with_a_diverged_run_is_a_success(tmp_path):
    spec = write_spec(tmp_path, **ONE_DIVERGES)
    result = invoke("run", str(spec), "-w", str(tmp_path / "ws"), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "diverged" in result.output and "failed" not in result.output


def test_cli_run_prints_plain_progress_lines_when_not_a_terminal(tmp_path):
    spec = write_spec(tmp_path, **TWO_WIDTHS)
    result = invoke("run", str(spec), "-w", str(tmp_path / "ws"), "--workers", "1")  # CliRunner: not a TTY
    lines = result.output.splitlines()
    assert "scaledb: 2 runs to run" in lines
    for width in (16, 32):
        started = next(i for i, line in enumerate(lines) if line.startswith(f"started  tiny-d{width} ("))
        finished = next(i for i, line in enumerate(lines) if line.startswith(f"finished tiny-d{width}: final eval loss "))
        assert started < finished


def test_plain_progress_prints_a_summary_every_30_s(workspace):
    from scaling_db.cli.progress import PlainProgress

    now = [0.0]
    lines: list[str] = []
    progress = PlainProgress(workspace, echo=lines.append, clock=lambda: now[0])
    progress.start(total_steps=200, runs=2, skipped=0)
    progress.run_started("a", "tiny-a", 100)
    now[0] = 29.0
    progress.update("a", 50, 100, None)
    assert not any(line.startswith("progress:") for line in lines)
    now[0] = 31.0
    progress.update("a", 60, 100, None)
    assert lines[-1] == "progress: 0/2 runs ended, 1 running, 60/200 steps (30%), 31s elapsed"
    now[0] = 45.0
    progress.update("a", 70, 100, None)
    assert lines[-1].startswith("progress: 0/2") and sum(line.startswith("progress:") for line in lines) == 1


def test_cli_run_on_a_backend_compiles_each_spec_once(tmp_path, monkeypatch):
    import scaling_db.spec.compiler as compiler

    spec = write_spec(tmp_path)
    ws_dir = str(tmp_path / "ws")
    assert invoke("run", str(spec), "-w", ws_dir, "--workers", "1").exit_code == 0
    calls: list[str] = []  # (a spy on what compile_spec reads, however the CLI imported compile_spec)
    real = compiler.read_spec_source
    monkeypatch.setattr(compiler, "read_spec_source", lambda path, *a, **k: calls.append(str(path)) or real(path, *a, **k))
    # Every run is finished, so nothing is submitted: this needs no cluster.
    result = invoke("run", str(spec), "-w", ws_dir, "--backend", "slurm", "--partition", "debug", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["skipped"] and calls == [str(spec)]


class _OtherProcess:
    """Holds run `busy`'s lock as another `scaledb run` would, until this runner has started
    waiting for it `after` times (its progress says so); then finishes it, or leaves it unfinished."""

    def __init__(self, ws: Workspace, busy: str, *, finishes: bool, after: int = 1):
        self.ws, self.busy, self.finishes, self.after = ws, busy, finishes, after
        self.seen, self.release, self.held = 0, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        with run_lock(self.ws, self.busy):
            self.held.set()
            assert self.release.wait(60)
            if self.finishes:
                self.ws.write_status(RunStatus(run_id=self.busy, status=RunState.FINISHED, step=1, host="elsewhere"))

    def __enter__(self) -> "_OtherProcess":
        self.thread.start()
        assert self.held.wait(60)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(60)

    # the runner's progress sink
    def start(self, total_steps, runs, skipped): ...
    def update(self, run_id, step, steps, tokens_per_s): ...
    def run_done(self, run_id, status): ...
    def close(self): ...

    def run_started(self, run_id, name, steps):
        if run_id == self.busy:
            self.seen += 1
            if self.seen == self.after:
                self.release.set()


@pytest.mark.parametrize("finishes", [True, False], ids=["finished-there", "left-unfinished"])
@pytest.mark.parametrize("race", [False, True], ids=["held-before", "taken-while-dispatching"])
def test_a_run_another_process_holds_is_waited_for_not_failed(tmp_path, monkeypatch, finishes, race):
    """Two `scaledb run`s of one spec: neither trains a run twice nor calls the other's runs
    failed. A run held elsewhere is waited for; if the other process leaves it unfinished
    (stopped, killed), this one runs it."""
    ws, (mine, busy) = compiled_workspace(tmp_path, **TWO_WIDTHS)
    if race:  # the other process takes the run after this one looked: execute_run finds it locked
        real, looked = runners.local.lock_is_held, []
        monkeypatch.setattr(runners.local, "lock_is_held",
                            lambda w, r: real(w, r) if looked.append(r) or len(looked) > 2 else False)
    with _OtherProcess(ws, busy, finishes=finishes, after=2 if race else 1) as other:
        report = run_local(ws, [mine, busy], workers=1, device="cpu", progress=other, **FAKE)
    assert not report.errors and not report.interrupted and report.failures() == {}
    assert report.statuses[mine].status == report.statuses[busy].status == RunState.FINISHED
    assert "waited for, not run twice" in " ".join(report.notes)
    if finishes:  # its status, and no training here
        assert report.statuses[busy].host == "elsewhere" and not ws.log_path(busy).exists()
    else:
        assert report.statuses[busy].host != "elsewhere" and read_log(ws.log_path(busy))
