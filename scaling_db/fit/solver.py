"""Vectorised multi-start minimisation for nonlinear laws (Chinchilla, Kaplan, saturating forms).

Hoffmann et al. 2022 (sec. 3.3, app. D.2) fit their law with L-BFGS from a grid of starting
points; Besiroglu et al. 2024 showed how much the result depends on doing that well, and a plain
scipy loop over a 4,500-point grid takes minutes. Here every start advances at once: a batched
Levenberg-Marquardt iteration on arrays of shape (starts, params, points), where the Huber loss
enters through iteratively reweighted least squares (weights psi(r)/r = min(1, delta/|r|),
Holland & Welsch 1977), which majorises the Huber objective so accepted steps never increase it.
The few best distinct end points are then polished with scipy's L-BFGS-B on the exact objective
and analytic gradient, so the reported optimum is what L-BFGS certifies.

A model is a function theta (S, P) -> (mu, J): mu (S, n) is the predicted log y and J its
Jacobian, laid out (S, P, n) so that each parameter's column is contiguous in memory. The loss is
either "huber" on log y (Hoffmann et al. eq. 3: the SUM of Huber terms) or "lsq" on raw y (sum of
squared residuals). After `screen_iter` iterations only the `keep` best starts continue
(successive halving); the diagnostics report how many ended within 1e-6 of the best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from scaling_db.errors import FitError

Array = np.ndarray
Model = Callable[[Array], tuple[Array, Array]]
LOSSES = ("huber", "lsq")


@dataclass(frozen=True)
class MultiStartResult:
    """Best parameter vector over all starts, with diagnostics of how the starts behaved."""

    theta: Array
    objective: float
    n_starts: int
    n_near_best: int  # starts whose batched end point is within 1e-6 (relative) of the best
    iterations: int
    polish_success: bool
    gradient_norm: float


def check_loss(where: str, loss: str, delta: float) -> None:
    """Validate the loss name and Huber delta, raising FitError with the fix."""
    if loss not in LOSSES:
        raise FitError(f"{where}: unknown loss ({loss!r} vs one of {', '.join(LOSSES)}). "
                       f"Use loss='huber' (log space, Hoffmann et al.) or 'lsq' (raw space).")
    if not delta > 0:
        raise FitError(f"{where}: Huber delta must be positive (got {delta!r} vs > 0). "
                       f"Hoffmann et al. used delta=1e-3.")


def _residuals(mu: Array, jac: Array, y: Array, log_y: Array, loss: str) -> tuple[Array, Array]:
    if loss == "huber":
        return mu - log_y, jac
    pred = np.exp(mu)
    return pred - y, jac * pred[:, None, :]


def _objective(r: Array, loss: str, delta: float) -> Array:
    if loss == "huber":
        a = np.abs(r)
        terms = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    else:
        terms = r * r
    with np.errstate(invalid="ignore"):
        out = terms.sum(axis=-1)
    return np.where(np.isfinite(out), out, np.inf)


def _weights(r: Array, loss: str, delta: float) -> Array:
    if loss == "huber":
        with np.errstate(divide="ignore"):
            return np.minimum(1.0, delta / np.abs(r))
    return np.ones_like(r)


def _batched_lm(
    model: Model, starts: Array, y: Array, log_y: Array, loss: str, delta: float,
    max_iter: int, tol: float, screen_iter: int, keep: int,
) -> tuple[Array, Array, int]:
    theta = starts.copy()
    with np.errstate(all="ignore"):
        mu, jac = model(theta)
        r, jr = _residuals(mu, jac, y, log_y, loss)
        obj = _objective(r, loss, delta)
    n_par = theta.shape[1]
    lam = np.full(len(theta), 1e-3)
    active = np.flatnonzero(np.isfinite(obj))
    iters = 0
    eye = np.eye(n_par)
    while active.size and iters < max_iter:
        iters += 1
        if iters == screen_iter and len(theta) > keep:
            # Successive halving: after a few iterations most starts have fallen into one of
            # a few basins; carry on only with the `keep` best (the rest stay as they are and
            # still count in the diagnostics), which cuts the cost several-fold.
            survivors = np.argsort(obj)[:keep]
            active = np.intersect1d(active, survivors)
        ra, ja = r[active], jr[active]
        w = _weights(ra, loss, delta)
        grad = np.einsum("spn,sn->sp", ja, w * ra)  # (S, P): J^T W r
        hess = np.matmul(ja * w[:, None, :], ja.transpose(0, 2, 1))  # (S, P, P): J^T W J
        diag = np.einsum("spp->sp", hess)
        damp = hess + lam[active, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        try:
            step = np.linalg.solve(damp, -grad[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular start: fall back one at a time
            step = np.stack([np.linalg.lstsq(h, -g, rcond=None)[0] for h, g in zip(damp, grad)])
        trial = theta[active] + step
        with np.errstate(all="ignore"):
            mu_t, jac_t = model(trial)
            r_t, jr_t = _residuals(mu_t, jac_t, y, log_y, loss)
            obj_t = _objective(r_t, loss, delta)
        better = obj_t < obj[active]
        idx = active[better]
        gain = obj[idx] - obj_t[better]
        theta[idx], obj[idx] = trial[better], obj_t[better]
        r[idx], jr[idx] = r_t[better], jr_t[better]
        lam[idx] /= 3.0
        lam[active[~better]] *= 4.0
        done = np.zeros(len(active), dtype=bool)
        done[better] = gain <= tol * np.maximum(obj[idx], 1e-300)
        done |= lam[active] > 1e10
        active = active[~done]
    return theta, obj, iters


def minimize_multistart(
    model: Model,
    y: Array,
    starts: Array,
    *,
    loss: str = "huber",
    delta: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-12,
    n_polish: int = 3,
    screen_iter: int = 10,
    keep: int = 500,
    where: str = "fit",
) -> MultiStartResult:
    """Minimise the summed loss from every row of `starts` at once; return the best optimum."""
    check_loss(where, loss, delta)
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    y = np.asarray(y, dtype=float)
    log_y = np.log(y)
    theta, obj, iters = _batched_lm(model, starts, y, log_y, loss, delta, max_iter, tol,
                                    screen_iter, keep)
    order = np.argsort(obj)
    if not np.isfinite(obj[order[0]]):
        raise FitError(f"{where}: no starting point gave a finite objective "
                       f"({len(starts)} starts vs at least 1 finite). Check the data scale "
                       f"and the start grid.")
    best_batched = obj[order[0]]
    near = int(np.sum(obj <= best_batched * (1 + 1e-6) + 1e-300))

    def fun(th: Array) -> tuple[float, Array]:
        with np.errstate(all="ignore"):
            mu, jac = model(th[None])
            r, jr = _residuals(mu, jac, y, log_y, loss)
            f = float(_objective(r, loss, delta)[0])
            psi = np.clip(r, -delta, delta) if loss == "huber" else 2 * r
            g = np.einsum("spn,sn->p", jr, psi)
        if not np.isfinite(f):
            return np.inf, np.zeros_like(th)
        return f, g

    picked: list[Array] = []
    for i in order:
        if not np.isfinite(obj[i]) or len(picked) >= n_polish:
            break
        if all(np.max(np.abs(theta[i] - p)) > 1e-6 for p in picked):
            picked.append(theta[i])
    best_theta, best_obj, success, gnorm = theta[order[0]], float(best_batched), False, np.nan
    for th0 in picked:
        res = minimize(fun, th0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        if np.isfinite(res.fun) and res.fun <= best_obj:
            best_theta, best_obj, success = res.x, float(res.fun), bool(res.success)
    gnorm = float(np.linalg.norm(fun(best_theta)[1]))
    if not np.all(np.isfinite(best_theta)):
        raise FitError(f"{where}: the optimiser did not converge (non-finite parameters vs "
                       f"finite). Check the data for outliers or pass other starts.")
    return MultiStartResult(
        theta=np.asarray(best_theta, dtype=float), objective=best_obj, n_starts=len(starts),
        n_near_best=near, iterations=iters, polish_success=success, gradient_norm=gnorm,
    )
