"""Run identity: which fields change a run_id and which do not.

The cases are derived from the manifest model: every leaf field of every variant of RunManifest
is perturbed in compiled manifests, and must change the run_id unless IDENTITY_EXCLUDED lists it."""

from __future__ import annotations

import copy
import functools
import hashlib
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from conftest import REPO, TEST_SPECS
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.manifest import IDENTITY_EXCLUDED, RunManifest, canonical_json, compute_run_id

BASE = yaml.safe_load((TEST_SPECS / "base.yaml").read_text())


def compile_data(tmp_path: Path, data: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return compile_spec(path)


def ids(compiled) -> list[str]:
    return [r.run_id for r in compiled.runs]


def test_excluded_fields_are_pinned() -> None:
    # Changing this list changes which results are reused: review any change deliberately.
    assert IDENTITY_EXCLUDED == {"run_id", "name", "description", "tags", "resources", "origin",
                                 "train.state_every"}


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


# -- every manifest field, derived from the model ---------------------------------------------------

def model_paths(annotation: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf field a manifest can have, over every variant of its unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return model_paths(typing.get_args(annotation)[0], prefix)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(model_paths(a, prefix) for a in typing.get_args(annotation) if a is not type(None)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return set().union(*(model_paths(f.annotation, f"{prefix}{name}.")
                             for name, f in annotation.model_fields.items()))
    return {prefix.removesuffix(".")}


MANIFEST_PATHS = model_paths(RunManifest)

#: Specs beside specs/*.yaml that reach the variants the shipped specs do not use.
VARIANTS = [
    {**BASE, "data": {**BASE["data"], "graph": {"kind": "random_regular", "n": 50, "d": 4}}},
    {**BASE, "data": {**BASE["data"], "graph": {"kind": "watts_strogatz", "n": 50, "k": 4, "p": 0.1}}},
    {**BASE, "data": {**BASE["data"], "graph": {"kind": "erdos_renyi_gnp", "n": 50, "p": 0.2}}},
    {**BASE, "data": {"kind": "language_bigram", "corpus": "corpus.txt", "tokenizer": {"kind": "bpe", "vocab_size": 300}},
     "train": {**BASE["train"], "optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.5}, "schedule": {"kind": "wsd"},
               "state_every": 5}},
]


def leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths through a manifest's JSON down to the model's leaf fields."""
    if ".".join(path) in MANIFEST_PATHS or not isinstance(value, dict):
        return [path]
    return [leaf for key, v in value.items() for leaf in leaves(v, (*path, key))]


def perturbed(value: Any) -> Any:
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if isinstance(value, dict):
        return {**value, "added": 1}
    return 1  # None


def excluded(path: tuple[str, ...]) -> bool:
    return any(".".join(path[:n]) in IDENTITY_EXCLUDED for n in range(1, len(path) + 1))


@pytest.fixture(scope="module")
def sample_manifests(tmp_path_factory) -> list[dict]:
    """One manifest of each distinct shape among specs/*.yaml and VARIANTS."""
    tmp = tmp_path_factory.mktemp("variants")
    compiled = [compile_spec(p) for p in sorted((REPO / "specs").glob("*.yaml"))]
    compiled += [compile_data(tmp, spec, f"variant{i}.yaml") for i, spec in enumerate(VARIANTS)]
    by_shape = {}
    for run in (r for c in compiled for r in c.runs):
        dumped = run.model_dump(mode="json")
        by_shape.setdefault(tuple(sorted(leaves(dumped))), dumped)
    return list(by_shape.values())


def test_the_samples_reach_every_manifest_field(sample_manifests) -> None:
    seen = {".".join(path) for m in sample_manifests for path in leaves(m)}
    assert seen == MANIFEST_PATHS, "a new manifest field: add a spec using it to VARIANTS"


def test_every_field_changes_the_id_unless_excluded(sample_manifests) -> None:
    """Identity is opt-out: changing any leaf of any manifest changes its run_id, except the
    fields in IDENTITY_EXCLUDED (and everything under them), which never do."""
    changed, unchanged = set(), set()
    for manifest in sample_manifests:
        run_id = compute_run_id(manifest)
        for path in leaves(manifest):
            other = copy.deepcopy(manifest)
            parent = functools.reduce(lambda d, k: d[k], path[:-1], other)
            parent[path[-1]] = perturbed(parent[path[-1]])
            (unchanged if compute_run_id(other) == run_id else changed).add(".".join(path))
    assert {p for p in changed if excluded(tuple(p.split(".")))} == set()
    assert {p for p in unchanged if not excluded(tuple(p.split(".")))} == set()
    assert {"train.state_every", "resources.threads", "origin.base_dir", "name"} <= unchanged


def test_state_every_does_not_change_ids_and_old_ids_stand(tmp_path: Path) -> None:
    """state_every only sets how often state is saved. It is hashed as its default (null), so
    the ids of runs compiled before it was excluded are the same."""
    saved = {**BASE, "train": {**BASE["train"], "state_every": 3}}
    assert ids(compile_data(tmp_path, saved)) == ids(compile_data(tmp_path, BASE, "b.yaml"))
    run = compile_data(tmp_path, BASE, "c.yaml").runs[0].model_dump(mode="json")
    payload = {k: v for k, v in run.items() if k not in {"run_id", "name", "description", "tags", "resources",
                                                         "origin"}}
    assert compute_run_id(run) == hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]


def test_adding_a_sweep_point_adds_exactly_one_run(tmp_path: Path) -> None:
    before = ids(compile_data(tmp_path, BASE))
    more = {**BASE, "sweep": {"axes": {"model.d_model": [16, 32, 48]}}}
    after = ids(compile_data(tmp_path, more, "more.yaml"))
    assert set(before) < set(after) and len(set(after) - set(before)) == 1
