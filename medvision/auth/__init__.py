"""Local users and what they may do: roles, argon2 passwords, API tokens, browser sessions
and the login throttle, as plain functions over the database.

No web framework here: the CLI (``medvision users``), the HTTP layer
(``medvision.http_deps``, which the API and the web pages share) and the tests all use the
same rule book through this package's names.

- passwords are argon2id hashes; an unknown or disabled user is checked against a dummy
  hash, so the time a failed login takes does not tell which accounts exist (``_passwords``);
- API tokens and session ids are 256-bit random secrets shown once; only their SHA-256 is
  stored (``_tokens``, ``_sessions``);
- too many wrong passwords per account or per address lock password sign-in out for a
  while (``_throttle``).
"""

from typing import TYPE_CHECKING

from medvision._lazy import lazy_exports
from medvision.auth._cli import add_users_parser
from medvision.auth._roles import CurrentUser, Role, UserError, parse_roles

#: Names served from a module imported on first use (PEP 562): the database side, argon2
#: and the throttle are not needed to build the CLI's parser or to name a role.
_LAZY = {
    "check_password": "medvision.auth._passwords",
    "hash_password": "medvision.auth._passwords",
    "end_session": "medvision.auth._sessions",
    "purge_expired": "medvision.auth._sessions",
    "session_user": "medvision.auth._sessions",
    "start_session": "medvision.auth._sessions",
    "MAX_TRACKED": "medvision.auth._throttle",
    "Lockout": "medvision.auth._throttle",
    "LoginThrottle": "medvision.auth._throttle",
    "TOKEN_PREFIX": "medvision.auth._tokens",
    "TokenKind": "medvision.auth._tokens",
    "check_token": "medvision.auth._tokens",
    "drop_token": "medvision.auth._tokens",
    "new_token": "medvision.auth._tokens",
    "token_hash": "medvision.auth._tokens",
    "touch_token": "medvision.auth._tokens",
    "add_user": "medvision.auth._users",
    "disable_user": "medvision.auth._users",
    "list_users": "medvision.auth._users",
}

if TYPE_CHECKING:
    from medvision.auth._passwords import check_password, hash_password
    from medvision.auth._sessions import end_session, purge_expired, session_user, start_session
    from medvision.auth._throttle import MAX_TRACKED, Lockout, LoginThrottle
    from medvision.auth._tokens import (
        TOKEN_PREFIX,
        TokenKind,
        check_token,
        drop_token,
        new_token,
        token_hash,
        touch_token,
    )
    from medvision.auth._users import add_user, disable_user, list_users


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "MAX_TRACKED",
    "TOKEN_PREFIX",
    "CurrentUser",
    "Lockout",
    "LoginThrottle",
    "Role",
    "TokenKind",
    "UserError",
    "add_user",
    "add_users_parser",
    "check_password",
    "check_token",
    "disable_user",
    "drop_token",
    "end_session",
    "hash_password",
    "list_users",
    "new_token",
    "parse_roles",
    "purge_expired",
    "session_user",
    "start_session",
    "token_hash",
    "touch_token",
]
