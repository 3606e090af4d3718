"""Sweep expansion, and what the expressions of `derive:` and `constraints:` can read.

Names in expressions are dotted field paths of the run (`model.d_model`, `train.batch_size`),
declared free variables (`sweep.vars`, e.g. `flop_budget`), and counts of the run's model
(`n_params`, `n_params_nonembed`, `tokens_per_step`, ...). The language itself lives in
`scaling_db.spec.expression`.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling_db.spec.expression import FUNCTIONS, Expression, ExpressionError
from scaling_db.spec.schema import GeomRange, LinRange, SweepSpec

__all__ = ["Expression", "ExpressionError", "FUNCTIONS"]

RUN_SECTIONS = ("data", "model", "train", "resources")

#: Names computed from the run's model, available in every expression (see `scaling_db.spec.counting`).
COUNT_NAMES = (
    "n_params", "n_params_nonembed", "n_params_embed", "vocab_size", "tokens_per_step",
    "flops_per_token_6n_nonembed", "flops_per_token_6n", "flops_per_token_exact",
)


class Scope:
    """What expressions of one sweep point can read."""

    def __init__(self, run: dict[str, Any], variables: Mapping[str, Any], counts: Callable[[], Mapping[str, Any]]):
        self.run, self.variables, self._counts_fn = run, variables, counts
        self._counts: Mapping[str, Any] | None = None

    def invalidate(self) -> None:
        self._counts = None

    def lookup(self, name: str) -> Any:
        """The value of a dotted name: a variable, a count, or a field of the run."""
        root, *rest = name.split(".")
        if root in self.variables or root in COUNT_NAMES:
            if rest:
                raise ExpressionError(f"`{root}` is a number, not a section (in `{name}`)")
            return self.variables[root] if root in self.variables else self._count(root)
        if root in RUN_SECTIONS and root in self.run:
            return _field(self.run[root], root, rest)
        if root in FUNCTIONS:
            raise ExpressionError(f"`{root}` is a function: call it, as in `{root}(x)`")
        raise ExpressionError(f"unknown name `{root}`")

    def _count(self, name: str) -> Any:
        if self._counts is None:
            self._counts = self._counts_fn()
        if name not in self._counts:
            raise ExpressionError(f"`{name}` is not defined for this model kind")
        return self._counts[name]


def _field(value: Any, path: str, rest: list[str]) -> Any:
    for key in rest:
        if not isinstance(value, Mapping):
            raise ExpressionError(f"`{path}` is a value, not a section (in `{path}.{key}`)")
        if key not in value:
            close = difflib.get_close_matches(key, [str(k) for k in value], n=1, cutoff=0.5)
            hint = f"; did you mean `{path}.{close[0]}`?" if close else ""
            raise ExpressionError(f"references unknown field `{path}.{key}`{hint}")
        value, path = value[key], f"{path}.{key}"
    return value


# ---------------------------------------------------------------------------------------------
# Axes
# ---------------------------------------------------------------------------------------------


def axis_values(values: Any) -> list[Any]:
    """The concrete values of one axis (a list, or a geometric or linear range)."""
    if isinstance(values, GeomRange):
        out = np.geomspace(values.geomspace[0], values.geomspace[1], values.num)
    elif isinstance(values, LinRange):
        out = np.linspace(values.linspace[0], values.linspace[1], values.num)
    else:
        return list(values)
    if values.integer:
        return [int(round(float(v))) for v in out]
    # Round to 12 significant digits so ranges give the same floats on every platform.
    return [float(f"{float(v):.12g}") for v in out]


def axis_length(values: Any) -> int:
    """How many values an axis has, without materialising a range."""
    return values.num if isinstance(values, (GeomRange, LinRange)) else len(values)


def count_points(sweep: SweepSpec) -> int:
    """The number of sweep points (before constraints), from the axis lengths alone.

    Zip groups count as their longest member here; `expand_sweep` reports unequal lengths.
    """
    total = 1
    for values in sweep.axes.values():
        total *= axis_length(values)
    for group in sweep.zip:
        total *= max((axis_length(v) for v in group.values()), default=0)
    return total * (len(sweep.seeds) if sweep.seeds is not None else 1)


def sweep_key_problem(key: str, variables: list[str]) -> str | None:
    """Why an axis key or derive target is neither a field path nor a declared variable."""
    root = key.split(".", 1)[0]
    if root in RUN_SECTIONS:
        if any(not part for part in key.split(".")):
            return "empty part in the field path"
        return None
    if key in variables:
        return None
    known = [*RUN_SECTIONS, *variables]
    close = difflib.get_close_matches(root, known, n=1, cutoff=0.6)
    if "." in key:
        hint = f"; did you mean `{close[0]}.{key.split('.', 1)[1]}`?" if close and close[0] in RUN_SECTIONS else ""
        return f"unknown field: `{root}` is not a section ({', '.join(RUN_SECTIONS)}){hint}"
    hint = f"did you mean `{close[0]}`? Or " if close else ""
    return (f"unknown field: not a field path (`section.field`) nor a declared variable; "
            f"{hint}declare free variables under `sweep.vars`")


SweepPath = tuple[str | int, ...]


def set_keys(sweep: SweepSpec) -> list[str]:
    """Every key the sweep sets: axes, zip groups and derive targets."""
    return [*sweep.axes, *(k for group in sweep.zip for k in group), *sweep.derive]


def check_sweep_keys(sweep: SweepSpec) -> tuple[set[str], list[tuple[SweepPath, str]]]:
    """The declared variables, and the problems (where, what) of the keys the sweep sets: each
    is a field path or a declared variable, variables take plain values, and each declared
    variable is set somewhere."""
    declared, problems = list(sweep.vars), []
    for i, name in enumerate(declared):
        if name in RUN_SECTIONS or name in COUNT_NAMES or name in FUNCTIONS or name in declared[:i]:
            what = "declared twice" if name in declared[:i] else "is a built-in name; choose another"
            problems.append((("sweep", "vars", i), f"`{name}` {what}"))
    keyed: list[tuple[str, SweepPath, Any]] = [(k, ("sweep", "axes", k), v) for k, v in sweep.axes.items()]
    keyed += [(k, ("sweep", "zip", g, k), v) for g, group in enumerate(sweep.zip) for k, v in group.items()]
    keyed += [(k, ("sweep", "derive", k), None) for k in sweep.derive]
    for key, where, values in keyed:
        problem = sweep_key_problem(key, declared)
        if problem:
            problems.append((where, problem))
        elif not is_field_path(key) and isinstance(values, list):
            problems += [((*where, j), f"a variable takes numbers, strings or true/false (got {shown_value(v)})")
                         for j, v in enumerate(values) if not plain_scalar(v)]
    set_somewhere = set(set_keys(sweep))
    problems += [(("sweep", "vars", i), f"`{name}` is declared but no axis, zip group or derive sets it")
                 for i, name in enumerate(declared) if name not in set_somewhere]
    return set(declared), problems


def plain_scalar(value: Any) -> bool:
    """A value a free variable may hold (it is stored with the run, as JSON, in the database)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return isinstance(value, (str, bool)) and len(str(value)) <= 200


def shown_value(value: Any) -> str:
    """A value in a message: short, and only plain data."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


@dataclass(frozen=True)
class SweepPoint:
    """One assignment of the sweep: field paths and variables to values, with the axis each came from."""

    index: int
    assignments: dict[str, Any]
    source: dict[str, tuple[str, ...]]  # assigned key -> the sweep path that set it (for error lines)


def expand_sweep(sweep: SweepSpec) -> Iterator[SweepPoint]:
    """Yield the points of the sweep: product over axes and zip groups, then seeds."""
    factors: list[list[tuple[dict[str, Any], dict[str, tuple[str, ...]]]]] = []
    for key, values in sweep.axes.items():
        src = ("sweep", "axes", key)
        factors.append([({key: v}, {key: src}) for v in axis_values(values)])
    for g, group in enumerate(sweep.zip):
        if len({axis_length(v) for v in group.values()}) > 1:
            detail = ", ".join(f"{k}: {axis_length(v)}" for k, v in group.items())
            raise ExpressionError(f"zipped axes must have equal lengths ({detail})")
        columns = {key: axis_values(values) for key, values in group.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        factors.append([
            ({k: columns[k][i] for k in columns}, {k: ("sweep", "zip", g, k) for k in columns}) for i in range(n)
        ])
    if sweep.seeds is not None:
        factors.append([({"train.seed": s}, {"train.seed": ("sweep", "seeds")}) for s in sweep.seeds])
    for index, combo in enumerate(itertools.product(*factors)):
        assignments: dict[str, Any] = {}
        source: dict[str, tuple[str, ...]] = {}
        for values, sources in combo:
            assignments.update(values)
            source.update(sources)
        yield SweepPoint(index, assignments, source)


def set_path(run: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `model.parameterization.kind`-style paths in a nested dict, creating mappings.

    Copy-on-write: every mapping along the path is copied before it is changed, so sweep
    points can share the base spec's untouched sub-mappings instead of deep-copying it.
    """
    *parents, last = dotted.split(".")
    node = run
    for key in parents:
        nxt = node.get(key)
        if nxt is None:
            nxt = {}
        elif not isinstance(nxt, dict):
            raise ExpressionError(f"`{key}` holds a value, not fields, so `{dotted}` does not exist")
        nxt = dict(nxt)
        node[key] = nxt
        node = nxt
    node[last] = value


def is_field_path(key: str) -> bool:
    """Sweep keys that start with a run section (`model.d_model`, `model`) set fields; the
    others are free variables (`sweep_key_problem` checks they are declared)."""
    return key.split(".", 1)[0] in RUN_SECTIONS
