"""Benchmarks of the `scaledb serve` dashboard over a big workspace (issue 14 targets in brackets).

    python benchmarks/bench_serve.py                        # 10,000 runs x 1,000 checkpoints = 10M rows
    python benchmarks/bench_serve.py --runs 1000            # a quicker pass (1M rows)

The database is built in SQL (as benchmarks/bench_store.py builds its query database): one
experiment of N runs sweeping width (6 values), learning rate (5) and seed, K checkpoints each.
Requests go through Starlette's TestClient (the app in this process, no network):

1. the experiment page (summary, counts, first page of the runs table, fits) [< 1 s];
2. the runs table filtered by a sweep column and sorted by final loss [< 1 s];
3. the experiment's loss-curve figure (Vega-Lite JSON), cold (first build after the database
   changed) and warm (cached) [< 1 s]; and, on a second experiment of `--baseline-runs` runs
   (the baseline does not finish in reasonable time on 10M rows), the dashboard's cold figure
   against what `scaledb plot loss_curves` does: `build_figure` over the full `loss_curves`
   query (every checkpoint row) and Altair's validating `to_dict`;
4. one run's page and its curve from the database [< 1 s].

Each request is timed first (cold: the database is read) and then as the median of 3 more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlette.testclient import TestClient  # noqa: E402

from scaling_db.report.figures import FigureRequest, build_figure  # noqa: E402
from scaling_db.serve.app import ServeSettings, create_app  # noqa: E402
from scaling_db.store.database import open_store  # noqa: E402
from scaling_db.workspace import Workspace  # noqa: E402


def build_database(ws: Workspace, experiment: str, n_runs: int, per_run: int, first: int = 0) -> float:
    """Experiment `experiment` of n_runs runs x per_run checkpoints (run ids from `first`); seconds taken."""
    t0 = time.perf_counter()
    with open_store(ws) as con:
        con.execute("INSERT INTO experiments (experiment, source, n_planned, created_at, updated_at) "
                    f"VALUES ('{experiment}', 'spec', {n_runs}, now()::TIMESTAMP, now()::TIMESTAMP)")
        con.execute(f"""
            INSERT INTO runs (run_id, experiment, name, status, n_params, n_params_nonembed, d_model, lr, seed,
                              parameterization, tokens_budget, vars, manifest, ingested_at)
            SELECT printf('r%011d', i), '{experiment}', 'run-' || i,
                   CASE WHEN i % 50 = 0 THEN 'running' WHEN i % 97 = 0 THEN 'failed' ELSE 'finished' END,
                   1000 * (16 << (i % 6)), 500 * (16 << (i % 6)), 16 << (i % 6), 1e-3 * (1 + (i // 6) % 5),
                   i // 30, 'sp', {per_run} * 3200, '{{}}', '{{}}', now()::TIMESTAMP
            FROM range({first}, {first + n_runs}) t(i)""")
        con.execute(f"""
            INSERT INTO checkpoints
            SELECT printf('r%011d', i), s, s * 3200,
                   3.0 * n * s * 3200, 6.0 * n * s * 3200, 6.6 * n * s * 3200,
                   1.8 + 3.0 / pow(s, 0.3) + 1e2 / n + 0.01, 1.8 + 3.0 / pow(s, 0.3) + 1e2 / n,
                   3e-3, 0.01 * s, 320000.0
            FROM (SELECT i, 1000 * (16 << (i % 6)) AS n FROM range({first}, {first + n_runs}) t(i)) AS r,
                 range(1, {per_run} + 1) u(s)""")
    return time.perf_counter() - t0


def timed(fn, repeat: int = 3) -> tuple[float, float, object]:
    """(first call s, median of `repeat` more s, last result)."""
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), result


def get(client: TestClient, url: str, **params):
    response = client.get(url, params=params)
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="work here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--baseline-runs", type=int, default=100,
                        help="runs of the experiment the baseline figure is drawn for (0: skip it)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_serve_"))
    ws = Workspace(root / "ws")
    built = build_database(ws, "bench", args.runs, args.checkpoints)
    if args.baseline_runs:
        built += build_database(ws, "small", args.baseline_runs, args.checkpoints, first=args.runs)
    print(f"built {args.runs:,} + {args.baseline_runs:,} runs x {args.checkpoints:,} checkpoints = "
          f"{(args.runs + args.baseline_runs) * args.checkpoints:,} rows in {built:.1f} s")
    client = TestClient(create_app(ServeSettings(workspace=ws)))
    out: dict[str, float] = {"runs": args.runs, "rows": args.runs * args.checkpoints}

    cases = {
        "experiment_page": lambda: get(client, "/experiments/bench"),
        "runs_table_filtered_sorted": lambda: get(client, "/fragments/experiments/bench/runs",
                                                  **{"f.d_model": "64", "sort": "final_eval_loss", "page": "3"}),
        "runs_json_page_100": lambda: get(client, "/api/experiments/bench/runs", page="100"),
        "loss_curves_figure": lambda: get(client, "/api/experiments/bench/figures/0"),
        "run_page": lambda: get(client, "/runs/r00000000042"),
        "run_curve": lambda: get(client, "/api/runs/r00000000042/curve"),
    }
    for name, fn in cases.items():
        first, warm, response = timed(fn)
        size = len(response.content)
        print(f"{name}: first {first:.2f} s, then median {warm:.3f} s, {size / 1e3:,.0f} kB [target < 1 s]")
        out[f"{name}_first_s"], out[f"{name}_s"] = first, warm
    figure = json.loads(get(client, "/api/experiments/bench/figures/0").content)
    if "error" in figure:
        raise SystemExit(f"loss_curves figure failed: {figure['error']}")

    if args.baseline_runs:
        t0 = time.perf_counter()
        get(client, "/api/experiments/small/figures/0")
        dashboard = time.perf_counter() - t0
        t0 = time.perf_counter()
        spec = build_figure(ws, FigureRequest(kind="loss_curves", experiment="small")).to_dict()
        baseline = time.perf_counter() - t0
        print(f"{args.baseline_runs} runs: dashboard figure cold {dashboard:.2f} s vs `scaledb plot`'s loss_curves "
              f"{baseline:.2f} s ({len(json.dumps(spec)) / 1e6:.1f} MB): {baseline / dashboard:.0f}x faster")
        out["small_figure_s"], out["baseline_small_figure_s"] = dashboard, baseline
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
