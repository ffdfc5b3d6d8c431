"""The database layer: tables, sessions, and riding out a database that goes away.
The job's row is the single source of truth; who may change a row's state, and how, is
:mod:`medvision.lifecycle`."""

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
    Receiver,
    Study,
    StudyState,
    User,
    Worker,
    as_utc,
    heartbeat_state,
    stale_cutoff,
    utcnow,
)
from medvision.db._retry import DB_RETRY_S, is_db_unavailable, log_pass_failure, retry_db


def upgrade_schema(db: Database, revision: str = "head") -> str:
    """Migrate ``db`` to ``revision`` (Alembic); what was done, for logs and the CLI.

    Alembic is imported here, not with the package: most users of the tables never migrate.
    """
    from medvision.db._migrate import upgrade

    return upgrade(db, revision)


def schema_revisions(db: Database) -> tuple[str | None, str]:
    """The database's schema revision (None: never stamped) and the newest one shipped."""
    from medvision.db._migrate import current_revision, head_revision

    return current_revision(db), head_revision()


__all__ = [
    "DB_RETRY_S",
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
    "Receiver",
    "OutboxState",
    "Study",
    "StudyState",
    "User",
    "Worker",
    "as_utc",
    "heartbeat_state",
    "is_db_unavailable",
    "log_pass_failure",
    "retry_db",
    "schema_revisions",
    "stale_cutoff",
    "upgrade_schema",
    "utcnow",
]
