"""A token's or session's last use is recorded, but never in the way of a read."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from sqlalchemy import select

from medvision.auth import session_user, start_session, token_hash, touch_token
from medvision.db import ApiToken
from medvision.http_deps import SESSION_COOKIE
from tests.api.conftest import Client, Server
from tests.node.peers import wait_for


def _last_used(api: Server, secret: str):  # noqa: ANN202 - datetime | None
    with api.db.session() as session:
        return session.scalar(
            select(ApiToken.last_used_at).where(ApiToken.token_hash == token_hash(secret))
        )


def test_reads_are_answered_while_a_writer_holds_the_database(api: Server) -> None:
    """While another writer (the node's indexers, on SQLite) holds the write lock, bearer and
    cookie reads still answer: the last use is written after the response, once the lock is
    free. Before, every authenticated read wrote ``last_used_at`` first and waited."""
    browser = api.client()
    assert browser.post("/login", form={"username": "qa", "password": "qa-pw"}).status == 200
    session_id = next(c.value for c in browser.jar if c.name == SESSION_COOKIE)
    rad = api.tokens["rad"]
    assert _last_used(api, rad) is None

    lock = sqlite3.connect(str(api.settings.data_dir / "medvision.db"), timeout=1)
    lock.execute("BEGIN IMMEDIATE")  # the write lock, as an indexer's transaction holds it
    try:
        answers = [Client(api.url, token=rad).get("/studies"), browser.get("/jobs")]
        assert [a.status for a in answers] == [200, 200]
    finally:
        lock.rollback()
        lock.close()
    wait_for("the token's last use", lambda: _last_used(api, rad), timeout=60)
    wait_for("the session's last use", lambda: _last_used(api, session_id), timeout=60)


def test_last_use_is_written_once_a_minute(api: Server) -> None:
    rad = api.tokens["rad"]
    assert touch_token(api.db, rad) is True
    first = _last_used(api, rad)
    assert touch_token(api.db, rad) is False and _last_used(api, rad) == first
    assert touch_token(api.db, rad, every_s=0) is True and _last_used(api, rad) > first
    assert touch_token(api.db, "mvt_unknown") is False


def test_an_expired_session_is_refused_and_forgotten(api: Server) -> None:
    """Checking a session is a read; an expired one is refused and its row deleted, in a
    transaction of its own."""
    expired = start_session(api.db, "rad", timedelta(seconds=-1))
    live = start_session(api.db, "rad", timedelta(hours=1))
    assert session_user(api.db, expired) is None
    with api.db.session() as session:
        hashes = set(session.scalars(select(ApiToken.token_hash)))
    assert token_hash(expired) not in hashes and token_hash(live) in hashes
    user = session_user(api.db, live)
    assert user is not None and user.name == "rad"
