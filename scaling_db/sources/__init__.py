"""Data sources: the token streams a transformer trains on (docs/science.md#the-complexity-ladder).

`build_source(data, base_dir=..., cache_dir=..., runs_dir=...)` turns a validated data section of a manifest
into a `TokenSource`. The trainer asks it for batches by index:

    source.batch("train", i, batch_size, seq_len)  -> int64 array (batch_size, seq_len)

Contract, identical for every kind:
- Deterministic in (data config, split, index, batch_size, seq_len): batch i is computed on its
  own (no state from batches 0..i-1), so a resumed run sees exactly the tokens it would have.
- Train and eval come from disjoint streams (separate RNG streams for generated sources,
  separate parts of the text for `corpus`), and one train batch index is one set of sequences
  never served again (one epoch).
- Token ids are < `vocab_size`, which equals what the compiler decided without reading files
  (`scaling_db.spec.compiler.vocab_size_of`).
- `entropy_rate` is the exact lowest reachable loss in nats per token where the source is a
  known Markov chain, else None.

Expensive artefacts are built once per config and cached under `cache_dir` by config hash:
`graphs/` (CSR arrays), `tokenizers/` (trained BPE), `tokens/` (encoded corpora), `teachers/`
(batches sampled from teachers), `percolation/` (cluster universes).

Sources never train anything: a model a source samples from (a `teacher_lm` teacher) is an
upstream run, trained first by the runners, and the source only loads its finished files from
`runs_dir/<run_id>/`. So this package imports nothing from `training` but the model's
architecture (`training.model`), and nothing from the compiler.
The two solvable models (`percolation`, `random_features`) are not token sources: they go
through `scaling_db.training.solvers.solve`.
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scaling_db.errors import DataError
from scaling_db.spec.manifest import canonical_json

Split = Literal["train", "eval"]
SPLIT_IDS: dict[str, int] = {"train": 0, "eval": 1}


def config_hash(value: Any, n: int = 16) -> str:
    """Hex SHA-256 prefix of the canonical JSON of `value` (a spec model or plain data)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:n]


def batch_rng(seed: int, split: Split, index: int, *stream: int) -> np.random.Generator:
    """The RNG of one batch: a function of (seed, split, index) only, so batch i needs no
    batches before it. Negative seeds are mapped into [0, 2**64) (SeedSequence needs
    non-negative entropy)."""
    words = [seed % 2**64, SPLIT_IDS[split], index, *stream]
    return np.random.default_rng(np.random.SeedSequence(words))


def check_batch_args(split: str, index: int, batch_size: int, seq_len: int) -> None:
    """Internal invariants of a batch request (the trainer's bug, not the user's)."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be 'train' or 'eval' (got {split!r})")
    if index < 0 or batch_size < 1 or seq_len < 1:
        raise ValueError(f"need index >= 0, batch_size >= 1, seq_len >= 1 (got {index}, {batch_size}, {seq_len})")


class TokenSource(abc.ABC):
    """A seeded, indexable stream of token sequences (see the module docstring)."""

    #: every token id is < vocab_size
    vocab_size: int
    #: exact entropy rate in nats/token (the lowest loss any model can reach), or None
    entropy_rate: float | None

    @abc.abstractmethod
    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        """Sequences number [index*batch_size, (index+1)*batch_size) of `split`: int64 (B, L)."""

    def max_sequences(self, split: Split, seq_len: int) -> int | None:
        """How many distinct sequences of `seq_len` the split holds; None when unlimited.

        Lets a trainer check a run's budget before step 0 instead of failing mid-run."""
        return None

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Statistics for `scaledb data inspect`: plain JSON-able values."""

    @abc.abstractmethod
    def decode(self, tokens: np.ndarray | list[int]) -> str:
        """Human-readable text of a token sequence."""


def build_source(data: Any, *, base_dir: Path, cache_dir: Path, runs_dir: Path | None = None) -> TokenSource:
    """The token source of a manifest's data section (graph_walk, language_bigram, teacher_lm,
    corpus, corpus_epochs).

    `base_dir` is where relative corpus paths start (the spec file's folder); `cache_dir` holds
    built graphs, tokenizers and sampled batches; `runs_dir` holds the finished upstream runs
    (`teacher_lm` needs it). Raises DataError for inputs a user can fix."""
    kind = data.kind
    base_dir, cache_dir = Path(base_dir), Path(cache_dir)
    if kind == "graph_walk":
        from scaling_db.sources.graphs import GraphWalkSource

        return GraphWalkSource(data, cache_dir=cache_dir)
    if kind == "language_bigram":
        from scaling_db.sources.language import BigramSource

        return BigramSource(data, base_dir=base_dir, cache_dir=cache_dir)
    if kind == "corpus":
        from scaling_db.sources.language import CorpusSource

        return CorpusSource(data, base_dir=base_dir, cache_dir=cache_dir)
    if kind == "corpus_epochs":
        from scaling_db.sources.language import CorpusEpochsSource

        return CorpusEpochsSource(data, base_dir=base_dir, cache_dir=cache_dir)
    if kind == "teacher_lm":
        from scaling_db.sources.teacher import TeacherSource

        if runs_dir is None:
            raise DataError("teacher_lm needs the workspace's runs folder (its teacher is a run there)")
        return TeacherSource(data, base_dir=base_dir, cache_dir=cache_dir, runs_dir=Path(runs_dir))
    raise DataError(
        f"data kind {kind!r} is not a token source; it is solved by `scaling_db.training.solvers.solve`"
    )


__all__ = ["TokenSource", "Split", "build_source", "batch_rng", "config_hash"]
