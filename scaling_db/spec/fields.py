"""The base of every spec model and the number types the spec sections share.

Numbers are strict where it matters: `true` is not 1, and `'1e3'` (a string, quoted in the
YAML) is not 1000, because a silently converted value is a wrong run nobody asked for. An
integral float (`tokens: 1e9`, which YAML 1.2 reads as a float) still counts as an integer,
and NaN or infinity is never a valid number anywhere in a spec.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
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


# The strictness check goes after the bounds (`Field(...)`), so that Pydantic still writes the
# bounds into the JSON Schema as `minimum`/`exclusiveMinimum` for editors.
STRICT_INT = BeforeValidator(strict_int)
STRICT_FLOAT = BeforeValidator(_strict_float)
Int = Annotated[int, STRICT_INT]
Float = Annotated[float, STRICT_FLOAT]
PositiveInt = Annotated[int, Field(gt=0), STRICT_INT]
PositiveFloat = Annotated[float, Field(gt=0), STRICT_FLOAT]
Fraction = Annotated[float, Field(ge=0, lt=1), STRICT_FLOAT]
#: Seeds feed numpy and torch generators (non-negative) and the database (64-bit integers).
Seed = Annotated[int, Field(ge=0, lt=2**63), STRICT_INT]


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _query_ref(value: str) -> str:
    """A named query (`final_loss`) or a relative `.sql` path that stays inside the project."""
    if _NAME.match(value):
        return value
    path = PurePosixPath(value)
    if value.endswith(".sql") and "\0" not in value and not path.is_absolute() and ".." not in path.parts:
        return value
    raise ValueError(f"must name a query (`scaledb queries` lists them) or a .sql file inside the project, "
                     f"as a relative path (got {value[:60]!r})")


#: Where a fit or plot gets its rows; `compile_spec(..., find_query=...)` checks that it exists.
QueryRef = Annotated[str, AfterValidator(_query_ref)]
#: A column of a query's result.
Column = Annotated[str, Field(pattern=_NAME.pattern)]


class StrictModel(BaseModel):
    """Base of every spec model: unknown keys are errors; no NaN or infinity; immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
