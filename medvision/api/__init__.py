"""The REST API (FastAPI) and the authentication the web pages share."""

from medvision.api._app import create_app
from medvision.api._auth import (
    SESSION_COOKIE,
    CurrentUser,
    CurrentUserDep,
    Role,
    get_current_user,
    require_roles,
)

__all__ = [
    "SESSION_COOKIE",
    "CurrentUser",
    "CurrentUserDep",
    "Role",
    "create_app",
    "get_current_user",
    "require_roles",
]
