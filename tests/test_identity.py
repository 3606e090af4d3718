"""Run identity: which fields change a run_id and which do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TEST_SPECS
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.manifest import IDENTITY_EXCLUDED, compute_run_id

BASE = yaml.safe_load((TEST_SPECS / "base.yaml").read_text())


def compile_data(tmp_path: Path, data: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return compile_spec(path)


def ids(compiled) -> list[str]:
    return [r.run_id for r in compiled.runs]


def test_excluded_fields_are_pinned() -> None:
    # Changing this list changes which results are reused: review any change deliberately.
    assert IDENTITY_EXCLUDED == {"run_id", "name", "description", "tags", "resources", "origin"}


def test_run_id_is_the_hash_of_the_manifest(tmp_path: Path) -> None:
    for r in compile_data(tmp_path, BASE).runs:
        assert r.run_id == compute_run_id(r.model_dump(mode="json"))
        assert len(r.run_id) == 12


def test_prose_placement_and_location_do_not_change_ids(tmp_path: Path) -> None:
    before = ids(compile_data(tmp_path, BASE))
    changed = {**BASE, "description": "new words", "tags": ["x", "y"], "resources": {"device": "cpu", "threads": 2}}
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    assert ids(compile_data(sub, changed)) == before


@given(st.permutations(list(BASE)))
@settings(max_examples=20, deadline=None)
def test_key_order_does_not_change_ids(tmp_path_factory, order) -> None:
    tmp = tmp_path_factory.mktemp("order")
    reordered = {k: BASE[k] for k in order}
    reordered["train"] = dict(reversed(list(BASE["train"].items())))
    assert ids(compile_data(tmp, reordered)) == ids(compile_data(tmp, BASE, "base.yaml"))


def test_equivalent_spellings_do_not_change_ids(tmp_path: Path) -> None:
    spelled = {**BASE, "train": {**BASE["train"], "optimizer": {"kind": "adamw", "lr": "1e-2"}}}
    text = yaml.safe_dump(spelled).replace("'1e-2'", "1e-2")
    (tmp_path / "a.yaml").write_text(text)
    explicit_default = {**BASE, "model": {**BASE["model"], "positions": "learned", "mlp_ratio": 4}}
    assert ids(compile_spec(tmp_path / "a.yaml")) == ids(compile_data(tmp_path, BASE)) == ids(
        compile_data(tmp_path, explicit_default, "b.yaml")
    )


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "batch_size", 8),
        ("train", "tokens", 4000),
        ("train", "eval_tokens", 512),
        ("train", "seed", 1),
        ("train", "grad_clip", 0.5),
        ("train", "precision", "fp32"),
        ("train", "schedule", {"kind": "wsd"}),
        ("train", "optimizer", {"kind": "adamw", "lr": 0.02}),
        ("train", "checkpoints", {"kind": "log", "count": 3}),
        ("model", "n_layers", 2),
        ("model", "context", 16),
        ("model", "positions", "rotary"),
        ("model", "tie_embeddings", True),
        ("model", "parameterization", {"kind": "mup"}),
        ("data", "kappa", 0.5),
        ("data", "seed", 3),
        ("data", "graph", {"kind": "barabasi_albert", "n": 50, "m": 3}),
    ],
)
def test_training_fields_change_ids(tmp_path: Path, section: str, key: str, value) -> None:
    changed = {**BASE, section: {**BASE[section], key: value}}
    assert set(ids(compile_data(tmp_path, changed))).isdisjoint(ids(compile_data(tmp_path, BASE, "b.yaml")))


def test_experiment_name_changes_ids(tmp_path: Path) -> None:
    assert set(ids(compile_data(tmp_path, {**BASE, "experiment": "other"}))).isdisjoint(ids(compile_data(tmp_path, BASE, "b.yaml")))


def test_adding_a_sweep_point_adds_exactly_one_run(tmp_path: Path) -> None:
    before = ids(compile_data(tmp_path, BASE))
    more = {**BASE, "sweep": {"axes": {"model.d_model": [16, 32, 48]}}}
    after = ids(compile_data(tmp_path, more, "more.yaml"))
    assert set(before) < set(after) and len(set(after) - set(before)) == 1
