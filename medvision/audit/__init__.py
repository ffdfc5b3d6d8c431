"""Audit trail: append-only, hash-chained events, and their verification."""

from medvision.audit._chain import (
    JsonlAuditLog,
    Verification,
    read_jsonl,
    verify_events,
    verify_file,
)
from medvision.audit._db import DbAuditLog

__all__ = [
    "DbAuditLog",
    "JsonlAuditLog",
    "Verification",
    "read_jsonl",
    "verify_events",
    "verify_file",
]
