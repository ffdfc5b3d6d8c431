"""Local users, their passwords and their bearer secrets (API tokens, browser sessions).

Plain functions over the database, with no FastAPI in them, so that the CLI
(``medvision users ...``), the API's auth dependency and the tests share one rule book:

- passwords are argon2id hashes (``argon2-cffi``'s defaults, RFC 9106's second
  recommended profile); a hash made with older parameters is re-hashed on the next login;
- an unknown or disabled user is still checked against a dummy hash, so the time a
  failed login takes does not tell which accounts exist;
- API tokens and session ids are 256-bit random secrets shown once; only their SHA-256 is
  stored (a slow hash buys nothing for secrets that cannot be guessed).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from medvision.db import ApiToken, Database, User, utcnow

_HASHER = PasswordHasher()
#: Verified against when the user is unknown, disabled or has no password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
#: Prefix of API tokens, so a leaked one is recognisable in logs and secret scanners.
TOKEN_PREFIX = "mvt_"


class Role(StrEnum):
    """What a user may do; a route names the roles that may call it."""

    RADIOLOGIST = "radiologist"
    QA = "qa"
    ADMIN = "admin"


class TokenKind(StrEnum):
    API = "api"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The authenticated caller of one request (never carries the password or token)."""

    name: str
    roles: frozenset[Role]
    #: How the request authenticated: "bearer", "basic" or "session".
    method: str = ""

    def has_any(self, roles: Iterable[Role]) -> bool:
        return not self.roles.isdisjoint(roles)


class UserError(ValueError):
    """A user-management request that cannot be done (unknown name, duplicate, bad role)."""


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Normalise role names at once, so a typo fails here and not at the first request."""
    roles: set[Role] = set()
    for name in names:
        try:
            roles.add(Role(name))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise UserError(f"Unknown role {name!r}; known roles: {known}.") from None
    return frozenset(roles)


def hash_password(password: str) -> str:
    if not password:
        raise UserError("A password must not be empty.")
    return _HASHER.hash(password)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _current(user: User, method: str) -> CurrentUser:
    # A role removed from the code later must not lock the whole table: skip unknown names.
    roles = frozenset(Role(r) for r in user.roles if r in Role._value2member_map_)
    return CurrentUser(name=user.name, roles=roles, method=method)


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


def _user(session, name: str) -> User:  # noqa: ANN001 - sqlalchemy Session
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"No user named {name!r}; see 'medvision users list'.")
    return user


def new_token(
    db: Database, name: str, kind: TokenKind = TokenKind.API, ttl: timedelta | None = None
) -> str:
    """A fresh secret for ``name``; the caller shows it once, it is never stored in clear."""
    secret = (TOKEN_PREFIX if kind is TokenKind.API else "") + secrets.token_urlsafe(32)
    with db.session() as session:
        user = _user(session, name)
        if user.disabled:
            raise UserError(f"User {name!r} is disabled.")
        session.add(
            ApiToken(
                user_id=user.id,
                kind=kind.value,
                token_hash=token_hash(secret),
                expires_at=utcnow() + ttl if ttl else None,
            )
        )
    return secret


def disable_user(db: Database, name: str) -> None:
    """Refuse every credential of ``name`` from now on and drop its tokens and sessions."""
    with db.session() as session:
        user = _user(session, name)
        user.disabled = True
        session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))


def check_password(db: Database, name: str, password: str) -> CurrentUser | None:
    """The user if ``password`` is right and the account enabled; None otherwise.

    Exactly one argon2 verification runs on every path, so failures take the same time.
    """
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == name))
        usable = user is not None and not user.disabled and bool(user.password_hash)
        stored = user.password_hash if usable else _DUMMY_HASH
        ok = _verify(stored, password) and usable
        if not ok or user is None:
            return None
        if _HASHER.check_needs_rehash(stored):
            user.password_hash = _HASHER.hash(password)
        user.last_login_at = utcnow()
        return _current(user, "basic")


def check_token(db: Database, secret: str, kind: TokenKind, method: str) -> CurrentUser | None:
    """The owner of a live token/session ``secret`` of ``kind``; None otherwise."""
    if not secret:
        return None
    with db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(secret)))
        if row is None or row.kind != kind.value:
            return None
        now = utcnow()
        expires = row.expires_at
        if expires is not None and expires.tzinfo is None:  # SQLite drops the offset
            expires = expires.replace(tzinfo=UTC)
        if expires is not None and expires <= now:
            session.delete(row)
            return None
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        row.last_used_at = now
        return _current(user, method)


def drop_token(db: Database, secret: str) -> None:
    """Forget one secret (logout); unknown secrets are ignored."""
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(secret)))


def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Delete expired sessions; returns how many."""
    with db.session() as session:
        result = session.execute(delete(ApiToken).where(ApiToken.expires_at <= (now or utcnow())))
        return int(result.rowcount or 0)


__all__ = [
    "TOKEN_PREFIX",
    "CurrentUser",
    "Role",
    "TokenKind",
    "UserError",
    "add_user",
    "check_password",
    "check_token",
    "disable_user",
    "drop_token",
    "hash_password",
    "list_users",
    "new_token",
    "parse_roles",
    "purge_expired",
    "token_hash",
]
