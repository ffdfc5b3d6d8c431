"""Browser sessions: a session id is a bearer secret of kind ``session`` with an expiry.

The cookie that carries it is HTTP's business (``medvision.http_deps``); this module only
starts, resolves and ends sessions over the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete

from medvision.auth._roles import CurrentUser
from medvision.auth._tokens import TokenKind, check_token, drop_token, new_token
from medvision.db import ApiToken, Database, utcnow


def start_session(db: Database, name: str, ttl: timedelta) -> str:
    """A new session id for ``name``, valid for ``ttl`` (shown once, stored hashed)."""
    return new_token(db, name, TokenKind.SESSION, ttl)


def session_user(db: Database, secret: str, *, touch: bool = True) -> CurrentUser | None:
    """The owner of a live session ``secret``; None for none, an expired or a foreign one
    (``touch``: as :func:`~medvision.auth.check_token`)."""
    if not secret:
        return None
    return check_token(db, secret, TokenKind.SESSION, "session", touch=touch)


def end_session(db: Database, secret: str) -> CurrentUser | None:
    """Forget a live session; its owner (for the audit), or None when there was none."""
    user = session_user(db, secret)
    if user is not None:
        drop_token(db, secret)
    return user


def purge_expired(db: Database, now: datetime | None = None) -> int:
    """Delete expired sessions; returns how many."""
    with db.session() as session:
        result = session.execute(delete(ApiToken).where(ApiToken.expires_at <= (now or utcnow())))
        return int(result.rowcount or 0)


__all__ = ["end_session", "purge_expired", "session_user", "start_session"]
