"""`scaledb validate | compile | schema | diff` through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, TEST_SPECS
from scaling_db.cli import cli

BASE = str(TEST_SPECS / "base.yaml")


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def test_validate_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", BASE)
    assert result.exit_code == 0 and "tiny, 2 runs" in result.output
    assert list(tmp_path.iterdir()) == []


def test_validate_json_lists_problems() -> None:
    result = invoke("validate", BASE, str(TEST_SPECS / "invalid" / "out_of_range.yaml"), "--json")
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out[0] == {"spec": BASE, "valid": True, "experiment": "tiny", "runs": 2, "dropped": 0}
    assert out[1]["valid"] is False
    assert [(p["line"], p["field"]) for p in out[1]["problems"]] == [
        (3, "train.optimizer.lr"), (4, "train.schedule.warmup_frac")
    ]


def test_compile_writes_manifests_and_reports_plan(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first = invoke("compile", BASE, "--workspace", str(ws))
    assert first.exit_code == 0
    assert "compiled 2 runs (2 new)" in first.output
    assert "6N non-embedding, Kaplan" in first.output and "GFLOP/s" in first.output
    assert len(list((ws / "runs").glob("*/manifest.json"))) == 2
    again = invoke("compile", BASE, "--workspace", str(ws))
    assert "compiled 2 runs (0 new, 2 pending)" in again.output


def test_compile_json_one_object_per_run(tmp_path: Path) -> None:
    result = invoke("compile", BASE, "-w", str(tmp_path / "ws"), "--json")
    runs = json.loads(result.output)
    assert len(runs) == 2
    for r in runs:
        assert {"run_id", "name", "state", "n_params", "tokens", "params"} <= set(r)
        assert r["state"] == "new"
        assert r["params"]["model.d_model"] in (16, 32)
        assert r["params"]["train.optimizer.lr"] == 0.01
        # the wall-time estimate the printed plan sums, per run, with what it rests on
        assert r["est_seconds"] > 0 and r["est_source"] == "flops" and "GFLOP/s" in r["est_basis"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = invoke("compile", BASE, "-w", str(ws), "--dry-run")
    assert result.exit_code == 0 and "would write 2 runs" in result.output
    assert not ws.exists()


def test_workspace_from_environment(tmp_path: Path) -> None:
    ws = tmp_path / "from-env"
    result = invoke("compile", BASE, env={"SCALEDB_WORKSPACE": str(ws)})
    assert result.exit_code == 0 and (ws / "runs").is_dir()


def test_adding_a_sweep_point_compiles_one_new_run(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    invoke("compile", BASE, "-w", ws)
    wider = tmp_path / "wider.yaml"
    wider.write_text(Path(BASE).read_text().replace("[16, 32]", "[16, 32, 48]"))
    result = invoke("compile", str(wider), "-w", ws, "--json")
    assert sorted(r["state"] for r in json.loads(result.output)) == ["new", "pending", "pending"]


def test_schema_is_json_schema_with_every_source_kind(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    invoke("schema", "--out", str(out))
    schema = json.loads(out.read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    kinds = {d["properties"]["kind"].get("const") for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    for kind in ("graph_walk", "language_bigram", "teacher_lm", "corpus", "percolation", "random_features",
                 "transformer", "mup", "sp", "cosine", "wsd", "adamw", "sgd"):
        assert kind in kinds, kind
    assert "extends" in schema["properties"]


def test_diff_shows_differing_fields(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    runs = json.loads(invoke("compile", BASE, "-w", ws, "--json").output)
    a, b = runs[0]["run_id"], runs[1]["run_id"]
    out = json.loads(invoke("diff", a[:6], b[:6], "-w", ws, "--json").output)
    fields = {d["field"] for d in out}
    assert {"model.d_model", "run_id", "name"} <= fields
    assert "train.optimizer.lr" not in fields
    missing = CliRunner().invoke(cli, ["diff", "ffffff", b, "-w", ws])
    assert missing.exit_code == 1 and "no run id starts with 'ffffff'" in missing.output


def test_every_shipped_spec_validates() -> None:
    specs = sorted(str(p) for p in (REPO / "specs").glob("*.yaml"))
    result = invoke("validate", *specs)
    assert result.exit_code == 0, result.output


def test_max_runs_is_checked_before_expanding_and_can_be_raised(tmp_path: Path) -> None:
    spec = tmp_path / "wide.yaml"
    spec.write_text(Path(BASE).read_text().replace("[16, 32]", "{linspace: [16, 48], num: 3, integer: true}"))
    refused = CliRunner().invoke(cli, ["validate", str(spec), "--max-runs", "2"])
    assert refused.exit_code == 1
    assert ("sweep: the sweep has 3 points, more than the limit of 2 per compile; "
            "pass --max-runs 3 if you mean it") in refused.output
    assert invoke("validate", str(spec), "--max-runs", "3").exit_code == 0
    dry = invoke("compile", str(spec), "--max-runs", "3", "--dry-run", "-w", str(tmp_path / "ws"))
    assert "would write 3 runs" in dry.output


def test_fit_queries_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.sql").write_text((REPO / "queries" / "final_loss.sql").read_text())
    ws = tmp_path / "ws"
    (ws / "queries").mkdir(parents=True)
    (ws / "queries" / "mine.sql").write_text((REPO / "queries" / "final_loss.sql").read_text())
    base = Path(BASE).read_text()
    for query, ok in (("final_loss", True), ("q.sql", True), ("mine", True), ("nope", False), ("nope.sql", False)):
        spec = tmp_path / "s.yaml"
        spec.write_text(base + f"analysis:\n  fits:\n    - {{name: f, law: power_law, query: '{query}'}}\n")
        result = CliRunner().invoke(cli, ["validate", str(spec), "-w", str(ws)])
        assert (result.exit_code == 0) == ok, (query, result.output)
        if not ok:
            assert result.output.startswith("Error: s.yaml:22 analysis.fits[0].query: "), result.output
    assert not list(ws.glob("*.duckdb")), "validate only reads the workspace"


def test_the_columns_a_fit_or_frontier_takes_must_be_its_querys(tmp_path: Path) -> None:
    """A typo in `x` used to surface only when the fit ran, after the training."""
    base = Path(BASE).read_text()
    for analysis, ok in (
        ("fits:\n    - {name: f, law: power_law, x: [n_params_nonembed]}", True),
        ("fits:\n    - {name: f, law: power_law, x: [n_params_nonembed], group_by: data.kappa}", True),
        ("fits:\n    - {name: f, law: power_law, x: [n_param_nonembed]}", False),
        ("frontiers:\n    - {method: isoflop, query: isoflop, budget: budget}", True),
        ("frontiers:\n    - {method: isoflop, query: isoflop, budget: flop_budget}", False),
    ):
        spec = tmp_path / "s.yaml"
        spec.write_text(base + f"analysis:\n  {analysis}\n")
        result = CliRunner().invoke(cli, ["validate", str(spec), "-w", str(tmp_path / "ws")])
        assert (result.exit_code == 0) == ok, (analysis, result.output)
        if "n_param_nonembed" in analysis:
            assert result.output.startswith("Error: ") and ("s.yaml:22 analysis.fits[0].x: `n_param_nonembed` is "
                                                            "not a column of query final_loss (run_id, ") in result.output
            assert "did you mean `n_params_nonembed`?" in result.output
        elif not ok:
            assert "analysis.frontiers[0].budget: `flop_budget` is not a column of query isoflop" in result.output


def test_validate_and_compile_say_a_corpus_file_is_missing(tmp_path: Path) -> None:
    """Before: every run failed at its start, after the compile had written its manifests."""
    spec = tmp_path / "bigram.yaml"
    spec.write_text((REPO / "specs" / "language_bigram.yaml").read_text().replace(
        "corpus: data/tiny_corpus.txt", "corpus: data/tiny_corpu.txt"))
    for command in ("validate", "compile"):
        result = CliRunner().invoke(cli, [command, str(spec), "-w", str(tmp_path / "ws")])
        assert result.exit_code == 1, result.output
        assert "bigram.yaml:18 data.corpus: no such file: " in result.output
        assert str(tmp_path / "data" / "tiny_corpu.txt") in result.output
    assert not (tmp_path / "ws" / "runs").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny_corpu.txt").write_text("some text " * 100)
    assert CliRunner().invoke(cli, ["validate", str(spec)]).exit_code == 0
