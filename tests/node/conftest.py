"""Fixtures for the node's tests: an in-process SCP on a free port, and DICOM test files.

The SCP fixture runs the real :class:`~medvision.node.StorageSCP` with a real database and
audit log; the peers talking to it are dcmtk's tools or pynetdicom over TCP, never mocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database
from medvision.node import StorageSCP
from tests.jobs import conftest as jobs_conftest
from tests.node.peers import REPO_ROOT, dcmtk, free_port

#: The SQLite / PostgreSQL database of tests/jobs, for the node tests that need one bare.
db = jobs_conftest.db

SAMPLE_DIR = REPO_ROOT / "dicom_samples" / "chest-ct"


@dataclass
class RunningSCP:
    settings: Settings
    db: Database
    audit: DbAuditLog
    scp: StorageSCP

    @property
    def port(self) -> int:
        return self.settings.dicom_port

    def flush(self) -> None:
        """Wait until every acknowledged instance is in the index."""
        assert self.scp.indexer.flush(30), "the indexer did not catch up"


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., RunningSCP]]:
    """Start an SCP with the given settings overrides; stopped at the end of the test."""
    running: list[RunningSCP] = []

    def start(**overrides: Any) -> RunningSCP:
        # No peers are configured here: these tests' callers are let in explicitly (deny by
        # default otherwise), unless a test says otherwise.
        overrides.setdefault("accept_unknown_calling_ae", True)
        settings = Settings(
            data_dir=tmp_path / f"data{len(running)}",
            dicom_port=free_port(),
            bind_address="127.0.0.1",
            **overrides,
        )
        settings.data_dir.mkdir(parents=True)
        db = Database(settings.db_url)
        db.create_schema()
        audit = DbAuditLog(db)
        scp = StorageSCP(settings, db, audit)
        scp.start()
        running.append(RunningSCP(settings, db, audit, scp))
        return running[-1]

    yield start
    for r in running:
        r.scp.stop()
        r.db.dispose()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small synthetic chest CT that ships with the repository (RLE-compressed)."""
    if not any(SAMPLE_DIR.rglob("*.dcm")):
        pytest.fail(f"{SAMPLE_DIR} has no DICOM files; generate the sample first")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def compressed_ct(tmp_path_factory: pytest.TempPathFactory, chest_ct_dir: Path) -> dict[str, Path]:
    """One real CT slice in several transfer syntaxes, made with dcmtk's own codecs."""
    out = tmp_path_factory.mktemp("compressed")
    src = sorted(chest_ct_dir.glob("*.dcm"))[10]
    made = {}
    for name, tool, args in [
        ("rle", "dcmcrle", ()),
        ("jpeg-ls", "dcmcjpls", ()),
        ("jpeg-lossless", "dcmcjpeg", ()),
        ("deflated", "dcmconv", ("+td",)),
        ("explicit-be", "dcmconv", ("+tb",)),
    ]:
        # A new SOP Instance UID for each, so that they are distinct instances to the SCP.
        plain = out / f"{name}-src.dcm"
        plain.write_bytes(src.read_bytes())
        result = dcmtk("dcmodify", "-nb", "-gin", plain)
        assert result.returncode == 0, result.stderr
        target = out / f"{name}.dcm"
        result = dcmtk(tool, *args, plain, target)
        assert result.returncode == 0, result.stderr
        plain.unlink()
        made[name] = target
    return made
