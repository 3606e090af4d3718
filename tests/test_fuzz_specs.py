"""Hostile and generated specs through `scaledb validate` and `scaledb compile --dry-run`.

Every case runs in a forked child under a 1 GiB address-space cap and a 10 s wall-clock cap
(tests/spec_fuzz.py). Each must end as a clean `Error:` (exit 1, only `Error: ` lines, no
interpreter internals) or as a valid compile: never a traceback, a hang, a crash or a memory
blow-up, and validate and compile must agree. `benchmarks/fuzz_specs.py` runs thousands.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scaling_db.cli  # noqa: F401  (imported once here, before the cases fork)
from spec_fuzz import HOSTILE, generated_spec, run_case

TIME_CAP_S = 10.0
#: Hostile cases that are valid specs after all (a date is just a string; 150 parentheses parse).
VALID_HOSTILE = {"date_value", "derive_deep_parens"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_spec_is_a_clean_error(name: str, tmp_path: Path) -> None:
    result = run_case(name, HOSTILE[name], tmp_path, timeout_s=TIME_CAP_S)
    expected = "valid" if name in VALID_HOSTILE else "error"
    assert (result.outcome, result.detail if result.outcome != expected else "") == (expected, "")
    assert result.extra_rss_mb < 300, f"{name} used {result.extra_rss_mb:.0f} MB"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.randoms(use_true_random=False))
def test_generated_specs_end_cleanly(rng: random.Random) -> None:
    text = generated_spec(rng)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_case("generated", text, Path(tmp), timeout_s=TIME_CAP_S)
    assert result.outcome in ("valid", "error"), f"{result.outcome}: {result.detail}\n{text}"


def test_the_runner_reports_hangs_and_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself can fail: a hang is killed and reported, a traceback is a finding."""
    import spec_fuzz

    monkeypatch.setattr(spec_fuzz, "_child", lambda spec, ws: __import__("time").sleep(60))
    assert run_case("hang", HOSTILE["empty"], tmp_path / "a", timeout_s=1).outcome == "hang"

    def boom(spec: Path, ws: Path) -> dict:
        raise RecursionError("deep")

    monkeypatch.setattr(spec_fuzz, "_child", boom)
    assert run_case("crash", HOSTILE["empty"], tmp_path / "b", timeout_s=5).outcome == "crash"
