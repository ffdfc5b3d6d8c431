"""Which events an export or a syslog forward takes (time, study, type), with the study
context each message needs, and the export itself."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from medvision.audit._export import Event, to_message
from medvision.audit._messages import AuditMessage, ExportContext
from medvision.audit._xml import to_xml


def parse_time(value: str, *, end: bool = False) -> datetime:
    """A ``--since``/``--until`` bound: an ISO date or date-time (naive means UTC).

    A bare date as an upper bound means "through the end of that day".
    """
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if end and len(value) == 10:
        dt += timedelta(days=1)
    return dt


@dataclass(frozen=True)
class EventFilter:
    """Which events to export: a time window, a study and event-type patterns."""

    since: datetime | None = None
    until: datetime | None = None
    study: str | None = None
    types: tuple[str, ...] = ()

    def matches(self, event: Event, study: str | None) -> bool:
        if self.since or self.until:
            t = parse_time(str(event["time"]))
            if self.since and t < self.since:
                return False
            if self.until and t >= self.until:
                return False
        if self.study and study != self.study:
            return False
        return not self.types or any(fnmatch.fnmatchcase(str(event["type"]), p) for p in self.types)


def with_study_context(events: Iterable[Event]) -> Iterator[dict[str, Any]]:
    """Fill in ``study_instance_uid`` where a run's later events leave it implicit.

    ``medvision run`` names the study once, in ``run.started``; the events after it belong
    to that study until the next ``run.started``.
    """
    current: str | None = None
    for event in events:
        if event.get("type") == "run.started":
            current = event.get("study_instance_uid")
        if current and not event.get("study_instance_uid"):
            yield {**event, "study_instance_uid": current}
        else:
            yield dict(event)


def export_messages(
    events: Iterable[Event],
    ctx: ExportContext | None = None,
    selection: EventFilter | None = None,
) -> Iterator[tuple[AuditMessage, bytes]]:
    """Each selected, mappable event as (message, validated XML)."""
    ctx = ctx or ExportContext()
    selection = selection or EventFilter()
    for event in with_study_context(events):
        if not selection.matches(event, event.get("study_instance_uid")):
            continue
        msg = to_message(event, ctx)
        if msg is not None:
            yield msg, to_xml(msg, ctx)


__all__ = ["EventFilter", "export_messages", "parse_time", "with_study_context"]
