"""Compute-optimal frontiers on data generated from a known Chinchilla law.

Truth (Hoffmann et al. 2022 eq. 10 parameters): a = beta/(alpha+beta) = 0.4516, b = 0.5484.
Tolerances: over 3 seeds the methods land within 0.016 (envelope), 0.006 (IsoFLOP), 0.004
(polynomial surface) and 0.008 (RBF surface) of the truth; the envelope is coarser because
N_opt can only take the 14 simulated sizes. Each tolerance is about twice the worst seen.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import FitError
from scaling_db.fit.options import FitOptions
from scaling_db.fit import (compare_frontiers, fit_chinchilla, frontier_envelope,
                            frontier_isoflop, frontier_parametric, frontier_surface)
from scaling_db.fit.laws import CHINCHILLA

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
A_TRUE = 0.28 / 0.62
G_TRUE = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)


def noisy_loss(df, rng, sigma=0.002):
    clean = CHINCHILLA.evaluate(TRUTH, n=df["n_params"].to_numpy(), d=df["tokens"].to_numpy())
    return clean * np.exp(rng.normal(0, sigma, len(df)))


def isoflop_runs(seed=0):
    """7 budgets x 9 sizes spread +-1.5 in log N around the true optimum (C = 6ND)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.geomspace(1e18, 1e21, 7):
        for j, n in enumerate(G_TRUE * (c / 6) ** A_TRUE * np.exp(np.linspace(-1.5, 1.5, 9))):
            rows.append({"run_id": f"{c:.0e}-{j}", "n_params": n, "tokens": c / (6 * n),
                         "flops": c, "budget": c})
    df = pd.DataFrame(rows)
    return df.assign(loss=noisy_loss(df, rng))


def training_curves(seed=0):
    """14 sizes, each with 25 checkpoints from 2e8 tokens to 200 tokens per parameter."""
    rng = np.random.default_rng(seed)
    rows = [{"run_id": f"r{i}", "n_params": n, "tokens": d, "flops": 6 * n * d}
            for i, n in enumerate(np.geomspace(1e7, 3e9, 14))
            for d in np.geomspace(2e8, max(200 * n, 4e8), 25)]
    df = pd.DataFrame(rows)
    return df.assign(loss=noisy_loss(df, rng))


def test_parametric_frontier_is_hoffmann_eq_4():
    fit = fit_chinchilla(isoflop_runs(), options=FitOptions(init=TRUTH))
    f = frontier_parametric(fit, flops=[1e20, 1e22])
    p = fit.params
    assert f.a == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]), rel=1e-12)
    assert f.a + f.b == pytest.approx(1.0)
    n_opt, d_opt = f.optima["n_opt"].to_numpy(), f.optima["d_opt"].to_numpy()
    assert 6 * n_opt * d_opt == pytest.approx([1e20, 1e22], rel=1e-9)
    assert f.n_opt(np.array([1e20, 1e22])) == pytest.approx(n_opt, rel=1e-9)
    # it is the minimum along the iso-compute line
    for k in (0.97, 1.03):
        shifted = fit.predict(n_params=n_opt * k, tokens=d_opt / k)
        assert np.all(shifted > f.optima["loss_opt"].to_numpy())
    assert f.a == pytest.approx(A_TRUE, abs=0.02)


def test_isoflop_parabolas_recover_the_exponents():
    f = frontier_isoflop(isoflop_runs(), budget="budget")
    assert f.a == pytest.approx(A_TRUE, abs=0.012) and f.b == pytest.approx(1 - A_TRUE, abs=0.012)
    assert len(f.optima) == 7 and not f.excluded
    # without a budget column the runs are grouped by their FLOPs
    assert frontier_isoflop(isoflop_runs()).a == pytest.approx(f.a, rel=1e-12)


def test_isoflop_excludes_budgets_without_a_bracketed_minimum():
    df = isoflop_runs()
    top = df["budget"] == df["budget"].max()
    df = df[~top | (df["n_params"] < df.loc[top, "n_params"].median())]  # only the left half
    f = frontier_isoflop(df, budget="budget")
    assert len(f.optima) == 6
    assert f.excluded[0][0] == pytest.approx(1e21)
    assert "outside the sampled range" in f.excluded[0][1] or "downward" in f.excluded[0][1]


def test_isoflop_excludes_a_budget_with_fewer_than_three_token_counts():
    # 9 sizes but 2 token counts: the parabola in log D is singular (its vertex arbitrary)
    df = isoflop_runs()
    top = df["budget"] == df["budget"].max()
    df.loc[top, "tokens"] = np.where(df.loc[top, "n_params"] < df.loc[top, "n_params"].median(), 1e10, 2e10)
    f = frontier_isoflop(df, budget="budget")
    assert len(f.optima) == 6
    assert f.excluded == ((pytest.approx(1e21), "9 run(s), 9 size(s), 2 token count(s) (vs at least 3)"),)


def test_lower_envelope_recovers_the_exponents():
    f = frontier_envelope(training_curves())
    assert f.a == pytest.approx(A_TRUE, abs=0.035)
    assert f.settings["n_runs"] == 14
    assert f.excluded and all("run(s)" in why for _, why in f.excluded)


def test_envelope_lists_runs_without_a_curve():
    df = training_curves()
    df = df[(df.run_id != "r0") | (df.tokens == df.tokens.min())]  # r0: one checkpoint left
    f = frontier_envelope(df)
    assert ("r0", "one checkpoint: no training curve to interpolate") in f.excluded


def test_envelope_needs_training_curves():
    finals = training_curves().groupby("run_id").tail(1)
    with pytest.raises(FitError, match=r"too few runs with a training curve \(0 vs at least 2"):
        frontier_envelope(finals)


@pytest.mark.parametrize("model,tol", [("poly", 0.01), ("rbf", 0.02)])
def test_smooth_surface_recovers_the_exponents(model, tol):
    f = frontier_surface(training_curves(), model=model, smoothing=0.1)
    assert f.a == pytest.approx(A_TRUE, abs=tol)
    assert f.a + f.b == pytest.approx(1.0, abs=1e-6)  # D_opt = C / (6 N_opt) on the line
    assert f.settings["surface_rmse_log"] < 0.01


def _runs(df, k):
    """The rows of k runs spread over the sizes (the 3-width specs shrink to this)."""
    keep = [f"r{i}" for i in np.linspace(0, 13, k).round().astype(int)]
    return df[df.run_id.isin(keep)]


@pytest.mark.parametrize("model", ["poly", "rbf"])
def test_surface_of_one_size_is_a_fit_error(model):
    # one run: log N has zero variance, so standardising it divided by 0 and lstsq saw NaN
    one = training_curves().query("run_id == 'r5'")
    need = 4 if model == "poly" else 2
    with pytest.raises(FitError, match=rf"\(1 distinct n_params and 25 distinct tokens vs at "
                                       rf"least {need} of each\)"):
        frontier_surface(one, model=model)


def test_cubic_surface_needs_four_sizes():
    # 3 sizes leave the cubic's design singular: lstsq's minimum-norm answer gave a ~ 0.06
    with pytest.raises(FitError, match=r"degree-3 polynomial surface \(3 distinct n_params"):
        frontier_surface(_runs(training_curves(), 3))
    assert frontier_surface(_runs(training_curves(), 3), model="rbf").a > 0


def test_surface_on_one_line_is_a_fit_error():
    # every run stopped at 20 tokens per parameter: (log N, log D) on one line, no surface
    rows = pd.DataFrame({"run_id": [f"r{i}" for i in range(12)],
                         "n_params": np.geomspace(1e6, 1e9, 12)})
    rows["tokens"] = 20 * rows["n_params"]
    rows["loss"] = noisy_loss(rows, np.random.default_rng(0))
    for model in ("poly", "rbf"):
        with pytest.raises(FitError, match=r"do not determine a .* \(design rank \d+ vs \d+"):
            frontier_surface(rows, model=model)


def test_degenerate_bootstrap_resamples_are_failed_refits():
    # 5 runs; with seed 31 resample 1 draws one run five times (zero-variance log N: NaN in the
    # least squares, a LinAlgError or a misleading message before) and most draw < 4 distinct
    # sizes (a singular cubic, 'fitted' before): each is now a failed refit, counted
    from scaling_db.fit.frontier import frontier_fn
    from scaling_db.fit.resample import bootstrap
    boot = bootstrap(frontier_fn("surface"), _runs(training_curves(), 5), n=40, seed=31,
                     n_jobs=1, warm_start=False)
    assert 0 < boot.n_failed < 40 and len(boot.samples) == 40 - boot.n_failed
    assert any("(1 distinct n_params" in f for f in boot.failures)
    assert f"{boot.n_failed} refits failed" in boot.note()


def test_compare_frontiers_reports_every_method_with_intervals():
    table = compare_frontiers(training_curves(), methods=["envelope", "parametric", "surface"],
                              n_boot=30, n_jobs=1)
    assert list(table["method"]) == ["envelope", "parametric", "surface"]
    assert (table["a_lo"] <= table["a"]).all() and (table["a"] <= table["a_hi"]).all()
    assert (table["b_lo"] <= table["b"]).all() and (table["b"] <= table["b_hi"]).all()
    assert ((table["a_lo"] < A_TRUE + 0.03) & (table["a_hi"] > A_TRUE - 0.03)).all()
    iso = compare_frontiers(isoflop_runs(), methods=["isoflop"], budget="budget", n_boot=30,
                            n_jobs=1)
    assert iso.loc[0, "a_lo"] < iso.loc[0, "a"] < iso.loc[0, "a_hi"]
    assert json.dumps(frontier_isoflop(isoflop_runs(), budget="budget").to_record())


def test_a_frontier_with_many_failed_refits_is_flagged():
    # 5 runs, a cubic surface: most resamples draw < 4 distinct sizes and fail; the report's
    # row says its interval only describes the rest
    from scaling_db.report.comparisons import Source, frontier_outcome
    from scaling_db.spec.schema import FrontierDecl
    data = _runs(training_curves(), 5)
    src = Source(experiment="t", experiments=("t",), query=None, sql="", data=data)
    out = frontier_outcome(FrontierDecl(method="surface"), src, n_boot=40, seed=31, n_jobs=1)
    hit = re.search(r"(\d+) of 40 refits failed: interval conditional on the rest", out.rows[0]["flag"])
    assert hit and int(hit[1]) > 4
    assert any(f"; {hit[1]} refits failed (first: frontier_surface: too few distinct" in n
               for n in out.note_lines)
