"""Every table of the result database, declared once: columns, SQL types, comments, keys.

The DDL of the migrations, the `COMMENT`s and the Arrow schemas the loaders write through are
all generated from these declarations. A column carries the schema version that added it
(`since`): migration 1 creates the columns with `since=1`, a later migration N adds those with
`since=N` (`create_tables(N)`). Adding a column is therefore one `Column(..., since=N)` here plus
`Migration(N, ..., create_tables(N))` in `database.MIGRATIONS`; a released declaration is never
edited, so every migration stays what it was when it shipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from scaling_db.training.records import RunState

#: A run's status: the runner's states, plus `unknown` for an unreadable status.json.
RUN_STATUSES: tuple[str, ...] = (*(s.value for s in RunState), "unknown")
#: The `runs` status of a run whose status file says finished but whose log lacks its final
#: checkpoint (`scaling_db.training.records.lost_final_checkpoint`): set by the loader, never by a runner.
DAMAGED = "damaged"

_ARROW = {
    "VARCHAR": pa.string(), "JSON": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("us"), "VARCHAR[]": pa.list_(pa.string()),
}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    comment: str = ""
    not_null: bool = False
    since: int = 1  # the schema version that added it

    @property
    def ddl(self) -> str:
        return f"{_ident(self.name)} {self.sql_type}" + (" NOT NULL" if self.not_null else "")


@dataclass(frozen=True)
class Table:
    name: str
    comment: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    #: The migration that rebuilt the table without its primary key (0: never). The loader keeps
    #: such a table's rows unique itself (see `store.ingest`): the index's upkeep was the largest
    #: cost of a load after parsing the logs (docs/performance.md).
    key_dropped: int = 0

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of a whole row, in column order (for `INSERT ... SELECT *` and BY NAME)."""
        return pa.schema([(c.name, _ARROW[c.sql_type]) for c in self.columns])

    def key_at(self, version: int) -> tuple[str, ...]:
        """The primary key the table has at schema `version` (empty once dropped)."""
        return () if self.key_dropped and version >= self.key_dropped else self.primary_key

    def create_sql(self, version: int = 1, name: str | None = None) -> str:
        cols = [c.ddl for c in self.columns if c.since <= version]
        if self.key_at(version):
            cols.append(f"PRIMARY KEY ({', '.join(self.key_at(version))})")
        return f"CREATE TABLE {name or self.name} (\n    " + ",\n    ".join(cols) + "\n)"


# Names DuckDB reserves need quoting ("precision", "columns").
_RESERVED = {"precision", "columns"}


def _ident(name: str) -> str:
    return f'"{name}"' if name in _RESERVED else name


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


EXPERIMENTS = Table(
    "experiments",
    "One row per experiment: compiled from a spec (source='spec') or imported from a table (source='import').",
    (
        Column("experiment", "VARCHAR"),
        Column("source", "VARCHAR", not_null=True),
        Column("spec_path", "VARCHAR"),
        Column("spec_hash", "VARCHAR"),
        Column("description", "VARCHAR"),
        Column("n_planned", "INTEGER"),
        Column("n_dropped", "INTEGER"),
        Column("info", "JSON"),
        Column("created_at", "TIMESTAMP", not_null=True),
        Column("updated_at", "TIMESTAMP", not_null=True),
        Column("revision", "VARCHAR",
               "the current revision of the spec (its spec_hash at the last compile)", since=2),
    ),
    primary_key=("experiment",),
)

RUNS = Table(
    "runs",
    "One row per run: sweep parameters as columns, the full manifest as JSON, the status file's fields.",
    (
        Column("run_id", "VARCHAR"),
        Column("experiment", "VARCHAR", not_null=True),
        Column("name", "VARCHAR"),
        Column("status", "VARCHAR", " | ".join(RUN_STATUSES[:-1]) + " | unknown (unreadable status.json) | "
               f"{DAMAGED} (status.json says finished, but the log lacks the final checkpoint)",
               not_null=True),
        Column("config_id", "VARCHAR",
               "hash of the run identity without train.seed and data.seed: seed replicates share it"),
        Column("model_kind", "VARCHAR"),
        Column("n_params", "BIGINT"),
        Column("n_params_nonembed", "BIGINT"),
        Column("n_params_embed", "BIGINT"),
        Column("n_layers", "INTEGER"),
        Column("d_model", "INTEGER"),
        Column("n_heads", "INTEGER"),
        Column("d_ff", "INTEGER"),
        Column("context", "INTEGER"),
        Column("vocab_size", "INTEGER"),
        Column("parameterization", "VARCHAR"),
        Column("optimizer", "VARCHAR"),
        Column("lr", "DOUBLE"),
        Column("weight_decay", "DOUBLE"),
        Column("schedule", "VARCHAR"),
        Column("batch_size", "INTEGER"),
        Column("steps", "BIGINT"),
        Column("tokens_budget", "BIGINT",
               "training tokens the run is planned for (samples for closed-form learners)"),
        Column("flops_budget_6n_nonembed", "DOUBLE"),
        Column("flops_budget_6n", "DOUBLE"),
        Column("flops_budget_exact", "DOUBLE",
               "planned training FLOPs, exact count incl. attention (Chinchilla App. F)"),
        Column("seed", "BIGINT"),
        Column("data_seed", "BIGINT"),
        Column("data_source", "VARCHAR"),
        Column("entropy_rate", "DOUBLE"),
        Column("vars", "JSON", "free sweep variables of the point, e.g. {\"flop_budget\": 1e15}"),
        Column("tags", "VARCHAR[]"),
        Column("manifest", "JSON", "the whole run manifest; reach any field with manifest->>'$.path.to.field'"),
        Column("git_sha", "VARCHAR"),
        Column("device", "VARCHAR"),
        Column("precision", "VARCHAR"),
        Column("backend", "VARCHAR"),
        Column("job_id", "VARCHAR"),
        Column("host", "VARCHAR"),
        Column("last_step", "BIGINT", "last logged checkpoint step according to status.json"),
        Column("error", "VARCHAR"),
        Column("diverged_at_step", "BIGINT"),
        Column("created_at", "TIMESTAMP"),
        Column("started_at", "TIMESTAMP"),
        Column("finished_at", "TIMESTAMP"),
        Column("updated_at", "TIMESTAMP"),
        Column("ingested_at", "TIMESTAMP", not_null=True),
    ),
    primary_key=("run_id",),
)

CHECKPOINTS = Table(
    "checkpoints",
    "One row per evaluated checkpoint, unique on (run_id, step). FLOPs in three conventions; losses in nats/token.",
    (
        Column("run_id", "VARCHAR", not_null=True),
        Column("step", "BIGINT", not_null=True),
        Column("tokens", "BIGINT"),
        Column("flops_6n_nonembed", "DOUBLE", "training FLOPs so far, 6*N_nonembed*tokens (Kaplan et al. 2020)"),
        Column("flops_6n", "DOUBLE", "training FLOPs so far, 6*N*tokens with embeddings counted"),
        Column("flops_exact", "DOUBLE", "training FLOPs so far incl. attention (Chinchilla App. F); "
                                        "imports: the table's own compute column"),
        Column("train_loss", "DOUBLE",
               "mean training loss since the previous checkpoint (nats/token); NULL if non-finite"),
        Column("eval_loss", "DOUBLE", "held-out loss at this checkpoint (nats/token); NULL if non-finite (diverged)"),
        Column("lr", "DOUBLE"),
        Column("wall_time_s", "DOUBLE", "training wall time since the run first started"),
        Column("tokens_per_s", "DOUBLE"),
    ),
    primary_key=("run_id", "step"),
    key_dropped=3,
)

METRICS = Table(
    "metrics",
    "Extra named metrics of a checkpoint (long format).",
    (
        Column("run_id", "VARCHAR", not_null=True),
        Column("step", "BIGINT", not_null=True),
        Column("name", "VARCHAR", not_null=True),
        Column("value", "DOUBLE"),
    ),
    primary_key=("run_id", "step", "name"),
    key_dropped=3,
)

FITS = Table(
    "fits",
    "Stored scaling-law fits with the query and runs that produced their data.",
    (
        Column("fit_id", "VARCHAR"),
        Column("experiment", "VARCHAR"),
        Column("name", "VARCHAR"),
        Column("law", "VARCHAR", not_null=True),
        Column("formula", "VARCHAR"),
        Column("params", "JSON", not_null=True),
        Column("intervals", "JSON"),
        Column("stats", "JSON"),
        Column("columns", "JSON"),
        Column("y", "VARCHAR"),
        Column("settings", "JSON"),
        Column("query_name", "VARCHAR"),
        Column("query_sql", "VARCHAR"),
        Column("query_params", "JSON"),
        Column("run_ids", "JSON"),
        Column("excluded", "JSON"),
        Column("n_points", "INTEGER"),
        Column("objective", "DOUBLE"),
        Column("scaledb_version", "VARCHAR"),
        Column("created_at", "TIMESTAMP", not_null=True),
        Column("extra", "JSON"),
    ),
    primary_key=("fit_id",),
)

INGEST_STATE = Table(
    "ingest_state",
    "Internal: how far each run's log has been loaded (byte offset, line count), for incremental ingest.",
    (
        Column("run_id", "VARCHAR"),
        Column("log_path", "VARCHAR"),
        Column("log_offset", "BIGINT", not_null=True),
        Column("log_lines", "BIGINT", not_null=True),
        Column("log_size", "BIGINT"),
        Column("log_mtime_ns", "BIGINT"),
        Column("log_head", "VARCHAR"),
        Column("manifest_sig", "VARCHAR"),
        Column("status_sig", "VARCHAR"),
        Column("problems", "JSON"),
        Column("ingested_at", "TIMESTAMP", not_null=True),
    ),
    primary_key=("run_id",),
)

RUN_REVISIONS = Table(
    "run_revisions",
    "The run ids each compile (revision) of an experiment's spec produced.",
    (
        Column("experiment", "VARCHAR", not_null=True, since=2),
        Column("revision", "VARCHAR", not_null=True, since=2),
        Column("run_id", "VARCHAR", not_null=True, since=2),
        Column("compiled_at", "TIMESTAMP", since=2),
    ),
    primary_key=("experiment", "revision", "run_id"),
)

TABLES: tuple[Table, ...] = (EXPERIMENTS, RUNS, CHECKPOINTS, METRICS, FITS, INGEST_STATE, RUN_REVISIONS)

#: Arrow schemas of the rows the loaders insert.
RUNS_SCHEMA = RUNS.arrow_schema()
CHECKPOINT_SCHEMA = CHECKPOINTS.arrow_schema()
METRIC_SCHEMA = METRICS.arrow_schema()
STATE_SCHEMA = INGEST_STATE.arrow_schema()
REVISIONS_SCHEMA = RUN_REVISIONS.arrow_schema()


def _first_version(table: Table) -> int:
    return min(c.since for c in table.columns)


def create_tables(version: int) -> tuple[str, ...]:
    """Migration `version`'s statements for tables: CREATE the tables it introduces (with their
    comments), ADD the columns it adds to older tables (with theirs), and rebuild the tables whose
    primary key it drops."""
    out: list[str] = []
    for table in TABLES:
        first = _first_version(table)
        if first == version:
            out.append(table.create_sql(version))
            out.append(f"COMMENT ON TABLE {table.name} IS {_quote(table.comment)}")
            out += [_comment(table, c) for c in table.columns if c.since == version and c.comment]
        elif table.key_dropped == version:
            out += _rebuild(table, version)
        elif first < version:
            for column in (c for c in table.columns if c.since == version):
                out.append(f"ALTER TABLE {table.name} ADD COLUMN {column.ddl}")
                if column.comment:
                    out.append(_comment(table, column))
    return tuple(out)


def _rebuild(table: Table, version: int) -> list[str]:
    """Copy the table into one declared as at `version` (DuckDB cannot drop a primary key in
    place); the views over it read it by name, so they follow; the comments are set again."""
    new = f"{table.name}_v{version}"
    kept = ", ".join(_ident(c.name) for c in table.columns if c.since < version)
    return [
        table.create_sql(version, name=new),
        f"INSERT INTO {new} ({kept}) SELECT {kept} FROM {table.name}",
        f"DROP TABLE {table.name}",
        f"ALTER TABLE {new} RENAME TO {table.name}",
        f"COMMENT ON TABLE {table.name} IS {_quote(table.comment)}",
        *(_comment(table, c) for c in table.columns if c.since <= version and c.comment),
    ]


def _comment(table: Table, column: Column) -> str:
    return f"COMMENT ON COLUMN {table.name}.{_ident(column.name)} IS {_quote(column.comment)}"
