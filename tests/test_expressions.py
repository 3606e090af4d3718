"""The expression language of `derive:` and `constraints:`: what it computes, and what it
refuses (before computing anything expensive)."""

from __future__ import annotations

import re
import time

import pytest

from scaling_db.spec.expression import Expression, ExpressionError
from scaling_db.spec.sweep import Scope

RUN = {"model": {"d_model": 64, "kind": "transformer", "parameterization": {"kind": "mup"}, "n_heads": None}}


def value(source: str, **variables: object) -> object:
    scope = Scope(RUN, variables, lambda: {"n_params": 1_000_000, "tokens_per_step": 512})
    return Expression.parse(source).evaluate(scope)


@pytest.mark.parametrize("source, expected", [
    ("model.d_model // 16", 4),
    ("20 * n_params", 20_000_000),
    ("max(10, round(c / (6 * n_params * tokens_per_step)))", 326),
    ("min([3, 1, 2])", 1),
    ("2 ** 10 + 2 ** -1", 1024.5),
    ("model.parameterization.kind == 'mup' and model.d_model in [32, 64]", True),
    ("1 < model.d_model <= 64 < 65", True),
    ("c if c > 2 else 1", 1.0e12),
    ("not model.n_heads", True),
    ("model.n_heads or 4", 4),
    ("log10(c) + sqrt(16) + abs(-1) + ceil(0.5) + floor(1.5)", 12.0 + 4 + 1 + 1 + 1),
    ("'abc'", "abc"),
])
def test_values(source: str, expected: object) -> None:
    assert value(source, c=1.0e12) == expected


@pytest.mark.parametrize("source, message", [
    ("10**10**10", "result too large (more than 128 bits)"),
    ("9**9**9", "result too large (more than 128 bits)"),
    ("10**400", "result too large (more than 128 bits)"),
    ("2 ** 127 * 4", "result too large (an integer of more than 128 bits)"),
    ("10.0 ** 400", "result too large for a float"),
    ("exp(1000)", "result too large in 'exp(1000)'"),
    ("[1] * 10**10", "arithmetic takes numbers (got a list and a number)"),
    ("'a' * 10**10", "arithmetic takes numbers (got a string and a number)"),
    ("'%0999999999d' % 1", "arithmetic takes numbers (got a string and a number)"),
    ("(-8) ** 0.5", "result is a complex number"),
    ("1 / 0", "division by zero in '1 / 0'"),
    ("log(-1)", "cannot evaluate 'log(-1)': math domain error"),
    ("round(5, -10**9)", "round: digits must be an integer between -30 and 30"),
    ("int('9' * 9)", "arithmetic takes numbers (got a string and a number)"),
    ("float('nan')", "float takes numbers (got a string)"),
    ("model", "`model` is a section, not a value"),
    ("model.d_model.x", "`model.d_model` is a value, not a section (in `model.d_model.x`)"),
    ("model.d_modle", "references unknown field `model.d_modle`; did you mean `model.d_model`?"),
    ("n_params.x", "`n_params` is a number, not a section (in `n_params.x`)"),
    ("min", "`min` is a function: call it, as in `min(x)`"),
    ("1 < 'a'", "cannot order a number and a string"),
    ("1 in 3", "`in` needs a list or a string on the right (got a number)"),
])
def test_refusals(source: str, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        value(source)
    assert str(info.value) == message
    assert time.perf_counter() - start < 1.0, "refused only after computing something large"


@pytest.mark.parametrize("source, message", [
    ("model.__class__.__bases__", "names starting with `_` are not allowed"),
    ("model.__init__.__globals__", "names starting with `_` are not allowed"),
    ("(lambda: 1)()", "only these functions may be called"),
    ("[x for x in [1]]", "ListComp is not allowed"),
    ("'a'.upper()", "only these functions may be called"),
    ("{1: 2}", "Dict is not allowed"),
    ("1j", "complex literals are not allowed"),
    ("1e400", "result is not a finite number"),
    ("round(1, 2, 3)", "round takes 1 to 2 arguments"),
    ("+".join(["1"] * 300), "expression longer than 500 characters"),
    ("-" * 100 + "1", "expression nested more than 30 levels deep"),
    ("min(" + ", ".join(["1"] * 120) + ")", "min takes 1 to 50 arguments"),
    ("1 +", "invalid expression '1 +'"),
])
def test_parse_refusals(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match="^" + re.escape(message)):
        Expression.parse(source)


def test_names_are_the_outermost_dotted_paths() -> None:
    expr = Expression.parse("max(model.d_model, c) * n_params")
    assert expr.names == ("model.d_model", "c", "n_params")
