"""The compiler: sweeps, derived values, constraints, extends, and golden compiled specs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import REPO, TEST_SPECS, check_golden
from scaling_db.spec.compiler import compile_spec

BASE = (TEST_SPECS / "base.yaml").read_text()


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_sweep(tmp_path: Path, sweep: str, extra: str = "") -> Path:
    head = BASE.split("sweep:")[0]
    return write(tmp_path, head + extra + "sweep:\n" + sweep)


def values(compiled, getter) -> list:
    return [getter(r) for r in compiled.runs]


def test_product_is_the_default(tmp_path: Path) -> None:
    c = compile_spec(with_sweep(tmp_path, "  axes:\n    model.d_model: [16, 32]\n    train.optimizer.lr: [0.1, 0.01, 0.001]\n"))
    assert len(c.runs) == 6
    pairs = {(r.model.d_model, r.train.optimizer.lr) for r in c.runs}
    assert pairs == {(d, lr) for d in (16, 32) for lr in (0.1, 0.01, 0.001)}


def test_zip_pairs_values_and_multiplies_with_axes(tmp_path: Path) -> None:
    sweep = (
        "  axes:\n    train.optimizer.lr: [0.1, 0.01]\n"
        "  zip:\n    - model.d_model: [16, 32, 64]\n      model.n_layers: [1, 2, 3]\n"
    )
    c = compile_spec(with_sweep(tmp_path, sweep))
    assert len(c.runs) == 6
    assert {(r.model.d_model, r.model.n_layers) for r in c.runs} == {(16, 1), (32, 2), (64, 3)}


def test_geometric_and_linear_ranges(tmp_path: Path) -> None:
    sweep = (
        "  axes:\n    train.optimizer.lr: {geomspace: [1.0e-4, 1.0e-2], num: 3}\n"
        "    model.d_model: {linspace: [16, 48], num: 3, integer: true}\n"
    )
    c = compile_spec(with_sweep(tmp_path, sweep))
    assert sorted({r.train.optimizer.lr for r in c.runs}) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert sorted({r.model.d_model for r in c.runs}) == [16, 32, 48]


def test_seeds_are_a_replicate_axis(tmp_path: Path) -> None:
    c = compile_spec(with_sweep(tmp_path, "  axes:\n    model.d_model: [16, 32]\n  seeds: [0, 1, 2]\n"))
    assert len(c.runs) == 6
    assert sorted(values(c, lambda r: r.train.seed)) == [0, 0, 1, 1, 2, 2]
    assert len({r.run_id for r in c.runs}) == 6


def test_derived_tokens_from_tokens_per_parameter(tmp_path: Path) -> None:
    sweep = "  axes:\n    model.d_model: [16, 32, 64]\n  derive:\n    train.tokens: 20 * n_params_nonembed\n"
    c = compile_spec(with_sweep(tmp_path, sweep))
    for r in c.runs:
        per_step = r.train.batch_size * r.model.context
        assert r.train.steps == math.ceil(20 * r.counts.n_params_nonembed / per_step)
        assert r.train.tokens == r.train.steps * per_step


def test_isoflop_design_steps_from_flop_budget(tmp_path: Path) -> None:
    sweep = (
        "  vars: [flop_budget]\n"
        "  axes:\n    flop_budget: [1.0e9, 1.0e10]\n    model.d_model: [16, 32, 64]\n"
        "  derive:\n    train.steps: max(1, round(flop_budget / (6 * n_params * tokens_per_step)))\n"
    )
    path = with_sweep(tmp_path, sweep)
    path.write_text(path.read_text().replace("  tokens: 2000\n", ""))  # the budget comes from steps
    c = compile_spec(path)
    assert len(c.runs) == 6
    for r in c.runs:
        assert r.vars["flop_budget"] in (1e9, 1e10)
        budget_flops = 6 * r.counts.n_params * r.train.tokens
        assert budget_flops == pytest.approx(r.vars["flop_budget"], rel=0.1)


def test_heads_derived_from_width(tmp_path: Path) -> None:
    sweep = "  axes:\n    model.d_model: [32, 64]\n  derive:\n    model.n_heads: model.d_model // 32\n"
    c = compile_spec(with_sweep(tmp_path, sweep))
    assert values(c, lambda r: (r.model.d_model, r.model.n_heads)) == [(32, 1), (64, 2)]


def test_constraints_drop_points_with_reason(tmp_path: Path) -> None:
    sweep = (
        "  axes:\n    model.d_model: [16, 32, 64]\n"
        "  constraints:\n    - drop_if: model.d_model > 32\n      reason: too wide for this test\n"
    )
    c = compile_spec(with_sweep(tmp_path, sweep))
    assert values(c, lambda r: r.model.d_model) == [16, 32]
    assert [(d.assignments, d.reason) for d in c.dropped] == [({"model.d_model": 64}, "too wide for this test")]


def test_duplicate_points_collapse_to_one_run(tmp_path: Path) -> None:
    sweep = "  axes:\n    model.d_model: [16, 32]\n  derive:\n    model.d_model: 16\n"
    c = compile_spec(with_sweep(tmp_path, sweep))
    assert len(c.runs) == 1
    assert c.dropped[0].reason.startswith("same run as")


def test_extends_overrides_and_replaces_on_kind_change(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    child = write(tmp_path, (
        "extends: base.yaml\nexperiment: child\n"
        "train:\n  optimizer: {kind: sgd, lr: 0.1}\n"
        "sweep:\n  axes:\n    model.d_model: [64]\n"
    ), "child.yaml")
    c = compile_spec(child)
    (r,) = c.runs
    assert c.experiment == "child"
    assert r.train.optimizer.kind == "sgd" and r.train.optimizer.momentum == 0.9  # sgd defaults, no adamw keys
    assert r.train.batch_size == 4 and r.model.d_model == 64  # inherited, overridden


def test_checkpoint_schedules(tmp_path: Path) -> None:
    text = BASE.replace("{kind: linear, count: 3}", "{kind: log, count: 5, first: 2}").replace("tokens: 2000", "steps: 1000")
    (r, _) = compile_spec(write(tmp_path, text)).runs
    assert r.train.checkpoint_steps == [round(2 * 500 ** (i / 4)) for i in range(5)] == [2, 9, 45, 211, 1000]
    (r, _) = compile_spec(write(tmp_path, BASE.replace("tokens: 2000", "steps: 10"))).runs
    assert r.train.checkpoint_steps == [3, 7, 10]


def test_nothing_left_to_defaults(tmp_path: Path) -> None:
    r = compile_spec(write(tmp_path, BASE)).runs[0]
    dumped = r.model_dump(mode="json")
    assert dumped["model"]["n_heads"] == 1 and dumped["model"]["vocab_size"] == 50
    assert dumped["train"]["warmup_steps"] == round(0.02 * dumped["train"]["steps"])
    assert dumped["resources"]["peak_memory_bytes"] > 0
    assert set(dumped["train_flops"]) == {"6n_nonembed", "6n", "exact"}


SHIPPED = sorted((REPO / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_match_golden(path: Path, regen_golden: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    compiled = compile_spec(path.relative_to(REPO))
    def dump(r):
        dumped = r.model_dump(mode="json")
        dumped["origin"]["base_dir"] = "<specs dir>"  # machine-specific, not part of identity
        return dumped

    golden = {"experiment": compiled.experiment, "dropped": [d.reason for d in compiled.dropped],
              "runs": [dump(r) for r in compiled.runs]}
    if compiled.upstream:  # teachers (only specs that have them show the key)
        golden["upstream"] = [dump(r) for r in compiled.upstream]
    text = json.dumps(golden, indent=1, sort_keys=True) + "\n"
    check_golden(REPO / "tests" / "golden" / f"{path.stem}.json", text, regen_golden)


def test_compile_is_deterministic_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "from scaling_db.spec.compiler import compile_spec; print([r.run_id for r in compile_spec('specs/ba_graph.yaml').runs])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(outs) == 1 and "[" in outs.pop()
