"""Laws as data, the LawFit result type and row selection: evaluation, records, exclusions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import FitError
from scaling_db.fit import fit_power_law, get_law, score_law
from scaling_db.fit.laws import CHINCHILLA, KAPLAN_ND, evaluate_law, huber, multi_power_law
from scaling_db.fit.result import select_rows


def test_chinchilla_law_matches_the_formula_by_hand():
    p = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    got = CHINCHILLA.evaluate(p, n=np.array([7e10]), d=np.array([1.4e12]))
    by_hand = 1.69 + 406.4 / 7e10 ** 0.34 + 410.7 / 1.4e12 ** 0.28
    assert got[0] == pytest.approx(by_hand, rel=1e-12)


def test_kaplan_law_reduces_to_l_of_n_for_infinite_data():
    # Kaplan et al. 2020 eq. 1.5 -> eq. 1.1 as D -> infinity
    p = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}
    n = np.array([1e8, 1e9])
    got = KAPLAN_ND.evaluate(p, n=n, d=np.array([1e30, 1e30]))
    assert got == pytest.approx((6.4e13 / n) ** 0.076, rel=1e-9)


def test_multi_power_law_evaluates_product_of_powers():
    law = multi_power_law(["N", "D"])
    got = law.evaluate({"c": 1.79, "a_N": -0.713, "a_D": 0.307}, N=np.array([1e9]),
                       D=np.array([1e11]))
    assert got[0] == pytest.approx(1.79 * 1e9 ** -0.713 * 1e11 ** 0.307, rel=1e-12)


def test_huber_is_quadratic_inside_and_linear_outside_delta():
    r = np.array([0.0, 5e-4, -5e-4, 2e-3, -3e-3])
    assert huber(r, 1e-3) == pytest.approx([0, 1.25e-7, 1.25e-7, 1.5e-6, 2.5e-6])


def test_score_law_r2_is_one_on_exact_data():
    df = pd.DataFrame({"n": [1e7, 1e8, 1e9], "d": [1e9, 1e10, 1e11]})
    p = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    df["loss"] = evaluate_law("chinchilla", p, df, {"n": "n", "d": "d"})
    s = score_law("chinchilla", p, df, {"n": "n", "d": "d"}, "loss")
    assert s.r2 == pytest.approx(1.0) and s.huber_sum == pytest.approx(0.0, abs=1e-20)


def test_unknown_law_and_missing_parameters_raise_fit_error():
    with pytest.raises(FitError, match=r"unknown law \('chinchila' vs one of .*chinchilla"):
        get_law("chinchila")
    with pytest.raises(FitError, match=r"missing parameters \(beta vs"):
        CHINCHILLA.evaluate({"E": 1, "A": 1, "B": 1, "alpha": 1}, n=np.ones(1), d=np.ones(1))


def test_select_rows_lists_every_excluded_row_with_its_reason():
    df = pd.DataFrame({"run_id": ["a", "b", "c", "d", "e"],
                       "n_params": [1e6, -1.0, 1e8, 1e9, np.nan],
                       "loss": [4.0, 3.5, 0.0, 3.0, 2.0]})
    sel = select_rows(df, ["n_params", "loss"], where="t", log_columns=["n_params", "loss"])
    assert sel.ids == ("a", "d")
    assert dict(sel.excluded) == {
        "b": "n_params <= 0 (got -1); log undefined",
        "c": "loss <= 0 (got 0); log undefined",
        "e": "n_params is not a finite number (got nan)",
    }


def test_too_few_points_error_names_count_and_fix():
    df = pd.DataFrame({"n_params": [1e6, 1e7, -1], "loss": [4.0, 3.0, 2.0]})
    with pytest.raises(FitError) as err:
        fit_power_law(df)
    msg = str(err.value)
    assert msg.startswith("fit_power_law: too few points (2 vs at least 3)")
    assert "n_params <= 0" in msg and msg.endswith("Add runs or widen the selection.")


def test_missing_column_error_lists_available_columns():
    with pytest.raises(FitError, match=r"columns not in the data \(flops vs n_params, loss\)"):
        fit_power_law(pd.DataFrame({"n_params": [1.0], "loss": [1.0]}), x="flops")


def test_fit_result_is_frozen_predicts_by_column_or_role_and_serialises():
    x = np.geomspace(1e6, 1e9, 8)
    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(8)], "n_params": x,
                       "loss": 10 * x ** -0.1})
    fit = fit_power_law(df)
    with pytest.raises(AttributeError):
        fit.n_points = 3  # frozen dataclass
    assert fit.predict(n_params=[1e10]) == pytest.approx(fit.predict(x=[1e10]))
    assert fit.predict(pd.DataFrame({"n_params": [1e10]}))[0] == pytest.approx(10 * 1e10 ** -0.1)
    rec = json.loads(json.dumps(fit.to_record()))
    assert rec["law"] == "power_law" and rec["n_points"] == 8 and rec["used"][0] == "r0"
    assert set(rec["params"]) == {"A", "alpha"} and set(rec["intervals"]) == {"A", "alpha"}
    assert rec["settings"]["method"] == "ols"
    with pytest.raises(FitError, match=r"missing input \('n_params' vs"):
        fit.predict(tokens=[1.0])


# -- the one registry of fittable laws (issue 17) ------------------------------------------------

def test_law_names_live_in_one_registry():
    from pydantic import ValidationError

    from scaling_db.fit.laws import LAWS
    from scaling_db.fit.registry import FITTERS
    from scaling_db.spec.schema import FitDecl

    assert all(LAWS[name] is f.law for name, f in FITTERS.items())  # names come from the Law objects
    for name in FITTERS:  # the spec accepts exactly the registered laws
        assert FitDecl(name="f", law=name).law == name
    with pytest.raises(ValidationError, match="unknown law 'cubic'"):
        FitDecl(name="f", law="cubic")


def test_fit_options_are_shared_and_warm_start_a_bare_fitter():
    from scaling_db.fit import FitOptions, bootstrap, fit_saturating_power_law

    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(1e4, 1e7, 6), 2)
    df = pd.DataFrame({"n": x, "loss": 1.5 + 40 * x ** -0.3 + rng.normal(0, 0.002, len(x)),
                       "rid": [f"r{i}" for i in range(len(x))]})
    opts = FitOptions(loss="huber", id_column="rid")
    fit = fit_saturating_power_law(df, x="n", options=opts)
    assert fit.settings["loss"] == "huber" and fit.used[0] == "r0"
    seen = {"warm": lambda f: f.settings["warm_start"], "huber": lambda f: f.settings["loss"] == "huber"}
    boot = bootstrap(lambda t, options=opts: fit_saturating_power_law(t, x="n", options=options),
                     df, group="rid", n=8, n_jobs=1, derived=seen)
    assert boot.n_failed == 0 and boot.samples["huber"].all()  # refits kept the caller's loss
    assert boot.samples["warm"].all() and opts.init is None  # and were warm-started
