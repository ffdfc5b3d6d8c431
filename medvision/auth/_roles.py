"""Who a user is and what they may do: roles, the caller of one request, the user lookup.

The bottom of ``medvision.auth``: plain values and one query, imported by the password,
token and user-management modules beside it (and by the HTTP layer through the package).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the roles themselves are plain names: the CLI's parser lists them
    from sqlalchemy.orm import Session

    from medvision.db import User


class Role(StrEnum):
    """What a user may do; a route names the roles that may call it."""

    RADIOLOGIST = "radiologist"
    QA = "qa"
    ADMIN = "admin"


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


def caller(user: User, method: str) -> CurrentUser:
    """The ``CurrentUser`` for a database row that has just passed a credential check."""
    # A role removed from the code later must not lock the whole table: skip unknown names.
    roles = frozenset(Role(r) for r in user.roles if r in Role._value2member_map_)
    return CurrentUser(name=user.name, roles=roles, method=method)


def named_user(session: Session, name: str) -> User:
    """The user called ``name``, or a ``UserError`` that says how to list them."""
    from sqlalchemy import select

    from medvision.db import User

    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"No user named {name!r}; see 'medvision users list'.")
    return user


__all__ = ["CurrentUser", "Role", "UserError", "caller", "named_user", "parse_roles"]
