"""Figures: the Vega-Lite specs each chart builds, input errors, and rendering to every format.

Data are small synthetic frames from seeded generators that mimic the database's query results.
Set SCALEDB_PLOT_DIR=some/folder to keep one PNG of each chart there for a person to look at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from scaling_db.errors import PlotError
from scaling_db.plot import (CHART_KINDS, FORMATS, chart_to_data_uri, chart_to_png_bytes,
                             chart_to_svg, compute_frontier, coordcheck, fit_parameters, isoflop, loss_curves,
                             loss_vs_params_by_param, lr_sweep, optimal_allocation, optimal_lr,
                             save_chart, scaling_fit, window_sensitivity)
from scaling_db.plot.theme import CONFIG, OKABE_ITO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
E, A, B, ALPHA, BETA = 1.8, 60.0, 80.0, 0.32, 0.28  # a Chinchilla-like synthetic loss surface


def _loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return E + A / n**ALPHA + B / d**BETA


# --- synthetic query results ----------------------------------------------------------------

def curves_frame(seed: int = 0) -> pd.DataFrame:
    """`loss_curves`-query rows: 4 sizes, the two smallest with 3 seeds, steps 0..40."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, seeds in [(1e6, 3), (3e6, 3), (1e7, 1), (3e7, 1)]:
        for s in range(seeds):
            run = f"r{int(n):d}s{s}"
            for step in range(0, 41, 2):
                tokens = step * 100 * 50
                d = max(tokens, 1)
                rows.append(dict(run_id=run, name=f"N{n:.0e}-s{s}", experiment="toy", n_params=n,
                                 d_model=int(np.sqrt(n / 24)), parameterization="sp", lr=1e-3,
                                 seed=s, step=step, tokens=tokens, flops=6 * n * tokens,
                                 loss=_loss(n, d) * (1 + 0.01 * rng.standard_normal()),
                                 entropy_rate=E))
    return pd.DataFrame(rows)


def envelope_frame(ck: pd.DataFrame) -> pd.DataFrame:
    """The lower envelope: the lowest loss reached at or below each compute level."""
    ck = ck[ck["flops"] > 0].sort_values("flops")
    env = ck.assign(best=ck["loss"].cummin())
    return env[env["loss"] == env["best"]][["flops", "loss", "n_params", "tokens"]]


def fit_frames(seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = np.geomspace(1e6, 1e8, 8)
    loss = (E + 40 * n**-0.3) * (1 + 0.005 * rng.standard_normal(8))
    points = pd.DataFrame({"n_params": n, "loss": loss,
                           "run_id": [f"r{i}" for i in range(8)], "excluded": [True] + [False] * 7})
    grid = np.geomspace(1e6, 1e10, 60)
    y = E + 40 * grid**-0.3
    width = 0.02 * (y - E) * (1 + np.log10(grid / 1e6))
    curve = pd.DataFrame({"x": grid, "y": y, "lo": y - width, "hi": y + width,
                          "extrapolated": grid > 1e8})
    return points, curve


def isoflop_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, minima = [], []
    for c in [1e15, 3e15, 1e16, 3e16]:
        n = np.geomspace(3e5, 3e7, 7) * np.sqrt(c / 1e15)
        loss = _loss(n, c / (6 * n))
        rows.append(pd.DataFrame({"flop_budget": c, "n_params": n, "loss": loss}))
        coef = np.polyfit(np.log(n), loss, 2)
        ln_opt = -coef[1] / (2 * coef[0])
        minima.append(dict(flop_budget=c, n_params=np.exp(ln_opt), loss=np.polyval(coef, ln_opt),
                           n_lo=np.exp(ln_opt - 0.2), n_hi=np.exp(ln_opt + 0.2)))
    return pd.concat(rows, ignore_index=True), pd.DataFrame(minima)


def allocation_frame() -> pd.DataFrame:
    c = np.geomspace(1e15, 1e19, 20)
    rows = []
    for approach, a, g in [("envelope", 0.50, 0.10), ("isoflop", 0.49, 0.12),
                           ("parametric", 0.46, 0.25)]:
        n = g * c**a
        rows.append(pd.DataFrame({"approach": approach, "label": f"{approach}: a = {a:.2f}",
                                  "flops": c, "n_opt": n, "n_lo": n / 1.3, "n_hi": n * 1.3,
                                  "d_opt": c / (6 * n), "d_lo": c / (6 * n * 1.3),
                                  "d_hi": c / (6 * n / 1.3), "kind": "curve"}))
    pts_c = np.array([1e15, 3e15, 1e16, 3e16])
    n = 0.12 * pts_c**0.49
    rows.append(pd.DataFrame({"approach": "isoflop", "label": "isoflop: a = 0.49", "flops": pts_c,
                              "n_opt": n, "n_lo": n / 1.15, "n_hi": n * 1.15,
                              "d_opt": pts_c / (6 * n),
                              "kind": "point"}))
    return pd.concat(rows, ignore_index=True)


def lr_frame(seed: int = 2) -> pd.DataFrame:
    """SP's optimum LR falls as 1/width; muP's stays put. Two seeds per point."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in ["sp", "mup"]:
        for w in [64, 128, 256, 512]:
            best = 3e-3 * (64 / w if p == "sp" else 1.0)
            for lr in np.geomspace(1e-4, 1e-1, 8):
                for s in range(2):
                    loss = 2.0 + 0.5 * (64 / w) ** 0.5 + 0.08 * np.log(lr / best) ** 2
                    rows.append(dict(parameterization=p, d_model=w, lr=lr, seed=s,
                                     n_params=12 * 2 * w * w + 2 * 512 * w,
                                     loss=loss + 0.01 * rng.standard_normal()))
    df = pd.DataFrame(rows)
    df.loc[(df["lr"] == df["lr"].max()) & (df["parameterization"] == "sp"), "loss"] = np.inf
    return df


def optimal_lr_frame() -> pd.DataFrame:
    w = np.array([64, 128, 256, 512])
    sp, mup = 3e-3 * 64 / w, 3e-3 * (w / 64) ** 0.02
    return pd.DataFrame({"parameterization": ["sp"] * 4 + ["mup"] * 4, "d_model": np.r_[w, w],
                         "lr_opt": np.r_[sp, mup], "lr_lo": np.r_[sp, mup] / 1.4,
                         "lr_hi": np.r_[sp, mup] * 1.4})


def test_optimal_lr_marks_edge_optima_and_the_grid_best() -> None:
    df = optimal_lr_frame().assign(edge=[False] * 7 + [True],
                                   lr_grid_best=lambda d: d["lr_opt"] * 1.2)
    spec = optimal_lr(df).to_dict()
    marks = [mark_type(v) if not isinstance(v["mark"], dict) or "shape" not in v["mark"]
             else v["mark"]["shape"] for v in views(spec)]
    assert marks == ["rule", "line", "point", "cross"]
    assert spec["title"]["subtitle"][1] == ("bars: 95% interval of the parabola's optimum; ×: best grid value; "
                                            "hollow: best LR on the grid's edge (not bracketed)")


def coord_frame() -> pd.DataFrame:
    rows = []
    for p in ["sp", "mup"]:
        for w in [64, 128, 256, 512, 1024]:
            for i, layer in enumerate(["embed", "attn.0", "mlp.0", "attn.1", "mlp.1", "readout"]):
                for step in [1, 2, 3]:
                    growth = (w / 64) ** (0.25 * step) if p == "sp" else 1.0
                    rows.append(dict(parameterization=p, d_model=w, layer=layer, step=step,
                                     act_abs_mean=(0.5 + 0.2 * i) * growth))
    return pd.DataFrame(rows)


def window_frame() -> pd.DataFrame:
    return pd.DataFrame({"window": ["all", "drop smallest", "drop 2 smallest", "drop largest",
                                    "skip early ckpts"],
                         "exponent": [0.32, 0.35, 0.39, 0.29, 0.33],
                         "lo": [0.30, 0.32, 0.34, 0.26, 0.31],
                         "hi": [0.34, 0.38, 0.44, 0.32, 0.35]})


def fit_parameters_frame() -> pd.DataFrame:
    return pd.DataFrame({"group": ["tree", "ba_m2", "ba_m4"], "estimate": [0.21, 0.34, 0.41],
                         "lo": [0.15, 0.30, None], "hi": [0.26, 0.38, None]})


def test_fit_parameters_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["fit_parameters"]
    x = channel(spec, "x")[0]
    assert x["field"] == "group" and x["sort"] == ["tree", "ba_m2", "ba_m4", "er"]
    assert [mark_type(v) for v in views(spec)] == ["rule", "point"]
    sub = spec["title"]["subtitle"]
    assert sub == ["alpha in L = E + A·N^-alpha", "bars: 95% bootstrap interval; hollow: no interval",
                   "not fitted: er (too few points (3 vs at least 4))"]


def build_all() -> dict[str, alt.TopLevelMixin]:
    """One chart of every kind, from the frames above."""
    ck = curves_frame()
    points, curve = fit_frames()
    slices, minima = isoflop_frames()
    lrs = lr_frame()
    best = (lrs[np.isfinite(lrs["loss"])].groupby(["parameterization", "d_model"], as_index=False)
            .agg(n_params=("n_params", "first"), loss=("loss", "min")))
    return {
        "loss_curves_tokens": loss_curves(ck, x="tokens"),
        "loss_curves_flops": loss_curves(ck, x="flops"),
        "scaling_fit": scaling_fit(points, curve, "L = 1.8 + 40 N^-0.30", floor=E),
        "compute_frontier": compute_frontier(ck, envelope_frame(ck)),
        "isoflop": isoflop(slices, minima),
        "optimal_allocation": optimal_allocation(allocation_frame()),
        "lr_sweep": lr_sweep(lrs),
        "optimal_lr": optimal_lr(optimal_lr_frame()),
        "loss_vs_params_by_param": loss_vs_params_by_param(best),
        "coordcheck": coordcheck(coord_frame()),
        "window_sensitivity": window_sensitivity(window_frame(), (0.31, 0.335)),
        "fit_parameters": fit_parameters(fit_parameters_frame(), order=["tree", "ba_m2", "ba_m4", "er"],
                                         failed={"er": "too few points (3 vs at least 4)"},
                                         explain="L = E + A·N^-alpha"),
    }


# --- spec helpers -----------------------------------------------------------------------------

def views(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every unit view (one with a mark) in a spec, through layers, facets and concats."""
    if "mark" in spec:
        yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from views(sub)
    if "spec" in spec:
        yield from views(spec["spec"])


def mark_type(view: dict[str, Any]) -> str:
    mark = view["mark"]
    return mark["type"] if isinstance(mark, dict) else mark


def channel(spec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [v["encoding"][name] for v in views(spec) if name in v.get("encoding", {})]


def is_log(enc: dict[str, Any]) -> bool:
    return enc.get("scale", {}).get("type") == "log"


def data_rows(spec: dict[str, Any]) -> int:
    return sum(len(d["values"]) for d in _walk_data(spec))


def _walk_data(spec: Any) -> Iterator[dict[str, Any]]:
    if isinstance(spec, dict):
        if isinstance(spec.get("data"), dict) and "values" in spec["data"]:
            yield spec["data"]
        for v in spec.values():
            yield from _walk_data(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _walk_data(v)


@pytest.fixture(scope="module")
def charts() -> dict[str, alt.TopLevelMixin]:
    return build_all()


@pytest.fixture(scope="module")
def specs(charts: dict[str, alt.TopLevelMixin]) -> dict[str, dict[str, Any]]:
    return {k: c.to_dict() for k, c in charts.items()}


# --- specs ------------------------------------------------------------------------------------

def test_every_chart_carries_the_theme(specs: dict[str, dict[str, Any]]) -> None:
    for name, spec in specs.items():
        assert spec["config"]["font"] == CONFIG["font"], name
        assert spec["config"]["range"]["category"] == OKABE_ITO, name
        assert spec["title"]["text"], name


def test_loss_curves_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["loss_curves_tokens"]
    lines = [v for v in views(spec) if mark_type(v) == "line"]
    assert len(lines) == 1
    enc = lines[0]["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"]) == ("tokens", "loss")
    assert is_log(enc["x"]) and is_log(enc["y"])
    assert enc["detail"]["field"] == "run_id"
    assert enc["color"]["field"] == "n_params" and enc["color"]["type"] == "quantitative"
    assert enc["color"]["scale"]["type"] == "log"
    # the seed band: an area from min to max over the 3 seeds of the two smallest sizes
    (area,) = [v for v in views(spec) if mark_type(v) == "area"]
    assert area["encoding"]["y"]["field"] == "_lo" and area["encoding"]["y2"]["field"] == "_hi"
    values = spec["data"]["values"]
    bands = [r for r in values if r["_layer"] == "band"]
    assert {r["n_params"] for r in bands} == {1e6, 3e6}
    assert all(r["_lo"] <= r["_hi"] for r in bands)
    assert all(r["tokens"] > 0 for r in values)  # step 0 cannot sit on a log axis
    assert channel(specs["loss_curves_flops"], "x")[0]["field"] == "flops"


def test_loss_curves_without_repeated_seeds_has_no_band() -> None:
    ck = curves_frame()
    single = ck[ck["seed"] == 0]
    spec = loss_curves(single).to_dict()
    assert [mark_type(v) for v in views(spec)] == ["line"]


def test_loss_curves_std_band_and_categorical_colour() -> None:
    spec = loss_curves(curves_frame(), band="std", color="parameterization").to_dict()
    enc = channel(spec, "color")[0]
    assert enc["type"] == "nominal" and enc["scale"]["range"] == OKABE_ITO
    bands = [r for r in spec["data"]["values"] if r["_layer"] == "band"]
    assert bands and all(0 < r["_lo"] <= r["_hi"] for r in bands)
    assert spec["title"]["subtitle"] == "bands: mean ± 1 sd over seeds"
    with pytest.raises(PlotError, match="band must be 'minmax' or 'std'"):
        loss_curves(curves_frame(), band="iqr")


def test_loss_curves_thins_long_runs() -> None:
    steps = np.arange(1, 5001)
    df = pd.DataFrame({"run_id": "a", "tokens": steps * 1000, "loss": 3 + 1 / steps,
                       "n_params": 1e6})
    rows = loss_curves(df, max_points_per_run=100).to_dict()["data"]["values"]
    assert 50 <= len(rows) <= 100
    assert rows[0]["tokens"] == 1000 and rows[-1]["tokens"] == 5000 * 1000


def test_scaling_fit_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["scaling_fit"]
    assert spec["title"]["subtitle"][0] == "L = 1.8 + 40 N^-0.30"
    marks = [mark_type(v) for v in views(spec)]
    assert marks == ["area", "line", "point", "point", "rule"]  # the floor is named in the legend: no text
    area, line, point, hollow, rule = views(spec)
    assert hollow["mark"]["filled"] is False and [r["run_id"] for r in hollow["data"]["values"]] == ["r0"]
    assert area["encoding"]["y"]["field"] == "lo" and area["encoding"]["y2"]["field"] == "hi"
    assert line["encoding"]["strokeDash"]["field"] == "_part"
    assert line["encoding"]["strokeDash"]["scale"]["domain"] == ["fit", "extrapolation", "entropy rate: 1.8"]
    parts = {r["_part"] for r in line["data"]["values"]}
    assert parts == {"fit", "extrapolation"}
    # the dashed piece starts where the solid one ends: no gap in the drawn law
    seg = pd.DataFrame(line["data"]["values"])
    assert seg[seg["_part"] == "fit"]["x"].max() == seg[seg["_part"] == "extrapolation"]["x"].min()
    assert is_log(point["encoding"]["x"]) and is_log(point["encoding"]["y"])
    assert point["encoding"]["x"]["field"] == "n_params"
    assert rule["data"]["values"][0]["y"] == E and rule["encoding"]["strokeDash"]["field"] == "_part"
    assert rule["data"]["values"][0]["_part"] == "entropy rate: 1.8"


def test_scaling_fit_without_band_or_floor() -> None:
    points, curve = fit_frames()
    spec = scaling_fit(points, curve[["x", "y"]], "L = A N^-a").to_dict()
    assert [mark_type(v) for v in views(spec)] == ["line", "point", "point"]


def test_scaling_fit_says_where_it_cut_the_band() -> None:
    points, curve = fit_frames()
    curve.loc[curve.index[:5], "hi"] = 50.0  # a band that explodes at the smallest sizes
    spec = scaling_fit(points, curve, "f").to_dict()
    top = 2 * points["loss"].max()
    area = next(views(spec))
    assert max(r["hi"] for r in area["data"]["values"]) == pytest.approx(top)
    assert "band cut at 2× the highest point (it reaches 50)" in spec["title"]["subtitle"]
    whole = scaling_fit(points, curve, "f", clip_band=None).to_dict()
    assert max(r["hi"] for r in next(views(whole))["data"]["values"]) == 50.0
    assert "cut" not in json.dumps(whole["title"])
    untouched = scaling_fit(*fit_frames(), "f").to_dict()  # a band inside the range is not cut
    assert "cut" not in json.dumps(untouched["title"])


def test_scaling_fit_draws_one_law_per_group() -> None:
    points, curve = fit_frames()
    # a dotted group column (a sweep variable) is a nested path to Vega-Lite: the chart must not use it as a field
    pts = pd.concat([points.assign(**{"vars.graph": "tree"}),
                     points.assign(**{"vars.graph": "ba"}, loss=points["loss"] * 1.1)])
    cv = pd.concat([curve.assign(**{"vars.graph": "tree"}), curve.assign(**{"vars.graph": "ba"}, y=curve["y"] * 1.1)])
    spec = scaling_fit(pts, cv, ["tree: L = ...", "ba: L = ..."], group="vars.graph", group_order=["tree", "ba"],
                       floor=E, floor_label="entropy rate (exact)").to_dict()
    area, line, point, hollow, rule = list(views(spec))
    for view in (area, line, point, hollow):
        field = view["encoding"]["color"]["field"]
        assert "." not in field and field in view["data"]["values"][0]
        assert view["encoding"]["color"]["scale"]["domain"] == ["tree", "ba"]
    assert {r[field] for r in point["data"]["values"]} == {"tree", "ba"}
    assert line["encoding"]["color"]["title"] == "vars.graph"  # the legend is titled with the group column
    assert len({r["_segment"] for r in line["data"]["values"]}) == 4  # fit + extrapolation, per group
    assert spec["title"]["subtitle"][:2] == ["tree: L = ...", "ba: L = ..."]


def test_compute_frontier_spec(specs: dict[str, dict[str, Any]]) -> None:
    runs, env = views(specs["compute_frontier"])
    assert runs["encoding"]["detail"]["field"] == "run_id"
    assert runs["mark"]["opacity"] < 0.5
    for v in (runs, env):
        assert v["encoding"]["x"]["field"] == "flops" and is_log(v["encoding"]["x"])
        assert is_log(v["encoding"]["y"])
    losses = [r["loss"] for r in sorted(env["data"]["values"], key=lambda r: r["flops"])]
    assert losses == sorted(losses, reverse=True)


def test_isoflop_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["isoflop"]
    marks = [mark_type(v) for v in views(spec)]
    assert marks == ["line", "point", "rule", "point"]
    curves, pts, bar, minima = views(spec)
    assert curves["encoding"]["color"]["field"] == "flop_budget"
    assert len({r["flop_budget"] for r in curves["data"]["values"]}) == 4
    assert minima["mark"]["shape"] == "diamond"
    assert is_log(pts["encoding"]["x"]) and not is_log(pts["encoding"]["y"])
    assert bar["encoding"]["x"]["field"] == "n_lo" and bar["encoding"]["x2"]["field"] == "n_hi"



def test_isoflop_without_any_minimum_draws_the_slices_and_says_so() -> None:
    """Small sweeps (the gallery at smoke size) may have no budget whose parabola bottoms out
    inside its sizes: the slices are still data worth drawing."""
    slices, minima = isoflop_frames()
    spec = isoflop(slices, minima.iloc[0:0], subtitle=["no minimum"]).to_dict()
    assert [mark_type(v) for v in views(spec)] == ["line", "point"]
    assert spec["title"]["subtitle"] == ["no minimum"]


def test_optimal_allocation_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["optimal_allocation"]
    assert spec["facet"]["column"]["field"] == "quantity"
    assert spec["resolve"]["scale"]["y"] == "independent"
    assert {r["quantity"] for r in spec["data"]["values"]} == {"optimal parameters N_opt",
                                                             "optimal tokens D_opt"}
    marks = [mark_type(v) for v in views(spec)]
    assert marks == ["line", "area", "rule", "point"]
    for enc in channel(spec, "color"):
        assert enc["field"] == "_series"
        assert len(enc["scale"]["domain"]) == 3  # the IsoFLOP points share their law's colour
    assert all(is_log(e) for e in channel(spec, "x") + channel(spec, "y"))


def test_optimal_allocation_n_only() -> None:
    df = allocation_frame()[["approach", "flops", "n_opt"]]
    spec = optimal_allocation(df).to_dict()
    assert {r["quantity"] for r in spec["data"]["values"]} == {"optimal parameters N_opt"}


def _subtitle(frame: pd.DataFrame) -> str:
    return optimal_allocation(frame).to_dict()["title"]["subtitle"]


def test_optimal_allocation_subtitle_names_only_what_is_drawn() -> None:
    full = allocation_frame()
    assert _subtitle(full) == ("lines and bands: fitted laws with intervals; "
                               "points and bars: estimated optima with intervals")
    # the report's frontiers carry their intervals in the legend: no band, no bar is drawn
    bare = full.drop(columns=["n_lo", "n_hi", "d_lo", "d_hi"])
    assert _subtitle(bare) == "lines: fitted laws; points: estimated optima"
    assert _subtitle(bare[bare["kind"] == "curve"]) == "lines: fitted laws"
    some = full[full["kind"] == "curve"].copy()
    some.loc[some["approach"] == "parametric", ["n_lo", "n_hi", "d_lo", "d_hi"]] = np.nan
    assert _subtitle(some) == "lines: fitted laws; bands: their intervals, where computed"
    note = optimal_allocation(bare, notes=["2 run(s) left out"]).to_dict()["title"]["subtitle"]
    assert note == ["lines: fitted laws; points: estimated optima", "2 run(s) left out"]


def test_lr_sweep_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["lr_sweep"]
    assert spec["facet"]["column"]["field"] == "_param"
    assert spec["facet"]["column"]["sort"] == ["SP", "µP"]
    assert "resolve" not in spec  # shared axes across the two panels
    xs = channel(spec, "x")
    assert {e["field"] for e in xs} == {"lr"} and all(is_log(e) for e in xs)
    assert channel(spec, "color")[0]["field"] == "d_model"
    values = spec["data"]["values"]
    assert len(values) == 2 * 4 * 8 - 4  # two seeds averaged; SP's diverged top LR left out
    best = [r for r in values if r["_best"]]
    assert len(best) == 8
    sp_best = {r["d_model"]: r["lr"] for r in best if r["_param"] == "SP"}
    assert sp_best[512] < sp_best[64]  # SP's optimum moves with width


def test_optimal_lr_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["optimal_lr"]
    rule, line, points = views(spec)
    assert rule["encoding"]["y"]["field"] == "lr_lo" and rule["encoding"]["y2"]["field"] == "lr_hi"
    assert line["encoding"]["x"]["field"] == "d_model"
    assert is_log(line["encoding"]["x"]) and is_log(line["encoding"]["y"])
    assert line["encoding"]["color"]["scale"]["domain"] == ["SP", "µP"]


def test_loss_vs_params_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["loss_vs_params_by_param"]
    for enc in channel(spec, "x"):
        assert enc["field"] == "n_params" and is_log(enc)
    assert {e["field"] for e in channel(spec, "color")} == {"_param"}
    points, _, curve = views(loss_vs_params_by_param(
        lr_frame(), pd.DataFrame({"parameterization": "mup", "x": [1e5, 1e7], "y": [3.0, 2.5]})
    ).to_dict())
    assert curve["mark"]["strokeDash"] == [6, 4]


def test_coordcheck_spec(specs: dict[str, dict[str, Any]]) -> None:
    (view,) = views(specs["coordcheck"])
    enc = view["encoding"]
    assert enc["x"]["field"] == "d_model" and is_log(enc["x"])
    assert enc["y"]["field"] == "act_abs_mean" and is_log(enc["y"])
    assert enc["column"]["field"] == "step" and enc["row"]["field"] == "_param"
    assert enc["color"]["field"] == "layer"
    enc = coordcheck(coord_frame(), facet="layer").to_dict()["encoding"]
    assert (enc["column"]["field"], enc["color"]["field"]) == ("layer", "step")


def test_window_sensitivity_spec(specs: dict[str, dict[str, Any]]) -> None:
    spec = specs["window_sensitivity"]
    marks = [mark_type(v) for v in views(spec)]
    assert marks == ["rect", "rule", "point"]
    rect, interval, point = views(spec)
    assert rect["encoding"]["x"]["field"] == "lo" and "y" not in rect["encoding"]
    assert point["encoding"]["y"]["sort"] == window_frame()["window"].tolist()
    boot = [r for r in spec["data"]["values"] if r["_layer"] == "bootstrap"]
    assert [(r["lo"], r["hi"]) for r in boot] == [(0.31, 0.335)]
    assert any("bootstrap" in s for s in spec["title"]["subtitle"])


def test_window_sensitivity_per_parameter() -> None:
    df = pd.concat([window_frame().assign(parameter=p) for p in ("alpha", "beta")])
    boot = pd.DataFrame({"parameter": ["alpha", "beta"], "lo": [0.3, 0.2], "hi": [0.34, 0.25],
                         "estimate": [0.32, 0.22]})
    spec = window_sensitivity(df, boot).to_dict()
    assert spec["facet"]["column"]["field"] == "parameter"
    assert spec["resolve"]["scale"]["x"] == "independent"
    assert "rule" in [mark_type(v) for v in views(spec)][:2]  # the bootstrap estimate


def test_register_theme_for_own_charts() -> None:
    from scaling_db.plot import register_theme

    register_theme()
    try:
        assert "scaledb" in alt.theme.names()
        with alt.theme.enable("scaledb"):
            spec = alt.Chart(pd.DataFrame({"a": [1]})).mark_point().encode(x="a").to_dict()
        assert spec["config"]["font"] == CONFIG["font"]
    finally:
        alt.theme.unregister("scaledb")


def test_chart_kinds_cover_the_spec_plot_kinds() -> None:
    from typing import get_args

    from scaling_db.spec.schema import PlotKind

    assert set(get_args(PlotKind)) <= set(CHART_KINDS)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, args, missing", [
    (loss_curves, lambda: (curves_frame().drop(columns="tokens"),), "tokens"),
    (scaling_fit, lambda: (fit_frames()[0], fit_frames()[1].drop(columns="y"), "f"), "y"),
    (isoflop, lambda: (isoflop_frames()[0].drop(columns="flop_budget"), isoflop_frames()[1]),
     "flop_budget"),
    (optimal_allocation, lambda: (allocation_frame().drop(columns="approach"),), "approach"),
    (lr_sweep, lambda: (lr_frame().drop(columns=["lr", "d_model"]),), "d_model, lr"),
    (coordcheck, lambda: (coord_frame().drop(columns="layer"),), "layer"),
    (window_sensitivity, lambda: (window_frame().drop(columns="exponent"),), "exponent"),
    (fit_parameters, lambda: (fit_parameters_frame().drop(columns="estimate"),), "estimate"),
])
def test_missing_columns_name_the_chart_and_columns(
        fn: Callable[..., Any], args: Callable[[], tuple], missing: str) -> None:
    with pytest.raises(PlotError, match=rf"^{fn.__name__}: .*missing columns? {missing} \(got"):
        fn(*args())


@pytest.mark.parametrize("name", sorted(CHART_KINDS))
def test_empty_frames_are_refused(name: str) -> None:
    fn = CHART_KINDS[name]
    empty = pd.DataFrame()
    args = {"scaling_fit": (empty, empty, "f"), "compute_frontier": (empty, empty),
            "isoflop": (empty, empty)}.get(name, (empty,))
    with pytest.raises(PlotError, match=rf"^{fn.__name__}: "):
        fn(*args)


def test_empty_rows_with_the_right_columns() -> None:
    with pytest.raises(PlotError, match="loss_curves: frame has no rows to plot"):
        loss_curves(curves_frame().iloc[:0])


def test_only_step_zero_cannot_go_on_log_axes() -> None:
    ck = curves_frame()
    with pytest.raises(PlotError, match="no row .* finite, positive tokens, loss"):
        loss_curves(ck[ck["step"] == 0])


def test_unknown_format_lists_the_supported_ones(tmp_path: Path,
                                                 charts: dict[str, alt.TopLevelMixin]) -> None:
    with pytest.raises(PlotError, match=r"unknown figure format '\.gif' \(supported: "
                                        r"\.html, \.json, \.svg, \.png, \.pdf\)"):
        save_chart(charts["optimal_lr"], tmp_path / "fig.gif")
    with pytest.raises(PlotError, match="no extension"):
        save_chart(charts["optimal_lr"], tmp_path / "fig")


def test_save_chart_refuses_non_charts(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="expected an Altair chart"):
        save_chart({"mark": "point"}, tmp_path / "fig.png")  # type: ignore[arg-type]


# --- rendering --------------------------------------------------------------------------------

def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_chart_renders_to_png(tmp_path: Path, charts: dict[str, alt.TopLevelMixin]) -> None:
    keep = os.environ.get("SCALEDB_PLOT_DIR")
    out = Path(keep) if keep else tmp_path
    for name, chart in charts.items():
        path = save_chart(chart, out / f"{name}.png")
        width, height = _png_size(path.read_bytes())
        # PNGs are written at 2x; a single panel is about 340x240 CSS pixels plus axes and title
        assert 500 <= width <= 3000 and 400 <= height <= 2000, (name, width, height)
        assert path.stat().st_size > 10_000, name


@pytest.mark.parametrize("ext", FORMATS)
def test_save_chart_each_format(tmp_path: Path, ext: str,
                                charts: dict[str, alt.TopLevelMixin]) -> None:
    path = save_chart(charts["scaling_fit"], tmp_path / "sub" / f"fit{ext.upper()}")
    data = path.read_bytes()
    if ext == ".json":
        spec = json.loads(data)
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    elif ext == ".html":
        text = data.decode()
        assert "<html" in text.lower() and "cdn.jsdelivr" not in text  # self-contained
    elif ext == ".svg":
        assert data.lstrip().startswith(b"<svg")
    elif ext == ".png":
        assert data[:8] == PNG_MAGIC
    else:
        assert data[:5] == b"%PDF-"


def test_embedding_helpers(charts: dict[str, alt.TopLevelMixin]) -> None:
    chart = charts["optimal_lr"]
    assert chart_to_svg(chart).lstrip().startswith("<svg")
    w1, _ = _png_size(chart_to_png_bytes(chart, scale=1))
    w2, _ = _png_size(chart_to_png_bytes(chart))
    assert w2 == 2 * w1
    assert chart_to_data_uri(chart).startswith("data:image/png;base64,iVBORw0KGgo")


def test_charts_do_not_depend_on_altair_globals(charts: dict[str, alt.TopLevelMixin]) -> None:
    # Data are inlined (no 5,000-row transformer limit) and the theme travels in the spec.
    steps = np.arange(1, 6001)
    big = pd.DataFrame({"run_id": "a", "tokens": steps * 1000, "loss": 3 + 1 / steps,
                        "n_params": 1e6})
    spec = loss_curves(big, max_points_per_run=None).to_dict(validate=False)
    assert data_rows(spec) > 5000
    with alt.theme.enable("dark"):
        assert charts["isoflop"].to_dict()["config"]["background"] == "white"


# --- paper figures: units, ticks, no empty layers, journal widths (issue 16) -------------------

def _layers_with_rows(spec: dict[str, Any], inherited: int | None = None) -> Iterator[tuple[str, int]]:
    """(mark, number of data rows it sees) for every unit view, following inherited data."""
    own = spec.get("data", {}).get("values") if isinstance(spec.get("data"), dict) else None
    rows = len(own) if own is not None else inherited
    if "mark" in spec:
        yield mark_type(spec), rows or 0
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _layers_with_rows(sub, rows)
    if "spec" in spec:
        yield from _layers_with_rows(spec["spec"], rows)


def test_no_chart_has_an_empty_layer(specs: dict[str, dict[str, Any]]) -> None:
    for name, spec in specs.items():
        layers = list(_layers_with_rows(spec))
        assert layers, name
        assert all(rows > 0 for _, rows in layers), (name, layers)


def test_loss_axes_carry_their_unit(specs: dict[str, dict[str, Any]]) -> None:
    for name, spec in specs.items():
        titles = [e.get("axis", {}).get("title") or e.get("title") for e in channel(spec, "y")]
        if any(e.get("field") in ("loss", "_mean") for e in channel(spec, "y")):
            assert any(t and "(nats/token)" in t for t in titles), (name, titles)


def test_log_axes_have_enough_labelled_ticks(specs: dict[str, dict[str, Any]]) -> None:
    counted = 0
    for name, spec in specs.items():
        for enc in channel(spec, "x") + channel(spec, "y"):
            values = enc.get("axis", {}).get("values")
            if is_log(enc) and values:
                counted += 1
                assert len(values) >= 3, (name, enc["field"], values)
    assert counted >= 8


def test_loss_curves_draw_the_exact_entropy_rate() -> None:
    spec = loss_curves(curves_frame(), x="tokens", color="n_params", floor=E).to_dict()
    texts = [v for v in views(spec) if mark_type(v) == "text"]
    rules = [v for v in views(spec) if mark_type(v) == "rule"]
    assert not texts and len(rules) == 1  # named in the legend, never written over the curves
    assert rules[0]["encoding"]["strokeDash"]["scale"]["domain"] == ["entropy rate (exact): 1.8"]
    with pytest.raises(PlotError, match="floor must be a finite positive loss"):
        loss_curves(curves_frame(), floor=-1.0)


def test_counts_are_labelled_with_three_significant_digits(specs: dict[str, dict[str, Any]]) -> None:
    legend = specs["loss_curves_tokens"]["layer"][0]["encoding"]["color"]["legend"] \
        if "layer" in specs["loss_curves_tokens"] else None
    fmt = [e.get("legend", {}).get("format") for e in channel(specs["loss_curves_tokens"], "color")]
    assert ".3~s" in fmt, (legend, fmt)  # 18k, never 17.976k


def _pdf_width_in(data: bytes) -> float:
    import re

    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([0-9.]+)\s+([0-9.]+)\s*\]", data)
    assert box, "no MediaBox in the PDF"
    return float(box.group(1)) / 72


@pytest.mark.parametrize("width", ["column", "page"])
def test_every_chart_renders_for_a_journal_to_png_and_pdf(tmp_path: Path, width: str,
                                                          charts: dict[str, alt.TopLevelMixin]) -> None:
    from scaling_db.plot import PAPER_WIDTHS, for_paper

    for name, chart in charts.items():
        paper = for_paper(chart, width)
        spec = paper.to_dict()
        assert spec["config"]["axis"]["labelFontSize"] <= 8 and spec["config"]["legend"]["orient"] == "bottom"
        png = save_chart(paper, tmp_path / f"{name}-{width}.png").read_bytes()
        assert png[:8] == PNG_MAGIC
        pdf = save_chart(paper, tmp_path / f"{name}-{width}.pdf").read_bytes()
        assert pdf[:5] == b"%PDF-"
        if "facet" not in spec and "row" not in json.dumps(spec.get("encoding", {})) and name not in (
                "optimal_allocation", "coordcheck", "lr_sweep", "window_sensitivity"):
            # single-panel charts fit the journal width (multi-panel ones set their own sizes)
            assert _pdf_width_in(pdf) <= PAPER_WIDTHS[width] + 0.05, (name, _pdf_width_in(pdf))


@pytest.mark.parametrize("width", ["column", "page"])
def test_faceted_charts_fit_the_journal_width(tmp_path: Path, width: str) -> None:
    """Panels are sized from the target width and their count: the whole figure fits the page."""
    from scaling_db.plot import PAPER_WIDTHS, for_paper

    windows = pd.concat([window_frame().assign(parameter="alpha"), window_frame().assign(parameter="E")])
    faceted = {
        "lr_sweep": lr_sweep(lr_frame(), paper=width),
        "coordcheck": coordcheck(coord_frame(), paper=width),
        "optimal_allocation": optimal_allocation(allocation_frame(), paper=width),
        "window_sensitivity": window_sensitivity(window_frame(), (0.31, 0.335), paper=width),
        "window_sensitivity_facets": window_sensitivity(windows, paper=width),
    }
    for name, chart in faceted.items():
        pdf = save_chart(for_paper(chart, width), tmp_path / f"{name}.pdf").read_bytes()
        assert _pdf_width_in(pdf) <= PAPER_WIDTHS[width], (name, width, _pdf_width_in(pdf))
        if width == "page":  # and uses it: not a thumbnail in the corner of the page
            assert _pdf_width_in(pdf) >= 0.75 * PAPER_WIDTHS[width], (name, _pdf_width_in(pdf))


def test_contact_sheet_grid(charts: dict[str, alt.TopLevelMixin]) -> None:
    from scaling_db.plot.sheet import contact_sheet

    cells = [("curves", charts["loss_curves_tokens"]), ("sweep", charts["lr_sweep"]),
             ("isoflop", "query isoflop returned no rows"), ("fit", charts["scaling_fit"]),
             ("exponents", charts["fit_parameters"])]
    spec = contact_sheet(cells, title="exp: 4 of 5 figures drawn").to_dict()
    assert [len(row["hconcat"]) for row in spec["vconcat"]] == [2, 2, 1]
    assert spec["config"]["font"] == CONFIG["font"] and spec["title"]["text"] == "exp: 4 of 5 figures drawn"
    missing = spec["vconcat"][1]["hconcat"][0]
    assert missing["title"] == "isoflop" and missing["mark"]["type"] == "text"
    assert missing["data"]["values"][0]["line"] == "not drawn: query isoflop returned no rows"
    assert "facet" in spec["vconcat"][0]["hconcat"][1]  # a faceted figure keeps its panels
    assert all("config" not in cell for row in spec["vconcat"] for cell in row["hconcat"])
    # each figure keeps its own colours and legends
    assert spec["resolve"]["scale"]["color"] == "independent" == spec["vconcat"][0]["resolve"]["legend"]["color"]
    with pytest.raises(PlotError, match="no figures to lay out"):
        contact_sheet([])


def test_paper_titles_wrap_instead_of_being_cut() -> None:
    # Vega cuts a title line past `limit` with an ellipsis; for a journal the lines are wrapped instead.
    from scaling_db.plot.theme import for_paper

    long = "a subtitle long enough that a single column could never hold it on one line of text"
    base = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x:Q")
    spec = for_paper(base.properties(title=alt.Title("a title that is far too long for one column, surely",
                                                     subtitle=[long, "short"])), "column").to_dict()
    text, sub = spec["title"]["text"], spec["title"]["subtitle"]
    assert len(text) == 2 and len(sub) == 3 and sub[-1] == "short"
    assert " ".join(sub[:2]) == long and max(map(len, [*text, *sub])) * 4.2 <= spec["config"]["title"]["limit"]
    assert for_paper(base.properties(title="short"), "page").to_dict()["title"]["text"] == ["short"]
