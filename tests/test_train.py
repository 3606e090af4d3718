"""The trainer and executor: schedules, records, determinism, divergence, and resume after kills."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scaling_db.training.trainer
import scaling_db.workspace
from fakes import FakeWalkSource, compiled_workspace, fake_build_token_source
from scaling_db.errors import RunError
from scaling_db.training.execute import execute_run as real_execute_run, run_lock
from scaling_db.training.records import RunState, read_log
from scaling_db.training.trainer import lr_multiplier

TIMING_FIELDS = {"wall_time_s", "tokens_per_s"}
FAKES = Path(__file__).resolve().parent / "fakes.py"


def execute_run(ws, run_id, **kwargs):
    """`execute_run` on the fake walk source, unless the test passes another `build_source`."""
    return real_execute_run(ws, run_id, **{"build_source": fake_build_token_source, **kwargs})


def curve(ws, run_id) -> list[dict]:
    """The log without its timing fields: what must match exactly between runs."""
    return [{k: v for k, v in r.model_dump().items() if k not in TIMING_FIELDS} for r in read_log(ws.log_path(run_id))]


def reference(tmp_path, **sections) -> list[dict]:
    ws, (run_id,) = compiled_workspace(tmp_path / "reference", **sections)
    assert execute_run(ws, run_id, device="cpu", threads=1).status == RunState.FINISHED
    return curve(ws, run_id)


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def _train(tmp_path, schedule, steps=100):
    ws, (run_id,) = compiled_workspace(tmp_path, train={"steps": steps, "schedule": schedule})
    return ws.load_manifest(run_id).train


def test_cosine_schedule_shape(tmp_path):
    tr = _train(tmp_path, {"kind": "cosine", "warmup_frac": 0.1, "final_lr_frac": 0.1})
    lrs = [lr_multiplier(s, tr) for s in range(tr.steps)]
    assert tr.warmup_steps == 10
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # linear warmup to 1
    assert lrs[10] == 1.0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then monotone decay
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_constant_schedule_shape(tmp_path):
    tr = _train(tmp_path, {"kind": "constant", "warmup_frac": 0.05})
    lrs = [lr_multiplier(s, tr) for s in range(tr.steps)]
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and set(lrs[5:]) == {1.0}


def test_wsd_schedule_shape(tmp_path):
    tr = _train(tmp_path, {"kind": "wsd", "warmup_frac": 0.1, "decay_frac": 0.2, "final_lr_frac": 0.0})
    lrs = [lr_multiplier(s, tr) for s in range(tr.steps)]
    assert lrs[9] == 1.0 and set(lrs[10:80]) == {1.0}  # stable phase
    assert lrs[80:] == pytest.approx([1 - (i + 1) / 20 for i in range(20)])  # linear to 0 at the end
    assert lrs[-1] == 0.0


# ---------------------------------------------------------------------------------------------
# Records, determinism
# ---------------------------------------------------------------------------------------------


def test_log_has_every_checkpoint_with_counts(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    status = execute_run(ws, run_id, device="cpu", threads=1)
    m = ws.load_manifest(run_id)
    assert status.status == RunState.FINISHED and status.step == m.train.steps
    assert status.precision == "fp32" and status.device == "cpu"
    assert status.entropy_rate == pytest.approx(math.log(3))
    records = read_log(ws.log_path(run_id))
    assert [r.step for r in records] == m.train.checkpoint_steps
    for r in records:
        assert r.tokens == r.step * m.train.batch_size * m.model.context
        assert r.flops_exact == m.flops_per_token["exact"] * r.tokens
        assert r.flops_6n_nonembed == m.flops_per_token["6n_nonembed"] * r.tokens
        assert math.isfinite(r.train_loss) and math.isfinite(r.eval_loss)
        assert r.lr == pytest.approx(m.train.optimizer.lr * lr_multiplier(r.step - 1, m.train))
        assert "act_mean_abs.logits" in r.metrics
    assert records[-1].eval_loss < records[0].eval_loss - 0.3  # it learns
    assert [r.wall_time_s for r in records] == sorted(r.wall_time_s for r in records)
    assert ws.state_path(run_id).exists()


def test_training_is_deterministic_on_cpu(tmp_path):
    assert reference(tmp_path / "a") == reference(tmp_path / "b")


def test_train_loss_is_the_mean_since_the_previous_checkpoint(tmp_path, monkeypatch):
    seen: list[float] = []
    real = scaling_db.training.trainer.Transformer.forward

    def spy(self, idx, targets=None):
        out = real(self, idx, targets)
        if targets is not None and self.training:
            seen.append(out.item())
        return out

    monkeypatch.setattr(scaling_db.training.trainer.Transformer, "forward", spy)
    ws, (run_id,) = compiled_workspace(tmp_path)
    execute_run(ws, run_id, device="cpu", threads=1)
    prev = 0
    for r in read_log(ws.log_path(run_id)):
        assert r.train_loss == pytest.approx(math.fsum(seen[prev:r.step]) / (r.step - prev), rel=1e-12)
        prev = r.step


# ---------------------------------------------------------------------------------------------
# Divergence, failures, skipping
# ---------------------------------------------------------------------------------------------


def test_nan_loss_marks_the_run_diverged(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path, train={"optimizer": {"kind": "sgd", "lr": 1e4}, "grad_clip": None})
    status = execute_run(ws, run_id, device="cpu", threads=1)
    assert status.status == RunState.DIVERGED
    assert status.diverged_at_step is not None and 1 <= status.diverged_at_step <= 5
    # A divergence is a result: not retried, not even by --retry-failed.
    assert execute_run(ws, run_id, device="cpu", retry_failed=True).status == RunState.DIVERGED


def test_exception_marks_the_run_failed_with_the_error(tmp_path):
    def broken(manifest, workspace):
        raise ValueError("no such corpus")

    ws, (run_id,) = compiled_workspace(tmp_path)
    status = execute_run(ws, run_id, device="cpu", build_source=broken)
    assert status.status == RunState.FAILED and status.error == "ValueError: no such corpus"
    assert "Traceback" in (ws.run_dir(run_id) / "error.log").read_text()
    assert ws.read_status(run_id).status == RunState.FAILED


def test_finished_runs_are_not_rerun_unless_forced(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    execute_run(ws, run_id, device="cpu", threads=1)
    first = curve(ws, run_id)
    stamp = ws.log_path(run_id).stat().st_mtime_ns
    assert execute_run(ws, run_id, device="cpu").status == RunState.FINISHED
    assert ws.log_path(run_id).stat().st_mtime_ns == stamp
    assert execute_run(ws, run_id, device="cpu", threads=1, force=True).status == RunState.FINISHED
    assert ws.log_path(run_id).stat().st_mtime_ns != stamp
    assert curve(ws, run_id) == first  # from scratch: each checkpoint once, same values


def test_a_locked_run_is_refused(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    with run_lock(ws, run_id):
        with pytest.raises(RunError, match="another process"):
            execute_run(ws, run_id, device="cpu")


def test_vocab_mismatch_is_a_clear_failure(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    status = execute_run(ws, run_id, device="cpu", build_source=lambda m, w: FakeWalkSource(vocab_size=999))
    assert status.status == RunState.FAILED and "Recompile the spec" in status.error


def test_closed_form_runs_log_one_record(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Result:
        train_loss: float | None
        eval_loss: float
        entropy_rate: float | None
        metrics: dict

    ws, (run_id,) = compiled_workspace(
        tmp_path, data={"kind": "random_features", "latent_dim": 20},
        model={"kind": "random_features", "n_features": 10}, train={"kind": "closed_form", "samples": 30},
    )
    status = execute_run(ws, run_id, solve=lambda m, w: Result(0.5, 0.75, None, {"ridge": 0.1}))
    assert status.status == RunState.FINISHED and status.step == 1
    (record,) = read_log(ws.log_path(run_id))
    assert (record.step, record.tokens, record.eval_loss, record.train_loss) == (1, 30, 0.75, 0.5)
    assert record.flops_exact is None and record.metrics == {"ridge": 0.1}


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


def test_clean_stop_then_resume_equals_an_uninterrupted_run(tmp_path):
    expected = reference(tmp_path)
    ws, (run_id,) = compiled_workspace(tmp_path / "stopped")
    rng = random.Random(0)
    stops = sorted(rng.sample(range(1, 40), 4))
    for at in stops:
        polls = iter(range(10**6))
        budget = at - (ws.read_status(run_id).step or 0)
        status = execute_run(ws, run_id, device="cpu", threads=1, stop=lambda: next(polls) >= budget)
        if status.status == RunState.FINISHED:
            break
        assert status.status == RunState.PENDING
    assert execute_run(ws, run_id, device="cpu", threads=1).status == RunState.FINISHED
    assert curve(ws, run_id) == expected


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["data", "append", "state", "status"])
def test_crash_at_any_point_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, where):
    """Crashes injected mid-step, mid-append (a torn line), mid-state-save and mid-status-write."""
    sections = {"train": {"state_every": 7}} if where == "data" else {}
    expected = reference(tmp_path, **sections)
    ws, (run_id,) = compiled_workspace(tmp_path / "crashed", **sections)
    rng = random.Random(where)
    for _ in range(4):
        countdown = [rng.randrange(1, 25 if where == "data" else 4)]

        def tick() -> None:
            countdown[0] -= 1
            if countdown[0] == 0:
                raise Crash(where)

        source: dict = {}
        with monkeypatch.context() as mp:
            if where == "data":
                class Crashing(FakeWalkSource):
                    def batch(self, split, index, batch_size, seq_len):
                        tick()
                        return super().batch(split, index, batch_size, seq_len)

                source = {"build_source": lambda m, w: Crashing(m.model.vocab_size)}
            elif where == "append":
                real_append = scaling_db.training.trainer.append_record

                def torn(fh, record):
                    if countdown[0] == 1:
                        fh.write(record.to_line().encode()[:25])  # half a line reaches the disk
                        fh.flush()
                    tick()
                    real_append(fh, record)

                mp.setattr(scaling_db.training.trainer, "append_record", torn)
            elif where == "state":
                real_write = scaling_db.training.trainer.atomic_write_bytes

                def write(path, data):
                    tick()
                    real_write(path, data)

                mp.setattr(scaling_db.training.trainer, "atomic_write_bytes", write)
            else:
                real_status = scaling_db.workspace.Workspace.write_status

                def write_status(self, status):
                    if status.status == RunState.RUNNING and status.step:
                        tick()
                    real_status(self, status)

                mp.setattr(scaling_db.workspace.Workspace, "write_status", write_status)
            try:
                status = execute_run(ws, run_id, device="cpu", threads=1, retry_failed=True, **source)
            except Crash:  # before the executor's try: as if the process had been killed there
                continue
        if status.status == RunState.FINISHED:
            break
        assert status.status == RunState.FAILED and status.error == f"Crash: {where}"
    assert execute_run(ws, run_id, device="cpu", threads=1, retry_failed=True).status == RunState.FINISHED
    assert curve(ws, run_id) == expected


def test_a_log_that_lost_records_after_the_state_was_saved_fails_instead_of_finishing(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    polls = iter(range(10**6))
    assert execute_run(ws, run_id, device="cpu", threads=1, stop=lambda: next(polls) >= 25).status == RunState.PENDING
    path = ws.log_path(run_id)
    lines = path.read_bytes().splitlines(keepends=True)
    lost = [json.loads(line)["step"] for line in lines[1:3]]
    path.write_bytes(lines[0] + b"".join(lines[3:]))  # outside damage: two records gone
    status = execute_run(ws, run_id, device="cpu", threads=1)
    assert status.status == RunState.FAILED, status
    assert f"lacks checkpoint step(s) {lost[0]}, {lost[1]}" in status.error
    assert f"--force --only {run_id}" in status.error
    assert ws.read_status(run_id).status == RunState.FAILED


def test_a_torn_last_line_is_not_a_record(tmp_path):
    ws, (run_id,) = compiled_workspace(tmp_path)
    path = ws.log_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"run_id":"x","step":1,"tok')
    assert read_log(path) == []


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    sections = {"model": {"d_model": 64}, "train": {"steps": 300, "checkpoints": {"kind": "log", "count": 12, "first": 2}}}
    ref_ws, (ref_id,) = compiled_workspace(tmp_path / "reference", **sections)
    execute_run(ref_ws, ref_id, device="cpu", threads=1)
    expected = curve(ref_ws, ref_id)
    duration = read_log(ref_ws.log_path(ref_id))[-1].wall_time_s
    ws, (run_id,) = compiled_workspace(tmp_path / "killed", **sections)
    rng = random.Random(1)
    mid_run_kills = 0
    # tests/ for `fakes`, ahead of whatever PYTHONPATH picked this checkout's scaledb
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES.parent), os.environ.get("PYTHONPATH")]))}
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, str(FAKES), str(ws.root), run_id, "1"], env=env)
        # Wait until it runs (status) or trains (a first record), then kill it at a random moment.
        if rng.random() < 0.3:
            assert _wait_for(lambda: ws.read_status(run_id).status == RunState.RUNNING or proc.poll() is not None, 60)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            known = len(read_log(ws.log_path(run_id)))
            assert _wait_for(lambda: len(read_log(ws.log_path(run_id))) > known or proc.poll() is not None, 60)
            time.sleep(rng.uniform(0.0, 0.5 * duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            logged = len(read_log(ws.log_path(run_id)))
            mid_run_kills += 0 < logged < len(expected)
        if ws.read_status(run_id).status == RunState.FINISHED or mid_run_kills >= 3:
            break
    assert mid_run_kills >= 2, "too few kills landed mid-run: make the run longer"
    if ws.read_status(run_id).status != RunState.FINISHED:
        subprocess.run([sys.executable, str(FAKES), str(ws.root), run_id, "1"], env=env, check=True)
    assert ws.read_status(run_id).status == RunState.FINISHED
    got = curve(ws, run_id)
    assert [r["step"] for r in got] == ws.load_manifest(run_id).train.checkpoint_steps  # each exactly once
    assert got == expected
    assert json.loads(ws.status_path(run_id).read_text())["step"] == 300
