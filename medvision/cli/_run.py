"""The offline commands: ``medvision run`` (a study folder in, SEG/SR/JSON out) and
``medvision pipelines``. They import no web, database or broker package (tests/test_layering.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``run`` and ``pipelines``."""
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

    pipes = sub.add_parser("pipelines", help="list the available pipelines")
    pipes.set_defaults(func=_cmd_pipelines)


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


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from medvision import pipelines

    for name in pipelines.available():
        p = pipelines.get(name)
        print(f"{p.name}\t{p.version}\t{p.description}")
    return 0


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
