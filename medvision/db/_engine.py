"""Engine and sessions for SQLite (embedded default) and PostgreSQL.

SQLite is opened in WAL mode with a busy timeout, so the SCP thread, the worker pool and
the API can write and read at the same time without "database is locked" errors.

PostgreSQL connections are checked before use (``pool_pre_ping``), so a pooled connection
cut by a server restart is replaced instead of failing the next transaction; connecting
gives up after 10 s and TCP keepalives notice a server that vanished without closing the
connection (fail-over, network cut) within about a minute instead of hours. A transaction
that was cut while running still fails; callers that must survive it retry the whole
transaction (``medvision.db.retry_db``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


class Database:
    """One engine and session factory per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "reset", _sqlite_writable)
        else:
            self.engine = create_engine(
                url, pool_pre_ping=True, connect_args=_postgres_connect_args(url)
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; a deferred transaction that later needs to write can
        # fail at once instead of waiting. One lock per process around each transaction
        # keeps the embedded node's threads in line (transactions are short).
        self._lock = threading.RLock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def create_schema(self) -> None:
        """Bring the database to the current schema (see :mod:`medvision.db._migrate`):
        a new database is created from the models and stamped, an older one is migrated,
        one made before Alembic is recognised and stamped first."""
        from medvision.db._migrate import upgrade

        upgrade(self)

    @contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception.

        ``immediate``: on SQLite, take the write lock at the start (``BEGIN IMMEDIATE``), for
        a transaction that reads and then writes while other *processes* write the same file
        (the acceptor processes, docs/node.md). A deferred one that read before another
        process committed cannot upgrade to a writer: SQLite answers "database is locked"
        at once instead of waiting (the busy timeout does not apply to a stale snapshot).
        The per-process lock above only orders this process's threads. Not for a
        transaction opened while the same thread holds another that wrote: it would wait
        for itself. No effect on PostgreSQL (row locks, ``with_for_update``, do that job).
        """
        with self._lock or nullcontext(), self._sessions() as session, session.begin():
            if immediate and self.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction, rolled back at the end, that never waits for a writer.

        For the API's and the pages' reads: in WAL mode SQLite readers neither wait for the
        writer nor block it, so a read skips the per-process lock of :meth:`session`. That
        lock is held by a writer of this process for as long as it waits for SQLite's write
        lock, which another process (an acceptor's indexer) may hold; a read queued behind it
        waited too (the soak bench's ``GET /studies``: up to 1.45 s). The database refuses
        any write in it (SQLite ``query_only``, PostgreSQL ``READ ONLY``), so a write slipped
        into a read fails loudly instead of racing the lock.
        """
        with self._sessions() as session:
            connection = session.connection()
            if self.is_sqlite:
                connection.exec_driver_sql("PRAGMA query_only = ON")
            else:
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            # No commit: closing the session rolls the connection back as the pool takes it
            # (where SQLite's query_only is turned off again); unlike a rollback, closing
            # keeps the loaded rows readable after the block, as a committed session does.
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


#: libpq options for PostgreSQL (psycopg and psycopg2); a value in the URL wins.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _postgres_connect_args(url: str) -> dict[str, int]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in (
        "psycopg",
        "psycopg2",
    ):
        return {}
    return {k: v for k, v in POSTGRES_CONNECT_ARGS.items() if k not in parsed.query}


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI types
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_writable(dbapi_connection, _record, _state) -> None:  # noqa: ANN001 - DBAPI types
    """Every connection goes back to the pool writable: ``query_only`` (set by
    :meth:`Database.read`) belongs to the connection, not to the transaction. The pool runs
    this before another thread can check the connection out."""
    dbapi_connection.execute("PRAGMA query_only = OFF")


__all__ = ["Database"]
