"""scaledb is a real package: the wheel holds everything the CLI reads at run time.
(scripts/check-wheel, run by CI, installs the wheel into a fresh venv and runs it.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from scaling_db.store.query import BUILTIN_QUERY_DIR

QUERIES = sorted((REPO / "queries").glob("*.sql"))


def test_the_shipped_queries_are_the_top_level_queries_folder() -> None:
    # scaling_db/queries links to the top-level queries/ (the layout users see).
    assert BUILTIN_QUERY_DIR == Path(sys.modules["scaling_db"].__file__).parent / "queries"
    assert BUILTIN_QUERY_DIR.resolve() == (REPO / "queries").resolve()
    assert len(QUERIES) >= 9


def test_nothing_reads_files_beside_the_package() -> None:
    """Run-time files come from the package (importlib.resources), not from the source tree."""
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "scaling_db").rglob("*.py"))
                 if "parents[" in p.read_text()]
    assert offenders == []


@pytest.mark.slow
def test_the_wheel_holds_the_queries_and_every_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "scaledb-workspace", "__pycache__", ".pytest_cache"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("scaledb-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for sql in QUERIES:
            assert zf.read(f"scaling_db/queries/{sql.name}") == sql.read_bytes()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "scaling_db/py.typed" in names
    assert "scaledb = scaling_db.cli:main" in entry_points
    packages = {str(p.parent.relative_to(REPO)) for root in ("scaling_db", "runners")
                for p in (REPO / root).rglob("__init__.py")}
    assert {f"{pkg}/__init__.py" for pkg in packages} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "specs/")) for n in names)
