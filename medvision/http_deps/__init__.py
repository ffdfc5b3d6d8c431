"""What the REST API and the web pages share over HTTP: the app's database, settings and
audit log as FastAPI dependencies, request authentication (``get_current_user``,
``require_roles``, the session cookie, the throttled password check) and the audited read
(``ReaderDep``).

It sits between ``medvision.auth`` (the rules, no web framework) and the two routers that
``medvision.server`` mounts, so ``medvision.api`` and ``medvision.web`` both import it and
neither imports the other.
"""

from medvision.http_deps._credentials import (
    SESSION_COOKIE,
    CurrentUserDep,
    check_password_throttled,
    cross_site,
    get_current_user,
    require_roles,
    same_origin,
    unauthorized,
)
from medvision.http_deps._reads import Reader, ReaderDep, get_reader
from medvision.http_deps._state import (
    AuditDep,
    DbDep,
    SessionDep,
    SettingsDep,
    ThrottleDep,
    client_host,
    get_audit,
    get_db,
    get_session,
    get_settings,
    get_throttle,
)

__all__ = [
    "SESSION_COOKIE",
    "AuditDep",
    "CurrentUserDep",
    "DbDep",
    "Reader",
    "ReaderDep",
    "SessionDep",
    "SettingsDep",
    "ThrottleDep",
    "check_password_throttled",
    "client_host",
    "cross_site",
    "get_audit",
    "get_current_user",
    "get_db",
    "get_reader",
    "get_session",
    "get_settings",
    "get_throttle",
    "require_roles",
    "same_origin",
    "unauthorized",
]
