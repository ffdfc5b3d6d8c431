"""Schema migrations with Alembic: bring any medvision database to the current schema.

Three kinds of database reach :func:`upgrade`:

* brand new (none of our tables): ``create_all`` from the models, then stamp head. One
  round of DDL instead of replaying every revision; the migrations-agree-with-models test
  guarantees that both routes give the same schema.
* made by ``create_all`` before Alembic existed (our tables, no ``alembic_version``): the
  revision it matches is worked out from the tables present (all of 0002's tables: 0002,
  else 0001), stamped, and the rest is upgraded normally.
* managed by Alembic: upgraded from its recorded revision to head.

On PostgreSQL the whole decision and upgrade runs under a transaction-scoped advisory lock,
so a receiver and several workers starting at once against one database do not race to
create the same tables. On SQLite (the embedded default) an exclusive lock on a file next to
the database does the same for the processes that can share it (the prefork children of
``medvision worker --concurrency N`` on a SQLite file, a CLI command run beside the node).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from medvision.db._models import Base

if TYPE_CHECKING:
    from medvision.db._engine import Database

#: The tables of the first revision, and those revision 0002 added.
TABLES_0001 = frozenset({"studies", "instances", "jobs", "outbox", "audit_events"})
TABLES_0002 = frozenset({"users", "api_tokens", "feedback"})
#: pg_advisory_xact_lock key: "medv" in ASCII, any constant would do.
_LOCK_KEY = 0x6D656476


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("medvision.db").joinpath("migrations"))
    )
    if connection is not None:
        cfg.attributes["connection"] = connection
        cfg.set_main_option("sqlalchemy.url", connection.engine.url.render_as_string(False))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def detect_legacy_revision(table_names: set[str]) -> str | None:
    """The revision a pre-Alembic database (made by ``create_all``) corresponds to."""
    if not table_names & TABLES_0001:
        return None
    # 0002 only adds tables, and creates each one only if it is missing, so a database
    # that has some of them (an intermediate development version) is stamped 0001.
    return "0002" if TABLES_0002 <= table_names else "0001"


def upgrade(db: Database, revision: str = "head") -> str:
    """Bring ``db`` to ``revision``; returns what was done (for logs and the CLI)."""
    with _sqlite_file_lock(db), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        return _upgrade(conn, revision)


@contextmanager
def _sqlite_file_lock(db: Database) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (no-op for other URLs and
    in-memory databases): SQLite's own locking lets two processes both see "no tables" and
    both run CREATE TABLE."""
    name = db.engine.url.database if db.is_sqlite else None
    if not name or name == ":memory:":
        yield
        return
    lock_path = Path(name).with_name(Path(name).name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _upgrade(conn: Connection, revision: str) -> str:
    tables = set(inspect(conn).get_table_names())
    cfg = alembic_config(conn)
    current = MigrationContext.configure(conn).get_current_revision()
    if not tables & TABLES_0001 and revision == "head":
        # Brand new (or emptied by drop_all, which leaves alembic_version behind).
        Base.metadata.create_all(conn)
        command.stamp(cfg, "head", purge=True)
        return f"created the schema at {head_revision()}"
    if current is None:
        legacy = detect_legacy_revision(tables)
        if legacy is not None:
            command.stamp(cfg, legacy)
            current = legacy
    command.upgrade(cfg, revision)
    new = MigrationContext.configure(conn).get_current_revision()
    return f"upgraded from {current or 'empty'} to {new}" if new != current else f"at {new}"


__all__ = [
    "TABLES_0001",
    "TABLES_0002",
    "alembic_config",
    "current_revision",
    "detect_legacy_revision",
    "head_revision",
    "upgrade",
]
