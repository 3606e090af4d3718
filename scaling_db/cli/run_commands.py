"""`scaledb run | status | coordcheck`: making runs happen and watching them."""

from __future__ import annotations

import fnmatch
import math
import sys
from typing import Any

import click

from scaling_db.cli import cli
from scaling_db.cli.cluster_commands import (
    add_backend_columns, backend_options, check_backend_options, run_on_backend,
)
from scaling_db.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_RUNS_FAILED,
    counted,
    echo_failed_runs,
    emit_json,
    get_workspace,
    ingest_as_done,
    json_option,
    load_runs,
    print_table,
    source_builder,
    workspace_option,
)
from scaling_db.cli.progress import progress_display
from scaling_db.cli.targets import collect_targets, resolve_targets
from scaling_db.errors import RunError, ScaledbError
from scaling_db.spec.plan import superseded_runs
from scaling_db.spec.revisions import SUPERSEDED_NOTE, revisions_of
from scaling_db.store.tables import DAMAGED
from scaling_db.training.execute import stale_running
from scaling_db.training.records import RunStatus, lost_final_checkpoint, scan_log
from scaling_db.workspace import Workspace


def _select(ws: Workspace, run_ids: list[str], patterns: tuple[str, ...]) -> list[str]:
    if not patterns:
        return run_ids
    keep = []
    for run_id in run_ids:
        name = ws.load_manifest(run_id).name
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(run_id, p) or run_id.startswith(p)
               for p in patterns):
            keep.append(run_id)
    return keep


def _fmt_loss(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def _above_uniform(status: str, eval_loss: float | None, vocab_size: int | None) -> bool:
    # A finished run whose final eval loss is above ln(vocab_size), the loss of guessing uniformly,
    # learned nothing: fits leave it out (report/analyses.py split_above_uniform).
    return (status == "finished" and eval_loss is not None and bool(vocab_size)
            and eval_loss > math.log(vocab_size))


def _run_files(ws: Workspace, run_id: str) -> tuple[Any, RunStatus | None, list[str]]:
    """(manifest or None, status or None, what is wrong with them): a damaged file is named, not fatal."""
    manifest = status = None
    damage = []
    try:
        manifest = ws.load_manifest(run_id) if ws.manifest_path(run_id).exists() else None
    except ScaledbError as exc:
        damage.append(f"{exc}; `scaledb check` names the repair")
    try:
        status = ws.read_status(run_id)
    except ScaledbError as exc:
        damage.append(f"{exc}; status shown as 'unknown' (`scaledb check` names the repair)")
    return manifest, status, damage


#: The status of a run a spec names that this workspace has not compiled (as the plan calls it).
NEW = "new"


def sweep_order(ws: Workspace) -> list[str]:
    """Every run here: each experiment's in sweep order (upstream first, then its earlier
    revisions' runs), then any others by id."""
    present = ws.run_ids()
    ordered: list[str] = []
    for experiment in ws.experiments():
        try:
            info = ws.experiment_info(experiment)
        except (ScaledbError, ValueError):  # a damaged experiment.json: its runs still show, by id
            continue
        ordered += [*info.get("upstream_run_ids", []), *info.get("run_ids", [])]
        ordered += [r for rev in reversed(revisions_of(info)) for r in rev.run_ids]
    known = set(present)
    return [r for r in dict.fromkeys(ordered) if r in known] + sorted(known - set(ordered))


def status_rows(ws: Workspace, run_ids: list[str]) -> list[dict[str, Any]]:
    """One row per run: status, last logged step of the total, last eval loss, error, and whether
    it finished above the uniform-guess loss. A run with a damaged manifest, or finished without
    its final checkpoint, shows as `damaged`; one with an unreadable status file as `unknown`."""
    rows = []
    for run_id in run_ids:
        manifest, status, damage = _run_files(ws, run_id)
        compiled = ws.manifest_path(run_id).exists()
        log = scan_log(ws.log_path(run_id))  # lines that are not records are skipped and named
        mine = [r for r in log.records if r.run_id == run_id]
        record = mine[-1] if mine else None
        state = status.status.value if status else "unknown"
        lost = lost_final_checkpoint(status.status, status.step, record.step if record else None,
                                     log.torn) if status else None
        if lost:
            damage.append(f"{ws.log_path(run_id)}: {lost}; fits leave the run out. Train it again: "
                          "`scaledb check --rerun-damaged`, then `scaledb run`")
        if lost or (status and manifest is None and compiled):
            state = DAMAGED
        elif not compiled:
            state = NEW  # a spec target not compiled in this workspace: nothing of it is here
        steps = None
        if manifest is not None:
            steps = manifest.train.steps if manifest.train.kind == "lm" else 1
        rows.append({
            "run_id": run_id,
            "name": manifest.name if manifest else None,
            "status": state,
            "step": record.step if record else None,
            "steps": steps,
            "eval_loss": record.eval_loss if record else None,
            "train_loss": record.train_loss if record else None,
            "error": status.error if status else None,
            "log_problems": [problem.format() for problem in log.problems],
            "damage": damage,
            "stale": bool(status and stale_running(ws, status)),  # `running`, but its process is gone
            "above_uniform": _above_uniform(state, record.eval_loss if record else None,
                                            manifest.counts.vocab_size if manifest else None),
        })
    return rows


def _print_status(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        click.echo("no runs (compile a spec with `scaledb compile`, or pass --workspace)")
        return
    jobs = any(r.get("job_id") for r in rows)  # runs placed on Slurm/Ray: show where, and the job's state
    print_table(title, ["run_id", "name", "status", "step", "eval loss", "error"]
                + (["backend", "job", "job state"] if jobs else []), [
        [r["run_id"], r["name"], r["status"] + (" (above uniform)" if r["above_uniform"] else "")
         + (" (superseded)" if r.get("superseded") else "")
         + (" (stale: no process holds it; `scaledb run` resumes it)" if r.get("stale") else ""),
         f"{r['step'] if r['step'] is not None else '-'}/{r['steps'] if r['steps'] is not None else '-'}",
         _fmt_loss(r["eval_loss"]), r["error"]]
        + ([r.get("backend"), r.get("job_id"), r.get("job_state")] if jobs else [])
        for r in rows
    ])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")
    above = sum(r["above_uniform"] for r in rows)
    if above:
        click.echo(f"{above} finished run(s) end above the uniform-guess loss ln(vocab_size): they learned "
                   f"nothing, and fits leave them out (`scaledb fit --keep-above-uniform` keeps them)")


def _warn_log_problems(rows: list[dict[str, Any]]) -> None:
    """Name the log lines that are not records (skipped by every reader) and the damaged run files on stderr."""
    problems = [problem for r in rows for problem in (*r["log_problems"], *r["damage"])]
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if problems:
        click.echo("`scaledb check` lists the damaged runs and the commands that repair them.", err=True)


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: one per CPU share, or one per GPU].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when available, else CPU.")
@click.option("--only", "only", multiple=True, metavar="PATTERN",
              help="Only runs whose name or id matches this glob (or id prefix); repeatable.")
@click.option("--force", is_flag=True, help="Re-run finished runs from scratch.")
@click.option("--retry-failed", is_flag=True, help="Run failed runs again (resuming from their saved state).")
@click.option("--runs-per-device", type=click.IntRange(min=1), default=None, metavar="K",
              help="Local: up to K runs share each GPU, as many as its free memory holds "
                   "[default: the spec's cluster.runs_per_device, else 1].")
@backend_options
@workspace_option
@json_option
def run(targets: tuple[str, ...], workers: int | None, device: str, only: tuple[str, ...], force: bool,
        retry_failed: bool, runs_per_device: int | None, backend: str, workspace: str | None, as_json: bool,
        **cluster: Any) -> None:
    """Run the pending runs of SPEC files (compiled first), manifests, experiments or run ids.

    Finished runs are skipped unless --force; failed ones unless --retry-failed. Interrupted
    runs resume where their last saved state left off. Ctrl-C stops cleanly (runs save their
    state); run the same command again to continue.

    --backend slurm|ray places the runs on a cluster (docs/scaling-out.md); the workspace must
    be on a filesystem the nodes share. Finished runs are loaded into the database as they end.
    """
    from runners.contract import merge_cluster
    from runners.local import run_local

    check_backend_options(backend, workers, cluster)
    if runs_per_device and backend != "local":
        raise RunError(f"--runs-per-device: the local backend's option (got --backend {backend}). "
                       "On Ray, give each run a fraction of a GPU with --gpus 0.25.")
    ws = get_workspace(workspace)
    chosen = collect_targets(ws, targets, write=True)  # each spec compiled once, here
    run_ids = _select(ws, chosen.run_ids, only)
    if not run_ids:
        raise RunError(f"no runs match {' '.join(only)!r}" if only else "no runs to run")
    progress = progress_display(ws, as_json)
    extra: dict[str, Any] = {}
    try:
        if backend != "local":
            report, extra = run_on_backend(ws, run_ids, chosen.clusters, backend=backend, flags=cluster,
                                           device=device, force=force, retry_failed=retry_failed,
                                           as_json=as_json, progress=progress, build_source=source_builder())
        else:
            spec_k = getattr(merge_cluster(chosen.clusters), "runs_per_device", None)
            with ingest_as_done(ws) as on_run_done:
                report = run_local(ws, run_ids, workers=workers, device=device, force=force,  # type: ignore[arg-type]
                                   retry_failed=retry_failed, on_run_done=on_run_done, progress=progress,
                                   build_source=source_builder(), runs_per_device=runs_per_device or spec_k or 1)
            for note in report.notes:
                click.echo(f"note: {note}", err=True)
    except KeyboardInterrupt:  # a second Ctrl-C: runs resume from their last saved state
        click.echo("Interrupted: runs resume from their last saved state; run the same command again.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    rows = status_rows(ws, run_ids)
    if backend != "local":
        rows = add_backend_columns(ws, rows)
    failures = report.failures()
    if as_json:
        emit_json({"runs": rows, "errors": report.errors, "failed": failures, "skipped": report.skipped,
                   "interrupted": report.interrupted, **extra})
    else:
        _print_run_summary(ws, rows, report.skipped, failures, targets)
        _warn_log_problems(rows)
    if report.interrupted:
        click.echo("Interrupted: runs saved their state; run the same command again to resume.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if failures:
        sys.exit(EXIT_RUNS_FAILED)
    # Waited for, yet not done: stopped by `scaledb cancel`. Not a success a script should go on from.
    stopped = [r for r, s in report.statuses.items() if not s.status.done] if report.waited else []
    if stopped:
        click.echo(f"Cancelled: {len(stopped)} run(s) stopped by `scaledb cancel` saved their state and are pending; "
                   "run the same command again to resume them.", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _print_run_summary(ws: Workspace, rows: list[dict[str, Any]], skipped: list[str], failures: dict[str, str],
                       targets: tuple[str, ...]) -> None:
    ran = [r for r in rows if r["run_id"] not in skipped]
    if ran:
        _print_status(ran)
    if skipped:
        earlier = [r for r in skipped if r in failures]
        click.echo(f"{counted(len(skipped), 'run')} already done (skipped; --force to re-run"
                   + (f"; {len(earlier)} of them failed: --retry-failed runs those again)" if earlier else ")"))
    echo_failed_runs(ws, failures, retry=f"scaledb run {' '.join(targets)} --retry-failed")


@cli.command()
@click.argument("targets", nargs=-1)
@workspace_option
@json_option
def status(targets: tuple[str, ...], workspace: str | None, as_json: bool) -> None:
    """List runs with status, last step and last eval loss (all runs, or those of TARGETS)."""
    ws = get_workspace(workspace).require_existing()
    run_ids = resolve_targets(ws, targets, write=False) if targets else sweep_order(ws)
    rows = add_backend_columns(ws, status_rows(ws, run_ids))  # job id and state on Slurm/Ray
    superseded = {e: superseded_runs(ws, e) for e in ws.experiments()}
    flagged = {r for ids in superseded.values() for r in ids}
    for row in rows:
        row["superseded"] = row["run_id"] in flagged
    if as_json:
        emit_json(rows)
        return
    _print_status(rows)
    if not rows and not targets:  # only then: a status of run files need not import duckdb
        _note_imported(ws)
    _warn_log_problems(rows)
    new = sum(r["status"] == NEW for r in rows)
    if new:
        click.echo(f"{new} run(s) not compiled in this workspace yet (status {NEW}): `scaledb compile SPEC` "
                   "writes them, `scaledb run SPEC` trains them.")
    for experiment, ids in superseded.items():
        shown = flagged.intersection(r["run_id"] for r in rows).intersection(ids)
        if shown:
            click.echo(f"{experiment}: {counted(len(shown), 'run')} {SUPERSEDED_NOTE}")


def _note_imported(ws: Workspace) -> None:
    """Imported experiments have no run files, so the status table (of run files) omits them: say
    they are in the database, where queries and fits find them."""
    from scaling_db.store.query import run_query

    if not ws.db_path.exists():
        return
    try:
        imported = run_query(ws, sql="SELECT r.experiment, count(*) AS n FROM runs AS r JOIN experiments AS e "
                                     "USING (experiment) WHERE e.source = 'import' GROUP BY 1 ORDER BY 1")
    except ScaledbError:  # a busy or damaged database: the table above is the run files' own account
        return
    for experiment, n in zip(imported["experiment"], imported["n"]):
        click.echo(f"{experiment}: {n} imported run(s) in the database (no run files to list; "
                   f"`scaledb query final_loss -p experiment={experiment}` shows them)")


def _parse_widths(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        widths = sorted({int(w) for w in value.replace(" ", "").split(",") if w})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers (got {value!r})") from None
    if len(widths) < 2:
        raise click.BadParameter("give at least two widths")
    return widths


@cli.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--widths", default="64,128,256,512", show_default=True, callback=_parse_widths,
              help="Comma-separated d_model values.")
@click.option("--steps", type=click.IntRange(min=1), default=4, show_default=True, help="Training steps per width.")
@click.option("--param", "params", multiple=True, type=click.Choice(["sp", "mup"]),
              help="Parameterizations to check [default: the spec's]; repeat to compare.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@workspace_option
@json_option
def coordcheck(spec: str, widths: list[int], steps: int, params: tuple[str, ...], device: str,
               workspace: str | None, as_json: bool) -> None:
    """Train SPEC's model a few steps at several widths; show mean |activation| per layer.

    Under muP each row should stay flat across widths; under SP (with Adam) hidden and output
    activations grow. Values are stored as metrics of the runs of `<experiment>-coordcheck`
    and in reports/<experiment>-coordcheck/coordcheck.json.
    """
    from runners.local import run_local
    from scaling_db.training.coordcheck import (
        collect_coordcheck,
        coordcheck_experiment,
        growth,
        spread_by_layer,
        write_coordcheck,
    )

    ws = get_workspace(workspace)
    compiled = coordcheck_experiment(spec, widths=widths, steps=steps, parameterizations=params or None)
    ws.write_compiled(compiled)
    run_ids = [m.run_id for m in compiled.runs]
    report = run_local(ws, run_ids, workers=1, device=device, build_source=source_builder())  # type: ignore[arg-type]
    load_runs(ws, run_ids)  # all of them, also those finished by an earlier coordcheck
    if report.interrupted:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    for run_id, error in report.errors.items():
        raise RunError(f"coordinate-check run {run_id}: {error}")
    points = collect_coordcheck(ws, compiled)
    path = write_coordcheck(ws, compiled.experiment, points)
    if as_json:
        emit_json({"experiment": compiled.experiment, "file": str(path),
                   "points": [p.__dict__ for p in points]})
        return
    table = spread_by_layer(points, steps)
    shown = sorted(widths)
    rows = [[kind, layer, *(f"{vals.get(w, float('nan')):.3g}" for w in shown), f"{growth(vals):.2f}x"]
            for (kind, layer), vals in table.items()]
    print_table(f"mean |activation| after {steps} steps", ["param", "layer", *(f"d={w}" for w in shown),
                f"d={shown[-1]} / d={shown[0]}"], rows)
    click.echo(f"all steps: {path}")
