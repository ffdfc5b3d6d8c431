"""The node's audit trail: the same hash chain as the JSON-lines log, in the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from medvision.audit._chain import GENESIS, Verification, chain_hash, utc_now, verify_events
from medvision.db import AuditEvent, Database

#: pg_advisory_xact_lock key for appending to the chain ("mvau" in ASCII).
APPEND_LOCK_KEY = 0x6D766175


class DbAuditLog:
    """Append events to ``audit_events``; each insert links to the newest event."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        event_type: str,
        outcome: str = "success",
        *,
        study_instance_uid: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Append one event (fields must be JSON-serialisable and free of PHI)."""
        data = dict(fields)
        if study_instance_uid is not None:
            data["study_instance_uid"] = study_instance_uid
        for _ in range(20):  # another process may take the same seq: take the next one
            try:
                # Immediate: on SQLite another process (an acceptor) may append between
                # our read of the head and our insert (docs/node.md).
                with self.db.session(immediate=True) as session:
                    if not self.db.is_sqlite:
                        # PostgreSQL: appenders (threads, acceptor processes, receivers) take
                        # turns, so none spins on the next seq; under load 20 retries were
                        # not always enough and an event was lost to a RuntimeError.
                        session.execute(
                            text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK_KEY}
                        )
                    last = session.scalars(
                        select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)
                    ).first()
                    seq = 0 if last is None else last.seq + 1
                    prev = GENESIS if last is None else last.hash
                    event = {
                        "seq": seq,
                        "time": utc_now(),
                        "type": event_type,
                        "outcome": outcome,
                        **data,
                        "prev_hash": prev,
                    }
                    digest = chain_hash(prev, event)
                    session.add(
                        AuditEvent(
                            seq=seq,
                            time=event["time"],
                            type=event_type,
                            outcome=outcome,
                            study_instance_uid=study_instance_uid,
                            data=data,
                            prev_hash=prev,
                            hash=digest,
                        )
                    )
                event["hash"] = digest
                return event
            except IntegrityError:
                continue
        raise RuntimeError("could not append an audit event after 20 attempts")

    def events(self, study_instance_uid: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as session:
            query = select(AuditEvent).order_by(AuditEvent.seq)
            if study_instance_uid is not None:
                query = query.where(AuditEvent.study_instance_uid == study_instance_uid)
            return [row.as_event() for row in session.scalars(query)]

    def verify(self) -> Verification:
        return verify_events(self.events())


__all__ = ["DbAuditLog"]
