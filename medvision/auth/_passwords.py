"""Passwords: argon2id hashes, and the one check every password sign-in goes through.

- hashes use ``argon2-cffi``'s defaults (RFC 9106's second recommended profile); a hash
  made with older parameters is re-hashed on the next successful login;
- an unknown or disabled user, or one without a password, is still checked against a dummy
  hash, so the time a failed login takes does not tell which accounts exist.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from medvision.auth._roles import CurrentUser, UserError, caller
from medvision.db import Database, User, utcnow

_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the user is unknown, disabled or has no password.

    Made at the first password check rather than at import (one argon2 hash costs most of
    a second on a shared core), so that commands that only import ``medvision.auth`` do
    not pay for it; every path of ``check_password`` asks for it, so even the first check
    takes the same time whoever it is for.
    """
    return _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if not password:
        raise UserError("A password must not be empty.")
    return _HASHER.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password(db: Database, name: str, password: str) -> CurrentUser | None:
    """The user if ``password`` is right and the account enabled; None otherwise.

    Exactly one argon2 verification runs on every path, so failures take the same time.
    """
    dummy = _dummy_hash()
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == name))
        usable = user is not None and not user.disabled and bool(user.password_hash)
        stored = user.password_hash if usable else dummy
        ok = _verify(stored, password) and usable
        if not ok or user is None:
            return None
        if _HASHER.check_needs_rehash(stored):
            user.password_hash = _HASHER.hash(password)
        user.last_login_at = utcnow()
        return caller(user, "basic")


__all__ = ["check_password", "hash_password"]
