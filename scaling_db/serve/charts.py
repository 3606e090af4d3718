"""The dashboard's charts as Vega-Lite dicts: an experiment's figures (the same builders as
`scaledb plot`, from `scaling_db.report.figures`) and one run's live loss curve."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import altair as alt
import pandas as pd
from altair.utils.schemapi import debug_mode

from scaling_db.errors import ScaledbError, StoreError
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.serve.live import SERVE_QUERY_DIR, WorkspaceView
from scaling_db.store.database import LOCK_TIMEOUT_ENV

#: An experiment's loss-curve figure draws at most this many runs and rows: Altair turns every
#: inlined row into Python objects (~0.1 ms each), and a browser cannot read 10,000 curves anyway.
MAX_FIGURE_RUNS = 200
MAX_FIGURE_POINTS = 6000
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
    millions of rows, so unless the spec names its own query the dashboard uses
    `loss_curves_sampled` (same columns): log-spaced checkpoints per run (final ones kept) and,
    past MAX_FIGURE_RUNS runs, every k-th run, which the title says.
    """
    kind = str(plot.get("kind"))
    params = dict(plot.get("params") or {})
    query, title = plot.get("query"), plot.get("title")
    if kind == "loss_curves" and query is None:
        query = str(SERVE_QUERY_DIR / "loss_curves_sampled.sql")
        stride = max(1, math.ceil(n_runs / MAX_FIGURE_RUNS))
        drawn = math.ceil(n_runs / stride)
        # ~per_efold * ln(steps) points per run; ln(steps) <= ~8 for runs of a few thousand steps.
        params.update(run_stride=stride, per_efold=max(1, min(24, MAX_FIGURE_POINTS // max(1, drawn) // 8)))
        if stride > 1:
            title = title or f"{experiment}: loss curves of every {_ordinal(stride)} run ({drawn} of {n_runs})"
    return FigureRequest(kind=kind, experiment=experiment, fit=plot.get("fit"), query=query, params=params,
                         x=plot.get("x"), title=title, param=plot.get("param"),
                         keep_above_uniform=bool(plot.get("keep_above_uniform")))


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


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
            # Altair validates every object it builds against the Vega-Lite schema (seconds for a
            # few thousand inlined rows); the builders are tested, so the dashboard skips that.
            with no_lock_wait(), debug_mode(False):
                return {"spec": chart_dict(build_figure(view.ws, request))}
        except StoreError:
            raise
        except ScaledbError as exc:
            return {"error": str(exc)}

    result = view.cached(f"figure:{experiment}:{index}", build)
    if result is None:
        return {"error": view.db_note or "no database yet: run `scaledb ingest` to draw figures", "retry": True}
    return result


_CHILDREN = ("layer", "hconcat", "vconcat", "concat")


def chart_dict(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """`chart.to_dict()` without validation, and with inline data moved to top-level named
    `datasets` first: Altair walks every inlined value in Python (~0.3 ms a row), whereas the
    lists moved aside are handed over as they are. The Vega-Lite spec means the same."""
    datasets: dict[str, list[Any]] = {}

    def strip(node: Any) -> None:
        data = getattr(node, "data", alt.Undefined)
        values = getattr(data, "values", alt.Undefined) if isinstance(data, alt.Data) else alt.Undefined
        if isinstance(values, list):
            name = f"serve-data-{len(datasets)}"
            datasets[name] = values
            node.data = alt.NamedData(name=name)
        for key in _CHILDREN:
            children = getattr(node, key, alt.Undefined)
            for child in children if isinstance(children, list) else ():
                strip(child)
        inner = getattr(node, "spec", alt.Undefined)
        if inner is not alt.Undefined:
            strip(inner)

    strip(chart)
    spec = chart.to_dict(validate=False)
    spec.setdefault("datasets", {}).update(datasets)
    return spec


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
