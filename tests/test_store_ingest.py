"""Loading run logs: idempotence, replays after resume, torn and corrupt lines, incremental loads.

Every test that reads logs runs twice: through DuckDB's JSON reader (the bulk path, forced on
by setting its size threshold to zero) and through the line-by-line Python reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling_db.store import ingest as ingest_module
from scaling_db.store import logs as logs_module
from scaling_db.errors import StoreError
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.database import open_store
from scaling_db.store.query import run_query
from scaling_db.training.records import scan_log

from store_fakes import finish_runs, make_workspace, record, write_log, write_status

SPEC = """
experiment: storetest
data:
  kind: graph_walk
  graph: {kind: barabasi_albert, n: 50, m: 2, seed: 0}
model: {kind: transformer, n_layers: 1, d_model: 16, context: 8}
train:
  optimizer: {kind: adamw, lr: 1.0e-2}
  batch_size: 4
  tokens: 2000
  checkpoints: {kind: linear, count: 3}
  eval_tokens: 256
sweep:
  axes:
    model.d_model: [16, 32]
    train.optimizer.lr: [1.0e-3, 3.0e-3]
  seeds: [0, 1]
"""


@pytest.fixture(params=["arrow_reader", "python_reader"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(logs_module, "ARROW_READER", request.param == "arrow_reader")
    return request.param


@pytest.fixture
def ws_runs(tmp_path: Path):
    return make_workspace(tmp_path / "ws")


def rows(ws, sql: str, params=None):
    with open_store(ws, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def counts(ws) -> dict[str, int]:
    return dict(rows(ws, "SELECT run_id, count(*) FROM checkpoints GROUP BY run_id"))


def test_ingest_twice_is_idempotent(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    first = ingest_runs(ws)
    assert (first.runs_loaded, first.rows_loaded, first.skipped) == (5, 50, [])
    second = ingest_runs(ws)
    assert (second.runs_loaded, second.runs_unchanged, second.rows_loaded) == (0, 5, 0)
    full = ingest_runs(ws, full=True)
    assert (full.runs_loaded, full.rows_loaded) == (5, 50)
    assert counts(ws) == {m.run_id: 10 for m in manifests}
    assert rows(ws, "SELECT count(*), count(DISTINCT (run_id, step)) FROM checkpoints") == [(50, 50)]


def test_runs_rows_carry_manifest_and_status(ws_runs):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    ingest_runs(ws)
    m = manifests[0]
    got = rows(ws, "SELECT experiment, name, status, n_params, n_params_nonembed, n_layers, d_model, n_heads, "
                   "context, vocab_size, parameterization, optimizer, lr, batch_size, seed, tokens_budget, steps, "
                   "data_source, entropy_rate, finished_at::VARCHAR, flops_budget_exact, manifest->>'$.run_id' "
                   "FROM runs WHERE run_id = ?", [m.run_id])[0]
    assert got == (
        "ba_graph", m.name, "finished", m.counts.n_params, m.counts.n_params_nonembed, 2, m.model.d_model,
        m.model.n_heads, 50, 500, "sp", "adamw", 3e-3, 64, 0, m.train.tokens, m.train.steps, "graph_walk", 1.725,
        "2026-01-01 10:00:00", m.train_flops["exact"], m.run_id,
    )
    experiment = rows(ws, "SELECT source, spec_path, spec_hash, n_planned FROM experiments")
    info = ws.experiment_info("ba_graph")
    assert experiment == [("spec", info["spec_path"], info["spec_hash"], 5)]


def test_seed_replicates_share_a_config_id(tmp_path: Path):
    spec = tmp_path / "storetest.yaml"
    spec.write_text(SPEC)
    ws, manifests = make_workspace(tmp_path / "ws", spec)
    finish_runs(ws, manifests)
    ingest_runs(ws)
    groups = rows(ws, "SELECT config_id, count(*), list(seed ORDER BY seed) FROM runs GROUP BY config_id")
    assert len(groups) == 4 and all(n == 2 and seeds == [0, 1] for _, n, seeds in groups)


def test_replayed_steps_after_resume_leave_one_row_each_and_the_later_value(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    run_id = manifests[0].run_id
    ingest_runs(ws)
    # The run resumed from its step-7 state: steps 8..10 are logged again (new values), then 11, 12.
    write_log(ws, run_id, range(8, 13), mode="a", loss=1.5)
    report = ingest_runs(ws)
    assert report.runs_loaded == 1 and report.rows_loaded == 5
    assert rows(ws, "SELECT count(*), count(DISTINCT step), max(step) FROM checkpoints WHERE run_id = ?",
                [run_id]) == [(12, 12, 12)]
    assert rows(ws, "SELECT step, eval_loss FROM checkpoints WHERE run_id = ? AND step >= 7 ORDER BY step",
                [run_id])[:2] == [(7, record(run_id, 7, n_params=manifests[0].counts.n_params).eval_loss), (8, 1.5)]


def test_a_log_with_replays_loaded_from_scratch_keeps_the_later_lines(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    run_id = manifests[1].run_id
    write_log(ws, run_id, range(5, 11), mode="a", loss=1.25)  # replay inside the very first load
    report = ingest_runs(ws)
    assert report.skipped == [] and report.rows_loaded == 50
    assert rows(ws, "SELECT count(*), min(eval_loss) FILTER (WHERE step >= 5), max(eval_loss) FILTER (WHERE step >= 5) "
                    "FROM checkpoints WHERE run_id = ?", [run_id]) == [(10, 1.25, 1.25)]
    assert len(counts(ws)) == 5


def test_truncated_last_line_is_reported_and_loaded_once_complete(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    run_id = manifests[2].run_id
    write_status(ws, run_id, "running", step=10)
    path = ws.log_path(run_id)
    line = record(run_id, 11, loss=1.0).to_line()
    with open(path, "a") as fh:
        fh.write(line[:40])  # the runner is writing, or was killed mid-write
    report = ingest_runs(ws)
    assert [(s.path, s.line, s.kind) for s in report.skipped] == [(str(path), 11, "truncated")]
    assert "no newline" in report.skipped[0].format() and report.skipped[0].format().startswith(f"{path}:11: ")
    assert counts(ws)[run_id] == 10
    with open(path, "a") as fh:
        fh.write(line[40:])  # the write completes
    report = ingest_runs(ws)
    assert report.skipped == [] and report.rows_loaded == 1
    assert rows(ws, "SELECT eval_loss FROM checkpoints WHERE run_id = ? AND step = 11", [run_id]) == [(1.0,)]


def test_corrupt_line_is_reported_with_path_and_line_and_the_rest_loads(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    bad = manifests[3].run_id
    path = ws.log_path(bad)
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = '{"run_id": "' + bad + '", "step": 4, "tok\n'  # line 4 is garbage
    lines[6] = json.dumps({**json.loads(lines[6]), "eval_loss": "high"}) + "\n"  # line 7: wrong type
    lines.insert(8, record("someoneelse0", 99).to_line())  # line 9: another run's record
    path.write_text("".join(lines))
    report = ingest_runs(ws)
    found = sorted((s.line, s.kind) for s in report.skipped)
    assert found == [(4, "corrupt-line"), (7, "invalid"), (9, "mismatch")]
    assert all(s.path == str(path) for s in report.skipped)
    assert "eval_loss is not a number (got 'high')" in " ".join(s.reason for s in report.skipped)
    got = counts(ws)
    assert got[bad] == 8 and all(got[m.run_id] == 10 for m in manifests if m.run_id != bad)
    problems = rows(ws, "SELECT problems FROM ingest_state WHERE run_id = ?", [bad])[0][0]
    assert sorted(p["line"] for p in json.loads(problems)) == [4, 7, 9]


def test_non_finite_losses_become_null_and_metrics_load(ws_runs, reader):
    ws, manifests = ws_runs
    run_id = manifests[0].run_id
    write_log(ws, run_id, range(1, 4), metrics={"act_mean/layer0": 0.5, "grad_norm": float("inf")})
    write_log(ws, run_id, [4], mode="a", loss=float("nan"))
    write_status(ws, run_id, "diverged", diverged_at_step=4, error="loss is NaN")
    report = ingest_runs(ws, [run_id])
    assert report.rows_loaded == 4 and report.metric_rows == 6
    assert rows(ws, "SELECT eval_loss, train_loss FROM checkpoints WHERE run_id = ? AND step = 4",
                [run_id]) == [(None, None)]
    assert rows(ws, "SELECT status, diverged_at_step, error FROM runs") == [("diverged", 4, "loss is NaN")]
    assert rows(ws, "SELECT name, value FROM metrics WHERE step = 2 ORDER BY name") == [
        ("act_mean/layer0", 0.5), ("grad_norm", None)]


def test_metrics_as_the_trainer_writes_them_load_in_every_reader(ws_runs, reader, monkeypatch):
    """Every record with the same metric names (the trainer's activations): Arrow's reader takes the
    log whole; a record missing a metric, or a metric that is not a number, is read line by line."""
    ws, manifests = ws_runs
    a, b, c = (m.run_id for m in manifests[:3])
    write_log(ws, a, range(1, 5), metrics={"act_mean_abs.embed": 0.5, "act_mean_abs.block0.out": 2})
    write_log(ws, a, [3], mode="a", metrics={"act_mean_abs.embed": 0.7, "act_mean_abs.block0.out": 2})  # a replay
    with open(write_log(ws, b, [1], metrics={"x": 1.5}), "a") as fh:
        fh.write(record(b, 2).to_line())  # no metrics at step 2
    write_log(ws, c, [1, 2], metrics={"x": 1.5})
    text = ws.log_path(c).read_text().replace('"x":1.5}', '"x":"high"}', 1)
    ws.log_path(c).write_text(text)
    parsed = []
    monkeypatch.setattr(logs_module, "_parse_lines", lambda *args: parsed.append(args[1]) or real_lines(*args))
    report = ingest_runs(ws, [a, b, c])
    assert report.rows_loaded == 4 + 2 + 1 and report.metric_rows == 8 + 1 + 1
    assert rows(ws, "SELECT step, name, value FROM metrics WHERE run_id = ? AND step = 4 ORDER BY name", [a]) == [
        (4, "act_mean_abs.block0.out", 2.0), (4, "act_mean_abs.embed", 0.5)]
    assert rows(ws, "SELECT step FROM metrics WHERE run_id = ?", [b]) == [(1,)]
    assert rows(ws, "SELECT value FROM metrics WHERE run_id = ? AND step = 3 AND name = 'act_mean_abs.embed'",
                [a]) == [(0.7,)]
    assert [s.line for s in report.skipped] == [1]
    assert parsed == [c]


real_lines = logs_module._parse_lines


def test_status_change_updates_the_run_without_rereading_the_log(ws_runs, reader):
    ws, manifests = ws_runs
    run_id = manifests[0].run_id
    write_log(ws, run_id, range(1, 6))
    write_status(ws, run_id, "running", step=5, started_at="2026-02-01T00:00:00+00:00",
                 raw={"git_sha": "abc123"})
    ingest_runs(ws)
    assert rows(ws, "SELECT status, git_sha FROM runs WHERE run_id = ?", [run_id]) == [("running", "abc123")]
    write_status(ws, run_id, "finished", step=5)
    report = ingest_runs(ws)
    assert (report.runs_loaded, report.rows_loaded) == (1, 0)
    assert rows(ws, "SELECT status FROM runs WHERE run_id = ?", [run_id]) == [("finished",)]


def test_pending_runs_have_rows_but_no_checkpoints(ws_runs):
    ws, manifests = ws_runs
    report = ingest_runs(ws)
    assert report.runs_loaded == 5 and report.rows_loaded == 0
    assert rows(ws, "SELECT status, count(*) FROM runs GROUP BY status") == [("pending", 5)]


def test_a_restarted_run_replaces_its_rows(ws_runs, reader):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    run_id = manifests[0].run_id
    ingest_runs(ws)
    write_log(ws, run_id, range(1, 4), loss=0.5)  # a fresh, shorter log (run reset and restarted)
    ingest_runs(ws)
    assert rows(ws, "SELECT count(*), max(eval_loss) FROM checkpoints WHERE run_id = ?", [run_id]) == [(3, 0.5)]
    ws.log_path(run_id).unlink()  # reset again, nothing logged yet
    ingest_runs(ws)
    assert run_id not in counts(ws)


def test_same_size_rewrite_is_detected_by_the_log_head(ws_runs):
    ws, manifests = ws_runs
    run_id = manifests[0].run_id
    write_log(ws, run_id, range(1, 4), loss=0.25)
    ingest_runs(ws)
    write_log(ws, run_id, range(1, 5), loss=0.75)  # rewritten from scratch, longer
    ingest_runs(ws)
    assert rows(ws, "SELECT count(*), min(eval_loss) FROM checkpoints WHERE run_id = ?", [run_id]) == [(4, 0.75)]


def test_selected_runs_by_id_or_directory(ws_runs):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    report = ingest_runs(ws, [manifests[0].run_id, ws.run_dir(manifests[1].run_id), "000000000000"])
    assert report.runs_loaded == 2 and report.rows_loaded == 20
    assert [s.kind for s in report.skipped] == ["file"] and "no run '000000000000'" in report.skipped[0].reason
    with pytest.raises(StoreError, match="not a run directory of workspace"):
        ingest_runs(ws, [Path("/elsewhere/runs/abc")])


def test_a_runs_rows_land_in_one_transaction(ws_runs, monkeypatch: pytest.MonkeyPatch):
    """A failure while writing a batch leaves nothing of it behind."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest_module, "write_experiments", broken)
    with pytest.raises(RuntimeError):
        ingest_runs(ws)
    assert rows(ws, "SELECT (SELECT count(*) FROM checkpoints), (SELECT count(*) FROM runs), "
                    "(SELECT count(*) FROM ingest_state)") == [(0, 0, 0)]
    monkeypatch.undo()
    assert ingest_runs(ws).rows_loaded == 50


def test_manifestless_or_unreadable_files_are_reported(ws_runs):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    ws.status_path(manifests[0].run_id).write_text("{not json")
    report = ingest_runs(ws)
    assert [(s.path, s.kind) for s in report.skipped] == [(str(ws.status_path(manifests[0].run_id)), "file")]
    assert rows(ws, "SELECT status FROM runs WHERE run_id = ?", [manifests[0].run_id]) == [("unknown",)]


def test_a_long_load_lets_others_in_between_batches(ws_runs, reader, monkeypatch: pytest.MonkeyPatch):
    """Each batch after the first reopens the database, and re-plans runs another writer loaded."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    monkeypatch.setattr(ingest_module, "BATCH_RUNS", 2)
    opened = []
    real_open = ingest_module.open_store

    def counting_open(*args, **kwargs):
        opened.append(1)
        if len(opened) == 2:  # between batches 1 and 2, another process loads the last run
            ingest_runs(ws, [manifests[-1].run_id])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "open_store", counting_open)
    report = ingest_runs(ws)
    assert len(opened) == 1 + 1 + 2  # first open, the other process, then one per later batch
    assert report.runs_loaded + report.runs_unchanged == 5 and report.runs_unchanged == 1
    assert counts(ws) == {m.run_id: 10 for m in manifests}


def test_lost_ingest_state_is_recovered_through_the_runs_table(ws_runs, reader):
    """Rows without bookkeeping (state table emptied by hand): the run's `runs` row shows they are
    there, so they are replaced as in a reload; still one row per (run_id, step)."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    ingest_runs(ws)
    with open_store(ws) as con:
        con.execute("DELETE FROM ingest_state")
    report = ingest_runs(ws)
    assert report.runs_loaded == 5 and report.rows_loaded == 50
    assert rows(ws, "SELECT count(*), count(DISTINCT (run_id, step)) FROM checkpoints") == [(50, 50)]
    assert rows(ws, "SELECT count(*) FROM runs") == [(5,)]


def test_clean_logs_of_a_batch_are_parsed_in_one_call_and_odd_ones_alone(ws_runs, monkeypatch):
    ws, manifests = ws_runs
    ids = [m.run_id for m in manifests[:4]]
    for run_id in ids[:3]:
        write_log(ws, run_id, range(1, 6), metrics={"act_mean_abs.embed": 0.5})
    write_log(ws, ids[3], range(1, 6), metrics={"act_mean_abs.embed": 0.5, "act_mean_abs.logits": 1.0})
    one_by_one = []
    real = ingest_module.parse_log
    monkeypatch.setattr(ingest_module, "parse_log", lambda path, run_id, *a: one_by_one.append(run_id) or real(
        path, run_id, *a))
    assert ingest_runs(ws, ids[:3]).rows_loaded == 15 and one_by_one == []
    report = ingest_runs(ws, ids[3:] + ids[:1], full=True)  # other metric names: each log alone
    assert report.rows_loaded == 10 and sorted(one_by_one) == sorted([ids[0], ids[3]])
    assert rows(ws, "SELECT count(*), count(DISTINCT run_id) FROM metrics") == [(5 * 3 + 5 * 2, 4)]


def test_a_record_without_run_id_among_clean_logs_is_named_not_stored_or_fatal(ws_runs, reader):
    """Arrow parses the batch's logs in one call; a line lacking `run_id` once made the whole load
    fail on NOT NULL (and would have lost nothing only because it failed)."""
    ws, manifests = ws_runs
    ids = [m.run_id for m in manifests[:3]]
    for run_id in ids:
        write_log(ws, run_id, range(1, 6), metrics={"act_mean_abs.embed": 0.5})
    path = ws.log_path(ids[1])
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[2])
    del rec["run_id"]
    lines[2] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    report = ingest_runs(ws, ids)
    assert [s.format() for s in report.skipped] == [
        f"{path}:3: not a checkpoint record (run_id: Field required); line skipped"]  # as `scaledb check` says it
    assert counts(ws) == {ids[0]: 5, ids[1]: 4, ids[2]: 5}
    assert rows(ws, "SELECT count(*) FROM metrics WHERE run_id = ?", [ids[1]]) == [(4,)]

def duplicates(ws) -> list[tuple[int, int]]:
    """(checkpoint rows doubled, metric rows doubled): both must stay 0 (no primary key guards them)."""
    return rows(ws, "SELECT (SELECT count(*) - count(DISTINCT (run_id, step)) FROM checkpoints), "
                    "(SELECT count(*) - count(DISTINCT (run_id, step, name)) FROM metrics)")


def test_no_load_ever_doubles_a_checkpoint_or_metric_row(ws_runs, reader, monkeypatch: pytest.MonkeyPatch):
    """Re-ingests, resumes, full reloads, lost state and a load killed mid-write, in turn."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    ids = [m.run_id for m in manifests]
    for run_id in ids:
        write_log(ws, run_id, range(1, 11), metrics={"act_mean_abs.embed": 0.5, "act_mean_abs.logits": 1.0})
    assert ingest_runs(ws).rows_loaded == 50
    assert ingest_runs(ws).runs_unchanged == 5 and duplicates(ws) == [(0, 0)]
    # A resume replays steps 8..10 with new values, then goes on to 12; its metrics replace the old.
    write_log(ws, ids[0], range(8, 13), mode="a", loss=1.5, metrics={"act_mean_abs.embed": 0.25})
    assert ingest_runs(ws).rows_loaded == 5
    assert duplicates(ws) == [(0, 0)]
    assert rows(ws, "SELECT count(*) FROM checkpoints") == [(52,)]
    assert rows(ws, "SELECT step, list(name ORDER BY name), list(value ORDER BY name) FROM metrics "
                    "WHERE run_id = ? AND step IN (7, 8) GROUP BY step ORDER BY step", [ids[0]]) == [
        (7, ["act_mean_abs.embed", "act_mean_abs.logits"], [0.5, 1.0]), (8, ["act_mean_abs.embed"], [0.25])]
    assert ingest_runs(ws, full=True).rows_loaded == 52 and duplicates(ws) == [(0, 0)]
    with open_store(ws) as con:
        con.execute("DELETE FROM ingest_state")
    assert ingest_runs(ws).rows_loaded == 52 and duplicates(ws) == [(0, 0)]

    def killed(*args, **kwargs):  # the process dies after the rows went in, before the commit
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "write_experiments", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest_runs(ws, full=True)
    monkeypatch.undo()
    assert duplicates(ws) == [(0, 0)] and rows(ws, "SELECT count(*) FROM checkpoints") == [(52,)]
    assert ingest_runs(ws, full=True).rows_loaded == 52 and duplicates(ws) == [(0, 0)]
    assert rows(ws, "SELECT count(*) FROM metrics") == [(5 * 10 * 2 - 3 + 2,)]  # run 0: 8..12 with one metric


def _edit_line(path: Path, line: int, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[line - 1])
    edit(rec)
    lines[line - 1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))


def test_a_line_lacking_a_required_key_is_skipped_as_check_says(ws_runs, reader):
    """A missing key is not a null: ingest once stored such a line with NULL tokens while `check` and
    `status` skipped it, and `check` then asked for an `ingest --full` that changed nothing."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    a, b, c, d = (m.run_id for m in manifests[:4])
    _edit_line(ws.log_path(a), 6, lambda rec: rec.pop("tokens"))
    _edit_line(ws.log_path(b), 4, lambda rec: rec.pop("flops_exact"))  # a key that may hold null
    _edit_line(ws.log_path(c), 2, lambda rec: rec.update(flops_exact=None))  # null is a value: loads
    _edit_line(ws.log_path(d), 3, lambda rec: rec.update(loss_typo=1.0))
    lines = ws.log_path(d).read_text().splitlines(keepends=True)
    lines[6] = lines[6][:50] + "\n"  # not JSON
    ws.log_path(d).write_text("".join(lines))
    for full in (False, True):
        report = ingest_runs(ws, full=full)
        said = sorted(s.format() for s in report.skipped)
        assert said == sorted(p.format() for m in manifests for p in scan_log(ws.log_path(m.run_id)).problems)
        assert f"{ws.log_path(a)}:6: not a checkpoint record (tokens: Field required); line skipped" in said
        assert f"{ws.log_path(b)}:4: not a checkpoint record (flops_exact: Field required); line skipped" in said
        assert [s.kind for s in report.skipped if s.line == 7] == ["corrupt-line"]
        assert counts(ws) == {a: 9, b: 9, c: 10, d: 8, manifests[4].run_id: 10}
        assert rows(ws, "SELECT count(*) FROM checkpoints WHERE tokens IS NULL OR flops_exact IS NULL") == [(1,)]


def test_an_explicit_null_keeps_a_batch_in_the_one_call_parse(ws_runs, monkeypatch):
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    _edit_line(ws.log_path(manifests[1].run_id), 10, lambda rec: rec.update(eval_loss=None, train_loss=None))
    one_by_one = []
    real = ingest_module.parse_log
    monkeypatch.setattr(ingest_module, "parse_log", lambda path, run_id, *a: one_by_one.append(run_id) or real(
        path, run_id, *a))
    report = ingest_runs(ws)
    assert (report.rows_loaded, report.skipped, one_by_one) == (50, [], [])
    _edit_line(ws.log_path(manifests[1].run_id), 5, lambda rec: rec.pop("eval_loss"))
    report = ingest_runs(ws, full=True)
    assert [(s.line, s.kind) for s in report.skipped] == [(5, "invalid")]
    assert sorted(one_by_one) == sorted(m.run_id for m in manifests)  # the batch fell back to log by log; nothing lost
    assert report.rows_loaded == 49


def _cut_last_line(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:start] + data[start:start + keep])


def test_a_finished_run_whose_log_lacks_its_final_checkpoint_is_stored_damaged(ws_runs, reader):
    """A torn last line, or a last step short of status.json's, in a finished run is not a write in
    progress: the run is stored as damaged (final_loss and fits leave it out), its other checkpoints
    stay, and ingest says so with the fix."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    ingest_runs(ws)
    torn, short = manifests[1].run_id, manifests[3].run_id
    _cut_last_line(ws.log_path(torn))
    data = ws.log_path(short).read_bytes()
    ws.log_path(short).write_bytes(data[:data.rstrip(b"\n").rfind(b"\n") + 1])  # the last line gone whole
    report = ingest_runs(ws)
    said = {s.path: s for s in report.skipped}
    assert sorted(said) == sorted(str(ws.log_path(r)) for r in (torn, short))
    assert said[str(ws.log_path(torn))].format().startswith(
        f"{ws.log_path(torn)}:10: torn last line (no newline) in a finished run")
    assert said[str(ws.log_path(short))].format().startswith(
        f"{ws.log_path(short)}: the log ends at step 9 vs step 10, where status.json says the run finished")
    assert all(s.kind == "damaged" and "`scaledb check --rerun-damaged`" in s.reason and "write in progress"
               not in s.reason for s in report.skipped)
    statuses = dict(rows(ws, "SELECT run_id, status FROM runs"))
    assert (statuses[torn], statuses[short]) == ("damaged", "damaged")
    assert counts(ws)[torn] == 9 and counts(ws)[short] == 9  # what was recorded stays
    final = run_query(ws, "final_loss", params={"experiment": "ba_graph"})
    assert sorted(final["run_id"]) == sorted(m.run_id for m in manifests if m.run_id not in (torn, short))
    assert ingest_runs(ws).runs_unchanged == 5 and dict(rows(ws, "SELECT run_id, status FROM runs"))[torn] == "damaged"
    write_log(ws, torn, range(1, 11), n_params=manifests[1].counts.n_params)  # trained again
    assert ingest_runs(ws).skipped == [] and dict(rows(ws, "SELECT run_id, status FROM runs"))[torn] == "finished"


def test_a_log_that_grows_during_the_load_is_not_called_damaged(ws_runs, monkeypatch):
    """A run writes its last line and its finished status while an ingest that planned its log
    before the line runs: that is a race, not damage; the next ingest loads the line."""
    ws, manifests = ws_runs
    finish_runs(ws, manifests)
    run_id = manifests[0].run_id
    path = ws.log_path(run_id)
    full = path.read_bytes()
    path.write_bytes(full[:full.rstrip(b"\n").rfind(b"\n") + 1])
    real = ingest_module.read_run_files

    def finishing(run_dir, rid, *args):
        if rid == run_id:
            path.write_bytes(full)  # the last line lands after the plan
        return real(run_dir, rid, *args)

    monkeypatch.setattr(ingest_module, "read_run_files", finishing)
    assert ingest_runs(ws).skipped == []
    assert rows(ws, "SELECT status FROM runs WHERE run_id = ?", [run_id]) == [("finished",)]
    monkeypatch.undo()
    assert ingest_runs(ws).rows_loaded == 1 and counts(ws)[run_id] == 10
