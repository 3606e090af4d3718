"""Coordinate checks: muP keeps activations flat across an 8x width range, SP does not."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fakes import FakeWalkSource, fake_build_token_source, write_spec
from scaling_db.cli import cli
from scaling_db.training.coordcheck import growth
from scaling_db.spec.manifest import ResolvedTransformer
from scaling_db.training.model import Transformer
from scaling_db.store.query import run_query
from scaling_db.training.records import read_log
from scaling_db.workspace import Workspace

WIDTHS = (32, 64, 128, 256)  # an 8x range


def activations_after_training(kind: str, width: int, steps: int = 3, lr: float = 1e-2) -> dict[str, float]:
    """Mean |activation| per layer on a fixed held-out batch after `steps` Adam steps."""
    cfg = ResolvedTransformer(kind="transformer", n_layers=2, d_model=width, n_heads=width // 16, d_ff=4 * width,
                              vocab_size=64, context=16, parameterization={"kind": kind, "base_width": 32})
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.param_groups(lr=lr, weight_decay=0.0, optimizer="adamw"), lr=lr, betas=(0.9, 0.95))
    source = FakeWalkSource(64)
    for step in range(steps):
        batch = torch.from_numpy(source.batch("train", step, 16, 17))
        model(batch[:, :-1], batch[:, 1:]).backward()
        opt.step()
        opt.zero_grad()
    held_out = torch.from_numpy(source.batch("eval", 0, 16, 17))
    with torch.no_grad(), model.trace_activations() as acts:
        model(held_out[:, :-1])
    return acts


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, dict[int, float]]]:
    out: dict[str, dict[str, dict[int, float]]] = {}
    for kind in ("sp", "mup"):
        for width in WIDTHS:
            for layer, value in activations_after_training(kind, width).items():
                out.setdefault(kind, {}).setdefault(layer, {})[width] = value
    return out


def test_mup_activations_stay_flat_across_widths(measured):
    # Measured: every layer within 0.8x-1.2x from width 32 to 256; 1.5x leaves room for seeds.
    for layer, values in measured["mup"].items():
        assert 1 / 1.5 < growth(values) < 1.5, (layer, values)
        assert max(values.values()) / min(values.values()) < 1.6, (layer, values)


def test_sp_activations_grow_with_width(measured):
    # Under SP, Adam's constant-size updates move hidden outputs by ~lr * fan_in: measured 3-6.5x.
    hidden = [f"block{i}.{k}" for i in range(2) for k in ("attn", "mlp", "out")]
    growths = {layer: growth(measured["sp"][layer]) for layer in hidden}
    assert min(growths.values()) > 2.0, growths
    assert growth(measured["sp"]["logits"]) > 1.5
    for layer in hidden:  # and it grows monotonically with width
        values = [measured["sp"][layer][w] for w in WIDTHS]
        assert values == sorted(values), (layer, values)


def test_coordcheck_command_records_metrics_and_prints_a_table(tmp_path):
    spec = write_spec(tmp_path, sweep={"axes": {"model.d_model": [16, 32]}})
    ws_dir = tmp_path / "ws"
    result = CliRunner().invoke(cli, ["coordcheck", str(spec), "--widths", "16,32,64", "--steps", "2",
                                      "--param", "sp", "--param", "mup", "-w", str(ws_dir), "--device", "cpu"],
                                catch_exceptions=False, obj={"build_source": fake_build_token_source})
    assert result.exit_code == 0, result.output
    assert "mean |activation| after 2 steps" in result.output
    assert "block1.out" in result.output and "d=64 / d=16" in result.output
    ws = Workspace(ws_dir)
    info = ws.experiment_info("tiny-coordcheck")
    assert len(info["run_ids"]) == 6  # 3 widths x 2 parameterizations
    for run_id in info["run_ids"]:
        records = read_log(ws.log_path(run_id))
        assert [r.step for r in records] == [0, 1, 2]
        assert records[0].train_loss is None  # step 0: the initial weights
        assert {"act_mean_abs.embed", "act_mean_abs.logits", "act_mean_abs.block0.mlp"} <= set(records[-1].metrics)
    points = json.loads((ws.report_dir("tiny-coordcheck") / "coordcheck.json").read_text())
    assert {p["parameterization"] for p in points} == {"sp", "mup"}
    assert {p["width"] for p in points} == {16, 32, 64} and {p["step"] for p in points} == {0, 1, 2}
    stored = run_query(ws, "coordcheck", params={"experiment": "tiny-coordcheck"})  # metrics are in the database
    assert len(stored) == len(points) and set(stored["d_model"]) == {16, 32, 64}
    # Run again: the runs are finished, so nothing trains and the same table comes back.
    again = CliRunner().invoke(cli, ["coordcheck", str(spec), "--widths", "16,32,64", "--steps", "2",
                                     "--param", "sp", "--param", "mup", "-w", str(ws_dir)], catch_exceptions=False)
    assert again.output == result.output


def test_coordcheck_rejects_a_single_width(tmp_path):
    spec = write_spec(tmp_path)
    result = CliRunner().invoke(cli, ["coordcheck", str(spec), "--widths", "64"])
    assert result.exit_code == 2 and "give at least two widths" in result.output
