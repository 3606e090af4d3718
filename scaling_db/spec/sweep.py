"""Sweep expansion and the small expression language of `derive:` and `constraints:`.

Expressions are Python syntax restricted to arithmetic, comparisons, boolean logic,
conditionals and a few math functions. Names are dotted field paths of the run
(`model.d_model`, `train.batch_size`), free sweep variables (`flop_budget`), and counts of
the run's model (`n_params`, `n_params_nonembed`, `tokens_per_step`, ...). Nothing else is
reachable: no attributes of Python objects, no builtins.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling_db.spec.schema import GeomRange, LinRange, SweepSpec

RUN_SECTIONS = ("data", "model", "train", "resources")

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor,
}

#: Names computed from the run's model, available in every expression (see `scaling_db.spec.counting`).
COUNT_NAMES = (
    "n_params", "n_params_nonembed", "n_params_embed", "vocab_size", "tokens_per_step",
    "flops_per_token_6n_nonembed", "flops_per_token_6n", "flops_per_token_exact",
)

_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Constant,
    ast.Name, ast.Attribute, ast.Call, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.List, ast.Tuple,
)


class ExpressionError(ValueError):
    """An expression is malformed or names something that does not exist."""


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted_name(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; `names` are the dotted names it reads."""

    source: str
    code: Any
    names: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> "Expression":
        try:
            tree = ast.parse(str(source).strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from None
        names: list[str] = []
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise ExpressionError(f"{type(node).__name__} is not allowed in expressions ({source!r})")
            if isinstance(node, ast.Call):
                if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords:
                    raise ExpressionError(
                        f"only these functions may be called: {', '.join(FUNCTIONS)} ({source!r})"
                    )
        # Collect the outermost dotted names (skip the inner parts of `a.b.c` and function names).
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                skip.add(id(node.func))
            if isinstance(node, ast.Attribute):
                inner = node.value
                while isinstance(inner, ast.Attribute):
                    skip.add(id(inner))
                    inner = inner.value
                skip.add(id(inner))
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Name, ast.Attribute)):
                continue
            name = _dotted_name(node)
            if name is None:
                raise ExpressionError(f"only field paths may be read with `.` ({source!r})")
            names.append(name)
        return cls(source, compile(tree, "<expression>", "eval"), tuple(dict.fromkeys(names)))

    def evaluate(self, scope: "Scope") -> Any:
        return eval(self.code, {"__builtins__": {}}, _Namespace(scope))  # noqa: S307 (AST checked above)


class _Section:
    """Attribute access over a nested dict, for `model.d_model`-style names."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any], path: str):
        self._data, self._path = data, path

    def __getattr__(self, key: str) -> Any:
        if key not in self._data:
            close = difflib.get_close_matches(key, list(self._data), n=1, cutoff=0.5)
            hint = f"; did you mean `{self._path}.{close[0]}`?" if close else ""
            raise ExpressionError(f"references unknown field `{self._path}.{key}`{hint}")
        value = self._data[key]
        return _Section(value, f"{self._path}.{key}") if isinstance(value, dict) else value


class Scope:
    """What expressions of one sweep point can read."""

    def __init__(self, run: dict[str, Any], variables: Mapping[str, Any], counts: Callable[[], Mapping[str, Any]]):
        self.run, self.variables, self._counts_fn = run, variables, counts
        self._counts: Mapping[str, Any] | None = None

    def invalidate(self) -> None:
        self._counts = None

    def lookup(self, name: str) -> Any:
        if name in FUNCTIONS:
            return FUNCTIONS[name]
        if name in self.variables:
            return self.variables[name]
        if name in RUN_SECTIONS and name in self.run:
            return _Section(self.run[name], name)
        if name in COUNT_NAMES:
            if self._counts is None:
                self._counts = self._counts_fn()
            if name not in self._counts:
                raise ExpressionError(f"`{name}` is not defined for this model kind")
            return self._counts[name]
        raise ExpressionError(f"unknown name `{name}`")


class _Namespace(dict):
    def __init__(self, scope: Scope):
        super().__init__()
        self.scope = scope

    def __missing__(self, key: str) -> Any:
        return self.scope.lookup(key)


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
        columns = {key: axis_values(values) for key, values in group.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
            raise ExpressionError(f"zipped axes must have equal lengths ({detail})")
        n = lengths.pop() if lengths else 0
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
            raise ExpressionError(f"`{dotted}`: `{key}` is not a mapping")
        nxt = dict(nxt)
        node[key] = nxt
        node = nxt
    node[last] = value


def is_field_path(key: str) -> bool:
    """Axis keys with a dot that start with a run section are field paths; others are variables."""
    return "." in key and key.split(".", 1)[0] in RUN_SECTIONS
