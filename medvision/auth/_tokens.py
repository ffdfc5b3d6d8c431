"""Bearer secrets: API tokens for scripts and session ids for browsers, one table for both.

Each is a 256-bit random secret shown once; only its SHA-256 is stored (a slow hash buys
nothing for secrets that cannot be guessed). API tokens carry a prefix so that a leaked one
is recognisable in logs and secret scanners; sessions expire (``_sessions.py``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import OperationalError

from medvision.auth._roles import CurrentUser, UserError, caller, named_user
from medvision.db import ApiToken, Database, User, as_utc, utcnow

LOG = logging.getLogger("medvision.auth")

#: ``last_used_at`` is kept to this precision. Writing it on every request made each
#: authenticated read a write transaction, which on SQLite waits for the node's indexers
#: (the soak bench's ``GET /studies`` waited up to 1.45 s while 20 associations were stored).
TOUCH_EVERY_S = 60.0

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


def check_token(
    db: Database, secret: str, kind: TokenKind, method: str, *, touch: bool = True
) -> CurrentUser | None:
    """The owner of a live token/session ``secret`` of ``kind``; None otherwise.

    A read (an expired secret is deleted, once). ``touch=False`` leaves ``last_used_at`` to
    the caller: the HTTP layer calls :func:`touch_token` after the response has gone out.
    """
    if not secret:
        return None
    digest = token_hash(secret)
    with db.read() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if row is None or row.kind != kind.value:
            return None
        expired = row.expires_at is not None and as_utc(row.expires_at) <= utcnow()
        user = None if expired else session.get(User, row.user_id)
        found = None if user is None or user.disabled else caller(user, method)
    if expired:
        with db.session() as session:
            session.execute(delete(ApiToken).where(ApiToken.token_hash == digest))
    if found is None:
        return None
    if touch:
        touch_token(db, secret)
    return found


def touch_token(db: Database, secret: str, every_s: float = TOUCH_EVERY_S) -> bool:
    """Record that ``secret`` was used, at most once every ``every_s`` (True if written).

    Best effort: ``last_used_at`` tells an admin which tokens are still in use, nothing
    depends on it, so a database that stays busy is not worth an error.
    """
    now = utcnow()
    stale = now - timedelta(seconds=every_s)
    digest = token_hash(secret)
    with db.read() as session:
        last = session.scalar(select(ApiToken.last_used_at).where(ApiToken.token_hash == digest))
    if last is not None and as_utc(last) > stale:
        return False
    try:
        with db.session() as session:
            done = session.execute(
                update(ApiToken)
                .where(
                    ApiToken.token_hash == digest,
                    or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale),
                )
                .values(last_used_at=now)
            )
            return bool(done.rowcount)
    except OperationalError as err:
        LOG.debug("last use of a token not recorded (database busy): %s", err)
        return False


def drop_token(db: Database, secret: str) -> None:
    """Forget one secret (logout); unknown secrets are ignored."""
    with db.session() as session:
        session.execute(delete(ApiToken).where(ApiToken.token_hash == token_hash(secret)))


__all__ = [
    "TOKEN_PREFIX",
    "TOUCH_EVERY_S",
    "TokenKind",
    "check_token",
    "drop_token",
    "new_token",
    "token_hash",
    "touch_token",
]
