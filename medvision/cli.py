"""The ``medvision`` command.

Every failure a user can cause (a bad path, a refused series) is printed as one line on
stderr and turned into a non-zero exit code; a traceback means a bug in medvision.

Exit codes: 0 every pipeline that applies to a study produced results (pipelines made for
another modality or body part are not applicable, not errors); 1 an applicable pipeline
failed or refused the study, or no pipeline applies to it; 2 bad usage or no DICOM.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medvision import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from medvision.config import ConfigError

    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvision",
        description="DICOM AI node: segmentation and lesion detection with DICOM SEG and "
        "TID 1500 SR output.",
    )
    parser.add_argument("--version", action="version", version=f"medvision {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="analyse a study folder offline and write SEG, SR, JSON")
    run.add_argument("path", type=Path, help="a DICOM file or a folder (searched recursively)")
    run.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    run.add_argument(
        "--pipeline",
        action="append",
        dest="pipelines",
        metavar="NAME",
        help="pipeline to run (repeatable; default: every registered pipeline)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument(
        "--overlays",
        action="store_true",
        help="also write Secondary Capture overlays and a KOS (viewers without SEG support)",
    )
    run.add_argument(
        "--audit-anchors",
        type=Path,
        metavar="FILE",
        help="checkpoint file that each audit.jsonl's last event is signed into at the end "
        "(default: OUT/audit-anchors.jsonl)",
    )
    run.add_argument(
        "--audit-key",
        type=Path,
        metavar="FILE",
        help="checkpoint key, made (mode 0600) if absent; keep it outside OUT "
        "(default: OUT/audit-anchor.key)",
    )
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run the DICOM node and its REST API")
    serve.add_argument("--config", type=Path, help="medvision.toml (optional)")
    serve.add_argument(
        "--role",
        choices=["all", "receiver"],
        help="receiver: SCP, assembly, API and sender; jobs go to Celery workers over "
        "broker_url (default: the role setting, 'all')",
    )
    serve.set_defaults(func=_cmd_serve)

    worker = sub.add_parser(
        "worker",
        help="run jobs from RabbitMQ as a Celery worker (scale-out; needs broker_url)",
        description="Consumes job ids published by `medvision serve --role receiver`, "
        "claims each job in the shared database and runs its pipeline. See docs/scaling.md.",
    )
    worker.add_argument("--config", type=Path, help="medvision.toml (optional)")
    worker.add_argument(
        "--concurrency", type=int, default=1, help="jobs at a time (1: solo pool, default)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port, 0: off (default: the "
        "worker_metrics_port setting, 9811)",
    )
    worker.set_defaults(func=_cmd_worker)

    status = sub.add_parser("status", help="show each study's state and its jobs")
    status.add_argument("--config", type=Path, help="medvision.toml (optional)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    export = sub.add_parser(
        "export",
        help="write de-identified copies of finished cases (images, SEG, SR) for training",
        description="De-identify (PS3.15 Annex E basic profile and the [deid] options, keyed "
        "pseudonyms and UIDs) every finished study, or with --reviewed every study a "
        "reviewer has given feedback on, into OUT/<pseudonym>/<study>/{images,results}/.",
    )
    export.add_argument("--config", type=Path, help="medvision.toml (optional)")
    export.add_argument("--out", type=Path, required=True, help="folder to write into")
    export.add_argument(
        "--reviewed", action="store_true", help="only studies with reviewer feedback"
    )
    export.set_defaults(func=_cmd_export)

    db = sub.add_parser("db", help="database schema: upgrade, current revision")
    db_sub = db.add_subparsers(metavar="ACTION")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="migrate the node's database to the current schema (SQLite or PostgreSQL)",
        description="Runs the Alembic migrations shipped with medvision. A new database is "
        "created at the current revision; one made before migrations existed is recognised "
        "and stamped first. Safe to run again: an up-to-date database is left alone.",
    )
    _audit_source_args(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=_cmd_db_upgrade)
    current = db_sub.add_parser("current", help="print the database's schema revision")
    _audit_source_args(current)
    current.set_defaults(func=_cmd_db_current)
    db.set_defaults(func=lambda _args: (db.print_help(), 2)[1])

    pipes = sub.add_parser("pipelines", help="list the available pipelines")
    pipes.set_defaults(func=_cmd_pipelines)

    from medvision.pipelines.bundle._cli import add_models_parser

    add_models_parser(sub)

    from medvision.api._users_cli import add_users_parser

    add_users_parser(sub)

    from medvision.training._cli import add_training_parsers

    add_training_parsers(sub)

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
    _audit_source_args(verify)
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
    _audit_source_args(export)
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
    _audit_source_args(syslog)
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
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from medvision.errors import MedvisionError
    from medvision.runner import run_study

    if not args.path.exists():
        print(f"error: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    bars = _ProgressBars(enabled=not args.quiet)
    progress = None if args.quiet else bars.for_pipeline
    try:
        runs = run_study(
            args.path,
            args.out,
            args.pipelines,
            progress=progress,
            overlays=args.overlays,
            planar_sr=True,
        )
    except MedvisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bars.close()
    status = _report_runs(runs, quiet=args.quiet)
    return _anchor_run_logs(runs, args) or status


def _anchor_run_logs(runs: list, args: argparse.Namespace) -> int:
    """Sign each audit.jsonl's head into the checkpoint file (docs/audit.md); 0, or 1 when
    that cannot be done (the results stand, but say so)."""
    from medvision.audit import AnchorKeyError, anchor_jsonl, load_or_create_key

    logs = [r.out_dir / "audit.jsonl" for r in runs if r.out_dir is not None]
    logs = [p for p in logs if p.is_file()]
    if not logs:
        return 0
    anchors = args.audit_anchors or args.out / "audit-anchors.jsonl"
    try:
        key = load_or_create_key(args.audit_key or args.out / "audit-anchor.key")
        anchor_jsonl(logs, anchors, key)
    except (AnchorKeyError, OSError) as err:
        print(f"error: could not write the audit checkpoint: {err}", file=sys.stderr)
        return 1
    return 0


def _report_runs(runs: list, *, quiet: bool) -> int:  # list[PipelineRun], imported lazily
    """Print each study's outcome; 0 when every applicable pipeline produced results.

    A pipeline that is not for a study (another modality or body part) is one quiet note,
    not an error; a study that no pipeline applies to is an error naming each rule.
    """
    from medvision.terminal_table import findings_table

    ok = True
    by_study: dict[str, list] = {}
    for run in runs:
        by_study.setdefault(run.study_instance_uid, []).append(run)
    for uid, study_runs in by_study.items():
        skipped = [r for r in study_runs if r.status == "not-applicable"]
        applicable = [r for r in study_runs if r.status != "not-applicable"]
        if not applicable:
            ok = False
            why = "; ".join(r.reason for r in skipped)
            print(f"error: study {uid}: no pipeline applies: {why}", file=sys.stderr)
            continue
        for run in applicable:
            if run.status == "done" and run.findings is not None:
                print(findings_table(run))
            else:
                ok = False
                print(
                    f"error: study {uid}, {run.pipeline}: {run.status}: {run.reason}",
                    file=sys.stderr,
                )
        if skipped and not quiet:
            names = ", ".join(r.pipeline for r in skipped)
            print(f"note: study {uid}: not applicable: {names}", file=sys.stderr)
    return 0 if runs and ok else 1


def _settings(args: argparse.Namespace):  # noqa: ANN202 - Settings, imported lazily
    from medvision.config import load_settings

    return load_settings(args.config)


def _configure_logging() -> None:
    """The node's own INFO lines on stderr; Alembic only from WARNING on, so that a start
    prints one line instead of its plugin and migration-context chatter, while a failed
    migration still shows."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from medvision.api import create_app
    from medvision.node import Node

    try:
        settings = _settings(args)
        if args.role:
            settings = settings.model_validate({**settings.model_dump(), "role": args.role})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _configure_logging()
    node = Node(settings)
    try:
        node.start()
    except OSError as err:
        print(f"error: cannot start the DICOM listener: {err}", file=sys.stderr)
        return 2
    # Where the API listens is stated, since plain HTTP stays on 127.0.0.1 unless
    # http_bind_address opens it (Settings.http_host).
    http = "HTTPS" if settings.tls_cert else "HTTP"
    local = "" if settings.http_bind_address or settings.tls_cert else " (local only)"
    print(
        f"medvision node {settings.ae_title} listening on DICOM port {settings.dicom_port}, "
        f"{http} on {settings.http_host}:{settings.http_port}{local}, "
        f"data in {settings.data_dir}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        create_app(node.db, settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        # HTTPS when a certificate is configured (both or neither: checked in Settings).
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    # uvicorn re-raises the SIGTERM/SIGINT it caught once its own shutdown is done; with the
    # default SIGTERM action that kills the process before node.stop() can drain the
    # listener, flush the spool index and write `application.stop` to the audit trail.
    # A handler that does nothing lets the re-raise return here instead.
    import signal

    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        uvicorn.Server(config).run()
    finally:
        interrupted = node.stop()
        signal.signal(signal.SIGTERM, previous)
    if interrupted:
        # Those jobs' threads are still inside torch: a normal interpreter exit would run
        # the C++ clean-up under them and abort ("terminate called without an active
        # exception", exit 134). Everything of ours is closed and the jobs are queued again.
        print(
            f"medvision node stopped; job(s) {', '.join(map(str, interrupted))} interrupted, "
            "queued again for the next start",
            file=sys.stderr,
            flush=True,
        )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:

    try:
        settings = _settings(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not settings.broker_url:
        print("error: medvision worker needs broker_url (MEDVISION_BROKER_URL)", file=sys.stderr)
        return 2
    from medvision._extras import ExtraMissing, require

    try:
        require("celery", "scale")
    except ExtraMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    port = settings.worker_metrics_port if args.metrics_port is None else args.metrics_port
    if not 0 <= port <= 65535:
        print("error: --metrics-port must be 0 (off) to 65535", file=sys.stderr)
        return 2
    _configure_logging()
    from medvision.jobs import _metrics as worker_metrics

    if port:  # multiprocess mode before any worker metric is made (medvision.jobs._metrics)
        worker_metrics.enable()
    from medvision.jobs._celery import device_name, run_worker

    if port:
        worker_metrics.serve(port, settings.bind_address, device_name(), args.concurrency)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_worker(settings, args.config, args.concurrency)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy import select

    from medvision.db import Acceptor, Database, Job, Study, Worker

    settings = _settings(args)
    db = Database(settings.db_url)
    db.create_schema()
    with db.session() as session:
        studies = list(session.scalars(select(Study).order_by(Study.id)))
        jobs = list(session.scalars(select(Job).order_by(Job.id)))
        workers = list(session.scalars(select(Worker).order_by(Worker.id)))
        acceptors = list(session.scalars(select(Acceptor).order_by(Acceptor.name)))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "study_instance_uid": s.study_instance_uid,
                        "state": s.state,
                        "version": s.version,
                        "instances": s.instance_count,
                        "reason": s.reason,
                        "jobs": [
                            {
                                "id": j.id,
                                "pipeline": j.pipeline,
                                "state": j.state,
                                "reason": j.reason,
                            }
                            for j in jobs
                            if j.study_instance_uid == s.study_instance_uid
                        ],
                    }
                    for s in studies
                ],
                indent=2,
            )
        )
        return 0
    if acceptors:
        print(_acceptors_section(acceptors, settings.worker_stale_s))
    if workers:
        print(_workers_section(workers, settings.worker_stale_s))
    if not studies:
        print("no studies received yet")
    for s in studies:
        print(
            f"{s.study_instance_uid}  v{s.version}  {s.state:<12} {s.instance_count} instances"
            + (f"  ({s.reason})" if s.reason else "")
        )
        for j in jobs:
            if j.study_instance_uid == s.study_instance_uid:
                print(
                    f"    job {j.id} {j.pipeline} v{j.study_version}: {j.state}"
                    + (f" ({j.reason})" if j.reason else "")
                )
    return 0


def _open_db(args: argparse.Namespace):  # noqa: ANN202 - Database | None, imported lazily
    """The database named by --db/--config, or None after printing the usage error."""
    from medvision.db import Database

    try:
        return Database(_audit_db_url(args))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _cmd_export(args: argparse.Namespace) -> int:
    from medvision.deid._export import export_cases

    cases = export_cases(_settings(args), args.out, args.reviewed)
    images = sum(c.images for c in cases)
    results = sum(c.results for c in cases)
    print(
        f"exported {len(cases)} case(s), {images} image(s) and {results} result(s), "
        f"de-identified, to {args.out}"
    )
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from medvision.db._migrate import upgrade

    db = _open_db(args)
    if db is None:
        return 2
    try:
        print(upgrade(db, args.revision))
    finally:
        db.dispose()
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    from medvision.db._migrate import current_revision, head_revision

    db = _open_db(args)
    if db is None:
        return 2
    try:
        rev = current_revision(db)
    finally:
        db.dispose()
    head = head_revision()
    print(f"{rev or 'none'} (head: {head})")
    return 0 if rev == head else 1


def _workers_section(workers: list, stale_s: float) -> str:
    """Celery workers (scale-out), one line each; dead = silent for ``stale_s``."""
    from datetime import timedelta

    from medvision.db import utcnow
    from medvision.jobs._queue import as_utc

    cutoff = utcnow() - timedelta(seconds=stale_s)
    lines = ["workers:"]
    for w in workers:
        alive = w.state != "stopped" and as_utc(w.heartbeat_at) > cutoff
        state = w.state if alive or w.state == "stopped" else "dead"
        models = ", ".join(f"{k} {v}" for k, v in sorted(w.models.items())) or "no models"
        job = f", job {w.current_job_id}" if w.current_job_id else ""
        lines.append(
            f"    {w.name:<28} {state:<8} {w.device}; {models}{job}; {w.jobs_done} done; "
            f"heartbeat {as_utc(w.heartbeat_at):%Y-%m-%d %H:%M:%S}Z"
        )
    return "\n".join(lines)


def _acceptors_section(acceptors: list, stale_s: float) -> str:
    """DICOM acceptor processes (docs/node.md), one line each; dead = silent for ``stale_s``
    while it should be serving (the node itself gone)."""
    from datetime import timedelta

    from medvision.db import utcnow
    from medvision.jobs._queue import as_utc

    cutoff = utcnow() - timedelta(seconds=stale_s)
    lines = ["acceptors:"]
    for a in acceptors:
        state = a.state
        if state in ("starting", "serving") and as_utc(a.heartbeat_at) <= cutoff:
            state = "dead"
        restarts = f"; {a.restarts} restarts" if a.restarts else ""
        lines.append(
            f"    {a.name:<28} {state:<10} pid {a.pid}; {a.active_associations} open, "
            f"{a.associations} associations, {a.instances} instances "
            f"({a.bytes_received / 1e6:.1f} MB), {a.duplicates} duplicates, "
            f"{a.refused} refused{restarts}; heartbeat {as_utc(a.heartbeat_at):%H:%M:%S}Z"
        )
    return "\n".join(lines)


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from medvision import pipelines

    for name in pipelines.available():
        p = pipelines.get(name)
        print(f"{p.name}\t{p.version}\t{p.description}")
    return 0


def _audit_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="medvision.toml naming the node's database")
    group.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the node's database")


def _audit_context_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", help="AuditEnterpriseSiteID (default: medvision)")
    parser.add_argument("--source-id", help="AuditSourceID (default: this host's name)")


def _audit_db_url(args: argparse.Namespace) -> str:
    return args.db or _settings(args).db_url


def _audit_context(args: argparse.Namespace):  # noqa: ANN202 - ExportContext, lazy import
    from medvision.audit import ExportContext

    ctx = ExportContext()
    if not args.db:
        ctx = ExportContext(node_aet=_settings(args).ae_title)
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

    url = _audit_db_url(args)
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

    settings = None if args.db else _settings(args)
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
        url = _audit_db_url(args)
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
        _record_log_used(db, "export", safe_url(_audit_db_url(args)), messages=written, **filters)
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

    url = _audit_db_url(args)
    try:
        db = open_existing(url)
    except NoDatabase as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data_dir = Path(".") if args.db else _settings(args).data_dir
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
    anchor_file = args.anchors or (None if args.db else _settings(args).anchor_file)
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


class _ProgressBars:
    """One tqdm bar per (study, pipeline), driven by the pipeline's progress callback."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None

    def for_pipeline(self, name: str):  # noqa: ANN201 - returns a Progress callback
        if not self.enabled:
            return _print_stage(name)
        from tqdm import tqdm

        self.close()
        self._bar = bar = tqdm(total=100, desc=name, unit="%", leave=False)

        def update(stage: str, fraction: float) -> None:
            bar.set_description(f"{name}: {stage}")
            bar.n = int(round(100 * max(0.0, min(1.0, fraction))))
            bar.refresh()

        return update

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _print_stage(name: str):  # noqa: ANN201 - returns a Progress callback
    """Without a terminal, report each new stage on its own line instead of a bar."""
    last: list[str] = []

    def update(stage: str, fraction: float) -> None:
        if not last or last[-1] != stage:
            last.append(stage)
            print(f"[{name}] {stage} ({fraction:.0%})", file=sys.stderr, flush=True)

    return update


if __name__ == "__main__":
    sys.exit(main())
