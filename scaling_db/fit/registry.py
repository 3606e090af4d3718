"""The one registry of fittable laws: name -> the law's form, its fitter and default columns.

Spec validation, the CLI's `--law` choices, `compare_laws` and the report all read this table, so
a law is added in one place. Each name is a key of `laws.LAWS`. The fitters are imported on first
use (`FITTERS`, `get_fitter`): `LAW_NAMES` alone imports neither scipy nor pandas, so
`scaledb validate` checks a spec's law names and stays quick.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaling_db.errors import FitError
from scaling_db.fit.options import DEFAULT_OPTIONS, FitOptions

if TYPE_CHECKING:
    import pandas as pd

    from scaling_db.fit.laws import Law
    from scaling_db.fit.result import LawFit

FitFn = Callable[..., "LawFit"]  # fit(df, init=None) -> LawFit, as `bootstrap` calls it


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


#: law name -> (module of scaling_db.fit holding its fitter, the fitter, default x columns, warm start)
_TABLE: Mapping[str, tuple[str, str, tuple[str, ...], bool]] = {
    "power_law": ("power", "fit_power_law", ("n_params",), False),
    "saturating_power_law": ("power", "fit_saturating_power_law", ("n_params",), True),
    "exponential": ("power", "fit_exponential", ("n_params",), False),
    "saturating_exponential": ("power", "fit_saturating_exponential", ("n_params",), True),
    "chinchilla": ("chinchilla", "fit_chinchilla", ("n_params", "tokens"), True),
    "kaplan_nd": ("chinchilla", "fit_kaplan_nd", ("n_params", "tokens"), True),
}
#: The registered law names, known without importing any fitter.
LAW_NAMES: tuple[str, ...] = tuple(_TABLE)


@functools.cache
def _fitters() -> dict[str, LawFitter]:
    from scaling_db.fit.laws import get_law

    return {name: LawFitter(get_law(name), getattr(importlib.import_module(f"scaling_db.fit.{module}"), fn),
                            default_x, warm_start=warm)
            for name, (module, fn, default_x, warm) in _TABLE.items()}


def __getattr__(attr: str) -> Any:
    """`FITTERS` (name -> LawFitter) and `ONE_INPUT_FITTERS`, built on first use."""
    if attr == "FITTERS":
        return _fitters()
    if attr == "ONE_INPUT_FITTERS":
        return {k: f for k, f in _fitters().items() if f.n_inputs == 1}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get_fitter(name: str, where: str = "fit") -> LawFitter:
    """The registered fitter of law `name`, or FitError naming the known laws."""
    if name not in _TABLE:
        raise FitError(f"{where}: unknown law ({name!r} vs one of {', '.join(LAW_NAMES)}). "
                       f"Use a registered law name.")
    return _fitters()[name]
