"""Hyperparameters vs scale: LR optima per width, LR transfer (muP vs SP), parameter efficiency,
and the general "optimal hyperparameter vs (N, D)" power law.

muP promises that the optimal learning rate does not move with width (Yang et al. 2022, Tensor
Programs V, sec. 3); under SP it shrinks roughly as 1/width. The test is a slope of log LR_opt on
log width with an interval. Barkeshli et al. 2026 also report muP as more parameter-efficient:
`parameter_efficiency` measures how many times more parameters SP needs to reach muP's loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps

from scaling_db.errors import FitError
from scaling_db.fit.resample import BootstrapFit, bootstrap
from scaling_db.fit.laws import multi_power_law, r_squared
from scaling_db.fit.power import fit_power_law, fit_saturating_power_law
from scaling_db.fit.result import LawFit, select_rows, table_repr

Array = np.ndarray


#: A grid step wider than this factor (half a decade, rounded up) around the best LR is flagged
#: "coarse": the parabola then rests on points far from the optimum, where loss vs log LR is
#: rarely quadratic.
COARSE_STEP = 3.2


@dataclass(frozen=True)
class LrOptimumFit:
    """The loss-minimising learning rate of one sweep, from a parabola in log LR.

    `lr_opt` is the parabola's vertex (interpolated); `grid_best` the grid value with the lowest
    mean loss. `flags` says when either should not be read alone: "edge" (the best is the grid's
    first or last value: not bracketed, `lr_opt` is then the grid best and the interval is open
    on that side), "coarse" (grid step around the best > COARSE_STEP), "differs" (vertex and grid
    best more than half a grid step apart), "no interval" (no residual degrees of freedom).
    """

    lr_opt: float
    interval: tuple[float, float]  # level CI from the delta method (nan with no residual dof)
    loss_opt: float
    curvature: float  # d2 loss / d(log lr)^2 / 2 at the optimum
    n_points: int  # points in the parabola fit (the window around the best LR)
    log_lr_se: float
    excluded: tuple[tuple[Any, str], ...] = ()
    grid_best: float = np.nan
    grid_step: float = np.nan  # largest ratio between the best LR and its grid neighbours
    flags: tuple[str, ...] = ()


def _grid_step(grid: Array, best: int) -> float:
    nbrs = [grid[i] for i in (best - 1, best + 1) if 0 <= i < len(grid)]
    return float(max(max(g / grid[best], grid[best] / g) for g in nbrs)) if nbrs else np.nan


def _edge_optimum(grid: Array, means: Array, best: int, step: float, n: int,
                  excluded: tuple) -> LrOptimumFit:
    below = best == 0
    flags = ("edge: best LR is the grid's " + ("smallest" if below else "largest")
             + "; the optimum may lie beyond it",)
    if step > COARSE_STEP:
        flags += (f"coarse: LR grid step x{step:.2g} around the best (vs <= x{COARSE_STEP:g})",)
    lo, hi = (0.0, float(grid[best])) if below else (float(grid[best]), np.inf)
    return LrOptimumFit(lr_opt=float(grid[best]), interval=(lo, hi), loss_opt=float(means[best]),
                        curvature=np.nan, n_points=n, log_lr_se=np.nan, excluded=excluded,
                        grid_best=float(grid[best]), grid_step=step, flags=flags)


def fit_lr_optimum(
    df: pd.DataFrame, lr: str = "lr", y: str = "loss", *, n_around: int = 2,
    level: float = 0.95, id_column: str = "run_id", allow_edge: bool = False,
) -> LrOptimumFit:
    """Best LR of one sweep: fit loss = c0 + c1 u + c2 u^2, u = log lr, on the `n_around` grid
    values either side of the best one (all seeds), and take u* = -c1 / (2 c2).

    The interval is u* +- t se(u*) with se from the delta method on the OLS covariance. An
    optimum on the edge of the grid is not bracketed: FitError, or with `allow_edge` the grid
    best flagged "edge" with a one-sided interval.
    """
    where = "fit_lr_optimum"
    sel = select_rows(df, [lr, y], where=where, log_columns=[lr], min_points=3,
                      id_column=id_column)
    grid = np.unique(sel[lr])
    means = np.array([sel[y][sel[lr] == g].mean() for g in grid])
    best = int(np.argmin(means))
    step = _grid_step(grid, best)
    if best in (0, len(grid) - 1):
        if allow_edge:
            return _edge_optimum(grid, means, best, step, len(sel), sel.excluded)
        raise FitError(f"{where}: the best LR is at the edge of the grid ({grid[best]:.3g} vs "
                       f"inside [{grid[0]:.3g}, {grid[-1]:.3g}]). Extend the LR sweep past it.")
    window = grid[max(best - n_around, 0): best + n_around + 1]
    m = np.isin(sel[lr], window)
    u, loss = np.log(sel[lr][m]), sel[y][m]
    if len(window) < 3:
        raise FitError(f"{where}: too few LR values around the best ({len(window)} vs at least "
                       f"3). Sweep more learning rates.")
    res = sm.OLS(loss, np.c_[np.ones_like(u), u, u * u]).fit()
    c0, c1, c2 = res.params
    if c2 <= 0:
        raise FitError(f"{where}: loss vs log LR is not convex near the best LR (curvature "
                       f"{c2:.3g} vs > 0). Use a finer LR grid or more seeds.")
    v = -c1 / (2 * c2)
    grad = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2 ** 2)])
    se = float(np.sqrt(grad @ np.asarray(res.cov_params()) @ grad)) if res.df_resid > 0 \
        else np.nan
    t = sps.t.ppf((1 + level) / 2, res.df_resid) if res.df_resid > 0 else np.nan
    dropped = tuple((i, f"{lr} outside the {len(window)} grid values around the best")
                    for i, keep in zip(sel.ids, m) if not keep)
    flags: tuple[str, ...] = ()
    if step > COARSE_STEP:
        flags += (f"coarse: LR grid step x{step:.2g} around the best (vs <= x{COARSE_STEP:g})",)
    if abs(v - np.log(grid[best])) > 0.5 * np.log(step):
        flags += (f"differs: parabola optimum {np.exp(v):.3g} vs grid best {grid[best]:.3g}",)
    if not np.isfinite(se):
        flags += ("no interval: no residual degrees of freedom (add seeds or LR values)",)
    return LrOptimumFit(
        lr_opt=float(np.exp(v)), interval=(float(np.exp(v - t * se)), float(np.exp(v + t * se))),
        loss_opt=float(c0 + c1 * v + c2 * v * v), curvature=float(c2), n_points=int(m.sum()),
        log_lr_se=se, excluded=sel.excluded + dropped, grid_best=float(grid[best]),
        grid_step=step, flags=flags,
    )


def fit_lr_optima(
    df: pd.DataFrame, by: Sequence[str] = ("parameterization", "d_model"), lr: str = "lr",
    y: str = "loss", *, n_around: int = 2, level: float = 0.95, id_column: str = "run_id",
) -> pd.DataFrame:
    """`fit_lr_optimum` per combination of the `by` columns, one row each, edges flagged.

    Columns: the `by` columns, lr_opt (parabola), lr_lo, lr_hi, lr_grid_best, loss_opt,
    n_points, flag (the fit's flags "; "-joined, empty when none); a group that cannot be fitted at all keeps a
    row with NaNs and the reason in `flags`.
    """
    by = list(by)
    missing = [c for c in (*by, lr, y) if c not in df.columns]
    if missing:
        raise FitError(f"fit_lr_optima: columns not in the data ({', '.join(missing)} vs "
                       f"{', '.join(map(str, df.columns))}). Pass by=/lr=/y= existing columns.")
    rows = []
    for key, g in df.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        try:
            o = fit_lr_optimum(g, lr, y, n_around=n_around, level=level, id_column=id_column,
                               allow_edge=True)
        except FitError as err:
            rows.append({**row, "lr_opt": np.nan, "lr_lo": np.nan, "lr_hi": np.nan,
                         "lr_grid_best": np.nan, "loss_opt": np.nan, "n_points": len(g),
                         "flag": str(err)})
            continue
        rows.append({**row, "lr_opt": o.lr_opt, "lr_lo": o.interval[0], "lr_hi": o.interval[1],
                     "lr_grid_best": o.grid_best, "loss_opt": o.loss_opt,
                     "n_points": o.n_points, "flag": "; ".join(o.flags)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class LrTransferFit:
    """LR optimum per width and its slope vs width, for each parameterization."""

    optima: pd.DataFrame  # parameterization, width, lr_opt, lr_lo, lr_hi, loss_opt, n_points
    slopes: pd.DataFrame  # parameterization, slope, slope_lo, slope_hi, intercept, n_widths
    excluded: tuple[tuple[Any, str], ...] = ()  # ((parameterization, width), reason)
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        title = (f"LrTransferFit: slope of log lr* on log width ({len(self.optima)} optima, "
                 f"{len(self.excluded)} excluded)")
        return table_repr(title, self.slopes)


def fit_lr_transfer(
    df: pd.DataFrame, width: str = "width", lr: str = "lr", y: str = "loss", *,
    parameterization: str = "parameterization", n_around: int = 2, level: float = 0.95,
) -> LrTransferFit:
    """Per parameterization: best LR per width (`fit_lr_optimum`), then log lr_opt vs log width.

    The slope is a weighted least-squares fit with weights 1/se(log lr_opt)^2 when every width
    has a finite standard error, else ordinary least squares; near zero is what muP promises.
    """
    where = "fit_lr_transfer"
    for col in (width, parameterization):
        if col not in df.columns:
            raise FitError(f"{where}: column not in the data ({col!r} vs "
                           f"{', '.join(map(str, df.columns))}). Pass {col}= the right column.")
    rows, slopes, excluded = [], [], []
    for (param, w), g in df.groupby([parameterization, width], sort=True):
        try:
            o = fit_lr_optimum(g, lr, y, n_around=n_around, level=level)
        except FitError as err:
            excluded.append(((param, w), str(err)))
            continue
        rows.append({"parameterization": param, "width": w, "lr_opt": o.lr_opt,
                     "lr_lo": o.interval[0], "lr_hi": o.interval[1], "loss_opt": o.loss_opt,
                     "log_lr_se": o.log_lr_se, "n_points": o.n_points,
                     "lr_grid_best": o.grid_best, "flag": "; ".join(o.flags)})
    optima = pd.DataFrame(rows)
    for param, g in (optima.groupby("parameterization", sort=True) if len(optima) else []):
        if len(g) < 3:
            excluded.append(((param, None), f"{len(g)} widths with an LR optimum (vs at least 3) "
                                            f"for a slope"))
            continue
        x = sm.add_constant(np.log(g["width"].to_numpy(float)))
        ly = np.log(g["lr_opt"].to_numpy(float))
        se = g["log_lr_se"].to_numpy(float)
        weighted = bool(np.all(np.isfinite(se) & (se > 0)))
        res = (sm.WLS(ly, x, weights=1 / se ** 2) if weighted else sm.OLS(ly, x)).fit()
        ci = np.asarray(res.conf_int(alpha=1 - level))
        slopes.append({"parameterization": param, "slope": float(res.params[1]),
                       "slope_lo": float(ci[1, 0]), "slope_hi": float(ci[1, 1]),
                       "intercept": float(res.params[0]), "n_widths": len(g),
                       "estimator": "WLS 1/se^2" if weighted else "OLS"})
    return LrTransferFit(optima=optima, slopes=pd.DataFrame(slopes), excluded=tuple(excluded),
                         settings={"n_around": n_around, "level": level})


@dataclass(frozen=True)
class ParameterEfficiencyFit:
    """How many times more parameters `other` needs to reach `reference`'s loss at target_n."""

    ratio: float
    interval: tuple[float, float]  # bootstrap percentile interval over runs
    target_n: float
    reference: str
    other: str
    fits: dict[str, LawFit]  # loss vs parameters, per parameterization
    bootstrap: BootstrapFit | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"ratio": self.ratio}

    def __repr__(self) -> str:
        lo, hi = self.interval
        text = (f"ParameterEfficiencyFit: {self.other} needs {self.ratio:.3g}x "
                f"[{lo:.3g}, {hi:.3g}] the parameters of {self.reference} "
                f"to reach its loss at N = {self.target_n:.3g}")
        return text + (f"\n  {self.bootstrap.note()}" if self.bootstrap is not None else "")


def _inverse_n(fit: LawFit, loss: float) -> float:
    # Parameters at which the fitted law reaches `loss`: N = (A / (L - E))^(1/alpha).
    p = fit.params
    gap = loss - p.get("E", 0.0)
    return float((p["A"] / gap) ** (1 / p["alpha"])) if gap > 0 else np.inf


def _efficiency(df, parameterization, reference, other, n, y, target_n, saturating):
    fit = fit_saturating_power_law if saturating else fit_power_law
    fits = {}
    for name in (reference, other):
        sub = df[df[parameterization] == name]
        if sub.empty:
            raise FitError(f"parameter_efficiency: no rows for {name!r} (vs values "
                           f"{', '.join(map(str, df[parameterization].unique()))}). Check "
                           f"reference=/other=.")
        sizes = sub[n].nunique()
        if sizes < 2:  # a resample that drew one size only: no slope to fit (singular design)
            raise FitError(f"parameter_efficiency: {name!r} has {sizes} distinct {n} (vs at "
                           f"least 2) in this sample. Add sizes.")
        fits[name] = fit(sub, x=n, y=y)
    ref_n = df.loc[df[parameterization] == reference, n].to_numpy(float)
    tn = float(np.exp(np.mean(np.log(ref_n)))) if target_n is None else float(target_n)
    loss_ref = float(fits[reference].predict({n: [tn]})[0])
    ratio = _inverse_n(fits[other], loss_ref) / tn
    return ParameterEfficiencyFit(ratio=ratio, interval=(np.nan, np.nan), target_n=tn,
                                  reference=reference, other=other, fits=fits)


def parameter_efficiency(
    df: pd.DataFrame, parameterization: str = "parameterization", *, reference: str = "mup",
    other: str = "sp", n: str = "n_params", y: str = "loss", group: str = "run_id",
    target_n: float | None = None, saturating: bool = False, best_per_size: bool = True,
    n_boot: int = 1000, seed: int = 0, n_jobs: int = 2, level: float = 0.95,
) -> ParameterEfficiencyFit:
    """Fit loss vs parameters per parameterization; ratio = N_other(L_ref(target_n)) / target_n.

    target_n defaults to the geometric mean of the reference's sizes (inside both fits' data).
    With `best_per_size` each (parameterization, size) keeps its lowest-loss run (the best LR).
    The interval resamples runs within each parameterization (stratified bootstrap).
    """
    for col in (parameterization, n, y, group):
        if col not in df.columns:
            raise FitError(f"parameter_efficiency: column not in the data ({col!r} vs "
                           f"{', '.join(map(str, df.columns))}). Pass the right column name.")
    data = df
    if best_per_size:
        data = df.loc[df.groupby([parameterization, n])[y].idxmin()]
    data = data[data[parameterization].isin([reference, other])]
    fn = lambda t: _efficiency(t, parameterization, reference, other, n, y, target_n,
                               saturating)
    boot = bootstrap(fn, data, group=group, n=n_boot, seed=seed, n_jobs=n_jobs, level=level,
                     strata=parameterization, warm_start=False)
    est = boot.fit
    return ParameterEfficiencyFit(
        ratio=est.ratio, interval=boot.intervals["ratio"], target_n=est.target_n,
        reference=reference, other=other, fits=est.fits, bootstrap=boot,
    )


def fit_optimal_hparam_law(
    df: pd.DataFrame, hparam: str = "lr", y: str = "loss",
    scales: Sequence[str] = ("n_params", "tokens"), *, cell: Sequence[str] | None = None,
    tolerance: float = 0.0025, level: float = 0.95, id_column: str = "run_id",
) -> LawFit:
    """Fit log h_opt = log c + sum_i a_i log x_i over near-optimal runs of each cell.

    As Li et al. 2025 (Step Law, code/fit_tool.py `query_optimal_lr_bs_data`): in every cell
    (default: each distinct combination of `scales`) keep the runs within `tolerance` (relative)
    of the cell's best loss, then regress log hparam on log scales by OLS over all kept runs
    (tolerance=0 keeps only each cell's best run). Other runs are listed in `excluded`.
    """
    where = "fit_optimal_hparam_law"
    scales = list(scales)
    cell = list(cell or scales)
    sel = select_rows(df, [hparam, y, *scales], where=where, log_columns=[hparam, *scales],
                      min_points=len(scales) + 2, id_column=id_column)
    missing = [c for c in cell if c not in df.columns]
    if missing:
        raise FitError(f"{where}: cell columns not in the data ({', '.join(missing)} vs "
                       f"{', '.join(map(str, df.columns))}). Pass cell= existing columns.")
    frame = df.iloc[sel.positions][list(dict.fromkeys([*cell, *scales, hparam, y]))].copy()
    frame["_id"] = list(sel.ids)
    best = frame.groupby(cell)[y].transform("min")
    near = (frame[y] / best - 1).abs() <= tolerance
    kept = frame[near]
    if len(kept) < len(scales) + 2:
        raise FitError(f"{where}: too few near-optimal runs ({len(kept)} vs at least "
                       f"{len(scales) + 2}). Raise tolerance= or add cells.")
    x = sm.add_constant(np.log(kept[scales].to_numpy(float)), has_constant="add")
    rank = int(np.linalg.matrix_rank(x))
    if rank < x.shape[1]:  # a scale that does not vary, or scales that move together (D = 20 N)
        distinct = ", ".join(f"{kept[s].nunique()} distinct {s}" for s in scales)
        raise FitError(f"{where}: the near-optimal runs do not separate the scales' exponents "
                       f"(design rank {rank} vs {x.shape[1]}; {distinct}). Add runs that vary each "
                       f"of {', '.join(scales)} independently, or pass fewer scales=.")
    ly = np.log(kept[hparam].to_numpy(float))
    res = sm.OLS(ly, x).fit()
    ci = np.asarray(res.conf_int(alpha=1 - level))
    law = multi_power_law(scales)
    params = {"c": float(np.exp(res.params[0])),
              **{f"a_{s}": float(res.params[i + 1]) for i, s in enumerate(scales)}}
    intervals = {"c": (float(np.exp(ci[0, 0])), float(np.exp(ci[0, 1]))),
                 **{f"a_{s}": (float(ci[i + 1, 0]), float(ci[i + 1, 1]))
                    for i, s in enumerate(scales)}}
    pred = law.evaluate(params, **{s: kept[s].to_numpy(float) for s in scales})
    obs = kept[hparam].to_numpy(float)
    dropped = tuple((i, f"{y} more than {tolerance:g} (relative) above its cell's best")
                    for i in frame.loc[~near, "_id"])
    return LawFit(
        law=law, params=params, columns={s: s for s in scales}, y=hparam,
        n_points=len(kept),
        stats={"r2": r_squared(obs, pred), "r2_log": float(res.rsquared),
               "rmse": float(np.sqrt(np.mean((obs - pred) ** 2))), "objective": float(res.ssr)},
        settings={"estimator": "statsmodels OLS on log values", "selection": "near-optimal",
                  "tolerance": tolerance, "cell": cell, "loss_column": y, "level": level,
                  "n_cells": int(frame.groupby(cell).ngroups)},
        excluded=sel.excluded + dropped, used=tuple(kept["_id"]), intervals=intervals,
        residuals=ly - np.log(pred), residual_space="log",
    )
