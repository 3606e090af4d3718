"""The dashboard's charts as Vega-Lite dicts: an experiment's figures (the same builders as
`scaledb plot`, from `scaling_db.report.figures`) and one run's live loss curve."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import altair as alt
import pandas as pd

from scaling_db.errors import ScaledbError, StoreError
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.serve.live import SERVE_QUERY_DIR, WorkspaceView
from scaling_db.store.database import LOCK_TIMEOUT_ENV

#: Checkpoint rows an experiment's loss-curve figure may carry to the browser (all runs together).
MAX_FIGURE_POINTS = 40_000
_ENV_LOCK = threading.Lock()


@contextmanager
def no_lock_wait() -> Iterator[None]:
    """The figure builders open the database with the default lock wait (10 s); the dashboard
    must not wait on a writer, so while one builds, `$SCALEDB_LOCK_TIMEOUT_S` is 0 (restored after).
    `scaledb serve` sets it for the whole process; this covers an app built in another process."""
    with _ENV_LOCK:
        saved = os.environ.get(LOCK_TIMEOUT_ENV)
        os.environ[LOCK_TIMEOUT_ENV] = "0"
        try:
            yield
        finally:
            if saved is None:
                del os.environ[LOCK_TIMEOUT_ENV]
            else:
                os.environ[LOCK_TIMEOUT_ENV] = saved


def figure_request(experiment: str, plot: dict[str, Any], n_runs: int) -> FigureRequest:
    """The FigureRequest of one `analysis.plots` entry; loss curves thinned in the database.

    `loss_curves` reads every checkpoint of every run; with thousands of long runs that is
    millions of rows, so unless the spec names its own query, the dashboard uses
    `loss_curves_sampled` (same columns, log-spaced checkpoints per run, final ones kept).
    """
    kind = str(plot.get("kind"))
    params = dict(plot.get("params") or {})
    query = plot.get("query")
    if kind == "loss_curves" and query is None:
        query = str(SERVE_QUERY_DIR / "loss_curves_sampled.sql")
        # ~per_efold * ln(steps) points per run; ln(steps) <= ~10 for any real run.
        params["per_efold"] = max(1, min(24, MAX_FIGURE_POINTS // max(1, n_runs) // 10))
    return FigureRequest(kind=kind, experiment=experiment, fit=plot.get("fit"), query=query, params=params,
                         x=plot.get("x"), title=plot.get("title"))


def figure_spec(view: WorkspaceView, experiment: str, index: int) -> dict[str, Any]:
    """{'spec': Vega-Lite} for the experiment's `index`-th figure, or {'error': why}; cached per
    database version (figures need the database: runs must have been ingested)."""
    summary = view.experiment(experiment)
    plots = summary.plots if summary and summary.plots else ({"kind": "loss_curves"},)
    if not 0 <= index < len(plots):
        return {"error": f"{experiment}: no figure {index} (it has {len(plots)})"}
    n_runs = sum(summary.counts.values()) if summary else 1
    request = figure_request(experiment, plots[index], n_runs)

    def build() -> dict[str, Any]:
        try:
            with no_lock_wait():
                return {"spec": build_figure(view.ws, request).to_dict()}
        except StoreError:
            raise
        except ScaledbError as exc:
            return {"error": str(exc)}

    result = view.cached(f"figure:{experiment}:{index}", build)
    if result is None:
        return {"error": view.db_note or "no database yet: run `scaledb ingest` to draw figures", "retry": True}
    return result


def curve_spec(curve: pd.DataFrame, title: str) -> dict[str, Any]:
    """Train and eval loss against tokens (log-log), a point per checkpoint, tooltips with step,
    tokens, FLOPs and loss. Rows at 0 tokens cannot sit on a log axis and are left out."""
    if curve.empty or "tokens" not in curve:
        return alt.Chart(pd.DataFrame({"tokens": [], "loss": []})).mark_point().properties(title=title).to_dict()
    columns = [c for c in ("step", "tokens", "flops_exact", "wall_time_s") if c in curve]
    long = (curve[curve["tokens"] > 0]
            .melt(id_vars=columns, value_vars=[c for c in ("train_loss", "eval_loss") if c in curve],
                  var_name="which", value_name="loss")
            .dropna(subset=["loss"]))
    long = long[long["loss"] > 0]
    tooltip = [alt.Tooltip("which:N", title="loss"), alt.Tooltip("step:Q"),
               alt.Tooltip("tokens:Q", format=",d"), alt.Tooltip("loss:Q", format=".4f")]
    if "flops_exact" in long:
        tooltip.append(alt.Tooltip("flops_exact:Q", title="FLOPs (exact)", format=".3e"))
    chart = (alt.Chart(long).mark_line(point=True, strokeWidth=1.5)
             .encode(x=alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens"),
                     y=alt.Y("loss:Q", scale=alt.Scale(type="log", zero=False), title="loss (nats/token)"),
                     color=alt.Color("which:N", title=None,
                                     scale=alt.Scale(domain=["train_loss", "eval_loss"], range=["#E69F00", "#0072B2"])),
                     tooltip=tooltip)
             .properties(title=title, width="container", height=320))
    return chart.to_dict()
