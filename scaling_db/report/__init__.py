"""Stage 6, analyses, figures and reports: a spec's `analysis:` section carried out against the store.

`fit/` (statistics) and `plot/` (Altair charts) are pure leaves over DataFrames; this package
connects them to queries and the database: `analyses` runs and stores declared fits,
`figures` builds each figure kind from queries and fits, `html` writes the report.
May import: `store`, `fit`, `plot`, `spec`, `errors`, `workspace`.
"""
