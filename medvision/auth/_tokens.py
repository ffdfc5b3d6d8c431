"""Bearer secrets: API tokens for scripts and session ids for browsers, one table for both.

Each is a 256-bit random secret shown once; only its SHA-256 is stored (a slow hash buys
nothing for secrets that cannot be guessed). API tokens carry a prefix so that a leaked one
is recognisable in logs and secret scanners; sessions expire (``_sessions.py``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, timedelta
from enum import StrEnum

from sqlalchemy import delete, select

from medvision.auth._roles import CurrentUser, UserError, caller, named_user
from medvision.db import ApiToken, Database, User, utcnow

#: Prefix of API tokens, so a leaked one is recognisable in logs and secret scanners.
TOKEN_PREFIX = "mvt_"


class TokenKind(StrEnum):
    API = "api"
    SESSION = "session"


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    db: Database, name: str, kind: TokenKind = TokenKind.API, ttl: timedelta | None = None
) -> str:
    """A fresh secret for ``name``; the caller shows it once, it is never stored in clear."""
    secret = (TOKEN_PREFIX if kind is TokenKind.API else "") + secrets.token_urlsafe(32)
    with db.session() as session:
        user = named_user(session, name)
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
        return caller(user, method)


def drop_token(db: Database, secret: str) -> None:
    """Forget one secret (logout); unknown secrets are ignored."""
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(secret)))


__all__ = ["TOKEN_PREFIX", "TokenKind", "check_token", "drop_token", "new_token", "token_hash"]
