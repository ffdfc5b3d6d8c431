"""User management: add, list and disable users (the CLI's ``medvision users`` and the
API's ``/admin/users`` both call these)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from medvision.auth._passwords import hash_password
from medvision.auth._roles import UserError, named_user, parse_roles
from medvision.auth._tokens import TokenKind
from medvision.db import ApiToken, Database, User


def add_user(db: Database, name: str, roles: Iterable[str], password: str | None = None) -> None:
    """Create a user; ``password`` None means tokens only."""
    parsed = parse_roles(roles)
    if not name or len(name) > 64 or ":" in name or name != name.strip():
        raise UserError(f"User name must be 1-64 characters without ':' or edge spaces: {name!r}.")
    if not parsed:
        raise UserError("A user needs at least one role.")
    with db.session() as session:
        if session.scalar(select(User).where(User.name == name)) is not None:
            raise UserError(f"User {name!r} already exists.")
        session.add(
            User(
                name=name,
                roles=sorted(r.value for r in parsed),
                password_hash=hash_password(password) if password is not None else "",
            )
        )


def list_users(db: Database) -> list[dict[str, object]]:
    """Every user with roles, state and token count (no hashes)."""
    with db.session() as session:
        users = list(session.scalars(select(User).order_by(User.name)))
        tokens = list(session.scalars(select(ApiToken).where(ApiToken.kind == TokenKind.API)))
        return [
            {
                "name": u.name,
                "roles": list(u.roles),
                "disabled": u.disabled,
                "has_password": bool(u.password_hash),
                "tokens": sum(1 for t in tokens if t.user_id == u.id),
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users
        ]


def disable_user(db: Database, name: str) -> None:
    """Refuse every credential of ``name`` from now on and drop its tokens and sessions."""
    with db.session() as session:
        user = named_user(session, name)
        user.disabled = True
        session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))


__all__ = ["add_user", "disable_user", "list_users"]
