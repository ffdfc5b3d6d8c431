"""Audit trail: append-only, hash-chained events, and their verification."""

from medvision.audit._chain import (
    JsonlAuditLog,
    Verification,
    read_jsonl,
    verify_events,
    verify_file,
)

__all__ = ["JsonlAuditLog", "Verification", "read_jsonl", "verify_events", "verify_file"]
