"""Hyperparameter transfer: LR optima per width, LR-vs-width slopes (muP vs SP), parameter
efficiency, and the optimal-hyperparameter power law, on seeded synthetic sweeps whose loss is
exactly quadratic in log LR around a known optimum (so the parabola fit is unbiased)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import FitError
from scaling_db.fit.mup import fit_lr_optima
from scaling_db.fit import (fit_lr_optimum, fit_lr_transfer, fit_optimal_hparam_law,
                            parameter_efficiency)

WIDTHS = [128, 256, 512, 1024, 2048]
LRS = 2.0 ** np.arange(-16, -3.5, 0.5)  # 25 values, a factor sqrt(2) apart


def lr_opt(param, width):
    # SP: optimum shrinks as 1/width; muP: constant (Yang et al. 2022, the promise under test)
    return 1e-3 * (width / 256) ** -1.0 if param == "sp" else 3e-3


def base_loss(param, n):
    # SP needs 3x the parameters of muP for the same loss: L_sp(N) = L_mup(N / 3)
    return 8 * (n / 3 if param == "sp" else n) ** -0.1


def sweeps(seed=0, seeds=3, sigma=0.002):
    rng = np.random.default_rng(seed)
    rows = []
    for param in ("mup", "sp"):
        for w in WIDTHS:
            n = 1000 * w ** 2
            for lr in LRS:
                for s in range(seeds):
                    loss = base_loss(param, n) + 0.02 * np.log(lr / lr_opt(param, w)) ** 2
                    rows.append({"run_id": f"{param}-{w}-{lr:.3g}-{s}", "parameterization": param,
                                 "width": w, "n_params": n, "lr": lr, "seed": s,
                                 "loss": loss * np.exp(rng.normal(0, sigma))})
    return pd.DataFrame(rows)


def test_lr_optimum_of_one_sweep_with_interval():
    df = sweeps()
    one = df[(df.parameterization == "sp") & (df.width == 512)]
    fit = fit_lr_optimum(one)
    lo, hi = fit.interval
    assert lo < lr_opt("sp", 512) < hi and hi / lo < 1.5
    assert fit.lr_opt == pytest.approx(lr_opt("sp", 512), rel=0.1)
    assert fit.n_points == 15  # 5 grid values (best +- 2) x 3 seeds
    assert len(fit.excluded) == len(one) - 15


def test_lr_optimum_on_the_grid_edge_is_an_error():
    df = sweeps()
    one = df[(df.parameterization == "sp") & (df.width == 512) & (df.lr < 4e-4)]
    with pytest.raises(FitError, match=r"best LR is at the edge of the grid .* Extend the LR"):
        fit_lr_optimum(one)


def test_lr_transfer_slope_is_flat_for_mup_and_minus_one_for_sp():
    fit = fit_lr_transfer(sweeps())
    slopes = fit.slopes.set_index("parameterization")
    # over 5 seeds of this design the muP slope falls within 0.06 of 0, SP's within 0.03 of -1
    assert abs(slopes.loc["mup", "slope"]) < 0.1
    assert slopes.loc["sp", "slope_lo"] < -1 < slopes.loc["sp", "slope_hi"]
    assert slopes.loc["sp", "slope_hi"] < slopes.loc["mup", "slope_lo"]  # clearly separated
    assert (slopes["slope_lo"] < slopes["slope"]).all()
    assert (slopes["slope"] < slopes["slope_hi"]).all()
    assert len(fit.optima) == 10 and not fit.excluded
    assert set(slopes["estimator"]) == {"WLS 1/se^2"}


def test_lr_transfer_lists_widths_whose_optimum_is_not_bracketed():
    df = sweeps()
    df = df[~((df.parameterization == "sp") & (df.width == 2048) & (df.lr < 1e-3))]
    fit = fit_lr_transfer(df)
    assert [key for key, _ in fit.excluded] == [("sp", 2048)]
    assert len(fit.optima) == 9


def test_parameter_efficiency_ratio_and_interval():
    fit = parameter_efficiency(sweeps(), n_boot=200, n_jobs=1)
    lo, hi = fit.interval
    assert lo < 3.0 < hi and hi / lo < 2
    assert fit.ratio == pytest.approx(3.0, rel=0.15)
    assert set(fit.fits) == {"mup", "sp"}
    assert fit.fits["mup"]["alpha"] == pytest.approx(0.1, abs=0.01)
    assert fit.bootstrap.strata == "parameterization" and fit.bootstrap.n_failed == 0


def test_optimal_hparam_law_recovers_exponents_on_step_law_shaped_data():
    rng = np.random.default_rng(0)
    rows = []
    for n in np.geomspace(1e8, 1e10, 4):
        for d in np.geomspace(1e10, 1e12, 4):
            best = 1.79 * n ** -0.713 * d ** 0.307  # Li et al. 2025's law as the truth
            for lr in best * 2.0 ** np.arange(-3, 3.25, 0.25):
                loss = 2 + 0.01 * np.log(lr / best) ** 2
                rows.append({"run_id": len(rows), "n_params": n, "tokens": d, "lr": lr,
                             "loss": loss * np.exp(rng.normal(0, 1e-4))})
    fit = fit_optimal_hparam_law(pd.DataFrame(rows), "lr", "loss", tolerance=0.001)
    assert fit.params["a_n_params"] == pytest.approx(-0.713, abs=0.03)
    assert fit.params["a_tokens"] == pytest.approx(0.307, abs=0.03)
    assert fit.params["c"] == pytest.approx(1.79, rel=0.5)
    assert fit.settings["n_cells"] == 16
    assert all("above its cell's best" in why for _, why in fit.excluded)
    assert fit.predict(n_params=[1e9], tokens=[1e11])[0] == pytest.approx(
        1.79 * 1e9 ** -0.713 * 1e11 ** 0.307, rel=0.1)


def test_lr_optimum_on_the_edge_is_flagged_when_allowed_and_both_optima_are_kept():
    df = sweeps()
    one = df[(df.parameterization == "sp") & (df.width == 512) & (df.lr < 4e-4)]
    edge = fit_lr_optimum(one, allow_edge=True)
    assert edge.flags[0].startswith("edge: best LR is the grid's largest")
    assert edge.lr_opt == edge.grid_best == one.lr.max() and edge.interval[1] == np.inf
    table = fit_lr_optima(df, by=["parameterization", "width"])
    assert len(table) == 10 and set(table.columns) >= {"lr_opt", "lr_grid_best", "flag"}
    assert (table.lr_lo < table.lr_opt).all() and (table.lr_opt < table.lr_hi).all()
    differs = table[table["flag"].str.startswith("differs")]
    assert len(differs) and (differs.lr_opt != differs.lr_grid_best).all()


def test_lr_grid_too_coarse_is_flagged():
    df = sweeps()
    one = df[(df.parameterization == "sp") & (df.width == 512)]
    grid = np.sort(one.lr.unique())[::4]  # every fourth value: steps of x4
    fit = fit_lr_optimum(one[one.lr.isin(grid)], allow_edge=True)
    assert any(f.startswith("coarse: LR grid step x") for f in fit.flags)


def test_results_have_short_reprs_and_count_warnings_once():
    small = sweeps()
    small = small[small.width <= 512]  # 3 sizes: some resamples draw one size only
    fit = parameter_efficiency(small, n_boot=60, n_jobs=1)
    text = repr(fit)
    assert len(text.splitlines()) == 2 and "refits failed" in text and text.startswith(
        "ParameterEfficiencyFit: sp needs")
    assert fit.bootstrap.n_failed > 0 and "distinct n_params" in fit.bootstrap.failures[0]
    assert len(repr(fit_lr_transfer(sweeps())).splitlines()) == 4  # title, header, mup, sp


def test_optimal_hparam_law_refuses_scales_that_move_together():
    # every run at 20 tokens per parameter: log D = log N + const, so a_N and a_D are not separate
    grid = [(n, lr) for n in np.geomspace(1e7, 1e9, 5) for lr in np.geomspace(1e-4, 1e-2, 5)]
    rows = [{"run_id": i, "n_params": n, "tokens": 20 * n, "lr": lr,
             "loss": 2 + (np.log(lr) + 7) ** 2 / 100} for i, (n, lr) in enumerate(grid)]
    with pytest.raises(FitError, match=r"do not separate the scales' exponents \(design rank 2 vs 3; "
                                       r"5 distinct n_params, 5 distinct tokens\)"):
        fit_optimal_hparam_law(pd.DataFrame(rows), "lr", "loss")
