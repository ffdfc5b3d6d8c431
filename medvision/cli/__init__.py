"""The ``medvision`` command.

Every failure a user can cause (a bad path, a refused series) is printed as one line on
stderr and turned into a non-zero exit code; a traceback means a bug in medvision.

Exit codes: 0 every pipeline that applies to a study produced results (pipelines made for
another modality or body part are not applicable, not errors); 1 an applicable pipeline
failed or refused the study, or no pipeline applies to it; 2 bad usage or no DICOM.

One module per command group, each adding its own parser: ``_run`` (run, pipelines),
``_node`` (serve, worker, status, export), ``_db``, ``_audit``; ``models``, ``users``,
``train`` and ``evaluate`` come from their packages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    from medvision.cli import _audit, _db, _node, _run

    _run.add_parser(sub)
    _node.add_parser(sub)
    _db.add_parser(sub)
    from medvision.pipelines.bundle import add_models_parser

    add_models_parser(sub)

    from medvision.auth import add_users_parser

    add_users_parser(sub)

    from medvision.training import add_training_parsers

    add_training_parsers(sub)
    _audit.add_parser(sub)
    return parser


__all__ = ["main"]
