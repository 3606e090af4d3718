"""One-input laws: y = A x^-alpha, y = E + A x^-alpha and their exponential counterparts.

x can be any scale column (parameters with or without embeddings, tokens, FLOPs in any stored
convention); the choice is the caller's and is recorded in the fit's `columns`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.special import ndtri, stdtrit

from scaling_db.errors import FitError
from scaling_db.fit.laws import (EXPONENTIAL, POWER_LAW, SATURATING_EXPONENTIAL,
                                 SATURATING_POWER_LAW, Law, huber, r_squared)
from scaling_db.fit.options import DEFAULT_OPTIONS, FitOptions
from scaling_db.fit.result import LawFit, Selection, require_distinct, select_rows
from scaling_db.fit.solver import check_loss, minimize_multistart

Array = np.ndarray
METHODS = ("ols", "wls", "robust")


def _log_linear(
    where: str, sel: Selection, design: Array, log_y: Array, method: str, weights: str | None,
    level: float,
) -> tuple[Any, dict[str, Any]]:
    if method not in METHODS:
        raise FitError(f"{where}: unknown method ({method!r} vs one of {', '.join(METHODS)}). "
                       f"Use 'ols', 'wls' (with weights=COLUMN) or 'robust'.")
    if method == "wls":
        if weights is None:
            raise FitError(f"{where}: method='wls' needs weights (got none vs a column name). "
                           f"Pass weights='COLUMN', e.g. inverse variance or seed count.")
        res = sm.WLS(log_y, design, weights=sel[weights]).fit()
        settings = {"estimator": "statsmodels WLS", "weights": weights}
    elif method == "robust":
        # Huber's T norm with statsmodels' default tuning (1.345 MAD-scaled), IRLS.
        res = sm.RLM(log_y, design, M=sm.robust.norms.HuberT()).fit()
        settings = {"estimator": "statsmodels RLM", "norm": "HuberT(t=1.345)"}
    else:
        res = sm.OLS(log_y, design).fit()
        settings = {"estimator": "statsmodels OLS"}
    settings.update(method=method, space="log", level=level)
    return res, settings


def conf_int(res: Any, level: float) -> Array:
    """(k, 2) confidence intervals of a statsmodels fit: t quantiles if it uses t, else normal.

    Same numbers as `res.conf_int`, without its per-call scipy.stats overhead (bootstrap loops).
    """
    p = (1 + level) / 2
    q = stdtrit(res.df_resid, p) if getattr(res, "use_t", False) else ndtri(p)
    params, bse = np.asarray(res.params), np.asarray(res.bse)
    return np.c_[params - q * bse, params + q * bse]


def fit_power_law(
    df: pd.DataFrame,
    x: str = "n_params",
    y: str = "loss",
    *,
    method: str = "ols",
    weights: str | None = None,
    level: float = 0.95,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit y = A x^-alpha by linear regression of log y on log x (Kaplan et al. 2020 eq. 1.1).

    method: "ols", "wls" (needs `weights`, a column) or "robust" (Huber M-estimator, RLM).
    `intervals` holds the regression's `level` confidence intervals for A and alpha.
    """
    where = "fit_power_law"
    cols = [x, y] + ([weights] if weights else [])
    sel = select_rows(df, cols, where=where, log_columns=[x, y], min_points=3,
                      id_column=options.id_column)
    require_distinct(sel, [x], 2, where=where, what="a slope")
    lx, ly = np.log(sel[x]), np.log(sel[y])
    res, settings = _log_linear(where, sel, sm.add_constant(lx, has_constant="add"), ly,
                                method, weights, level)
    c0, c1 = res.params
    ci = conf_int(res, level)
    params = {"A": float(np.exp(c0)), "alpha": float(-c1)}
    pred = POWER_LAW.evaluate(params, x=sel[x])
    resid = ly - np.log(pred)
    return LawFit(
        law=POWER_LAW, params=params, columns={"x": x}, y=y, n_points=len(sel),
        stats={"r2": r_squared(sel[y], pred), "r2_log": r_squared(ly, np.log(pred)),
               "rmse": float(np.sqrt(np.mean((sel[y] - pred) ** 2))),
               "objective": float(np.sum(resid ** 2))},
        settings=settings, excluded=sel.excluded, used=sel.ids,
        intervals={"A": (float(np.exp(ci[0, 0])), float(np.exp(ci[0, 1]))),
                   "alpha": (float(-ci[1, 1]), float(-ci[1, 0]))},
        residuals=resid, residual_space="log",
    )


def fit_exponential(
    df: pd.DataFrame,
    x: str = "n_params",
    y: str = "loss",
    *,
    method: str = "ols",
    weights: str | None = None,
    level: float = 0.95,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit y = A exp(-k x) by regressing log y on x; the alternative to a power law."""
    where = "fit_exponential"
    cols = [x, y] + ([weights] if weights else [])
    sel = select_rows(df, cols, where=where, log_columns=[y], min_points=3,
                      id_column=options.id_column)
    require_distinct(sel, [x], 2, where=where, what="a rate")
    scale = float(np.max(np.abs(sel[x])))  # k x spans orders of magnitude; keep the design O(1)
    ly = np.log(sel[y])
    res, settings = _log_linear(where, sel, sm.add_constant(sel[x] / scale, has_constant="add"),
                                ly, method, weights, level)
    c0, c1 = res.params
    ci = conf_int(res, level)
    params = {"A": float(np.exp(c0)), "k": float(-c1 / scale)}
    pred = EXPONENTIAL.evaluate(params, x=sel[x])
    resid = ly - np.log(pred)
    return LawFit(
        law=EXPONENTIAL, params=params, columns={"x": x}, y=y, n_points=len(sel),
        stats={"r2": r_squared(sel[y], pred), "r2_log": r_squared(ly, np.log(pred)),
               "rmse": float(np.sqrt(np.mean((sel[y] - pred) ** 2))),
               "objective": float(np.sum(resid ** 2))},
        settings=settings, excluded=sel.excluded, used=sel.ids,
        intervals={"A": (float(np.exp(ci[0, 0])), float(np.exp(ci[0, 1]))),
                   "k": (float(-ci[1, 1] / scale), float(-ci[1, 0] / scale))},
        residuals=resid, residual_space="log",
    )


def _saturating_model(feature: Array):
    # log y = LSE(a - rate * feature, e): feature = log x (power law) or x / scale (exponential)
    def model(theta: Array) -> tuple[Array, Array]:
        a, e, rate = (theta[:, i, None] for i in range(3))
        t1 = a - rate * feature
        m = np.maximum(t1, e)
        e1, e2 = np.exp(t1 - m), np.exp(e - m)
        s = e1 + e2
        p1, p2 = e1 / s, e2 / s
        return m + np.log(s), np.stack([p1, p2, -p1 * feature], axis=1)  # J: (S, P, n)
    return model


def _saturating_starts(feature: Array, y: Array, rates: Array) -> Array:
    # Data-driven grid: E a fraction of min(y) (E >= 0 is built in, E = e^e), the rate from
    # `rates`, and A set so the curve passes through the median point.
    fracs = np.array([1e-3, 0.25, 0.5, 0.75, 0.9, 0.97])
    f_mid, y_mid, y_min = np.median(feature), np.median(y), np.min(y)
    rows = []
    for frac in fracs:
        e0 = np.log(frac * y_min)
        for rate in rates:
            a0 = np.log(max(y_mid - frac * y_min, 1e-3 * y_mid)) + rate * f_mid
            rows.append((a0, e0, rate))
    return np.array(rows)


def _fit_saturating(
    where: str, law: Law, df: pd.DataFrame, x: str, y: str, options: FitOptions,
    exponential: bool,
) -> LawFit:
    loss, delta, starts, init = options.loss_or("lsq"), options.delta, options.starts, options.init
    check_loss(where, loss, delta)
    sel = select_rows(df, [x, y], where=where, log_columns=[y] if exponential else [x, y],
                      min_points=4, id_column=options.id_column)
    require_distinct(sel, [x], 3, where=where, what=f"{law.name}'s 3 parameters")
    scale = float(np.max(np.abs(sel[x]))) if exponential else 1.0
    feature = sel[x] / scale if exponential else np.log(sel[x])
    rates = np.array([0.3, 1, 3, 10, 30]) if exponential else \
        np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    if init is not None:  # warm start (bootstrap, windows): the previous optimum and neighbours
        p = init.params if isinstance(init, LawFit) else init
        th = np.array([np.log(p["A"]), np.log(max(p["E"], 1e-12)),
                       (p["k"] if exponential else p["alpha"]) * scale])
        grid = th + np.array([[0, 0, 0], [0, -0.1, 0], [0, 0.1, 0], [0, 0, -0.05 * th[2]],
                              [0, 0, 0.05 * th[2]]])
    elif starts is None:
        grid = _saturating_starts(feature, sel[y], rates)
    else:
        grid = np.asarray(starts, dtype=float)
    res = minimize_multistart(_saturating_model(feature), sel[y], grid, loss=loss, delta=delta,
                              where=where, n_polish=1 if init is not None else 3)
    a, e, rate = res.theta
    rate_name = "k" if exponential else "alpha"
    params = {"E": float(np.exp(e)), "A": float(np.exp(a)), rate_name: float(rate / scale)}
    pred = law.evaluate(params, x=sel[x])
    obs = sel[y]
    return LawFit(
        law=law, params=params, columns={"x": x}, y=y, n_points=len(sel),
        stats={"r2": r_squared(obs, pred), "rmse": float(np.sqrt(np.mean((obs - pred) ** 2))),
               "objective": res.objective,
               "huber_sum": float(np.sum(huber(np.log(pred) - np.log(obs), delta)))},
        settings={"estimator": "batched Levenberg-Marquardt + L-BFGS-B polish", "loss": loss,
                  "delta": delta, "space": "log" if loss == "huber" else "raw",
                  "warm_start": init is not None,
                  "n_starts": res.n_starts, "n_near_best": res.n_near_best,
                  "polish_success": res.polish_success, "gradient_norm": res.gradient_norm},
        excluded=sel.excluded, used=sel.ids,
        residuals=np.log(obs) - np.log(pred) if loss == "huber" else obs - pred,
        residual_space="log" if loss == "huber" else "raw",
    )


def fit_saturating_power_law(
    df: pd.DataFrame,
    x: str = "n_params",
    y: str = "loss",
    *,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit y = E + A x^-alpha with E >= 0 by multi-start nonlinear least squares.

    Parametrised as log y = LSE(log A - alpha log x, log E) (Hoffmann et al. 2022 eq. 3 with
    one input), so E stays non-negative. options.loss="lsq": squared error on raw y (default);
    "huber": Huber(delta) on log y. options.starts: (S, 3) rows of (log A, log E, alpha);
    options.init: warm start from a previous fit (bootstrap and window refits).
    """
    return _fit_saturating("fit_saturating_power_law", SATURATING_POWER_LAW, df, x, y, options,
                           exponential=False)


def fit_saturating_exponential(
    df: pd.DataFrame,
    x: str = "n_params",
    y: str = "loss",
    *,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit y = E + A exp(-k x) with E >= 0, the saturating alternative to a power law."""
    return _fit_saturating("fit_saturating_exponential", SATURATING_EXPONENTIAL, df, x, y,
                           options, exponential=True)

