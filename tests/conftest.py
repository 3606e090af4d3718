"""Shared test helpers.

Data under ../shared (real published run tables, the public-domain corpus) lives beside the
project, never inside it. Tests that need it use `shared_path`: when it is missing they fail
under CI (where it must exist) and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

# Single-threaded OpenBLAS for the tests: their matrices are small, and OpenBLAS's worker threads
# spin-wait, which on a busy 2-core machine made the random-features tests 10x slower. This has
# to happen before numpy loads BLAS (conftest is imported before the test modules).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEST_SPECS = Path(__file__).resolve().parent / "specs"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or fail (CI) / skip (elsewhere) if it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: these tests need the shared data folder beside the repo"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def reference_dir() -> Path:
    return shared_path("data", "reference")


@pytest.fixture
def corpus_dir() -> Path:
    return shared_path("data", "corpus")


@pytest.fixture
def workspace(tmp_path: Path):
    from scaling_db.workspace import Workspace

    return Workspace(tmp_path / "ws")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden", action="store_true",
        help="Rewrite golden files (compiled specs, expected error texts) instead of comparing.",
    )


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regen-golden"))


def check_golden(path: Path, actual: str, regen: bool) -> None:
    """Compare `actual` with the golden file at `path` (or rewrite it with --regen-golden)."""
    if regen:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run `pytest --regen-golden` and review the diff")
    assert actual == path.read_text(), f"{path} differs; if intended, run `pytest --regen-golden` and review"


# ---------------------------------------------------------------- cluster engines (issue 7)
# Tests marked `slurm` need the local cluster from scripts/slurm-up; tests marked `ray` start a
# local Ray instance. An engine that cannot be reached fails the test under CI and skips it
# (with the reason) elsewhere. See docs/clusters.md.


def engine_unavailable(message: str) -> NoReturn:
    """The engine a test needs (Slurm, Ray) cannot be reached: fail under CI, skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _slurm_problem() -> str | None:
    """Why the local Slurm cluster cannot be used, or None if it answers."""
    hint = "start it with `sudo scripts/slurm-up`"
    for tool in ("sbatch", "sinfo", "squeue", "scontrol", "sacct"):
        if shutil.which(tool) is None:
            return f"Slurm is not installed ({tool} not on PATH): {hint}"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return f"slurmctld does not answer (sinfo timed out): {hint}"
    states = out.stdout.split()
    if out.returncode or not any(s.rstrip("*~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no usable Slurm node (sinfo: {out.stdout.strip() or out.stderr.strip()!r}): {hint}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, object]:
    """The local Slurm cluster: {'partition', 'preempt_partition', 'cpus'}; fail/skip if down."""
    problem = _slurm_problem()
    if problem:
        engine_unavailable(problem)
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        engine_unavailable(f"submitit is not installed ({exc}): pip install -e '.[slurm]'")
    parts = subprocess.run(["sinfo", "-h", "-o", "%R %c"], capture_output=True, text=True, timeout=15)
    found = dict(line.split() for line in parts.stdout.splitlines() if line.strip())
    if "debug" not in found or "urgent" not in found:
        engine_unavailable(f"partitions debug/urgent missing (sinfo: {found}): not a cluster from scripts/slurm-up")
    return {"partition": "debug", "preempt_partition": "urgent", "cpus": int(found["debug"].rstrip("+"))}


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance for the session (2 CPUs, no dashboard); fail/skip if it cannot start."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test instance: no token in ~/.ray
    try:
        import ray
    except ImportError as exc:
        engine_unavailable(f"ray is not installed ({exc}): pip install -e '.[ray]'")
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     object_store_memory=200 * 1024**2, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - any start failure means "engine unavailable"
            engine_unavailable(f"cannot start a local Ray instance: {type(exc).__name__}: {exc}")
        started = True
    yield ray
    if started:
        ray.shutdown()
