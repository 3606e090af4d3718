"""Shared test helpers.

Data under ../shared (real published run tables, the public-domain corpus) lives beside the
project, never inside it. Tests that need it use `shared_path`: when it is missing they fail
under CI (where it must exist) and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
