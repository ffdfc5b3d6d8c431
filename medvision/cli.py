"""The ``medvision`` command.

Every failure a user can cause (a bad path, a refused series) is printed as one line on
stderr and turned into a non-zero exit code; a traceback means a bug in medvision.

Exit codes: 0 success; 1 some pipeline failed or was refused; 2 bad usage or no DICOM.
"""

from __future__ import annotations

import argparse
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
    return int(args.func(args))


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
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run the DICOM node and its REST API")
    serve.add_argument("--config", type=Path, help="medvision.toml (optional)")
    serve.set_defaults(func=_cmd_serve)

    status = sub.add_parser("status", help="show each study's state and its jobs")
    status.add_argument("--config", type=Path, help="medvision.toml (optional)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    pipes = sub.add_parser("pipelines", help="list the available pipelines")
    pipes.set_defaults(func=_cmd_pipelines)

    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check the hash chain of an audit file")
    verify.add_argument("file", type=Path, nargs="+", help="audit.jsonl file(s)")
    verify.set_defaults(func=_cmd_audit_verify)
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
        runs = run_study(args.path, args.out, args.pipelines, progress=progress)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    except MedvisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bars.close()
    from medvision.report import findings_table

    for run in runs:
        if run.status == "done" and run.findings is not None:
            print(findings_table(run))
        else:
            print(
                f"error: study {run.study_instance_uid}, {run.pipeline}: {run.status}: "
                f"{run.reason}",
                file=sys.stderr,
            )
    return 0 if runs and all(r.status == "done" for r in runs) else 1


def _settings(args: argparse.Namespace):  # noqa: ANN202 - Settings, imported lazily
    from medvision.config import load_settings

    return load_settings(args.config)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from medvision.api import create_app
    from medvision.node import Node

    try:
        settings = _settings(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    node = Node(settings)
    try:
        node.start()
    except OSError as err:
        print(f"error: cannot start the DICOM listener: {err}", file=sys.stderr)
        return 2
    print(
        f"medvision node {settings.ae_title} listening on DICOM port {settings.dicom_port}, "
        f"HTTP port {settings.http_port}, data in {settings.data_dir}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        create_app(node.db),
        host=settings.bind_address,
        port=settings.http_port,
        log_level="warning",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        node.stop()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy import select

    from medvision.db import Database, Job, Study

    settings = _settings(args)
    db = Database(settings.db_url)
    db.create_schema()
    with db.session() as session:
        studies = list(session.scalars(select(Study).order_by(Study.id)))
        jobs = list(session.scalars(select(Job).order_by(Job.id)))
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


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from medvision import pipelines

    for name in pipelines.available():
        p = pipelines.get(name)
        print(f"{p.name}\t{p.version}\t{p.description}")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from medvision.audit import verify_file

    status = 0
    for path in args.file:
        try:
            result = verify_file(path)
        except (OSError, ValueError) as err:
            print(f"{path}: cannot read: {err}", file=sys.stderr)
            status = 1
            continue
        if result.ok:
            print(f"{path}: OK, {result.count} events, chain intact")
        else:
            print(f"{path}: BROKEN at {result.reason}", file=sys.stderr)
            status = 1
    return status


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
