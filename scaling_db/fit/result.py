"""The result type every law fit returns, and the row selection that feeds it.

`LawFit` is frozen and self-describing: which law, which columns, which rows were used and which
were excluded (with the reason), the estimator settings and the objective it reached. `predict`
evaluates the fitted law on new data; `to_record` gives a plain JSON-able dict for the `fits`
table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit.laws import Law

Array = np.ndarray


@dataclass(frozen=True)
class LawFit:
    """A fitted scaling law: parameters, the data it used, and how well it fits."""

    law: Law
    params: dict[str, float]
    columns: dict[str, str]  # input role -> column name, e.g. {"n": "n_params", "d": "tokens"}
    y: str
    n_points: int
    stats: dict[str, float]  # r2, rmse, objective, huber_sum (where the objective is Huber) ...
    settings: dict[str, Any]  # estimator, loss, delta, starts, convergence diagnostics ...
    excluded: tuple[tuple[Any, str], ...] = ()  # (run_id or row index, reason)
    used: tuple[Any, ...] = ()  # run_id or row index of every point in the fit
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # analytic CIs
    residuals: Array = field(default_factory=lambda: np.empty(0), repr=False)
    residual_space: str = "raw"  # "log": residuals are log(y) - log(pred); "raw": y - pred

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.law.param_names

    def __getitem__(self, name: str) -> float:
        return self.params[name]

    def predict(self, data: pd.DataFrame | Mapping[str, Any] | None = None, **values: Any) -> Array:
        """The fitted law at new inputs, given by column name or role (`n_params=` or `n=`)."""
        source: dict[str, Any] = {}
        if data is not None:
            source.update({k: data[k] for k in data.keys()} if isinstance(data, pd.DataFrame)
                          else dict(data))
        source.update(values)
        inputs = {}
        for role, col in self.columns.items():
            if col in source:
                inputs[role] = np.asarray(source[col], dtype=float)
            elif role in source:
                inputs[role] = np.asarray(source[role], dtype=float)
            else:
                raise FitError(
                    f"{self.law.name}.predict: missing input ({col!r} vs the fit's columns "
                    f"{', '.join(self.columns.values())}). Pass `{col}=` or a frame with it."
                )
        return self.law.evaluate(self.params, **inputs)

    def to_record(self) -> dict[str, Any]:
        """A plain JSON-able dict: law, params, intervals, settings, n_points, stats."""
        return {
            "law": self.law.name,
            "formula": self.law.formula,
            "params": {k: float(v) for k, v in self.params.items()},
            "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
            "columns": dict(self.columns),
            "y": self.y,
            "n_points": int(self.n_points),
            "stats": {k: float(v) for k, v in self.stats.items()},
            "settings": jsonable(self.settings),
            "excluded": [[jsonable(i), r] for i, r in self.excluded],
            "used": [jsonable(i) for i in self.used],
        }


def table_repr(title: str, table: pd.DataFrame, max_rows: int = 20) -> str:
    """A short text table for a result's repr: a title line, then at most `max_rows` rows."""
    body = table.head(max_rows).to_string(index=False, float_format=lambda v: f"{v:.4g}")
    more = f"\n... {len(table) - max_rows} more rows" if len(table) > max_rows else ""
    return f"{title}\n{body}{more}"


def jsonable(v: Any) -> Any:
    """Numpy scalars and arrays, tuples and nested mappings as plain JSON-able Python values."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass(frozen=True)
class Selection:
    """The rows a fit uses, as float arrays by column, and the rows it excluded, with reasons."""

    values: dict[str, Array]
    ids: tuple[Any, ...]
    excluded: tuple[tuple[Any, str], ...]
    positions: Array  # row positions (iloc) of the kept rows in the input frame

    def __getitem__(self, column: str) -> Array:
        return self.values[column]

    def __len__(self) -> int:
        return len(self.ids)


def _as_float(col: pd.Series) -> Array:
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def select_rows(
    df: pd.DataFrame,
    columns: Iterable[str],
    *,
    where: str,
    log_columns: Iterable[str] = (),
    min_points: int = 2,
    id_column: str = "run_id",
) -> Selection:
    """Pick finite rows of `columns`; rows with non-positive values in `log_columns` are excluded.

    Nothing is dropped silently: each excluded row is listed with why. Raises FitError for
    missing columns or when fewer than `min_points` rows remain.
    """
    if not isinstance(df, pd.DataFrame):
        raise FitError(f"{where}: expected a pandas DataFrame (got {type(df).__name__}). "
                       f"Pass query results as a DataFrame.")
    columns = list(dict.fromkeys(columns))
    log_columns = set(log_columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FitError(
            f"{where}: columns not in the data ({', '.join(missing)} vs "
            f"{', '.join(map(str, df.columns))}). Pass the column names as arguments."
        )
    ids = df[id_column].tolist() if id_column in df.columns else df.index.tolist()
    raw = {c: _as_float(df[c]) for c in columns}
    bad = np.zeros(len(df), dtype=bool)
    for c in columns:
        bad |= ~np.isfinite(raw[c]) | ((raw[c] <= 0) if c in log_columns else False)
    keep = ~bad
    reasons: list[tuple[Any, str]] = []
    for i in np.flatnonzero(bad):  # the first offending column names the reason
        for c in columns:
            v = raw[c][i]
            if not np.isfinite(v):
                got = df[c].iloc[i]
                got = got.item() if isinstance(got, np.generic) else got
                reasons.append((ids[i], f"{c} is not a finite number (got {got!r})"))
                break
            if c in log_columns and v <= 0:
                reasons.append((ids[i], f"{c} <= 0 (got {v:g}); log undefined"))
                break
    n = int(keep.sum())
    if n < min_points:
        dropped = f"; {len(reasons)} rows excluded, first: {reasons[0][1]}" if reasons else ""
        raise FitError(
            f"{where}: too few points ({n} vs at least {min_points}){dropped}. "
            f"Add runs or widen the selection."
        )
    return Selection(
        values={c: v[keep] for c, v in raw.items()},
        ids=tuple(i for i, k in zip(ids, keep) if k),
        excluded=tuple(reasons),
        positions=np.flatnonzero(keep),
    )


def require_distinct(sel: Selection, columns: Iterable[str], need: int, *, where: str, what: str) -> None:
    """FitError unless each of `columns` takes at least `need` distinct values in `sel`.

    Fewer leave the law's design singular (one value: zero variance), so any parameters fit
    equally well; a bootstrap resample that draws one run several times hits this often, and
    then counts as a failed refit instead of reporting arbitrary numbers.
    """
    counts = {c: len(np.unique(sel[c])) for c in columns}
    short = {c: k for c, k in counts.items() if k < need}
    if short:
        got = " and ".join(f"{k} distinct {c}" for c, k in counts.items())
        raise FitError(f"{where}: too few distinct values to determine {what} ({got} vs at least {need} "
                       f"of each). Add runs that vary {', '.join(short)}.")
