"""Scaling-law fitting and analysis: pure functions of DataFrames returning frozen `*Fit` results.

Laws (`laws`) and the registry of fittable ones (`registry`), one-input fits (`power`), two-input fits (`chinchilla`), the batched multi-start
solver (`solver`), uncertainty (`resample`: the bootstrap; `window`), model comparison (`compare`),
compute-optimal frontiers (`frontier`), hyperparameter transfer (`mup`) and checks against a
closed-form theory (`theory`). Estimator settings
are one `FitOptions`. No database, no CLI.

Names are imported from their modules on first use (PEP 562), so `import scaling_db.fit.registry`
(for law names) does not pull in scipy and statsmodels.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of scaling_db.fit that defines it
_EXPORTS: dict[str, str] = {
    "BootstrapFit": "resample",
    "FITTERS": "registry",
    "FitOptions": "options",
    "FrontierFit": "frontier",
    "HOFFMANN_GRID": "chinchilla",
    "IrreducibleCheck": "resample",
    "LAWS": "laws",
    "Law": "laws",
    "LawFit": "result",
    "LawFitter": "registry",
    "LawScore": "laws",
    "LrOptimumFit": "mup",
    "LrTransferFit": "mup",
    "ParameterEfficiencyFit": "mup",
    "SymmetryFit": "theory",
    "TheoryAgreementFit": "theory",
    "WindowSensitivity": "window",
    "bootstrap": "resample",
    "chinchilla_starts": "chinchilla",
    "compare_frontiers": "frontier",
    "compare_irreducible": "resample",
    "compare_laws": "compare",
    "evaluate_law": "laws",
    "fit_chinchilla": "chinchilla",
    "fit_exponential": "power",
    "fit_kaplan_nd": "chinchilla",
    "fit_lr_optimum": "mup",
    "fit_lr_transfer": "mup",
    "fit_optimal_hparam_law": "mup",
    "fit_power_law": "power",
    "fit_saturating_exponential": "power",
    "fit_saturating_power_law": "power",
    "frontier_envelope": "frontier",
    "frontier_isoflop": "frontier",
    "frontier_parametric": "frontier",
    "frontier_surface": "frontier",
    "get_fitter": "registry",
    "get_law": "laws",
    "huber": "laws",
    "multi_power_law": "laws",
    "nt_symmetry": "theory",
    "parameter_efficiency": "mup",
    "score_law": "laws",
    "theory_agreement": "theory",
    "uncertainty_table": "window",
    "window_sensitivity": "window",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"scaling_db.fit.{_EXPORTS[name]}"), name)
