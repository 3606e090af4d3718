"""Figures for papers: pure functions from query-result DataFrames to themed Altair charts.

Each chart function documents the columns it needs (the database's standard names: `run_id`,
`n_params`, `tokens`, `flops`, `loss`, `parameterization`, `lr`, `d_model`, ...) and raises
PlotError naming the chart and any missing column. Fit results come in as plain frames too (a
fitted curve is `x, y, lo, hi, extrapolated`), so this package does not depend on the fitter.
`save_chart` writes .html, .json, .svg, .png or .pdf, rendered locally by vl-convert.

Every chart carries the scaledb theme in its own `config`, so it looks the same wherever it is
shown. Altair refuses to concatenate charts that carry a config: to put several side by side,
copy each, set `copy.config = alt.Undefined`, combine them, and `apply_theme` the result.
"""

from scaling_db.plot.curves import loss_curves, window_sensitivity
from scaling_db.plot.fits import fit_parameters, scaling_fit
from scaling_db.plot.export import (FORMATS, chart_to_data_uri, chart_to_png_bytes, chart_to_svg,
                                    save_chart)
from scaling_db.plot.frontier import compute_frontier, isoflop, optimal_allocation
from scaling_db.plot.mup import coordcheck, loss_vs_params_by_param, lr_sweep, optimal_lr
from scaling_db.plot.theory import theory_curves
from scaling_db.plot.theme import (PAPER_WIDTHS, apply_theme, for_paper, label, register_theme,
                                   scaledb_theme)

# Chart kind name (as in a spec's `analysis.plots[].kind`) -> the function that draws it.
CHART_KINDS = {
    "loss_curves": loss_curves,
    "scaling_fit": scaling_fit,
    "compute_frontier": compute_frontier,
    "isoflop": isoflop,
    "optimal_allocation": optimal_allocation,
    "lr_sweep": lr_sweep,
    "optimal_lr": optimal_lr,
    "mup_vs_sp": loss_vs_params_by_param,
    "coordcheck": coordcheck,
    "window_sensitivity": window_sensitivity,
    "theory_curves": theory_curves,
    "fit_parameters": fit_parameters,
}

__all__ = [
    "CHART_KINDS", "FORMATS", "PAPER_WIDTHS", "apply_theme", "label", "for_paper", "chart_to_data_uri", "chart_to_png_bytes",
    "chart_to_svg", "compute_frontier", "coordcheck", "fit_parameters", "isoflop", "loss_curves",
    "loss_vs_params_by_param", "lr_sweep", "optimal_allocation", "optimal_lr", "register_theme",
    "save_chart", "scaledb_theme", "scaling_fit", "window_sensitivity",
    "theory_curves",
]
