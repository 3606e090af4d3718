"""benchmarks/bench_gpu.py runs end to end (on CPU, at a toy size): the script, not its figures."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_gpu_tiny_runs_and_writes_its_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    figures = bench.main(["--tiny", "--json", str(out)])
    assert json.loads(out.read_text())["k"] == 2 == figures["k"]
    assert [row["width"] for row in figures["widths"]] == [16, 32]
    assert all(row["plain_tokens_per_s"] > 0 and 0 < row["mfu_scaledb"] for row in figures["widths"])
    assert figures["runs_per_hour_1"] > 0 and figures["runs_per_hour_2"] > 0
    assert figures["peak_source"].startswith("measured here")
