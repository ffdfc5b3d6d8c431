"""The database layer: tables and sessions. The job's row is the single source of truth."""

from medvision.db._engine import Database
from medvision.db._models import (
    AuditEvent,
    Base,
    Instance,
    Job,
    JobState,
    Outbox,
    OutboxState,
    Study,
    StudyState,
    utcnow,
)

__all__ = [
    "AuditEvent",
    "Base",
    "Database",
    "Instance",
    "Job",
    "JobState",
    "Outbox",
    "OutboxState",
    "Study",
    "StudyState",
    "utcnow",
]
