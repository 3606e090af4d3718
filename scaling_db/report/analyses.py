"""Fits from the database: run a query, fit a law, bootstrap it, store it with its provenance.

This is where the query layer (`scaling_db.store.query`), the fitting library (`scaling_db.fit`) and the
store meet. A `FitRequest` names the data (a named query, a .sql file or inline SQL, plus
parameters), the law and its columns; `fit_request` returns a `FitOutcome` holding the fit, its
bootstrap (whole groups resampled: runs or seeds), the true entropy-rate floor where the data
source knows it, and a plotting curve with its confidence band. `store_outcome` writes it to
the `fits` table with the query text and the run ids used, so every number traces to its runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit import (
    BootstrapFit,
    IrreducibleCheck,
    LawFit,
    bootstrap,
    compare_irreducible,
    get_fitter,
)
from scaling_db.store.query import load_query, parse_query, run_query
from scaling_db.spec.schema import FitDecl
from scaling_db.store.database import open_store, record_fit
from scaling_db.workspace import Workspace



@dataclass(frozen=True)
class FitRequest:
    name: str
    law: str
    query: str | None = "final_loss"
    sql: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    x: list[str] | None = None
    y: str = "loss"
    group: str = "run_id"
    bootstrap: int = 200
    experiment: str | None = None

    @classmethod
    def from_decl(cls, decl: FitDecl, experiment: str) -> "FitRequest":
        return cls(name=decl.name, law=decl.law, query=decl.query, params=dict(decl.params), x=list(decl.x),
                   y=decl.y, group=decl.group, bootstrap=decl.bootstrap, experiment=experiment)

    def columns(self) -> list[str]:
        fitter = get_fitter(self.law, f"fit {self.name}")
        n_inputs = fitter.n_inputs
        xs = list(self.x or fitter.default_x)
        if len(xs) < n_inputs:  # e.g. x: [n_params] for chinchilla: D defaults to tokens
            xs += [c for c in fitter.default_x if c not in xs][: n_inputs - len(xs)]
        if len(xs) != n_inputs:
            raise FitError(f"fit {self.name}: law {self.law} takes {n_inputs} x column(s) (got {xs})")
        return xs


@dataclass(frozen=True)
class FitOutcome:
    request: FitRequest
    fit: LawFit
    boot: BootstrapFit | None
    data: pd.DataFrame
    query_sql: str
    true_floor: float | None
    irreducible: IrreducibleCheck | None
    curve: pd.DataFrame | None  # x, y, lo, hi, extrapolated (one-input laws)
    fit_id: str | None = None

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        return dict(self.boot.intervals) if self.boot else dict(self.fit.intervals)

    def formula(self) -> str:
        """The law with its fitted numbers, e.g. `L = 1.73 + 52.1 x^-0.61`."""
        p = self.fit.params
        x = self.fit.columns.get("x", (self.request.x or ["x"])[0])
        law = self.request.law
        if law == "power_law":
            return f"L = {p['A']:.3g} {x}^-{p['alpha']:.3g}"
        if law == "saturating_power_law":
            return f"L = {p['E']:.3g} + {p['A']:.3g} {x}^-{p['alpha']:.3g}"
        return self.fit.law.formula + " (" + ", ".join(f"{k}={v:.3g}" for k, v in p.items()) + ")"

    def table(self) -> list[dict[str, Any]]:
        """One row per parameter: estimate and interval; plus the true floor where known."""
        rows = [{"fit": self.request.name, "law": self.request.law, "quantity": k, "estimate": v,
                 "lo": self.intervals.get(k, (None, None))[0], "hi": self.intervals.get(k, (None, None))[1]}
                for k, v in self.fit.params.items()]
        if self.irreducible is not None:
            rows.append({"fit": self.request.name, "law": self.request.law, "quantity": "true floor (entropy rate)",
                         "estimate": self.true_floor, "lo": None, "hi": None})
        return rows

    def to_record(self) -> dict[str, Any]:
        rec = self.boot.to_record() if self.boot else self.fit.to_record()
        rec.update({
            "experiment": self.request.experiment,
            "name": self.request.name,
            "query_name": self.request.query,
            "query_sql": self.query_sql,
            "run_ids": sorted({str(r) for r in self.data.get("run_id", pd.Series(dtype=str)).tolist()}),
            "true_floor": self.true_floor,
            "curve": None if self.curve is None else self.curve.to_dict(orient="list"),
        })
        return rec


def make_fit_fn(law: str, xs: list[str], y: str) -> Callable[..., LawFit]:
    """`fit(df, init=None)` for a law and its columns; naming `init` lets the bootstrap
    warm-start each refit from the full-data optimum."""
    return get_fitter(law).bind(xs, y)


def _true_floor(data: pd.DataFrame) -> float | None:
    if "entropy_rate" not in data:
        return None
    values = data["entropy_rate"].dropna().unique()
    return float(values[0]) if len(values) == 1 else None


def fetch_fit_data(ws: Workspace, req: FitRequest) -> tuple[pd.DataFrame, str]:
    params = dict(req.params)
    query = load_query(req.query, ws) if req.sql is None else parse_query(req.sql, None, strict=True)
    if req.experiment is not None and "experiment" in {p.name for p in query.params}:
        params.setdefault("experiment", req.experiment)
    if req.sql is not None:
        return run_query(ws, sql=req.sql, params=params), req.sql
    return run_query(ws, req.query, params=params), query.sql


def fit_request(ws: Workspace, req: FitRequest, *, seed: int = 0, n_jobs: int = 1) -> FitOutcome:
    """Run the request's query, fit its law, and bootstrap it over whole `group`s."""
    xs = req.columns()
    data, sql = fetch_fit_data(ws, req)
    missing = [c for c in (*xs, req.y) if c not in data.columns]
    if missing:
        raise FitError(
            f"fit {req.name}: the query result has no column(s) {', '.join(missing)} "
            f"(columns: {', '.join(data.columns)}). Pass --x/--y or select them in the query."
        )
    if data.empty:
        raise FitError(f"fit {req.name}: the query returned no rows. Have the runs finished and been ingested?")
    fit_fn = make_fit_fn(req.law, xs, req.y)
    fit = fit_fn(data)
    curve_x = None
    if len(xs) == 1:
        lo, hi = float(data[xs[0]].min()), float(data[xs[0]].max())
        grid = np.geomspace(lo, hi * 4.0, 60)
        curve_x = pd.DataFrame({xs[0]: grid})
    boot = None
    group = req.group if req.group in data.columns else None
    if req.bootstrap > 0 and group is not None and data[group].nunique() >= 3:
        boot = bootstrap(fit_fn, data, group=group, n=req.bootstrap, seed=seed, n_jobs=n_jobs,
                         predict_at=curve_x)
    curve = None
    if curve_x is not None:
        grid = curve_x[xs[0]].to_numpy()
        y = np.asarray(fit.predict(curve_x), dtype=float)
        lo_band = hi_band = np.full_like(y, np.nan)
        if boot is not None and boot.predictions is not None:
            lo_band = boot.predictions["ci_lo"].to_numpy(dtype=float)
            hi_band = boot.predictions["ci_hi"].to_numpy(dtype=float)
        curve = pd.DataFrame({"x": grid, "y": y, "lo": lo_band, "hi": hi_band,
                              "extrapolated": grid > float(data[xs[0]].max())})
    floor = _true_floor(data)
    irreducible = None
    if floor is not None and "E" in fit.params:
        irreducible = compare_irreducible(boot or fit, floor, param="E")
    return FitOutcome(req, fit, boot, data, sql, floor, irreducible, curve)


def store_outcome(ws: Workspace, outcome: FitOutcome) -> FitOutcome:
    """Write the fit to the `fits` table; returns the outcome with its fit_id."""
    with open_store(ws) as con:
        fit_id = record_fit(con, outcome.to_record())
    return FitOutcome(**{**outcome.__dict__, "fit_id": fit_id})


def load_stored_fit(ws: Workspace, experiment: str, name: str) -> dict[str, Any]:
    """The newest stored fit of that name (its record, as stored)."""
    df = run_query(ws, sql="SELECT * FROM fits WHERE experiment = $e AND name = $n ORDER BY created_at DESC LIMIT 1",
                   params={"e": experiment, "n": name})
    if df.empty:
        raise FitError(f"no stored fit {name!r} for experiment {experiment!r}. Run `scaledb fit` first.")
    return df.iloc[0].to_dict()
