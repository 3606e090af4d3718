"""Stage 1, the spec language and its compiler: YAML spec -> validated `ExperimentSpec` -> `RunManifest`s.

Owns: the Pydantic spec models (`schema`), reading YAML with line numbers and `extends:`
(`loader`), sweep expansion and derived values (`sweep`), the compiler (`compiler`), the
resolved run (`manifest`), parameter and FLOP counting (`counting`) and the plan table (`plan`).
Everything here is pure and deterministic: no torch, no database. May import: `errors`,
`workspace` (the plan reads run statuses).
"""
