"""Which functional form? Candidate one-input laws side by side: held-out error and AIC/BIC.

Every candidate is scored on the same thing, the raw-y residuals, so the columns are comparable
across forms even though the estimators differ (log-space OLS for the pure forms, nonlinear
least squares for the saturating ones). AIC/BIC use the Gaussian likelihood of those residuals
with k = law parameters + 1 (the noise variance) (Akaike 1974; Schwarz 1978; Burnham & Anderson
2002 eq. 2.13). Held-out error resamples whole groups (runs), never single checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scaling_db.errors import FitError
from scaling_db.fit.options import FitOptions
from scaling_db.fit.registry import ONE_INPUT_FITTERS

CV_SCHEMES = ("kfold", "loro", "extrapolate")


def _folds(df: pd.DataFrame, x: str, group: str, cv: str, k: int, seed: int,
           holdout: float) -> list[np.ndarray]:
    keys = df[group].to_numpy() if group in df.columns else np.arange(len(df))
    if cv == "extrapolate":
        # hold out the largest `holdout` fraction of distinct scales: the use scaling laws are for
        levels = np.sort(df[x].unique())
        if len(levels) < 2:
            raise FitError(f"compare_laws: cv='extrapolate' holds out the largest {x} (got "
                           f"{len(levels)} distinct {x} vs at least 2). Use cv='kfold' or add sizes.")
        cut = levels[max(1, int(np.floor(len(levels) * (1 - holdout))))]
        return [np.flatnonzero(df[x].to_numpy() >= cut)]
    uniq = pd.unique(keys)
    if cv == "loro":
        return [np.flatnonzero(keys == u) for u in uniq]
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(uniq)), min(k, len(uniq)))
    return [np.flatnonzero(np.isin(keys, uniq[p])) for p in parts]


def _raw_residuals(fit, df: pd.DataFrame, x: str, y: str) -> np.ndarray:
    # the rows a fit could use: finite x and positive y, with a finite prediction
    obs = pd.to_numeric(df[y], errors="coerce").to_numpy(float)
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(float)
    with np.errstate(all="ignore"):
        pred = fit.predict({x: xs})
    ok = np.isfinite(obs) & (obs > 0) & np.isfinite(pred)
    return obs[ok] - pred[ok]


def compare_laws(
    df: pd.DataFrame,
    x: str = "n_params",
    y: str = "loss",
    laws: Sequence[str] = ("power_law", "saturating_power_law", "exponential",
                           "saturating_exponential"),
    *,
    cv: str = "kfold",
    k: int = 5,
    group: str = "run_id",
    seed: int = 0,
    holdout: float = 0.2,
) -> pd.DataFrame:
    """Fit each law in `laws` to y vs x; report in-sample fit, AIC, BIC and held-out error.

    cv: "kfold" (k folds of groups), "loro" (leave one run out) or "extrapolate" (train on the
    smaller scales, test on the largest `holdout` fraction). Sorted by held-out RMSE; a law that
    cannot be fitted gets a row with the error in `note`.
    """
    where = "compare_laws"
    if cv not in CV_SCHEMES:
        raise FitError(f"{where}: unknown cv ({cv!r} vs one of {', '.join(CV_SCHEMES)}). "
                       f"Use 'kfold', 'loro' or 'extrapolate'.")
    unknown = [law for law in laws if law not in ONE_INPUT_FITTERS]
    if unknown:
        raise FitError(f"{where}: unknown law(s) ({', '.join(unknown)} vs "
                       f"{', '.join(ONE_INPUT_FITTERS)}). Pick one-input laws from that list.")
    df = df.reset_index(drop=True)
    folds = _folds(df, x, group, cv, k, seed, holdout)
    rows = [_law_row(name, df, folds, x, y, group, cv) for name in laws]
    out = pd.DataFrame(rows)
    if "cv_rmse" in out:
        out = out.sort_values("cv_rmse", na_position="last").reset_index(drop=True)
    return out


def _law_row(name: str, df: pd.DataFrame, folds: list[np.ndarray], x: str, y: str, group: str,
             cv: str) -> dict[str, Any]:
    """One law's row of `compare_laws`: in-sample fit, AIC/BIC, held-out errors over `folds`."""
    fit_fn = ONE_INPUT_FITTERS[name].bind([x], y, FitOptions(id_column=group))
    try:
        fit = fit_fn(df)
    except FitError as err:
        return {"law": name, "note": str(err)}
    resid = _raw_residuals(fit, df, x, y)
    rss = float(np.sum(resid ** 2))
    n, n_par = len(resid), len(fit.params) + 1
    loglik_term = n * np.log(rss / n)
    errors, failed = [], 0
    for test in folds:
        try:
            held = fit_fn(df.drop(index=test))
        except FitError:
            failed += 1
            continue
        errors.append(_raw_residuals(held, df.iloc[test], x, y))
    err = np.concatenate(errors) if errors else np.array([np.nan])
    return {
        "law": name, "n_params": len(fit.params), "n_points": n, "rss": rss,
        "r2": fit.stats["r2"], "aic": loglik_term + 2 * n_par,
        "bic": loglik_term + n_par * np.log(n),
        "cv_rmse": float(np.sqrt(np.mean(err ** 2))), "cv_mae": float(np.mean(np.abs(err))),
        "cv": cv, "cv_folds": len(folds), "cv_folds_failed": failed,
        "params": dict(fit.params), "note": "",
    }
