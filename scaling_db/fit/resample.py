"""Bootstrap uncertainty for any fit: resample whole groups (runs, seeds), refit, take percentiles.

Checkpoints of one run are not independent draws, so resampling single rows understates the
uncertainty; here the unit is a group (a run, or a seed), as Besiroglu et al. 2024 (sec. 3)
argue. Every refit is seeded from (seed, replicate index), so results do not depend on n_jobs.
Refits of laws that accept `init=` (or `options=FitOptions(...)`) start from the full-data
optimum (a handful of starts around it instead of the full grid), which is what makes 1,000
Chinchilla refits take seconds.
"""

from __future__ import annotations

import inspect
import multiprocessing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit.options import FitOptions
from scaling_db.fit.result import LawFit, jsonable, table_repr



class Fitted(Protocol):
    """Anything with named parameters: a LawFit, a FrontierFit, ..."""

    @property
    def params(self) -> Mapping[str, float]: ...


FitFn = Callable[..., Fitted]
Derived = Mapping[str, Callable[[Any], float]]


@dataclass(frozen=True)
class BootstrapFit:
    """Percentile intervals for every parameter and derived quantity of a fit."""

    fit: Any  # the fit on all the data (LawFit, FrontierFit, ...): the point estimates
    estimates: dict[str, float]  # parameters and derived quantities of `fit`
    intervals: dict[str, tuple[float, float]]  # percentile confidence intervals at `level`
    samples: pd.DataFrame  # one row per successful refit
    predictions: pd.DataFrame | None  # per target: estimate, ci_lo/hi (mean), pi_lo/hi (new run)
    level: float
    n_requested: int
    n_failed: int
    failures: tuple[str, ...]  # distinct FitError messages of failed refits, first few
    group: str
    n_groups: int
    seed: int
    strata: str | None = None
    n_warnings: int = 0  # numerical warnings raised by the refits (counted, not printed)
    warnings: tuple[str, ...] = ()  # distinct warning messages, first few

    def __repr__(self) -> str:
        return table_repr(f"BootstrapFit ({self.note()})", self.summary())

    def note(self) -> str:
        """One line on how the intervals were made, with failed refits and warnings counted."""
        text = (f"{self.n_requested - self.n_failed} of {self.n_requested} refits, "
                f"{self.level:.0%} percentile intervals, resampling {self.n_groups} {self.group}s")
        if self.strata:
            text += f" within each {self.strata}"
        if self.n_failed:
            text += f"; {self.n_failed} refits failed (first: {self.failures[0]})"
        if self.n_warnings:
            text += f"; {self.n_warnings} numerical warnings (first: {self.warnings[0]})"
        return text

    def summary(self) -> pd.DataFrame:
        """One row per quantity: estimate, interval, bootstrap standard deviation."""
        rows = [{"quantity": k, "estimate": v, "lo": self.intervals[k][0],
                 "hi": self.intervals[k][1], "sd": float(self.samples[k].std())}
                for k, v in self.estimates.items()]
        return pd.DataFrame(rows)

    def to_record(self) -> dict[str, Any]:
        """The full fit's record with bootstrap intervals and settings (JSON-able)."""
        rec = self.fit.to_record()
        rec["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()}
        rec["derived"] = {k: float(v) for k, v in self.estimates.items()
                          if k not in self.fit.params}
        rec["bootstrap"] = jsonable({
            "n": self.n_requested, "n_failed": self.n_failed, "level": self.level,
            "group": self.group, "n_groups": self.n_groups, "seed": self.seed,
            "strata": self.strata, "n_warnings": self.n_warnings,
            "method": "percentile, groups resampled with replacement"})
        return rec


def _warm_kwargs(fn: Callable[..., Any], full: Fitted) -> dict[str, Any]:
    # A fit function taking `init` (a bound fitter) gets the full-data fit; a bare fitter taking
    # `options` gets its default options (a partial's, if bound) warm-started from it.
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if "init" in params:
        return {"init": full}
    default = params["options"].default if "options" in params else None
    return {"options": default.warm(full)} if isinstance(default, FitOptions) else {}


def _quantities(fit: Fitted, derived: Derived) -> dict[str, float]:
    out = {k: float(v) for k, v in fit.params.items()}
    out.update({k: float(f(fit)) for k, f in derived.items()})
    return out


# The work of one bootstrap call, installed in each worker process by `_init_worker` (a forked
# child inherits it without pickling, so fit functions may be lambdas or closures).
_WORK: dict[str, Any] = {}


def _init_worker(work: dict[str, Any]) -> None:
    _WORK.clear()
    _WORK.update(work)


Refit = tuple[int, dict[str, float] | None, np.ndarray | None, str | None, tuple[str, ...]]


def _refit(b: int) -> Refit:
    w = _WORK
    rng = np.random.default_rng([w["seed"], b])
    rows = np.concatenate([stratum[i] for stratum in w["strata"]
                           for i in rng.integers(0, len(stratum), len(stratum))])
    sample = w["df"].iloc[rows]
    # Resamples are degenerate now and then (one size drawn three times); the numerical warnings
    # that causes are counted and reported once, not printed per refit.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = w["fit_fn"](sample, **w["kwargs"])
        except FitError as err:
            return b, None, None, str(err), _messages(caught)
    seen = _messages(caught)
    preds = None
    if w["predict_at"] is not None:
        mean = fit.predict(w["predict_at"])
        noise = rng.choice(fit.residuals, size=len(mean)) if len(fit.residuals) else 0.0
        new = mean * np.exp(noise) if fit.residual_space == "log" else mean + noise
        preds = np.stack([mean, new])
    return b, _quantities(fit, w["derived"]), preds, None, seen


def _messages(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(f"{w.category.__name__}: {w.message}" for w in caught)


def bootstrap(
    fit_fn: FitFn,
    df: pd.DataFrame,
    group: str = "run_id",
    n: int = 1000,
    seed: int = 0,
    n_jobs: int = 2,
    *,
    derived: Derived | None = None,
    predict_at: pd.DataFrame | None = None,
    level: float = 0.95,
    warm_start: bool = True,
    strata: str | None = None,
) -> BootstrapFit:
    """Refit `fit_fn(df)` on `n` resamples of whole `group`s; percentile intervals at `level`.

    strata: resample groups within each value of this column separately (e.g. per
    parameterization or per FLOP budget), so every stratum keeps its number of groups.

    derived: name -> function of a fit (e.g. the N_opt(C) exponent, loss at a target scale);
    predict_at: inputs for confidence intervals of the mean prediction and prediction intervals
    for a new observation (the refit's prediction times a resampled residual of that refit).
    """
    _check_args(df, group, strata, level, n)
    derived = dict(derived or {})
    full = fit_fn(df)
    positions, n_groups = _group_positions(df, group)
    if strata is None:
        stratified = [positions]
    else:  # a group belongs to the stratum of its first row
        first = df[strata].to_numpy()[[p[0] for p in positions]]
        stratified = [[p for p, s in zip(positions, first) if s == v] for v in pd.unique(first)]
    work = {"df": df, "strata": stratified, "fit_fn": fit_fn, "seed": seed,
            "kwargs": _warm_kwargs(fit_fn, full) if warm_start else {},
            "derived": derived, "predict_at": predict_at}
    results = _refit_all(work, n, n_jobs)
    ok = [(q, p) for _, q, p, err, _ in sorted(results, key=lambda t: t[0]) if err is None]
    failures = [err for _, _, _, err, _ in results if err is not None]
    caught = [m for *_, msgs in results for m in msgs]
    if len(ok) < 2:
        raise FitError(f"bootstrap: too few successful refits ({len(ok)} of {n} vs at least 2); "
                       f"first failure: {failures[0] if failures else 'none'}. Check the data.")
    samples = pd.DataFrame([q for q, _ in ok])
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    intervals = {k: (float(np.nanpercentile(samples[k], lo_q)),
                     float(np.nanpercentile(samples[k], hi_q))) for k in samples.columns}
    predictions = None
    if predict_at is not None:
        stacked = np.stack([p for _, p in ok])  # (B, 2, m): mean, new observation
        predictions = predict_at.reset_index(drop=True).copy()
        predictions["estimate"] = full.predict(predict_at)
        predictions["ci_lo"], predictions["ci_hi"] = np.percentile(stacked[:, 0], [lo_q, hi_q], 0)
        predictions["pi_lo"], predictions["pi_hi"] = np.percentile(stacked[:, 1], [lo_q, hi_q], 0)
    return BootstrapFit(
        fit=full, estimates=_quantities(full, derived), intervals=intervals, samples=samples,
        predictions=predictions, level=level, n_requested=n, n_failed=len(failures),
        failures=tuple(dict.fromkeys(failures))[:5], group=group, n_groups=n_groups,
        seed=seed, strata=strata, n_warnings=len(caught),
        warnings=tuple(dict.fromkeys(caught))[:5],
    )


def _check_args(df: pd.DataFrame, group: str, strata: str | None, level: float, n: int) -> None:
    where = "bootstrap"
    if group not in df.columns:
        raise FitError(f"{where}: group column not in the data ({group!r} vs "
                       f"{', '.join(map(str, df.columns))}). Pass group= a run or seed id "
                       f"column; rows are never resampled one by one.")
    if not 0 < level < 1:
        raise FitError(f"{where}: level must be in (0, 1) (got {level!r} vs e.g. 0.95). "
                       f"Pass level=0.95 for 95% intervals.")
    if n < 2:
        raise FitError(f"{where}: too few resamples ({n} vs at least 2). Pass n=1000.")
    if strata is not None and strata not in df.columns:
        raise FitError(f"{where}: strata column not in the data ({strata!r} vs "
                       f"{', '.join(map(str, df.columns))}). Pass strata= a column or None.")


def _group_positions(df: pd.DataFrame, group: str) -> tuple[list[np.ndarray], int]:
    """The row positions of each group (groups in sorted order), and the number of groups."""
    codes, uniques = pd.factorize(df[group], sort=True)
    if len(uniques) < 2:
        raise FitError(f"bootstrap: too few groups ({len(uniques)} vs at least 2) in {group!r}. "
                       f"Bootstrap needs several runs or seeds.")
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1), len(uniques)


def _refit_all(work: dict[str, Any], n: int, n_jobs: int) -> list[Any]:
    """`_refit` of resamples 0..n-1: in forked workers when allowed, else in this process."""
    if n_jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(n_jobs, initializer=_init_worker, initargs=(work,)) as pool:
            return pool.map(_refit, range(n), chunksize=max(1, n // (4 * n_jobs)))
    saved = dict(_WORK)
    _init_worker(work)
    try:
        return [_refit(b) for b in range(n)]
    finally:
        _init_worker(saved)


@dataclass(frozen=True)
class IrreducibleCheck:
    """A fitted irreducible loss beside a known one (e.g. a Markov source's entropy rate)."""

    param: str
    fitted: float
    true: float
    difference: float  # fitted - true, in the loss's units (nats/token)
    relative_difference: float
    interval: tuple[float, float] | None  # bootstrap interval when given a BootstrapFit
    covered: bool | None  # whether that interval contains the true value


def compare_irreducible(
    fit: LawFit | BootstrapFit, true_entropy: float, param: str = "E"
) -> IrreducibleCheck:
    """Report the fitted irreducible term `param` beside the true entropy rate of the source."""
    base = fit.fit if isinstance(fit, BootstrapFit) else fit
    if param not in base.params:
        raise FitError(f"compare_irreducible: the {base.law.name} fit has no parameter "
                       f"{param!r} (vs {', '.join(base.params)}). Fit a law with an "
                       f"irreducible term, e.g. saturating_power_law or chinchilla.")
    fitted = float(base.params[param])
    interval = fit.intervals.get(param) if isinstance(fit, BootstrapFit) else None
    covered = None if interval is None else bool(interval[0] <= true_entropy <= interval[1])
    return IrreducibleCheck(
        param=param, fitted=fitted, true=float(true_entropy),
        difference=fitted - true_entropy,
        relative_difference=(fitted - true_entropy) / true_entropy if true_entropy else np.nan,
        interval=interval, covered=covered,
    )
