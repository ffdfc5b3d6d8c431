"""Fixtures for the DICOM reader: real series, and modified copies of them in temp folders.

Shared data is read-only, so every case that needs a broken or re-encoded series writes a
copy under ``tmp_path`` (or a session temp dir for copies that several tests read).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from medvision.dicom import SeriesInfo, scan


def only_series(path: Path) -> SeriesInfo:
    """The single series found under ``path`` (fails the test if there are more)."""
    studies = scan(path)
    series = [s for study in studies for s in study.series]
    assert len(series) == 1, [s.series_instance_uid for s in series]
    return series[0]


def rewrite(
    src_files: list[Path], out_dir: Path, edit: Callable[[int, Dataset], Dataset | None]
) -> Path:
    """Copy ``src_files`` into ``out_dir`` through ``edit(i, ds)``; returning None drops one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(src_files):
        ds = edit(i, dcmread(src))
        if ds is not None:
            ds.save_as(out_dir / f"slice{i:04d}.dcm", enforce_file_format=True)
    return out_dir


@pytest.fixture(scope="session")
def chest_ct_files(chest_ct_dir: Path) -> list[Path]:
    return sorted(chest_ct_dir.glob("*.dcm"))


@pytest.fixture(scope="session")
def enhanced_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Philips enhanced folder with its ``.dcm.gz`` files decompressed (scan skips gzip)."""
    src = shared_data / "mr" / "philips-3t-brain" / "enhanced"
    out = tmp_path_factory.mktemp("enhanced")
    for path in src.iterdir():
        if path.name.endswith(".gz"):
            with gzip.open(path) as fin, open(out / path.name[:-3], "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="session")
def mr_t1_dir(shared_data: Path) -> Path:
    return shared_data / "mr" / "philips-3t-brain" / "classic-t1"


@pytest.fixture(scope="session")
def edge_dir(shared_data: Path) -> Path:
    return shared_data / "ct" / "edge"


@pytest.fixture(scope="session")
def totalseg_dir(shared_data: Path) -> Path:
    return shared_data / "ct" / "totalsegmentator" / "example_ct_dicom"
