"""The solvable model of Maloney, Roberts & Sully (2022), "A Solvable Model of Neural Scaling
Laws" (arXiv:2210.16859), docs/science.md#random-features.

Data: latent features x in R^M, independent Gaussians with variances (the spectrum)
lambda_I = lambda_+ * I**-(1 + alpha), I = 1..M; a linear teacher y = w . x + noise * eps with
w_I ~ N(0, sigma_w**2 / M) and eps ~ N(0, 1). Model: N random features phi = f(U x) with
U_jI ~ N(0, sigma_u**2 / M) and f = identity, relu or tanh; the student phi . beta is fitted on T
samples by ridge regression, beta = argmin ||Phi beta - y||**2 + ridge * ||beta||**2 (ridge = 0:
the minimum-norm least-squares solution, i.e. the ridgeless limit).

Randomness, chosen so sweeps compare like with like: the teacher w and the samples come from
the data seed, the features U from the training seed. Sample t of a split is the same for
every T (samples are drawn in fixed chunks), so a larger T extends a smaller one.

Losses are mean squared errors E[(phi . beta - y)**2] (no factor 1/2), the convention of the
deterministic-equivalent formula below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as la
from scipy.optimize import brentq

from scaling_db.sources import SPLIT_IDS, Split

#: Samples are generated in chunks of this many rows, each from its own RNG stream.
CHUNK = 256
_TEACHER, _SAMPLES, _FEATURES = 1, 2, 3  # RNG stream tags


def spectrum(data: Any) -> np.ndarray:
    """lambda_I = lambda_+ * I**-(1 + alpha), I = 1..M."""
    return data.lambda_plus * np.arange(1, data.latent_dim + 1, dtype=np.float64) ** -(1.0 + data.alpha)


def teacher_weights(data: Any) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([data.seed % 2**64, _TEACHER]))
    return rng.normal(0.0, data.sigma_w / math.sqrt(data.latent_dim), data.latent_dim)


def samples(data: Any, split: Split, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` samples (x: (count, M), y: (count,)) of a split."""
    lam_sqrt = np.sqrt(spectrum(data))
    w = teacher_weights(data)
    xs, ys = [], []
    for chunk in range(-(-count // CHUNK)):
        rng = np.random.default_rng(
            np.random.SeedSequence([data.seed % 2**64, _SAMPLES, SPLIT_IDS[split], chunk])
        )
        x = rng.standard_normal((CHUNK, data.latent_dim)) * lam_sqrt
        eps = rng.standard_normal(CHUNK)
        xs.append(x)
        ys.append(x @ w + data.noise * eps)
    x = np.concatenate(xs)[:count] if xs else np.zeros((0, data.latent_dim))
    y = np.concatenate(ys)[:count] if ys else np.zeros(0)
    return x, y


def feature_matrix(data: Any, model: Any, seed: int) -> np.ndarray:
    """U: (N, M), entries N(0, sigma_u**2 / M)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, _FEATURES]))
    return rng.normal(0.0, model.sigma_u / math.sqrt(data.latent_dim), (model.n_features, data.latent_dim))


def features(x: np.ndarray, u: np.ndarray, nonlinearity: str) -> np.ndarray:
    z = x @ u.T
    if nonlinearity == "relu":
        return np.maximum(z, 0.0)
    if nonlinearity == "tanh":
        return np.tanh(z)
    return z


def ridge_fit(phi: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """argmin ||phi beta - y||**2 + ridge ||beta||**2; ridge = 0 gives the min-norm solution."""
    t, n = phi.shape
    if ridge == 0:
        return la.lstsq(phi, y, lapack_driver="gelsy")[0]  # QR with pivoting: min-norm, faster than SVD
    if n <= t:  # primal: (N x N) normal equations
        return la.solve(phi.T @ phi + ridge * np.eye(n), phi.T @ y, assume_a="pos")
    return phi.T @ la.solve(phi @ phi.T + ridge * np.eye(t), y, assume_a="pos")  # dual: (T x T)


def deterministic_equivalent_loss(lam: np.ndarray, sigma_w: float, n_features: int, samples_: int) -> float:
    """Expected test loss of the linear ridgeless model (docs/science.md#random-features; Maloney, Roberts &
    Sully 2022): with m = min(N, T), n = max(N, T) and kappa solving
    sum_I lambda_I / (lambda_I + kappa) = m,   <L> = (sigma_w**2 / M) * m * kappa * (n - 1) / (n - m - 1).

    Returns inf for n <= m + 1 (the interpolation peak, where the formula diverges) and 0 when
    m >= M (enough features and samples to pin every latent direction)."""
    m, n = min(n_features, samples_), max(n_features, samples_)
    big_m = len(lam)
    if m >= big_m:
        return 0.0
    if n <= m + 1:
        return math.inf

    # the left side falls from M (kappa -> 0) to 0 (kappa -> inf); solve in log kappa
    def gap(log_k: float) -> float:
        return float(np.sum(lam / (lam + math.exp(log_k)))) - m

    lo, hi = math.log(lam.min()) - 40.0, math.log(lam.sum()) + 40.0
    kappa = math.exp(brentq(gap, lo, hi, xtol=1e-12))
    return sigma_w**2 / big_m * m * kappa * (n - 1) / (n - m - 1)


@dataclass(frozen=True)
class RandomFeaturesResult:
    train_loss: float
    eval_loss: float
    metrics: dict[str, float]


def solve_random_features(data: Any, model: Any, train: Any) -> RandomFeaturesResult:
    """Fit the student on train.samples samples; test on train.eval_samples held-out ones."""
    u = feature_matrix(data, model, train.seed)
    x_tr, y_tr = samples(data, "train", train.samples)
    x_ev, y_ev = samples(data, "eval", train.eval_samples)
    phi_tr = features(x_tr, u, model.nonlinearity)
    beta = ridge_fit(phi_tr, y_tr, model.ridge)
    train_loss = float(np.mean((phi_tr @ beta - y_tr) ** 2))
    eval_loss = float(np.mean((features(x_ev, u, model.nonlinearity) @ beta - y_ev) ** 2))
    metrics: dict[str, float] = {"beta_norm": float(np.linalg.norm(beta))}
    if model.nonlinearity == "linear":
        lam = spectrum(data)
        # exact expected loss over fresh x: the student is linear in x with weights U^T beta
        d = u.T @ beta - teacher_weights(data)
        metrics["population_loss"] = float(np.sum(lam * d * d) + data.noise**2)
        if model.ridge == 0 and data.noise == 0:
            theory = deterministic_equivalent_loss(lam, data.sigma_w, model.n_features, train.samples)
            if math.isfinite(theory):  # infinite at the interpolation peak N ~ T
                metrics["theory_loss"] = theory
    return RandomFeaturesResult(train_loss=train_loss, eval_loss=eval_loss, metrics=metrics)


def describe_random_features(data: Any) -> dict[str, Any]:
    lam = spectrum(data)
    return {
        "kind": "random_features",
        "latent_dim": data.latent_dim,
        "spectrum": f"lambda_I = {data.lambda_plus:g} * I^-{1 + data.alpha:g}",
        "lambda_max": float(lam[0]),
        "lambda_min": float(lam[-1]),
        "trace": float(lam.sum()),
        # the loss of predicting 0 for every x: E[y^2] = sum_I lambda_I E[w_I^2] + noise^2
        "null_loss": float(lam.sum() * data.sigma_w**2 / data.latent_dim + data.noise**2),
        "noise": data.noise,
        "entropy_rate": "n/a (regression)",
    }
