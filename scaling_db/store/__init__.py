"""Stage 4, the result store: the DuckDB file, loading run logs into it, importing others' tables, queries.

Owns: the schema, migrations and the one-writer connection (`database`), idempotent loading of
run logs (`ingest`), import of published run tables (`external`) and named, read-only SQL
queries (`query`). May import: `spec` (manifests), `training.records` (the log format),
`errors`, `workspace`. Never imports torch, the fitters or the charts.
"""
