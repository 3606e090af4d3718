"""Provenance of stored fits (issue 11): the stored run ids are the query's, even when the fit
leaves points out; a fit of rows without a run_id column says how its intervals were made."""

from __future__ import annotations

import json

import pytest

from scaling_db.report.analyses import FitRequest, fit_request, store_outcome
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query

from store_fakes import finish_runs, make_workspace, write_log


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    ws, manifests = make_workspace(tmp_path_factory.mktemp("provenance") / "ws")
    finish_runs(ws, manifests, steps=range(1, 4))
    # One run's final loss is not positive: a power law cannot use it, so the fit excludes it.
    write_log(ws, manifests[0].run_id, [4], mode="a", n_params=manifests[0].counts.n_params, loss=-1.0)
    ingest_runs(ws)
    return ws


def stored(ws, fit_id: str) -> dict:
    row = run_query(ws, sql="SELECT * FROM fits WHERE fit_id = $id", params={"id": fit_id}).iloc[0]
    return {k: json.loads(v) if k in ("run_ids", "intervals", "extra") and v is not None else v
            for k, v in row.items()}


def test_stored_run_ids_are_the_querys_even_when_the_fit_excludes_some(ws):
    outcome = store_outcome(ws, fit_request(ws, FitRequest(name="p", law="power_law", bootstrap=0,
                                                           experiment="ba_graph")))
    queried = set(run_query(ws, "final_loss", params={"experiment": "ba_graph"}).run_id)
    assert outcome.fit.excluded, "the test needs a fit that leaves a point out"
    row = stored(ws, outcome.fit_id)
    assert set(row["run_ids"]) == queried and len(queried) == 5
    assert len(row["extra"]["used"]) == 4  # the points the fit kept stay on record too


def test_a_fit_without_run_ids_says_how_its_intervals_were_made(ws):
    sql = ("SELECT r.n_params, c.eval_loss AS loss FROM runs AS r JOIN final_checkpoints AS c USING (run_id) "
           "WHERE r.experiment = $experiment AND c.eval_loss > 0")
    outcome = store_outcome(ws, fit_request(ws, FitRequest(
        name="rows", law="saturating_power_law", query=None, sql=sql, bootstrap=50, experiment="ba_graph")))
    row = stored(ws, outcome.fit_id)
    assert row["run_ids"] is None
    method = row["extra"]["intervals_method"]
    assert method.startswith("no bootstrap: the data has no run_id column")
    if row["intervals"] is None:
        assert method.endswith("no intervals computed")
    else:
        assert method.endswith("the fit's own (analytic) ones")


def test_a_bootstrapped_fit_names_its_resampling(ws):
    outcome = fit_request(ws, FitRequest(name="b", law="power_law", bootstrap=20, experiment="ba_graph"))
    assert outcome.to_record()["intervals_method"].startswith("bootstrap: ")
    assert outcome.to_record()["intervals"]


def test_a_formula_with_a_negative_exponent_reads_as_one_sign():
    """`L = 17.5 N^--0.00199` was printed for a loss that grows with N (alpha < 0)."""
    import pandas as pd

    from scaling_db.report.analyses import fit_frame

    rows = pd.DataFrame({"run_id": list("abcde"), "n_params": [1e3, 1e4, 1e5, 1e6, 1e7],
                         "loss": [2.0, 2.1, 2.2, 2.3, 2.4]})
    outcome = fit_frame(FitRequest(name="up", law="power_law", bootstrap=0, experiment="x"), rows, "SELECT 1")
    assert outcome.fit.params["alpha"] < 0
    assert "^--" not in outcome.formula() and "n_params^0.0" in outcome.formula()



def test_a_stored_fit_keeps_its_query_parameters_and_its_figure_uses_them(ws):
    # The FLOPs convention moves every point along x: a figure of a 6n_nonembed fit drawn with the
    # default (exact) FLOPs would put the points beside the fitted line.
    from scaling_db.report.figures import FigureRequest, build_figure

    req = FitRequest(name="lc", law="power_law", query="compute_frontier", x=("flops",), bootstrap=0,
                     params={"convention": "6n_nonembed"}, experiment="ba_graph")
    outcome = store_outcome(ws, fit_request(ws, req))
    row = stored(ws, outcome.fit_id)
    assert json.loads(row["query_params"]) == {"convention": "6n_nonembed"}
    assert "query parameters: convention=6n_nonembed" in outcome.notes()  # said beside the numbers
    chart = build_figure(ws, FigureRequest(kind="scaling_fit", experiment="ba_graph", fit="lc")).to_dict()
    drawn = {round(p["flops"]) for layer in chart["layer"] for p in layer.get("data", {}).get("values", [])
             if "flops" in p}
    fitted = {round(f) for f in outcome.data["flops"]}
    assert drawn and drawn <= fitted


def test_an_implausible_exponent_is_flagged_beside_the_number():
    from scaling_db.report.analyses import _degenerate

    assert _degenerate("alpha_D", 1.25e5).startswith("degenerate: |alpha_D| > 10")
    assert _degenerate("alpha", 0.3) == "" and _degenerate("A", 1e5) == ""
