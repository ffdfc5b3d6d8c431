"""Administration over HTTP (role ``admin``): the running configuration and the users.

The configuration view hides secrets: passwords inside the database and STOW URLs are
masked, and only the paths of TLS files are shown. User changes are audited
(``user.added``, ``user.disabled``, ``user.token_issued``) with the acting admin's name.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from typing import Any

from fastapi import APIRouter, HTTPException

from medvision.api._schemas import UserIn
from medvision.audit import safe_url
from medvision.auth import Role, UserError, add_user, disable_user, list_users, new_token
from medvision.config import Settings
from medvision.http_deps import AuditDep, CurrentUserDep, DbDep, SettingsDep, require_roles

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[require_roles(Role.ADMIN)])


def public_config(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, with every credential masked."""
    config = settings.model_dump(mode="json")
    config["database_url"] = safe_url(settings.db_url)
    if settings.stow_url:
        config["stow_url"] = safe_url(settings.stow_url)
    return config


@router.get("/config")
def read_config(settings: SettingsDep) -> dict[str, Any]:
    return public_config(settings)


@router.get("/users")
def users(db: DbDep) -> list[dict[str, Any]]:
    return list_users(db)


@router.post("/users", status_code=201)
def create_user(body: UserIn, admin: CurrentUserDep, db: DbDep, audit: AuditDep) -> dict[str, Any]:
    try:
        add_user(db, body.name, body.roles, body.password)
    except UserError as err:
        raise HTTPException(409 if "exists" in str(err) else 422, str(err)) from None
    audit.record("user.added", user=admin.name, subject_user=body.name, roles=sorted(body.roles))
    return {"name": body.name, "roles": sorted(body.roles)}


@router.post("/users/{name}/disable")
def disable(name: str, admin: CurrentUserDep, db: DbDep, audit: AuditDep) -> dict[str, Any]:
    try:
        disable_user(db, name)
    except UserError as err:
        raise HTTPException(404, str(err)) from None
    audit.record("user.disabled", user=admin.name, subject_user=name)
    return {"name": name, "disabled": True}


@router.post("/users/{name}/tokens", status_code=201)
def issue_token(name: str, admin: CurrentUserDep, db: DbDep, audit: AuditDep) -> dict[str, str]:
    """A new API token for ``name``, shown in this answer only."""
    try:
        token = new_token(db, name)
    except UserError as err:
        raise HTTPException(404 if "No user" in str(err) else 409, str(err)) from None
    audit.record("user.token_issued", user=admin.name, subject_user=name)
    return {"name": name, "token": token}


__all__ = ["public_config", "router"]
