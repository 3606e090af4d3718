"""The spec language: Pydantic models of what a user writes in `specs/*.yaml`.

Every model forbids unknown keys, and every variant is chosen by a `kind:` key, so a typo is
an error, never a silently ignored field. These models describe *one* run's settings; the
`sweep:` section says how values vary across runs (see `scaling_db.spec.sweep`), and the compiler
resolves each point into a `RunManifest` (see `scaling_db.spec.manifest`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from scaling_db.spec.data import DataSpec
from scaling_db.spec.fields import (
    Column, Float, Fraction, PositiveFloat, PositiveInt, QueryRef, STRICT_FLOAT, STRICT_INT, Seed, StrictModel,
)

#: Checkpoints per run: each one is an evaluation pass and a row per metric in the database.
MAX_CHECKPOINTS = 10_000
#: Budgets far beyond any real run (Llama 3: 1.5e13 tokens), so FLOP totals stay finite and
#: step counts stay 64-bit integers.
MAX_TOKENS = 1e16
MAX_STEPS = 10**10
#: Experiment names are folder names in the workspace (experiments/<name>/, reports/<name>/).
MAX_NAME_LENGTH = 100


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class GroupValues(StrictModel):
    """One number per parameter group (the rows of docs/science.md#mup's table)."""

    embedding: Float = 1.0
    hidden: Float = 1.0
    readout: Float = 1.0
    norm: Float = 1.0


class GroupExponents(GroupValues):
    """One exponent per parameter group; a group left out gets 0 (no width scaling)."""

    embedding: Float = 0.0
    hidden: Float = 0.0
    readout: Float = 0.0
    norm: Float = 0.0


class _Parameterization(StrictModel):
    base_width: PositiveInt = Field(64, description="width at which muP equals SP; w = d_model / base_width")
    lr_mult: GroupValues = GroupValues()
    lr_width_exponent: GroupExponents = Field(
        GroupExponents(),
        description="extra LR factor w**exponent per group; SP with embedding LR x width: {embedding: 1}",
    )
    init_mult: GroupValues = GroupValues()


class StandardParam(_Parameterization):
    """Standard parameterization: PyTorch-style init, one learning rate for all groups."""

    kind: Literal["sp"]


class MupParam(_Parameterization):
    """Maximal update parameterization (Tensor Programs V, Table 3 for Adam)."""

    kind: Literal["mup"]
    alpha_emb: PositiveFloat = 1.0
    alpha_out: PositiveFloat = 1.0
    zero_init_query: bool = True
    zero_init_readout: bool = True


ParameterizationSpec = Annotated[Union[StandardParam, MupParam], Field(discriminator="kind")]


class TransformerModel(StrictModel):
    """Decoder-only, pre-norm transformer (the vocab comes from the data source)."""

    kind: Literal["transformer"]
    n_layers: PositiveInt = 2
    d_model: PositiveInt
    n_heads: PositiveInt | None = Field(None, description="default: d_model // d_head")
    d_head: PositiveInt = 16
    context: PositiveInt = 50
    mlp_ratio: PositiveFloat = 4.0
    positions: Literal["learned", "rotary"] = "learned"
    tie_embeddings: bool = False
    bias: bool = Field(False, description="biases in linear layers and norms (GPT-2 has them)")
    parameterization: ParameterizationSpec = StandardParam(kind="sp")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerModel":
        heads = self.n_heads or self.d_model // self.d_head
        if heads >= 1 and self.d_model % heads == 0:
            return self
        if self.n_heads is None:  # the heads come from d_head: name the field the user set
            raise ValueError(f"d_model must split into d_model // d_head heads of equal width (d_model="
                             f"{self.d_model}, d_head={self.d_head}: {heads} heads). Choose a d_head that gives "
                             f"a divisor of d_model, or set n_heads")
        raise ValueError(
            f"d_model must be a multiple of the number of heads (d_model={self.d_model}, heads={heads})"
        )


class RandomFeaturesModel(StrictModel):
    """N random projections phi = f(U x) of the latent features, then ridge regression."""

    kind: Literal["random_features"]
    n_features: PositiveInt
    ridge: Annotated[float, Field(ge=0), STRICT_FLOAT] = 0.0
    nonlinearity: Literal["linear", "relu", "tanh"] = "linear"
    sigma_u: PositiveFloat = 1.0


class NearestNeighborModel(StrictModel):
    """Brill's nearest-neighbour regressor; `capacity` caps how many training points it stores."""

    kind: Literal["nearest_neighbor"]
    capacity: PositiveInt | None = None


ModelSpec = Annotated[
    Union[TransformerModel, RandomFeaturesModel, NearestNeighborModel], Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class AdamW(StrictModel):
    kind: Literal["adamw"]
    lr: PositiveFloat
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    eps: PositiveFloat = 1e-8
    weight_decay: Annotated[float, Field(ge=0), STRICT_FLOAT] = 0.01


class SGD(StrictModel):
    kind: Literal["sgd"]
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1), STRICT_FLOAT] = 0.9
    weight_decay: Annotated[float, Field(ge=0), STRICT_FLOAT] = 0.0


OptimizerSpec = Annotated[Union[AdamW, SGD], Field(discriminator="kind")]


class ConstantSchedule(StrictModel):
    kind: Literal["constant"]
    warmup_frac: Fraction = 0.0


class CosineSchedule(StrictModel):
    """Linear warmup, then cosine decay to final_lr_frac * lr."""

    kind: Literal["cosine"]
    warmup_frac: Fraction = 0.02
    final_lr_frac: Annotated[float, Field(ge=0, le=1), STRICT_FLOAT] = 0.0


class WsdSchedule(StrictModel):
    """Warmup-stable-decay: linear warmup, constant, then linear decay over the last decay_frac."""

    kind: Literal["wsd"]
    warmup_frac: Fraction = 0.02
    decay_frac: Annotated[float, Field(gt=0, le=1), STRICT_FLOAT] = 0.2
    final_lr_frac: Annotated[float, Field(ge=0, le=1), STRICT_FLOAT] = 0.0

    @model_validator(mode="after")
    def _phases_fit(self) -> "WsdSchedule":
        if self.warmup_frac + self.decay_frac > 1:
            raise ValueError(
                f"warmup_frac + decay_frac must be <= 1 (got {self.warmup_frac + self.decay_frac:g})"
            )
        return self


ScheduleSpec = Annotated[Union[ConstantSchedule, CosineSchedule, WsdSchedule], Field(discriminator="kind")]


class LinearCheckpoints(StrictModel):
    """Evenly spaced checkpoints: `count` of them over the run (the last step always included)."""

    kind: Literal["linear"]
    count: Annotated[int, Field(gt=0, le=MAX_CHECKPOINTS), STRICT_INT] = 20


class LogCheckpoints(StrictModel):
    """Log-spaced checkpoints from step `first` to the end (dense early, where curves bend)."""

    kind: Literal["log"]
    count: Annotated[int, Field(gt=0, le=MAX_CHECKPOINTS), STRICT_INT] = 20
    first: PositiveInt = 10


CheckpointSpec = Annotated[Union[LinearCheckpoints, LogCheckpoints], Field(discriminator="kind")]


class LMTrain(StrictModel):
    """Next-token training of a transformer; the budget is `tokens` or `steps`, not both."""

    kind: Literal["lm"] = "lm"
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = CosineSchedule(kind="cosine")
    batch_size: PositiveInt = 64
    tokens: Annotated[float, Field(gt=0, le=MAX_TOKENS), STRICT_FLOAT] | None = None
    steps: Annotated[int, Field(gt=0, le=MAX_STEPS), STRICT_INT] | None = None
    checkpoints: CheckpointSpec = LogCheckpoints(kind="log")
    eval_tokens: PositiveInt = 50_000
    grad_clip: PositiveFloat | None = 1.0
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    state_every: PositiveInt | None = Field(
        None, description="save model+optimizer state every N steps (default: at every checkpoint)"
    )
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_budget(self) -> "LMTrain":
        if (self.tokens is None) == (self.steps is None):
            raise ValueError("give exactly one of `tokens` or `steps`")
        return self


class ClosedFormTrain(StrictModel):
    """Closed-form or nearest-neighbour learners: fit once on `samples` training points."""

    kind: Literal["closed_form"]
    samples: PositiveInt
    eval_samples: PositiveInt = 2000
    seed: Seed = 0


def _train_kind(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("kind", "lm")
    return getattr(value, "kind", "lm")


TrainSpec = Annotated[
    Union[Annotated[LMTrain, Tag("lm")], Annotated[ClosedFormTrain, Tag("closed_form")]],
    Discriminator(_train_kind),
]


class ResourcesSpec(StrictModel):
    """Where a run may go. Placement only: not part of a run's identity."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: PositiveInt = 1


class ClusterSpec(StrictModel):
    """Defaults for `scaledb run --backend slurm|ray` (command-line options override them).

    Placement only, like `resources`: the runners read it; it is never copied into manifests,
    so it is not part of any run's identity. Keys a backend does not use are ignored by it.
    """

    partition: str | None = Field(None, description="Slurm partition")
    time_min: PositiveInt | None = Field(
        None, description="Slurm time limit per run in minutes (use >= 60 for runs that may be preempted)")
    cpus: PositiveInt | None = Field(None, description="CPUs per run (Slurm cpus-per-task, Ray num_cpus); "
                                                       "also the run's torch threads")
    gpus: Annotated[float, Field(ge=0), STRICT_FLOAT] | None = Field(
        None, description="GPUs per run (Slurm gpus-per-node: whole numbers; Ray num_gpus: fractions allowed)")
    mem_gb: PositiveFloat | None = Field(None, description="memory per run in GB (Slurm --mem; Ray memory)")
    array_parallelism: PositiveInt | None = Field(None, description="Slurm: at most this many runs at once")
    signal_delay_s: PositiveInt | None = Field(
        None, description="Slurm: the preemption/time-out signal comes this long before the time limit")
    account: str | None = Field(None, description="Slurm account")
    qos: str | None = Field(None, description="Slurm quality of service")
    constraint: str | None = Field(None, description="Slurm node features (--constraint)")
    setup: list[str] = Field([], description="Slurm: shell lines run before each run (module load ...)")
    sbatch: dict[str, str | int | float | bool] = Field({}, description="Slurm: any other sbatch option")
    address: str | None = Field(None, description="Ray cluster address ('auto', 'ray://host:10001'); "
                                                  "unset: a local instance")
    max_retries: Annotated[int, Field(ge=0), STRICT_INT] | None = Field(
        None, description="Ray: re-runs of a run whose worker died (it resumes from its saved state)")
    runs_per_device: PositiveInt | None = Field(
        None, description="local: runs placed on one GPU at once, as many as its free memory holds "
                          "(for Ray, give fractional `gpus`); ignored on CPU")


# ---------------------------------------------------------------------------------------------
# Analysis: the fits and plots the experiment is for
# ---------------------------------------------------------------------------------------------

PlotKind = Literal[
    "loss_curves", "scaling_fit", "compute_frontier", "isoflop", "optimal_allocation",
    "lr_sweep", "optimal_lr", "mup_vs_sp", "coordcheck", "window_sensitivity", "fit_parameters",
    "theory_curves",
]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
QueryParams = dict[str, str | int | float]
Level = Annotated[float, Field(gt=0, lt=1)]


KEEP_ABOVE_UNIFORM = ("also use runs whose final loss is above the uniform guess ln(vocab_size) "
                      "(left out by default: they learned nothing)")

#: The figures that leave out runs above the uniform guess by themselves (and so take the switch);
#: the others draw every run, or redraw a stored fit with the settings it was fitted with.
KEEPING_PLOTS = ("isoflop", "optimal_allocation")


class FitDecl(StrictModel):
    """One law fitted to a query's rows (one fit per value of `group_by`, when given)."""

    name: Name
    law: str = Field(description="a registered law: power_law, saturating_power_law, exponential, "
                                 "saturating_exponential, chinchilla, kaplan_nd")
    query: QueryRef = "final_loss"
    params: QueryParams = {}
    x: Annotated[list[Column], Field(min_length=1)] = ["n_params"]
    y: str = "loss"
    group: str = Field("run_id", description="bootstrap resamples whole groups (runs or seeds)")
    bootstrap: Annotated[int, Field(ge=0)] = 200
    loss: Literal["huber", "lsq"] | None = Field(None, description="estimator loss; default: the law's own")
    group_by: str | None = Field(None, description="one fit per value of this column (parameterization, "
                                                   "experiment, or a manifest path such as data.kappa)")
    best_per: list[str] = Field([], description="keep the lowest-y row per value of these columns, e.g. "
                                                "[d_model]: the best learning rate of each width")
    keep_above_uniform: bool = Field(False, description=KEEP_ABOVE_UNIFORM)

    @model_validator(mode="after")
    def _law_is_registered(self) -> "FitDecl":
        from scaling_db.fit.registry import LAW_NAMES  # the one registry of law names (no fitter imported)

        if self.law not in LAW_NAMES:
            raise ValueError(f"unknown law {self.law!r} (laws: {', '.join(LAW_NAMES)})")
        return self


class _Comparison(StrictModel):
    query: QueryRef = "final_loss"
    params: QueryParams = {}
    y: str = "loss"
    level: Level = 0.95
    keep_above_uniform: bool = Field(False, description=KEEP_ABOVE_UNIFORM)


class LrOptimumDecl(_Comparison):
    """The loss-minimising learning rate (parabola in log LR) per combination of `group_by`."""

    kind: Literal["lr_optimum"]
    name: Name = "lr_optimum"
    lr: str = "lr"
    group_by: list[str] = ["parameterization", "d_model"]
    n_around: Annotated[int, Field(ge=1)] = 2


class LrTransferDecl(_Comparison):
    """Slope d log(lr*) / d log(width) per value of `by` (muP promises ~0; SP drifts ~ -1)."""

    kind: Literal["lr_transfer"]
    name: Name = "lr_transfer"
    lr: str = "lr"
    width: str = "d_model"
    by: str = "parameterization"
    n_around: Annotated[int, Field(ge=1)] = 2


class ParameterEfficiencyDecl(_Comparison):
    """How many times more parameters `other` needs to reach `reference`'s loss."""

    kind: Literal["parameter_efficiency"]
    name: Name = "parameter_efficiency"
    by: str = "parameterization"
    reference: str = "mup"
    other: str = "sp"
    n: str = "n_params_nonembed"
    group: str = "run_id"
    saturating: bool = False
    bootstrap: Annotated[int, Field(ge=2)] = 200


class TheoryAgreementDecl(_Comparison):
    """Measured `y` over a closed-form prediction per run (random features: Maloney et al. 2022)."""

    kind: Literal["theory_agreement"]
    name: Name = "theory_agreement"
    query: QueryRef = "theory_loss"
    reference: str = Field("theory_loss", description="the column holding each run's predicted loss")
    tolerance: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.05, description="flag a median ratio outside 1 ± this (the paper reports ~5% agreement)")
    bootstrap: Annotated[int, Field(ge=2)] = 2000


class SymmetryDecl(_Comparison):
    """L(a=x, b=y) against L(a=y, b=x) over mirrored pairs of runs (random features: N <-> T)."""

    kind: Literal["symmetry"]
    name: Name = "symmetry"
    a: str = Field("n_params", description="the first axis (N: n_params holds n_features)")
    b: str = Field("tokens", description="the second axis (T: tokens holds samples)")
    group_by: list[str] = Field([], description="pair runs only within each combination of these columns")
    bootstrap: Annotated[int, Field(ge=2)] = 2000


ComparisonDecl = Annotated[
    Union[LrOptimumDecl, LrTransferDecl, ParameterEfficiencyDecl, TheoryAgreementDecl, SymmetryDecl],
    Field(discriminator="kind"),
]


class FrontierDecl(StrictModel):
    """A compute-optimal frontier N_opt ~ C^a, D_opt ~ C^b by one method, with bootstrap intervals."""

    method: Literal["envelope", "isoflop", "parametric", "surface"]
    name: Name | None = Field(None, description="default: frontier_<method>")
    query: QueryRef | None = Field(None, description="default: final_loss for isoflop, loss_curves otherwise")
    params: QueryParams = {}
    n: str = "n_params"
    d: str = "tokens"
    c: str = "flops"
    y: str = "loss"
    budget: str | None = Field(None, description="isoflop: the column naming each run's budget")
    group: str = "run_id"
    bootstrap: Annotated[int, Field(ge=0)] = 100
    level: Level = 0.95
    keep_above_uniform: bool = Field(False, description=KEEP_ABOVE_UNIFORM)

    @property
    def label(self) -> str:
        return self.name or f"frontier_{self.method}"


class PlotDecl(StrictModel):
    kind: PlotKind
    fit: str | None = None
    query: QueryRef | None = None
    x: Column | None = None
    param: str | None = Field(None, description="fit_parameters: the fitted parameter to draw per group "
                                                "(default: the law's exponent, e.g. alpha)")
    out: str | None = Field(None, description="file name in the report folder; default from kind")
    keep_above_uniform: bool = Field(False, description="isoflop, optimal_allocation: " + KEEP_ABOVE_UNIFORM
                                     + "; optimal_allocation then fits its frontiers itself")

    @model_validator(mode="after")
    def _keep_where_runs_are_left_out(self) -> "PlotDecl":
        if self.keep_above_uniform and self.kind not in KEEPING_PLOTS:
            raise ValueError(f"keep_above_uniform applies to {' and '.join(KEEPING_PLOTS)} only: "
                             f"{self.kind} draws every run")
        return self


class PublishedDecl(StrictModel):
    """A published number a result is set beside in the report, with a verdict on agreement."""

    analysis: str = Field(description="a declared fit, comparison or frontier (a grouped fit: every group)")
    quantity: str = Field(description="a row of its results, e.g. alpha, E, a (as the report's table names it)")
    value: float
    source: str = Field(description="where the number is published, e.g. 'Kaplan et al. 2020, eq. 1.1'")
    note: str = Field("", description="how this setting differs from the paper's, and what would settle a "
                                      "disagreement (more widths, more tokens, ...)")


class AnalysisSpec(StrictModel):
    experiments: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = Field(
        [], description="analyse these experiments' runs together (default: this spec's own)")
    fits: list[FitDecl] = []
    comparisons: list[ComparisonDecl] = []
    frontiers: list[FrontierDecl] = []
    plots: list[PlotDecl] = []
    published: list[PublishedDecl] = []

    @property
    def names(self) -> list[str]:
        """Every declared analysis's name (as stored in the `fits` table)."""
        return ([f.name for f in self.fits] + [c.name for c in self.comparisons]
                + [f.label for f in self.frontiers])

    @model_validator(mode="after")
    def _plot_fits_exist(self) -> "AnalysisSpec":
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"analysis names must be unique (got {names})")
        fits = {f.name: f for f in self.fits}
        for p in self.plots:
            if p.fit is not None and p.fit not in fits:
                raise ValueError(f"plot {p.kind!r} refers to unknown fit {p.fit!r} (fits: {list(fits)})")
            if p.kind == "fit_parameters" and (p.fit is None or fits[p.fit].group_by is None):
                raise ValueError(f"plot fit_parameters draws a fit declared with group_by (got fit {p.fit!r} "
                                 f"without it). Name a fit with `group_by: experiment` or another column.")
        for pub in self.published:
            if pub.analysis not in names:
                raise ValueError(f"published value for unknown analysis {pub.analysis!r} (analyses: {names})")
        return self


class AnalysisOnlySpec(StrictModel):
    """A spec that trains nothing: it names other experiments and only analyses their runs."""

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_LENGTH)
    description: str = ""
    tags: list[str] = []
    analysis: AnalysisSpec

    @model_validator(mode="after")
    def _names_experiments(self) -> "AnalysisOnlySpec":
        if not self.analysis.experiments:
            raise ValueError("a spec without data/model/train must list analysis.experiments to analyse")
        return self


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


class GeomRange(StrictModel):
    """`num` values spaced evenly in log space from start to stop, inclusive."""

    geomspace: tuple[PositiveFloat, PositiveFloat]
    num: PositiveInt
    integer: bool = Field(False, description="round to the nearest integer")


class LinRange(StrictModel):
    """`num` values spaced evenly from start to stop, inclusive."""

    linspace: tuple[Float, Float]
    num: PositiveInt
    integer: bool = False


def _axis_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "geomspace_range" if "geomspace" in value else "linspace_range" if "linspace" in value else None
    # Tags differ from the YAML keys, so that error locations do not mistake a tag for a key.
    return {GeomRange: "geomspace_range", LinRange: "linspace_range"}.get(type(value))


AxisValues = Annotated[
    Union[
        Annotated[list[Any], Field(min_length=1), Tag("list")],
        Annotated[GeomRange, Tag("geomspace_range")],
        Annotated[LinRange, Tag("linspace_range")],
    ],
    Discriminator(
        _axis_kind,
        custom_error_type="axis_values",
        custom_error_message="must be a list of values or a range ({geomspace: [a, b], num: n} or {linspace: [a, b], num: n})",
    ),
]


class Constraint(StrictModel):
    """Drop sweep points for which `drop_if` is true, reporting `reason`."""

    drop_if: str
    reason: str


class SweepSpec(StrictModel):
    """How runs vary. Keys are dotted field paths (`model.d_model`) or free variables declared
    in `vars` (`flop_budget`), usable in `derive` and `constraints` and stored with each run.
    Undeclared names are errors, so a typo in a path never becomes a silent extra variable."""

    vars: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]] = Field(
        [], description="free variables: names that axes, zip groups or derive set, besides field paths"
    )
    axes: dict[str, AxisValues] = Field({}, description="the product of these axes (default)")
    zip: list[Annotated[dict[str, AxisValues], Field(min_length=1)]] = Field(
        [], description="groups of axes whose values pair up; each group is one axis of the product"
    )
    seeds: Annotated[list[Seed], Field(min_length=1)] | None = Field(
        None, description="replicate axis: sets train.seed"
    )
    derive: dict[str, str | int | float] = Field({}, description="field path -> expression, evaluated in order")
    constraints: list[Constraint] = []


class RunSpec(StrictModel):
    """One run's settings: a sweep point, fully validated (the compiler resolves it next)."""

    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    resources: ResourcesSpec = ResourcesSpec()

    @model_validator(mode="after")
    def _model_fits_data(self) -> "RunSpec":
        kind, model_kind = self.data.kind, self.model.kind
        expected = {"random_features": "random_features", "percolation": "nearest_neighbor"}.get(
            kind, "transformer"
        )
        if model_kind != expected:
            raise ValueError(f"data kind {kind!r} needs model kind {expected!r} (got {model_kind!r})")
        train_expected = "lm" if expected == "transformer" else "closed_form"
        if self.train.kind != train_expected:
            raise ValueError(
                f"model kind {model_kind!r} needs train kind {train_expected!r} (got {self.train.kind!r})"
            )
        return self


class ExperimentHeader(StrictModel):
    """The experiment-level sections; the run sections are validated per sweep point."""

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_LENGTH)
    description: str = ""
    tags: list[str] = []
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    resources: dict[str, Any] = {}
    sweep: SweepSpec = SweepSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    cluster: ClusterSpec = ClusterSpec()


class ExperimentSpec(RunSpec):
    """The whole file, for the JSON Schema (validation goes header first, then per point)."""

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_LENGTH)
    description: str = ""
    tags: list[str] = []
    sweep: SweepSpec = SweepSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    cluster: ClusterSpec = ClusterSpec()


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec format, for YAML language servers."""
    schema = ExperimentSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "scaledb experiment spec"
    schema.setdefault("properties", {})["extends"] = {
        "type": "string",
        "description": "path of a base spec (relative to this file) whose fields this one overrides",
    }
    return schema
