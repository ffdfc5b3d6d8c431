"""Shared fixtures: where the real public data lives, and where tests may write.

Tests are hermetic: none may read or write the user's home (``~/.cache/medvision``, where
imported models live), ``./medvision-data`` or anything else in the working folder, and no
``MEDVISION_*`` setting of the user's shell may reach them (a user's imported brainchop
models once changed three test outcomes). :func:`_hermetic_session` and
:func:`_hermetic_test` give the whole session, and then each test, its own empty home,
cache and working folder, and drop the user's medvision settings (:data:`USER_SETTINGS`);
the variables that configure the test run itself are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medvision.config import Settings
from tests.viewer.ohif import ohif_cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The ``MEDVISION_*`` variables medvision itself reads: every setting (``Settings``), the
#: user's model folder and the training knobs. A user's values for them are dropped; other
#: ``MEDVISION_*`` variables configure the test run (``MEDVISION_SHARED_DATA``, the read-only
#: input; ``MEDVISION_TEST_POSTGRES_URL``, ``MEDVISION_CHROMIUM``, ``MEDVISION_OHIF_SHOTS``,
#: ``MEDVISION_SLOW_TESTS`` ...) and are kept.
USER_SETTINGS = frozenset(f"MEDVISION_{name.upper()}" for name in Settings.model_fields) | {
    "MEDVISION_MODELS_DIR",
    "MEDVISION_LESION_FILTER",
}


def _is_user_setting(name: str) -> bool:
    return name in USER_SETTINGS or name.startswith("MEDVISION_TRAIN_")


#: The OHIF build's download cache, resolved before any test runs: ``MEDVISION_OHIF_CACHE``
#: or a folder of the system's temporary directory, never the user's home (a pinned,
#: sha256-checked npm tarball kept across runs so that the viewer tests do not download
#: 48 MB each time; nothing in it can change a test's outcome).
OHIF_CACHE = ohif_cache_dir()


def _isolate(mp: pytest.MonkeyPatch, home: Path, cwd: Path) -> None:
    """Point home, the XDG folders and the working folder at ``home`` / ``cwd``."""
    for name in list(os.environ):
        if _is_user_setting(name):
            mp.delenv(name)
    mp.setenv("MEDVISION_OHIF_CACHE", str(OHIF_CACHE))
    # The read-only shared data, as an absolute path: its default (../shared/data) is relative
    # to the working folder, which is about to become an empty temporary one.
    mp.setenv("MEDVISION_SHARED_DATA", str(shared_data_dir().resolve()))
    mp.setenv("HOME", str(home))
    for var, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_DATA_HOME", ".local/share")):  # fmt: skip
        mp.setenv(var, str(home / sub))
    mp.chdir(cwd)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For session- and module-scoped fixtures, which start before any test's own."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _hermetic_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test its own home and working folder (beside, not inside, its ``tmp_path``)."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("cwd"))
        yield


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
