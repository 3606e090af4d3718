"""Reusing fits and rendered figures whose inputs did not change, so a re-report takes seconds.

Both are keyed by a content hash of everything they are made from, never by names or times:

- a fit by its request (law, columns, query name and parameters, bootstrap count, group), the
  query's SQL, the bootstrap seed, scaledb's code (`code_digest`), and the rows the query returned
  (every value, so a new run, a later checkpoint or a changed loss makes a new key);
- a figure (the Altair chart, before rendering) by its request, scaledb's code, the text of
  every query it may read, and the state of its experiment in the database: each run's status,
  last step, checkpoint count and loss sums, the stored fits' ids, the current revision;
- a rendered figure by its Vega-Lite spec (Altair inlines the chart's data), the format, the
  PNG scale and the Vega-Lite version.

Entries live in the workspace cache (`cache/fits/<key>.pkl`, `cache/figures/<key>.<ext>`): deleting
them only costs time. Fits are pickled: the cache is the workspace owner's own, like its runs.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from scaling_db import __version__
from scaling_db.report.analyses import FitOutcome, FitRequest, fetch_fit_data, fit_noting, unfinished_runs
from scaling_db.report.figures import FigureRequest, build_figure
from scaling_db.store.query import list_queries, run_query
from scaling_db.workspace import Workspace, atomic_write_bytes



@functools.cache
def code_digest() -> str:
    """scaledb's version and a hash of the code that makes fits and figures (fit/, plot/, report/):
    an edited fitter or chart, even within one version, never serves an entry the old code made."""
    h = hashlib.sha256(__version__.encode())
    for part in ("fit", "plot", "report"):
        for module in sorted((m for m in resources.files("scaling_db").joinpath(part).iterdir()
                              if m.name.endswith(".py")), key=lambda m: m.name):
            h.update(f"{part}/{module.name}".encode() + b"\0" + module.read_bytes())
    return h.hexdigest()[:16]


def _digest(parts: list[Any], data: pd.DataFrame | None = None) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    if data is not None:
        h.update(json.dumps([list(map(str, data.columns)), list(map(str, data.dtypes))]).encode())
        h.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
    return h.hexdigest()[:24]


def fit_key(req: FitRequest, data: pd.DataFrame, sql: str, seed: int = 0) -> str:
    """The content hash a fit of `req` over `data` (the query's rows) is stored under."""
    # The outcome's field names too: a pickle of an older FitOutcome would load without the new fields.
    return _digest([req.__dict__, sql, seed, code_digest(), sorted(FitOutcome.__dataclass_fields__)], data)


def cached_fit(ws: Workspace, req: FitRequest, *, seed: int = 0, n_jobs: int = 1) -> FitOutcome:
    """`fit_request`, reusing the outcome of an earlier fit of the same request over the same rows;
    the runs its status filter left out are looked up each time (they are not among the rows)."""
    data, sql = fetch_fit_data(ws, req)
    left_out = unfinished_runs(ws, req)
    path = ws.cache_dir / "fits" / f"{fit_key(req, data, sql, seed)}.pkl"
    if path.exists():
        try:
            return replace(pickle.loads(path.read_bytes()), left_out=left_out)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            pass  # written by another version of the classes: refit and overwrite
    outcome = fit_noting(req, data, sql, left_out, seed=seed, n_jobs=n_jobs)  # rows fetched once, for key and fit
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, pickle.dumps(FitOutcome(**{**outcome.__dict__, "fit_id": None})))
    return outcome


_STATE_SQL = """
SELECT r.run_id, r.status, max(c.step), count(c.step), sum(c.eval_loss), sum(c.train_loss), sum(c.flops_exact),
       (SELECT string_agg(fit_id, ',' ORDER BY created_at, fit_id) FROM fits WHERE experiment = $owner),
       (SELECT string_agg(revision, ',' ORDER BY experiment) FROM experiments
        WHERE list_contains($experiments, experiment))
FROM runs AS r LEFT JOIN checkpoints AS c USING (run_id)
WHERE list_contains($experiments, r.experiment)
GROUP BY r.run_id, r.status
ORDER BY r.run_id
"""


def experiment_state(ws: Workspace, owner: str, experiments: tuple[str, ...] = ()) -> pd.DataFrame:
    """What a figure of `owner` (drawing the runs of `experiments`, default its own) can depend on
    in the database, in a few numbers per run."""
    return run_query(ws, sql=_STATE_SQL, params={"owner": owner, "experiments": list(experiments or (owner,))})


def cached_figure(ws: Workspace, req: FigureRequest) -> alt.TopLevelMixin:
    """`build_figure`, reusing the chart built earlier for the same request and experiment state."""
    queries = sorted((q.name, q.sql) for q in list_queries(ws))
    key = _digest([req.__dict__, code_digest(), queries], experiment_state(ws, req.experiment, req.experiments))
    path = ws.cache_dir / "figures" / f"{key}.chart.pkl"
    if path.exists():
        try:
            return pickle.loads(path.read_bytes())
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            pass
    chart = build_figure(ws, req)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, pickle.dumps(chart))
    return chart


def figure_key(spec: dict[str, Any], ext: str, scale: float) -> str:
    return _digest([spec, ext, scale, alt.SCHEMA_VERSION])


def cached_render(chart: alt.TopLevelMixin, ext: str, render: Any, cache_dir: Path, scale: float) -> bytes:
    """`render(chart)` (bytes of a .png or .html), or the bytes rendered earlier for the same spec."""
    # Unvalidated: the same dict, and validating costs as much as a render (the render validates).
    path = cache_dir / "figures" / f"{figure_key(chart.to_dict(validate=False), ext, scale)}{ext}"
    if path.exists():
        return path.read_bytes()
    data = render(chart)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return data
