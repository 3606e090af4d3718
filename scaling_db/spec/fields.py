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

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

_NUMERIC_TEXT = re.compile(r"^\s*[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?\.?(nan|inf)\s*$", re.I)


_INT64_MIN, _INT64_END = -(2**63), 2**63


def number_message(value: Any, what: str) -> str:
    """The message for a value given where a number is meant (`what`: "a number", "an integer")."""
    if isinstance(value, bool):
        return f"must be {what}, not true/false (got {str(value).lower()})"
    if isinstance(value, str) and _NUMERIC_TEXT.match(value):
        return f"must be {what}, not a string (got {value!r}); remove the quotes"
    if isinstance(value, str):
        return f"must be {what} (got {value[:40]!r})"
    return f"must be {what}"


def strict_int(value: Any) -> Any:
    """A before-validator: booleans and strings are not integers, and integers are 64-bit
    (they become database columns). Integral floats (`1e9`) pass on to Pydantic's int."""
    if type(value) is int and _INT64_MIN <= value < _INT64_END:  # the common case, first
        return value
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("not_a_number", number_message(value, "an integer"))
    if isinstance(value, (int, float)) and not _INT64_MIN <= value < _INT64_END:
        shown = f"{value:g}" if isinstance(value, float) else f"an integer of {value.bit_length()} bits"
        raise PydanticCustomError("not_a_number", f"must be an integer of at most 64 bits (got {shown})")
    return value


# The integer check goes after the bounds (`Field(...)`), so that Pydantic still writes the
# bounds into the JSON Schema as `minimum`/`exclusiveMinimum` for editors. Floats use Pydantic's
# own strict mode (ints accepted; booleans and strings refused), which costs nothing extra.
STRICT_INT = BeforeValidator(strict_int)
STRICT_FLOAT = Strict()
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
