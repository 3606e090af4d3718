"""Fit-window sensitivity: how far the parameters move with the scales and checkpoints fitted.

Barkeshli et al. 2026 (and Li et al. 2025, "(Mis)Fitting") show fitted exponents moving with the
fit window by more than their bootstrap intervals; the bootstrap answers "what if we reran the
same experiments", this answers "what if we had chosen the window differently". Both are
reported, separately.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit.resample import BootstrapFit, _quantities
from scaling_db.fit.result import LawFit


@dataclass(frozen=True)
class WindowSensitivity:
    """Refits over a family of windows: one row per window, and the spread of each quantity."""

    table: pd.DataFrame  # window, drop_smallest, drop_largest, min_progress, n_points, quantities
    spread: pd.DataFrame  # quantity, full-window estimate, min, max, spread (max - min), sd
    failed: tuple[tuple[str, str], ...]  # (window, FitError message) for windows with no fit
    scale: str


def window_sensitivity(
    fit_fn: Callable[[pd.DataFrame], LawFit],
    df: pd.DataFrame,
    scale: str = "n_params",
    *,
    drop_smallest: Sequence[int] = (0, 1, 2),
    drop_largest: Sequence[int] = (0, 1, 2),
    progress: str | None = None,
    min_progress: Sequence[float] = (0.0,),
    derived: Mapping[str, Callable[[LawFit], float]] | None = None,
) -> WindowSensitivity:
    """Refit on every window: drop the k smallest / m largest distinct values of `scale`, and
    (with `progress`, e.g. a fraction-of-training column) checkpoints before each `min_progress`.
    """
    if scale not in df.columns:
        raise FitError(f"window_sensitivity: scale column not in the data ({scale!r} vs "
                       f"{', '.join(map(str, df.columns))}). Pass scale= the column to window.")
    if progress is not None and progress not in df.columns:
        raise FitError(f"window_sensitivity: progress column not in the data ({progress!r} vs "
                       f"{', '.join(map(str, df.columns))}). Pass progress= or leave it None.")
    derived = dict(derived or {})
    levels = np.sort(df[scale].dropna().unique())
    rows, failed = [], []
    for k, m, f in itertools.product(drop_smallest, drop_largest, min_progress):
        name = f"drop {k} smallest, {m} largest {scale}" + (f", {progress} >= {f:g}"
                                                             if progress else "")
        kept = levels[k:len(levels) - m] if m else levels[k:]
        mask = df[scale].isin(kept)
        if progress is not None:
            mask &= df[progress] >= f
        try:
            fit = fit_fn(df[mask])
        except FitError as err:
            failed.append((name, str(err)))
            continue
        rows.append({"window": name, "drop_smallest": k, "drop_largest": m,
                     "min_progress": f, "n_points": fit.n_points, **_quantities(fit, derived)})
    if not rows:
        raise FitError(f"window_sensitivity: no window could be fitted ({len(failed)} failed vs "
                       f"at least 1); first: {failed[0][1].rstrip('.') if failed else '-'}. Use fewer drops.")
    table = pd.DataFrame(rows)
    quantities = [c for c in table.columns
                  if c not in ("window", "drop_smallest", "drop_largest", "min_progress",
                               "n_points")]
    full = table[(table.drop_smallest == 0) & (table.drop_largest == 0)]
    spread = pd.DataFrame([{
        "quantity": q,
        "estimate": float(full[q].iloc[0]) if len(full) else np.nan,
        "min": float(table[q].min()), "max": float(table[q].max()),
        "spread": float(table[q].max() - table[q].min()), "sd": float(table[q].std()),
    } for q in quantities])
    return WindowSensitivity(table=table, spread=spread, failed=tuple(failed), scale=scale)


def uncertainty_table(boot: BootstrapFit, windows: WindowSensitivity) -> pd.DataFrame:
    """Bootstrap interval and window spread side by side, one row per quantity."""
    b = boot.summary().rename(columns={"lo": "boot_lo", "hi": "boot_hi", "sd": "boot_sd"})
    w = windows.spread.rename(columns={"estimate": "window_full", "min": "window_min",
                                       "max": "window_max", "spread": "window_spread",
                                       "sd": "window_sd"})
    return b.merge(w, on="quantity", how="outer")
