"""Every route but the public ones refuses strangers (401) and role-less users (403).

Table-driven over ``app.routes``, so a route added without a guard fails here: no list
of guarded routes to keep up to date, only the short list of public ones.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import APIRoute

from medvision.server import PUBLIC_PATHS
from tests.api.conftest import Client, Server, ServerFactory

#: Static assets of the web pages may be public too (no patient data in them).
PUBLIC_PREFIXES = ("/static/", "/assets/")
#: Where a web page may send a browser that has no session.
LOGIN_PAGES = ("/login", "/signin")
#: A value for each path parameter, so the guard, not the router, answers.
SAMPLE = {"study_uid": "1.2.3", "job_id": "1", "finding_number": "1", "name": "rad"}


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLE.get(m.group(1), "x"), template)


def all_routes(app: FastAPI) -> list[tuple[str, set[str], object]]:
    """(path, methods, route) of every route, included routers flattened.

    FastAPI >= 0.12x keeps an included router as one lazy ``_IncludedRouter`` entry in
    ``app.routes``; its ``effective_route_contexts()`` gives the routes with full paths.
    """
    out: list[tuple[str, set[str], object]] = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            out.append(
                (getattr(route, "path", ""), getattr(route, "methods", None) or {"GET"}, route)
            )
            continue
        for ctx in contexts():
            original = ctx.original_route
            out.append((ctx.path, getattr(original, "methods", None) or {"GET"}, original))
    return out


def guarded_endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route that must ask for credentials."""
    out = []
    for path, methods, _route in all_routes(app):
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            continue
        out.extend((method, path) for method in sorted(methods - {"HEAD", "OPTIONS"}))
    return out


def _refused_anonymous(client: Client, method: str, path: str) -> str | None:
    answer = client.call(method, _path(path), json_body={} if method != "GET" else None)
    if answer.status == 401 and "www-authenticate" in answer.headers:
        return None
    # A web page may instead send a browser to the login page.
    location = answer.headers.get("location", "")
    if answer.status in (302, 303, 307) and location.startswith(LOGIN_PAGES):
        return None
    return f"{method} {path}: anonymous got {answer.status}, expected 401 with WWW-Authenticate"


def _refused_roleless(client: Client, method: str, path: str) -> str | None:
    answer = client.call(method, _path(path), json_body={} if method != "GET" else None)
    if answer.status == 403:
        return None
    return f"{method} {path}: a user without roles got {answer.status}, expected 403"


def failures(server: Server) -> list[str]:
    anonymous, roleless = server.client(), server.client("nobody")
    found = []
    for method, path in guarded_endpoints(server.app):
        found.append(_refused_anonymous(anonymous, method, path))
        found.append(_refused_roleless(roleless, method, path))
    return [f for f in found if f]


def test_every_route_is_guarded(api: Server) -> None:
    endpoints = guarded_endpoints(api.app)
    # The table is the app's own: make sure it is the full API, not an empty list.
    paths = {p for _, p in endpoints}
    for expected in (
        "/studies",
        "/studies/{study_uid}",
        "/jobs",
        "/findings/{job_id}",
        "/studies/{study_uid}/results/{job_id}/seg",
        "/studies/{study_uid}/results/{job_id}/sr",
        "/findings/{job_id}/{finding_number}/feedback",
        "/studies/{study_uid}/missed-lesions",
        "/audit/events",
        "/audit/verify",
        "/metrics",
        "/admin/config",
        "/admin/users",
    ):
        assert expected in paths
    assert failures(api) == []


def test_an_unguarded_route_is_caught(server_factory: ServerFactory) -> None:
    def add_oops(app: FastAPI) -> None:
        @app.get("/oops")
        def oops() -> dict[str, str]:
            return {"patient": "exposed"}

    server = server_factory(prepare=add_oops)
    found = failures(server)
    assert len(found) == 2 and all(f.startswith("GET /oops") for f in found)


def test_public_paths_answer_without_credentials(api: Server) -> None:
    anyone = api.client()
    assert anyone.get("/health").status == 200
    assert anyone.get("/openapi.json").status == 200
    assert anyone.get("/docs").status == 200


#: (user, path, status): the roles table of docs/api.md, spot-checked.
ROLES_TABLE = [
    ("rad", "/studies", 200),
    ("qa", "/studies", 200),
    ("admin", "/studies", 200),
    ("admin", "/findings/1", 403),
    ("rad", "/audit/events", 403),
    ("qa", "/audit/events", 200),
    ("rad", "/metrics", 403),
    ("qa", "/metrics", 200),
    ("admin", "/metrics", 200),
    ("qa", "/admin/config", 403),
    ("admin", "/admin/config", 200),
    ("rad", "/feedback", 403),
    ("qa", "/feedback", 200),
]


def test_roles_table(api: Server) -> None:
    got = [(user, path, api.client(user).get(path).status) for user, path, _ in ROLES_TABLE]
    assert got == ROLES_TABLE


def test_routes_are_api_routes(api: Server) -> None:
    """Anything that is not an APIRoute (a mount, a websocket) needs a look of its own."""
    others = [
        path
        for path, _methods, route in all_routes(api.app)
        if not isinstance(route, APIRoute) and path not in PUBLIC_PATHS
    ]
    assert all(p.startswith(PUBLIC_PREFIXES) for p in others), others
