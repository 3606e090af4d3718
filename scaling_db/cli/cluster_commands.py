"""Cluster backends on the command line: `scaledb run --backend slurm|ray`, `scaledb cancel`,
and the backend columns of `scaledb status`.

`run_commands` owns `run` and `status`; it takes the backend options from `backend_options`
and hands non-local runs, with the specs' typed `cluster:` sections, to `run_on_backend`. Results: workers write their runs' files in the
shared workspace, and this process (the driver) loads each run into the database as it ends,
so the DuckDB file has one writer. After `--no-wait`, `scaledb ingest` loads them later.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from scaling_db.cli import cli
from scaling_db.cli.common import counted, emit_json, get_workspace, json_option, workspace_option
from scaling_db.cli.targets import resolve_targets
from scaling_db.errors import ScaledbError
from scaling_db.training.records import RunStatus
from scaling_db.workspace import Workspace

if TYPE_CHECKING:
    from runners.contract import ProgressSink, RunReport
    from scaling_db.spec.schema import ClusterSpec
    from scaling_db.training.execute import SourceBuilder

BACKENDS = ("local", "slurm", "ray")


def backend_options(fn: Any) -> Any:
    """The `--backend` choice and the options of the cluster backends (unset: the spec's `cluster:`)."""
    options = [
        click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True,
                     help="Where the runs go: this machine, a Slurm cluster (submitit job array) or Ray tasks."),
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--time-min", type=click.IntRange(min=1), default=None,
                     help="Slurm time limit per run, minutes [default: 60; keep >= 60 if runs may be preempted]."),
        click.option("--cpus", type=click.IntRange(min=1), default=None,
                     help="CPUs per run (Slurm cpus-per-task, Ray num_cpus; also torch threads) [default: 1]."),
        click.option("--gpus", type=click.FloatRange(min=0), default=None,
                     help="GPUs per run (Slurm: whole GPUs; Ray: fractions allowed) [default: 0]."),
        click.option("--mem-gb", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Memory per run, GB (Slurm --mem; Ray memory)."),
        click.option("--array-parallelism", type=click.IntRange(min=1), default=None,
                     help="Slurm: at most this many runs of the array at once."),
        click.option("--no-wait", is_flag=True,
                     help="Slurm: return right after submitting (follow with `scaledb status`, "
                          "load results with `scaledb ingest`)."),
        click.option("--address", default=None,
                     help="Ray cluster address ('auto', 'ray://host:10001') [default: start a local instance]."),
        click.option("--max-retries", type=click.IntRange(min=0), default=None,
                     help="Ray: re-runs of a run whose worker died (it resumes from its saved state) [default: 3]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


#: Which backend each option is for (the others would silently ignore it, so they refuse it).
_OPTION_BACKENDS = {
    "partition": ("slurm",), "time_min": ("slurm",), "array_parallelism": ("slurm",), "no_wait": ("slurm",),
    "cpus": ("slurm", "ray"), "gpus": ("slurm", "ray"), "mem_gb": ("slurm", "ray"),
    "address": ("ray",), "max_retries": ("ray",),
}


def check_backend_options(backend: str, workers: int | None, cluster: dict[str, Any]) -> None:
    """Refuse options that the chosen backend would ignore (a usage error, before any work)."""
    wrong = [f"--{name.replace('_', '-')}" for name, value in cluster.items()
             if value not in (None, False) and backend not in _OPTION_BACKENDS.get(name, (backend,))]
    if workers is not None and backend != "local":
        wrong.append("--workers")
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)}: not used by --backend {backend}")


def _ingest_one(ws: Workspace, problems: list[str]) -> Any:
    """`on_run_done` for the drivers: load the run into the database now (this process is its writer)."""
    from scaling_db.store.ingest import ingest_runs

    def ingest(run_id: str) -> None:
        try:
            ingest_runs(ws, [run_id])
        except ScaledbError as exc:  # e.g. the database is locked by another writer: retry later
            problems.append(f"{run_id}: not loaded into the database ({exc}); run `scaledb ingest` later")

    return ingest


def run_on_backend(
    ws: Workspace, run_ids: list[str], clusters: list["ClusterSpec"], *, backend: str, flags: dict[str, Any],
    device: str, force: bool, retry_failed: bool, as_json: bool, progress: "ProgressSink | None",
    build_source: "SourceBuilder",
) -> tuple["RunReport", dict[str, Any]]:
    """Run on Slurm or Ray; returns the report and the extra JSON fields of `scaledb run --json`.

    `flags` holds the command-line backend options (None: not given); they override the
    specs' `cluster:` sections (later specs override earlier ones).
    """
    from runners.contract import build_options, in_waves, merge_cluster

    flags = dict(flags)
    wait = not flags.pop("no_wait", False)
    given = {k: v for k, v in flags.items() if v is not None}
    cluster = merge_cluster(clusters)
    problems: list[str] = []
    on_done = _ingest_one(ws, problems)
    if backend == "slurm":
        from runners.slurm import SlurmOptions, run_slurm

        slurm_options = build_options(SlurmOptions, cluster, given, "slurm")
        report = in_waves(ws, run_ids, lambda ids: run_slurm(
            ws, ids, slurm_options, device=device, force=force, retry_failed=retry_failed, wait=wait,
            on_run_done=on_done, progress=progress, build_source=build_source), wait=wait, retry_failed=retry_failed)
    else:
        from runners.ray_runner import RayOptions, run_ray

        ray_options = build_options(RayOptions, cluster, given, "ray")
        report = in_waves(ws, run_ids, lambda ids: run_ray(
            ws, ids, ray_options, device=device, force=force, retry_failed=retry_failed, on_run_done=on_done,
            progress=progress, build_source=build_source), wait=True, retry_failed=retry_failed)
    extra = {"backend": backend, "jobs": report.jobs, "waited": report.waited, "folder": report.folder,
             "in_flight": report.in_flight, "ingest_problems": problems}
    if not as_json:
        _print_submission(report, backend, problems)
    return report, extra


def _print_submission(report: "RunReport", backend: str, problems: list[str]) -> None:
    if report.jobs:
        ids = sorted(set(report.jobs.values()))
        shown = ", ".join(ids[:6]) + (f", ... ({len(ids)} in all)" if len(ids) > 6 else "")
        click.echo(f"{counted(len(report.jobs), 'run')} submitted to {backend}: {shown}"
                   + (f"\njob files and logs: {report.folder}" if report.folder else ""))
    for run_id, job in report.in_flight.items():
        click.echo(f"{run_id}: already queued or running ({job}); not submitted again")
    if not report.waited and report.jobs:
        click.echo("Not waiting (the jobs run on): follow with `scaledb status`, stop with `scaledb cancel`, "
                   "load results with `scaledb ingest`.")
    for line in problems:
        click.echo(line, err=True)


def _read_status(ws: Workspace, run_id: str) -> RunStatus:
    try:
        return ws.read_status(run_id)
    except ScaledbError:  # unreadable: `status` shows the run as unknown and names the file
        return RunStatus(run_id=run_id)


def add_backend_columns(ws: Workspace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `backend`, `job_id` and the backend's own `job_state` to `scaledb status` rows."""
    from runners.jobs import backend_states

    statuses = [_read_status(ws, r["run_id"]) for r in rows]
    states = backend_states(statuses)
    for row, status in zip(rows, statuses):
        row["backend"] = status.backend
        row["job_id"] = status.job_id
        row["job_state"] = states.get(status.run_id)
    return rows


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--wait-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long running Slurm jobs get to save their runs' state before `scancel`.")
@workspace_option
@json_option
def cancel(targets: tuple[str, ...], wait_s: float, workspace: str | None, as_json: bool) -> None:
    """Cancel the queued and running runs of SPEC files, experiments or run ids (any backend).

    Running runs save their state and go back to pending; queued Slurm jobs are removed with
    scancel; queued Ray tasks end without starting. `scaledb run` resumes them later.
    """
    from runners.jobs import cancel_runs

    ws = get_workspace(workspace)
    run_ids = resolve_targets(ws, targets, write=False)
    report = cancel_runs(ws, run_ids, wait_s=wait_s)
    if as_json:
        emit_json({"cancelled": report.cancelled, "already_done": report.already_done,
                   "backend_errors": report.backend_errors})
    else:
        click.echo(f"{counted(len(report.cancelled), 'run')} cancelled, {len(report.already_done)} already done")
        for line in report.backend_errors:
            click.echo(f"warning: {line}", err=True)
    if report.backend_errors:
        sys.exit(1)
