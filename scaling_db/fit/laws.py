"""Scaling-law forms as data: a name, its input roles, its parameters and how to evaluate it.

A `Law` is pure: `law.evaluate(params, **inputs)` computes the law's prediction from numpy
arrays. Fitting lives elsewhere (`power`, `chinchilla`, `mup`); this module is what a stored fit
record points back to, and what `evaluate_law` / `score_law` use to check published laws
against data without fitting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling_db.errors import FitError

Array = np.ndarray


@dataclass(frozen=True)
class Law:
    """A functional form y = f(inputs; params), with the paper it comes from."""

    name: str
    inputs: tuple[str, ...]  # roles, e.g. ("x",) or ("n", "d"); fits map roles to columns
    param_names: tuple[str, ...]
    formula: str
    source: str
    fn: Callable[..., Array]

    def evaluate(self, params: Mapping[str, float], **inputs: Array) -> Array:
        """The law's prediction for arrays keyed by role (`n=..., d=...`)."""
        missing = [p for p in self.param_names if p not in params]
        if missing:
            raise FitError(
                f"{self.name}: missing parameters ({', '.join(missing)} vs "
                f"{', '.join(self.param_names)}). Pass every parameter of the law."
            )
        absent = [r for r in self.inputs if r not in inputs]
        if absent:
            raise FitError(
                f"{self.name}: missing inputs ({', '.join(absent)} vs {', '.join(self.inputs)}). "
                f"Pass one array per input role."
            )
        arrays = {r: np.asarray(inputs[r], dtype=float) for r in self.inputs}
        return self.fn({p: float(params[p]) for p in self.param_names}, **arrays)


def _power_law(p, x):
    return p["A"] * x ** -p["alpha"]


def _saturating_power_law(p, x):
    return p["E"] + p["A"] * x ** -p["alpha"]


def _exponential(p, x):
    return p["A"] * np.exp(-p["k"] * x)


def _saturating_exponential(p, x):
    return p["E"] + p["A"] * np.exp(-p["k"] * x)


def _chinchilla(p, n, d):
    return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]


def _kaplan_nd(p, n, d):
    return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]


def _data_constrained(p, n, d, u):
    # Muennighoff et al. 2023 eq. 5 with the repetition-adjusted inputs of eqs. 5-6:
    # D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*)), R_D = D/U_D - 1 (repeated epochs), and
    # N' likewise with U_N = min(N, N_opt(U_D)), the compute-optimal size for U_D tokens from
    # the base law's frontier (Hoffmann et al. 2022 eq. 4): N_opt(D) = G (D G)^(beta/alpha),
    # G = (alpha A / (beta B))^(1/(alpha+beta)); as in huggingface/datablations `D_to_N`.
    g = ((p["alpha"] * p["A"]) / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    u_n = np.minimum(n, (u * g) ** (p["beta"] / p["alpha"]) * g)
    r_d = np.maximum(d / u - 1, 0)
    r_n = np.maximum(n / u_n - 1, 0)
    d_eff = u + u * p["R_D_star"] * (1 - np.exp(-r_d / p["R_D_star"]))
    n_eff = u_n + u_n * p["R_N_star"] * (1 - np.exp(-r_n / p["R_N_star"]))
    return p["E"] + p["A"] / n_eff ** p["alpha"] + p["B"] / d_eff ** p["beta"]


POWER_LAW = Law(
    "power_law", ("x",), ("A", "alpha"), "y = A x^-alpha",
    "Kaplan et al. 2020 eqs. 1.1-1.3", _power_law,
)
SATURATING_POWER_LAW = Law(
    "saturating_power_law", ("x",), ("E", "A", "alpha"), "y = E + A x^-alpha",
    "Hestness et al. 2017; Hoffmann et al. 2022 eq. 2 with one input", _saturating_power_law,
)
EXPONENTIAL = Law(
    "exponential", ("x",), ("A", "k"), "y = A exp(-k x)",
    "alternative form for model comparison", _exponential,
)
SATURATING_EXPONENTIAL = Law(
    "saturating_exponential", ("x",), ("E", "A", "k"), "y = E + A exp(-k x)",
    "alternative form for model comparison", _saturating_exponential,
)
CHINCHILLA = Law(
    "chinchilla", ("n", "d"), ("E", "A", "B", "alpha", "beta"),
    "L = E + A N^-alpha + B D^-beta", "Hoffmann et al. 2022 eq. 2", _chinchilla,
)
KAPLAN_ND = Law(
    "kaplan_nd", ("n", "d"), ("N_c", "D_c", "alpha_N", "alpha_D"),
    "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D", "Kaplan et al. 2020 eq. 1.5", _kaplan_nd,
)
DATA_CONSTRAINED = Law(
    "data_constrained", ("n", "d", "u"),
    ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
    "L = E + A N'^-alpha + B D'^-beta (repetition-adjusted N', D')",
    "Muennighoff et al. 2023 eq. 5", _data_constrained,
)

LAWS: Mapping[str, Law] = {
    law.name: law
    for law in (POWER_LAW, SATURATING_POWER_LAW, EXPONENTIAL, SATURATING_EXPONENTIAL,
                CHINCHILLA, KAPLAN_ND, DATA_CONSTRAINED)
}


def multi_power_law(inputs: Sequence[str]) -> Law:
    """y = c * prod_i x_i^a_i, e.g. optimal LR vs (N, D) (Li et al. 2025, Step Law eq. 1)."""
    roles = tuple(inputs)

    def fn(p, **xs):
        log_y = np.log(p["c"]) + sum(p[f"a_{r}"] * np.log(xs[r]) for r in roles)
        return np.exp(log_y)

    return Law(
        "multi_power_law", roles, ("c", *(f"a_{r}" for r in roles)),
        "y = c " + " ".join(f"{r}^a_{r}" for r in roles),
        "Li et al. 2025 (Step Law) eq. 1; DeepSeek LLM 2024 sec. 3.1", fn,
    )


def get_law(name: str | Law) -> Law:
    """The registered law called `name` (a `Law` passes through)."""
    if isinstance(name, Law):
        return name
    if name not in LAWS:
        raise FitError(
            f"get_law: unknown law ({name!r} vs one of {', '.join(sorted(LAWS))}). "
            f"Use a registered law name."
        )
    return LAWS[name]


def evaluate_law(
    law: str | Law, params: Mapping[str, float], df: pd.DataFrame, columns: Mapping[str, str]
) -> Array:
    """Evaluate `law` with fixed `params` on the rows of `df`; `columns` maps role -> column."""
    law = get_law(law)
    missing = [c for c in columns.values() if c not in df.columns]
    if missing:
        raise FitError(
            f"evaluate_law({law.name}): columns not in the data ({', '.join(missing)} vs "
            f"{', '.join(map(str, df.columns))}). Rename the columns or pass `columns=`."
        )
    return law.evaluate(params, **{r: df[c].to_numpy(float) for r, c in columns.items()})


def huber(r: Array, delta: float) -> Array:
    """Huber loss of residuals r (Huber 1964): quadratic inside |r| <= delta, linear outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


@dataclass(frozen=True)
class LawScore:
    """How well fixed parameters describe data: R^2 on y, and the Huber sum on log y."""

    law: str
    n_points: int
    r2: float
    rmse: float
    huber_sum: float  # sum of Huber(delta) of log(pred) - log(y), Hoffmann et al. 2022 eq. 3
    delta: float
    predictions: Array


def r_squared(y: Array, pred: Array) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot on the raw scale (NaN if y is constant)."""
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return float(1 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")


def score_law(
    law: str | Law,
    params: Mapping[str, float],
    df: pd.DataFrame,
    columns: Mapping[str, str],
    y: str,
    delta: float = 1e-3,
) -> LawScore:
    """Evaluate a law with given parameters on data and report R^2 and the log-space Huber sum."""
    law = get_law(law)
    pred = evaluate_law(law, params, df, columns)
    obs = df[y].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = float(np.sum(huber(np.log(pred) - np.log(obs), delta)))
    return LawScore(
        law=law.name, n_points=len(obs), r2=r_squared(obs, pred),
        rmse=float(np.sqrt(np.mean((obs - pred) ** 2))), huber_sum=h, delta=delta,
        predictions=pred,
    )
