"""The compiler: a spec file in, fully resolved and content-addressed run manifests out.

Pure and deterministic: it reads the YAML (and files it `extends`) and nothing else, so the
same spec gives the same run ids on every machine. Each sweep point is validated as a
`RunSpec` (twice when `derive:` is used: once to fill defaults that expressions may read,
once with the derived values), filtered by `constraints:`, and resolved into a `RunManifest`
(budget in whole steps, checkpoint steps listed, counts and FLOPs computed). Every problem of
every point is collected and reported at once, at the line that caused it.

Resolving one point into its manifest, and the upstream teacher runs that `teacher_lm` data
needs, is `scaling_db.spec.resolve`'s job.
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

from scaling_db.errors import SpecError, SpecProblem
from scaling_db.spec.data import resolve_corpus_path
from scaling_db.spec.manifest import RunManifest, RunOrigin, canonical_json
from scaling_db.spec.resolve import counts_of, fmt_value, resolve_point, resolve_upstream
from scaling_db.spec.schema import AnalysisOnlySpec, AnalysisSpec, ClusterSpec, ExperimentHeader, RunSpec
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


@dataclass(frozen=True)
class QueryLookup:
    """What the store says of a query a spec names (the spec stage cannot look queries up)."""

    problem: str | None = None  # why it cannot be used; None: it can
    columns: tuple[str, ...] = ()  # the columns it declares (`-- columns:`); empty: not declared


#: Looks up a named query or .sql file for `compile_spec(find_query=...)`.
QueryCheck = Callable[[str], QueryLookup]
#: Sweep points one compile expands by default (`scaledb compile --max-runs N` raises it):
#: 10,000 points compile in about 2 s; a typo such as an extra zero should not take an hour.
DEFAULT_MAX_RUNS = 10_000


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


def _number(value: Any) -> Any:
    """Derived values: integral floats become ints so `d_model: 64.0` validates as an int."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, (np.integer, np.floating)):
        return _number(value.item())
    return value


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
        """Every query the fits, comparisons, frontiers and plots name exists, and the columns a
        fit or frontier takes from it are among those it declares (a typo in `x` would otherwise
        surface only when the fit runs, after training)."""
        named = [(("analysis", "fits", i), f.query, {"x": f.x, "y": [f.y], "best_per": f.best_per})
                 for i, f in enumerate(analysis.fits)]
        named += [(("analysis", "comparisons", i), c.query, {}) for i, c in enumerate(analysis.comparisons)]
        named += [(("analysis", "frontiers", i), f.query, {k: [getattr(f, k)] for k in ("n", "d", "c", "y")}
                   | {"budget": [f.budget] if f.budget else []})
                  for i, f in enumerate(analysis.frontiers) if f.query]
        named += [(("analysis", "plots", i), p.query, {}) for i, p in enumerate(analysis.plots) if p.query]
        for where, name, taken in named:
            found = find_query(name)
            if found.problem:
                self.add(self.source.problem((*where, "query"), found.problem))
                continue
            for key, columns in taken.items():
                for column in columns:
                    # dotted names are manifest paths, read from the runs' manifests instead
                    if found.columns and "." not in column and column not in found.columns:
                        close = difflib.get_close_matches(column, found.columns, n=1, cutoff=0.6)
                        hint = f"; did you mean `{close[0]}`?" if close else ""
                        self.add(self.source.problem((*where, key), f"`{column}` is not a column of query {name} "
                                                                     f"({', '.join(found.columns)}){hint}"))

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
                    shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in point.assignments.items())
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
            scope = Scope(full, variables, lambda: counts_of(full))
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
        scope = Scope(view, variables, lambda: counts_of(view))
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


def _compile_points(
    c: _Compiler, header: ExperimentHeader, points: list[SweepPoint], derive: dict[str, Expression],
    constraints: list[tuple[Expression, str, int]],
) -> tuple[list[RunManifest], dict[str, RunManifest], list[DroppedPoint]]:
    """The sweep's points as runs (one per distinct run id), the upstream runs they train on, and
    the points dropped (by a constraint, or the same run as an earlier point). Problems go to `c`."""
    source = c.source
    base = {k: source.data[k] for k in RUN_SECTIONS if k in source.data}
    origin = RunOrigin(spec_path=display_path(source.path), base_dir=str(source.path.resolve().parent))
    runs: list[RunManifest] = []
    upstream: dict[str, RunManifest] = {}
    dropped: list[DroppedPoint] = []
    seen: dict[str, str] = {}
    for point in points:
        out = c.point(base, point, derive, constraints)
        if isinstance(out, DroppedPoint):
            dropped.append(out)
        elif out is not None and not c.problems:
            spec, variables = out
            try:
                resolved_data = resolve_upstream(spec, origin, upstream)
                manifest = resolve_point(header, spec, variables, point.assignments, origin, resolved_data)
            except ExpressionError as exc:
                shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in point.assignments.items())
                c.add(source.problem((), f"{exc}" + (f" [sweep point {shown}]" if shown else "")))
                continue
            if manifest.run_id in seen:
                dropped.append(DroppedPoint(dict(point.assignments), f"same run as {seen[manifest.run_id]}"))
                continue
            seen[manifest.run_id] = manifest.name
            runs.append(manifest)
        if len(c.problems) >= MAX_REPORTED_PROBLEMS:
            break
    return runs, upstream, dropped


def _check_corpora(c: _Compiler, manifests: list[RunManifest]) -> None:
    """Every corpus the runs read is a file here: a typo would otherwise fail each run at its start."""
    missing: dict[Path, None] = {}
    for m in manifests:
        corpus = getattr(m.data, "corpus", None)
        if corpus is not None:
            path = resolve_corpus_path(corpus, m.origin.base_dir)
            if not path.is_file():
                missing[path] = None
    for path in missing:
        c.add(c.source.problem(("data", "corpus"), f"no such file: {path} (relative paths start at the spec "
                                                     "file's folder)"))


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
    try:
        points = list(expand_sweep(header.sweep))
    except ExpressionError as exc:
        c.problems.append(source.problem(("sweep", "zip"), str(exc)))
        raise c.fail() from None
    runs, upstream, dropped = _compile_points(c, header, points, derive, constraints)
    if find_query is not None and not c.problems:  # checked against this machine, as the queries are
        _check_corpora(c, [*runs, *upstream.values()])
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
    path: str | Path, max_runs: int = DEFAULT_MAX_RUNS, find_query: QueryCheck | None = None, *, smoke: bool = False
) -> CompiledExperiment:
    """Validate a spec file and expand its sweep into run manifests. Raises SpecError.

    A sweep of more than `max_runs` points is an error before any point is expanded.
    `find_query(name)` says why a query the analysis names cannot be used, and its columns;
    the spec stage cannot look queries up itself (they belong to the store, a later stage).
    With it, the corpus files the runs read must exist too (`scaledb validate | compile`).
    `smoke` applies the spec's `smoke:` section (see `read_spec_source`).
    """
    return compile_source(read_spec_source(path, smoke=smoke), max_runs, find_query)


def is_analysis_only(source: SpecSource) -> bool:
    """Whether the spec trains nothing (no data/model/train after `extends:`)."""
    return not any(k in source.data for k in RUN_SECTIONS)


def validate_analysis_only(source: SpecSource, find_query: QueryCheck | None = None) -> AnalysisOnlySpec:
    """An analysis-only spec, validated like any other (every problem at its line)."""
    try:
        spec = AnalysisOnlySpec.model_validate(source.data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, AnalysisOnlySpec, source.data, lambda path: source.problem(path, ""))
        raise SpecError(display_path(source.path), problems) from None
    if find_query is not None:
        c = _Compiler(source)
        c.queries(spec.analysis, find_query)
        if c.problems:
            raise c.fail()
    return spec

