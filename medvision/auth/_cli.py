"""``medvision users``: add, list, disable users and issue API tokens from the shell.

The first admin has to come from somewhere that needs no login: this command, run by
whoever can read the node's configuration and database. Changes are audited with the
operating-system user as the actor (``user.added``, ``user.disabled``,
``user.token_issued``). Passwords are read from standard input only (never from
the command line, where ``ps`` and shell history would keep them).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from medvision.auth._roles import Role, UserError

# The commands import the database side (SQLAlchemy, argon2) when they run: building the
# `medvision` parser must stay light for the offline `run`.


def add_users_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    users = sub.add_parser("users", help="API/web users: add, list, token, disable")
    users.add_argument("--config", type=Path, help="medvision.toml (optional)")
    # Also after the action (`users add NAME --config FILE`), like every other command; the
    # default is left unset there so that `users --config FILE add NAME` keeps its value.
    config = {"type": Path, "default": argparse.SUPPRESS, "help": "medvision.toml (optional)"}
    actions = users.add_subparsers(metavar="ACTION")
    roles = ", ".join(r.value for r in Role)

    add = actions.add_parser("add", help="create a user", description=f"Roles: {roles}.")
    add.add_argument("name")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="a role (repeatable)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.add_argument("--token", action="store_true", help="also issue an API token, shown once")
    add.add_argument("--config", **config)
    add.set_defaults(func=_add)

    ls = actions.add_parser("list", help="list users, roles and whether they are disabled")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--config", **config)
    ls.set_defaults(func=_list)

    token = actions.add_parser("token", help="issue a new API token (shown once)")
    token.add_argument("name")
    token.add_argument("--config", **config)
    token.set_defaults(func=_token)

    disable = actions.add_parser("disable", help="refuse every credential of a user")
    disable.add_argument("name")
    disable.add_argument("--config", **config)
    disable.set_defaults(func=_disable)
    users.set_defaults(func=lambda _args: (users.print_help(), 2)[1])


def _open(args: argparse.Namespace):  # noqa: ANN202 - (Database, DbAuditLog)
    from medvision.audit import DbAuditLog
    from medvision.config import load_settings
    from medvision.db import Database

    settings = load_settings(args.config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.create_schema()  # adds the users tables to a database made by an older version
    return db, DbAuditLog(db)


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 1


def _add(args: argparse.Namespace) -> int:
    from medvision.auth._tokens import new_token
    from medvision.auth._users import add_user

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            return _fail(UserError("an empty password was read from standard input"))
    db, audit = _open(args)
    try:
        add_user(db, args.name, args.role, password)
        token = new_token(db, args.name) if args.token else None
    except (UserError, ValueError) as err:
        return _fail(err)
    actor = getpass.getuser()
    audit.record("user.added", user=actor, via="cli", subject_user=args.name, roles=args.role)
    print(f"user {args.name} added with roles {', '.join(sorted(set(args.role)))}")
    if token:
        audit.record("user.token_issued", user=actor, via="cli", subject_user=args.name)
        print(f"API token (shown once, keep it secret): {token}")
    if password is None and token is None:
        print("note: no password and no token yet; see 'medvision users token NAME'")
    return 0


def _list(args: argparse.Namespace) -> int:
    from medvision.auth._users import list_users

    db, _ = _open(args)
    rows = list_users(db)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = "disabled" if row["disabled"] else "active"
        print(f"{row['name']:<24} {','.join(row['roles']):<28} {state:<9} tokens={row['tokens']}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from medvision.auth._tokens import new_token

    db, audit = _open(args)
    try:
        token = new_token(db, args.name)
    except UserError as err:
        return _fail(err)
    audit.record("user.token_issued", user=getpass.getuser(), via="cli", subject_user=args.name)
    print(token)
    return 0


def _disable(args: argparse.Namespace) -> int:
    from medvision.auth._users import disable_user

    db, audit = _open(args)
    try:
        disable_user(db, args.name)
    except UserError as err:
        return _fail(err)
    audit.record("user.disabled", user=getpass.getuser(), via="cli", subject_user=args.name)
    print(f"user {args.name} disabled; its tokens and sessions are revoked")
    return 0


__all__ = ["add_users_parser"]
