"""`scaledb data inspect`: what a spec's data sources look like before anything trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scaling_db.cli import cli
from scaling_db.cli.common import console, emit_json, get_workspace, json_option, workspace_option
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.manifest import canonical_json

N_SAMPLES = 3
SAMPLE_LEN = {"graph_walk": 16, "language_bigram": 80, "teacher_lm": 80, "corpus": 80}


@cli.group("data")
def data_group() -> None:
    """Look at data sources."""


def inspect_data(data: Any, *, base_dir: Path, cache_dir: Path, runs_dir: Path | None = None) -> dict[str, Any]:
    """describe() of one data config plus a few decoded sample sequences (token sources)."""
    kind = data.kind
    if kind == "random_features":
        from scaling_db.sources.random_features import describe_random_features

        return describe_random_features(data)
    if kind == "percolation":
        from scaling_db.sources.percolation import describe_percolation

        return describe_percolation(data, cache_dir)
    from scaling_db.sources import build_source

    source = build_source(data, base_dir=base_dir, cache_dir=cache_dir, runs_dir=runs_dir)
    info = source.describe()
    tokens = source.batch("train", 0, N_SAMPLES, SAMPLE_LEN.get(kind, 32))
    info["samples"] = [source.decode(row) for row in tokens]
    return info


@data_group.command("inspect")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@json_option
@workspace_option
def inspect_cmd(spec: str, as_json: bool, workspace: str | None) -> None:
    """Vocab size, entropy rate, degree/frequency statistics and samples of each data source in SPEC.

    Builds (and caches in the workspace) what the sources need: graphs, tokenizers. A
    teacher_lm source samples from its teacher run, which `scaledb run SPEC` trains first."""
    compiled = compile_spec(spec)
    ws = get_workspace(workspace)
    cache_dir = ws.cache_dir
    seen: dict[str, Any] = {}
    for run in compiled.runs:
        seen.setdefault(canonical_json(run.data.model_dump(mode="json")), run)
    out = []
    for run in seen.values():
        info = inspect_data(run.data, base_dir=Path(run.origin.base_dir), cache_dir=cache_dir, runs_dir=ws.runs_dir)
        out.append({"data": run.data.model_dump(mode="json"), **info})
    if as_json:
        emit_json(out)
        return
    con = console()
    for i, info in enumerate(out):
        con.print(f"[bold]source {i + 1} of {len(out)}: {info['kind']}[/bold]")
        for key, value in info.items():
            if key in ("data", "kind", "samples"):
                continue
            con.print(f"  {key}: {_fmt(value)}", markup=False)
        for sample in info.get("samples", []):
            con.print(f"  sample: {sample!r}", markup=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value)
    return str(value)
