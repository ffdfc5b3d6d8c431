"""``medvision db``: the node database's schema (Alembic migrations)."""

from __future__ import annotations

import argparse

from medvision.cli._common import db_source_args, open_db


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``db upgrade`` and ``db current``."""
    db = sub.add_parser("db", help="database schema: upgrade, current revision")
    db_sub = db.add_subparsers(metavar="ACTION")
    upgrade = db_sub.add_parser(
        "upgrade",
        help="migrate the node's database to the current schema (SQLite or PostgreSQL)",
        description="Runs the Alembic migrations shipped with medvision. A new database is "
        "created at the current revision; one made before migrations existed is recognised "
        "and stamped first. Safe to run again: an up-to-date database is left alone.",
    )
    db_source_args(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(func=_cmd_db_upgrade)
    current = db_sub.add_parser("current", help="print the database's schema revision")
    db_source_args(current)
    current.set_defaults(func=_cmd_db_current)
    db.set_defaults(func=lambda _args: (db.print_help(), 2)[1])


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from medvision.db import upgrade_schema

    db = open_db(args)
    if db is None:
        return 2
    try:
        print(upgrade_schema(db, args.revision))
    finally:
        db.dispose()
    return 0


def _cmd_db_current(args: argparse.Namespace) -> int:
    from medvision.db import schema_revisions

    db = open_db(args)
    if db is None:
        return 2
    try:
        rev, head = schema_revisions(db)
    finally:
        db.dispose()
    print(f"{rev or 'none'} (head: {head})")
    return 0 if rev == head else 1
