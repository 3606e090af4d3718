"""The dashboard's web application (Starlette + Jinja2): pages, HTML fragments the pages
refresh every few seconds, JSON for charts, and a read-only SQL page with CSV download.

Every route only reads: the workspace through `WorkspaceView`, SQL through
`scaling_db.store.query`. Static files (Vega, Vega-Lite, Vega-Embed included) are served from
the package, so the dashboard works without network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from scaling_db import __version__
from scaling_db.errors import QueryError, ScaledbError
from scaling_db.serve.charts import curve_spec, figure_spec
from scaling_db.serve.live import WorkspaceView, format_value
from scaling_db.store.tables import RUN_STATUSES
from scaling_db.store.query import list_queries
from scaling_db.workspace import Workspace

HERE = Path(__file__).resolve().parent
#: Rows of a query result shown in the page (the CSV download has them all).
SQL_PAGE_ROWS = 1000
RUNS_PER_PAGE = 50


@dataclass(frozen=True)
class ServeSettings:
    workspace: Workspace
    allow_files: bool = False
    refresh_s: float = 1.0


def create_app(settings: ServeSettings) -> Starlette:
    """The dashboard for one workspace."""
    return Starlette(routes=Dashboard(settings).routes())


class Dashboard:
    """The routes of one workspace's dashboard; each reads through `view` in a worker thread."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.view = WorkspaceView(settings.workspace, refresh_s=settings.refresh_s,
                                  query_options={"allow_files": settings.allow_files})
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(version=__version__, workspace=str(settings.workspace.root),
                                          urlencode=urlencode, statuses=RUN_STATUSES[:-1])
        self.templates.env.filters["fmt"] = format_value

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index),
            Route("/fragments/experiments", self.index),
            Route("/experiments/{name}", self.experiment_page),
            Route("/fragments/experiments/{name}/runs", self.runs_fragment),
            Route("/fragments/experiments/{name}/counts", self.counts_fragment),
            Route("/fragments/experiments/{name}/fits", self.fits_fragment),
            Route("/api/experiments/{name}/runs", self.runs_json),
            Route("/api/experiments/{name}/figures/{index:int}", self.figure_json),
            Route("/api/version", self.version_json),
            Route("/runs/{run_id}", self.run_page),
            Route("/fragments/runs/{run_id}/state", self.run_page),
            Route("/api/runs/{run_id}/curve", self.curve_json),
            Route("/sql", self.sql_page),
            Route("/sql.csv", self.sql_csv),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {"db_note": self.view.db_note, **context},
                                               status_code=status_code)

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.page(request, "error.html", 404, message=message)

    async def index(self, request: Request) -> HTMLResponse:
        experiments = await run_in_threadpool(self.view.experiments)
        fragment = request.url.path.startswith("/fragments/")
        return self.page(request, "_experiments.html" if fragment else "index.html", experiments=experiments)

    async def experiment_page(self, request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        summary = await run_in_threadpool(self.view.experiment, name)
        if summary is None:
            return self.not_found(request, f"no experiment {name!r} in {self.settings.workspace.root}")
        runs = await run_in_threadpool(_runs_page, self.view, name, request)
        fits = await run_in_threadpool(_fits, self.view, name)
        figures = summary.plots or ({"kind": "loss_curves"},)
        return self.page(request, "experiment.html", exp=summary, runs=runs, fits=fits, figures=figures,
                         query=_table_query(request))

    async def runs_fragment(self, request: Request) -> HTMLResponse:
        runs = await run_in_threadpool(_runs_page, self.view, request.path_params["name"], request)
        return self.page(request, "_runs.html", runs=runs, query=_table_query(request))

    async def runs_json(self, request: Request) -> JSONResponse:
        runs = await run_in_threadpool(_runs_page, self.view, request.path_params["name"], request)
        return JSONResponse({"columns": runs.columns, "rows": runs.rows, "total": runs.total,
                             "matching": runs.matching, "offset": runs.offset, "limit": runs.limit})

    async def counts_fragment(self, request: Request) -> HTMLResponse:
        summary = await run_in_threadpool(self.view.experiment, request.path_params["name"])
        return self.page(request, "_counts.html", exp=summary)

    async def fits_fragment(self, request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        return self.page(request, "_fits.html", exp=await run_in_threadpool(self.view.experiment, name),
                         fits=await run_in_threadpool(_fits, self.view, name))

    async def figure_json(self, request: Request) -> JSONResponse:
        name, index = request.path_params["name"], request.path_params["index"]
        return JSONResponse(await run_in_threadpool(figure_spec, self.view, name, index))

    async def version_json(self, request: Request) -> JSONResponse:
        """Changes when the database does (an ingest): pages then redraw their figures and fits."""
        return JSONResponse({"database": repr(self.view.db_signature())})

    async def run_page(self, request: Request) -> HTMLResponse:
        run = await run_in_threadpool(self.view.run_detail, request.path_params["run_id"])
        if run is None:
            return self.not_found(request, f"no run {request.path_params['run_id']!r}")
        if request.url.path.startswith("/fragments/"):
            return self.page(request, "_run_state.html", run=run)
        manifest = json.dumps(run.manifest, indent=2) if run.manifest else ""
        return self.page(request, "run.html", run=run, manifest=manifest)

    async def curve_json(self, request: Request) -> JSONResponse:
        run = await run_in_threadpool(self.view.run_detail, request.path_params["run_id"])
        if run is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        last = run.curve["step"].iloc[-1] if not run.curve.empty else None
        return JSONResponse({"spec": curve_spec(run.curve, f"{run.name}: loss ({run.curve_source})"),
                             "points": len(run.curve), "last_step": None if last is None else int(last),
                             "status": run.status.get("status"), "source": run.curve_source})

    async def sql_page(self, request: Request) -> HTMLResponse:
        form = _sql_form(request)
        queries = await run_in_threadpool(list_queries, self.settings.workspace)
        result, error = None, ""
        if form.active:
            try:
                result = await run_in_threadpool(_run_sql, self.view, form)
            except ScaledbError as exc:
                error = str(exc)
        table = _result_table(result) if result is not None else None
        csv_url = "/sql.csv?" + request.url.query if result is not None else ""
        return self.page(request, "sql.html", 400 if error else 200, queries=queries, form=form, table=table,
                         error=error, csv_url=csv_url)

    async def sql_csv(self, request: Request) -> Response:
        form = _sql_form(request)
        try:
            result = await run_in_threadpool(_run_sql, self.view, form)
        except ScaledbError as exc:
            return Response(f"Error: {exc}\n", status_code=400, media_type="text/plain")
        return Response(result.to_csv(index=False), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{form.name or "query"}.csv"'})


def _table_query(request: Request) -> dict[str, str]:
    """The runs table's own query parameters (filters, status, sort, page), kept across refreshes."""
    keep = ("status", "sort", "desc", "page")
    return {k: v for k, v in request.query_params.items() if (k in keep or k.startswith("f.")) and v != ""}


def _runs_page(view: WorkspaceView, name: str, request: Request):
    q = request.query_params
    try:
        page_no = max(1, int(q.get("page", "1")))
    except ValueError:
        page_no = 1
    filters = {k[2:]: v for k, v in q.items() if k.startswith("f.")}
    return view.runs_page(name, filters=filters, status=q.get("status", ""), sort=q.get("sort", "name"),
                          desc=q.get("desc", "") == "1", offset=(page_no - 1) * RUNS_PER_PAGE, limit=RUNS_PER_PAGE)


@dataclass(frozen=True)
class FitRow:
    name: str
    law: str
    n_points: str
    params: list[tuple[str, str, str]]  # (parameter, value, interval)


def _fits(view: WorkspaceView, experiment: str) -> list[FitRow] | None:
    """The experiment's stored fits with their intervals (None: database not readable now)."""
    df = view.cached(f"fits:{experiment}", lambda: view.query("fits", {"experiment": experiment}))
    if df is None:
        return None
    rows = []
    for fit in df.to_dict("records"):
        params = json.loads(fit["params"]) if isinstance(fit["params"], str) else {}
        intervals = json.loads(fit["intervals"]) if isinstance(fit.get("intervals"), str) else {}
        cells = []
        for key, value in params.items():
            lo_hi = intervals.get(key) if isinstance(intervals, dict) else None
            interval = (f"[{format_value(_num(lo_hi[0]))}, {format_value(_num(lo_hi[1]))}]"
                        if isinstance(lo_hi, list) and len(lo_hi) == 2 else "")
            cells.append((key, format_value(_num(value)), interval))
        rows.append(FitRow(name=str(fit.get("name") or fit["fit_id"]), law=str(fit["law"]),
                           n_points=format_value(fit.get("n_points")), params=cells))
    return rows


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class SqlForm:
    name: str
    sql: str
    params: dict[str, str]

    @property
    def active(self) -> bool:
        return bool(self.name or self.sql.strip())


def _sql_form(request: Request) -> SqlForm:
    q = request.query_params
    return SqlForm(name=q.get("name", ""), sql=q.get("sql", "") if not q.get("name") else "",
                   params={k[2:]: v for k, v in q.items() if k.startswith("p.") and v != ""})


def _run_sql(view: WorkspaceView, form: SqlForm) -> pd.DataFrame:
    if form.name:
        return view.query(form.name, params=form.params)
    if not form.sql.strip():
        raise QueryError("sql: nothing to run. Pick a named query or write a SELECT.")
    return view.query(sql=form.sql)


@dataclass(frozen=True)
class ResultTable:
    columns: list[str]
    rows: list[list[str]]
    total: int


def _result_table(df: pd.DataFrame) -> ResultTable:
    head = df.head(SQL_PAGE_ROWS)
    rows = [[_cell(v) for v in row] for row in head.itertuples(index=False, name=None)]
    return ResultTable(columns=[str(c) for c in df.columns], rows=rows, total=len(df))


def _cell(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return format_value(value)

