"""The re-report cache: fits and rendered figures are reused exactly when their inputs are unchanged."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from scaling_db.fit import fit_power_law
from scaling_db.report import cache
from scaling_db.report.analyses import FitOutcome, FitRequest
from scaling_db.workspace import Workspace


def points(loss_scale: float = 1.0) -> pd.DataFrame:
    n = np.array([1e4, 3e4, 1e5, 3e5])
    return pd.DataFrame({"run_id": list("abcd"), "n_params": n, "loss": loss_scale * 20 * n ** -0.3})


@pytest.fixture
def fits(monkeypatch):
    """A fake query result (settable) and a count of the real fits made."""
    state = {"data": points(), "fits": 0}

    def fetch(ws, req):
        return state["data"], "SELECT 1"

    def fit(req, data, sql, left_out, seed=0, n_jobs=1):
        state["fits"] += 1
        return FitOutcome(req, fit_power_law(data, x="n_params", y="loss"), None, data, sql, None, None, None)

    monkeypatch.setattr(cache, "fetch_fit_data", fetch)
    monkeypatch.setattr(cache, "unfinished_runs", lambda ws, req: ())
    monkeypatch.setattr(cache, "fit_noting", fit)
    return state


def test_a_fit_is_reused_until_its_rows_or_settings_change(tmp_path, fits):
    ws = Workspace(tmp_path / "ws")
    req = FitRequest(name="f", law="power_law", experiment="e", bootstrap=0)
    first = cache.cached_fit(ws, req)
    again = cache.cached_fit(ws, req)
    assert fits["fits"] == 1 and again.fit.params == pytest.approx(first.fit.params)
    fits["data"] = points(loss_scale=1.01)  # a changed loss (a later checkpoint, a new run)
    cache.cached_fit(ws, req)
    assert fits["fits"] == 2
    cache.cached_fit(ws, FitRequest(name="f", law="power_law", experiment="e", bootstrap=10))
    assert fits["fits"] == 3


def test_fit_key_covers_values_columns_sql_and_seed():
    req = FitRequest(name="f", law="power_law")
    base = cache.fit_key(req, points(), "SELECT 1")
    assert base == cache.fit_key(req, points(), "SELECT 1")
    assert base != cache.fit_key(req, points(1.0001), "SELECT 1")
    assert base != cache.fit_key(req, points().rename(columns={"loss": "eval_loss"}), "SELECT 1")
    assert base != cache.fit_key(req, points(), "SELECT 2")
    assert base != cache.fit_key(req, points(), "SELECT 1", seed=1)


def test_a_chart_is_rendered_once_per_spec_and_format(tmp_path):
    rendered = []

    def render(chart):
        rendered.append(chart)
        return b"png bytes"

    def chart(y):
        return alt.Chart(pd.DataFrame({"x": [1, 2], "y": y})).mark_line().encode(x="x", y="y")

    assert cache.cached_render(chart([1, 2]), ".png", render, tmp_path, 2.0) == b"png bytes"
    assert cache.cached_render(chart([1, 2]), ".png", render, tmp_path, 2.0) == b"png bytes"
    assert len(rendered) == 1
    cache.cached_render(chart([1, 3]), ".png", render, tmp_path, 2.0)
    cache.cached_render(chart([1, 2]), ".html", render, tmp_path, 2.0)
    cache.cached_render(chart([1, 2]), ".png", render, tmp_path, 1.0)
    assert len(rendered) == 4


def test_a_figure_is_rebuilt_only_when_its_experiment_changes(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    state = {"frame": pd.DataFrame({"run_id": ["a"], "last_step": [10]}), "built": 0}

    def build(ws_, req):
        state["built"] += 1
        return alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x")

    monkeypatch.setattr(cache, "build_figure", build)
    monkeypatch.setattr(cache, "experiment_state", lambda ws_, owner, experiments=(): state["frame"])
    req = cache.FigureRequest(kind="loss_curves", experiment="e")
    first = cache.cached_figure(ws, req)
    assert cache.cached_figure(ws, req).to_dict() == first.to_dict() and state["built"] == 1
    state["frame"] = pd.DataFrame({"run_id": ["a"], "last_step": [20]})  # the run went on
    cache.cached_figure(ws, req)
    cache.cached_figure(ws, cache.FigureRequest(kind="compute_frontier", experiment="e"))
    assert state["built"] == 3


def test_experiment_state_sees_a_new_checkpoint(tmp_path):
    from store_fakes import finish_runs, make_workspace, write_log
    from scaling_db.store.ingest import ingest_runs

    ws, manifests = make_workspace(tmp_path / "ws")
    finish_runs(ws, manifests[:2])
    ingest_runs(ws)
    before = cache.experiment_state(ws, manifests[0].experiment)
    write_log(ws, manifests[0].run_id, [11], mode="a")
    ingest_runs(ws)
    after = cache.experiment_state(ws, manifests[0].experiment)
    assert len(before) == len(manifests) and not before.equals(after)


def test_keys_follow_the_code_that_makes_fits_and_figures(tmp_path, monkeypatch):
    # An edited fitter or chart within one version must not serve what the old code made.
    digest = cache.code_digest()
    assert len(digest) == 16 and digest == cache.code_digest()
    req = FitRequest(name="f", law="power_law")
    base = cache.fit_key(req, points(), "SELECT 1")
    monkeypatch.setattr(cache, "code_digest", lambda: "edited-chart-code")
    assert cache.fit_key(req, points(), "SELECT 1") != base
