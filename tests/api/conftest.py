"""The API over real HTTP (uvicorn on a free port) on a real SQLite database, with users.

Users made for every test server: ``rad`` (radiologist), ``qa`` (qa), ``admin`` (admin),
each with a password ``<name>-pw`` and an API token, and ``nobody``, a user with no role
at all (written straight to the table, as ``add_user`` refuses that), whose token must
get 403 from every guarded route.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from medvision.auth import add_user, new_token
from medvision.config import Settings
from medvision.db import Database, User
from medvision.server import create_app
from tests.node.peers import free_port, wait_for

ROLE_USERS = {"rad": "radiologist", "qa": "qa", "admin": "admin"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case (HTTP names are case-insensitive)."""
    return {k.lower(): v for k, v in headers.items()}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Client:
    """One HTTP caller: its own cookie jar, optional default credentials."""

    url: str
    token: str | None = None
    basic: tuple[str, str] | None = None
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)
    #: For an HTTPS server: the context that trusts its certificate.
    ssl_context: ssl.SSLContext | None = None

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = None
        hdrs = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        elif self.basic:
            raw = base64.b64encode(":".join(self.basic).encode()).decode()
            hdrs["Authorization"] = f"Basic {raw}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=60) as resp:
                return Answer(resp.status, _lower(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Answer(err.code, _lower(err.headers), err.read())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Answer:
        return self.call("POST", path, **kw)


@dataclass
class Server:
    url: str
    db: Database
    settings: Settings
    app: FastAPI
    tokens: dict[str, str]
    ssl_context: ssl.SSLContext | None = None

    def client(self, user: str | None = None, *, basic: bool = False) -> Client:
        tls = self.ssl_context
        if user is None:
            return Client(self.url, ssl_context=tls)
        if basic:
            return Client(self.url, basic=(user, f"{user}-pw"), ssl_context=tls)
        return Client(self.url, token=self.tokens[user], ssl_context=tls)

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.app.state.audit.events() if e["type"] == event_type]


def make_users(db: Database) -> dict[str, str]:
    tokens = {}
    for name, role in ROLE_USERS.items():
        add_user(db, name, [role], f"{name}-pw")
        tokens[name] = new_token(db, name)
    with db.session() as session:
        session.add(User(name="nobody", roles=[], password_hash=""))
    tokens["nobody"] = new_token(db, "nobody")
    return tokens


ServerFactory = Callable[..., Server]


def _healthy(client: Client) -> bool:
    try:
        return client.get("/health").status == 200
    except OSError:  # not listening yet
        return False


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its production cost takes most of a second per hash on a shared CI core;
    these tests check the rules, not the cost, so they use the smallest parameters."""
    from argon2 import PasswordHasher

    from medvision.auth import _passwords

    monkeypatch.setattr(
        _passwords, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[tuple[uvicorn.Server, threading.Thread, Database]] = []

    def start(prepare: Callable[[FastAPI], None] | None = None, **settings: Any) -> Server:
        data_dir = tmp_path / f"node{len(started)}"
        data_dir.mkdir()
        config = Settings(data_dir=data_dir, **settings)
        db = Database(config.db_url)
        db.create_schema()
        tokens = make_users(db)
        app = create_app(db, config)
        if prepare is not None:
            prepare(app)
        port = free_port()
        # HTTPS as `medvision serve` does it, when a certificate is configured.
        tls = config.tls_cert is not None
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                ssl_certfile=str(config.tls_cert) if tls else None,
                ssl_keyfile=str(config.tls_key) if tls else None,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(config.tls_cert)) if tls else None
        client = Client(url, ssl_context=context)
        wait_for("the API", lambda: _healthy(client), 30)
        started.append((server, thread, db))
        return Server(url, db, config, app, tokens, context)

    yield start
    for server, thread, db in started:
        server.should_exit = True
        thread.join(10)
        db.dispose()


@pytest.fixture
def api(server_factory: ServerFactory) -> Server:
    return server_factory()
