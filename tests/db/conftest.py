"""A database URL per backend: SQLite always, PostgreSQL when
``MEDVISION_TEST_POSTGRES_URL`` is set (CI starts a throw-away cluster for it). Unlike
tests/jobs, these tests need a database with no schema at all (not even
``alembic_version``), so the PostgreSQL one is emptied by reflection before and after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine

POSTGRES_URL = os.environ.get("MEDVISION_TEST_POSTGRES_URL", "")


def empty_postgres(url: str) -> None:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL, reason="MEDVISION_TEST_POSTGRES_URL is not set"
            ),
        ),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'medvision.db'}"
        return
    empty_postgres(POSTGRES_URL)
    yield POSTGRES_URL
    empty_postgres(POSTGRES_URL)
