"""Shared fixtures: where the real public data lives, and where tests may write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``MEDVISION_SHARED_DATA``, default ``../shared/data`` beside the repository."""
    return Path(os.environ.get("MEDVISION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"Shared data not found at {path}; set MEDVISION_SHARED_DATA.")
    return path


@pytest.fixture(scope="session")
def chest_ct_dir(shared_data: Path) -> Path:
    """The real 64-slice chest CT (Lung-PET-CT-Dx A0001, CC BY 4.0)."""
    return shared_data / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"


@pytest.fixture(scope="session")
def chest_ct_annotations(shared_data: Path) -> Path:
    return shared_data / "ct" / "lung-pet-ct-dx-A0001" / "annotations"
