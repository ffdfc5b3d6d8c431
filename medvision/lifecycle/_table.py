"""The allowed state transitions of studies, jobs and deliveries: from-state → to-states.

Plain data, read by the transition functions (a transition outside the table is refused)
and by docs/architecture.md ("Lifecycle"), and walked by tests/lifecycle.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from medvision.db import JobState, OutboxState, StudyState

#: The study states that follow ``complete``: derived from the current version's jobs and
#: deliveries by :func:`~medvision.lifecycle.refresh_study` (``queued`` and ``failed`` also
#: set by the assembler when it creates the jobs). A derivation is not an event: it may
#: find the study in any of them (one whose jobs moved since it was last derived) and must
#: be able to put it right, so any of them may follow any other.
DERIVED_STUDY_STATES = frozenset(
    {
        StudyState.QUEUED,
        StudyState.RUNNING,
        StudyState.DONE,
        StudyState.FAILED,
        StudyState.SENT,
        StudyState.SEND_FAILED,
    }
)

#: New instances (an image SOP class) re-open any study that is not receiving: version + 1.
_REOPEN = frozenset({StudyState.RECEIVING})

STUDY_TRANSITIONS: Mapping[StudyState, frozenset[StudyState]] = {
    # A new study is created receiving (new_study). Only the assembler completes it,
    # when it has been quiet for quiet_period_s and none of it is on its way in.
    StudyState.RECEIVING: frozenset({StudyState.COMPLETE}),
    # The assembler creates its jobs (queued) or finds no pipeline for it (failed).
    StudyState.COMPLETE: frozenset({StudyState.QUEUED, StudyState.FAILED}) | _REOPEN,
    **{state: DERIVED_STUDY_STATES | _REOPEN for state in sorted(DERIVED_STUDY_STATES)},
}

JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # Created queued (new_job). Claimed by one worker; superseded when new instances
    # re-open its study before it ran.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SUPERSEDED}),
    # Ends done, failed, refused, or superseded (its study changed while it ran); queued
    # again when its worker is lost (stopped, taken for dead), failed after MAX_ATTEMPTS.
    JobState.RUNNING: frozenset(
        {
            JobState.QUEUED,
            JobState.DONE,
            JobState.FAILED,
            JobState.REFUSED,
            JobState.SUPERSEDED,
        }
    ),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.REFUSED: frozenset(),
    JobState.SUPERSEDED: frozenset(),
}

OUTBOX_TRANSITIONS: Mapping[OutboxState, frozenset[OutboxState]] = {
    # Created pending with the job's end. pending → pending: a failed attempt, retried
    # later; failed after max_send_attempts; superseded by a newer version's results or a
    # reviewer's new SR before it was sent.
    OutboxState.PENDING: frozenset(
        {OutboxState.PENDING, OutboxState.SENT, OutboxState.FAILED, OutboxState.SUPERSEDED}
    ),
    OutboxState.SENT: frozenset(),
    OutboxState.FAILED: frozenset(),
    # Superseded while the sender had it on the wire: it did arrive.
    OutboxState.SUPERSEDED: frozenset({OutboxState.SENT}),
}


def allowed(table: Mapping[Any, Collection[Any]], old: str, new: str) -> bool:
    """Whether ``table`` allows ``old → new``."""
    return any(new == to for state, tos in table.items() if state == old for to in tos)


def sources(
    table: Mapping[Any, Collection[Any]],
    to: StrEnum,
    narrow: Collection[StrEnum] | None = None,
) -> list[str]:
    """The states ``table`` allows to move to ``to``, as the strings stored in the rows,
    limited to ``narrow`` where the caller wants fewer; ``narrow`` naming a state that may
    not move to ``to`` is a mistake in the caller (ValueError), not a refusal."""
    allowed_from = {str(state) for state, tos in table.items() if to in tos}
    if narrow is None:
        return sorted(allowed_from)
    wrong = {str(s) for s in narrow} - allowed_from
    if wrong:
        raise ValueError(f"{sorted(wrong)} → {to} is not an allowed transition")
    return sorted(str(s) for s in narrow)


__all__ = [
    "DERIVED_STUDY_STATES",
    "JOB_TRANSITIONS",
    "OUTBOX_TRANSITIONS",
    "STUDY_TRANSITIONS",
    "allowed",
    "sources",
]
