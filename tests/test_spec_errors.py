"""Bad specs: each invalid file has an exact expected message (tests/specs/invalid/*.expected)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TEST_SPECS, check_golden
from scaling_db.cli import cli
from scaling_db.spec.compiler import compile_spec
from scaling_db.errors import SpecError

INVALID = sorted((TEST_SPECS / "invalid").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages show paths relative to the cwd; pin it so the expected texts are stable.
    monkeypatch.chdir(TEST_SPECS.parents[1])


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_message(path: Path, regen_golden: bool) -> None:
    with pytest.raises(SpecError) as info:
        compile_spec(path.relative_to(Path.cwd()))
    check_golden(path.with_suffix(".expected"), str(info.value) + "\n", regen_golden)


def test_every_problem_has_file_line_and_field() -> None:
    with pytest.raises(SpecError) as info:
        compile_spec("tests/specs/invalid/many_problems.yaml")
    problems = info.value.problems
    assert len(problems) == 4
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert all(p.file.endswith("many_problems.yaml") and p.line for p in problems)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("experiment: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    assert len(info.value.problems) == 1
    assert ":1 not valid UTF-8 (byte 0xe9 at offset 15). Save the file as UTF-8." in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    with pytest.raises(SpecError, match=r"a spec must be a YAML mapping \(got an empty file\)"):
        compile_spec(path)


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="^no_such.yaml file not found$"):
        compile_spec("no_such.yaml")


def test_cli_reports_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = CliRunner().invoke(cli, ["compile", "tests/specs/invalid/unknown_key.yaml", "-w", str(ws)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "model.d_modle: unknown field; did you mean `d_model`?" in result.output
    assert not ws.exists()


def test_cli_validate_all_files_before_failing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    args = ["compile", "tests/specs/base.yaml", "tests/specs/invalid/wrong_type.yaml", "-w", str(ws)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert not ws.exists(), "a valid spec given beside an invalid one must not be written either"


def test_debug_switch_shows_traceback() -> None:
    import subprocess
    import sys

    env = {**os.environ, "SCALEDB_DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "scaling_db", "validate", "tests/specs/invalid/unknown_key.yaml"],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "SpecError" in out.stderr
    plain = subprocess.run(
        [sys.executable, "-m", "scaling_db", "validate", "tests/specs/invalid/unknown_key.yaml"],
        capture_output=True, text=True,
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    # one complete line per problem, as the README promises
    assert plain.stderr.splitlines() == [
        "Error: tests/specs/invalid/unknown_key.yaml:4 model.d_modle: unknown field; did you mean `d_model`?",
        "Error: tests/specs/invalid/unknown_key.yaml:5 model.contxt: unknown field; did you mean `context`?",
    ]


def test_many_problems_say_that_compiling_stopped(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    values = ", ".join(str(-i) for i in range(1, 81))
    spec.write_text(f"extends: {TEST_SPECS / 'base.yaml'}\nsweep:\n  axes:\n    train.optimizer.lr: [{values}]\n")
    with pytest.raises(SpecError) as info:
        compile_spec(spec)
    problems = info.value.problems
    assert len(problems) == 51
    assert problems[0].format().endswith("many.yaml stopped after 50 problems; there may be more")
    assert all(p.field == "train.optimizer.lr" for p in problems[1:])
