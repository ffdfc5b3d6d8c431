"""Audit trail: append-only, hash-chained events, their verification, and their export
as DICOM PS3.15 A.5 audit messages over syslog (see docs/audit.md).

The node's database side (``DbAuditLog``, ``verify_database`` and their helpers) is loaded
on first use: ``medvision run`` writes JSON lines and must not import SQLAlchemy.
"""

from typing import TYPE_CHECKING

from medvision._lazy import lazy_exports
from medvision.audit._anchor import (
    ANCHOR_MSGID,
    CHECKPOINT_EVENT,
    Anchorer,
    AnchorKeyError,
    AnchorReport,
    anchor_jsonl,
    line_reader,
    load_key,
    load_or_create_key,
    parse_syslog_copy,
    read_anchor_node,
    verify_jsonl_anchor,
    verify_with_anchors,
)
from medvision.audit._chain import (
    JsonlAuditLog,
    Verification,
    read_jsonl,
    verify_events,
    verify_file,
)
from medvision.audit._export import EVENT_MAP, INTERNAL_EVENTS, to_message
from medvision.audit._messages import AuditMessage, ExportContext
from medvision.audit._schema import InvalidAuditMessage, validate, validation_errors
from medvision.audit._select import EventFilter, export_messages, parse_time
from medvision.audit._syslog import (
    ChainMismatch,
    SyslogSender,
    SyslogTarget,
    Watermark,
    forward,
    frame,
    syslog_message,
)
from medvision.audit._xml import to_xml

__all__ = [
    "ANCHOR_MSGID",
    "CHECKPOINT_EVENT",
    "AnchorKeyError",
    "AnchorReport",
    "Anchorer",
    "anchor_jsonl",
    "line_reader",
    "load_key",
    "load_or_create_key",
    "parse_syslog_copy",
    "read_anchor_node",
    "verify_jsonl_anchor",
    "verify_with_anchors",
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

#: Names served from a module imported on first use (PEP 562), and where they live.
_LAZY = {
    "DbAuditLog": "medvision.audit._db",
    "NoDatabase": "medvision.audit._verify",
    "db_events": "medvision.audit._verify",
    "head": "medvision.audit._verify",
    "open_existing": "medvision.audit._verify",
    "safe_url": "medvision.audit._verify",
    "verify_database": "medvision.audit._verify",
}

if TYPE_CHECKING:
    from medvision.audit._db import DbAuditLog
    from medvision.audit._verify import (
        NoDatabase,
        db_events,
        head,
        open_existing,
        safe_url,
        verify_database,
    )


__getattr__ = lazy_exports(__name__, _LAZY)
