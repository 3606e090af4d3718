"""The spec's `data:` section: one Pydantic model per data-source kind (see docs/science.md).

Token sources (graph walks, language bigram, teacher samples, corpus) feed transformers; the two
solvable models (percolation, random features) are regressions with closed-form learners.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, model_validator

from scaling_db.spec.fields import (
    Float, PositiveFloat, PositiveInt, STRICT_FLOAT, STRICT_INT, Seed, StrictModel, strict_int,
)




class ErdosRenyiGnm(StrictModel):
    """G(n, m): n nodes, m edges drawn uniformly."""

    kind: Literal["erdos_renyi_gnm"]
    n: Annotated[int, Field(ge=2), STRICT_INT]
    m: PositiveInt
    seed: Seed = 0

    @model_validator(mode="after")
    def _edges_fit(self) -> "ErdosRenyiGnm":
        max_edges = self.n * (self.n - 1) // 2
        if self.m > max_edges:
            raise ValueError(f"m must be <= n(n-1)/2 = {max_edges} for a simple graph (got {self.m})")
        return self


class ErdosRenyiGnp(StrictModel):
    """G(n, p): each of the n(n-1)/2 edges present with probability p."""

    kind: Literal["erdos_renyi_gnp"]
    n: Annotated[int, Field(ge=2), STRICT_INT]
    p: Annotated[float, Field(gt=0, le=1), STRICT_FLOAT]
    seed: Seed = 0


class BarabasiAlbert(StrictModel):
    """Preferential attachment: each new node attaches to m existing ones (scale-free)."""

    kind: Literal["barabasi_albert"]
    n: Annotated[int, Field(ge=2), STRICT_INT]
    m: PositiveInt
    seed: Seed = 0

    @model_validator(mode="after")
    def _m_below_n(self) -> "BarabasiAlbert":
        if self.m >= self.n:
            raise ValueError(f"m must be < n (got m={self.m}, n={self.n})")
        return self


class RandomRegular(StrictModel):
    """Every node has exactly `d` neighbours."""

    kind: Literal["random_regular"]
    n: Annotated[int, Field(ge=2), STRICT_INT]
    d: PositiveInt

    seed: Seed = 0

    @model_validator(mode="after")
    def _degree_ok(self) -> "RandomRegular":
        if self.d >= self.n or (self.n * self.d) % 2:
            raise ValueError(f"need d < n and n*d even (got n={self.n}, d={self.d})")
        return self


class WattsStrogatz(StrictModel):
    """Ring lattice with k neighbours per node, each edge rewired with probability p."""

    kind: Literal["watts_strogatz"]
    n: Annotated[int, Field(ge=3), STRICT_INT]
    k: Annotated[int, Field(ge=2), STRICT_INT]
    p: Annotated[float, Field(ge=0, le=1), STRICT_FLOAT]
    seed: Seed = 0


GraphSpec = Annotated[
    Union[ErdosRenyiGnm, ErdosRenyiGnp, BarabasiAlbert, RandomRegular, WattsStrogatz],
    Field(discriminator="kind"),
]


class GraphWalkData(StrictModel):
    """Random walks on a graph; nodes are tokens (vocab = graph.n).

    Transition weights from node i to neighbour j are proportional to deg(j)**kappa, so
    kappa = 0 is the unbiased walk (see `scaling_db.sources.walks` for the exact formula).
    """

    kind: Literal["graph_walk"]
    graph: GraphSpec
    kappa: Float = 0.0
    component: Literal["largest", "error"] = Field(
        "largest", description="disconnected graph: walk on the largest component, or fail"
    )
    seed: Seed = Field(0, description="seed of the walks (the graph has its own seed)")


class CharTokenizer(StrictModel):
    """Character level: the UTF-8 bytes of the text (vocab 256; one token per ASCII character)."""

    kind: Literal["char"]


class BpeTokenizer(StrictModel):
    """Byte-level BPE trained locally on the corpus (Hugging Face `tokenizers`)."""

    kind: Literal["bpe"]
    vocab_size: Annotated[int, Field(ge=257, le=1_000_000), STRICT_INT]


TokenizerSpec = Annotated[Union[CharTokenizer, BpeTokenizer], Field(discriminator="kind")]


def resolve_corpus_path(corpus: str, base_dir: str | Path) -> Path:
    """Where `data.corpus` points: relative paths start at the spec file's folder (`base_dir`)."""
    path = Path(corpus).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


class _CorpusBacked(StrictModel):
    corpus: str = Field(description="path to a UTF-8 text file; relative paths are from the spec file")
    tokenizer: TokenizerSpec = CharTokenizer(kind="char")
    eval_frac: Annotated[float, Field(gt=0, lt=0.5), STRICT_FLOAT] = 0.1


class LanguageBigramData(_CorpusBacked):
    """Token bigram statistics of a corpus, sampled as a Markov chain."""

    kind: Literal["language_bigram"]
    seed: Seed = 0


class TeacherLMData(_CorpusBacked):
    """Text sampled from a small transformer trained on the corpus (T1L / T2L / T4L)."""

    kind: Literal["teacher_lm"]
    n_layers: Annotated[Literal[1, 2, 4], BeforeValidator(strict_int)] = 2
    d_model: PositiveInt = 128
    context: PositiveInt = 50
    train_tokens: PositiveInt = 2_000_000
    temperature: PositiveFloat = 1.0
    seed: Seed = 0


class CorpusData(_CorpusBacked):
    """The tokenized text itself, split into train and held-out parts."""

    kind: Literal["corpus"]


class PercolationData(StrictModel):
    """Brill (2024): points on critical percolation clusters of a Bethe lattice.

    `p` defaults to the critical value 1/(z-1) with coordination z = 2*dimension.
    """

    kind: Literal["percolation"]
    dimension: Annotated[int, Field(ge=2), STRICT_INT] = 100
    p: Annotated[float, Field(gt=0, lt=1), STRICT_FLOAT] | None = None
    n_clusters: PositiveInt = Field(10_000, description="clusters in the data universe (points are drawn from all of them)")
    max_cluster_size: PositiveInt = 100_000
    seed: Seed = 0


class RandomFeaturesData(StrictModel):
    """Maloney, Roberts, Sully (2022): latent Gaussian features, spectrum lambda_+ * I**-(1+alpha)."""

    kind: Literal["random_features"]
    latent_dim: PositiveInt = 1000
    alpha: PositiveFloat = 1.0
    lambda_plus: PositiveFloat = 1.0
    sigma_w: PositiveFloat = 1.0
    noise: Annotated[float, Field(ge=0), STRICT_FLOAT] = 0.0
    seed: Seed = 0


DataSpec = Annotated[
    Union[
        GraphWalkData, LanguageBigramData, TeacherLMData, CorpusData, PercolationData, RandomFeaturesData
    ],
    Field(discriminator="kind"),
]
TOKEN_SOURCES = ("graph_walk", "language_bigram", "teacher_lm", "corpus")
