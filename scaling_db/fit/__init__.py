"""Scaling-law fitting and analysis: pure functions of DataFrames returning frozen `*Fit` results.

Laws (`laws`) and the registry of fittable ones (`registry`), one-input fits (`power`), two-input fits (`chinchilla`), the batched multi-start
solver (`solver`), uncertainty (`bootstrap`, `window`), model comparison (`compare`),
compute-optimal frontiers (`frontier`) and hyperparameter transfer (`mup`). Estimator settings
are one `FitOptions`. No database, no CLI.
"""

from scaling_db.fit.bootstrap import (BootstrapFit, IrreducibleCheck, bootstrap,
                                      compare_irreducible)
from scaling_db.fit.chinchilla import (HOFFMANN_GRID, chinchilla_starts, fit_chinchilla,
                                       fit_kaplan_nd)
from scaling_db.fit.compare import compare_laws
from scaling_db.fit.frontier import (FrontierFit, compare_frontiers, frontier_envelope,
                                     frontier_isoflop, frontier_parametric, frontier_surface)
from scaling_db.fit.laws import (LAWS, Law, LawScore, evaluate_law, get_law, huber,
                                 multi_power_law, score_law)
from scaling_db.fit.mup import (LrOptimumFit, LrTransferFit, ParameterEfficiencyFit,
                                fit_lr_optimum, fit_lr_transfer, fit_optimal_hparam_law,
                                parameter_efficiency)
from scaling_db.fit.options import FitOptions
from scaling_db.fit.power import (fit_exponential, fit_power_law, fit_saturating_exponential,
                                  fit_saturating_power_law)
from scaling_db.fit.registry import FITTERS, LawFitter, get_fitter
from scaling_db.fit.result import LawFit
from scaling_db.fit.window import WindowSensitivity, uncertainty_table, window_sensitivity

__all__ = [
    "FITTERS", "LAWS", "HOFFMANN_GRID", "BootstrapFit", "FitOptions", "FrontierFit",
    "IrreducibleCheck", "Law", "LawFit", "LawFitter",
    "LawScore", "LrOptimumFit", "LrTransferFit", "ParameterEfficiencyFit", "WindowSensitivity",
    "bootstrap", "chinchilla_starts", "compare_frontiers", "compare_irreducible", "compare_laws",
    "evaluate_law", "fit_chinchilla", "fit_exponential", "fit_kaplan_nd", "fit_lr_optimum",
    "fit_lr_transfer", "fit_optimal_hparam_law", "fit_power_law", "fit_saturating_exponential",
    "fit_saturating_power_law", "frontier_envelope", "frontier_isoflop", "frontier_parametric",
    "frontier_surface", "get_fitter", "get_law", "huber", "multi_power_law", "parameter_efficiency",
    "score_law", "uncertainty_table", "window_sensitivity",
]
