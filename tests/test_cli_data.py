"""`scaledb data inspect` through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conftest import REPO
from scaling_db.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_inspect_graph_spec_json(tmp_path: Path) -> None:
    # The project's sizing experiment (2-core CPU): unbiased walks on a 500-node BA graph with m = 2.
    spec = tmp_path / "ba500.yaml"
    spec.write_text((REPO / "specs" / "ba_graph.yaml").read_text()
                    .replace("n: 1000, m: 3", "n: 500, m: 2").replace("experiment: ba_graph", "experiment: ba500"))
    result = invoke("data", "inspect", str(spec), "--json", "-w", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out) == 1  # six widths, one data source
    src = out[0]
    assert src["kind"] == "graph_walk" and src["vocab_size"] == 500
    # This walk's entropy rate, computed independently when the default experiment was sized: 1.725 nats
    assert abs(src["entropy_rate"] - 1.725) < 5e-4
    assert src["degree"]["min"] >= 2 and len(src["samples"]) == 3
    assert list((tmp_path / "cache" / "graphs").iterdir())  # built once, cached in the workspace


def test_inspect_every_example_family_as_text(tmp_path: Path) -> None:
    for name in ("er_graph", "language_bigram", "corpus", "percolation", "random_features"):
        result = invoke("data", "inspect", str(REPO / "specs" / f"{name}.yaml"), "-w", str(tmp_path))
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"source 1 of 1: {name if name != 'er_graph' else 'graph_walk'}")
        assert "entropy_rate" in result.output


def test_inspect_reports_unknown_entropy_for_corpus(tmp_path: Path) -> None:
    result = invoke("data", "inspect", str(REPO / "specs" / "corpus.yaml"), "--json", "-w", str(tmp_path))
    src = json.loads(result.output)[0]
    assert src["entropy_rate"] == "unknown" and src["tokens_used"] > 20
    assert all(isinstance(s, str) and s for s in src["samples"])
