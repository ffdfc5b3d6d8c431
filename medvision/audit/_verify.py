"""Verifying the node's audit chain where it lives: in the database.

The chain rule is the one in :mod:`medvision.audit._chain`; what this module adds is
reading a possibly large ``audit_events`` table in ``seq`` order without holding it all in
memory, and opening a database for verification without ever creating one: a mistyped
path must be an error, not an empty (and therefore "intact") chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from medvision.audit._chain import Verification, verify_events
from medvision.db import AuditEvent, Database


class NoDatabase(FileNotFoundError):
    """The audit database to verify does not exist."""


def open_existing(url: str) -> Database:
    """A :class:`Database` for ``url``, refusing SQLite files that do not exist yet."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or not Path(path).is_file():
            raise NoDatabase(f"no audit database at {path or url!r}")
    return Database(url)


def safe_url(url: str) -> str:
    """The URL without its password, fit for messages and the Audit Log Used event."""
    return make_url(url).render_as_string(hide_password=True)


def db_events(db: Database, after_seq: int = -1, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Events with ``seq > after_seq`` in order, fetched ``batch`` at a time."""
    last = after_seq
    while True:
        with db.session() as session:
            rows = list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.seq > last)
                    .order_by(AuditEvent.seq)
                    .limit(batch)
                )
            )
            events = [row.as_event() for row in rows]
        if not events:
            return
        yield from events
        last = int(events[-1]["seq"])


def verify_database(db: Database) -> Verification:
    """Recompute the whole chain in ``audit_events``; report the first broken event."""
    return verify_events(db_events(db))


def head(db: Database) -> dict[str, Any] | None:
    """The newest event (its ``hash`` is the chain head to note down as an anchor)."""
    with db.session() as session:
        row = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).first()
        return row.as_event() if row is not None else None


__all__ = ["NoDatabase", "db_events", "head", "open_existing", "safe_url", "verify_database"]
