"""Uncertainty: group bootstrap, its coverage, prediction intervals, window sensitivity and the
known-entropy check."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import FitError
from scaling_db.fit.options import FitOptions
from scaling_db.fit import (bootstrap, compare_irreducible, fit_chinchilla, fit_power_law,
                            fit_saturating_power_law, uncertainty_table, window_sensitivity)
from scaling_db.fit.laws import CHINCHILLA


@dataclass(frozen=True)
class Probe:
    """A stand-in fit result that reports what the resample looked like."""

    params: dict


def checkpoints(n_runs=12, per_run=3, seed=0):
    """Runs at log-spaced sizes, each with `per_run` checkpoints of a power law plus noise."""
    rng = np.random.default_rng(seed)
    x = np.repeat(np.geomspace(1e6, 1e9, n_runs), per_run)
    loss = 10 * x ** -0.1 * np.exp(rng.normal(0, 0.02, x.size))
    return pd.DataFrame({"run_id": np.repeat([f"r{i}" for i in range(n_runs)], per_run),
                         "n_params": x, "loss": loss})


def test_resamples_whole_runs_never_single_checkpoints():
    df = checkpoints(per_run=3)

    def probe(sample):
        counts = sample.groupby("run_id").size()
        return Probe({"whole": float((counts % 3 == 0).all()), "rows": float(len(sample))})

    boot = bootstrap(probe, df, n=50, n_jobs=1)
    assert (boot.samples["whole"] == 1).all() and (boot.samples["rows"] == 36).all()
    assert boot.n_groups == 12


def test_stratified_resampling_keeps_each_stratum_size():
    df = checkpoints(per_run=1).assign(arm=["a"] * 4 + ["b"] * 8)
    boot = bootstrap(lambda s: Probe({"n_a": float((s.arm == "a").sum())}), df, n=30,
                     n_jobs=1, strata="arm")
    assert (boot.samples["n_a"] == 4).all()


def test_same_seed_same_intervals_whatever_the_number_of_processes():
    df = checkpoints()
    one = bootstrap(fit_power_law, df, n=40, seed=7, n_jobs=1)
    two = bootstrap(fit_power_law, df, n=40, seed=7, n_jobs=2)
    assert one.intervals == two.intervals
    assert one.intervals != bootstrap(fit_power_law, df, n=40, seed=8, n_jobs=1).intervals


def test_prediction_interval_is_wider_than_confidence_interval():
    df = checkpoints()
    target = pd.DataFrame({"n_params": [1e10]})
    boot = bootstrap(fit_power_law, df, n=200, predict_at=target, n_jobs=1,
                     derived={"loss_at_1e10": lambda f: float(f.predict(n_params=[1e10])[0])})
    row = boot.predictions.iloc[0]
    assert row.pi_lo < row.ci_lo < row.estimate < row.ci_hi < row.pi_hi
    # the derived quantity is the same prediction, so its interval is the CI
    assert boot.intervals["loss_at_1e10"] == pytest.approx((row.ci_lo, row.ci_hi))
    table = boot.summary()
    assert set(table.quantity) == {"A", "alpha", "loss_at_1e10"}


def test_chinchilla_bootstrap_covers_the_true_frontier_exponent():
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 120))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 120))
    loss = CHINCHILLA.evaluate(truth, n=n, d=d) * np.exp(rng.normal(0, 0.01, 120))
    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(120)], "n_params": n, "tokens": d,
                       "loss": loss})
    boot = bootstrap(lambda s, init=None: fit_chinchilla(s, options=FitOptions(init=init)), df, n=60,
                     derived={"a": lambda f: f["beta"] / (f["alpha"] + f["beta"])})
    lo, hi = boot.intervals["a"]
    assert lo < 0.28 / 0.62 < hi and hi - lo < 0.1
    assert boot.n_failed == 0
    rec = json.loads(json.dumps(boot.to_record()))
    assert rec["bootstrap"]["group"] == "run_id" and "a" in rec["derived"]
    assert set(rec["intervals"]) == {"E", "A", "B", "alpha", "beta", "a"}


def test_failed_refits_are_counted_and_reported():
    df = checkpoints(per_run=1)

    def picky(sample):
        if sample["run_id"].nunique() < 8:
            raise FitError("picky: too few distinct runs (7 vs 8). Resample again.")
        return fit_power_law(sample)

    boot = bootstrap(picky, df, n=60, n_jobs=1)
    assert 0 < boot.n_failed < 60 and len(boot.samples) == 60 - boot.n_failed
    assert boot.failures[0].startswith("picky: too few distinct runs")


def test_bootstrap_refuses_row_resampling_without_a_group_column():
    with pytest.raises(FitError, match=r"group column not in the data \('seed' vs"):
        bootstrap(fit_power_law, checkpoints(), group="seed")


@pytest.mark.slow
def test_percentile_intervals_cover_the_truth_near_nominal_rate():
    # 200 simulated studies of 48 runs (12 sizes x 4 seeds, 2% log-normal noise), 100 resamples
    # each: a 95% interval should cover alpha = 0.1 in 90-99% of them (binomial sd 1.5%).
    x = np.repeat(np.geomspace(1e6, 1e9, 12), 4)
    covered = []
    for rep in range(200):
        rng = np.random.default_rng(1000 + rep)
        df = pd.DataFrame({"run_id": np.arange(x.size), "n_params": x,
                           "loss": 10 * x ** -0.1 * np.exp(rng.normal(0, 0.02, x.size))})
        lo, hi = bootstrap(fit_power_law, df, n=100, seed=rep, n_jobs=1).intervals["alpha"]
        covered.append(lo <= 0.1 <= hi)
    assert 0.90 <= np.mean(covered) <= 0.99


def test_window_sensitivity_refits_every_window_and_reports_spread():
    # a saturating law fitted as a pure power law: the exponent drifts with the window
    rng = np.random.default_rng(0)
    x = np.geomspace(1e6, 1e10, 12)
    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(12)], "n_params": x,
                       "loss": (2 + 50 * x ** -0.3) * np.exp(rng.normal(0, 0.002, 12))})
    ws = window_sensitivity(fit_power_law, df, drop_smallest=(0, 2, 4), drop_largest=(0, 2, 4))
    assert len(ws.table) == 9 and not ws.failed
    alpha = ws.spread.set_index("quantity").loc["alpha"]
    assert alpha["spread"] > 0.01  # the bias moves with the window
    # dropping small scales leaves the flatter part of the curve: smaller exponent
    first = ws.table.set_index(["drop_smallest", "drop_largest"])["alpha"]
    assert first[(4, 0)] < first[(0, 0)]
    boot = bootstrap(fit_power_law, df, n=50, n_jobs=1)
    both = uncertainty_table(boot, ws).set_index("quantity")
    assert {"boot_lo", "boot_hi", "window_spread"} <= set(both.columns)
    boot_width = both.loc["alpha", "boot_hi"] - both.loc["alpha", "boot_lo"]
    assert both.loc["alpha", "window_spread"] > boot_width


def test_window_sensitivity_records_windows_that_cannot_be_fitted():
    df = checkpoints(per_run=1, n_runs=5).assign(progress=1.0)
    ws = window_sensitivity(fit_power_law, df, drop_smallest=(0, 3), drop_largest=(0,),
                            progress="progress", min_progress=(0.0, 0.5))
    assert len(ws.table) == 2 and len(ws.failed) == 2
    assert "too few points (2 vs at least 3)" in ws.failed[0][1]


def test_known_entropy_rate_beside_fitted_irreducible_loss():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e5, 1e9, 16)
    df = pd.DataFrame({"run_id": range(16), "n_params": x,
                       "loss": (1.25 + 8 * x ** -0.35) * np.exp(rng.normal(0, 0.002, 16))})
    boot = bootstrap(fit_saturating_power_law, df, n=100, n_jobs=1)
    check = compare_irreducible(boot, true_entropy=1.25)
    lo, hi = boot.intervals["E"]
    assert check.interval == (lo, hi) and check.covered == (lo <= 1.25 <= hi)
    assert check.fitted == boot.fit["E"] and check.difference == pytest.approx(check.fitted - 1.25)
    assert abs(check.difference) < 0.02  # sd of E over seeds of this design: 0.003
    with pytest.raises(FitError, match=r"has no parameter 'E'"):
        compare_irreducible(fit_power_law(df), 1.25)
