"""The base of every spec model and the constrained number types the spec sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class StrictModel(BaseModel):
    """Base of every spec model: unknown keys are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
