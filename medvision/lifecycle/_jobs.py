"""Job and delivery (outbox row) transitions: each locks its study first, then moves the
rows with one conditional UPDATE, then derives the study's state again."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from medvision.db import Job, JobState, Outbox, OutboxState
from medvision.lifecycle._study import lock_studies, move, refresh_study
from medvision.lifecycle._table import JOB_TRANSITIONS, OUTBOX_TRANSITIONS, sources

#: Which rows a transition moves: one (the row, or its id), or every row matching the
#: conditions.
JobTarget = Job | int | Sequence[ColumnElement[bool]]
OutboxTarget = Outbox | int | Sequence[ColumnElement[bool]]


def new_job(**values: Any) -> Job:  # noqa: ANN401 - column values
    """A new job row: it starts ``queued`` (the table's only way in)."""
    return Job(state=JobState.QUEUED, **values)


def transition_job(
    session: Session,
    job: JobTarget,
    to: JobState,
    *,
    narrow: Collection[JobState] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    refresh: bool = True,
    **values: Any,  # noqa: ANN401 - column values
) -> bool:
    """Move ``job`` (a row, an id, or the rows matching a list of conditions) to ``to``
    wherever the table allows it from the state the row is in now (``narrow``: only from
    these; ``where``: further conditions, such as the claim still being the same worker's),
    setting ``values`` in the same UPDATE; whether any row moved.

    The study rows are locked first (:func:`~medvision.lifecycle.lock_studies`), and with
    ``refresh`` their states derived again afterwards; ``refresh=False`` for a caller that
    changes more in the transaction first and then calls
    :func:`~medvision.lifecycle.refresh_study` itself.
    """
    return _transition(session, Job, JOB_TRANSITIONS, job, to, narrow, where, refresh, values)


def transition_outbox(
    session: Session,
    row: OutboxTarget,
    to: OutboxState,
    *,
    narrow: Collection[OutboxState] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    refresh: bool = True,
    **values: Any,  # noqa: ANN401 - column values
) -> bool:
    """:func:`transition_job` for deliveries (outbox rows)."""
    return _transition(session, Outbox, OUTBOX_TRANSITIONS, row, to, narrow, where, refresh, values)


def _transition(
    session: Session,
    model: type[Job] | type[Outbox],
    table: Mapping[Any, Collection[Any]],
    target: Job | Outbox | int | Sequence[ColumnElement[bool]],
    to: StrEnum,
    narrow: Collection[StrEnum] | None,
    where: Iterable[ColumnElement[bool]],
    refresh: bool,
    values: Mapping[str, Any],
) -> bool:
    if isinstance(target, model):
        conditions = [model.id == target.id, *where]
        uids = [target.study_instance_uid]
    else:
        if isinstance(target, int):
            conditions = [model.id == target, *where]
        else:
            conditions = [*target, *where]
        candidates = model.state.in_(sources(table, to, narrow))
        uids = sorted(
            set(session.scalars(select(model.study_instance_uid).where(*conditions, candidates)))
        )
        if not uids:
            return False
    # The lock order: study rows first (in UID order), then theirs. Only rows of the
    # studies locked here may move, whatever matches the conditions by now.
    lock_studies(session, uids)
    conditions.append(model.study_instance_uid.in_(uids))
    moved = move(session, model, table, conditions, to, narrow, values)
    if moved and refresh:
        for uid in uids:
            refresh_study(session, uid)
    return moved > 0


__all__ = ["JobTarget", "OutboxTarget", "new_job", "transition_job", "transition_outbox"]
