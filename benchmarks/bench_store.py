"""Benchmarks of the result database (issue 4 targets in brackets).

    python benchmarks/bench_store.py                  # 1,000 logs x 1,000 checkpoints, 10M query rows
    python benchmarks/bench_store.py --runs 200 --query-rows 1000000   # a quicker pass

1. Ingest throughput, checkpoint rows/s, loading N run logs of K checkpoints into an empty
   database [>= 500,000 rows/s for 1,000 x 1,000], against a naive row-by-row `executemany`
   into the same table on a subsample; plus re-ingesting the unchanged workspace.
2. Loading one finished run of K checkpoints as a runner would, `ingest_runs(ws, [run_id])`
   from open to close, into the database of step 1 [< 50 ms for 1,000 checkpoints], beside its
   floor in the same run: DuckDB alone adding the same rows, parsed beforehand, to the same
   database (connect, INSERT from Arrow, commit, close); and 4 or 16
   runs finishing together through the background `RunLoader` (time per run until all are in
   the file, and what the runner itself waits).
3. The limits, measured in the same run on the same rows: DuckDB inserting them (checkpoints, and
   metrics when `--metrics` > 0) from Arrow tables already in memory into an empty database of the
   same schema (same tables, same constraints), open to close (the least any loader pays: column
   storage and the closing checkpoint), and parsing the same logs with the fastest JSON readers at
   hand (pyarrow.json over one buffer, DuckDB's read_json over the files). Target: ingest >= 1/3
   of the Arrow-insert rate in any run (>= 1,000,000 rows/s on a quiet machine).
4. Query latency of `final_loss` and `compute_frontier` through `run_query` (open read-only,
   run, DataFrame, close) over a database of `--query-rows` checkpoint rows [< 1 s each].

Wall time and CPU time (all threads) are both printed: on a shared machine the wall time says
what a user waits, CPU seconds say what the work costs. Logs are read from the page cache
(they were just written), as they are when a sweep's runs have just finished.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling_db.spec.compiler import compile_spec  # noqa: E402
from scaling_db.store.ingest import _open_for_load, ingest_runs  # noqa: E402
from scaling_db.store.loader import RunLoader  # noqa: E402
from scaling_db.store.query import run_query  # noqa: E402
from scaling_db.store.database import MIGRATIONS, open_store  # noqa: E402
from scaling_db.workspace import Workspace  # noqa: E402

LINE = ('{{"run_id":"{rid}","step":{step},"tokens":{tokens},"flops_6n_nonembed":{f1!r},"flops_6n":{f2!r},'
        '"flops_exact":{f3!r},"train_loss":{tl!r},"eval_loss":{el!r},"lr":{lr!r},"wall_time_s":{wt!r},'
        '"tokens_per_s":320000.0,"metrics":{{{metrics}}}}}\n')


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: Metric names per record: what the trainer writes for a 2-layer model (mean |activation| of the
#: embedding, the logits, and each block's attention, MLP and residual output); `--metrics`.
METRICS = ["embed", "logits"] + [f"block{i}.{part}" for i in range(2) for part in ("attn", "mlp", "out")]


def write_run(ws: Workspace, template: dict, index: int, checkpoints: int, n_metrics: int = 0) -> str:
    """A finished run: manifest (the template with its own id and width), status, and log."""
    rid = f"b{index:011x}"
    width = (16, 32, 64, 128)[index % 4]
    n_params = 1000 * width
    manifest = json.loads(json.dumps(template))
    manifest.update(run_id=rid, name=f"bench-{index}")
    manifest["model"]["d_model"] = width
    manifest["counts"]["n_params"] = n_params
    run_dir = ws.run_dir(rid)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    for step in range(1, checkpoints + 1):
        tokens = step * 3200
        loss = 1.8 + 3.0 / (step ** 0.3) + 100.0 / n_params
        lines.append(LINE.format(rid=rid, step=step, tokens=tokens, f1=3.0 * n_params * tokens,
                                 f2=6.0 * n_params * tokens, f3=6.6 * n_params * tokens, tl=loss + 0.01, el=loss,
                                 lr=3e-3 * (1 - step / (checkpoints + 1)), wt=0.01 * step,
                                 metrics=",".join(f'"act_mean_abs.{name}":{0.5 + k / 7 + step * 1e-6!r}'
                                                  for k, name in enumerate(METRICS[:n_metrics]))))
    (run_dir / "log.jsonl").write_text("".join(lines))
    (run_dir / "status.json").write_text(json.dumps({"run_id": rid, "status": "finished", "step": checkpoints}))
    return rid


def bench_ingest(root: Path, runs: int, checkpoints: int, n_metrics: int) -> dict:
    ws = Workspace(root / "ingest")
    compiled = compile_spec(REPO / "specs" / "ba_graph.yaml")
    ws.write_compiled(compiled)
    template = json.loads(compiled.runs[0].model_dump_json())
    started = time.perf_counter()
    ids = [write_run(ws, template, i, checkpoints, n_metrics) for i in range(runs)]
    print(f"wrote {runs} logs x {checkpoints} checkpoints in {time.perf_counter() - started:.1f} s")

    wall, cpu = time.perf_counter(), cpu_s()
    report = ingest_runs(ws, ids)
    wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
    assert report.rows_loaded == runs * checkpoints and not report.skipped, report
    rate = report.rows_loaded / wall
    print(f"ingest: {report.rows_loaded:,} rows in {wall:.2f} s wall, {cpu:.2f} s CPU -> {rate:,.0f} rows/s "
          f"({report.rows_loaded / cpu:,.0f} rows per CPU-second) [target >= 500,000 rows/s]")

    wall_again = time.perf_counter()
    again = ingest_runs(ws, ids)
    wall_again = time.perf_counter() - wall_again
    assert again.runs_unchanged == runs
    print(f"re-ingest, nothing changed: {wall_again * 1000:.0f} ms for {runs} runs")

    # Baseline: what a naive loader does, one INSERT per row through executemany.
    sample = min(2000, runs * checkpoints)
    con = duckdb.connect()
    for statement in MIGRATIONS[0].statements:
        if "CREATE TABLE checkpoints" in statement:
            con.execute(statement)
    rows = []
    with open(ws.log_path(ids[0])) as fh:
        for line in fh:
            rec = json.loads(line)
            rows.append([rec[c] for c in ("run_id", "step", "tokens", "flops_6n_nonembed", "flops_6n", "flops_exact",
                                          "train_loss", "eval_loss", "lr", "wall_time_s", "tokens_per_s")])
    rows = (rows * (sample // len(rows) + 1))[:sample]
    rows = [[f"x{i // checkpoints}", i, *r[2:]] for i, r in enumerate(rows)]
    base = time.perf_counter()
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO checkpoints VALUES ({', '.join('?' * 11)})", rows)
    con.execute("COMMIT")
    base_rate = sample / (time.perf_counter() - base)
    con.close()
    print(f"baseline executemany: {base_rate:,.0f} rows/s on {sample:,} rows -> ingest is "
          f"{rate / base_rate:,.0f}x faster")

    # One run, loaded the moment it finishes, as a runner calls it (open, load, commit, close).
    latencies = []
    for i in range(runs, runs + 15):
        rid = write_run(ws, template, i, checkpoints, n_metrics)
        t0 = time.perf_counter()
        one = ingest_runs(ws, [rid])
        latencies.append(time.perf_counter() - t0)
        assert one.rows_loaded == checkpoints
    latencies.sort()
    p50, p90 = statistics.median(latencies), latencies[int(0.9 * (len(latencies) - 1))]
    print(f"one run of {checkpoints} checkpoints into a {runs * checkpoints:,}-row database: median "
          f"{p50 * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms [target < 50 ms]")
    # Where the time goes: DuckDB's open (lock, catalog) and close (checkpoint of the WAL into the file)
    # against the load itself.
    parts = []
    for i in range(runs + 15, runs + 25):
        rid = write_run(ws, template, i, checkpoints, n_metrics)
        t0 = time.perf_counter()
        with ExitStack() as stack:
            con = _open_for_load(stack, ws, None)  # as ingest_runs opens it: its commit checkpoints
            t1 = time.perf_counter()
            ingest_runs(ws, [rid], con=con)
            t2 = time.perf_counter()
        parts.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    split = [statistics.median(p[k] for p in parts) * 1000 for k in range(3)]
    print(f"  of which (medians): open {split[0]:.1f} ms, load {split[1]:.1f} ms, close {split[2]:.1f} ms")
    floor = one_run_floor(ws, template, runs + 10_000, checkpoints, n_metrics)
    print(f"  DuckDB alone, same database: open, INSERT the run's rows from Arrow, commit, close: median "
          f"{floor:.1f} ms -> loading one run costs {p50 * 1000 / floor:.2f}x that (load average {os.getloadavg()[0]:.1f})")
    burst = bench_loader(ws, template, runs + 25, checkpoints, n_metrics, p50)
    return {"ingest_rows_per_s": rate, "ingest_rows_per_cpu_s": report.rows_loaded / cpu, "ingest_wall_s": wall,
            "ingest_cpu_s": cpu, "reingest_unchanged_s": wall_again, "executemany_rows_per_s": base_rate,
            "speedup_vs_executemany": rate / base_rate, "one_run_ms_median": p50 * 1000, "one_run_ms_p90": p90 * 1000,
            "one_run_ms_max": latencies[-1] * 1000, "one_run_open_ms": split[0], "one_run_load_ms": split[1],
            "one_run_close_ms": split[2], "one_run_duckdb_floor_ms": floor, **burst}


def one_run_floor(ws: Workspace, template: dict, first: int, checkpoints: int, n_metrics: int) -> float:
    """Median ms DuckDB itself takes to add one run's rows (parsed beforehand, as Arrow tables) to the
    workspace's database: connect, one transaction, close. What a load of one run cannot go below."""
    from scaling_db.store.logs import LogRows, concat, parse_whole_logs

    times = []
    for i in range(first, first + 10):
        rid = write_run(ws, template, i, checkpoints, n_metrics)
        rows = LogRows()
        parse_whole_logs([(ws.log_path(rid), rid, ws.log_path(rid).stat().st_size)], rows)
        t0 = time.perf_counter()
        con = duckdb.connect(str(ws.db_path))
        con.execute("BEGIN TRANSACTION")
        for table, arrow in (("checkpoints", rows.tables), ("metrics", rows.metric_tables)):
            if arrow:
                con.register("rows", concat(arrow))
                con.execute(f"INSERT INTO {table} SELECT * FROM rows")
                con.unregister("rows")
        con.execute("COMMIT")
        con.close()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def bench_loader(ws: Workspace, template: dict, first: int, checkpoints: int, n_metrics: int, one_s: float) -> dict:
    """Runs finishing close together, handed to the background `RunLoader` as a runner does: what
    the runner waits per run (submit), and the loader's time per run until all are in the file."""
    out = {}
    for k in (4, 16):
        ids = [write_run(ws, template, first + i, checkpoints, n_metrics) for i in range(k)]
        first += k
        t0 = time.perf_counter()
        with RunLoader(ws) as loader:
            for rid in ids:
                loader.submit(rid)
            submitted = time.perf_counter() - t0
        per_run = (time.perf_counter() - t0) / k
        assert loader.report.rows_loaded == k * checkpoints and not loader.failed
        print(f"{k} runs finishing together through RunLoader: runner waits {submitted / k * 1e6:.0f} us per run; "
              f"{per_run * 1000:.1f} ms per run until all are in the file ({len(loader.batches)} loads), "
              f"{per_run / one_s:.2f} of one run alone [target < 50 ms] (load average {os.getloadavg()[0]:.1f})")
        out[f"burst{k}_ms_per_run"] = per_run * 1000
    return out


def bench_limits(root: Path, ws: Workspace, ids: list[str], ingest: dict) -> dict:
    """What the hardware and libraries allow for the same logs: the floors ingest is measured against.

    The Arrow-insert limit: the rows ingest wrote (checkpoints, and metrics in long format when the
    logs have them), already in memory as Arrow tables, inserted into an empty database with the
    very schema a workspace gets (`open_store` applies the same migrations: same tables, same
    constraints, i.e. since schema 3 no primary key on either), one transaction, from open to
    close (the closing checkpoint included, as ingest's figure includes it). It leaves out what
    only ingest does: reading and parsing the logs, the long format of metrics, the runs and
    ingest_state rows."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    from scaling_db.store.logs import LogRows, _parse_options, concat, parse_whole_logs

    paths = [str(ws.log_path(rid)) for rid in ids]
    body = b"".join(Path(p).read_bytes() for p in paths)
    # Every field, metrics too, typed up front: Arrow's fastest configuration for these lines.
    options = _parse_options(body)
    wall = time.perf_counter()
    table = pa_json.read_json(pa.BufferReader(body), parse_options=options)
    arrow_parse = table.num_rows / (time.perf_counter() - wall)

    con = duckdb.connect()
    files = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    wall = time.perf_counter()
    (n,), = con.execute(f"CREATE TEMP TABLE t AS SELECT * FROM read_json({files}, format = 'newline_delimited'); "
                        "SELECT count(*) FROM t").fetchall()
    duck_parse = n / (time.perf_counter() - wall)
    con.close()

    rows = LogRows()
    assert parse_whole_logs([(Path(p), rid, Path(p).stat().st_size) for p, rid in zip(paths, ids)], rows)
    checkpoints = concat(rows.tables)
    metrics = concat(rows.metric_tables) if rows.metric_tables else None
    target = root / "limit" / "scaledb.duckdb"
    with open_store(target):
        pass  # the schema, migrated as a workspace's, outside the timing
    wall, cpu = time.perf_counter(), cpu_s()
    with open_store(target) as con:
        con.execute("BEGIN TRANSACTION")
        for name, arrow in (("checkpoints", checkpoints), ("metrics", metrics)):
            if arrow is not None:
                con.register("rows", arrow)
                con.execute(f"INSERT INTO {name} SELECT * FROM rows")
                con.unregister("rows")
        con.execute("COMMIT")
    insert_s, insert_cpu = time.perf_counter() - wall, cpu_s() - cpu
    insert = checkpoints.num_rows / insert_s
    n_metrics = 0 if metrics is None else metrics.num_rows
    ratio, cpu_ratio = ingest["ingest_rows_per_s"] / insert, insert_cpu / ingest["ingest_cpu_s"]
    print(f"limits on the same {checkpoints.num_rows:,} rows: pyarrow.json parse {arrow_parse:,.0f} rows/s, "
          f"duckdb read_json {duck_parse:,.0f} rows/s; Arrow-table INSERT of them (+ {n_metrics:,} metric rows) "
          f"into the same schema, open to close: {insert:,.0f} rows/s ({insert_cpu:.2f} s CPU)")
    # The least any loader of these logs must do: parse them with the fastest reader, then insert.
    both = checkpoints.num_rows / (checkpoints.num_rows / max(arrow_parse, duck_parse) + insert_s)
    print(f"  ingest is {ratio:.2f} of the Arrow-insert limit by wall time, {cpu_ratio:.2f} by CPU time "
          f"[target >= 0.33]; {ingest['ingest_rows_per_s'] / both:.2f} of the parse-and-insert limit "
          f"({both:,.0f} rows/s: the faster parse above, then that INSERT) (load average {os.getloadavg()[0]:.1f})")
    return {"limit_pyarrow_json_rows_per_s": arrow_parse, "limit_duckdb_read_json_rows_per_s": duck_parse,
            "limit_arrow_insert_rows_per_s": insert, "limit_arrow_insert_cpu_s": insert_cpu,
            "ingest_over_arrow_insert": ratio, "ingest_over_arrow_insert_cpu": cpu_ratio,
            "limit_parse_and_insert_rows_per_s": both,
            "ingest_over_parse_and_insert": ingest["ingest_rows_per_s"] / both}


def bench_queries(root: Path, n_rows: int, per_run: int = 1000) -> dict:
    """A database of `n_rows` checkpoint rows (n_rows / per_run runs of one experiment), built in SQL."""
    ws = Workspace(root / "query")
    n_runs = n_rows // per_run
    t0 = time.perf_counter()
    with open_store(ws) as con:
        con.execute("INSERT INTO experiments (experiment, source, created_at, updated_at) "
                    "VALUES ('bench', 'spec', now()::TIMESTAMP, now()::TIMESTAMP)")
        con.execute(f"""
            INSERT INTO runs (run_id, experiment, name, status, n_params, n_params_nonembed, d_model, lr, seed,
                              parameterization, tokens_budget, vars, manifest, ingested_at)
            SELECT printf('r%011d', i), 'bench', 'run-' || i, 'finished', 1000 * (16 << (i % 6)),
                   500 * (16 << (i % 6)), 16 << (i % 6), 1e-3 * (1 + i % 5), i // 30, 'sp',
                   {per_run} * 3200, '{{}}', '{{}}', now()::TIMESTAMP
            FROM range({n_runs}) t(i)""")
        con.execute(f"""
            INSERT INTO checkpoints
            SELECT printf('r%011d', i), s, s * 3200,
                   3.0 * n * s * 3200, 6.0 * n * s * 3200, 6.6 * n * s * 3200,
                   1.8 + 3.0 / pow(s, 0.3) + 1e2 / n + 0.01, 1.8 + 3.0 / pow(s, 0.3) + 1e2 / n,
                   3e-3, 0.01 * s, 320000.0
            FROM (SELECT i, 1000 * (16 << (i % 6)) AS n FROM range({n_runs}) t(i)) AS r,
                 range(1, {per_run} + 1) u(s)""")
    print(f"built a query database of {n_rows:,} checkpoint rows ({n_runs:,} runs) in {time.perf_counter() - t0:.1f} s")
    out = {}
    for name in ("final_loss", "compute_frontier"):
        times = []
        for _ in range(4):
            wall, cpu = time.perf_counter(), cpu_s()
            df = run_query(ws, name, params={"experiment": "bench"})
            times.append((time.perf_counter() - wall, cpu_s() - cpu))
        first, warm = times[0], sorted(t[0] for t in times[1:])[1]
        print(f"{name}: {len(df):,} rows; first {first[0]:.2f} s ({first[1]:.2f} s CPU), then median {warm:.2f} s "
              f"[target < 1 s]")
        out[f"{name}_first_s"], out[f"{name}_s"] = first[0], warm
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=0, choices=range(len(METRICS) + 1), metavar="0-8",
                        help="extra metrics per record (the trainer writes 8 for 2 layers); the limits "
                             "count checkpoint rows only, so compare them with --metrics 0")
    parser.add_argument("--query-rows", type=int, default=10_000_000, help="0 skips the query benchmark")
    parser.add_argument("--dir", type=Path, default=None, help="work here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    # pyarrow imports pandas on its first conversion from Python objects (any process's first load
    # pays it once); taken here so that neither ingest's figure nor the limits' holds it.
    started = time.perf_counter()
    importlib.import_module("pandas")
    print(f"importing pandas (once per process, outside every figure below): {time.perf_counter() - started:.2f} s")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        figures = bench_ingest(Path(tmp), args.runs, args.checkpoints, args.metrics)
        ws = Workspace(Path(tmp) / "ingest")
        ids = [f"b{i:011x}" for i in range(args.runs)]
        figures.update(bench_limits(Path(tmp), ws, ids, figures))
        if args.query_rows:
            figures.update(bench_queries(Path(tmp), args.query_rows))
    figures["load_average_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
