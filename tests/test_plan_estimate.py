"""Wall-time estimates of a plan: from runs measured on this machine, else a FLOP-based guess."""

from __future__ import annotations

import pytest

import scaling_db.training.execute
from fakes import compiled_workspace, fake_build_token_source
from scaling_db.spec.plan import ThroughputSample, estimate_run
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.throughput import measured_throughput
from scaling_db.training.execute import execute_run
from scaling_db.training.records import RunState, read_log


def sample(d_model: int, fpt: float, tokens_per_s: float, *, device: str = "cpu", host: str = "h",
           tokens: int = 1000, wall: float = 12.0) -> ThroughputSample:
    return ThroughputSample(run_id=f"r{d_model}{device}", device=device, host=host, model_kind="transformer",
                            d_model=d_model, n_layers=2, flops_per_token=fpt, tokens=tokens,
                            tokens_per_s=tokens_per_s, wall_time_s=wall)


@pytest.fixture
def manifests(tmp_path):
    ws, ids = compiled_workspace(tmp_path, sweep={"axes": {"model.d_model": [16, 32, 64]}})
    return ws, [ws.load_manifest(i) for i in ids]


def test_estimate_scales_the_nearest_measured_shape_by_flops_per_token(manifests):
    _, (small, big, _) = manifests
    fpt_small, fpt_big = small.flops_per_token["exact"], big.flops_per_token["exact"]
    one = [sample(16, fpt_small, 100.0)]  # 10 s training + 2 s other
    est = estimate_run(big, one, gflops=30.0, host="h")
    assert est.source == "measured"
    assert est.basis == "measured on 1 run of d_model=16, n_layers=2 (cpu), scaled by FLOPs per token^0.50 (1 shape)"
    assert est.seconds == pytest.approx(2.0 + big.tokens / (100.0 * (fpt_small / fpt_big) ** 0.5))
    # two shapes: their own slope (here tokens/s falls as FLOPs per token^-1: compute bound)
    two = one + [sample(999, fpt_small * 4, 25.0, wall=42.0)]
    est = estimate_run(big, two, gflops=30.0, host="h")
    assert "^1.00 (2 shapes)" in est.basis
    assert est.seconds == pytest.approx(2.0 + big.tokens / (100.0 * fpt_small / fpt_big))


def test_estimate_prefers_this_host_and_the_gpu_and_falls_back_to_flops(manifests):
    _, (small, _, _) = manifests
    fpt = small.flops_per_token["exact"]
    other_host = sample(16, fpt, 1.0, host="elsewhere")
    gpu = sample(16, fpt, 1000.0, device="cuda:0")
    cpu = sample(16, fpt, 100.0)
    assert estimate_run(small, [other_host, cpu], 30.0, host="h").seconds == pytest.approx(2.0 + small.tokens / 100)
    assert "(cuda:0)" in estimate_run(small, [cpu, gpu], 30.0, host="h").basis
    guess = estimate_run(small, [], 30.0)
    assert guess.source == "flops" and guess.basis == "FLOP-based guess at 30 GFLOP/s"
    assert guess.seconds == pytest.approx(small.train_flops["exact"] / 30e9)


@pytest.mark.slow
def test_estimate_from_measured_shapes_is_near_the_measured_time_of_another(manifests, monkeypatch):
    """Run the smallest and largest model, estimate the middle one from them, run it and compare.

    Within 30% on a quiet machine; a factor 1.6 here, where other processes share the cores."""
    monkeypatch.setattr(scaling_db.training.execute, "build_token_source", fake_build_token_source)
    ws, (small, middle, big) = manifests
    for m in (small, big):
        assert execute_run(ws, m.run_id, device="cpu", threads=1).status == RunState.FINISHED
    ingest_runs(ws, [small.run_id, big.run_id])
    measured = measured_throughput(ws)
    assert sorted(s.run_id for s in measured) == sorted([small.run_id, big.run_id])
    est = estimate_run(middle, measured, gflops=30.0)
    assert est.source == "measured" and "(2 shapes)" in est.basis
    status = execute_run(ws, middle.run_id, device="cpu", threads=1)
    actual = read_log(ws.log_path(middle.run_id))[-1].wall_time_s
    assert status.status == RunState.FINISHED and 1 / 1.6 < est.seconds / actual < 1.6, (est, actual)
