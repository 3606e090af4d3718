"""Upstream runs: a teacher_lm teacher is compiled, planned, run first,
recorded and reused like any run; its students wait for it and fail clearly without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from runners.local import run_local
from scaling_db.cli import cli
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.resolve import TEACHERS_EXPERIMENT
from scaling_db.spec.manifest import compute_run_id
from scaling_db.store.database import open_store
from scaling_db.store.ingest import ingest_runs
from scaling_db.training.upstream import add_pending_upstream, order_waves, upstream_problem
from scaling_db.workspace import Workspace
from teacher_helpers import teacher_spec


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_compile_builds_the_teacher_as_an_upstream_run(tmp_path: Path) -> None:
    compiled = compile_spec(teacher_spec(tmp_path))
    (teacher,) = compiled.upstream
    assert teacher.experiment == TEACHERS_EXPERIMENT and teacher.data.kind == "corpus_epochs"
    assert teacher.run_id == compute_run_id(teacher.model_dump(mode="json"))  # the normal content hash
    assert (teacher.model.n_layers, teacher.model.d_model, teacher.model.context) == (1, 16, 16)
    assert teacher.tokens >= 40_000 and teacher.upstream == []
    assert [r.upstream for r in compiled.runs] == [[teacher.run_id]] * 2
    assert all(r.data.teacher_run_id == teacher.run_id for r in compiled.runs)
    assert teacher.run_id not in {r.run_id for r in compiled.runs}


def test_the_teacher_id_follows_the_teacher_and_the_students_follow_it(tmp_path: Path) -> None:
    base = compile_spec(teacher_spec(tmp_path / "a"))
    hot = compile_spec(teacher_spec(tmp_path / "b", temperature=2.0))  # sampling only: same teacher
    wider = compile_spec(teacher_spec(tmp_path / "c", d_model=32))
    assert hot.upstream[0].run_id == base.upstream[0].run_id
    assert wider.upstream[0].run_id != base.upstream[0].run_id
    # a student's id changes with its teacher (teacher_run_id is in its data)
    assert {r.run_id for r in wider.runs}.isdisjoint(r.run_id for r in base.runs)


def test_plan_shows_the_upstream_run_first(tmp_path: Path) -> None:
    spec = teacher_spec(tmp_path)
    teacher = compile_spec(spec).upstream[0]
    out = invoke("compile", str(spec), "--dry-run", "-w", str(tmp_path / "ws")).output
    assert "would write 2 runs + 1 upstream (trained first)" in out
    rows = [line for line in out.splitlines() if "│" in line]
    assert teacher.run_id in rows[0] and "new (upstream)" in rows[0] and teacher.name in rows[0]
    listed = json.loads(invoke("compile", str(spec), "--dry-run", "--json", "-w", str(tmp_path / "ws")).output)
    assert [(r["run_id"], r["upstream"]) for r in listed][0] == (teacher.run_id, True)
    assert [r["upstream_runs"] for r in listed[1:]] == [[teacher.run_id]] * 2
    assert not (tmp_path / "ws").exists()  # a dry run writes nothing


def test_waves_put_upstream_runs_first(tmp_path: Path) -> None:
    compiled = compile_spec(teacher_spec(tmp_path))
    teacher, students = compiled.upstream[0], compiled.runs
    manifests = {m.run_id: m for m in [*students, teacher]}  # the teacher listed last
    assert order_waves(manifests) == [[teacher.run_id], [m.run_id for m in students]]
    assert order_waves({m.run_id: m for m in students}) == [[m.run_id for m in students]]
    ws = Workspace(tmp_path / "ws")
    ws.write_compiled(compiled)
    added = add_pending_upstream(ws, {m.run_id: m for m in students})
    assert list(added) == [teacher.run_id, *(m.run_id for m in students)]
    assert upstream_problem(ws, students[0]) is not None and upstream_problem(ws, teacher) is None


@pytest.mark.parametrize("wait", [True, False])
def test_cluster_backends_submit_teachers_in_a_wave_before_their_students(tmp_path: Path, wait: bool) -> None:
    # Slurm and Ray go through `in_waves`: one backend call per wave, the teacher added when only
    # the students were asked for; without waiting, only the teacher's wave goes out.
    from runners.contract import RunReport, in_waves

    compiled = compile_spec(teacher_spec(tmp_path))
    ws = Workspace(tmp_path / "ws")
    ws.write_compiled(compiled)
    students = [m.run_id for m in compiled.runs]
    calls: list[list[str]] = []

    def submit(ids: list[str]) -> RunReport:
        calls.append(ids)
        return RunReport(backend="slurm", jobs={r: f"job-{len(calls)}" for r in ids}, waited=wait)

    report = in_waves(ws, [*students, "not-a-run"], submit, wait=wait)
    teacher = compiled.upstream[0].run_id
    if wait:
        assert calls == [[teacher, "not-a-run"], students]
        assert report.jobs == {teacher: "job-1", "not-a-run": "job-1", **{r: "job-2" for r in students}}
    else:
        assert calls == [[teacher, "not-a-run"]]
        assert any("2 runs need upstream runs" in n for n in report.notes)


def test_teacher_trains_first_then_is_reused_across_specs(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    first = compile_spec(teacher_spec(tmp_path, "first"))
    ws.write_compiled(first)
    teacher = first.upstream[0].run_id
    students = [m.run_id for m in first.runs]
    report = run_local(ws, students, workers=1, device="cpu")  # asked for the students only
    assert not report.errors and list(report.statuses)[0] == teacher
    done = {r: ws.read_status(r) for r in [teacher, *students]}
    assert all(s.status.value == "finished" for s in done.values())
    assert all(done[teacher].finished_at <= done[s].started_at for s in students)

    state = ws.state_path(teacher).stat().st_mtime_ns
    second = compile_spec(teacher_spec(tmp_path, "second", widths=(12,), temperature=0.7))
    assert second.upstream[0].run_id == teacher  # another experiment, the same teacher run
    ws.write_compiled(second)
    report = run_local(ws, [m.run_id for m in [*second.upstream, *second.runs]], workers=1, device="cpu")
    assert report.skipped == [teacher] and ws.state_path(teacher).stat().st_mtime_ns == state
    assert ws.read_status(second.runs[0].run_id).status.value == "finished"

    # status lists the teacher (all runs, and an experiment's runs), the database has it as a run
    assert teacher in invoke("status", "-w", str(ws.root)).output
    rows = json.loads(invoke("status", "first", "--json", "-w", str(ws.root)).output)
    assert rows[0]["run_id"] == teacher and rows[0]["status"] == "finished"
    ingest_runs(ws, [teacher, *students, second.runs[0].run_id])
    with open_store(ws, read_only=True) as con:
        assert con.execute("SELECT experiment, tags FROM runs WHERE run_id = ?", [teacher]).fetchone() == (
            TEACHERS_EXPERIMENT, ["upstream", "teacher"])
        users = con.execute(
            "SELECT DISTINCT s.experiment FROM runs AS s JOIN runs AS t "
            "ON s.manifest->>'$.data.teacher_run_id' = t.run_id WHERE t.run_id = ? ORDER BY 1", [teacher]).fetchall()
        assert users == [("first",), ("second",)]
        info = con.execute("SELECT info->'$.upstream_run_ids' FROM experiments WHERE experiment = 'first'").fetchone()
        assert json.loads(info[0]) == [teacher]


def test_a_failed_teacher_fails_its_students_naming_it(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    compiled = compile_spec(teacher_spec(tmp_path, corpus=str(tmp_path / "missing.txt")))
    ws.write_compiled(compiled)
    teacher = compiled.upstream[0]
    report = run_local(ws, [m.run_id for m in compiled.runs], workers=1, device="cpu")
    assert ws.read_status(teacher.run_id).status.value == "failed"
    for m in compiled.runs:
        status = report.statuses[m.run_id]
        assert status.status.value == "failed"
        assert status.error.startswith(f"upstream run {teacher.run_id} ({teacher.name}) is failed (DataError")
        assert f"scaledb run {teacher.run_id} --retry-failed" in status.error
