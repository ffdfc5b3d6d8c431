"""Database fixture: every test here runs on SQLite, and on PostgreSQL when
``MEDVISION_TEST_POSTGRES_URL`` is set (CI starts a real PostgreSQL cluster for it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medvision.db import Base, Database

POSTGRES_URL = os.environ.get("MEDVISION_TEST_POSTGRES_URL", "")


#: The PostgreSQL case alone, for tests of what only a server with concurrent writers can
#: show: ``@pytest.mark.parametrize("db", [ON_POSTGRESQL], indirect=True)``.
ON_POSTGRESQL = pytest.param(
    "postgresql",
    marks=pytest.mark.skipif(not POSTGRES_URL, reason="MEDVISION_TEST_POSTGRES_URL is not set"),
)


@pytest.fixture(params=["sqlite", ON_POSTGRESQL])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    else:
        database = Database(POSTGRES_URL)
        Base.metadata.drop_all(database.engine)  # a clean schema for each test
    database.create_schema()
    yield database
    if request.param == "postgresql":
        Base.metadata.drop_all(database.engine)
    database.dispose()
