"""Password guessing is locked out per account and per address; /login and /logout check
the Origin; the session cookie is Secure over HTTPS. All over real HTTP (uvicorn)."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

from tests.api.conftest import Client, Server, ServerFactory


def _login(server: Server, user: str, password: str, **headers: str):  # noqa: ANN202
    return server.client().post(
        "/login", form={"username": user, "password": password}, headers=headers or None
    )


def test_forty_wrong_passwords_lock_the_account_out(server_factory: ServerFactory) -> None:
    api = server_factory(login_max_failures_per_account=5, login_lockout_s=600.0)
    answers = [_login(api, "rad", f"guess-{n}").status for n in range(40)]
    assert answers[:5] == [401] * 5  # five wrong passwords are checked and counted...
    assert answers[5:] == [429] * 35  # ...then the account is locked: no more checks
    locked = _login(api, "rad", "rad-pw")  # the right password is refused while locked
    assert locked.status == 429 and int(locked.headers["retry-after"]) >= 1
    # HTTP Basic is the same password check, behind the same lock.
    assert api.client("rad", basic=True).get("/studies").status == 429
    # Other accounts from the same address are not locked (the address limit is 20).
    assert _login(api, "qa", "qa-pw").status == 200

    (event,) = api.events("user.locked_out")
    assert (event["outcome"], event["user"], event["locked"]) == ("failure", "rad", "account")
    assert event["client_host"] == "127.0.0.1" and event["security_alert"] is True
    assert event["lockout_s"] == 600.0 and "5 wrong passwords" in event["reason"]
    # Only checked passwords count as failed logins in the trail: 5, not 40.
    assert len([e for e in api.events("user.login_failed") if e["user"] == "rad"]) == 5


def test_the_lock_out_ends_after_the_configured_time(server_factory: ServerFactory) -> None:
    api = server_factory(login_max_failures_per_account=2, login_lockout_s=3.0)
    assert [_login(api, "qa", "wrong").status for _ in range(2)] == [401, 401]
    assert _login(api, "qa", "qa-pw").status == 429
    # Then the right password works again (polled: no timing is asserted).
    deadline = time.monotonic() + 60
    while (answer := _login(api, "qa", "qa-pw")).status == 429:
        assert time.monotonic() < deadline, "the lock-out never ended"
        time.sleep(0.25)
    assert answer.status == 200 and answer.json()["user"] == "qa"
    assert len(api.events("user.locked_out")) == 1


def test_one_address_trying_many_accounts_is_locked_out(server_factory: ServerFactory) -> None:
    api = server_factory(login_max_failures_per_host=6, login_lockout_s=60.0)
    # Unknown names count like known ones (a lock-out tells nothing about accounts).
    answers = [_login(api, f"user{n}", "x").status for n in range(6)]
    assert answers == [401] * 6
    assert _login(api, "admin", "admin-pw").status == 429
    assert api.client("admin", basic=True).get("/studies").status == 429
    # API tokens are not passwords: they keep working from a locked address.
    assert api.client("admin").get("/studies").status == 200
    (event,) = api.events("user.locked_out")
    assert (event["locked"], event["user"], event["client_host"]) == ("host", "", "127.0.0.1")


def test_login_and_logout_check_the_origin(api: Server) -> None:
    evil = {"Origin": "https://evil.example"}
    assert _login(api, "rad", "rad-pw", **evil).status == 403
    assert api.events("user.login") == []
    browser = api.client()
    same = browser.post(
        "/login", form={"username": "rad", "password": "rad-pw"}, headers={"Origin": api.url}
    )
    assert same.status == 200
    # Another site cannot log the user out either...
    assert browser.post("/logout", headers=evil).status == 403
    assert browser.get("/studies").status == 200
    # ...while the page itself (or a client that sends no Origin) can.
    assert browser.post("/logout", headers={"Origin": api.url}).status == 204
    assert browser.get("/studies").status == 401


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_the_session_cookie_is_secure_over_https(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    api = server_factory(tls_cert=cert, tls_key=key)
    assert api.url.startswith("https://")
    browser = Client(api.url, ssl_context=ssl.create_default_context(cafile=str(cert)))
    answer = browser.post("/login", form={"username": "rad", "password": "rad-pw"})
    assert answer.status == 200
    attributes = [a.strip().lower() for a in answer.headers["set-cookie"].split(";")]
    assert attributes[0].startswith("medvision_session=")
    assert {"secure", "httponly", "samesite=lax"} <= set(attributes)
    (cookie,) = list(browser.jar)
    assert cookie.secure  # the jar will only send it back over HTTPS
    assert browser.get("/studies").status == 200

    # Over plain HTTP (no certificate) the cookie cannot be Secure, or no browser would
    # send it back.
    plain = server_factory()
    answer = plain.client().post("/login", form={"username": "rad", "password": "rad-pw"})
    assert "secure" not in [a.strip().lower() for a in answer.headers["set-cookie"].split(";")]
    # Behind a TLS-terminating proxy on the same host, uvicorn trusts its
    # X-Forwarded-Proto (from 127.0.0.1 only), and the cookie is Secure again.
    proxied = plain.client().post(
        "/login",
        form={"username": "rad", "password": "rad-pw"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "secure" in [a.strip().lower() for a in proxied.headers["set-cookie"].split(";")]
