"""The audit trail over HTTP, for QA: filtered events and a verification of the chain.

Reading the trail is itself recorded (``audit.log_used``, DICOM A.5.3.2 Audit Log Used,
AUD-10), with the user and the filters, so who looked at what is on the record too.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import fnmatch
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from medvision.audit import parse_time, verify_database
from medvision.auth import Role
from medvision.db import AuditEvent
from medvision.http_deps import AuditDep, CurrentUserDep, DbDep, require_roles

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[require_roles(Role.QA)])


def _bound(value: str | None, end: bool) -> str | None:
    """An ISO bound in the trail's own time format, so the database compares strings."""
    if not value:
        return None
    try:
        dt = parse_time(value, end=end)
    except ValueError:
        raise HTTPException(422, f"Not an ISO date or date-time: {value!r}.") from None
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@router.get("/events")
def events(
    user: CurrentUserDep,
    db: DbDep,
    audit: AuditDep,
    study: Annotated[str | None, Query(description="Study Instance UID")] = None,
    since: Annotated[str | None, Query(description="ISO date or date-time (UTC if naive)")] = None,
    until: Annotated[str | None, Query(description="exclusive; a bare date includes it")] = None,
    type: Annotated[  # noqa: A002 - the filter's public name
        list[str] | None, Query(description="event type or pattern, e.g. user.* (repeatable)")
    ] = None,
    after_seq: Annotated[int, Query(ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> dict[str, Any]:
    """Events in chain order; page with ``after_seq`` = the last ``seq`` received."""
    lo, hi = _bound(since, False), _bound(until, True)
    patterns = type or []
    query = select(AuditEvent).where(AuditEvent.seq > after_seq).order_by(AuditEvent.seq)
    if study:
        query = query.where(AuditEvent.study_instance_uid == study)
    if lo:
        query = query.where(AuditEvent.time >= lo)
    if hi:
        query = query.where(AuditEvent.time < hi)
    if patterns and not any(ch in p for p in patterns for ch in "*?["):
        query = query.where(AuditEvent.type.in_(patterns))
    found: list[dict[str, Any]] = []
    with db.session() as session:
        for row in session.scalars(query.execution_options(yield_per=1000)):
            if patterns and not any(fnmatch.fnmatchcase(row.type, p) for p in patterns):
                continue
            found.append(row.as_event())
            if len(found) >= limit:
                break
    filters = {"study": study, "since": since, "until": until, "types": patterns}
    audit.record(
        "audit.log_used",
        action="api.events",
        user=user.name,
        log_uri="medvision-audit",
        returned=len(found),
        **{k: v for k, v in filters.items() if v},
    )
    return {"events": found, "count": len(found), "truncated": len(found) >= limit}


@router.get("/verify")
def verify(user: CurrentUserDep, db: DbDep, audit: AuditDep) -> dict[str, Any]:
    """Recompute the hash chain; ``first_bad_index`` is the first altered or missing event."""
    started = datetime.now(UTC)
    result = verify_database(db)
    audit.record(
        "audit.log_used",
        "success" if result.ok else "failure",
        action="api.verify",
        user=user.name,
        log_uri="medvision-audit",
        chain_ok=result.ok,
    )
    return {
        "ok": result.ok,
        "count": result.count,
        "first_bad_index": result.first_bad_index,
        "reason": result.reason,
        "checked_at": started.isoformat(),
    }


__all__ = ["router"]
