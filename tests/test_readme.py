"""The README is a promise: every verb it names exists, and its examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shared_path
from doc_blocks import tagged
from scaling_db.cli import load_all_commands
from tiny import tiny_specs

README = (REPO / "README.md").read_text()


def blocks(tag: str) -> list[str]:
    """Code blocks preceded by `<!-- readme-test: TAG -->` (tests/doc_blocks.py)."""
    return tagged(REPO / "README.md", tag)


def commands(tag: str) -> list[str]:
    return [line for block in blocks(tag) for line in block.splitlines() if line.strip()]


def test_every_verb_in_the_readme_exists() -> None:
    code = "\n".join(re.findall(r"```\w*\n(.*?)```", README, flags=re.S) + re.findall(r"`([^`\n]+)`", README))
    verbs = set(re.findall(r"\bscaledb ([a-z][a-z-]+)(?: ([a-z]+))?", code))
    assert len(verbs) > 10
    commands = load_all_commands()
    for verb, sub in verbs:
        assert verb in commands, f"README mentions `scaledb {verb}`, which does not exist"
        group = commands[verb]
        if hasattr(group, "commands") and sub:
            assert sub in group.commands, f"README mentions `scaledb {verb} {sub}`"


def test_every_command_is_in_the_readme() -> None:
    for name in load_all_commands():
        assert f"scaledb {name}" in README, f"`scaledb {name}` is not documented in the README"


def test_readme_names_the_two_commands_and_they_exist() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).strip()
    assert first == "scripts/setup && .venv/bin/scaledb reproduce specs/ba_graph.yaml"
    assert "scripts/setup && scripts/test" in README
    for script in ("scripts/setup", "scripts/test", ".ci/run"):
        assert os.access(REPO / script, os.X_OK), script
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SCALEDB_WORKSPACE", None)
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_readme_examples_run(tmp_path: Path) -> None:
    """The tour, then the Python API, on a tiny copy of the shipped specs."""
    tiny_specs(tmp_path)
    for line in commands("run"):
        out = _run(line, tmp_path)
        assert out.returncode == 0, f"README command failed: {line}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert (tmp_path / "scaledb-workspace" / "reports" / "ba_graph" / "report.html").exists()
    assert (tmp_path / "scaling_fit.pdf").read_bytes()[:4] == b"%PDF"
    (python_block,) = blocks("python")
    out = subprocess.run([sys.executable, "-c", python_block], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "loss_vs_flops.svg").read_text().startswith("<svg")


@pytest.mark.reference
@pytest.mark.slow
def test_readme_import_example_runs(tmp_path: Path) -> None:
    shared_path("data", "reference", "datablations")
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # the README's ../shared, relative to the repo
    for line in commands("reference"):
        out = _run(line, work)
        assert out.returncode == 0, f"README command failed: {line}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert "182 runs" in _run(commands("reference")[0], work).stdout


def test_the_spec_read_line_by_line_is_the_shipped_one() -> None:
    """The README walks through specs/ba_graph.yaml: the same settings, only the comments differ."""
    import yaml

    section = README.split("## A spec, line by line", 1)[1]
    shown = re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1)
    assert yaml.safe_load(shown) == yaml.safe_load((REPO / "specs" / "ba_graph.yaml").read_text())
