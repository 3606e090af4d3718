"""Measured losses against a closed-form prediction, and the N <-> T symmetry of a grid of runs.

Maloney, Roberts & Sully (2022) predict the test loss of ridgeless linear random-feature
regression (a deterministic equivalent, docs/science.md#random-features; simulations agree within
about 5%) and show it is symmetric under exchanging features N and samples T. Two checks:

- `theory_agreement`: the ratio measured / predicted per run; its median with a percentile
  bootstrap interval over runs, and the largest |ratio - 1|.
- `nt_symmetry`: for every pair of cells (a, b) = (x, y) and (y, x), x < y, of a grid (runs of one
  cell, e.g. seeds, averaged), the ratio L(x, y) / L(y, x); medians of it and of |log| of it,
  with percentile bootstrap intervals over pairs.

Pure functions of DataFrames returning frozen results; no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling_db.errors import FitError


def median_interval(values: np.ndarray, *, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values` (NaNs when fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2 or n_boot < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, values.size, (n_boot, values.size))], axis=1)
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _require(what: str, data: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise FitError(f"{what}: column(s) not in the data ({', '.join(missing)} vs "
                       f"{', '.join(map(str, data.columns)) or 'no columns'}). Select them in the query.")


@dataclass(frozen=True)
class TheoryAgreementFit:
    """Per-run ratios (`compared`: label, y, reference, ratio), the runs without a usable
    prediction (`missing`: label, why), and the median ratio with its interval."""

    compared: pd.DataFrame
    missing: pd.DataFrame
    median: float
    interval: tuple[float, float]
    n_boot: int
    level: float

    @property
    def worst(self) -> pd.Series:
        """The compared run furthest from its prediction."""
        return self.compared.loc[(self.compared["ratio"] - 1).abs().idxmax()]


def theory_agreement(data: pd.DataFrame, *, y: str = "loss", reference: str = "theory_loss",
                     why: str = "theory_missing", label: str = "name", n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> TheoryAgreementFit:
    """Median of `y / reference` over the runs with a finite, positive `reference`.

    The other runs are returned in `missing` with the reason from the `why` column (the
    `theory_loss` query says why: interpolation peak, nonlinear features, ...), else a generic one.
    """
    _require("theory_agreement", data, [y, reference])
    names = data[label] if label in data.columns else data.get("run_id", pd.Series(data.index, index=data.index))
    ref = pd.to_numeric(data[reference], errors="coerce")
    meas = pd.to_numeric(data[y], errors="coerce")
    ok = np.isfinite(ref) & (ref > 0) & np.isfinite(meas)
    given = data[why] if why in data.columns else pd.Series(None, index=data.index, dtype=object)
    fallback = np.where(~np.isfinite(ref), f"no {reference}",
                        np.where(ref <= 0, f"{reference} is not positive", f"{y} is not finite"))
    reasons = given.where(given.notna(), pd.Series(fallback, index=data.index))
    compared = pd.DataFrame({"label": names[ok].astype(str), y: meas[ok], reference: ref[ok],
                             "ratio": meas[ok] / ref[ok]}).reset_index(drop=True)
    missing = pd.DataFrame({"label": names[~ok].astype(str), "why": reasons[~ok]}).reset_index(drop=True)
    if compared.empty:
        raise FitError(f"theory_agreement: no run has a finite, positive {reference} ({len(data)} runs vs at "
                       f"least 1). Ridgeless linear random-feature runs off the N = T peak log one.")
    ratios = compared["ratio"].to_numpy()
    return TheoryAgreementFit(compared, missing, float(np.median(ratios)),
                              median_interval(ratios, n_boot=n_boot, seed=seed, level=level), n_boot, level)


@dataclass(frozen=True)
class SymmetryFit:
    """Mirrored pairs (`pairs`: the `by` columns, x < y, loss_xy = L(a=x, b=y), loss_yx, ratio
    = loss_xy / loss_yx, abs_log_ratio, runs_xy, runs_yx), medians and their intervals."""

    a: str
    b: str
    pairs: pd.DataFrame
    median_ratio: float
    ratio_interval: tuple[float, float]
    median_abs_log: float
    abs_log_interval: tuple[float, float]
    unpaired: int  # off-diagonal cells whose mirror image was not run
    n_boot: int
    level: float


def nt_symmetry(data: pd.DataFrame, *, a: str = "n_params", b: str = "tokens", y: str = "loss",
                by: Sequence[str] = (), n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> SymmetryFit:
    """Compare L(a=x, b=y) with L(a=y, b=x) for every mirrored pair of cells, x < y, within each
    combination of `by`; runs of one cell (seeds) are averaged first."""
    _require("symmetry", data, [a, b, y, *by])
    frame = data[[*by, a, b, y]].copy()
    for col in (a, b, y):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = frame[np.isfinite(frame[[a, b, y]]).all(axis=1) & (frame[y] > 0)]
    keys = [*by, a, b]
    cells = frame.groupby(keys, dropna=False)[y].agg(["mean", "size"]).reset_index()
    below = cells[cells[a] < cells[b]]
    above = cells[cells[a] > cells[b]].rename(columns={a: b, b: a})  # (y, x) filed under (x, y)
    pairs = below.merge(above, on=keys, suffixes=("_xy", "_yx"))
    unpaired = len(below) + len(above) - 2 * len(pairs)
    if pairs.empty:
        raise FitError(f"symmetry: no pair of runs with ({a}, {b}) = (x, y) and (y, x), x != y "
                       f"({len(cells)} cells vs at least one mirrored pair). Sweep {a} and {b} over the same values.")
    pairs = pd.DataFrame({**{k: pairs[k] for k in by}, "x": pairs[a], "y": pairs[b],
                          "loss_xy": pairs["mean_xy"], "loss_yx": pairs["mean_yx"],
                          "runs_xy": pairs["size_xy"], "runs_yx": pairs["size_yx"]})
    pairs["ratio"] = pairs["loss_xy"] / pairs["loss_yx"]
    pairs["abs_log_ratio"] = np.abs(np.log(pairs["ratio"]))
    ratio, abs_log = pairs["ratio"].to_numpy(), pairs["abs_log_ratio"].to_numpy()
    return SymmetryFit(a, b, pairs.reset_index(drop=True), float(np.median(ratio)),
                       median_interval(ratio, n_boot=n_boot, seed=seed, level=level),
                       float(np.median(abs_log)), median_interval(abs_log, n_boot=n_boot, seed=seed, level=level),
                       unpaired, n_boot, level)
