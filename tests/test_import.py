"""Importing external tables of runs: the real published tables under ../shared/data/reference
(row counts and values checked against the CSV files read independently with the csv module),
plus mapping errors, idempotent re-import, and the CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scaling_db.cli import cli
from scaling_db.errors import StoreError
from scaling_db.store.external import import_table, parse_mapping
from scaling_db.store.ingest import ingest_runs
from scaling_db.store.query import run_query
from scaling_db.store.database import open_store

from store_fakes import finish_runs, make_workspace


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def one(ws, sql: str, params=None):
    with open_store(ws, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


# -- the reference tables --------------------------------------------------------------------

@pytest.mark.reference
def test_datablations_final_points(reference_dir: Path, tmp_path: Path):
    path = reference_dir / "datablations" / "datablations_c4_default_fit_182runs.csv"
    report = import_table(tmp_path, path, "datablations",
                          parse_mapping(["n_params=params", "tokens=tokens", "loss=val_loss", "name=name",
                                         "var.unique_tokens=unique_tokens"]))
    assert (report.rows_read, report.runs, report.checkpoints, report.skipped) == (182, 182, 182, [])
    df = run_query(tmp_path, "final_loss", params={"experiment": "datablations"})
    assert len(df) == 182
    row = df[df.name == "2b832b4b"].iloc[0]
    # name,params,tokens,unique_tokens,val_loss = 2b832b4b,2810000000.0,32000000000.0,4000000000.0,2.722962
    assert (row.n_params, row.tokens, row.loss) == (2_810_000_000, 32_000_000_000, 2.722962)
    assert pd.isna(row.flops)  # no compute column mapped: exact FLOPs unknown
    assert one(tmp_path, "SELECT (vars->>'$.unique_tokens')::DOUBLE FROM runs WHERE name = '2b832b4b'") == [(4e9,)]
    six = run_query(tmp_path, "final_loss", params={"experiment": "datablations", "convention": "6n"})
    assert (six.flops == 6.0 * six.n_params * six.tokens).all()


@pytest.mark.reference
def test_datablations_with_seed_replicates(reference_dir: Path, tmp_path: Path):
    path = reference_dir / "datablations" / "datablations_c4_all_runs_incl_seeds_cell2.csv"
    rows = read_csv(path)
    report = import_table(tmp_path, path, "datablations_seeds",
                          parse_mapping(["n_params=params", "tokens=tokens", "loss=val_loss", "name=name",
                                         "var.unique_tokens=unique_tokens"]))
    assert report.runs == len(rows) == 296
    # Replicates (same name = same configuration) share a config_id: the seed_spread query sees them.
    spread = run_query(tmp_path, "seed_spread", params={"experiment": "datablations_seeds"})
    assert spread.n_seeds.sum() == 296
    by_name = Counter(r["name"] for r in rows)
    assert sorted(spread.n_seeds.tolist()) == sorted(by_name.values())
    five = [r for r in rows if r["name"] == "2b855b11b"]
    got = spread[spread.n_seeds == len(five)]
    assert any(abs(g - sum(float(r["val_loss"]) for r in five) / len(five)) < 1e-12 for g in got.mean_loss)


@pytest.mark.reference
def test_gadre_c4_val_rows(reference_dir: Path, tmp_path: Path):
    path = reference_dir / "gadre2024_overtraining" / "gadre2024_losses_flat.csv"
    rows = [r for r in read_csv(path) if r["eval"] == "c4_val"]
    report = import_table(
        tmp_path, path, "gadre",
        parse_mapping(["run=name", "n_params=params", "n_params_nonembed=params_no_embed", "tokens=tokens",
                       "loss=loss", "flops=flops_6ND", "lr=lr", "batch_size=global_bs",
                       "var.chinchilla_multiplier=chinchilla_multiplier"]),
        where="eval = 'c4_val'",
    )
    assert (report.rows_read, report.runs, report.checkpoints) == (832, 104, 104) and len(rows) == 104
    df = run_query(tmp_path, "final_loss", params={"experiment": "gadre"}).set_index("name")
    first = rows[0]  # c4_original-d=1024_l=24_h=8-0.25, c4_val loss 3.5279492850157737
    assert df.loc[first["name"], "loss"] == float(first["loss"]) == 3.5279492850157737
    assert df.loc[first["name"], "n_params_nonembed"] == int(first["params_no_embed"])
    assert df.loc[first["name"], "flops"] == float(first["flops_6ND"])


@pytest.mark.reference
def test_misfitting_checkpoint_rows(reference_dir: Path, tmp_path: Path):
    path = reference_dir / "misfitting_li2025" / "scaling_results.csv"
    rows = read_csv(path)
    key = ("model", "peak_lr", "sweep", "total_steps")
    runs = {tuple(r[k] for k in key) for r in rows}
    points = Counter(tuple(r[k] for k in (*key, "current_steps")) for r in rows)
    report = import_table(
        tmp_path, path, "misfitting",
        parse_mapping(["run=model,peak_lr,sweep,total_steps", "step=current_steps", "n_params=N",
                       "n_params_nonembed=N_no_emb", "tokens=D", "loss=loss", "flops=C", "flops_6n=C_6ND",
                       "flops_6n_nonembed=C_6ND_no_emb", "lr=peak_lr", "steps=total_steps"]),
    )
    assert report.rows_read == len(rows) == 4852
    assert report.runs == len(runs) == 240 and report.checkpoints == len(points) == 4816
    # the table repeats 36 (run, step) points: the later row wins and the earlier is reported
    assert len(report.skipped) == sum(n - 1 for n in points.values()) == 36
    assert {s.kind for s in report.skipped} == {"duplicate"}
    # The final checkpoint of each run matches the authors' own last-checkpoint table.
    last = read_csv(reference_dir / "misfitting_li2025" / "scaling_results_last_ckpt_only.csv")[0]
    final = run_query(tmp_path, "final_loss", params={"experiment": "misfitting"})
    match = final[(final.run_id.isin(one_run_ids(tmp_path, last, key)))]
    assert len(match) == 1
    assert match.iloc[0].loss == float(last["loss"]) == 3.287519883364439
    assert match.iloc[0].step == int(last["current_steps"]) == 16000
    frontier = run_query(tmp_path, "compute_frontier", params={"experiment": "misfitting"})
    envelope = frontier[frontier.on_envelope]
    assert envelope.loss.is_monotonic_decreasing and len(envelope) > 10
    best = run_query(tmp_path, "best_lr", params={"experiment": "misfitting"})
    assert set(best.best_lr) <= {float(r["peak_lr"]) for r in rows}


def one_run_ids(ws, row: dict[str, str], key: tuple[str, ...]) -> list[str]:
    run_key = json.dumps([row[k] for k in key], separators=(",", ":"))
    return [r[0] for r in one(ws, "SELECT run_id FROM runs WHERE manifest->>'$.run_key' = ?", [run_key])]


MARIN_MAP = ["name=Name", "n_params=parameter_count", "tokens=throughput/total_tokens",
             "loss=eval/paloma/macro_loss", 'flops="throughput/total_gflops" * 1e9',
             "batch_size=trainer.train_batch_size", "steps=trainer.num_train_steps", "d_model=model.hidden_dim", "n_layers=model.num_layers"]


@pytest.mark.reference
@pytest.mark.parametrize("corpus", ["comma", "dclm", "nemotron"])
def test_marin_isoflops(reference_dir: Path, tmp_path: Path, corpus: str):
    path = reference_dir / "marin_isoflops" / f"isoflop-{corpus}.csv"
    rows = read_csv(path)
    report = import_table(tmp_path, path, f"marin_{corpus}", parse_mapping(MARIN_MAP))
    assert report.runs == report.checkpoints == len(rows) and report.skipped == []
    df = run_query(tmp_path, "final_loss", params={"experiment": f"marin_{corpus}"}).set_index("name")
    first = rows[0]
    assert df.loc[first["Name"], "loss"] == pytest.approx(float(first["eval/paloma/macro_loss"]), rel=1e-15)
    assert df.loc[first["Name"], "flops"] == pytest.approx(float(first["throughput/total_gflops"]) * 1e9)
    assert df.loc[first["Name"], "d_model"] == int(first["model.hidden_dim"])
    if corpus == "dclm":
        # Names carry the forward-only budget (about 2ND): training compute is 3x that (reference README).
        named = Counter(3 * float(r["Name"].split("-")[1]) for r in rows)
        iso = run_query(tmp_path, "isoflop", params={"experiment": "marin_dclm"})
        sizes = iso.groupby("budget").size()
        assert len(sizes) == len(named) == 7
        for (budget, n), (expected, m) in zip(sizes.items(), sorted(named.items())):
            assert budget == pytest.approx(expected, rel=1e-3) and n == m
        assert iso.is_min.sum() == 7


# -- mapping and behaviour (no reference data needed) ----------------------------------------------

@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "runs.csv"
    path.write_text("model,N,D,L,seed\n"
                    "a,1000,20000,3.5,0\n"
                    "a,1000,20000,3.6,1\n"
                    "b,2000,40000,,0\n"
                    "c,4000,80000,3.0,0\n")
    return path


def test_import_skips_rows_without_required_values_and_is_idempotent(table: Path, tmp_path: Path):
    mapping = parse_mapping(["n_params=N", "tokens=D", "loss=L", "seed=seed", "name=model"])
    first = import_table(tmp_path / "ws", table, "ext", mapping)
    assert (first.runs, first.checkpoints, first.replaced_runs) == (3, 3, 0)
    assert [(s.line, s.kind) for s in first.skipped] == [(4, "invalid")]
    assert first.skipped[0].format() == f"{table}:4: no value for loss; row skipped"
    ids = sorted(r[0] for r in one(tmp_path / "ws", "SELECT run_id FROM runs"))
    again = import_table(tmp_path / "ws", table, "ext", mapping)
    assert again.replaced_runs == 3
    assert sorted(r[0] for r in one(tmp_path / "ws", "SELECT run_id FROM runs")) == ids
    assert one(tmp_path / "ws", "SELECT count(*) FROM checkpoints") == [(3,)]
    # seeds of one configuration share a config_id
    assert one(tmp_path / "ws", "SELECT count(DISTINCT config_id) FROM runs") == [(2,)]
    manifest = json.loads(one(tmp_path / "ws", "SELECT manifest FROM runs WHERE name = 'c'")[0][0])
    assert manifest["row"] == {"model": "c", "N": 4000, "D": 80000, "L": 3.0, "seed": 0}
    assert manifest["source"]["map"] == mapping and manifest["source"]["path"] == str(table)
    assert one(tmp_path / "ws", "SELECT source, n_planned FROM experiments") == [("import", 3)]


def test_run_level_values_must_be_constant_within_a_run(table: Path, tmp_path: Path):
    with pytest.raises(StoreError, match=r"runs\.csv:3: rows of run a differ in seed \(1 vs 0 at line 2\)"):
        import_table(tmp_path, table, "ext", parse_mapping(["run=model", "step=seed", "n_params=N", "tokens=D",
                                                            "loss=L", "seed=seed"]))


@pytest.mark.parametrize(("cells", "reason"), [
    ("4,x,5", "tokens is 'x', not a number"),  # a ValueError traceback before
    ("-3,4,5", "n_params is -3, not > 0"),
    ("6,2.5,5", "tokens is 2.5, not a whole number (round it in the mapping: tokens=round(COL))"),  # was 2
    ("6,0,5", "tokens is 0, not > 0"),
    ("7,8,-1", "loss is -1, not >= 0"),
    ("7,8,inf", "loss is inf, not a finite number"),
    ("x,-8,inf", "n_params is 'x', not a number; tokens is -8, not > 0; loss is inf, not a finite number"),
    ("1,2,", "no value for loss"),
])
def test_bad_cells_skip_their_row_with_file_line_column_and_value(tmp_path: Path, cells: str, reason: str):
    table = tmp_path / "bad.csv"
    table.write_text(f"a,b,c\n1,2,3\n{cells}\n")
    report = import_table(tmp_path / "ws", table, "b", parse_mapping(["n_params=a", "tokens=b", "loss=c"]))
    assert (report.runs, report.rows_read) == (1, 2)
    assert [s.format() for s in report.skipped] == [f"{table}:3: {reason}; row skipped"]
    assert one(tmp_path / "ws", "SELECT n_params, tokens_budget FROM runs") == [(1, 2)]


@pytest.mark.parametrize(("column", "good", "cell", "reason"), [
    ("lr", "0.1", "fast", "lr is 'fast', not a number"),
    ("lr", "0.1", "-0.1", "lr is -0.1, not >= 0"),
    ("d_model", "16", "16.5", "d_model is 16.5, not a whole number (round it in the mapping: d_model=round(COL))"),
    ("d_model", "16", "0", "d_model is 0, not > 0"),
    ("seed", "0", "-1", None),  # any integer
    ("step", "1", "-1", "step is -1, not >= 0"),
    ("flops", "1e18", "-1e18", "flops is -1e+18, not >= 0"),
    ("wall_time_s", "3", "soon", "wall_time_s is 'soon', not a number"),
])
def test_every_numeric_column_is_checked(tmp_path: Path, column: str, good: str, cell: str, reason: str | None):
    table = tmp_path / "t.csv"
    table.write_text(f"N,D,L,x\n10,20,4,{good}\n10,30,4,{cell}\n")
    report = import_table(tmp_path / "ws", table, "t", parse_mapping(["n_params=N", "tokens=D", "loss=L", f"{column}=x"]))
    assert [s.format() for s in report.skipped] == ([] if reason is None else [f"{table}:3: {reason}; row skipped"])


def test_a_nan_cell_in_a_text_column_is_a_missing_value(tmp_path: Path):
    table = tmp_path / "t.csv"  # 'x' makes the column text, so 'nan' stays the string 'nan'
    table.write_text("N,D,L,s\n10,20,4,x\n10,30,4,nan\n")
    report = import_table(tmp_path / "ws", table, "t", parse_mapping(["n_params=N", "tokens=D", "loss=L", "seed=s"]))
    assert [s.format() for s in report.skipped] == [f"{table}:2: seed is 'x', not a number; row skipped"]
    assert one(tmp_path / "ws", "SELECT tokens_budget, seed FROM runs") == [(30, None)]


def test_tokens_may_be_0_only_within_a_curve(tmp_path: Path):
    table = tmp_path / "t.csv"
    table.write_text("r,N,D,L\nm,10,0,5\nm,10,20,4\n")
    curve = import_table(tmp_path / "ws", table, "t", parse_mapping(["run=r", "step=D", "n_params=N", "tokens=D",
                                                                     "loss=L"]))
    assert (curve.checkpoints, curve.skipped) == (2, [])  # a step-0 evaluation
    lone = import_table(tmp_path / "ws", table, "u", parse_mapping(["n_params=N", "tokens=D", "loss=L"]))
    assert [s.format() for s in lone.skipped] == [f"{table}:2: tokens is 0, not > 0; row skipped"]


@pytest.mark.parametrize(("items", "where", "message"), [
    (["n_params=N", "tokens=D"], None, r"no mapping for loss \(required: n_params, tokens, loss\)"),
    (["n_params=N", "tokens=D", "loss=L", "n_param=N"], None, r"--map n_param: .*did you mean `n_params`"),
    (["n_params=Nn", "tokens=D", "loss=L"], None, r"--map n_params=Nn: not a column .*did you mean `N`"),
    (["n_params=N", "tokens=D", "loss=L"], "nope > 1", r"--where 'nope > 1'"),
    (["n_params=N", "tokens=D", "loss=L", "flops=D", "flops_exact=D"], None, "give one"),
    (["n_params=N", "tokens=D", "loss=L"], "N > 10000", r"no row could be imported"),
])
def test_mapping_errors_name_the_problem(table: Path, tmp_path: Path, items, where, message):
    with pytest.raises(StoreError, match=message):
        import_table(tmp_path, table, "ext", parse_mapping(items), where=where)


def test_import_will_not_overwrite_a_compiled_experiment(table: Path, tmp_path: Path):
    ws, manifests = make_workspace(tmp_path / "ws")
    finish_runs(ws, manifests)
    ingest_runs(ws)
    with pytest.raises(StoreError, match="holds runs compiled from a spec"):
        import_table(ws, table, "ba_graph", parse_mapping(["n_params=N", "tokens=D", "loss=L"]))
    import_table(ws, table, "ext", parse_mapping(["n_params=N", "tokens=D", "loss=L"]))
    # and ingest will not mix compiled runs into an imported experiment
    assert one(ws, "SELECT experiment, count(*) FROM runs GROUP BY 1 ORDER BY 1") == [("ba_graph", 5), ("ext", 3)]


def test_cli_import(table: Path, tmp_path: Path):
    ws = str(tmp_path / "ws")
    result = CliRunner().invoke(cli, ["import", str(table), "--experiment", "ext", "--workspace", ws,
                                      "--map", "n_params=N", "tokens=D", "loss=L", "--map", "var.model=model"])
    assert result.exit_code == 0, result.output
    assert "ext: 3 runs, 3 checkpoints from 4 rows" in result.output
    assert f"{table}:4: no value for loss" in result.output
    js = CliRunner().invoke(cli, ["import", str(table), "-e", "ext", "-w", ws, "n_params=N", "tokens=D", "loss=L",
                                  "--json"])
    assert json.loads(js.output)["replaced_runs"] == 3
    bad = CliRunner().invoke(cli, ["import", str(table), "-e", "ext", "-w", ws, "n_params"])
    assert bad.exit_code == 1 and "expected NAME=COLUMN" in bad.output
    # imported runs have no run files: status says where they are instead of "no runs"
    status = CliRunner().invoke(cli, ["status", "-w", ws])
    assert status.exit_code == 0 and "ext: 3 imported run(s) in the database" in status.output


def test_the_mapping_and_filter_cannot_write_or_read_other_files(tmp_path: Path):
    table = tmp_path / "runs.csv"
    table.write_text("params,tokens,loss\n1000,2000,3.0\n2000,4000,2.5\n")
    target = tmp_path / "written.csv"
    with pytest.raises(StoreError, match="--where"):
        import_table(tmp_path / "ws", table, "ext", {"n_params": "params", "tokens": "tokens", "loss": "loss"},
                     where=f"1 = 1; COPY (SELECT 1) TO '{target}'; SELECT 1")
    with pytest.raises(StoreError, match="--map loss="):
        import_table(tmp_path / "ws", table, "ext", {"n_params": "params", "tokens": "tokens",
                                                     "loss": f"length(read_text('{table}'))"})
    assert not target.exists() and not (tmp_path / "ws" / "scaledb.duckdb").exists()
