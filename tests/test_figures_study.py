"""Study figures from the database: fitted parameters per group, grouped scaling fits, contact sheets.

Reuses the synthetic workspace of test_analysis (logs written from a known law instead of
training): two experiments on two graphs, plus a third that is compiled but has no runs yet,
so one rung of the "ladder" cannot be fitted and must be reported, not dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import PlotError
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.report.study import StudyResult, read_study, run_study
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.schema import AnalysisSpec
from scaling_db.store.ingest import ingest_runs
from scaling_db.workspace import Workspace
from test_analysis import ALPHA, SECOND, SPEC, add_synthetic_experiment

THIRD = SECOND.replace("experiment: synth_b", "experiment: synth_c")
LADDER = """experiment: ladder
description: the exponent along three graphs
analysis:
  experiments: [synth_b, synth, synth_c]
  fits:
    - {name: rungs, law: saturating_power_law, x: [n_params_nonembed], bootstrap: 20, group_by: experiment}
  plots:
    - {kind: fit_parameters, fit: rungs}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Workspace, Path, StudyResult]:
    tmp = tmp_path_factory.mktemp("study")
    ws = Workspace(tmp / "ws")
    add_synthetic_experiment(ws, tmp / "synth.yaml", SPEC)
    add_synthetic_experiment(ws, tmp / "synth_b.yaml", SECOND, seed=1)
    (tmp / "synth_c.yaml").write_text(THIRD)
    ws.write_compiled(compile_spec(tmp / "synth_c.yaml"))  # compiled and loaded, never run: no rows
    ingest_runs(ws)
    spec = tmp / "ladder.yaml"
    spec.write_text(LADDER)
    return ws, spec, run_study(ws, read_study(spec))


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for part in spec.get("layer", []):
        out += _layers(part) if "layer" in part else [part]
    return out


def _values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the chart's first inline data (Altair lifts data that every layer shares)."""
    for part in [spec, *_layers(spec)]:
        if "values" in part.get("data", {}):
            return part["data"]["values"]
    return next(iter(spec["datasets"].values()))


def test_fit_parameters_draws_each_groups_exponent_in_spec_order_and_names_the_failed_one(
        study: tuple[Workspace, Path, StudyResult]) -> None:
    ws, spec, done = study
    assert not done.analysis.errors
    assert {o.name for o in done.analysis.outcomes} == {"rungs[experiment=synth]", "rungs[experiment=synth_b]"}
    (fig,) = done.figures
    assert fig.error is None
    chart = fig.chart.to_dict()
    x = _layers(chart)[-1]["encoding"]["x"]
    assert x["sort"] == ["synth_b", "synth", "synth_c"] and x["title"] == "experiment"
    rows = {r["group"]: r for r in _values(chart)}
    assert set(rows) == {"synth", "synth_b"}
    for r in rows.values():  # near the synthetic truth (the LR penalty and noise move it a little)
        assert r["lo"] < r["estimate"] < r["hi"] and abs(r["estimate"] - ALPHA) < 0.2
    subtitle = chart["title"]["subtitle"]
    assert subtitle[0] == "alpha in L = E + A·x^-alpha, x = n_params_nonembed"  # every symbol explained
    assert subtitle[1].startswith("bars: 95% bootstrap interval over run_ids")
    assert subtitle[2].startswith("not fitted: synth_c (no rows")
    assert _layers(chart)[-1]["encoding"]["y"]["title"] == "fitted alpha"
    assert [m["mark"]["type"] for m in _layers(chart)] == ["rule", "point"]


def test_fit_parameters_cli_another_parameter_and_errors(study: tuple[Workspace, Path, StudyResult], tmp_path: Path) -> None:
    ws, _, _ = study
    e = build_figure(ws, FigureRequest(kind="fit_parameters", experiment="ladder", fit="rungs", param="E"))
    assert _layers(e.to_dict())[-1]["encoding"]["y"]["title"] == "fitted E"
    with pytest.raises(PlotError, match=r"has no parameter 'beta' \(law saturating_power_law: A, E, alpha\)"):
        build_figure(ws, FigureRequest(kind="fit_parameters", experiment="ladder", fit="rungs", param="beta"))
    with pytest.raises(PlotError, match="no stored grouped fit 'nope'"):
        build_figure(ws, FigureRequest(kind="fit_parameters", experiment="ladder", fit="nope"))
    out = tmp_path / "exponents.json"
    res = CliRunner().invoke(cli, ["plot", "fit_parameters", "-e", "ladder", "--fit", "rungs", "--fit-param", "A",
                                   "-w", str(ws.root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fitted A" in out.read_text()


def test_fit_parameters_needs_a_grouped_fit() -> None:
    with pytest.raises(ValueError, match="fit_parameters draws a fit declared with group_by"):
        AnalysisSpec.model_validate({"fits": [{"name": "f", "law": "power_law"}],
                                     "plots": [{"kind": "fit_parameters", "fit": "f"}]})


def test_grouped_fit_records_every_group_and_its_failure(study: tuple[Workspace, Path, StudyResult]) -> None:
    ws, spec, done = study
    out = next(o for o in done.analysis.outcomes if o.name == "rungs[experiment=synth]")
    rec = out.to_record()
    assert rec["group_value"] == "synth"
    assert [g["value"] for g in rec["groups"]] == ["synth_b", "synth", "synth_c"]
    assert rec["groups"][2]["error"].startswith("no rows")
    assert any(n.startswith("group experiment=synth_c not fitted: no rows") for n in out.notes())
    json.dumps(rec)  # storable as it is


def test_scaling_fit_of_a_grouped_fit_draws_each_group_with_the_runs_it_used(
        study: tuple[Workspace, Path, StudyResult]) -> None:
    ws, _, _ = study
    spec = build_figure(ws, FigureRequest(kind="scaling_fit", experiment="ladder", fit="rungs")).to_dict()
    layers = _layers(spec)
    line = next(v for v in layers if v["mark"]["type"] == "line")
    field = line["encoding"]["color"]["field"]  # a plain name: a dotted group column would be a nested path
    assert line["encoding"]["color"]["title"] == "experiment"
    assert line["encoding"]["color"]["scale"]["domain"] == ["synth_b", "synth"]  # synth_c has no fit to draw
    points = [v for v in layers if v["mark"]["type"] == "point"]
    counts: dict[str, int] = {}
    for v in points:
        for row in v["data"]["values"]:
            counts[row[field]] = counts.get(row[field], 0) + 1
    assert counts == {"synth_b": 30, "synth": 80}
    assert [s.split(":")[0] for s in spec["title"]["subtitle"][:2]] == ["synth_b", "synth"]


def test_contact_sheet_lays_out_every_declared_figure_and_says_why_one_is_missing(
        study: tuple[Workspace, Path, StudyResult], tmp_path: Path) -> None:
    ws, spec, _ = study
    sheet_spec = tmp_path / "ladder_sheet.yaml"  # the same study (stored fits), more figures
    sheet_spec.write_text(spec.read_text().replace(
        "    - {kind: fit_parameters, fit: rungs}\n",
        "    - {kind: fit_parameters, fit: rungs}\n    - {kind: scaling_fit, fit: rungs}\n"
        "    - {kind: coordcheck}\n"))
    res = CliRunner().invoke(cli, ["plot", "contact-sheet", str(sheet_spec), "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    png = ws.report_dir("ladder") / "contact_sheet.png"
    html = ws.report_dir("ladder") / "contact_sheet.html"
    assert f"wrote {png}" in res.output and f"wrote {html}" in res.output
    data = png.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and width > 1000 and height > 800  # two figures across, two rows
    text = html.read_text()
    assert "not drawn: query coordcheck: no experiment 'ladder-" in text  # no coordinate check was run
    res = CliRunner().invoke(cli, ["plot", "contact-sheet", "-e", "ladder", "-w", str(ws.root)])
    assert res.exit_code == 2 and "contact-sheet takes SPEC" in res.output
    res = CliRunner().invoke(cli, ["plot", "lr_sweep", "-e", "synth", "-w", str(ws.root)])
    assert res.exit_code == 2 and "give --out FILE" in res.output


def test_a_study_of_an_experiment_not_in_the_database_still_reports(study: tuple[Workspace, Path, StudyResult],
                                                                      tmp_path: Path) -> None:
    ws, spec, _ = study
    absent = tmp_path / "absent.yaml"
    absent.write_text(spec.read_text().replace("experiments: [synth_b, synth, synth_c]",
                                               "experiments: [synth_b, never_ran]"))
    done = run_study(ws, read_study(absent))
    assert done.report.exists() and set(done.runs["experiment"]) == {"synth_b"}
    assert "never_ran" in done.analysis.errors["rungs"]  # the analysis says which experiment is missing
