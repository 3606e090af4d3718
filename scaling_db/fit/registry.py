"""The one registry of fittable laws: name -> the law's form, its fitter and default columns.

Spec validation, the CLI's `--law` choices, `compare_laws` and the report all read this table, so
a law is added in one place. Names come from the `Law` objects themselves (`laws.LAWS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit.chinchilla import fit_chinchilla, fit_kaplan_nd
from scaling_db.fit.laws import (CHINCHILLA, EXPONENTIAL, KAPLAN_ND, POWER_LAW,
                                 SATURATING_EXPONENTIAL, SATURATING_POWER_LAW, Law)
from scaling_db.fit.options import DEFAULT_OPTIONS, FitOptions
from scaling_db.fit.power import (fit_exponential, fit_power_law, fit_saturating_exponential,
                                  fit_saturating_power_law)
from scaling_db.fit.result import LawFit

FitFn = Callable[..., LawFit]  # fit(df, init=None) -> LawFit, as `bootstrap` calls it


@dataclass(frozen=True)
class LawFitter:
    """A fittable law: its form, the function that fits it, and its default x columns."""

    law: Law
    fit: Callable[..., LawFit]  # fit(df, <one keyword per input role>, y=, options=)
    default_x: tuple[str, ...]
    warm_start: bool  # whether options.init is used (the nonlinear fits)

    @property
    def name(self) -> str:
        return self.law.name

    @property
    def n_inputs(self) -> int:
        return len(self.law.inputs)

    def bind(self, xs: Sequence[str], y: str, options: FitOptions = DEFAULT_OPTIONS) -> FitFn:
        """`fit(df, init=None)` on columns `xs` -> `y`; `init` warm-starts the nonlinear laws."""
        if len(xs) != self.n_inputs:
            raise FitError(f"{self.name}: wrong number of x columns ({len(xs)} vs "
                           f"{self.n_inputs}: {', '.join(self.law.inputs)}). Pass one per input.")
        roles: dict[str, Any] = dict(zip(self.law.inputs, xs))
        fit, warm = self.fit, self.warm_start

        def fit_fn(df: pd.DataFrame, init: Mapping[str, float] | LawFit | None = None) -> LawFit:
            opts = options.warm(init) if warm and init is not None else options
            return fit(df, **roles, y=y, options=opts)

        return fit_fn


FITTERS: Mapping[str, LawFitter] = {
    f.name: f for f in (
        LawFitter(POWER_LAW, fit_power_law, ("n_params",), warm_start=False),
        LawFitter(SATURATING_POWER_LAW, fit_saturating_power_law, ("n_params",), warm_start=True),
        LawFitter(EXPONENTIAL, fit_exponential, ("n_params",), warm_start=False),
        LawFitter(SATURATING_EXPONENTIAL, fit_saturating_exponential, ("n_params",),
                  warm_start=True),
        LawFitter(CHINCHILLA, fit_chinchilla, ("n_params", "tokens"), warm_start=True),
        LawFitter(KAPLAN_ND, fit_kaplan_nd, ("n_params", "tokens"), warm_start=True),
    )
}
ONE_INPUT_FITTERS: Mapping[str, LawFitter] = {k: f for k, f in FITTERS.items() if f.n_inputs == 1}


def get_fitter(name: str, where: str = "fit") -> LawFitter:
    """The registered fitter of law `name`, or FitError naming the known laws."""
    if name not in FITTERS:
        raise FitError(f"{where}: unknown law ({name!r} vs one of {', '.join(FITTERS)}). "
                       f"Use a registered law name.")
    return FITTERS[name]
