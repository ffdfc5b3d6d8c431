"""The node's commands: ``serve``, ``worker`` (Celery, scale-out), ``status`` and
``export`` (de-identified cases for training)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medvision.cli._common import configure_logging, settings_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``serve``, ``worker``, ``status`` and ``export``."""
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

    status = sub.add_parser(
        "status",
        help="show each study's state and its jobs (and the receivers, acceptor processes "
        "and workers that report to the database)",
    )
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


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from medvision.node import Node
    from medvision.server import create_app

    try:
        settings = settings_from(args)
        if args.role:
            settings = settings.model_validate({**settings.model_dump(), "role": args.role})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_logging()
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
    dicom = [] if settings.dicom_tls_only else [f"DICOM port {node.dicom_port}"]
    if settings.dicom_tls_port is not None:
        dicom.append(f"DICOM TLS port {node.dicom_tls_port}")
    print(
        f"medvision node {settings.ae_title} listening on {', '.join(dicom)}, "
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
        settings = settings_from(args)
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
    configure_logging()
    from medvision.jobs import worker_metrics

    if port:  # multiprocess mode before any worker metric is made (medvision.jobs._metrics)
        worker_metrics.enable()
    from medvision.jobs import device_name, run_worker

    if port:
        worker_metrics.serve(port, settings.bind_address, device_name(), args.concurrency)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_worker(settings, args.config, args.concurrency)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy import select

    from medvision.db import Acceptor, Database, Job, Receiver, Study, Worker

    settings = settings_from(args)
    db = Database(settings.db_url)
    db.create_schema()
    with db.session() as session:
        studies = list(session.scalars(select(Study).order_by(Study.id)))
        jobs = list(session.scalars(select(Job).order_by(Job.id)))
        workers = list(session.scalars(select(Worker).order_by(Worker.id)))
        acceptors = list(session.scalars(select(Acceptor).order_by(Acceptor.name)))
        receivers = list(session.scalars(select(Receiver).order_by(Receiver.name)))
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
    if receivers:
        print(_receivers_section(receivers, settings.worker_stale_s))
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


def _workers_section(workers: list, stale_s: float) -> str:
    """Celery workers (scale-out), one line each; dead = silent for ``stale_s``."""
    from medvision.db import as_utc, heartbeat_state, stale_cutoff

    cutoff = stale_cutoff(stale_s)
    lines = ["workers:"]
    for w in workers:
        state = heartbeat_state(w.state, w.heartbeat_at, cutoff)
        models = ", ".join(f"{k} {v}" for k, v in sorted(w.models.items())) or "no models"
        job = f", job {w.current_job_id}" if w.current_job_id else ""
        lines.append(
            f"    {w.name:<28} {state:<8} {w.device}; {models}{job}; {w.jobs_done} done; "
            f"heartbeat {as_utc(w.heartbeat_at):%Y-%m-%d %H:%M:%S}Z"
        )
    return "\n".join(lines)


def _receivers_section(receivers: list, stale_s: float) -> str:
    """The receivers sharing this database (those with a ``node_name``, docs/scaling.md),
    one line each: serving, stopped, or dead (silent for ``stale_s`` without having
    stopped: ``medvision.node.receiver_state``, the assemblers' rule), and how many studies
    each has acknowledged instances of that are not yet indexed."""
    from medvision.db import as_utc, stale_cutoff
    from medvision.node import receiver_state

    cutoff = stale_cutoff(stale_s)
    lines = ["receivers:"]
    for r in receivers:
        state = receiver_state(r.state, r.heartbeat_at, cutoff)
        busy = len(r.busy or [])
        lines.append(
            f"    {r.name:<28} {state:<10} {r.host} pid {r.pid}; {busy} "
            f"{'study' if busy == 1 else 'studies'} on their way into the index; "
            f"heartbeat {as_utc(r.heartbeat_at):%Y-%m-%d %H:%M:%S}Z"
        )
    return "\n".join(lines)


def _acceptors_section(acceptors: list, stale_s: float) -> str:
    """DICOM acceptor processes (docs/node.md), one line each; dead = silent for ``stale_s``
    while it should be serving (the node itself gone)."""
    from medvision.db import as_utc, heartbeat_state, stale_cutoff
    from medvision.node import ACCEPTOR_RUNNING_STATES

    cutoff = stale_cutoff(stale_s)
    lines = ["acceptors:"]
    for a in acceptors:
        state = heartbeat_state(a.state, a.heartbeat_at, cutoff, ACCEPTOR_RUNNING_STATES)
        restarts = f"; {a.restarts} restarts" if a.restarts else ""
        lines.append(
            f"    {a.name:<28} {state:<10} pid {a.pid}; {a.active_associations} open, "
            f"{a.associations} associations, {a.instances} instances "
            f"({a.bytes_received / 1e6:.1f} MB), {a.duplicates} duplicates, "
            f"{a.refused} refused{restarts}; heartbeat {as_utc(a.heartbeat_at):%H:%M:%S}Z"
        )
    return "\n".join(lines)


def _cmd_export(args: argparse.Namespace) -> int:
    from medvision.deid import export_cases

    cases = export_cases(settings_from(args), args.out, args.reviewed)
    images = sum(c.images for c in cases)
    results = sum(c.results for c in cases)
    print(
        f"exported {len(cases)} case(s), {images} image(s) and {results} result(s), "
        f"de-identified, to {args.out}"
    )
    return 0
