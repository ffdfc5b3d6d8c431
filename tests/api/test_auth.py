"""Token, Basic and cookie authentication; refusals; login events; the users CLI."""

from __future__ import annotations

import io
import sys

import pytest

from medvision.auth import UserError, add_user, check_password, disable_user
from medvision.cli import main
from medvision.db import ApiToken
from tests.api.conftest import Client, Server


def test_token_basic_and_cookie(api: Server) -> None:
    assert api.client("qa").get("/audit/verify").json()["ok"] is True
    assert api.client("qa", basic=True).get("/audit/verify").status == 200
    browser = api.client()
    assert browser.post("/login", form={"username": "qa", "password": "qa-pw"}).json() == {
        "user": "qa",
        "roles": ["qa"],
    }
    (cookie,) = list(browser.jar)
    assert cookie.name == "medvision_session" and cookie.has_nonstandard_attr("HttpOnly")
    assert browser.get("/audit/verify").status == 200
    # The session id is stored hashed only.
    with api.db.session() as session:
        stored = {t.token_hash for t in session.query(ApiToken)}
    assert cookie.value not in stored
    assert browser.post("/logout").status == 204
    assert browser.get("/audit/verify").status == 401
    assert [e["user"] for e in api.events("user.login")] == ["qa"]
    assert [e["user"] for e in api.events("user.logout")] == ["qa"]


def test_login_redirects_only_within_the_site(api: Server) -> None:
    browser = api.client()
    form = {"username": "rad", "password": "rad-pw", "next": "/viewer/1.2.3"}
    answer = browser.post("/login", form=form)
    assert answer.status == 303 and answer.headers["location"] == "/viewer/1.2.3"
    other = api.client().post("/login", form={**form, "next": "//evil.example/"})
    assert other.status == 200  # an outside target is ignored: JSON answer, no redirect


def test_every_credential_failure_looks_the_same(api: Server) -> None:
    answers = [
        Client(api.url).get("/studies"),
        Client(api.url, token="mvt_not-a-token").get("/studies"),
        Client(api.url, basic=("rad", "wrong")).get("/studies"),
        Client(api.url, basic=("no-such-user", "x")).get("/studies"),
        Client(api.url).get("/studies", headers={"Authorization": "Basic !!"}),
    ]
    assert {a.status for a in answers} == {401}
    assert len({a.body for a in answers}) == 1
    assert all(a.headers["www-authenticate"].startswith("Basic") for a in answers)
    failed = api.events("user.login_failed")
    assert [(e["user"], e["method"]) for e in failed] == [
        ("unknown", "bearer"),
        ("rad", "basic"),
        ("no-such-user", "basic"),
        ("unknown", "basic"),
    ]
    bad_form = api.client().post("/login", form={"username": "rad", "password": "nope"})
    assert bad_form.status == 401 and "Basic" not in bad_form.headers["www-authenticate"]
    assert api.events("user.login_failed")[-1]["method"] == "form"


def test_disabled_user_is_refused_everywhere(api: Server) -> None:
    browser = api.client()
    browser.post("/login", form={"username": "rad", "password": "rad-pw"})
    assert browser.get("/studies").status == 200
    disable_user(api.db, "rad")
    assert api.client("rad").get("/studies").status == 401
    assert api.client("rad", basic=True).get("/studies").status == 401
    assert browser.get("/studies").status == 401
    assert api.client().post("/login", form={"username": "rad", "password": "rad-pw"}).status == 401


def test_cookie_posts_from_another_origin_are_refused(api: Server) -> None:
    browser = api.client()
    browser.post("/login", form={"username": "rad", "password": "rad-pw"})
    body = {"slice_index": 1, "x": 2, "y": 3}
    evil = browser.post(
        "/studies/1.2.3/missed-lesions", json_body=body, headers={"Origin": "https://evil.example"}
    )
    assert evil.status == 403
    same = browser.post(
        "/studies/1.2.3/missed-lesions", json_body=body, headers={"Origin": api.url}
    )
    assert same.status == 404  # past the guard: the study does not exist


def test_unknown_user_costs_a_hash_check(api: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from medvision.auth import _passwords

    calls: list[str] = []
    real = _passwords._verify
    monkeypatch.setattr(_passwords, "_verify", lambda h, p: calls.append(h) or real(h, p))
    assert check_password(api.db, "no-such-user", "x") is None
    assert check_password(api.db, "rad", "wrong") is None
    dummy = _passwords._dummy_hash()
    assert calls[0] == dummy and calls[1] != dummy


def test_add_user_checks_its_input(api: Server) -> None:
    with pytest.raises(UserError, match="Unknown role 'doctor'"):
        add_user(api.db, "x", ["doctor"])
    with pytest.raises(UserError, match="already exists"):
        add_user(api.db, "rad", ["qa"])
    with pytest.raises(UserError, match="at least one role"):
        add_user(api.db, "y", [])


def test_users_cli(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MEDVISION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert main(["users", "add", "ann", "--role", "qa", "--password-stdin", "--token"]) == 0
    out = capsys.readouterr().out
    token = out.split("keep it secret): ")[1].strip()
    assert token.startswith("mvt_")
    assert main(["users", "token", "ann"]) == 0
    second = capsys.readouterr().out.strip()
    assert second.startswith("mvt_") and second != token
    assert main(["users", "list", "--json"]) == 0
    assert '"tokens": 2' in capsys.readouterr().out
    assert main(["users", "disable", "ann"]) == 0
    assert main(["users", "token", "nobody-here"]) == 1
    assert "No user named" in capsys.readouterr().err


def test_tls_settings_come_in_pairs(tmp_path) -> None:
    from pydantic import ValidationError

    from medvision.config import Settings

    with pytest.raises(ValidationError, match="tls_cert and tls_key must be given together"):
        Settings(data_dir=tmp_path, tls_cert=tmp_path / "node.crt")
    both = Settings(data_dir=tmp_path, tls_cert=tmp_path / "a.crt", tls_key=tmp_path / "a.key")
    assert both.tls_key == tmp_path / "a.key"
