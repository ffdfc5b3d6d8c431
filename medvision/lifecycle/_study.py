"""Study transitions, the study row lock, and the study state derived from its jobs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from medvision.db import Database, Job, JobState, Outbox, OutboxState, Study, StudyState
from medvision.lifecycle._table import DERIVED_STUDY_STATES, STUDY_TRANSITIONS, sources


def move(
    session: Session,
    model: type[Study] | type[Job] | type[Outbox],
    table: Mapping[Any, Collection[Any]],
    conditions: Iterable[ColumnElement[bool]],
    to: StrEnum,
    narrow: Collection[StrEnum] | None,
    values: Mapping[str, Any],
) -> int:
    """The one conditional UPDATE every transition is: the rows matching ``conditions``
    that are in a state ``table`` allows to move to ``to`` (``narrow``: fewer) move, in
    one statement, so a writer that changed a row since it was read is never overwritten.
    Returns how many moved."""
    if "state" in values:
        raise ValueError("the new state is `to`, not a value")
    statement = (
        update(model)
        .where(*conditions, model.state.in_(sources(table, to, narrow)))
        .values(state=str(to), **values)
    )
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def lock_studies(session: Session, uids: Iterable[str]) -> dict[str, Study]:
    """``SELECT ... FOR UPDATE`` the studies ``uids`` (those that exist), in UID order, and
    read them afresh; the first step of every transaction that changes a study's state or
    its jobs' or deliveries' (the lock order: see :mod:`medvision.lifecycle`).

    On PostgreSQL a second transaction locking one of them waits here until this one ends,
    and then reads what it committed (``populate_existing``: not this session's older copy).
    A no-op on SQLite, where a transaction that writes holds the whole database.
    """
    wanted = sorted(set(uids))
    found: dict[str, Study] = {}
    for i in range(0, len(wanted), 500):  # well below any database's parameter limit
        query = (
            select(Study)
            .where(Study.study_instance_uid.in_(wanted[i : i + 500]))
            .order_by(Study.study_instance_uid)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        found.update((s.study_instance_uid, s) for s in session.scalars(query))
    return found


def lock_study(session: Session, uid: str) -> Study | None:
    """:func:`lock_studies` for one study."""
    return lock_studies(session, [uid]).get(uid)


def new_study(**values: Any) -> Study:  # noqa: ANN401 - column values
    """A new study row: it starts ``receiving`` (the table's only way in)."""
    return Study(state=StudyState.RECEIVING, **values)


def transition_study(
    session: Session,
    study: Study | str,
    to: StudyState,
    *,
    narrow: Collection[StudyState] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    **values: Any,  # noqa: ANN401 - column values
) -> bool:
    """Move ``study`` (a row or its UID) to ``to`` if the table allows it from the state it
    is in now (``narrow``: only from these; ``where``: further conditions), setting
    ``values`` in the same UPDATE; whether it moved. A ``study`` row in this session is
    updated too."""
    uid = study if isinstance(study, str) else study.study_instance_uid
    conditions = [Study.study_instance_uid == uid, *where]
    return move(session, Study, STUDY_TRANSITIONS, conditions, to, narrow, values) == 1


def refresh_study(session: Session, uid: str) -> str:
    """Derive the study's state from its current version's jobs and deliveries, under its
    row lock; returns the state it is in after.

    Receiving and complete studies are left alone (the ingest and the assembler own those
    states). The lock is what makes the derivation safe: two transactions that each
    changed one job of the study (two workers ending, a claim and a sweep) would otherwise
    each read the jobs without the other's change and the later commit would write a state
    derived from a stale set. Holding the study row, the second waits, and then reads the
    jobs and deliveries as the first committed them (each statement reads afresh on
    PostgreSQL, and columns, not this session's ORM copies, are read here).
    """
    study = lock_study(session, uid)
    if study is None:
        return ""
    if study.state not in DERIVED_STUDY_STATES:
        return study.state
    jobs = session.execute(
        select(Job.id, Job.pipeline, Job.state, Job.reason).where(
            Job.study_instance_uid == uid, Job.study_version == study.version
        )
    ).all()
    states = {j.state for j in jobs}
    reason: str | None = None  # None: left as it is
    if not jobs:
        new = StudyState.FAILED
    elif JobState.RUNNING in states:
        new = StudyState.RUNNING
    elif JobState.QUEUED in states:
        new = StudyState.QUEUED
    elif JobState.DONE not in states:
        new = StudyState.FAILED
        reason = "; ".join(f"{j.pipeline}: {j.reason}" for j in jobs if j.reason)
    else:
        job_ids = [j.id for j in jobs if j.state == JobState.DONE]
        out = session.execute(
            select(Outbox.state, Outbox.attempts, Outbox.last_error).where(
                Outbox.job_id.in_(job_ids)
            )
        ).all()
        pending = [o for o in out if o.state == OutboxState.PENDING]
        failed = [o for o in out if o.state == OutboxState.FAILED]
        if not out:
            new = StudyState.DONE
        elif failed or any(o.attempts > 0 for o in pending):
            new = StudyState.SEND_FAILED
            reason = next((o.last_error for o in failed + pending if o.last_error), "")
        elif pending:
            new = StudyState.DONE
        else:
            new = StudyState.SENT
            reason = ""
    if new == study.state and reason in (None, study.reason):
        return new
    values = {} if reason is None else {"reason": reason}
    moved = transition_study(session, study, new, narrow=DERIVED_STUDY_STATES, **values)
    return new if moved else study.state


def refresh_study_state(db: Database, uid: str) -> str:
    """:func:`refresh_study` in a transaction of its own."""
    with db.session() as session:
        return refresh_study(session, uid)


__all__ = [
    "lock_studies",
    "lock_study",
    "move",
    "new_study",
    "refresh_study",
    "refresh_study_state",
    "transition_study",
]
