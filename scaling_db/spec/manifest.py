"""Run manifests: the fully resolved, content-addressed description of one run.

The manifest is the contract between the compiler and every runner: a runner reads nothing
else (no YAML, no defaults). Identity is opt-out: `run_id` is the SHA-256 of the canonical
JSON of the whole manifest except the fields in `IDENTITY_EXCLUDED` (things that do not
change what is trained: prose, placement, where the spec file sits on this machine, the
derived name, and how often a run saves its state). Canonical JSON means sorted keys, no
whitespace, and values normalised by Pydantic first, so key order in YAML and `1e-3` vs `0.001`
never matter.

Upstream runs: a run whose data comes from another run's trained model names that run in its
manifest (`teacher_lm` data carries `teacher_run_id`), so the student's id
changes when its teacher does, and `RunManifest.upstream` tells every runner what must finish
first. The teacher itself is an ordinary manifest (data `corpus_epochs`), shared by every
experiment that asks for the same teacher.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field

from scaling_db.spec.counting import FlopConvention, TransformerShape
from scaling_db.spec.data import CorpusData, DataSpec, TeacherLMData
from scaling_db.spec.schema import (
    CheckpointSpec,
    ClosedFormTrain,
    NearestNeighborModel,
    OptimizerSpec,
    RandomFeaturesModel,
    ScheduleSpec,
    StrictModel,
    TransformerModel,
)

MANIFEST_SCHEMA_VERSION = 1

#: Fields of a manifest that do not enter its run_id. Tests pin this list. A dotted path is a
#: nested field, hashed as null (its default) rather than dropped, so the ids of runs compiled
#: before it was excluded do not change: `train.state_every` only says how often a run saves its
#: state, and a resumed run's curve is the same whatever it is.
IDENTITY_EXCLUDED: frozenset[str] = frozenset(
    {"run_id", "name", "description", "tags", "resources", "origin", "train.state_every"}
)


class ResolvedTransformer(TransformerModel):
    """A transformer with every derived shape filled in."""

    n_heads: int
    d_ff: int
    vocab_size: int

    def shape(self) -> TransformerShape:
        return TransformerShape(
            vocab_size=self.vocab_size,
            context=self.context,
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            positions=self.positions,
            tie_embeddings=self.tie_embeddings,
            bias=self.bias,
        )


class ResolvedTeacherLMData(TeacherLMData):
    """`teacher_lm` data with its teacher resolved to a run (built by the compiler, trained first)."""

    teacher_run_id: str | None = Field(
        None, description="the upstream run whose trained model is sampled; None only in manifests "
        "compiled before teachers were runs (recompile them)"
    )


class CorpusEpochsData(CorpusData):
    """A corpus served for as many passes as the run's budget needs (a teacher's training data).

    Not a spec kind: the compiler writes it into teacher manifests. Pass 1 is the `corpus`
    window order; each later pass is a fresh shuffle of the same windows."""

    kind: Literal["corpus_epochs"]  # type: ignore[assignment]


def _resolved_data_kinds() -> tuple[type, ...]:
    """The spec's data kinds with `teacher_lm` resolved, plus `corpus_epochs`."""
    kinds = get_args(get_args(DataSpec)[0])
    return (*(ResolvedTeacherLMData if k is TeacherLMData else k for k in kinds), CorpusEpochsData)


ResolvedData = Annotated[Union[_resolved_data_kinds()], Field(discriminator="kind")]  # type: ignore[valid-type]

ResolvedModel = Annotated[
    Union[ResolvedTransformer, RandomFeaturesModel, NearestNeighborModel], Field(discriminator="kind")
]


class ResolvedLMTrain(StrictModel):
    """Token-based training with the budget in whole steps and every schedule point in steps."""

    kind: Literal["lm"] = "lm"
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    checkpoint_schedule: CheckpointSpec
    batch_size: int
    steps: int
    tokens: int = Field(description="steps * batch_size * context: tokens the run trains on")
    warmup_steps: int
    checkpoint_steps: list[int] = Field(description="steps after which a checkpoint is evaluated and logged")
    eval_tokens: int
    grad_clip: float | None
    precision: Literal["auto", "fp32", "bf16"]
    state_every: int | None
    seed: int


ResolvedTrain = Annotated[Union[ResolvedLMTrain, ClosedFormTrain], Field(discriminator="kind")]


class RunCounts(StrictModel):
    n_params: int
    n_params_nonembed: int
    n_params_embed: int
    vocab_size: int | None


class RunResources(StrictModel):
    """What a scheduler needs to place the run without importing the model."""

    device: Literal["auto", "cpu", "cuda"]
    n_devices: int
    threads: int
    peak_memory_bytes: int


class RunOrigin(StrictModel):
    """Where the spec lives on the machine that compiled it (relative data paths start here)."""

    spec_path: str
    base_dir: str


class RunManifest(StrictModel):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    run_id: str
    name: str
    experiment: str
    description: str = ""
    tags: list[str] = []
    origin: RunOrigin
    vars: dict[str, Any] = Field({}, description="free sweep variables of this point (e.g. flop_budget)")
    data: ResolvedData
    model: ResolvedModel
    train: ResolvedTrain
    counts: RunCounts
    flops_per_token: dict[FlopConvention, int] | None
    train_flops: dict[FlopConvention, float] | None
    resources: RunResources

    @property
    def tokens(self) -> int:
        """Training tokens (or training samples for closed-form learners)."""
        return self.train.tokens if self.train.kind == "lm" else self.train.samples

    @property
    def upstream(self) -> list[str]:
        """Ids of the runs that must finish before this one starts (its teacher, if any)."""
        teacher = getattr(self.data, "teacher_run_id", None)
        return [teacher] if teacher else []

    def identity_payload(self) -> dict[str, Any]:
        return identity_payload(self.model_dump(mode="json"))


def identity_payload(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest (as JSON data) that its run_id hashes."""
    payload = {k: v for k, v in manifest.items() if k not in IDENTITY_EXCLUDED}
    for path in IDENTITY_EXCLUDED:
        section, dot, field = path.partition(".")
        if dot and isinstance(payload.get(section), dict) and field in payload[section]:
            payload[section] = {**payload[section], field: None}
    return payload


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_run_id(manifest: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the canonical identity payload (48 bits: no collisions
    in practice below millions of runs)."""
    return hashlib.sha256(canonical_json(identity_payload(manifest)).encode()).hexdigest()[:12]


def diff_manifests(a: RunManifest, b: RunManifest) -> list[tuple[str, Any, Any]]:
    """Fields (dotted paths) whose values differ between two manifests, with both values."""
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif x != y:
            out.append((path, x, y))

    walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")
    return out
