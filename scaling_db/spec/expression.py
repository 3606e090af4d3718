"""The small expression language of `derive:` and `constraints:`.

Python syntax restricted to arithmetic, comparisons, boolean logic, conditionals, literal
lists for `in`, and a few math functions. Expressions are evaluated by walking the checked
syntax tree, never by `eval`, so nothing else is reachable (no attributes of Python objects,
no builtins) and every operation is bounded: sizes are checked before parsing, integer powers
before computing them, and every result must be a finite number of at most `MAX_INT_BITS`
bits, a string, a boolean or null. Sequence repetition (`[1] * 10**10`) and string
formatting (`'%0999999999d' % 1`) do not exist here: arithmetic takes numbers only.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Bounds on one expression: the shipped specs' longest is about 70 characters and 15 nodes.
MAX_EXPRESSION_CHARS = 500
MAX_EXPRESSION_NODES = 200
MAX_EXPRESSION_DEPTH = 30
#: Integers beyond 128 bits (3.4e38) are never a count, a step or a FLOP budget.
MAX_INT_BITS = 128
MAX_ROUND_DIGITS = 30


class ExpressionError(ValueError):
    """An expression is malformed, names something that does not exist, or cannot be computed."""


_NUMBERS = frozenset({int, float})


def _number(value: Any) -> bool:
    return type(value) in _NUMBERS


def _check_result(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("result is not a finite number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"result too large (an integer of more than {MAX_INT_BITS} bits)")
    if isinstance(value, complex):
        raise ExpressionError("result is a complex number")
    return value


def _power(base: Any, exponent: Any) -> Any:
    """`base ** exponent`, refusing results too large before computing them."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise ExpressionError(f"result too large (more than {MAX_INT_BITS} bits)")
    try:
        return float(base) ** float(exponent) if isinstance(base, float) or isinstance(exponent, float) else base**exponent
    except OverflowError:
        raise ExpressionError("result too large for a float") from None


def _round(x: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS):
        raise ExpressionError(f"round: digits must be an integer between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
    return round(x) if ndigits is None else round(x, ndigits)


def _min_max(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        values = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
        if not values or not all(_number(v) for v in values):
            raise ExpressionError(f"{fn.__name__} takes numbers")
        return fn(values)

    return call


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": _min_max(min), "max": _min_max(max), "abs": abs, "round": _round, "int": int, "float": float,
    "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor,
}
_ARGUMENTS = {"min": (1, 50), "max": (1, 50), "round": (1, 2), "log": (1, 2)}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
}
_ORDER: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Constant,
    ast.Name, ast.Attribute, ast.Call, ast.Load, ast.List, ast.Tuple,
    *_BINARY, *_ORDER, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.In, ast.NotIn,
)


class Names(Protocol):
    """What an expression reads: dotted names (`model.d_model`, `flop_budget`) to values."""

    def lookup(self, name: str) -> Any: ...


def dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted_name(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _depth(node: ast.AST, limit: int) -> int:
    """Nesting depth of the tree, walked without recursion (the tree is not yet bounded)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(current))
    return deepest


def _check_node(node: ast.AST, source: str) -> None:
    if not isinstance(node, _ALLOWED):
        raise ExpressionError(f"{type(node).__name__} is not allowed in expressions ({source!r})")
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords:
            raise ExpressionError(f"only these functions may be called: {', '.join(FUNCTIONS)} ({source!r})")
        low, high = _ARGUMENTS.get(node.func.id, (1, 1))
        if not low <= len(node.args) <= high or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{node.func.id} takes {low if low == high else f'{low} to {high}'} "
                                  f"argument{'s' if high > 1 else ''} ({source!r})")
    if isinstance(node, ast.Constant):
        value = node.value
        if not (value is None or isinstance(value, (bool, str)) or _number(value)):
            raise ExpressionError(f"{type(value).__name__} literals are not allowed ({source!r})")
        _check_result(value)
    if isinstance(node, (ast.Name, ast.Attribute)):
        part = node.id if isinstance(node, ast.Name) else node.attr
        if part.startswith("_"):
            raise ExpressionError(f"names starting with `_` are not allowed ({source!r})")


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; `names` are the dotted names it reads."""

    source: str
    run: Compiled
    names: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> "Expression":
        text = str(source).strip()
        if len(text) > MAX_EXPRESSION_CHARS:
            raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"expression nested too deeply ({text[:40]!r}...)") from None
        if _depth(tree, MAX_EXPRESSION_DEPTH) > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_EXPRESSION_DEPTH} levels deep")
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_EXPRESSION_NODES:
            raise ExpressionError(f"expression has more than {MAX_EXPRESSION_NODES} parts")
        for node in nodes:
            _check_node(node, text)
        names: list[str] = []
        _collect_names(tree.body, names)
        return cls(text, _compile(tree.body), tuple(dict.fromkeys(names)))

    def evaluate(self, names: Names) -> Any:
        """The value of the expression, reading names from `names`. Raises ExpressionError."""
        try:
            return _check_result(self.run(names))
        except ExpressionError:
            raise
        except ZeroDivisionError:
            raise ExpressionError(f"division by zero in {self.source!r}") from None
        except OverflowError:
            raise ExpressionError(f"result too large in {self.source!r}") from None
        except (TypeError, ValueError) as exc:
            # math's own messages ("math domain error"): plain text, never an object's repr
            raise ExpressionError(f"cannot evaluate {self.source!r}: {_plain_message(exc)}") from None


def _plain_message(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 80 and "<" not in text and "0x" not in text else type(exc).__name__


def _collect_names(node: ast.AST, out: list[str]) -> None:
    """The outermost dotted names read (not function names, not inner parts of `a.b.c`)."""
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        if name is None:
            raise ExpressionError("only field paths may be read with `.`")
        out.append(name)
        return
    for child in ast.iter_child_nodes(node):
        if not (isinstance(node, ast.Call) and child is node.func):
            _collect_names(child, out)


Compiled = Callable[[Names], Any]


def _compile(node: ast.AST) -> Compiled:
    """A checked tree (bounded by `Expression.parse`) as nested closures, built once per
    expression: evaluating one is then a few calls per node, with every operation checked."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda names: value
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _compile_name(dotted_name(node) or "")
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_compile(e) for e in node.elts]
        return lambda names: [item(names) for item in items]
    if isinstance(node, ast.BinOp):
        return _compile_binary(_compile(node.left), _compile(node.right), _BINARY[type(node.op)])
    if isinstance(node, ast.UnaryOp):
        return _compile_unary(_compile(node.operand), node.op)
    if isinstance(node, ast.BoolOp):
        return _compile_bool([_compile(v) for v in node.values], isinstance(node.op, ast.Or))
    if isinstance(node, ast.Compare):
        left, ops = _compile(node.left), [(op, _compile(c)) for op, c in zip(node.ops, node.comparators)]
        return lambda names: _compare(left(names), [(op, right(names)) for op, right in ops])
    if isinstance(node, ast.IfExp):
        test, body, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
        return lambda names: body(names) if test(names) else orelse(names)
    if isinstance(node, ast.Call):
        return _compile_call(node.func.id, [_compile(a) for a in node.args])  # type: ignore[attr-defined]
    raise ExpressionError(f"{type(node).__name__} is not allowed in expressions")


def _compile_name(name: str) -> Compiled:
    def read(names: Names) -> Any:
        value = names.lookup(name)
        if isinstance(value, Mapping):
            raise ExpressionError(f"`{name}` is a section, not a value")
        return value

    return read


def _compile_binary(left: Compiled, right: Compiled, op: Callable[[Any, Any], Any]) -> Compiled:
    def binary(names: Names) -> Any:
        a, b = left(names), right(names)
        if type(a) not in _NUMBERS or type(b) not in _NUMBERS:
            raise ExpressionError(f"arithmetic takes numbers (got {_kind(a)} and {_kind(b)})")
        return _check_result(op(a, b))

    return binary


def _compile_unary(operand: Compiled, op: ast.unaryop) -> Compiled:
    if isinstance(op, ast.Not):
        return lambda names: not operand(names)
    sign = -1 if isinstance(op, ast.USub) else 1

    def unary(names: Names) -> Any:
        value = operand(names)
        if type(value) not in _NUMBERS:
            raise ExpressionError(f"arithmetic takes numbers (got {_kind(value)})")
        return -value if sign < 0 else value

    return unary


def _compile_bool(values: list[Compiled], is_or: bool) -> Compiled:
    def boolean(names: Names) -> Any:
        value = None
        for item in values:
            value = item(names)
            if bool(value) == is_or:  # `or` stops at the first true value, `and` at the first false
                return value
        return value

    return boolean


def _compile_call(name: str, args: list[Compiled]) -> Compiled:
    fn = FUNCTIONS[name]
    any_args = name in ("min", "max")  # they take a list too, and check their items

    def call(names: Names) -> Any:
        values = [a(names) for a in args]
        if not any_args and any(type(v) not in _NUMBERS for v in values):
            raise ExpressionError(f"{name} takes numbers (got {', '.join(_kind(v) for v in values)})")
        return _check_result(fn(*values))

    return call


def _compare(left: Any, pairs: list[tuple[ast.cmpop, Any]]) -> bool:
    for op, right in pairs:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (list, str)) or isinstance(right, str) and not isinstance(left, str):
                raise ExpressionError(f"`in` needs a list or a string on the right (got {_kind(right)})")
            ok = (left in right) == isinstance(op, ast.In)
        elif isinstance(op, (ast.Eq, ast.NotEq)):
            ok = (left == right) == isinstance(op, ast.Eq)
        else:
            if not (_number(left) and _number(right) or isinstance(left, str) and isinstance(right, str)):
                raise ExpressionError(f"cannot order {_kind(left)} and {_kind(right)}")
            ok = _ORDER[type(op)](left, right)
        if not ok:
            return False
        left = right
    return True


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if _number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a value"
