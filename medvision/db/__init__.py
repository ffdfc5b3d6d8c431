"""The database layer: tables and sessions. The job's row is the single source of truth."""

from medvision.db._engine import Database
from medvision.db._models import (
    Acceptor,
    ApiToken,
    AuditEvent,
    Base,
    Feedback,
    Instance,
    Job,
    JobState,
    Outbox,
    OutboxState,
    Study,
    StudyState,
    User,
    Worker,
    utcnow,
)

__all__ = [
    "Acceptor",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Database",
    "Feedback",
    "Instance",
    "Job",
    "JobState",
    "Outbox",
    "OutboxState",
    "Study",
    "StudyState",
    "User",
    "Worker",
    "utcnow",
]
