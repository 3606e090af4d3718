"""Stage 3, model and training: executing one `RunManifest` and writing its checkpoint log.

Owns: the transformer (`model`), the training loop (`trainer`), the closed-form learners of the
solvable models (`solvers`), the run's checkpoint records, status and append-only log
(`records`), one run's execution with resume (`execute`) and the coordinate check
(`coordcheck`). Runners call `execute.execute_run`; the store reads `records`/`runlog`.
May import: `spec` (manifests), `sources`, `errors`, `workspace`. Torch is imported only by
`model`, `trainer` and `coordcheck`, so status and loading stay light.
"""
