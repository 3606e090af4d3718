"""Fits from the database: run a query, fit a law, bootstrap it, store it with its provenance.

This is where the query layer (`scaling_db.store.query`), the fitting library (`scaling_db.fit`) and the
store meet. A `FitRequest` names the data (a named query, a .sql file or inline SQL, plus
parameters), the law and its columns; `fit_request` returns a `FitOutcome` holding the fit, its
bootstrap (whole groups resampled: runs or seeds), the true entropy-rate floor where the data
source knows it, and a plotting curve with its confidence band. `store_outcome` writes it to
the `fits` table with the query text and the run ids used, so every number traces to its runs.

Every stored analysis (a law fit here; LR optima, LR transfer, parameter efficiency and
frontiers in `comparisons`) is an *outcome* with the same face: `name`, `kind`, `table()` rows
(quantity, estimate, interval, flag), `notes()` and `to_record()`; the CLI and the report print
any of them the same way. Data can span experiments (`experiments=`), and a fit can be split by
any column (`group_by`), including a manifest path such as `data.kappa` that no query selects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit import (
    BootstrapFit,
    IrreducibleCheck,
    LawFit,
    FitOptions,
    bootstrap,
    compare_irreducible,
    get_fitter,
)
from scaling_db.fit.result import jsonable
from scaling_db.store.query import load_query, parse_query, run_query
from scaling_db.spec.schema import FitDecl
from scaling_db.store.database import open_store, record_fit
from scaling_db.workspace import Workspace

Row = dict[str, Any]  # fit, kind, quantity, estimate, lo, hi, flag


class Outcome(Protocol):
    """What the CLI and the report need from any stored analysis."""

    fit_id: str | None

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def table(self) -> list[Row]: ...

    def notes(self) -> list[str]: ...

    def to_record(self) -> dict[str, Any]: ...


def fmt_num(v: Any, digits: int = 4) -> str:
    """A number for a table: `digits` significant digits, blank for None/NaN."""
    if v is None or v != v:
        return ""
    if v in (float("inf"), float("-inf")):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def fmt_interval(lo: Any, hi: Any) -> str:
    """`[lo, hi]` in significant digits (never a fixed-point `-0.00`); blank when unknown."""
    if lo is None or hi is None or lo != lo or hi != hi:
        return ""
    return f"[{fmt_num(lo, 3)}, {fmt_num(hi, 3)}]"



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
    loss: str | None = None  # the estimator's loss ("huber", "lsq"); None: the law's default
    group_by: str | None = None  # one fit per value of this column
    experiments: tuple[str, ...] = ()  # fetch the rows of each (default: `experiment`'s own)
    best_per: tuple[str, ...] = ()  # keep the lowest-y row per value of these columns (and group_by)
    keep_above_uniform: bool = False  # fit runs whose final loss is above ln(vocab_size) too

    @classmethod
    def from_decl(cls, decl: FitDecl, experiment: str, experiments: Sequence[str] = ()) -> "FitRequest":
        return cls(name=decl.name, law=decl.law, query=decl.query, params=dict(decl.params), x=list(decl.x),
                   y=decl.y, group=decl.group, bootstrap=decl.bootstrap, experiment=experiment,
                   loss=decl.loss, group_by=decl.group_by, experiments=tuple(experiments),
                   best_per=tuple(decl.best_per), keep_above_uniform=decl.keep_above_uniform)

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
class GroupStatus:
    """One group of a grouped fit: its value of `group_by`, and why it was not fitted (None: it was)."""

    value: Any
    error: str | None = None


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
    group_value: Any = None  # with `request.group_by`: this fit's value of that column
    groups: tuple[GroupStatus, ...] = ()  # every group of the grouped fit, in order, and whether it fitted
    left_out: tuple[tuple[str, str], ...] = ()  # (name, status) of the runs the query's status filter dropped

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def kind(self) -> str:
        return self.request.law

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        return dict(self.boot.intervals) if self.boot else dict(self.fit.intervals)

    def formula(self) -> str:
        """The law with its fitted numbers, e.g. `L = 1.73 + 52.1 x^-0.61`."""
        p = self.fit.params
        x = self.fit.columns.get("x", (self.request.x or ["x"])[0])
        law = self.request.law
        if law == "power_law":
            return f"L = {p['A']:.3g} {x}^{-p['alpha']:.3g}"
        if law == "saturating_power_law":
            return f"L = {p['E']:.3g} + {p['A']:.3g} {x}^{-p['alpha']:.3g}"
        return self.fit.law.formula + " (" + ", ".join(f"{k}={v:.3g}" for k, v in p.items()) + ")"

    def table(self) -> list[dict[str, Any]]:
        """One row per parameter: estimate and interval; plus the true floor where known."""
        rows = [{"fit": self.name, "kind": self.kind, "quantity": k, "estimate": v,
                 "lo": self.intervals.get(k, (None, None))[0], "hi": self.intervals.get(k, (None, None))[1],
                 "flag": "; ".join(f for f in (_degenerate(k, v), failed_refits_flag(self.boot)) if f)}
                for k, v in self.fit.params.items()]
        if self.irreducible is not None:
            rows.append({"fit": self.name, "kind": self.kind, "quantity": "true floor (entropy rate, nats)",
                         "estimate": self.true_floor, "lo": None, "hi": None, "flag": "exact"})
        return rows

    @property
    def intervals_method(self) -> str:
        """How the intervals were made, in words (stored with the fit, shown beside it)."""
        req = self.request
        if self.boot is not None:
            ok = self.boot.n_requested - self.boot.n_failed
            return f"bootstrap: {ok} refits resampling whole groups of {self.boot.group}"
        if req.bootstrap <= 0:
            why = "no bootstrap requested"
        elif req.group not in self.data.columns:
            why = (f"no bootstrap: the data has no {req.group} column to resample whole groups by "
                   f"(select run_id in the query, or pass --group)")
        else:
            fitted = self.data if req.keep_above_uniform else split_above_uniform(self.data)[0]
            why = f"no bootstrap: {fitted[req.group].nunique()} groups of {req.group} vs at least 3"
        return why + ("; intervals are the fit's own (analytic) ones" if self.fit.intervals
                      else "; no intervals computed")

    def notes(self) -> list[str]:
        """The formula, fit quality, bootstrap, floor check and exclusions, one line each."""
        line = f"{self.formula()}; {self.fit.n_points} points"
        if self.request.best_per:
            line += f" (best run per {', '.join(self.request.best_per)})"
        if "r2" in self.fit.stats:
            line += f", R² = {self.fit.stats['r2']:.4f}"
        notes = [line]
        if self.request.params:  # e.g. a FLOPs convention: it changes what x means
            notes.append("query parameters: " + ", ".join(f"{k}={v}" for k, v in self.request.params.items()))
        notes.append("bootstrap: " + self.boot.note() if self.boot is not None else f"intervals: {self.intervals_method}")
        if self.irreducible is not None:
            ir = self.irreducible
            judged = ("no interval to judge it by" if ir.covered is None
                      else f"truth {'inside' if ir.covered else 'outside'} the interval")
            notes.append(f"fitted floor E = {ir.fitted:.4g} vs exact entropy rate {ir.true:.4g} nats "
                         f"({ir.difference:+.3g}; {judged})")
        notes += [f"excluded {run}: {reason}" for run, reason in self.fit.excluded]
        if self.left_out:
            notes.append(left_out_note(self.left_out))
        notes += [f"group {self.request.group_by}={g.value} not fitted: {g.error}" for g in self.groups if g.error]
        return notes

    def to_record(self) -> dict[str, Any]:
        rec = self.boot.to_record() if self.boot else self.fit.to_record()
        rec.update({
            "experiment": self.request.experiment,
            "name": self.request.name,
            "query_name": self.request.query,
            "query_sql": self.query_sql,
            "query_params": dict(self.request.params) or None,  # e.g. a FLOPs convention: part of the data
            # Every run the query returned (`used`, kept in `extra`, lists the points the fit kept).
            "run_ids": sorted({str(r) for r in self.data["run_id"]}) if "run_id" in self.data else None,
            "intervals": rec.get("intervals") or None,  # NULL, not {}, when none were computed
            "intervals_method": self.intervals_method,
            "experiments": list(self.request.experiments) or None,
            "group_by": self.request.group_by,
            "best_per": list(self.request.best_per) or None,
            "true_floor": self.true_floor,
            "curve": None if self.curve is None else self.curve.to_dict(orient="list"),
        })
        if self.request.group_by:  # the whole roster in each group's record: a figure reads groups, order, failures
            rec["group_value"] = jsonable(self.group_value)
            rec["groups"] = [{"value": jsonable(g.value), "error": g.error} for g in self.groups]
        return rec


Excluded = tuple[tuple[Any, str], ...]  # (run_id or row index, reason)


def _above_uniform(data: pd.DataFrame) -> np.ndarray:
    """Which rows belong to a run whose final loss is above `uniform_loss` (see split_above_uniform)."""
    final = "final_loss" if "final_loss" in data.columns else "loss"
    if data.empty or final not in data.columns or "uniform_loss" not in data.columns:
        return np.zeros(len(data), dtype=bool)
    loss = pd.to_numeric(data[final], errors="coerce")
    uniform = pd.to_numeric(data["uniform_loss"], errors="coerce")
    return (loss > uniform).to_numpy()  # False where either is missing


def split_above_uniform(data: pd.DataFrame) -> tuple[pd.DataFrame, Excluded]:
    """The rows of runs whose final loss is at most the uniform-guess loss `uniform_loss` =
    ln(vocab_size), and each other run once with why it is left out: guessing uniformly does as
    well, so the run learned nothing a law could describe.

    A run's final loss is its `final_loss` column where the rows have one (the checkpoint rows of
    `loss_curves`: every row of a run that ends above goes, early checkpoints near ln(V) do not
    decide), else each row's `loss` (one final row per run, as `final_loss` returns). Rows with no
    `uniform_loss` (closed-form sources have no vocabulary; queries that do not select it) are kept.
    """
    above = _above_uniform(data)
    if not above.any():
        return data, ()
    loss = pd.to_numeric(data["final_loss" if "final_loss" in data.columns else "loss"], errors="coerce")
    uniform = pd.to_numeric(data["uniform_loss"], errors="coerce")
    ids = data["run_id"].to_numpy() if "run_id" in data.columns else data.index.to_numpy()
    runs = pd.DataFrame({"id": ids[above], "loss": loss.to_numpy()[above],
                         "uniform": uniform.to_numpy()[above]}).drop_duplicates("id")  # one line per run
    excluded = tuple((r.id, f"final loss {r.loss:.4g} above uniform guess ln(V)={r.uniform:.4g}: learned nothing")
                     for r in runs.itertuples(index=False))
    return data[~above].reset_index(drop=True), excluded


def mark_above_uniform(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The runs table with "finished (above uniform)" as the status of each finished run whose final
    loss is above the uniform guess, as `scaledb status` shows it, and how many there are."""
    if "status" not in runs.columns:
        return runs, 0
    above = _above_uniform(runs) & (runs["status"] == "finished").to_numpy()
    marked = runs.assign(status=runs["status"].where(~above, runs["status"] + " (above uniform)"))
    return marked, int(above.sum())


def above_uniform_note(n_runs: int) -> str:
    """The line under a runs table with `n_runs` marked runs."""
    return (f"{n_runs} finished run(s) end above the uniform-guess loss ln(vocab_size): they learned nothing, "
            f"and analyses leave them out (keep_above_uniform: true keeps them)")


#: Exponents of the registered laws. Scaling exponents are O(0.01-1); one past this bound means the
#: optimizer bent the law into a step: the data do not determine that term.
EXPONENT_NAMES = ("alpha", "beta", "alpha_N", "alpha_D")
IMPLAUSIBLE_EXPONENT = 10.0


def failed_refits_flag(boot: BootstrapFit | None) -> str:
    """A flag when more than 10% of the bootstrap's refits failed (e.g. resamples too degenerate
    to fit): the interval then only describes the resamples that could be fitted."""
    if boot is None or boot.n_failed <= 0.1 * boot.n_requested:
        return ""
    return f"{boot.n_failed} of {boot.n_requested} refits failed: interval conditional on the rest"


def _degenerate(name: str, value: float) -> str:
    if name in EXPONENT_NAMES and abs(value) > IMPLAUSIBLE_EXPONENT:
        return f"degenerate: |{name}| > {IMPLAUSIBLE_EXPONENT:g}, the data do not determine this term"
    return ""


def make_fit_fn(law: str, xs: list[str], y: str, loss: str | None = None) -> Callable[..., LawFit]:
    """`fit(df, init=None)` for a law and its columns; naming `init` lets the bootstrap
    warm-start each refit from the full-data optimum."""
    return get_fitter(law).bind(xs, y, FitOptions(loss=loss))


def _true_floor(data: pd.DataFrame) -> float | None:
    if "entropy_rate" not in data:
        return None
    values = data["entropy_rate"].dropna().unique()
    return float(values[0]) if len(values) == 1 else None


def _manifest_columns(ws: Workspace, data: pd.DataFrame, columns: Sequence[str],
                      required: bool = True) -> pd.DataFrame:
    # A dotted column no query selects (`data.kappa`, `vars.flop_budget`) is read from each run's
    # stored manifest (or its sweep variables), so any spec field can split a fit.
    wanted = [c for c in columns if c and c not in data.columns and "." in c]
    if not wanted or "run_id" not in data.columns or data.empty:
        return data
    exprs = []
    for i, col in enumerate(wanted):
        head, _, rest = col.partition(".")
        source, path = ("vars", rest) if head == "vars" else ("manifest", col)
        if not all(part.replace("_", "").isalnum() for part in path.split(".")):
            raise FitError(f"group_by: not a field path ({col!r} vs e.g. data.kappa). Use letters, digits, _ and dots.")
        exprs.append(f"json_extract_string({source}, '$.{path}') AS c{i}")
    ids = sorted({str(r) for r in data["run_id"]})
    found = run_query(ws, sql=f"SELECT run_id, {', '.join(exprs)} FROM runs WHERE list_contains($ids, run_id)",
                      params={"ids": ids})
    found = found.rename(columns={f"c{i}": col for i, col in enumerate(wanted)})
    for col in wanted:
        if found[col].isna().all() and not required:
            found = found.drop(columns=col)
            continue
        if found[col].isna().all():
            raise FitError(f"group_by: no run has a value for {col!r} (vs a manifest field such as data.kappa "
                           f"or a query column). Check the field path.")
        numeric = pd.to_numeric(found[col], errors="coerce")
        if numeric.notna().all():
            found[col] = numeric
    return data.merge(found, on="run_id", how="left")


def fetch_rows(ws: Workspace, query: str | None, sql: str | None, params: dict[str, Any],
               experiments: Sequence[str], extra_columns: Sequence[str] = (),
               optional_columns: Sequence[str] = ()) -> tuple[pd.DataFrame, str]:
    """The rows of a named query (or inline SQL), run once per experiment and stacked.

    A query that takes `experiment` is run for each of `experiments` (an explicit
    `params['experiment']` wins); one that does not is run once. Dotted `extra_columns` missing
    from the result are read from the runs' manifests (`optional_columns` too, when any run has them).
    """
    named = load_query(query, ws) if sql is None else parse_query(sql, None, strict=True)
    text = sql if sql is not None else named.sql
    takes_experiment = "experiment" in {p.name for p in named.params}
    runs = [dict(params)]
    if takes_experiment and "experiment" not in params and experiments:
        runs = [{**params, "experiment": e} for e in experiments]
    frames = [run_query(ws, query, params=p) if sql is None else run_query(ws, sql=sql, params=p) for p in runs]
    frames = [f for f in frames if not f.empty]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    data = _manifest_columns(ws, data, extra_columns)
    return _manifest_columns(ws, data, optional_columns, required=False), text


#: Runs named in a fit's "left out, not finished" note; the rest are counted.
LEFT_OUT_SHOWN = 8


def unfinished_runs(ws: Workspace, req: FitRequest) -> tuple[tuple[str, str], ...]:
    """(name, status) of the runs of the request's experiments (and revision) that its named query
    left out by its default `status = 'finished'`: pending or running ones, and those whose files
    are damaged (`damaged`, `unknown`), which would otherwise vanish from a fit without a word."""
    if req.sql is not None or req.query is None or "status" in req.params:
        return ()
    status = next((p for p in load_query(req.query, ws).params if p.name == "status"), None)
    if status is None or status.default != "finished":
        return ()
    experiments = [req.params["experiment"]] if "experiment" in req.params else \
        list(req.experiments) or ([req.experiment] if req.experiment else [])
    found = run_query(ws, sql="SELECT name, status FROM runs WHERE list_contains($experiments, experiment) "
                              "AND status <> 'finished' AND run_id IN (SELECT run_id FROM run_selection "
                              "WHERE revision = $revision) ORDER BY name",
                      params={"experiments": experiments, "revision": req.params.get("revision", "current")})
    return tuple((str(name), str(state)) for name, state in zip(found["name"], found["status"]))


def left_out_note(left_out: Sequence[tuple[str, str]]) -> str:
    """The runs a fit's query left out as not finished, in one line."""
    shown = ", ".join(f"{name} ({status})" for name, status in left_out[:LEFT_OUT_SHOWN])
    more = f" and {len(left_out) - LEFT_OUT_SHOWN} more" if len(left_out) > LEFT_OUT_SHOWN else ""
    return f"left out, not finished: {shown}{more}; `scaledb status` says why"


def fit_noting(req: FitRequest, data: pd.DataFrame, sql: str, left_out: tuple[tuple[str, str], ...],
                **kwargs: Any) -> FitOutcome:
    """`fit_frame`, with the runs left out as not finished in the outcome, or in its error."""
    try:
        return replace(fit_frame(req, data, sql, **kwargs), left_out=left_out)
    except FitError as exc:
        if not left_out:
            raise
        raise FitError(f"{exc} ({left_out_note(left_out)})") from None


def fetch_fit_data(ws: Workspace, req: FitRequest) -> tuple[pd.DataFrame, str]:
    experiments = list(req.experiments) or ([req.experiment] if req.experiment else [])
    data, sql = fetch_rows(ws, req.query, req.sql, dict(req.params), experiments, [req.group_by or "", *req.best_per])
    if req.best_per and not data.empty:
        keys = [*req.best_per, *([req.group_by] if req.group_by else [])]
        missing = [c for c in (*keys, req.y) if c not in data.columns]
        if missing:
            raise FitError(f"fit {req.name}: best_per columns not in the data ({', '.join(missing)} vs "
                           f"{', '.join(map(str, data.columns))}). Name query columns.")
        data = data.loc[data.groupby(keys, dropna=False)[req.y].idxmin().dropna()].reset_index(drop=True)
    return data, sql


def fit_request(ws: Workspace, req: FitRequest, *, seed: int = 0, n_jobs: int = 1) -> FitOutcome:
    """Run the request's query, fit its law, and bootstrap it over whole `group`s."""
    if req.group_by:
        raise FitError(f"fit {req.name}: group_by={req.group_by!r} gives one fit per group. Call fit_grouped.")
    data, sql = fetch_fit_data(ws, req)
    return fit_noting(req, data, sql, unfinished_runs(ws, req), seed=seed, n_jobs=n_jobs)


def fit_grouped(ws: Workspace, req: FitRequest, *, seed: int = 0, n_jobs: int = 1) -> list[FitOutcome]:
    """One outcome per value of `req.group_by` (just one without it), named `NAME[COL=VALUE]`.

    A group that cannot be fitted does not stop the others: every outcome carries the list of
    groups (`groups`, in the order of `req.experiments` when grouping by experiment, else sorted)
    with the reason any failed. Only when no group fits is it an error.
    """
    data, sql = fetch_fit_data(ws, req)
    left_out = unfinished_runs(ws, req)
    if not req.group_by:
        return [fit_noting(req, data, sql, left_out, seed=seed, n_jobs=n_jobs)]
    if req.group_by not in data.columns:
        raise FitError(f"fit {req.name}: group_by column not in the data ({req.group_by!r} vs "
                       f"{', '.join(map(str, data.columns))}). Group by a query column or a manifest path.")
    parts = {value: part.reset_index(drop=True) for value, part in data.groupby(req.group_by, sort=True)}
    order = list(parts)
    if req.group_by == "experiment" and req.experiments:  # the order the spec lists them, empty ones too
        order = list(req.experiments) + [v for v in order if v not in req.experiments]
    fitted: list[FitOutcome] = []
    status: list[GroupStatus] = []
    for value in order:
        if value not in parts:
            status.append(GroupStatus(value, "no rows (have its runs finished and been ingested?)"))
            continue
        sub = replace(req, name=f"{req.name}[{req.group_by}={value}]", params={**req.params})
        try:
            fitted.append(replace(fit_frame(sub, parts[value], sql, seed=seed, n_jobs=n_jobs), group_value=value))
            status.append(GroupStatus(value))
        except FitError as exc:
            status.append(GroupStatus(value, str(exc)))
    if not fitted:
        raise FitError(f"fit {req.name}: no group of {req.group_by} could be fitted ("
                       + "; ".join(f"{g.value}: {g.error}" for g in status) + ")"
                       + (f" ({left_out_note(left_out)})" if left_out else ""))
    return [replace(o, groups=tuple(status), left_out=left_out) for o in fitted]


def fit_frame(req: FitRequest, data: pd.DataFrame, sql: str, *, seed: int = 0, n_jobs: int = 1) -> FitOutcome:
    """Fit the request's law to rows already fetched, with its bootstrap, floor check and curve."""
    xs = req.columns()
    if data.empty:  # first: rows from no experiment have no columns either (all runs diverged, say)
        raise FitError(f"fit {req.name}: the query returned no rows. Have the runs finished and been ingested?")
    missing = [c for c in (*xs, req.y) if c not in data.columns]
    if missing:
        raise FitError(
            f"fit {req.name}: the query result has no column(s) {', '.join(missing)} "
            f"(columns: {', '.join(data.columns)}). Pass --x/--y or select them in the query."
        )
    queried = data  # kept whole in the outcome: its run ids are the fit's provenance
    data, above = (data, ()) if req.keep_above_uniform else split_above_uniform(data)
    if data.empty:
        n_runs = queried["run_id"].nunique() if "run_id" in queried.columns else len(queried)
        raise FitError(f"fit {req.name}: every run's final loss is above the uniform guess ln(vocab_size) "
                       f"({len(above)} of {n_runs} runs; first: {above[0][1]}). Train longer or "
                       f"check the learning rate, or fit them anyway with keep_above_uniform: true "
                       f"(--keep-above-uniform).")
    fit_fn = make_fit_fn(req.law, xs, req.y, req.loss)
    try:
        fit = fit_fn(data)
    except FitError as err:
        if not above:
            raise
        raise FitError(f"{err} ({len(above)} run(s) above the uniform-guess loss were left out; "
                       f"keep_above_uniform: true keeps them)") from None
    fit = replace(fit, excluded=above + tuple(fit.excluded))
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
        boot = replace(boot, fit=fit)  # the full-data fit with every exclusion listed
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
    return FitOutcome(req, fit, boot, queried, sql, floor, irreducible, curve)


def store_outcome(ws: Workspace, outcome: Any) -> Any:
    """Write the fit to the `fits` table; returns the outcome with its fit_id."""
    with open_store(ws) as con:
        fit_id = record_fit(con, outcome.to_record())
    return replace(outcome, fit_id=fit_id)


def load_stored_fit(ws: Workspace, experiment: str, name: str) -> dict[str, Any]:
    """The newest stored fit of that name (its record, as stored)."""
    df = run_query(ws, sql="SELECT * FROM fits WHERE experiment = $e AND name = $n ORDER BY created_at DESC LIMIT 1",
                   params={"e": experiment, "n": name})
    if df.empty:
        raise FitError(f"no stored fit {name!r} for experiment {experiment!r}. Run `scaledb fit` first.")
    return df.iloc[0].to_dict()
