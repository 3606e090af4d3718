"""Stage 4, the result store: the DuckDB file, loading run logs into it, importing others' tables, queries.

Owns: the table declarations (`tables`), schema migrations and the one-writer connection
(`database`), idempotent loading of run logs (`ingest`, which reads logs through `logs`, runs
rows through `runs` and experiments and spec revisions through `experiments`), import of
published run tables (`external`) and named, read-only SQL queries (`query`). May import:
`spec` (manifests, revisions), `training.records` (the log and status formats), `errors`,
`workspace`. Never imports torch, the fitters or the charts.
"""
