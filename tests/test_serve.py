"""`scaledb serve` at the HTTP level (Starlette's TestClient): pages, live updates from run files,
the database lock fallback, the read-only SQL page. The browser tests are in test_serve_browser.py."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")

from starlette.testclient import TestClient  # noqa: E402

from conftest import REPO  # noqa: E402
from scaling_db.serve.app import ServeSettings, create_app  # noqa: E402
from scaling_db.serve.live import MANIFEST_PATHS, SERVE_QUERY_DIR, WorkspaceView, manifest_row  # noqa: E402
from scaling_db.store.database import open_store, record_fit  # noqa: E402
from scaling_db.store.ingest import ingest_runs  # noqa: E402
from scaling_db.store.query import load_query, run_query  # noqa: E402
from store_fakes import finish_runs, make_workspace, write_log, write_status  # noqa: E402


@pytest.fixture
def sweep(tmp_path):
    """The 5-run BA sweep: 3 runs finished and ingested, 1 running (3 checkpoints), 1 pending."""
    ws, manifests = make_workspace(tmp_path / "ws")
    finish_runs(ws, manifests[:3])
    ingest_runs(ws)
    running = manifests[3]
    write_log(ws, running.run_id, range(1, 4), n_params=running.counts.n_params)
    write_status(ws, running.run_id, "running", step=3)
    return ws, manifests


def client(ws, **kw) -> TestClient:
    return TestClient(create_app(ServeSettings(workspace=ws, refresh_s=0, **kw)))


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_index_counts_runs_by_status(sweep):
    ws, _ = sweep
    html = client(ws).get("/").text
    row = re.search(r'<tr data-experiment="ba_graph">(.*?)</tr>', html, re.S).group(1)
    counts = dict(re.findall(r'class="num count-(\w+)">(\d*)<', row))
    assert counts == {"pending": "1", "running": "1", "finished": "3", "failed": "", "diverged": ""}


def test_experiment_page_shows_plan_counts_figures_and_no_external_assets(sweep):
    ws, _ = sweep
    response = client(ws).get("/experiments/ba_graph")
    assert response.status_code == 200
    html = response.text
    assert "5 runs" in html  # the plan
    assert re.search(r'data-status="running">1<', html) and re.search(r'data-status="finished">3<', html)
    assert 'data-figure="/api/experiments/ba_graph/figures/0"' in html
    # offline: every script and stylesheet is served by scaledb itself
    assert not re.search(r'(src|href)="(https?:)?//', html)
    bundle = client(ws).get("/static/vega-bundle.js")
    assert bundle.status_code == 200 and "vega-embed" in bundle.text[:300]


def test_runs_table_filters_by_sweep_column_and_status_and_sorts(sweep):
    ws, manifests = sweep
    c = client(ws)
    page = c.get("/api/experiments/ba_graph/runs", params={"f.d_model": "32"}).json()
    assert page["matching"] == 1 and page["total"] == 5
    assert page["rows"][0]["d_model"] == "32"
    running = c.get("/api/experiments/ba_graph/runs", params={"status": "running"}).json()
    assert [r["run_id"] for r in running["rows"]] == [manifests[3].run_id]
    by_width = c.get("/api/experiments/ba_graph/runs", params={"sort": "d_model", "desc": "1"}).json()
    assert [r["d_model"] for r in by_width["rows"]] == ["96", "64", "48", "32", "16"]
    html = c.get("/fragments/experiments/ba_graph/runs", params={"f.d_model": "32"}).text
    assert html.count("<tr data-run-id=") == 1 and f'href="/runs/{manifests[1].run_id}"' in html


def test_runs_page_paginates(sweep):
    ws, _ = sweep
    view = WorkspaceView(ws, refresh_s=0)
    pages = [view.runs_page("ba_graph", filters={}, sort="d_model", offset=o, limit=2) for o in (0, 2, 4)]
    assert [len(p.rows) for p in pages] == [2, 2, 1]
    assert [r["d_model"] for p in pages for r in p.rows] == ["16", "32", "48", "64", "96"]


def test_run_curve_gains_a_point_when_the_log_does(sweep):
    ws, manifests = sweep
    run = manifests[3]
    c = client(ws)
    before = c.get(f"/api/runs/{run.run_id}/curve").json()
    assert (before["points"], before["last_step"], before["status"], before["source"]) == (3, 3, "running", "log")
    write_log(ws, run.run_id, [4], n_params=run.counts.n_params, mode="a")
    after = c.get(f"/api/runs/{run.run_id}/curve").json()
    assert (after["points"], after["last_step"]) == (4, 4)
    assert len(list(_inline_rows(after["spec"]))) == 8  # train and eval loss at 4 checkpoints
    state = c.get(f"/fragments/runs/{run.run_id}/state").text
    assert "4 (from the log)" in state


def test_status_change_shows_without_ingest(sweep):
    ws, manifests = sweep
    c = client(ws)
    write_status(ws, manifests[3].run_id, "diverged", step=3, diverged_at_step=3)
    rows = c.get("/api/experiments/ba_graph/runs", params={"status": "diverged"}).json()["rows"]
    assert [r["run_id"] for r in rows] == [manifests[3].run_id]


def test_curve_from_the_database_when_the_log_is_gone(sweep):
    ws, manifests = sweep
    ws.log_path(manifests[0].run_id).unlink()
    body = client(ws).get(f"/api/runs/{manifests[0].run_id}/curve").json()
    assert (body["source"], body["points"], body["last_step"]) == ("database", 10, 10)


def _hold_write_lock(ws):
    """A separate process holding DuckDB's write lock (as `scaledb ingest` does) until stdin closes."""
    code = ("import sys; from scaling_db.store.database import open_store\n"
            f"with open_store({str(ws.root)!r}):\n    print('locked', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_locked_database_falls_back_to_files_without_waiting(sweep, monkeypatch):
    ws, manifests = sweep
    # Were the dashboard to wait for the lock, it would wait this long (the holder never lets go
    # while the requests run): the bound below then tells waiting from a slow machine.
    monkeypatch.setenv("SCALEDB_LOCK_TIMEOUT_S", "120")
    c = client(ws)
    assert c.get("/").status_code == 200  # a snapshot of the database is cached
    write_log(ws, manifests[3].run_id, [4], n_params=manifests[3].counts.n_params, mode="a")
    ingest_runs(ws)  # the database changes, so the cached snapshot is stale
    holder = _hold_write_lock(ws)
    try:
        started = time.monotonic()
        html = c.get("/experiments/ba_graph").text
        page = c.get("/api/experiments/ba_graph/runs", params={"status": "running"}).json()
        figure = c.get("/api/experiments/ba_graph/figures/0").json()
        elapsed = time.monotonic() - started
    finally:
        holder.communicate("")
    assert elapsed < 60, f"the dashboard waited {elapsed:.1f} s for the write lock"
    assert "database not readable now" in html
    assert page["rows"][0]["final_step"] == "4"  # the running run's log, read directly
    assert "error" in figure and figure.get("retry")


def test_named_query_table_and_csv_match_run_query(sweep):
    ws, _ = sweep
    c = client(ws)
    params = {"name": "final_loss", "p.experiment": "ba_graph"}
    html = c.get("/sql", params=params).text
    expected = run_query(ws, "final_loss", params={"experiment": "ba_graph"})
    assert f"{len(expected)} rows" in html
    csv = c.get("/sql.csv", params=params)
    assert csv.headers["content-type"].startswith("text/csv")
    assert 'filename="final_loss.csv"' in csv.headers["content-disposition"]
    got = pd.read_csv(io.StringIO(csv.text))
    assert list(got.columns) == list(expected.columns)
    assert got["run_id"].tolist() == expected["run_id"].tolist()
    assert got["loss"].tolist() == pytest.approx(expected["loss"].tolist())


def test_missing_parameter_is_an_error_on_the_page(sweep):
    ws, _ = sweep
    response = client(ws).get("/sql", params={"name": "final_loss"})
    assert response.status_code == 400 and "missing parameter experiment" in response.text


@pytest.mark.parametrize("statement", ["DELETE FROM runs", "DROP TABLE checkpoints",
                                       "CREATE TABLE x AS SELECT 1", "UPDATE runs SET status = 'failed'"])
def test_writing_statements_are_refused_and_nothing_changes(sweep, statement):
    ws, _ = sweep
    before = checksums(ws.root)
    c = client(ws)
    page = c.get("/sql", params={"sql": statement})
    csv = c.get("/sql.csv", params={"sql": statement})
    assert page.status_code == 400 and "may not modify the database" in page.text
    assert csv.status_code == 400
    assert checksums(ws.root) == before


def test_fits_with_intervals_on_the_experiment_page(sweep):
    ws, _ = sweep
    with open_store(ws) as con:
        record_fit(con, {"experiment": "ba_graph", "name": "loss_vs_params", "law": "power_law",
                         "params": {"A": 12.5, "alpha": 0.3125}, "intervals": {"alpha": [0.25, 0.375]},
                         "n_points": 3})
    html = client(ws).get("/experiments/ba_graph").text
    fits = re.search(r'<table class="grid" id="fits">(.*?)</table>', html, re.S).group(1)
    assert "loss_vs_params" in fits and "power_law" in fits
    assert re.search(r"<td>alpha</td><td class=\"num\">0.3125</td><td class=\"num\">\[0.25, 0.375\]</td>", fits)


def test_figure_is_the_plot_commands_chart_with_tooltips(sweep):
    ws, manifests = sweep
    body = client(ws).get("/api/experiments/ba_graph/figures/0").json()
    spec = body["spec"]
    text = json.dumps(spec)
    assert "tooltip" in text and "run_id" in text
    rows = [r for r in _inline_rows(spec) if r.get("_layer") == "run"]
    assert {r["run_id"] for r in rows} == {m.run_id for m in manifests[:3]}  # the ingested runs with checkpoints


def _inline_rows(node):
    """Every data row inlined anywhere in a Vega-Lite spec (datasets or data.values)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("values",) and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            elif key == "datasets" and isinstance(value, dict):
                for rows in value.values():
                    yield from rows
            else:
                yield from _inline_rows(value)
    elif isinstance(node, list):
        for item in node:
            yield from _inline_rows(item)


def test_sampled_loss_curves_keep_columns_and_final_checkpoints(sweep):
    ws, _ = sweep
    full = run_query(ws, "loss_curves", params={"experiment": "ba_graph"})
    sampled = run_query(ws, SERVE_QUERY_DIR / "loss_curves_sampled.sql", params={"experiment": "ba_graph", "per_efold": 1})
    assert list(sampled.columns) == list(full.columns)
    assert list(sampled.columns) == list(load_query("loss_curves").columns)
    assert len(sampled) < len(full)
    last = full.sort_values("step").groupby("run_id").tail(1).set_index("run_id")["loss"]
    kept = sampled.sort_values("step").groupby("run_id").tail(1).set_index("run_id")["loss"]
    pd.testing.assert_series_equal(kept.sort_index(), last.sort_index())


def test_unknown_experiment_and_run_are_404(sweep):
    ws, _ = sweep
    c = client(ws)
    assert c.get("/experiments/nope").status_code == 404
    assert c.get("/runs/nope").status_code == 404
    assert c.get("/api/runs/nope/curve").status_code == 404


def test_workspace_without_database_is_served_from_files(tmp_path):
    ws, manifests = make_workspace(tmp_path / "ws")
    write_log(ws, manifests[0].run_id, range(1, 3), n_params=manifests[0].counts.n_params)
    write_status(ws, manifests[0].run_id, "running", step=2)
    c = client(ws)
    assert "no database yet" in c.get("/").text
    page = c.get("/api/experiments/ba_graph/runs", params={"status": "running"}).json()
    assert page["rows"][0]["final_step"] == "2"
    assert c.get(f"/api/runs/{manifests[0].run_id}/curve").json()["points"] == 2
    assert not ws.db_path.exists()  # nothing was created


def _serve(args, env_extra=None):
    return subprocess.Popen([sys.executable, "-m", "scaling_db", "serve", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO), **(env_extra or {})})


def test_cli_prints_the_url_and_warns_off_loopback(sweep):
    ws, _ = sweep
    proc = _serve(["-w", str(ws.root), "--host", "0.0.0.0", "--port", "0"])
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    assert re.match(r"Serving .* at http://0\.0\.0\.0:\d+/ ", line), line
    assert "Warning: serving on 0.0.0.0" in err


def test_cli_missing_workspace_is_one_error_line(tmp_path):
    proc = _serve(["-w", str(tmp_path / "missing"), "--port", "0"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.startswith("Error: serve: ") and "no such workspace directory" in err and "Traceback" not in err


def test_version_changes_with_the_database_so_pages_redraw_figures(sweep):
    ws, manifests = sweep
    c = client(ws)
    before = c.get("/api/version").json()["database"]
    assert c.get("/api/version").json()["database"] == before
    ingest_runs(ws)  # loads the running run's new checkpoints
    assert c.get("/api/version").json()["database"] != before


# All SQL goes through scaling_db.store.query's guard: no statement writes a file, and no file
# outside the database is read unless the server was started with --allow-files.
@pytest.mark.parametrize("statement", ["COPY (SELECT 1 AS x) TO '{out}'", "SELECT * FROM read_csv('{csv}')"])
def test_file_access_from_the_sql_page_is_refused(sweep, tmp_path, statement):
    ws, _ = sweep
    out, csv = tmp_path / "out.csv", tmp_path / "in.csv"
    csv.write_text("a\n1\n")
    response = client(ws).get("/sql", params={"sql": statement.format(out=out, csv=csv)})
    assert response.status_code == 400
    assert not out.exists()


def test_allow_files_lets_the_sql_page_read_a_file(sweep, tmp_path):
    ws, _ = sweep
    csv = tmp_path / "in.csv"
    csv.write_text("a\n41\n")
    response = client(ws, allow_files=True).get("/sql", params={"sql": f"SELECT a + 1 AS b FROM read_csv('{csv}')"})
    assert response.status_code == 200 and "42" in response.text


def test_manifest_columns_match_the_database_row(sweep):
    """A run not ingested yet gets its columns from manifest.json; they must be the database's."""
    ws, manifests = sweep
    db = run_query(ws, sql="SELECT * FROM runs ORDER BY run_id").set_index("run_id")
    for m in manifests:
        row = manifest_row(m.run_id, json.loads(ws.manifest_path(m.run_id).read_text()))
        for column in (*MANIFEST_PATHS, "experiment", "name", "tokens_budget"):
            expected = db.loc[m.run_id, column]
            assert (row[column] is None and pd.isna(expected)) or row[column] == expected, (m.run_id, column)


def test_a_finished_run_missing_its_final_checkpoint_shows_damaged_not_finished(sweep):
    """As ingest and `scaledb status` judge it: status.json says finished, the log ends early."""
    ws, manifests = sweep
    c = client(ws)
    run_id = manifests[4].run_id
    write_log(ws, run_id, range(1, 4), n_params=manifests[4].counts.n_params)
    write_status(ws, run_id, "finished", step=10)
    rows = c.get("/api/experiments/ba_graph/runs", params={"status": "damaged"}).json()["rows"]
    assert [r["run_id"] for r in rows] == [run_id]
    row = re.search(r'<tr data-experiment="ba_graph">(.*?)</tr>', c.get("/").text, re.S).group(1)
    assert dict(re.findall(r'class="num count-(\w+)">(\d*)<', row))["finished"] == "3"
