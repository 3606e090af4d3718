"""The results gallery's machinery: smoke sizes, spec folders, published values, Markdown pages.

The gallery itself (specs/gallery/, pages in docs/results/) is regenerated at its smoke size by
the `gallery` test below, which CI runs: every page must come back with all of its sections.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO
from scaling_db.cli import cli
from scaling_db.errors import SpecError
from scaling_db.report.published import check_published
from scaling_db.spec.collection import expand_spec_paths, order_by_dependency
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.loader import read_spec_source
from scaling_db.spec.schema import PublishedDecl

GALLERY = REPO / "specs" / "gallery"
SECTIONS = ["## Plan, as it ran", "## Results (95% intervals)", "## Against published values", "## Figures",
            "## Spec", "## Runs"]

RF_SPEC = """\
experiment: {name}
description: tiny random features
data: {{kind: random_features, latent_dim: 200, alpha: 1.0, seed: 0}}
model: {{kind: random_features, n_features: 10, ridge: 0.0}}
train: {{kind: closed_form, samples: 10, eval_samples: 500, seed: 0}}
sweep:
  axes:
    model.n_features: [10, 20, 40, 80]
    train.samples: [400]
analysis:
  fits:
    - {{name: loss_vs_n, law: power_law, x: [n_params], bootstrap: 20}}
  plots:
    - {{kind: scaling_fit, fit: loss_vs_n}}
  published:
    - {{analysis: loss_vs_n, quantity: alpha, value: 1.0, source: "Maloney et al. 2022", note: "tiny"}}
    - {{analysis: loss_vs_n, quantity: A, value: 1.0e9, source: "made up, to disagree"}}
smoke:
  sweep:
    axes:
      model.n_features: [10, 20, 40]
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_smoke_section_applies_only_when_asked(tmp_path):
    spec = _write(tmp_path / "rf.yaml", RF_SPEC.format(name="rf"))
    assert read_spec_source(spec).files == (spec,)
    assert len(compile_spec(spec).runs) == 4
    assert len(compile_spec(spec, smoke=True).runs) == 3
    assert "smoke" not in read_spec_source(spec).data


def test_smoke_section_errors_name_its_own_line(tmp_path):
    bad = RF_SPEC.format(name="rf").replace("model.n_features: [10, 20, 40]\n", "model.n_features: [-5]\n")
    spec = _write(tmp_path / "rf.yaml", bad)
    compile_spec(spec)  # the full size is fine
    with pytest.raises(SpecError) as err:
        compile_spec(spec, smoke=True)
    line = bad.splitlines().index("      model.n_features: [-5]") + 1
    assert f"rf.yaml:{line}" in str(err.value)


def test_smoke_section_must_be_a_mapping(tmp_path):
    spec = _write(tmp_path / "rf.yaml", RF_SPEC.format(name="rf").replace("smoke:\n", "smoke: 3\nunused:\n"))
    with pytest.raises(SpecError, match="smoke: must be a mapping"):
        read_spec_source(spec, smoke=True)


def test_folders_expand_and_analyses_follow_their_experiments(tmp_path):
    _write(tmp_path / "a_study.yaml", "experiment: study\nanalysis:\n  experiments: [rf]\n"
                                      "  fits: [{name: f, law: power_law, x: [n_params]}]\n")
    _write(tmp_path / "b_rf.yaml", RF_SPEC.format(name="rf"))
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base" / "shared.yaml", "model: {kind: transformer}\n")  # a base: not run on its own
    paths = expand_spec_paths([tmp_path])
    assert [p.name for p in paths] == ["a_study.yaml", "b_rf.yaml"]
    assert [p.name for p in order_by_dependency(paths)] == ["b_rf.yaml", "a_study.yaml"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="without spec files"):
        expand_spec_paths([tmp_path / "empty"])


class _Outcome:
    def __init__(self, name: str, rows: list[dict]):
        self.name, self._rows = name, rows

    def table(self) -> list[dict]:
        return self._rows


def _row(q: str, est: float, lo: float | None, hi: float | None) -> dict:
    return {"quantity": q, "estimate": est, "lo": lo, "hi": hi, "flag": ""}


def test_published_verdicts_read_the_interval():
    outcomes = [_Outcome("fit[g=a]", [_row("alpha", 0.5, 0.4, 0.6)]),
                _Outcome("fit[g=b]", [_row("alpha", 0.9, 0.8, 1.0)]),
                _Outcome("front", [_row("a (N_opt ∝ C^a, N = n_params)", 0.3, None, None)])]
    decls = [PublishedDecl(analysis="fit", quantity="alpha", value=0.55, source="paper"),
             PublishedDecl(analysis="front", quantity="a", value=0.5, source="paper"),
             PublishedDecl(analysis="gone", quantity="alpha", value=1, source="paper")]
    checks = check_published(decls, outcomes, {"gone": "too few runs"})
    assert [(c.analysis, c.verdict) for c in checks] == [
        ("fit[g=a]", "agrees"), ("fit[g=b]", "disagrees"), ("front", "no interval"), ("gone", "not computed")]
    assert "outside the measured 95% interval [0.8, 1]" in checks[1].sentence
    assert "measured/published = 1.6" in checks[1].sentence
    assert "too few runs" in checks[3].quantity


def test_published_values_must_name_a_declared_analysis(tmp_path):
    spec = _write(tmp_path / "rf.yaml", RF_SPEC.format(name="rf").replace("analysis: loss_vs_n, quantity: A",
                                                                          "analysis: nope, quantity: A"))
    with pytest.raises(SpecError, match="published value for unknown analysis 'nope'"):
        compile_spec(spec)


@pytest.mark.slow
def test_reproduce_writes_markdown_pages_and_an_index(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    _write(specs / "rf.yaml", RF_SPEC.format(name="rf"))
    out, ws = tmp_path / "results", tmp_path / "ws"
    result = CliRunner().invoke(cli, ["reproduce", str(specs), "--smoke", "--out", str(out), "-w", str(ws),
                                      "-j", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [obj] = json.loads(result.stdout)
    assert [p["verdict"] for p in obj["published"]] in (["agrees", "disagrees"], ["disagrees", "disagrees"])
    page = (out / "rf" / "README.md").read_text()
    assert all(s in page for s in SECTIONS)
    assert "Smoke size" in page and "3 (3 finished)" in page
    assert "cpu on this machine" in page  # the device and host recorded with the runs
    assert "![scaling_fit-loss_vs_n](scaling_fit-loss_vs_n.png)" in page
    assert (out / "rf" / "scaling_fit-loss_vs_n.png").read_bytes()[:4] == b"\x89PNG"
    index = (out / "README.md").read_text()
    assert "[rf](rf/README.md)" in index and "made up, to disagree" in index and "| disagrees |" in index
    assert "| **all** |  | 3 |" in index


@pytest.mark.slow
@pytest.mark.gallery
def test_gallery_regenerates_at_smoke_size(tmp_path, corpus_dir):
    """Every gallery spec runs at its smoke size and its page comes back with every section."""
    out, ws = tmp_path / "results", tmp_path / "ws"
    result = CliRunner().invoke(cli, ["reproduce", str(GALLERY), "--smoke", "--bootstrap", "20", "--out", str(out),
                                      "-w", str(ws)], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    experiments = [compile_spec(p, smoke=True).experiment for p in expand_spec_paths([GALLERY])]
    index = (out / "README.md").read_text()
    for name in experiments:
        page = (out / name / "README.md").read_text()
        missing = [s for s in SECTIONS if s not in page]
        assert not missing, f"{name}: page lacks {missing}"
        assert "not drawn" not in page, f"{name}: a figure was not drawn"
        for png in re.findall(r"\]\(([^)]+\.png)\)", page):
            assert (out / name / png).stat().st_size > 1000
        assert f"[{name}]({name}/README.md)" in index
    assert "`transformer.yaml` (base):" in (out / "gallery_kaplan" / "README.md").read_text()  # its extends chain
