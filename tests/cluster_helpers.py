"""Helpers for the Slurm and Ray runner tests (tests/test_slurm.py, tests/test_ray.py).

Functions here run inside Slurm jobs and Ray workers, which cannot import this module: the
tests ship it by value (`cloudpickle.register_pickle_by_value`).

A run is slowed down (so that a test can preempt or kill it mid-run) by a `slow` file in its
run directory holding the seconds to sleep per training batch; `slow_source`, the runners'
`build_source`, wraps every run's real data source in `SlowSource`, which reads that file. Runs
without it are untouched. Every process that builds a run's data source appends its pid to
`runs/<id>/worker.pids` (the Ray test kills it).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from scaling_db.spec.compiler import compile_spec
from scaling_db.training.records import read_log
from scaling_db.workspace import Workspace

TEST_SPECS = Path(__file__).resolve().parent / "specs"
TIMING_FIELDS = ("wall_time_s", "tokens_per_s")


class SlowSource:
    """A token source that sleeps before each training batch (results unchanged)."""

    def __init__(self, inner: Any, delay_s: float):
        self.inner, self.delay_s = inner, delay_s
        self.vocab_size = inner.vocab_size
        self.entropy_rate = inner.entropy_rate

    def batch(self, split: str, index: int, batch_size: int, seq_len: int):
        if split == "train":
            time.sleep(self.delay_s)
        return self.inner.batch(split, index, batch_size, seq_len)


def slow_source(manifest, workspace):
    """A `build_source`: the real source, slowed by a `runs/<id>/slow` file; notes the worker's pid."""
    from scaling_db.training.execute import build_token_source

    run_dir = workspace.run_dir(manifest.run_id)
    with open(run_dir / "worker.pids", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    source = build_token_source(manifest, workspace)
    slow = run_dir / "slow"
    return SlowSource(source, float(slow.read_text())) if slow.exists() else source


def write_spec(directory: Path, name: str, *, widths: list[int] | None = None, steps: int | None = None,
               checkpoints: int = 3) -> Path:
    """tests/specs/base.yaml under a new experiment name, with other widths or a step count."""
    spec = copy.deepcopy(yaml.safe_load((TEST_SPECS / "base.yaml").read_text()))
    spec["experiment"] = name
    if steps is not None:
        spec["train"].pop("tokens", None)
        spec["train"]["steps"] = steps
    spec["train"]["checkpoints"] = {"kind": "linear", "count": checkpoints}
    if widths is None:
        spec.pop("sweep", None)
    else:
        spec["sweep"] = {"axes": {"model.d_model": widths}}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def compile_into(workspace: Workspace, spec: Path) -> list[str]:
    compiled = compile_spec(spec)
    workspace.write_compiled(compiled)
    return [m.run_id for m in compiled.runs]


def make_slow(workspace: Workspace, run_id: str, delay_s: float) -> None:
    (workspace.run_dir(run_id) / "slow").write_text(str(delay_s))


def logged(workspace: Workspace, run_id: str) -> list[dict]:
    """The run's checkpoint records (complete lines), without the timing fields."""
    out = []
    for record in read_log(workspace.log_path(run_id)):
        data = record.model_dump(mode="json")
        for key in TIMING_FIELDS:
            data.pop(key, None)
        out.append(data)
    return out


def raw_steps(workspace: Workspace, run_id: str) -> list[int]:
    """Every step in the log file as written, duplicates included."""
    return [record.step for record in read_log(workspace.log_path(run_id))]


def reference_log(tmp_path: Path, spec: Path, run_id: str) -> list[dict]:
    """The same run, uninterrupted, in this process (one torch thread, like the workers)."""
    import torch

    from scaling_db.training.execute import execute_run

    ws = Workspace(tmp_path / "reference")
    assert run_id in compile_into(ws, spec)
    threads = torch.get_num_threads()
    try:
        status = execute_run(ws, run_id, device="cpu", threads=1)
    finally:
        torch.set_num_threads(threads)
    assert status.status.value == "finished", status
    return logged(ws, run_id)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def run_in_thread(fn, **kwargs) -> tuple[threading.Thread, dict]:
    """Run a driver (run_slurm, run_ray) in a thread; its report or exception lands in the dict."""
    out: dict = {}

    def target() -> None:
        try:
            out["report"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out
