"""Two-input laws L(N, D): Chinchilla (Hoffmann et al. 2022) and Kaplan et al. 2020 eq. 1.5.

Both are fitted in log space through a log-sum-exp form, so the scale parameters stay positive
and the objective is smooth: log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a,
B = e^b, E = e^e (Hoffmann et al. 2022 eq. 3), minimised from a grid of starts by the batched
solver in `solver.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.fit.laws import CHINCHILLA, KAPLAN_ND, huber, r_squared
from scaling_db.fit.options import DEFAULT_OPTIONS, FitOptions
from scaling_db.fit.result import LawFit, require_distinct, select_rows
from scaling_db.fit.solver import MultiStartResult, check_loss, minimize_multistart

Array = np.ndarray

# Hoffmann et al. 2022 app. D.2 grid (as used by Besiroglu et al. 2024): 4,500 starts.
HOFFMANN_GRID: Mapping[str, Sequence[float]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
_THETA = ("a", "b", "e", "alpha", "beta")


def chinchilla_starts(grid: Mapping[str, Sequence[float]] = HOFFMANN_GRID,
                      tie_exponents: bool = False) -> Array:
    """Cartesian grid of starts over (a, b, e, alpha, beta) in log-space parameters."""
    names = _THETA[:4] if tie_exponents else _THETA
    return np.array(list(itertools.product(*(grid[k] for k in names))), dtype=float)


def _chinchilla_model(log_n: Array, log_d: Array, tie: bool):
    def model(theta: Array) -> tuple[Array, Array]:
        a, b, e, alpha = (theta[:, i, None] for i in range(4))
        beta = alpha if tie else theta[:, 4, None]
        t1 = a - alpha * log_n  # (S, n): log of the A/N^alpha term
        t2 = b - beta * log_d
        t3 = np.broadcast_to(e, t1.shape)
        m = np.maximum(np.maximum(t1, t2), t3)
        e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(t3 - m)
        s = e1 + e2 + e3
        mu = m + np.log(s)
        p1, p2, p3 = e1 / s, e2 / s, e3 / s  # softmax weights = d mu / d(a, b, e)
        cols = [p1, p2, p3, -p1 * log_n - p2 * log_d] if tie else \
            [p1, p2, p3, -p1 * log_n, -p2 * log_d]
        return mu, np.stack(cols, axis=1)  # (S, P, n)
    return model


def _summary(y: Array, pred: Array, res: MultiStartResult, delta: float) -> dict[str, float]:
    # the Huber sum on log loss is reported for every loss, so lsq and Huber fits compare
    return {"r2": r_squared(y, pred), "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
            "objective": res.objective,
            "huber_sum": float(np.sum(huber(np.log(pred) - np.log(y), delta)))}


def _diagnostics(res: MultiStartResult) -> dict[str, Any]:
    return {"n_starts": res.n_starts, "n_near_best": res.n_near_best,
            "batched_iterations": res.iterations, "polish_success": res.polish_success,
            "gradient_norm": res.gradient_norm}


def _warm_starts(init: Mapping[str, float] | LawFit, names: Sequence[str], to_theta) -> Array:
    # A refit near a known optimum (bootstrap, windows) needs only the optimum and a few
    # deterministic perturbations of it, not the whole grid.
    params = init.params if isinstance(init, LawFit) else init
    th = to_theta(params)
    offsets = [np.zeros(len(names))]
    for i in range(len(names)):
        for s in (-0.5, 0.5):
            o = np.zeros(len(names))
            o[i] = s * max(abs(th[i]) * 0.1, 0.05)
            offsets.append(o)
    return th + np.array(offsets)


def fit_chinchilla(
    df: pd.DataFrame,
    n: str = "n_params",
    d: str = "tokens",
    y: str = "loss",
    *,
    tie_exponents: bool = False,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit L = E + A/N^alpha + B/D^beta as Hoffmann et al. 2022 (sec. 3.3, app. D.2).

    options.loss="huber" (default): SUM over points of
    Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L) from the 4,500-point grid;
    "lsq": sum of squared errors on raw L.
    `tie_exponents` fits alpha = beta (Muennighoff et al. 2023 app. B; Gadre et al. 2024 eq. 4).
    options.starts: an (S, 5) array of (a, b, e, alpha, beta) or a grid dict; options.init: warm
    start from a previous fit (a handful of starts around it), used by bootstrap and window refits.
    """
    where = "fit_chinchilla"
    loss, delta, starts, init = options.loss_or("huber"), options.delta, options.starts, options.init
    check_loss(where, loss, delta)
    n_par = 4 if tie_exponents else 5
    sel = select_rows(df, [n, d, y], where=where, log_columns=[n, d, y],
                      min_points=n_par + 1, id_column=options.id_column)
    # one N (or one D) leaves its exponent and coefficient free: E absorbs the term
    require_distinct(sel, [n, d], 2, where=where, what="both exponents")
    names = _THETA[:n_par]

    def to_theta(p: Mapping[str, float]) -> Array:
        # A fit can land on a coefficient of exactly 0 (e.g. E when the data show no floor);
        # clip before the log so a warm start from it stays finite.
        v = {"a": np.log(max(p["A"], 1e-12)), "b": np.log(max(p["B"], 1e-12)), "e": np.log(max(p["E"], 1e-12)),
             "alpha": p["alpha"], "beta": p.get("beta", p["alpha"])}
        return np.array([v[k] for k in names])

    if init is not None:
        grid = _warm_starts(init, names, to_theta)
    elif starts is None or isinstance(starts, Mapping):
        grid = chinchilla_starts(starts or HOFFMANN_GRID, tie_exponents)
    else:
        grid = np.asarray(starts, dtype=float)[:, :n_par]
    model = _chinchilla_model(np.log(sel[n]), np.log(sel[d]), tie_exponents)
    res = minimize_multistart(model, sel[y], grid, loss=loss, delta=delta, where=where,
                              n_polish=1 if init is not None else 3)
    th = dict(zip(names, res.theta))
    params = {"E": float(np.exp(th["e"])), "A": float(np.exp(th["a"])),
              "B": float(np.exp(th["b"])), "alpha": float(th["alpha"]),
              "beta": float(th.get("beta", th["alpha"]))}
    pred = CHINCHILLA.evaluate(params, n=sel[n], d=sel[d])
    obs = sel[y]
    return LawFit(
        law=CHINCHILLA, params=params, columns={"n": n, "d": d}, y=y, n_points=len(sel),
        stats=_summary(obs, pred, res, delta),
        settings={"estimator": "batched Levenberg-Marquardt + L-BFGS-B polish", "loss": loss,
                  "delta": delta, "space": "log" if loss == "huber" else "raw",
                  "tie_exponents": tie_exponents, "warm_start": init is not None,
                  **_diagnostics(res)},
        excluded=sel.excluded, used=sel.ids,
        residuals=np.log(obs) - np.log(pred) if loss == "huber" else obs - pred,
        residual_space="log" if loss == "huber" else "raw",
    )


# Starts for Kaplan's form, spanning the published values (alpha_N = 0.076, alpha_D = 0.103,
# N_c = 6.4e13, D_c = 1.8e13; Kaplan et al. 2020 table 2) by orders of magnitude.
KAPLAN_GRID: Mapping[str, Sequence[float]] = {
    "log_N_c": tuple(np.log([1e8, 1e10, 1e12, 1e14, 1e16])),
    "log_D_c": tuple(np.log([1e8, 1e10, 1e12, 1e14, 1e16])),
    "alpha_N": (0.05, 0.1, 0.2, 0.4, 0.8),
    "alpha_D": (0.05, 0.1, 0.2, 0.4, 0.8),
}
_KAPLAN_THETA = ("log_N_c", "log_D_c", "alpha_N", "alpha_D")


def _kaplan_model(log_n: Array, log_d: Array):
    # log L = alpha_D * LSE(s (log N_c - log N), log D_c - log D), s = alpha_N / alpha_D
    def model(theta: Array) -> tuple[Array, Array]:
        lnc, ldc, an, ad = (theta[:, i, None] for i in range(4))
        ad = np.where(ad > 0, ad, np.nan)  # alpha_D <= 0 is outside the law: reject the step
        s = an / ad
        gap = lnc - log_n
        u1, u2 = s * gap, ldc - log_d
        m = np.maximum(u1, u2)
        e1, e2 = np.exp(u1 - m), np.exp(u2 - m)
        lse = m + np.log(e1 + e2)
        p1, p2 = e1 / (e1 + e2), e2 / (e1 + e2)
        jac = np.stack([p1 * an, p2 * ad, p1 * gap, lse - p1 * s * gap], axis=1)
        return ad * lse, jac
    return model


def fit_kaplan_nd(
    df: pd.DataFrame,
    n: str = "n_params",
    d: str = "tokens",
    y: str = "loss",
    *,
    options: FitOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit Kaplan et al. 2020 eq. 1.5, L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D.

    Same estimator as `fit_chinchilla`: Huber on log L (default) or least squares on raw L.
    """
    where = "fit_kaplan_nd"
    loss, delta, starts, init = options.loss_or("huber"), options.delta, options.starts, options.init
    check_loss(where, loss, delta)
    sel = select_rows(df, [n, d, y], where=where, log_columns=[n, d, y], min_points=5,
                      id_column=options.id_column)
    require_distinct(sel, [n, d], 2, where=where, what="both exponents")

    def to_theta(p: Mapping[str, float]) -> Array:
        return np.array([np.log(p["N_c"]), np.log(p["D_c"]), p["alpha_N"], p["alpha_D"]])

    if init is not None:
        grid = _warm_starts(init, _KAPLAN_THETA, to_theta)
    elif starts is None or isinstance(starts, Mapping):
        g = starts or KAPLAN_GRID
        grid = np.array(list(itertools.product(*(g[k] for k in _KAPLAN_THETA))), dtype=float)
    else:
        grid = np.asarray(starts, dtype=float)
    model = _kaplan_model(np.log(sel[n]), np.log(sel[d]))
    res = minimize_multistart(model, sel[y], grid, loss=loss, delta=delta, where=where,
                              n_polish=1 if init is not None else 3)
    lnc, ldc, an, ad = res.theta
    params = {"N_c": float(np.exp(lnc)), "D_c": float(np.exp(ldc)),
              "alpha_N": float(an), "alpha_D": float(ad)}
    pred = KAPLAN_ND.evaluate(params, n=sel[n], d=sel[d])
    obs = sel[y]
    return LawFit(
        law=KAPLAN_ND, params=params, columns={"n": n, "d": d}, y=y, n_points=len(sel),
        stats=_summary(obs, pred, res, delta),
        settings={"estimator": "batched Levenberg-Marquardt + L-BFGS-B polish", "loss": loss,
                  "delta": delta, "space": "log" if loss == "huber" else "raw",
                  "warm_start": init is not None, **_diagnostics(res)},
        excluded=sel.excluded, used=sel.ids,
        residuals=np.log(obs) - np.log(pred) if loss == "huber" else obs - pred,
        residual_space="log" if loss == "huber" else "raw",
    )
