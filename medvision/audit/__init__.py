"""Audit trail: append-only, hash-chained events, their verification, and their export
as DICOM PS3.15 A.5 audit messages over syslog (see docs/audit.md)."""

from medvision.audit._chain import (
    JsonlAuditLog,
    Verification,
    read_jsonl,
    verify_events,
    verify_file,
)
from medvision.audit._db import DbAuditLog
from medvision.audit._export import (
    EVENT_MAP,
    INTERNAL_EVENTS,
    AuditMessage,
    EventFilter,
    ExportContext,
    export_messages,
    parse_time,
    to_message,
    to_xml,
)
from medvision.audit._schema import InvalidAuditMessage, validate, validation_errors
from medvision.audit._syslog import (
    ChainMismatch,
    SyslogSender,
    SyslogTarget,
    Watermark,
    forward,
    frame,
    syslog_message,
)
from medvision.audit._verify import (
    NoDatabase,
    db_events,
    head,
    open_existing,
    safe_url,
    verify_database,
)

__all__ = [
    "EVENT_MAP",
    "INTERNAL_EVENTS",
    "AuditMessage",
    "ChainMismatch",
    "DbAuditLog",
    "EventFilter",
    "ExportContext",
    "InvalidAuditMessage",
    "JsonlAuditLog",
    "NoDatabase",
    "SyslogSender",
    "SyslogTarget",
    "Verification",
    "Watermark",
    "db_events",
    "export_messages",
    "forward",
    "frame",
    "head",
    "open_existing",
    "parse_time",
    "read_jsonl",
    "safe_url",
    "syslog_message",
    "to_message",
    "to_xml",
    "validate",
    "validation_errors",
    "verify_database",
    "verify_events",
    "verify_file",
]
