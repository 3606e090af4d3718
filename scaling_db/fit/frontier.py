"""Compute-optimal frontiers N_opt(C) ∝ C^a and D_opt(C) ∝ C^b, four ways, side by side.

Hoffmann et al. 2022 sec. 3 give three approaches (1: lower envelope of all training curves,
2: IsoFLOP parabolas, 3: the parametric fit; a = 0.50, 0.49, 0.46); Barkeshli et al. 2026 add a
fourth: fit a smooth surface log L(log N, log D) to all runs and checkpoints and minimise it along
iso-compute lines. The approaches disagree in practice (Porian et al. 2024; Li et al. 2025), so
`compare_frontiers` reports all of them with bootstrap intervals over runs.

Input rows are checkpoints (or final rows) with a run id, N, D, C and loss; C is whatever FLOP
convention the caller stored, and is only used as the frontier's x axis (the parametric approach
needs C = k N D, k = 6 by default, Kaplan et al. 2020 sec. 2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import RBFInterpolator
from scipy.optimize import minimize_scalar

from scaling_db.errors import FitError
from scaling_db.fit.resample import bootstrap
from scaling_db.fit.chinchilla import fit_chinchilla
from scaling_db.fit.options import FitOptions
from scaling_db.fit.power import fit_power_law
from scaling_db.fit.result import LawFit, jsonable, require_distinct, select_rows

Array = np.ndarray
METHODS = ("envelope", "isoflop", "parametric", "surface")


@dataclass(frozen=True)
class FrontierFit:
    """A compute-optimal frontier: optima per compute level and power laws through them."""

    method: str
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b
    optima: pd.DataFrame  # flops, n_opt, d_opt, loss_opt: the points the power laws go through
    n_opt_fit: LawFit | None = None  # power law of n_opt vs flops (its alpha is -a)
    d_opt_fit: LawFit | None = None
    excluded: tuple[tuple[Any, str], ...] = ()  # compute levels / budgets left out, with why
    settings: dict[str, Any] = field(default_factory=dict)
    coefficients: tuple[float, float] = (np.nan, np.nan)  # G_N, G_D: N_opt = G_N C^a ...

    @property
    def params(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b}

    def to_record(self) -> dict[str, Any]:
        """A plain JSON-able dict: method, exponents, coefficients, optima, exclusions."""
        return jsonable({
            "law": f"frontier_{self.method}", "params": self.params,
            "coefficients": {"G_N": self.coefficients[0], "G_D": self.coefficients[1]},
            "n_points": len(self.optima), "optima": self.optima.to_dict(orient="list"),
            "excluded": [[i, r] for i, r in self.excluded], "settings": self.settings,
        })

    def n_opt(self, flops: Array) -> Array:
        """N_opt at compute `flops` from the fitted power law."""
        return self.coefficients[0] * np.asarray(flops, dtype=float) ** self.a

    def d_opt(self, flops: Array) -> Array:
        """D_opt at compute `flops` from the fitted power law."""
        return self.coefficients[1] * np.asarray(flops, dtype=float) ** self.b


def _power_laws(method: str, optima: pd.DataFrame, excluded, settings) -> FrontierFit:
    if len(optima) < 3:
        raise FitError(
            f"frontier_{method}: too few compute-optimal points ({len(optima)} vs at least 3); "
            f"{len(excluded)} compute levels excluded"
            + (f", first: {excluded[0][1]}" if excluded else "")
            + ". Add budgets or runs spanning more compute."
        )
    by_flops = FitOptions(id_column="flops")
    nf = fit_power_law(optima, x="flops", y="n_opt", options=by_flops)
    df_ = fit_power_law(optima, x="flops", y="d_opt", options=by_flops)
    return FrontierFit(
        method=method, a=-nf.params["alpha"], b=-df_.params["alpha"], optima=optima,
        n_opt_fit=nf, d_opt_fit=df_, excluded=tuple(excluded), settings=settings,
        coefficients=(nf.params["A"], df_.params["A"]),
    )


def frontier_envelope(
    df: pd.DataFrame, *, n: str = "n_params", d: str = "tokens", c: str = "flops",
    y: str = "loss", run: str = "run_id", n_grid: int = 40,
) -> FrontierFit:
    """Approach 1 (Hoffmann et al. 2022 sec. 3.1): lower envelope of all training curves.

    Each run's curve is interpolated linearly in (log C, log L); at each of `n_grid` log-spaced
    compute levels the run with the lowest loss gives (N_opt, D_opt). Levels covered by fewer
    than two runs are excluded (no competition there).
    """
    where = "frontier_envelope"
    if run not in df.columns:
        raise FitError(f"{where}: run column not in the data ({run!r} vs "
                       f"{', '.join(map(str, df.columns))}). Pass run= the run id column.")
    sel = select_rows(df, [n, d, c, y], where=where, log_columns=[n, d, c, y], min_points=4,
                      id_column=run)
    rows = df.iloc[sel.positions]
    curves, lone = [], []
    for rid, g in rows.groupby(run, sort=True):
        g = g.sort_values(c)
        if len(g) < 2:
            lone.append((rid, "one checkpoint: no training curve to interpolate"))
            continue
        curves.append((rid, np.log(g[c].to_numpy(float)), np.log(g[y].to_numpy(float)),
                       np.log(g[d].to_numpy(float)), float(g[n].iloc[-1])))
    if len(curves) < 2:
        raise FitError(f"{where}: too few runs with a training curve ({len(curves)} vs at least "
                       f"2 runs with >= 2 checkpoints). Pass checkpoints, or use the isoflop "
                       f"or surface method for final rows only.")
    lo = min(cv[1][0] for cv in curves)
    hi = max(cv[1][-1] for cv in curves)
    grid = np.linspace(lo, hi, n_grid)
    best_loss = np.full(n_grid, np.inf)
    best_n, best_d = np.full(n_grid, np.nan), np.full(n_grid, np.nan)
    cover = np.zeros(n_grid, dtype=int)
    for _, lc, ll, ld, n_run in curves:
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        cover += inside
        loss_at = np.interp(grid[inside], lc, ll)
        better = loss_at < best_loss[inside]
        idx = np.flatnonzero(inside)[better]
        best_loss[idx] = loss_at[better]
        best_n[idx] = n_run
        best_d[idx] = np.exp(np.interp(grid[idx], lc, ld))
    ok = cover >= 2
    excluded = lone + [(float(np.exp(g)), f"covered by {k} run(s) (vs at least 2)")
                       for g, k in zip(grid[~ok], cover[~ok])]
    optima = pd.DataFrame({"flops": np.exp(grid[ok]), "n_opt": best_n[ok],
                           "d_opt": best_d[ok], "loss_opt": np.exp(best_loss[ok])})
    return _power_laws("envelope", optima, excluded,
                       {"n_grid": n_grid, "interpolation": "linear in (log C, log L)",
                        "n_runs": len(curves), "excluded_rows": list(sel.excluded)})


def _budget_groups(flops: Array, rel_tol: float) -> Array:
    # Runs planned for one budget land within a few percent of it; start a new group whenever
    # the next (sorted) value is more than rel_tol above the current group's first value.
    order = np.argsort(flops)
    labels = np.empty(len(flops), dtype=int)
    k, start = -1, -np.inf
    for i in order:
        if flops[i] > start * (1 + rel_tol):
            k, start = k + 1, flops[i]
        labels[i] = k
    return labels


def _vertex(u: Array, loss: Array) -> tuple[float, float, float] | str:
    c2, c1, c0 = np.polyfit(u, loss, 2)
    if c2 <= 0:
        return f"parabola opens downward (curvature {c2:.3g} vs > 0): no minimum"
    v = -c1 / (2 * c2)
    if not u.min() <= v <= u.max():
        return "minimum outside the sampled range (extrapolated)"
    return v, c0 + c1 * v + c2 * v * v, c2


def frontier_isoflop(
    df: pd.DataFrame, *, n: str = "n_params", d: str = "tokens", c: str = "flops",
    y: str = "loss", budget: str | None = None, rel_tol: float = 0.1, run: str = "run_id",
) -> FrontierFit:
    """Approach 2 (Hoffmann et al. 2022 sec. 3.2): IsoFLOP profiles.

    Rows are final runs. Per budget (the `budget` column, or flops grouped within `rel_tol`)
    fit loss vs log N with a parabola and take its minimum as N_opt; D_opt likewise from loss vs
    log D (no FLOP convention needed). Budgets with < 3 sizes, a downward parabola or a minimum
    outside the sampled sizes are excluded with the reason.
    """
    optima, excluded, sel = _isoflop_profiles(df, n, d, c, y, budget, rel_tol, run)
    return _power_laws("isoflop", optima, excluded,
                       {"budget": budget or f"flops grouped within {rel_tol:g}",
                        "profile": "parabola in log N and in log D",
                        "excluded_rows": list(sel.excluded)})


def isoflop_minima(df: pd.DataFrame, *, n: str = "n_params", d: str = "tokens", c: str = "flops",
                   y: str = "loss", budget: str | None = None, rel_tol: float = 0.1,
                   run: str = "run_id") -> tuple[pd.DataFrame, list[tuple[float, str]]]:
    """Each budget's parabola minimum as `frontier_isoflop` finds it (flops, n_opt, d_opt,
    loss_opt, n_runs), and the budgets without one, with why; no power law through them, so one
    budget is enough."""
    optima, excluded, _ = _isoflop_profiles(df, n, d, c, y, budget, rel_tol, run)
    return optima, excluded


def _isoflop_profiles(df: pd.DataFrame, n: str, d: str, c: str, y: str, budget: str | None, rel_tol: float,
                      run: str) -> tuple[pd.DataFrame, list[tuple[float, str]], Any]:
    where = "frontier_isoflop"
    cols = [n, d, c, y] + ([budget] if budget else [])
    sel = select_rows(df, cols, where=where, log_columns=[n, d, c], min_points=3,
                      id_column=run)
    labels = sel[budget] if budget else _budget_groups(sel[c], rel_tol)
    rows, excluded = [], []
    for lab in np.unique(labels):
        m = labels == lab
        flops = float(sel[budget][m][0]) if budget else float(np.exp(np.mean(np.log(sel[c][m]))))
        sizes, lengths = len(np.unique(sel[n][m])), len(np.unique(sel[d][m]))
        if min(sizes, lengths) < 3:  # a parabola through fewer is singular (no vertex)
            excluded.append((flops, f"{int(m.sum())} run(s), {sizes} size(s)"
                                    + (f", {lengths} token count(s)" if lengths < sizes else "")
                                    + " (vs at least 3)"))
            continue
        vn = _vertex(np.log(sel[n][m]), sel[y][m])
        vd = _vertex(np.log(sel[d][m]), sel[y][m])
        if isinstance(vn, str) or isinstance(vd, str):
            excluded.append((flops, vn if isinstance(vn, str) else vd))
            continue
        rows.append({"flops": flops, "n_opt": float(np.exp(vn[0])),
                     "d_opt": float(np.exp(vd[0])), "loss_opt": vn[1], "n_runs": int(m.sum())})
    return pd.DataFrame(rows, columns=["flops", "n_opt", "d_opt", "loss_opt", "n_runs"]), excluded, sel


def frontier_parametric(
    fit: LawFit, flops: Sequence[float] | Array | None = None, *,
    flops_per_param_token: float = 6.0,
) -> FrontierFit:
    """Approach 3 (Hoffmann et al. 2022 eq. 4): the frontier implied by a fitted Chinchilla law.

    N_opt = G (C/k)^a, D_opt = G^-1 (C/k)^b, G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta), with C = k N D.
    """
    if fit.law.name != "chinchilla":
        raise FitError(f"frontier_parametric: needs a chinchilla fit (got {fit.law.name!r} vs "
                       f"'chinchilla'). Fit with fit_chinchilla first.")
    p = fit.params
    al, be, k = p["alpha"], p["beta"], flops_per_param_token
    if al <= 0 or be <= 0:
        raise FitError(f"frontier_parametric: exponents must be positive for a finite optimum "
                       f"(alpha={al:.3g}, beta={be:.3g} vs > 0). Check the fit.")
    g = (al * p["A"] / (be * p["B"])) ** (1 / (al + be))
    a, b = be / (al + be), al / (al + be)
    cs = np.geomspace(1e18, 1e24, 13) if flops is None else np.asarray(flops, dtype=float)
    n_opt, d_opt = g * (cs / k) ** a, (cs / k) ** b / g
    optima = pd.DataFrame({"flops": cs, "n_opt": n_opt, "d_opt": d_opt,
                           "loss_opt": fit.law.evaluate(p, n=n_opt, d=d_opt)})
    return FrontierFit(
        method="parametric", a=a, b=b, optima=optima,
        settings={"flops_per_param_token": k, "G": g},
        coefficients=(g * k ** -a, k ** -b / g),
    )


def _poly_design(u: Array, v: Array, degree: int) -> Array:
    return np.stack([u ** i * v ** j for i in range(degree + 1) for j in range(degree + 1 - i)],
                    axis=-1)


def frontier_surface(
    df: pd.DataFrame, *, n: str = "n_params", d: str = "tokens", c: str = "flops",
    y: str = "loss", run: str = "run_id", model: str = "poly", degree: int = 3,
    smoothing: float = 1.0, n_grid: int = 30, flops_per_param_token: float = 6.0,
) -> FrontierFit:
    """Smooth-surface method (Barkeshli et al. 2026): fit log L over (log N, log D), minimise
    along iso-compute lines C = k N D, then fit N_opt(C), D_opt(C).

    model="poly": least-squares polynomial of total `degree` in standardised (log N, log D);
    model="rbf": thin-plate-spline smoothing (scipy RBFInterpolator, `smoothing`). Compute levels
    whose minimum lies on the edge of the data are excluded (the surface would be extrapolated).
    """
    where = "frontier_surface"
    sel = select_rows(df, [n, d, y], where=where, log_columns=[n, d, y], min_points=10,
                      id_column=run)
    # a resample of few runs often draws one run several times: a single size has zero variance
    # (standardising divides by 0) and fewer sizes than degree + 1 leave the design singular
    require_distinct(sel, [n, d], degree + 1 if model == "poly" else 2, where=where,
                     what=f"a {_surface_name(model, degree)}")
    u, v, z = np.log(sel[n]), np.log(sel[d]), np.log(sel[y])
    surface = _log_loss_surface(u, v, z, model, degree, smoothing)
    k = flops_per_param_token
    rows, excluded = _iso_compute_minima(surface, u, v, k, n_grid)
    optima = pd.DataFrame(rows, columns=["flops", "n_opt", "d_opt", "loss_opt"])
    resid = z - surface(u, v)
    return _power_laws("surface", optima, excluded,
                       {"model": model, "degree": degree if model == "poly" else None,
                        "smoothing": smoothing if model == "rbf" else None,
                        "flops_per_param_token": k, "surface_rmse_log": float(np.std(resid)),
                        "excluded_rows": list(sel.excluded)})


def _surface_name(model: str, degree: int) -> str:
    return f"degree-{degree} polynomial surface" if model == "poly" else "thin-plate-spline surface"


def _singular(what: str, rank: int, need: int) -> FitError:
    return FitError(f"frontier_surface: the points do not determine a {what} (design rank "
                    f"{rank} vs {need}: they lie on a lower-degree curve in (log N, log D)). "
                    f"Add runs of other sizes and lengths, or use another frontier method.")


def _log_loss_surface(u: pd.Series, v: pd.Series, z: pd.Series, model: str, degree: int,
                      smoothing: float) -> Callable[[Array, Array], Array]:
    """log L as a smooth function of (log N, log D), fitted in standardised coordinates.

    The caller has checked (`require_distinct`) that u and v each take several values.
    """
    mu_u, sd_u, mu_v, sd_v = u.mean(), u.std(), v.mean(), v.std()
    su, sv = (u - mu_u) / sd_u, (v - mu_v) / sd_v
    if model == "poly":
        design = _poly_design(su, sv, degree)
        coef, _, rank, _ = np.linalg.lstsq(design, z, rcond=None)
        if rank < design.shape[1]:
            raise _singular(_surface_name(model, degree), rank, design.shape[1])
        return lambda uu, vv: _poly_design((uu - mu_u) / sd_u, (vv - mu_v) / sd_v, degree) @ coef
    if model == "rbf":
        # the spline's linear part needs points that are not all on one line
        rank = int(np.linalg.matrix_rank(np.c_[np.ones_like(su), su, sv]))
        if rank < 3:
            raise _singular(_surface_name(model, degree), rank, 3)
        rbf = RBFInterpolator(np.c_[su, sv], z, kernel="thin_plate_spline", smoothing=smoothing)

        def surface(uu: Array, vv: Array) -> Array:
            pts = np.c_[(np.ravel(uu) - mu_u) / sd_u, (np.ravel(vv) - mu_v) / sd_v]
            return rbf(pts).reshape(np.shape(uu))
        return surface
    raise FitError(f"frontier_surface: unknown surface model ({model!r} vs 'poly' or 'rbf'). "
                   f"Pass model='poly' or model='rbf'.")


def _iso_compute_minima(surface: Callable[[Array, Array], Array], u: pd.Series, v: pd.Series, k: float,
                        n_grid: int) -> tuple[list[dict[str, float]], list[tuple[float, str]]]:
    """The surface's minimum along each of `n_grid` iso-compute lines C = k N D (5%-95% of the
    data's compute), and the levels left out, with why."""
    log_c = np.log(k) + u + v
    grid = np.linspace(np.quantile(log_c, 0.05), np.quantile(log_c, 0.95), n_grid)
    rows, excluded = [], []
    for lc in grid:
        # feasible log N on this iso-compute line, inside the data's box in (log N, log D)
        lo = max(u.min(), lc - np.log(k) - v.max())
        hi = min(u.max(), lc - np.log(k) - v.min())
        if hi - lo < 1e-6:
            excluded.append((float(np.exp(lc)), "iso-compute line misses the data"))
            continue
        def line(t: float, lc: float = lc) -> float:  # log L along the iso-compute line
            return float(surface(np.array([t]), np.array([lc - np.log(k) - t]))[0])

        ts = np.linspace(lo, hi, 200)
        vals = surface(ts, lc - np.log(k) - ts)
        i = int(np.argmin(vals))
        if i in (0, len(ts) - 1):
            excluded.append((float(np.exp(lc)), "minimum on the edge of the data (extrapolated)"))
            continue
        res = minimize_scalar(line, bounds=(ts[i - 1], ts[i + 1]), method="bounded",
                              options={"xatol": 1e-8})
        t = float(res.x)
        rows.append({"flops": float(np.exp(lc)), "n_opt": float(np.exp(t)),
                     "d_opt": float(np.exp(lc - t) / k), "loss_opt": float(np.exp(res.fun))})
    return rows, excluded


def final_rows(df: pd.DataFrame, *, c: str = "flops", group: str = "run_id") -> pd.DataFrame:
    """Each run's last row (highest compute): IsoFLOP profiles use final points only."""
    if group not in df.columns or df[group].is_unique:
        return df
    return df.sort_values(c).groupby(group, sort=False).tail(1)


def frontier_fn(
    method: str, *, n: str = "n_params", d: str = "tokens", c: str = "flops", y: str = "loss",
    budget: str | None = None, group: str = "run_id", chinchilla: LawFit | None = None,
) -> Callable[[pd.DataFrame], FrontierFit]:
    """`fit(df) -> FrontierFit` for one method, as `bootstrap` calls it (isoflop wants final rows).

    The parametric method refits a Chinchilla law on each sample, warm-started from `chinchilla`
    when given (with its loss and delta).
    """
    cols = {"n": n, "d": d, "c": c, "y": y}
    if method == "envelope":
        return lambda t: frontier_envelope(t, run=group, **cols)
    if method == "isoflop":
        return lambda t: frontier_isoflop(t, budget=budget, run=group, **cols)
    if method == "surface":
        return lambda t: frontier_surface(t, run=group, **cols)
    if method == "parametric":
        opts = FitOptions(id_column=group) if chinchilla is None else FitOptions(
            init=chinchilla, id_column=group, loss=chinchilla.settings["loss"],
            delta=chinchilla.settings["delta"])
        return lambda t: frontier_parametric(fit_chinchilla(t, n=n, d=d, y=y, options=opts))
    raise FitError(f"frontier: unknown method ({method!r} vs one of {', '.join(METHODS)}). "
                   f"Pick one of those.")


def compare_frontiers(
    df: pd.DataFrame,
    *,
    methods: Sequence[str] = METHODS,
    final: pd.DataFrame | None = None,
    chinchilla: LawFit | None = None,
    n_boot: int = 200,
    group: str = "run_id",
    seed: int = 0,
    n_jobs: int = 2,
    level: float = 0.95,
    n: str = "n_params",
    d: str = "tokens",
    c: str = "flops",
    y: str = "loss",
    budget: str | None = None,
) -> pd.DataFrame:
    """Exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b) from each method, with bootstrap intervals.

    `df` holds checkpoints (envelope, surface, parametric); `final` one row per run (isoflop;
    defaults to each run's last checkpoint). The parametric method refits `chinchilla` (or a
    fresh Huber fit) on each resample. A method that cannot be fitted gets a row with the error.
    """
    if final is None:
        final = final_rows(df, c=c, group=group)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FitError(f"compare_frontiers: unknown method(s) ({', '.join(unknown)} vs "
                       f"{', '.join(METHODS)}). Pick from those.")
    chin = chinchilla
    if "parametric" in methods and chin is None:
        chin = fit_chinchilla(df, n=n, d=d, y=y, options=FitOptions(id_column=group))
    fns = {m: ((final if m == "isoflop" else df),
               frontier_fn(m, n=n, d=d, c=c, y=y, budget=budget, group=group, chinchilla=chin))
           for m in methods}
    rows = []
    for m in methods:
        data, fn = fns[m]
        try:
            boot = bootstrap(fn, data, group=group, n=n_boot, seed=seed, n_jobs=n_jobs,
                             level=level, warm_start=False)
        except FitError as err:
            rows.append({"method": m, "a": np.nan, "a_lo": np.nan, "a_hi": np.nan,
                         "b": np.nan, "b_lo": np.nan, "b_hi": np.nan, "n_optima": 0,
                         "n_boot_failed": np.nan, "note": str(err)})
            continue
        fit = boot.fit
        rows.append({"method": m, "a": fit.a, "a_lo": boot.intervals["a"][0],
                     "a_hi": boot.intervals["a"][1], "b": fit.b, "b_lo": boot.intervals["b"][0],
                     "b_hi": boot.intervals["b"][1], "n_optima": len(fit.optima),
                     "n_boot_failed": boot.n_failed, "note": ""})
    return pd.DataFrame(rows)
