"""The cluster runners' engine-free parts: spec `cluster:` section, options, stop requests,
what gets submitted, submission records and cancel bookkeeping (no Slurm or Ray needed).
"""

from __future__ import annotations

import inspect
import json
import threading

import pytest

import cluster_helpers as H
from runners.cluster import execute_on_worker, plan_runs, record_submission, settle_ended_job
from runners.contract import build_options, merge_cluster
from runners.jobs import cancel_runs
from runners.local import run_local
from runners.ray_runner import RayOptions
from runners.slurm import SlurmOptions
from scaling_db.spec.compiler import compile_spec
from scaling_db.errors import BackendError
from scaling_db.spec.schema import ClusterSpec
from scaling_db.training.control import StopRequest, request_cancel
from scaling_db.training.execute import run_lock
from scaling_db.training.records import RunState
from scaling_db.workspace import Workspace


def test_cluster_section_is_placement_not_identity(tmp_path):
    plain = H.write_spec(tmp_path, "placed", widths=[16, 32])
    text = plain.read_text() + "cluster: {partition: gpu, time_min: 120, cpus: 2, gpus: 1, sbatch: {exclusive: true}}\n"
    placed = tmp_path / "placed-cluster.yaml"
    placed.write_text(text)
    a, b = compile_spec(plain), compile_spec(placed)
    assert [m.run_id for m in a.runs] == [m.run_id for m in b.runs]
    assert b.cluster.partition == "gpu" and b.cluster.sbatch == {"exclusive": True}
    assert all("cluster" not in json.loads(m.model_dump_json()) for m in b.runs)


def test_options_layering_and_sbatch_parameters():
    spec = ClusterSpec(partition="gpu", time_min=120, cpus=4, gpus=1.0, address="auto")
    cli = {"partition": "debug", "time_min": None}
    slurm = build_options(SlurmOptions, spec, cli, "slurm")
    assert (slurm.partition, slurm.time_min, slurm.cpus, slurm.gpus) == ("debug", 120, 4, 1.0)
    params = slurm.executor_parameters("scaledb-x")
    assert params == {"name": "scaledb-x", "timeout_min": 120, "cpus_per_task": 4, "slurm_partition": "debug",
                      "gpus_per_node": 1}
    with pytest.raises(BackendError, match="whole GPUs"):
        SlurmOptions(gpus=0.5).executor_parameters("x")
    ray = build_options(RayOptions, spec, {"max_retries": 0}, "ray")
    assert (ray.address, ray.cpus, ray.gpus, ray.max_retries) == ("auto", 4, 1.0, 0)


def test_options_refuse_a_flag_the_backend_does_not_have():
    # `from_sources` used to drop unknown keys: a misspelt or misrouted flag did nothing.
    with pytest.raises(BackendError, match="--partition: not an option of the ray backend"):
        build_options(RayOptions, None, {"partition": "gpu"}, "ray")
    with pytest.raises(BackendError, match="--max-retries: not an option of the slurm backend"):
        build_options(SlurmOptions, ClusterSpec(), {"max_retries": 2}, "slurm")


def test_every_cluster_key_of_the_spec_reaches_a_backend():
    used = {f for cls in (SlurmOptions, RayOptions) for f in cls.__dataclass_fields__}
    used |= set(inspect.signature(run_local).parameters)  # the local runner's (runs_per_device)
    assert set(ClusterSpec.model_fields) <= used


def test_later_specs_cluster_sections_override_earlier_ones():
    merged = merge_cluster([ClusterSpec(partition="a", cpus=2), ClusterSpec(partition="b")])
    assert (merged.partition, merged.cpus) == ("b", 2)
    assert merge_cluster([]) is None


def _tiny(tmp_path, **kwargs) -> tuple[Workspace, list[str]]:
    ws = Workspace(tmp_path / "ws")
    return ws, H.compile_into(ws, H.write_spec(tmp_path, "unit", **kwargs))


def test_stop_request_sees_flag_and_cancel_file(tmp_path):
    ws, [run_id] = _tiny(tmp_path)
    flag = threading.Event()
    stop = StopRequest(ws, run_id, flag)
    assert not stop()
    flag.set()
    assert stop()
    stop = StopRequest(ws, run_id)
    request_cancel(ws, run_id)
    stop._next_check = 0.0
    assert stop()


def test_worker_does_not_start_a_cancelled_run(tmp_path):
    ws, [run_id] = _tiny(tmp_path)
    request_cancel(ws, run_id)
    status = execute_on_worker(str(ws.root), run_id, backend="ray", job_id="t1", device="cpu", threads=1,
                               retry_failed=False)
    assert status["status"] == "pending" and not ws.log_path(run_id).exists()


def test_plan_skips_done_and_busy_runs_and_resets_forced_ones(tmp_path):
    ws, run_ids = _tiny(tmp_path, widths=[16, 32])
    done, busy = run_ids
    ws.write_status(ws.read_status(done).model_copy(update={"status": RunState.FINISHED}))
    ws.log_path(done).write_text("")
    request_cancel(ws, busy)
    report, todo = plan_runs(ws, run_ids, backend="slurm", force=False, retry_failed=False)
    assert todo == [busy] and report.skipped == [done]
    assert not (ws.run_dir(busy) / "cancel").exists(), "a new submission clears an old cancel request"
    with run_lock(ws, busy):  # another process runs it
        report, todo = plan_runs(ws, run_ids, backend="slurm", force=False, retry_failed=False)
        assert todo == [] and list(report.in_flight) == [busy]
    report, todo = plan_runs(ws, run_ids, backend="slurm", force=True, retry_failed=False)
    assert todo == run_ids and not ws.log_path(done).exists() and ws.read_status(done).status == RunState.PENDING
    report, todo = plan_runs(ws, run_ids, backend="slurm", force=False, retry_failed=False,
                             active=lambda statuses: {busy: "77_1"})
    assert todo == [done] and report.in_flight == {busy: "77_1"}


def test_submission_record_never_overwrites_a_worker(tmp_path):
    ws, [run_id] = _tiny(tmp_path)
    assert record_submission(ws, run_id, "slurm", "12_0").job_id == "12_0"
    with run_lock(ws, run_id):  # the worker started first and holds the run
        ws.write_status(ws.read_status(run_id).model_copy(update={"status": RunState.RUNNING, "job_id": "12_0"}))
        assert record_submission(ws, run_id, "slurm", "99_0").job_id == "12_0"
    ws.write_status(ws.read_status(run_id).model_copy(update={"status": RunState.FINISHED}))
    assert record_submission(ws, run_id, "slurm", "99_0").status == RunState.FINISHED


def test_ended_jobs_and_cancel_fix_stale_running_status(tmp_path):
    ws, [a, b] = _tiny(tmp_path, widths=[16, 32])
    for run_id in (a, b):
        ws.write_status(ws.read_status(run_id).model_copy(update={"status": RunState.RUNNING, "backend": "ray"}))
    failed = settle_ended_job(ws, a, cancelled=False, why="Slurm job 5 ended OUT_OF_MEMORY")
    assert failed.status == RunState.FAILED and "OUT_OF_MEMORY" in failed.error
    report = cancel_runs(ws, [a, b], wait_s=0)
    assert report.already_done == [a] and list(report.cancelled) == [b]
    assert ws.read_status(b).status == RunState.PENDING and (ws.run_dir(b) / "cancel").exists()


def _imports(path, package_modules: set[str]) -> set[str]:
    """Modules among `package_modules` that `path` imports anywhere (lazy and TYPE_CHECKING ones too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in package_modules}
    return found


def test_runners_and_run_commands_import_without_cycles():
    """runners/cluster <-> local <-> slurm and cli/cluster_commands <-> run_commands imported each other."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = {}
    for folder in ("runners", "scaling_db/cli", "scaling_db/training"):
        for path in (root / folder).glob("*.py"):
            if path.name != "__init__.py":  # (the CLI package registers its commands by name)
                files[".".join(path.relative_to(root).with_suffix("").parts)] = path
    graph = {mod: _imports(path, set(files)) - {mod} for mod, path in files.items()}

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph[node]:
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [c for mod in graph if (c := cycle_from(mod, mod, (mod,)))]
    assert not cycles, " -> ".join(cycles[0])
