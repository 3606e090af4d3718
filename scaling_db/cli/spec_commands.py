"""`scaledb validate | compile | schema | diff`: the spec front half."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scaling_db.cli import cli
from scaling_db.cli.common import (
    counted, emit_json, get_workspace, json_option, print_table, sync_revisions, workspace_option,
)
from scaling_db.spec.compiler import (
    DEFAULT_MAX_RUNS, CompiledExperiment, QueryLookup, compile_source, is_analysis_only, validate_analysis_only,
)
from scaling_db.spec.loader import read_spec_source
from scaling_db.errors import QueryError, RunError, SpecError
from scaling_db.spec.manifest import RunManifest, diff_manifests
from scaling_db.spec.plan import (
    DEFAULT_GFLOPS, PlanRow, ThroughputSample, estimate_run, plan_rows, summarize_plan, superseded_runs,
)
from scaling_db.spec.revisions import SUPERSEDED_NOTE
from scaling_db.spec.schema import spec_json_schema

SPEC_PATHS = click.argument("specs", nargs=-1, required=True, type=click.Path())  # files or folders of specs
SMOKE = click.option("--smoke", is_flag=True, help="Use each spec's `smoke:` size (a quick check of the pipeline).")
MAX_RUNS = click.option(
    "--max-runs", type=click.IntRange(min=1), default=DEFAULT_MAX_RUNS, show_default=True,
    help="Refuse a spec whose sweep has more points than this (checked before expanding it).",
)
#: A `.sql` file named by a spec is a page of SQL; anything larger is not a query.
MAX_QUERY_FILE_BYTES = 1024 * 1024


def query_check(ws: Any) -> Callable[[str], QueryLookup]:
    """For `compile_spec(find_query=...)`: why a query a spec names cannot be used, or its columns.

    Named queries are looked up as `scaledb query` does (`store.query.load_query`); a `.sql`
    path must be a small regular file inside the current directory (the project).
    """

    def find(name: str) -> QueryLookup:
        from scaling_db.store.query import load_query  # the store stage; only when a spec has fits

        if name.endswith(".sql"):
            path = Path(name)
            try:
                inside = path.resolve().is_relative_to(Path.cwd().resolve())
                info = os.stat(path)
            except (OSError, RuntimeError, ValueError):
                return QueryLookup(f"no such query file: {name}")
            if not inside:
                return QueryLookup(f"query file {name} is outside the project ({Path.cwd()})")
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_QUERY_FILE_BYTES:
                return QueryLookup(f"query file {name} is not a regular file of at most 1 MiB")
        try:
            return QueryLookup(columns=load_query(name, ws).columns)
        except QueryError as exc:
            return QueryLookup(str(exc))
        except (OSError, UnicodeDecodeError) as exc:
            return QueryLookup(f"cannot read query file {name} ({type(exc).__name__})")

    return find


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def run_json(manifest: RunManifest, state: str) -> dict[str, Any]:
    """The machine-readable view of one compiled run (used by compile --json and status)."""
    dumped = manifest.model_dump(mode="json")
    return {
        "run_id": manifest.run_id,
        "name": manifest.name,
        "experiment": manifest.experiment,
        "state": state,
        "n_params": manifest.counts.n_params,
        "n_params_nonembed": manifest.counts.n_params_nonembed,
        "tokens": manifest.tokens,
        "train_flops": manifest.train_flops,
        "vars": manifest.vars,
        "upstream_runs": manifest.upstream,  # runs that must finish before this one starts
        "params": _flatten({k: dumped[k] for k in ("data", "model", "train")}),
        "resources": dumped["resources"],
    }


@cli.command()
@SPEC_PATHS
@workspace_option
@json_option
@MAX_RUNS
@SMOKE
def validate(specs: tuple[str, ...], workspace: str | None, as_json: bool, max_runs: int, smoke: bool) -> None:
    """Check spec files without writing anything.

    Every problem of every file is listed at once, one line each: FILE:LINE FIELD: WHAT. The
    workspace is only read, for the queries it adds (`<workspace>/queries/`). A folder stands
    for every spec directly in it.
    """
    from scaling_db.spec.collection import expand_spec_paths

    results, failed = [], []
    find_query = query_check(get_workspace(workspace))
    for path in map(str, expand_spec_paths(specs)):
        try:
            source = read_spec_source(path, smoke=smoke)
            if is_analysis_only(source):  # trains nothing: its analyses read other experiments
                study = validate_analysis_only(source, find_query)
                results.append({"spec": path, "valid": True, "experiment": study.experiment, "runs": 0,
                                "analyses": list(study.analysis.experiments)})
                if not as_json:
                    click.echo(f"ok  {path}: {study.experiment}, analysis only (of "
                               f"{', '.join(study.analysis.experiments)})")
                continue
            compiled = compile_source(source, max_runs, find_query)
        except SpecError as exc:
            failed.append(exc)
            results.append({"spec": path, "valid": False, "problems": [
                {"file": p.file, "line": p.line, "field": p.field, "message": p.message} for p in exc.problems
            ]})
            continue
        results.append({"spec": path, "valid": True, "experiment": compiled.experiment,
                        "runs": len(compiled.runs), "dropped": len(compiled.dropped)})
        if not as_json:
            click.echo(f"ok  {path}: {compiled.experiment}, {len(compiled.runs)} runs"
                       + (f", {len(compiled.dropped)} points dropped" if compiled.dropped else ""))
    if as_json:
        emit_json(results)
    if failed:
        if as_json:
            raise SystemExit(1)
        raise SpecError.combine(failed)


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _estimate_json(row: PlanRow, samples: list[ThroughputSample], gflops: float, host: str) -> dict[str, Any]:
    """The serial wall-time estimate of a run not yet finished, as the printed plan sums them."""
    if row.state == "finished":
        return {"est_seconds": None, "est_source": None, "est_basis": None}
    est = estimate_run(row.manifest, samples, gflops, host)
    return {"est_seconds": est.seconds, "est_source": est.source, "est_basis": est.basis}


def _print_plan(compiled: CompiledExperiment, rows: list[PlanRow], gflops: float, dry_run: bool,
                superseded: list[str], samples: list[ThroughputSample]) -> None:
    s = summarize_plan(compiled, rows, gflops, samples, socket.gethostname())
    verb = "would write" if dry_run else "compiled"
    upstream = f" + {s.n_upstream} upstream (trained first)" if s.n_upstream else ""
    click.echo(f"\n{compiled.experiment} ({compiled.spec_path}): {verb} {s.n_runs} runs{upstream} "
               f"({s.counts_line})")
    click.echo(f"  parameters      {_human(s.params[0])} - {_human(s.params[1])} total, "
               f"{_human(s.params_nonembed[0])} - {_human(s.params_nonembed[1])} non-embedding")
    click.echo(f"  tokens          {_human(s.tokens[0])} - {_human(s.tokens[1])} per run, "
               f"{_human(s.tokens_total)} in all")
    if s.flops is not None:
        click.echo(f"  training FLOPs  {s.flops['exact']:.3g} (exact: Chinchilla App. F); "
                   f"{s.flops['6n']:.3g} (6N); {s.flops['6n_nonembed']:.3g} (6N non-embedding, Kaplan)")
    if s.wall_time_s is not None:
        click.echo(f"  est. wall time  {s.wall_time_text} for the {counted(s.n_todo, 'run')} not yet finished, serially")
        for basis, n in sorted(s.wall_time_basis.items(), key=lambda kv: -kv[1]):
            hint = " (exact FLOPs; change with --gflops)" if basis.startswith("FLOP-based") else ""
            click.echo(f"                  {n} run{'s' * (n != 1)}: {basis}{hint}")
    if superseded:
        click.echo(f"  superseded      {counted(len(superseded), 'run')} {SUPERSEDED_NOTE}")
    for d in compiled.dropped:
        shown = ", ".join(f"{k}={v}" for k, v in d.assignments.items())
        click.echo(f"  dropped         {shown or '(base point)'}: {d.reason}")
    print_table(None, ["run_id", "name", "state", "params", "non-emb", "tokens", "FLOPs (exact)"], [
        [r.manifest.run_id, r.manifest.name, f"{r.state} (upstream)" if r.upstream else r.state,
         _human(r.manifest.counts.n_params),
         _human(r.manifest.counts.n_params_nonembed), _human(r.manifest.tokens),
         f"{r.manifest.train_flops['exact']:.3g}" if r.manifest.train_flops else "-"]
        for r in rows
    ])


@cli.command(name="compile")
@SPEC_PATHS
@workspace_option
@json_option
@click.option("--dry-run", is_flag=True, help="Show the plan without writing to the workspace.")
@click.option("--gflops", type=float, default=DEFAULT_GFLOPS, show_default=True,
              help="Throughput assumed for the wall-time estimate of runs with no measured run of a "
                   "similar shape in the workspace (GFLOP/s of one worker).")
@MAX_RUNS
@SMOKE
def compile_cmd(
    specs: tuple[str, ...], workspace: str | None, as_json: bool, dry_run: bool, gflops: float, max_runs: int,
    smoke: bool,
) -> None:
    """Expand specs into run manifests in the workspace and print the plan.

    Compiling again after adding a sweep point adds exactly the new runs; finished runs
    keep their results. A folder stands for every spec directly in it.
    """
    from scaling_db.spec.collection import expand_spec_paths

    ws = get_workspace(workspace)
    find_query = query_check(ws)
    # all validated before anything is written
    sources = [read_spec_source(path, smoke=smoke) for path in expand_spec_paths(specs)]
    for source in sources:
        if is_analysis_only(source):
            validate_analysis_only(source, find_query)
            raise click.UsageError(f"{source.path}: an analysis-only spec trains nothing, so there is nothing "
                                   f"to compile; `scaledb fit` or `scaledb reproduce` runs its analyses.")
    compiled_all = [compile_source(source, max_runs, find_query) for source in sources]
    out: list[dict[str, Any]] = []
    from scaling_db.store.throughput import measured_throughput  # duckdb: imported only when needed

    samples: list[ThroughputSample] = measured_throughput(ws)
    host = socket.gethostname()
    for compiled in compiled_all:
        rows = plan_rows(ws, compiled)
        superseded = superseded_runs(ws, compiled.experiment, compiled)
        if not dry_run:
            ws.write_compiled(compiled)
        if as_json:
            out += [{**run_json(r.manifest, r.state), "upstream": r.upstream,
                     **_estimate_json(r, samples, gflops, host)} for r in rows]
        else:
            _print_plan(compiled, rows, gflops, dry_run, superseded, samples)
    if not dry_run:
        sync_revisions(ws)
    if as_json:
        emit_json(out)
    elif not dry_run:
        click.echo(f"\nmanifests in {ws.runs_dir}")


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def schema(out: str | None) -> None:
    """Print the JSON Schema of the spec format (for YAML language servers)."""
    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


def _find_manifest(ws: Any, prefix: str) -> RunManifest:
    hits = ws.find_runs(prefix)
    if not hits:
        raise RunError(f"{ws.root}: no run id starts with {prefix!r}. `scaledb status` lists runs.")
    if len(hits) > 1:
        raise RunError(f"{ws.root}: {prefix!r} matches {len(hits)} runs ({', '.join(hits[:5])}...). Give more digits.")
    return ws.load_manifest(hits[0])


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@workspace_option
@json_option
def diff(run_a: str, run_b: str, workspace: str | None, as_json: bool) -> None:
    """Show the manifest fields that differ between two runs (ids or unique prefixes)."""
    ws = get_workspace(workspace)
    a, b = _find_manifest(ws, run_a), _find_manifest(ws, run_b)
    changes = diff_manifests(a, b)
    if as_json:
        emit_json([{"field": f, "a": x, "b": y} for f, x, y in changes])
        return
    if not changes:
        click.echo("the manifests are identical")
        return
    print_table(f"{a.run_id} ({a.name})  vs  {b.run_id} ({b.name})", ["field", a.run_id, b.run_id],
                [[f, json.dumps(x), json.dumps(y)] for f, x, y in changes])
