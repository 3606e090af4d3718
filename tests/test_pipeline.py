"""The whole experiment in one call, on a tiny copy of specs/ba_graph.yaml."""

from __future__ import annotations

import errno
import json
from html import escape
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes import fake_build_token_source, write_spec
from runners.local import run_local
from scaling_db.cli import cli
from scaling_db.cli.common import ingest_as_done
from scaling_db.reproduce import reproduce
from scaling_db.store.query import run_query
from scaling_db.training.records import code_git_sha
from scaling_db.workspace import Workspace
from tiny import tiny_specs


@pytest.mark.slow
def test_reproduce_end_to_end_then_again_without_rerunning(tmp_path: Path) -> None:
    spec = tiny_specs(tmp_path)
    ws = Workspace(tmp_path / "ws")
    ran: list[list[str]] = []

    def run_pending(run_ids: list[str]) -> None:
        with ingest_as_done(ws) as on_run_done:
            report = run_local(ws, run_ids, workers=2, on_run_done=on_run_done)
        ran.append([r for r in run_ids if r not in report.skipped])

    first = reproduce(ws, spec, run_pending)
    assert len(ran[0]) == 4 and not first.fit_errors
    (fit,) = first.fits
    assert fit.fit_id and fit.boot is not None and fit.boot.n_requested == 20
    entropy = run_query(ws, "final_loss", params={"experiment": "ba_graph"})["entropy_rate"]
    assert entropy.nunique() == 1 and fit.true_floor == pytest.approx(entropy.iloc[0])

    shas = run_query(ws, sql="SELECT DISTINCT git_sha FROM runs")["git_sha"].tolist()
    assert shas == [code_git_sha()] and shas[0], "each run records the commit of the code that ran it"

    html = first.report.read_text()
    assert "loss_vs_params" in html and "95% interval" in html
    assert "exact entropy rate" in html  # the true floor beside the fitted E
    drawn = [f for f in first.figures if f.chart is not None]
    assert {f.name for f in drawn} >= {"loss_curves", "scaling_fit-loss_vs_params", "compute_frontier"}
    assert html.count("data:image/png;base64,") == len(drawn)
    for f in drawn:
        assert (first.report.parent / f"{f.name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for f in first.figures:
        if f.chart is None:  # a figure that cannot be drawn says why, in the report too
            assert f.error and escape(f.error)[:40] in html

    logs = {p: p.read_text() for p in (ws.runs_dir).glob("*/log.jsonl")}
    second = reproduce(ws, spec, run_pending)
    assert ran[1] == [], "finished runs must not run again"
    assert {p: p.read_text() for p in logs} == logs
    assert second.ingest.rows_loaded == 0
    stored = run_query(ws, sql="SELECT count(*) AS n FROM fits WHERE name = 'loss_vs_params'")
    assert stored["n"].iloc[0] == 1, "the same fit stored twice keeps one row"


def _disk_full_for_d16(manifest, workspace):
    if manifest.model.d_model == 16:
        raise OSError(errno.ENOSPC, "No space left on device")
    return fake_build_token_source(manifest, workspace)


def test_reproduce_with_a_failed_run_exits_3_and_its_report_says_so(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, sweep={"axes": {"model.d_model": [16, 32]}})
    ws_dir = tmp_path / "ws"
    result = CliRunner().invoke(cli, ["reproduce", str(spec), "-w", str(ws_dir), "--workers", "1"],
                                obj={"build_source": _disk_full_for_d16})
    assert result.exit_code == 3, result.output
    assert "1 run failed:" in result.output and "tiny-d16 (" in result.output
    assert f"scaledb run {spec} --retry-failed" in result.output
    assert "started  tiny-d32" in result.output  # plain progress lines: CliRunner is not a terminal
    html = (Workspace(ws_dir).report_dir("tiny") / "report.html").read_text()
    banner = html[html.index("<body>"):html.index("<h1>")]
    assert "Incomplete: 1 run(s) have no result" in banner and "No space left on device" in banner
    # Running it again does not hide the failure.
    again = CliRunner().invoke(cli, ["reproduce", str(spec), "-w", str(ws_dir), "--json"],
                               obj={"build_source": fake_build_token_source})
    assert again.exit_code == 3 and len(json.loads(again.output)["failed_runs"]) == 1
