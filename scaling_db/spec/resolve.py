"""One validated sweep point resolved into a `RunManifest`, and the upstream runs it needs.

Resolving fixes everything a runner must not decide: the budget in whole steps, the checkpoint
steps, parameter counts and FLOPs per token (`scaling_db.spec.counting`), a memory estimate, a
readable name, and the content-hashed run id. A `teacher_lm` data section implies a teacher
transformer trained on the corpus: `teacher_manifest` builds that upstream run in code
(experiment `teachers`, the recipe below) and `resolve_upstream` writes its run id into the
student's data, so identical teachers hash to one run shared by every experiment.
"""

from __future__ import annotations

import math
from typing import Any

from scaling_db.spec.counting import (
    TransformerShape, count_params, estimate_peak_memory_bytes, flops_per_token,
)
from scaling_db.spec.data import CorpusData, TeacherLMData
from scaling_db.spec.manifest import (
    CorpusEpochsData,
    ResolvedLMTrain,
    ResolvedTeacherLMData,
    ResolvedTransformer,
    RunCounts,
    RunManifest,
    RunOrigin,
    RunResources,
    canonical_json,
    compute_run_id,
)
from scaling_db.spec.schema import ExperimentHeader, LinearCheckpoints, LMTrain, RunSpec, TransformerModel
from scaling_db.spec.sweep import ExpressionError, shown_value

#: Every integer in a manifest must fit the database's 64-bit columns.
_INT64 = 2**63

#: The experiment of every teacher run (constant, so identical teachers of any spec share an id).
TEACHERS_EXPERIMENT = "teachers"
#: The teacher's recipe: AdamW at lr 3e-3, weight decay 0.01, 2% warmup then cosine, batch 64,
#: fp32 (models this small gain nothing from bf16 on a CPU); heads of 16.
TEACHER_LR = 3e-3
TEACHER_BATCH = 64
TEACHER_D_HEAD = 16
#: Held-out tokens of each teacher evaluation (a short corpus's eval split is cycled through).
TEACHER_EVAL_TOKENS = 10_000
def vocab_size_of(data: dict[str, Any]) -> int | None:
    """The vocabulary a data source yields, known without touching any file."""
    kind = data["kind"]
    if kind == "graph_walk":
        return int(data["graph"]["n"])
    if kind in ("language_bigram", "teacher_lm", "corpus", "corpus_epochs"):
        tok = data["tokenizer"]
        return 256 if tok["kind"] == "char" else int(tok["vocab_size"])
    return None


def transformer_shape(model: dict[str, Any], vocab_size: int) -> TransformerShape:
    """The shape of a (validated, defaults-filled) transformer model section."""
    heads = model["n_heads"] or model["d_model"] // model["d_head"]
    return TransformerShape(
        vocab_size=vocab_size,
        context=model["context"],
        n_layers=model["n_layers"],
        d_model=model["d_model"],
        n_heads=heads,
        d_ff=int(round(model["mlp_ratio"] * model["d_model"])),
        positions=model["positions"],
        tie_embeddings=model["tie_embeddings"],
        bias=model["bias"],
    )


def _whole(section: dict[str, Any], key: str, where: str, optional: bool = False) -> Any:
    """A field the counts read before the point is validated: a plain positive number, so that
    a careless value (`true`, `'64'`, `[1]`) never reaches the arithmetic (`[1] * 10**10`)."""
    value = section.get(key)
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < _INT64:
        raise ExpressionError(f"cannot compute the model's counts: `{where}.{key}` is not a positive number")
    return value


def counts_of(run: dict[str, Any]) -> dict[str, Any]:
    model, data, train = run["model"], run["data"], run["train"]
    if not all(isinstance(x, dict) for x in (model, data, train)):
        raise ExpressionError("cannot compute the model's counts: a run section is not a mapping")
    if model.get("kind") == "transformer":
        for key in ("n_layers", "d_model", "d_head", "context", "mlp_ratio"):
            _whole(model, key, "model")
        _whole(model, "n_heads", "model", optional=True)
        _whole(train, "batch_size", "train")
        if data.get("kind") == "graph_walk" and isinstance(data.get("graph"), dict):
            _whole(data["graph"], "n", "data.graph")
        elif isinstance(data.get("tokenizer"), dict) and data["tokenizer"].get("kind") == "bpe":
            _whole(data["tokenizer"], "vocab_size", "data.tokenizer")
        vocab = vocab_size_of(data)
        shape = transformer_shape(model, vocab)
        c = count_params(shape)
        fpt = flops_per_token(shape)
        return {
            "n_params": c.n_params, "n_params_nonembed": c.n_params_nonembed,
            "n_params_embed": c.n_params_embed, "vocab_size": vocab,
            "tokens_per_step": run["train"]["batch_size"] * model["context"],
            "flops_per_token_6n_nonembed": fpt["6n_nonembed"], "flops_per_token_6n": fpt["6n"],
            "flops_per_token_exact": fpt["exact"],
        }
    n = model.get("n_features") or model.get("capacity") or train.get("samples")
    if isinstance(n, bool) or not isinstance(n, int):
        raise ExpressionError("cannot compute the model's counts: its size is not an integer")
    return {"n_params": n, "n_params_nonembed": n, "n_params_embed": 0}


def _checkpoint_steps(train: LMTrain, steps: int) -> list[int]:
    sched = train.checkpoints
    if isinstance(sched, LinearCheckpoints):
        points = [steps * (i + 1) / sched.count for i in range(sched.count)]
    else:
        first = min(sched.first, steps)
        n = sched.count
        ratio = (steps / first) ** (1 / (n - 1)) if n > 1 else 1.0
        points = [first * ratio**i for i in range(n)]
    return sorted({max(1, int(round(p))) for p in points} | {steps})


def _short(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return {
        "d_model": "d", "n_layers": "L", "n_heads": "h", "seed": "s", "batch_size": "bs",
        "tokens": "tok", "n_features": "N", "samples": "T", "parameterization": "", "kind": "",
    }.get(last, last)


def fmt_value(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "x"))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def run_name(experiment: str, assignments: dict[str, Any]) -> str:
    """A readable name from the swept values. For people only: never parsed."""
    parts = [f"{_short(k)}{fmt_value(v)}" for k, v in assignments.items()]
    return "-".join([experiment, *parts])


def resolve_point(
    header: ExperimentHeader,
    spec: RunSpec,
    variables: dict[str, Any],
    assignments: dict[str, Any],
    origin: RunOrigin,
    resolved_data: Any = None,
) -> RunManifest:
    """The manifest of one validated point; `resolved_data` replaces `spec.data` in it."""
    data = spec.data.model_dump(mode="json")
    if isinstance(spec.model, TransformerModel):
        model, train, counts, flops, train_flops, memory = _resolve_transformer(spec, data)
    else:
        model, train = spec.model, spec.train
        counts_map = counts_of({"model": model.model_dump(), "data": data, "train": train.model_dump()})
        n = counts_map["n_params"]
        counts = RunCounts(n_params=n, n_params_nonembed=n, n_params_embed=0, vocab_size=None)
        flops, train_flops = None, None
        # features of the training and eval sets, plus the normal equations, in float64
        memory = 8 * ((train.samples + train.eval_samples) * n + n * n)
    res = spec.resources
    payload: dict[str, Any] = {
        "run_id": "",
        "name": run_name(header.experiment, assignments),
        "experiment": header.experiment,
        "description": header.description,
        "tags": list(header.tags),
        "origin": origin,
        "vars": variables,
        "data": resolved_data if resolved_data is not None else spec.data,
        "model": model,
        "train": train,
        "counts": counts,
        "flops_per_token": flops,
        "train_flops": train_flops,
        "resources": RunResources(
            device=res.device, n_devices=1, threads=res.threads, peak_memory_bytes=int(memory)
        ),
    }
    manifest = RunManifest.model_validate(payload)
    check_range(manifest)
    dumped = manifest.model_dump(mode="json")
    return manifest.model_copy(update={"run_id": compute_run_id(dumped)})


def _resolve_transformer(spec: RunSpec, data: dict[str, Any]) -> tuple[Any, Any, RunCounts, dict | None,
                                                                     dict | None, int]:
    """A transformer point's model (shapes filled in), train (steps, schedule), counts, FLOPs and memory."""
    model_spec: TransformerModel = spec.model  # type: ignore[assignment]
    vocab = vocab_size_of(data)
    shape = transformer_shape(model_spec.model_dump(mode="json"), vocab)
    model = ResolvedTransformer(
        **{**model_spec.model_dump(), "n_heads": shape.n_heads, "d_ff": shape.d_ff, "vocab_size": vocab}
    )
    pc = count_params(shape)
    fpt = flops_per_token(shape)
    t: LMTrain = spec.train  # type: ignore[assignment]
    per_step = t.batch_size * shape.context
    steps = t.steps if t.steps is not None else max(1, math.ceil(t.tokens / per_step))
    train = ResolvedLMTrain(
        optimizer=t.optimizer,
        schedule=t.schedule,
        checkpoint_schedule=t.checkpoints,
        batch_size=t.batch_size,
        steps=steps,
        tokens=steps * per_step,
        warmup_steps=int(round(t.schedule.warmup_frac * steps)),
        checkpoint_steps=_checkpoint_steps(t, steps),
        eval_tokens=t.eval_tokens,
        grad_clip=t.grad_clip,
        precision=t.precision,
        state_every=t.state_every,
        seed=t.seed,
    )
    counts = RunCounts(
        n_params=pc.n_params, n_params_nonembed=pc.n_params_nonembed,
        n_params_embed=pc.n_params_embed, vocab_size=vocab,
    )
    train_flops = {k: float(v) * train.tokens for k, v in fpt.items()}
    return model, train, counts, dict(fpt), train_flops, estimate_peak_memory_bytes(shape, t.batch_size)


def teacher_manifest(data: TeacherLMData, origin: RunOrigin) -> RunManifest:
    """The upstream run that trains the teacher of a `teacher_lm` data section.

    It trains on the corpus train split for `train_tokens` tokens (repeating the corpus when the
    budget needs more than one pass) with the recipe in the constants above. `temperature` is
    left out: it only changes sampling, so teachers differing only in it are one run.
    """
    corpus = CorpusData(kind="corpus", corpus=data.corpus, tokenizer=data.tokenizer, eval_frac=data.eval_frac)
    spec = RunSpec(
        data=corpus,
        model=TransformerModel(kind="transformer", n_layers=data.n_layers, d_model=data.d_model,
                               d_head=TEACHER_D_HEAD, context=data.context),
        train=LMTrain.model_validate({
            "optimizer": {"kind": "adamw", "lr": TEACHER_LR, "weight_decay": 0.01},
            "schedule": {"kind": "cosine", "warmup_frac": 0.02},
            "batch_size": TEACHER_BATCH, "tokens": data.train_tokens,
            "checkpoints": {"kind": "log", "count": 6, "first": 10},
            "eval_tokens": TEACHER_EVAL_TOKENS, "precision": "fp32", "seed": data.seed,
        }),
    )
    header = ExperimentHeader(
        experiment=TEACHERS_EXPERIMENT, tags=["upstream", "teacher"], data={}, model={}, train={},
        description=f"teacher of teacher_lm data: a {data.n_layers}-layer transformer trained on {data.corpus}",
    )
    epochs = CorpusEpochsData(kind="corpus_epochs", **corpus.model_dump(exclude={"kind"}))
    manifest = resolve_point(header, spec, {}, {}, origin, resolved_data=epochs)
    name = f"teacher-L{data.n_layers}-d{data.d_model}-c{data.context}-tok{data.train_tokens}-s{data.seed}"
    return manifest.model_copy(update={"name": name})  # the name is not part of the id


def resolve_upstream(spec: RunSpec, origin: RunOrigin, upstream: dict[str, RunManifest]) -> Any:
    """The point's data with its teacher resolved to a run, or None. `upstream` holds the
    teachers built so far, by their fields (sweep points mostly share one)."""
    if not isinstance(spec.data, TeacherLMData):
        return None
    key = canonical_json(spec.data.model_dump(mode="json", exclude={"temperature"}))
    if key not in upstream:
        upstream[key] = teacher_manifest(spec.data, origin)
    return ResolvedTeacherLMData(**spec.data.model_dump(), teacher_run_id=upstream[key].run_id)


def check_range(manifest: RunManifest) -> None:
    """The numbers the compiler computes fit the database's 64-bit columns. (Every integer a
    spec gives is already 64-bit, and every float finite: see `scaling_db.spec.fields`.)"""
    computed = {
        "counts.n_params": manifest.counts.n_params,
        "counts.n_params_embed": manifest.counts.n_params_embed,
        "train.tokens": getattr(manifest.train, "tokens", 0),
        "resources.peak_memory_bytes": manifest.resources.peak_memory_bytes,
    }
    for name, value in computed.items():
        if not -_INT64 <= value < _INT64:
            raise ExpressionError(f"`{name}` is out of range ({shown_value(value)}; at most 64-bit integers)")
