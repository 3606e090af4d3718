"""How a law is estimated: one options type shared by every fitter.

Every fitter used to repeat `loss, delta, starts, init, id_column` in its signature; they now take
`options=FitOptions(...)`. Log-linear fitters (power law, exponential) read only `id_column`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    from scaling_db.fit.result import LawFit

Starts = Union[np.ndarray, Mapping[str, Sequence[float]], None]


@dataclass(frozen=True)
class FitOptions:
    """Estimator settings of a nonlinear fit (the log-linear fits use only `id_column`)."""

    loss: str | None = None  # "huber" (on log y, Hoffmann et al. 2022) or "lsq" (raw y); None: the law's default
    delta: float = 1e-3  # Huber threshold (Hoffmann et al. 2022 used 1e-3)
    starts: Starts = field(default=None, compare=False)  # start grid: (S, P) array or per-parameter values
    init: Mapping[str, float] | LawFit | None = field(default=None, compare=False)  # warm start
    id_column: str = "run_id"  # names the rows in `used` / `excluded`

    def loss_or(self, default: str) -> str:
        """The chosen loss, or the law's `default` when none was chosen."""
        return self.loss if self.loss is not None else default

    def warm(self, init: Mapping[str, float] | LawFit | None) -> FitOptions:
        """The same options, warm-started from `init` (bootstrap and window refits)."""
        return replace(self, init=init)


DEFAULT_OPTIONS = FitOptions()
