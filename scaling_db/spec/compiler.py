"""The compiler: a spec file in, fully resolved and content-addressed run manifests out.

Pure and deterministic: it reads the YAML (and files it `extends`) and nothing else, so the
same spec gives the same run ids on every machine. Each sweep point is validated as a
`RunSpec` (twice when `derive:` is used: once to fill defaults that expressions may read,
once with the derived values), filtered by `constraints:`, and resolved into a `RunManifest`
(budget in whole steps, checkpoint steps listed, counts and FLOPs computed). Every problem of
every point is collected and reported at once, at the line that caused it.

Upstream runs: a `teacher_lm` data section implies a teacher transformer trained on the corpus.
The compiler builds that teacher's manifest in code (`teacher_manifest`: experiment `teachers`,
the recipe below) and writes its run id into the students' data (`teacher_run_id`). Identical
teachers hash to one run id, so every experiment asking for the same teacher shares one run.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from scaling_db.spec.counting import (
    TransformerShape, count_params, estimate_peak_memory_bytes, flops_per_token,
)
from scaling_db.errors import SpecError, SpecProblem
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
from scaling_db.spec.schema import (
    AnalysisSpec,
    ClusterSpec,
    ExperimentHeader,
    LinearCheckpoints,
    LMTrain,
    RunSpec,
    TransformerModel,
)
from scaling_db.spec.loader import (
    SpecSource,
    candidate_models,
    kind_of,
    display_path,
    problems_from_validation,
    read_spec_source,
)
from scaling_db.spec.sweep import (
    COUNT_NAMES,
    FUNCTIONS,
    RUN_SECTIONS,
    Expression,
    ExpressionError,
    Scope,
    SweepPoint,
    check_sweep_keys,
    count_points,
    expand_sweep,
    is_field_path,
    plain_scalar,
    set_keys,
    set_path,
    shown_value,
)

MAX_REPORTED_PROBLEMS = 50
#: Checks that a named query or .sql file exists; returns why not, or None.
QueryCheck = Callable[[str], "str | None"]
#: Sweep points one compile expands by default (`scaledb compile --max-runs N` raises it):
#: 10,000 points compile in about 2 s; a typo such as an extra zero should not take an hour.
DEFAULT_MAX_RUNS = 10_000
#: Every integer in a manifest must fit the database's 64-bit columns.
_INT64 = 2**63

#: The experiment of every teacher run (constant, so identical teachers of any spec share an id).
TEACHERS_EXPERIMENT = "teachers"
#: The teacher's recipe: AdamW at lr 3e-3, weight decay 0.01, 2% warmup then cosine, batch 64,
#: fp32 (what DESIGN.md measured for small models on this kind of machine); heads of 16.
TEACHER_LR = 3e-3
TEACHER_BATCH = 64
TEACHER_D_HEAD = 16
#: Held-out tokens of each teacher evaluation (a short corpus's eval split is cycled through).
TEACHER_EVAL_TOKENS = 10_000


@dataclass(frozen=True)
class DroppedPoint:
    """A sweep point that produced no run, and why."""

    assignments: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class CompiledExperiment:
    experiment: str
    spec_path: str
    spec_hash: str
    description: str
    analysis: AnalysisSpec
    runs: list[RunManifest]
    dropped: list[DroppedPoint] = field(default_factory=list)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)  # placement defaults; not in manifests
    #: runs the experiment's runs need finished first (teachers); not part of the experiment
    upstream: list[RunManifest] = field(default_factory=list)


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


def _counts(run: dict[str, Any]) -> dict[str, Any]:
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


def _copy(value: Any) -> Any:
    """Deep copy of plain YAML data (much faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_DEFAULTS: dict[type[BaseModel], tuple[dict[str, Any], dict[str, Any]]] = {}
_MODELS: dict[int, list[type[BaseModel]]] = {}


def _defaults_of(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON defaults of optional fields, annotations of all fields) of a spec model, cached."""
    if model not in _DEFAULTS:
        defaults, annotations = {}, {}
        for name, f in model.model_fields.items():
            annotations[name] = f.annotation
            if not f.is_required():
                d = f.get_default(call_default_factory=True)
                defaults[name] = d.model_dump(mode="json") if isinstance(d, BaseModel) else d
        _DEFAULTS[model] = (defaults, annotations)
    return _DEFAULTS[model]


def _fill(value: Any, annotation: Any) -> Any:
    """`value` with the defaults of the spec model it will validate as (chosen by `kind`)."""
    if not isinstance(value, dict):
        return value
    key = id(annotation)
    if key not in _MODELS:
        _MODELS[key] = candidate_models(annotation)
    models = _MODELS[key]
    if len(models) > 1:
        kind = value.get("kind", "lm")
        models = [m for m in models if kind in kind_of(m)] or models[:1]
    if not models:
        return value
    defaults, annotations = _defaults_of(models[0])
    out = {k: _fill(v, annotations.get(k)) for k, v in value.items()}
    for name, default in defaults.items():
        if name not in out:
            out[name] = _copy(default)
    return out


def fill_defaults(run: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run's raw sections with every default filled in (no validation)."""
    return {k: _fill(v, RunSpec.model_fields[k].annotation) for k, v in run.items() if k in RunSpec.model_fields}


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


def _number(value: Any) -> Any:
    """Derived values: integral floats become ints so `d_model: 64.0` validates as an int."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, (np.integer, np.floating)):
        return _number(value.item())
    return value


def _short(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return {
        "d_model": "d", "n_layers": "L", "n_heads": "h", "seed": "s", "batch_size": "bs",
        "tokens": "tok", "n_features": "N", "samples": "T", "parameterization": "", "kind": "",
    }.get(last, last)


def _fmt_value(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "x"))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def run_name(experiment: str, assignments: dict[str, Any]) -> str:
    """A readable name from the swept values. For people only: never parsed."""
    parts = [f"{_short(k)}{_fmt_value(v)}" for k, v in assignments.items()]
    return "-".join([experiment, *parts])


class _Compiler:
    def __init__(self, source: SpecSource):
        self.source = source
        self.problems: list[SpecProblem] = []
        self._seen: set[tuple] = set()

    def add(self, problem: SpecProblem) -> None:
        """Record a problem once, however many sweep points share it."""
        key = (problem.file, problem.line, problem.field, problem.message)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(problem)

    def fail(self) -> SpecError:
        shown = display_path(self.source.path)
        problems = self.problems[:MAX_REPORTED_PROBLEMS]
        if len(self.problems) >= MAX_REPORTED_PROBLEMS:  # compiling stops there: say so (sorts first)
            problems.append(SpecProblem(shown, None, "", f"stopped after {MAX_REPORTED_PROBLEMS} problems; "
                                                         "there may be more"))
        return SpecError(shown, problems)

    # -- header ------------------------------------------------------------------------------
    def header(self) -> ExperimentHeader:
        try:
            return ExperimentHeader.model_validate(self.source.data)
        except ValidationError as exc:
            for p in problems_from_validation(
                exc, ExperimentHeader, self.source.data, lambda p: self.source.problem(p, "")
            ):
                self.add(p)
            # Report the run sections' problems too, so one pass shows everything.
            base = {k: v for k, v in self.source.data.items() if k in RUN_SECTIONS and isinstance(v, dict)}
            if {"data", "model", "train"} <= set(base):
                self._validate(base, SweepPoint(0, {}, {}), set())
            raise self.fail() from None

    def expressions(self, header: ExperimentHeader) -> tuple[dict[str, Expression], list[tuple[Expression, str, int]]]:
        sweep = header.sweep
        # Undeclared variables are reported once, at the key; expressions reading them are not.
        declared, problems = check_sweep_keys(sweep)
        for where, message in problems:
            self.add(self.source.problem(where, message))
        variables = declared | {k for k in set_keys(sweep) if "." not in k}
        known_roots = set(RUN_SECTIONS) | variables | set(COUNT_NAMES) | set(FUNCTIONS)
        derive: dict[str, Expression] = {}
        for target, text in sweep.derive.items():
            where = ("sweep", "derive", target)
            try:
                expr = Expression.parse(str(text))
            except ExpressionError as exc:
                self.add(self.source.problem(where, str(exc)))
                continue
            self._check_names(expr, known_roots, where)
            derive[target] = expr
        constraints: list[tuple[Expression, str, int]] = []
        for i, c in enumerate(sweep.constraints):
            where = ("sweep", "constraints", i, "drop_if")
            try:
                expr = Expression.parse(c.drop_if)
            except ExpressionError as exc:
                self.add(self.source.problem(where, str(exc)))
                continue
            self._check_names(expr, known_roots, where)
            constraints.append((expr, c.reason, i))
        return derive, constraints

    def _check_names(self, expr: Expression, roots: set[str], where: tuple) -> None:
        for name in expr.names:
            root = name.split(".", 1)[0]
            if root not in roots:
                close = difflib.get_close_matches(root, sorted(roots), n=1, cutoff=0.6)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                self.add(self.source.problem(where, f"references unknown field `{name}`{hint}"))

    def queries(self, analysis: AnalysisSpec, find_query: QueryCheck) -> None:
        """Every query the fits and plots name exists."""
        named = [(("analysis", "fits", i, "query"), f.query) for i, f in enumerate(analysis.fits)]
        named += [(("analysis", "plots", i, "query"), p.query) for i, p in enumerate(analysis.plots) if p.query]
        for where, name in named:
            why = find_query(name)
            if why:
                self.add(self.source.problem(where, why))

    # -- points ------------------------------------------------------------------------------
    def _locate(self, point: SweepPoint, derived: set[str]):
        def locate(path: tuple) -> SpecProblem:
            for cut in range(len(path), 0, -1):
                key = ".".join(str(p) for p in path[:cut])
                if key in point.source:
                    return self.source.problem(point.source[key], "", field_name=key)
                if key in derived:
                    return self.source.problem(("sweep", "derive", key), "", field_name=key)
            return self.source.problem(path, "")

        return locate

    def _validate(self, run: dict[str, Any], point: SweepPoint, derived: set[str]) -> RunSpec | None:
        try:
            return RunSpec.model_validate(run)
        except ValidationError as exc:
            found = problems_from_validation(exc, RunSpec, run, self._locate(point, derived))
            for p in found:
                if p.field in derived and point.assignments:
                    # a derived value is wrong only at some points: say which
                    shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in point.assignments.items())
                    p.message += f" [sweep point {shown}]"
                self.add(p)
            return None

    def point(
        self,
        base: dict[str, Any],
        point: SweepPoint,
        derive: dict[str, Expression],
        constraints: list[tuple[Expression, str, int]],
    ) -> tuple[RunSpec, dict[str, Any]] | DroppedPoint | None:
        run = dict(base)  # shallow: set_path copies what it changes
        variables = {k: v for k, v in point.assignments.items() if not is_field_path(k)}
        for key, value in point.assignments.items():
            if is_field_path(key):
                try:
                    set_path(run, key, _copy(value))
                except ExpressionError as exc:
                    self.add(self.source.problem(point.source[key], str(exc)))
                    return None
        derived = {k for k in derive if is_field_path(k)}
        if derive and not self._derive(run, variables, derive):
            return None
        spec = self._validate(run, point, derived)
        if spec is None:
            return None
        full = spec.model_dump(mode="json")
        if constraints:
            scope = Scope(full, variables, lambda: _counts(full))
            for expr, reason, i in constraints:
                try:
                    hit = expr.evaluate(scope)
                except (ExpressionError, ArithmeticError, TypeError, ValueError, KeyError) as exc:
                    self.add(self.source.problem(("sweep", "constraints", i, "drop_if"), _safe(exc)))
                    return None
                if hit:
                    return DroppedPoint(dict(point.assignments), reason)
        return spec, variables

    def _derive(self, run: dict[str, Any], variables: dict[str, Any], derive: dict[str, Expression]) -> bool:
        """Evaluate `derive:` into `run` and `variables`; False (with a problem added) on failure.

        Expressions read the point with every default filled in; derived values are written
        into both, then the point is validated once.
        """
        view = fill_defaults(run)
        scope = Scope(view, variables, lambda: _counts(view))
        for target, expr in derive.items():
            where = ("sweep", "derive", target)
            try:
                value = _number(expr.evaluate(scope))
                if not is_field_path(target) and not plain_scalar(value):
                    raise ExpressionError(f"a variable takes a number, a string or true/false (got {shown_value(value)})")
                if is_field_path(target):
                    set_path(run, target, value)
                    set_path(view, target, value)
                    scope.invalidate()
                else:
                    variables[target] = value
            except (ExpressionError, ArithmeticError, TypeError, ValueError, KeyError) as exc:
                self.add(self.source.problem(where, _safe(exc)))
                return False
        return True


def _safe(exc: Exception) -> str:
    """An evaluation failure as a message: ours verbatim; Python's without object reprs."""
    if isinstance(exc, ExpressionError):
        return str(exc)
    text = str(exc)
    shown = text if len(text) < 100 and "<" not in text and " at 0x" not in text else type(exc).__name__
    return f"cannot evaluate: {shown}"


def _resolve(
    header: ExperimentHeader,
    spec: RunSpec,
    variables: dict[str, Any],
    assignments: dict[str, Any],
    origin: RunOrigin,
    resolved_data: Any = None,
) -> RunManifest:
    """The manifest of one validated point; `resolved_data` replaces `spec.data` in it."""
    data = spec.data.model_dump(mode="json")
    model_spec = spec.model
    counts_map: dict[str, Any]
    if isinstance(model_spec, TransformerModel):
        vocab = vocab_size_of(data)
        shape = transformer_shape(model_spec.model_dump(mode="json"), vocab)
        model: Any = ResolvedTransformer(
            **{**model_spec.model_dump(), "n_heads": shape.n_heads, "d_ff": shape.d_ff, "vocab_size": vocab}
        )
        pc = count_params(shape)
        fpt = flops_per_token(shape)
        t: LMTrain = spec.train  # type: ignore[assignment]
        per_step = t.batch_size * shape.context
        steps = t.steps if t.steps is not None else max(1, math.ceil(t.tokens / per_step))
        train: Any = ResolvedLMTrain(
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
        flops = dict(fpt)
        train_flops = {k: float(v) * train.tokens for k, v in fpt.items()}
        memory = estimate_peak_memory_bytes(shape, t.batch_size)
    else:
        model = model_spec
        train = spec.train
        counts_map = _counts({"model": model_spec.model_dump(), "data": data, "train": train.model_dump()})
        n = counts_map["n_params"]
        counts = RunCounts(n_params=n, n_params_nonembed=n, n_params_embed=0, vocab_size=None)
        flops = None
        train_flops = None
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
    _check_range(manifest)
    dumped = manifest.model_dump(mode="json")
    return manifest.model_copy(update={"run_id": compute_run_id(dumped)})


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
    manifest = _resolve(header, spec, {}, {}, origin, resolved_data=epochs)
    name = f"teacher-L{data.n_layers}-d{data.d_model}-c{data.context}-tok{data.train_tokens}-s{data.seed}"
    return manifest.model_copy(update={"name": name})  # the name is not part of the id


def _resolve_upstream(spec: RunSpec, origin: RunOrigin, upstream: dict[str, RunManifest]) -> Any:
    """The point's data with its teacher resolved to a run, or None. `upstream` holds the
    teachers built so far, by their fields (sweep points mostly share one)."""
    if not isinstance(spec.data, TeacherLMData):
        return None
    key = canonical_json(spec.data.model_dump(mode="json", exclude={"temperature"}))
    if key not in upstream:
        upstream[key] = teacher_manifest(spec.data, origin)
    return ResolvedTeacherLMData(**spec.data.model_dump(), teacher_run_id=upstream[key].run_id)


def _check_range(manifest: RunManifest) -> None:
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


def compile_source(
    source: SpecSource, max_runs: int = DEFAULT_MAX_RUNS, find_query: QueryCheck | None = None
) -> CompiledExperiment:
    """Compile an already-read spec source (see `compile_spec`)."""
    # Compiling allocates many small, acyclic objects; the cyclic GC's scans of them cost
    # about a third of the time at 10,000 runs and free nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile_source(source, max_runs, find_query)
    finally:
        if enabled:
            gc.enable()


def _too_many(n_points: int, max_runs: int) -> str:
    shown = f"{n_points:,}" if n_points < 10**12 else f"about 10^{int(math.log10(n_points))}"
    return (f"the sweep has {shown} points, more than the limit of {max_runs:,} per compile; "
            f"pass --max-runs {n_points if n_points < 10**12 else 'N'} if you mean it")


def _compile_source(source: SpecSource, max_runs: int, find_query: QueryCheck | None) -> CompiledExperiment:
    c = _Compiler(source)
    header = c.header()
    derive, constraints = c.expressions(header)
    if find_query is not None:
        c.queries(header.analysis, find_query)
    if c.problems:
        raise c.fail()
    n_points = count_points(header.sweep)
    if n_points > max_runs:  # checked on the axis lengths, before any point is made
        c.add(source.problem(("sweep",), _too_many(n_points, max_runs)))
        raise c.fail()
    base = {k: source.data[k] for k in RUN_SECTIONS if k in source.data}
    origin = RunOrigin(spec_path=display_path(source.path), base_dir=str(source.path.resolve().parent))
    runs: list[RunManifest] = []
    upstream: dict[str, RunManifest] = {}
    dropped: list[DroppedPoint] = []
    seen: dict[str, str] = {}
    try:
        points = list(expand_sweep(header.sweep))
    except ExpressionError as exc:
        c.problems.append(source.problem(("sweep", "zip"), str(exc)))
        raise c.fail() from None
    for point in points:
        out = c.point(base, point, derive, constraints)
        if isinstance(out, DroppedPoint):
            dropped.append(out)
        elif out is not None and not c.problems:
            spec, variables = out
            try:
                resolved_data = _resolve_upstream(spec, origin, upstream)
                manifest = _resolve(header, spec, variables, point.assignments, origin, resolved_data)
            except ExpressionError as exc:
                shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in point.assignments.items())
                c.add(source.problem((), f"{exc}" + (f" [sweep point {shown}]" if shown else "")))
                continue
            if manifest.run_id in seen:
                dropped.append(DroppedPoint(dict(point.assignments), f"same run as {seen[manifest.run_id]}"))
                continue
            seen[manifest.run_id] = manifest.name
            runs.append(manifest)
        if len(c.problems) >= MAX_REPORTED_PROBLEMS:
            break
    if c.problems:
        raise c.fail()
    if not runs:
        reasons = sorted({d.reason for d in dropped})
        problem = source.problem(
            ("sweep", "constraints"),
            f"the constraints remove every point ({len(dropped)} dropped: {'; '.join(reasons)})",
        )
        problem.field = "sweep.constraints"
        c.problems.append(problem)
        raise c.fail()
    spec_hash = hashlib.sha256(canonical_json(source.data).encode()).hexdigest()[:12]
    return CompiledExperiment(
        experiment=header.experiment,
        spec_path=display_path(source.path),
        spec_hash=spec_hash,
        description=header.description,
        analysis=header.analysis,
        runs=runs,
        dropped=dropped,
        cluster=header.cluster,
        upstream=list({m.run_id: m for m in upstream.values()}.values()),
    )


def compile_spec(
    path: str | Path, max_runs: int = DEFAULT_MAX_RUNS, find_query: QueryCheck | None = None
) -> CompiledExperiment:
    """Validate a spec file and expand its sweep into run manifests. Raises SpecError.

    A sweep of more than `max_runs` points is an error before any point is expanded.
    `find_query(name)` says why a query the analysis names cannot be found (None if it can);
    the spec stage cannot look queries up itself (they belong to the store, a later stage).
    """
    return compile_source(read_spec_source(path), max_runs, find_query)
