"""``medvision audit``: verify the hash chain and its checkpoints, export PS3.15 audit
messages, forward them to a syslog collector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medvision.cli._common import db_source_args, db_url_from, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``audit verify``, ``audit export`` and ``audit send-syslog``."""
    audit = sub.add_parser("audit", help="audit trail tools: verify, export, forward")
    audit_sub = audit.add_subparsers(metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain of audit.jsonl files, or of the node's database",
        description="With FILE arguments, check those audit.jsonl files; without, check the "
        "node's database (from --db, or the database_url/data_dir of --config), then the "
        "chain against its signed checkpoints (the checkpoint file, and a collector's syslog "
        "copy when given), which shows events deleted at the end. Exit 0: intact; 1: broken "
        "or unreadable (the first problem is named); 2: no such database or key.",
    )
    verify.add_argument("file", type=Path, nargs="*", help="audit.jsonl file(s)")
    db_source_args(verify)
    verify.add_argument(
        "--anchors",
        type=Path,
        metavar="FILE",
        help="checkpoint file (default with --config: audit_anchor_file, "
        "DATA_DIR/audit-anchors.jsonl)",
    )
    verify.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="checkpoint key (default with --config: audit_key_file, DATA_DIR/audit-anchor.key)",
    )
    verify.add_argument(
        "--syslog-copy",
        type=Path,
        metavar="FILE",
        help="a collector's saved syslog file: its checkpoints must all be in the anchor file",
    )
    verify.set_defaults(func=_cmd_audit_verify)

    export = audit_sub.add_parser(
        "export",
        help="write audit events as DICOM PS3.15 A.5 audit messages",
        description="Each selected event becomes one schema-validated DICOM audit message. "
        "--out DIR (an existing folder) writes one .xml file per message; any other path "
        "writes one message per line.",
    )
    export.add_argument(
        "file", type=Path, nargs="*", help="audit.jsonl file(s) (default: database)"
    )
    db_source_args(export)
    export.add_argument("--format", choices=["dicom-xml"], default="dicom-xml")
    export.add_argument("--out", type=Path, required=True, help="output file or folder")
    export.add_argument("--since", help="from this ISO date/time (UTC unless a zone is given)")
    export.add_argument("--until", help="before this ISO date/time (a bare date: through that day)")
    export.add_argument("--study", help="only this Study Instance UID")
    export.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="PATTERN",
        help="event type or glob, e.g. 'results.*' (repeatable)",
    )
    _audit_context_args(export)
    export.set_defaults(func=_cmd_audit_export)

    syslog = audit_sub.add_parser(
        "send-syslog",
        help="forward the node's audit messages to a syslog collector (RFC 5424/5425)",
        description="Sends every event after the last one delivered (kept in --state) as "
        "DICOM audit messages over TCP, or TLS with --tls. --follow keeps forwarding new "
        "events, reconnecting after failures.",
    )
    db_source_args(syslog)
    syslog.add_argument("--host", required=True, help="collector host")
    syslog.add_argument("--port", type=int, default=6514, help="collector port (default 6514)")
    syslog.add_argument("--tls", action="store_true", help="use TLS (RFC 5425)")
    syslog.add_argument("--ca", type=Path, help="CA bundle for the collector's certificate")
    syslog.add_argument("--cert", type=Path, help="our client certificate (mutual TLS)")
    syslog.add_argument("--key", type=Path, help="our client key")
    syslog.add_argument("--server-name", help="name to check the collector's certificate for")
    syslog.add_argument(
        "--state",
        type=Path,
        help="watermark file (default: DATA_DIR/audit-syslog.<host>-<port>.json)",
    )
    syslog.add_argument(
        "--anchors",
        type=Path,
        metavar="FILE",
        help="checkpoint file whose signed lines are forwarded too (default with --config: "
        "audit_anchor_file)",
    )
    syslog.add_argument("--follow", action="store_true", help="keep forwarding new events")
    syslog.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    _audit_context_args(syslog)
    syslog.set_defaults(func=_cmd_audit_send_syslog)


def _audit_context_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", help="AuditEnterpriseSiteID (default: medvision)")
    parser.add_argument("--source-id", help="AuditSourceID (default: this host's name)")


def _audit_context(args: argparse.Namespace):  # noqa: ANN202 - ExportContext, lazy import
    from medvision.audit import ExportContext

    ctx = ExportContext()
    if not args.db:
        ctx = ExportContext(node_aet=settings_from(args).ae_title)
    updates = {"site_id": args.site, "audit_source_id": args.source_id}
    from dataclasses import replace

    return replace(ctx, **{k: v for k, v in updates.items() if v})


def _record_log_used(db, action: str, url: str, outcome: str = "success", **fields) -> None:  # noqa: ANN001
    """AUD-10: reading the audit trail is itself audited (110101 Audit Log Used)."""
    import getpass
    import socket

    from medvision.audit import DbAuditLog

    try:
        DbAuditLog(db).record(
            "audit.log_used",
            outcome,
            action=action,
            user=getpass.getuser(),
            host=socket.gethostname(),
            log_uri=url,
            **fields,
        )
    except Exception as err:  # a read-only copy can still be verified
        print(f"warning: could not record the Audit Log Used event: {err}", file=sys.stderr)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from medvision.audit import AnchorKeyError, load_key, verify_file, verify_jsonl_anchor

    if not args.file:
        return _audit_verify_db(args)
    if args.config or args.db:
        print("error: give audit.jsonl files or --config/--db, not both", file=sys.stderr)
        return 2
    if args.syslog_copy:
        print("error: --syslog-copy checks the node's database", file=sys.stderr)
        return 2
    if bool(args.anchors) != bool(args.key):
        print("error: give --anchors and --key together", file=sys.stderr)
        return 2
    key = None
    if args.key:
        try:
            key = load_key(args.key)
        except AnchorKeyError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    status = 0
    for path in args.file:
        try:
            result = verify_file(path)
            problem = verify_jsonl_anchor(path, args.anchors, key) if key and result.ok else ""
        except (OSError, ValueError) as err:
            print(f"{path}: cannot read: {err}", file=sys.stderr)
            status = 1
            continue
        if not result.ok:
            print(f"{path}: BROKEN at {result.reason}", file=sys.stderr)
            status = 1
        elif problem:
            print(f"{path}: BROKEN: {problem}", file=sys.stderr)
            status = 1
        else:
            anchored = ", reaches its last checkpoint" if key else ""
            print(f"{path}: OK, {result.count} events, chain intact{anchored}")
    return status


def _audit_verify_db(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sqlalchemy.exc import SQLAlchemyError

    from medvision.audit import (
        AnchorKeyError,
        NoDatabase,
        db_events,
        head,
        open_existing,
        safe_url,
        verify_database,
        verify_with_anchors,
    )

    url = db_url_from(args)
    shown = safe_url(url)
    try:
        db = open_existing(url)
    except NoDatabase as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        anchors = _anchor_sources(args)
    except (AnchorKeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        db.dispose()
        return 2
    try:
        if anchors is None:
            result = verify_database(db)
            problem, summary = "", ""
        else:
            report = verify_with_anchors(db_events(db), *anchors)
            result, problem, summary = report.chain, report.problem, _anchor_summary(report)
        last = head(db) if result.ok else None
    except SQLAlchemyError as err:
        print(f"{shown}: cannot read the audit table: {err}", file=sys.stderr)
        db.dispose()
        return 1
    except OSError as err:
        print(f"error: cannot read: {err}", file=sys.stderr)
        db.dispose()
        return 2
    if not result.ok:
        print(f"{shown}: BROKEN at {result.reason}", file=sys.stderr)
    elif problem:
        print(f"{shown}: BROKEN: {problem}", file=sys.stderr)
        result = replace(result, ok=False, reason=problem)
    else:
        tip = f", head {last['hash']} (seq {last['seq']})" if last else ""
        print(f"{shown}: OK, {result.count} events, chain intact{tip}{summary}")
    _record_log_used(db, "verify", shown, "success" if result.ok else "failure", chain_ok=result.ok)
    db.dispose()
    return 0 if result.ok else 1


def _anchor_sources(args: argparse.Namespace):  # noqa: ANN202 - tuple or None
    """(anchor file, key, node, syslog copy) for :func:`verify_with_anchors`, or None
    with ``--db`` and no checkpoint file named (the chain alone is checked)."""
    import secrets

    from medvision.audit import AnchorKeyError, load_key, read_anchor_node

    settings = None if args.db else settings_from(args)
    anchor_file = args.anchors or (settings.anchor_file if settings else None)
    key_file = args.key or (settings.anchor_key_file if settings else None)
    given = args.anchors or args.key or args.syslog_copy
    if anchor_file is None and key_file is None:
        if args.syslog_copy:
            raise AnchorKeyError("--syslog-copy with --db needs --anchors and --key")
        return None
    if not given and anchor_file and key_file and not key_file.exists():
        if not anchor_file.exists():
            # No key and no file: never anchored, or both were removed. Checking with a
            # throw-away key still reports a chain that declares checkpoints (their file is
            # gone); a chain that declares none verifies, with a note.
            return anchor_file, secrets.token_bytes(32), "", None
    if key_file is None:
        raise AnchorKeyError("give --key with --anchors (the checkpoint key file)")
    if anchor_file is None:
        raise AnchorKeyError("give --anchors with --key (the checkpoint file)")
    key = load_key(key_file)
    node = settings.ae_title if settings else read_anchor_node(anchor_file)
    return anchor_file, key, node, args.syslog_copy


def _anchor_summary(report) -> str:  # noqa: ANN001 - AnchorReport
    last = report.last_anchor
    if last is None:
        return "; no checkpoint yet (the end of the chain is not anchored)"
    text = f"; {report.anchors} checkpoints, the last (n {last['n']}, {last['time']}) matches"
    if report.syslog_anchors:
        text += f"; {report.syslog_anchors} in the syslog copy, all in the file"
    return text


def _cmd_audit_export(args: argparse.Namespace) -> int:
    from medvision.audit import (
        EventFilter,
        InvalidAuditMessage,
        NoDatabase,
        db_events,
        export_messages,
        open_existing,
        parse_time,
        read_jsonl,
        safe_url,
        verify_events,
    )

    try:
        selection = EventFilter(
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until, end=True) if args.until else None,
            study=args.study,
            types=tuple(args.types or ()),
        )
    except ValueError as err:
        print(f"error: --since/--until: {err}", file=sys.stderr)
        return 2
    ctx = _audit_context(args)
    db = None
    if args.file:
        try:
            sources = [(str(p), read_jsonl(p)) for p in args.file]
        except (OSError, ValueError) as err:
            print(f"error: cannot read: {err}", file=sys.stderr)
            return 2
    else:
        url = db_url_from(args)
        try:
            db = open_existing(url)
        except NoDatabase as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        sources = [(safe_url(url), list(db_events(db)))]
    status = 0
    for name, events in sources:
        check = verify_events(events)
        if not check.ok:
            print(
                f"warning: {name}: chain BROKEN at {check.reason}; exporting anyway",
                file=sys.stderr,
            )
            status = 1
    per_file = args.out.is_dir()
    written = 0
    try:
        out = None if per_file else open(args.out, "wb")
        try:
            for i, (_, events) in enumerate(sources):
                prefix = f"{i:03d}-" if len(sources) > 1 else ""
                for msg, xml in export_messages(events, ctx, selection):
                    if out is None:
                        seq = msg.seq if msg.seq is not None else written
                        name = f"{prefix}{seq:08d}-{msg.event_type}.xml"
                        (args.out / name).write_bytes(xml)
                    else:
                        out.write(xml.replace(b"\n", b"") + b"\n")
                    written += 1
        finally:
            if out is not None:
                out.close()
    except InvalidAuditMessage as err:  # a bug in the mapping, never bad user input
        print(f"error: {err}", file=sys.stderr)
        return 3
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 2
    print(f"{written} DICOM audit messages written to {args.out}")
    if db is not None:
        filters = {
            k: v for k, v in vars(args).items() if k in ("since", "until", "study", "types") and v
        }
        _record_log_used(db, "export", safe_url(db_url_from(args)), messages=written, **filters)
        db.dispose()
    return status


def _cmd_audit_send_syslog(args: argparse.Namespace) -> int:
    import time

    from medvision.audit import (
        ChainMismatch,
        NoDatabase,
        SyslogSender,
        SyslogTarget,
        Watermark,
        db_events,
        forward,
        line_reader,
        open_existing,
    )

    url = db_url_from(args)
    try:
        db = open_existing(url)
    except NoDatabase as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data_dir = Path(".") if args.db else settings_from(args).data_dir
    state = args.state or data_dir / f"audit-syslog.{args.host}-{args.port}.json"
    target = SyslogTarget(
        host=args.host,
        port=args.port,
        tls=args.tls,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        server_name=args.server_name,
    )
    ctx = _audit_context(args)
    anchor_file = args.anchors or (None if args.db else settings_from(args).anchor_file)
    anchor_line = line_reader(anchor_file) if anchor_file else None
    delay = args.interval
    while True:
        sender = SyslogSender(target)
        try:
            mark = Watermark.load(state)
            result = forward(
                db_events(db, after_seq=mark.seq - 1),
                sender,
                state,
                ctx,
                anchor_line=anchor_line,
            )
            delay = args.interval
            if result.sent or result.checkpoints or not args.follow:
                print(
                    f"forwarded {result.sent} messages and {result.checkpoints} checkpoints "
                    f"to {args.host}:{args.port} ({result.skipped} internal events passed "
                    f"over); delivered up to event {result.last_seq}",
                    flush=True,
                )
            if result.waiting_for is not None:
                print(
                    f"warning: checkpoint {result.waiting_for} is in the chain but not in "
                    f"{anchor_file}; waiting for it (if it stays missing, the file was cut: "
                    "run `medvision audit verify`)",
                    file=sys.stderr,
                    flush=True,
                )
                if not args.follow:
                    return 1
        except ChainMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except OSError as err:  # collector down or TLS refused: keep the watermark, retry
            print(f"error: {args.host}:{args.port}: {err}", file=sys.stderr, flush=True)
            if not args.follow:
                return 1
            delay = min(delay * 2, 300.0)
        finally:
            sender.close()
        if not args.follow:
            return 0
        time.sleep(delay)
