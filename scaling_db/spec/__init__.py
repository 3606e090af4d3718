"""Stage 1, the spec language and its compiler: YAML spec -> validated `ExperimentSpec` -> `RunManifest`s.

Owns: the Pydantic spec models (`schema`, with the `data:` kinds in `data` and the shared base
and strict number types in `fields`), reading YAML safely with line numbers and `extends:`
(`loader`), sweep expansion (`sweep`) and the sandboxed expression language of `derive:` and
constraints (`expression`), the compiler (`compiler`), resolving one point into its manifest and
its upstream teacher runs (`resolve`), the resolved run (`manifest`), parameter and FLOP counting
(`counting`), spec revisions (`revisions`) and the plan table (`plan`).
Everything here is pure and deterministic: no torch, no database. May import: `errors`,
`workspace` (the plan reads run statuses).
"""
