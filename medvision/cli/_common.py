"""What several command groups share: settings, logging, the database a command names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def settings_from(args: argparse.Namespace):  # noqa: ANN202 - Settings, imported lazily
    from medvision.config import load_settings

    return load_settings(args.config)


def configure_logging() -> None:
    """The node's own INFO lines on stderr; Alembic only from WARNING on, so that a start
    prints one line instead of its plugin and migration-context chatter, while a failed
    migration still shows."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def open_db(args: argparse.Namespace):  # noqa: ANN202 - Database | None, imported lazily
    """The database named by --db/--config, or None after printing the usage error."""
    from medvision.db import Database

    try:
        return Database(db_url_from(args))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def db_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="medvision.toml naming the node's database")
    group.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the node's database")


def db_url_from(args: argparse.Namespace) -> str:
    return args.db or settings_from(args).db_url
