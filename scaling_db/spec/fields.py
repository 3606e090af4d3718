"""The base of every spec model and the number types the spec sections share.

Numbers are strict where it matters: `true` is not 1, and `'1e3'` (a string, quoted in the
YAML) is not 1000, because a silently converted value is a wrong run nobody asked for. An
integral float (`tokens: 1e9`, which YAML 1.2 reads as a float) still counts as an integer,
and NaN or infinity is never a valid number anywhere in a spec.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

_NUMERIC_TEXT = re.compile(r"^\s*[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?\.?(nan|inf)\s*$", re.I)


def _not_a_number(value: Any, what: str) -> None:
    """Raise a `not_a_number` error for booleans and strings given where a number is meant."""
    if isinstance(value, bool):
        raise PydanticCustomError("not_a_number", f"must be {what}, not true/false (got {str(value).lower()})")
    if isinstance(value, str):
        if _NUMERIC_TEXT.match(value):
            raise PydanticCustomError(
                "not_a_number", f"must be {what}, not a string (got {value!r}); remove the quotes"
            )
        raise PydanticCustomError("not_a_number", f"must be {what} (got {value[:40]!r})")


def strict_int(value: Any) -> Any:
    """A before-validator: booleans and strings are not integers."""
    _not_a_number(value, "an integer")
    return value


def _strict_float(value: Any) -> Any:
    _not_a_number(value, "a number")
    return value


Int = Annotated[int, BeforeValidator(strict_int)]
Float = Annotated[float, BeforeValidator(_strict_float)]
PositiveInt = Annotated[Int, Field(gt=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]
#: Seeds feed numpy and torch generators (non-negative) and the database (64-bit integers).
Seed = Annotated[Int, Field(ge=0, lt=2**63)]


class StrictModel(BaseModel):
    """Base of every spec model: unknown keys are errors; no NaN or infinity; immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
