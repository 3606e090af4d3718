"""The CLI starts at once: `--help`, `--version` and `validate` never import the heavy libraries,
and the lazy command table in scaling_db/cli/__init__.py matches the commands the modules define.
(Start-up times are measured by benchmarks/bench_cli.py, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from scaling_db.cli import COMMANDS, cli, load_all_commands

HEAVY = ("torch", "altair", "statsmodels", "scipy", "pandas")


def imported_after(code: str) -> dict[str, list[str]]:
    """Run `code` in a fresh interpreter; the heavy and scaling_db.cli.* modules it left imported."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps({{'heavy': sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})),"
             f" 'cli': sorted(m for m in sys.modules if m.startswith('scaling_db.cli.'))}}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def run_cli(*args: str) -> str:
    return (f"import sys\nfrom scaling_db.cli import cli\n"
            f"try:\n    cli({list(args)!r}, prog_name='scaledb')\nexcept SystemExit as exc:\n"
            f"    assert exc.code in (0, None), exc.code\n")


def test_importing_the_cli_imports_no_heavy_library_and_no_command() -> None:
    assert imported_after("import scaling_db.cli") == {"heavy": [], "cli": []}


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_import_no_command_module(args: tuple[str, ...]) -> None:
    assert imported_after(run_cli(*args)) == {"heavy": [], "cli": []}


def test_validate_imports_no_heavy_library() -> None:
    got = imported_after(run_cli("validate", "specs/ba_graph.yaml"))
    assert got["heavy"] == []
    assert "scaling_db.cli.spec_commands" in got["cli"]  # the probe did run the command


def test_the_lazy_table_matches_the_commands() -> None:
    commands = load_all_commands()
    assert set(commands) == set(COMMANDS), "add new commands to COMMANDS in scaling_db/cli/__init__.py"
    for name, (module, summary) in COMMANDS.items():
        command = commands[name]
        defined_in = sys.modules[(command.callback or command).__module__]
        assert defined_in.__name__ == f"scaling_db.cli.{module}", name
        assert command.get_short_help_str(10_000) == summary, f"COMMANDS[{name!r}] help differs from the command's"


def test_help_lists_every_command_and_a_command_loads_on_use() -> None:
    from click.testing import CliRunner

    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    listed = [line.split()[0] for line in out.output.split("Commands:\n")[1].splitlines() if line.strip()]
    assert listed == sorted(COMMANDS)
    assert CliRunner().invoke(cli, ["validate", "--help"]).exit_code == 0
    assert CliRunner().invoke(cli, ["nope"]).exit_code == 2
