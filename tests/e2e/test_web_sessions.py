"""Web UI session machinery: signed cookies, session invalidation, and how the REST API treats a
web session. In-process app (real SQLite, real key ring); the browser flows are in
test_web_admin.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from offhook.provisioning.admin_auth import create_admin, set_password
from offhook.provisioning.app import create_app
from offhook.provisioning.models import AdminUser
from offhook.provisioning.settings import ServerSettings
from offhook.provisioning.web.sessions import SESSION_COOKIE
from offhook.provisioning.web.signing import Signer

PASSWORD = "session-test-password"
KEY_A = b"a" * 32
KEY_B = b"b" * 32


def test_signed_value_round_trips_and_rejects_tampering() -> None:
    signer = Signer([KEY_A], "web.session")
    value = signer.dumps({"sid": "abc", "aid": 7}, now=1000)
    assert signer.loads(value, max_age_s=60, now=1010) == {"sid": "abc", "aid": 7, "iat": 1000}
    body, mac = value.split(".")
    forged_body = Signer([KEY_B], "web.session").dumps({"sid": "abc", "aid": 1}, now=1000)
    assert signer.loads(forged_body.split(".")[0] + "." + mac, 60, now=1010) is None
    assert signer.loads(body + "." + mac[:-2] + "AA", 60, now=1010) is None
    assert signer.loads(body, 60, now=1010) is None
    assert signer.loads("not-even-close", 60, now=1010) is None


def test_signed_value_expires_and_is_bound_to_its_purpose() -> None:
    signer = Signer([KEY_A], "web.session")
    value = signer.dumps({"sid": "abc"}, now=1000)
    assert signer.loads(value, max_age_s=60, now=1061) is None
    assert signer.loads(value, max_age_s=60, now=900) is None  # issued "in the future"
    assert Signer([KEY_A], "web.flash").loads(value, 60, now=1010) is None


def test_key_rotation_keeps_old_values_valid_until_the_old_key_is_dropped() -> None:
    old = Signer([KEY_A], "web.session").dumps({"sid": "abc"}, now=1000)
    assert Signer([KEY_B, KEY_A], "web.session").loads(old, 60, now=1010) is not None
    assert Signer([KEY_B], "web.session").loads(old, 60, now=1010) is None
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Signer([b"short"], "web.session")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(data_dir=tmp_path, purge_interval_s=0, notify_enabled=False)
    app = create_app(settings)
    with app.state.database.session() as db:
        create_admin(db, "alice", PASSWORD, "admin")
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def _login(client: TestClient) -> str:
    token = _token(client.get("/login").text)
    reply = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    return _token(client.get("/").text)


def test_login_rotates_the_session_id(client: TestClient) -> None:
    client.get("/login")
    anonymous = client.cookies.get(SESSION_COOKIE)
    anonymous_token = _token(client.get("/login").text)
    logged_in_token = _login(client)
    assert client.cookies.get(SESSION_COOKIE) != anonymous
    assert logged_in_token != anonymous_token


def test_password_change_or_disabling_ends_existing_sessions(client: TestClient) -> None:
    _login(client)
    assert client.get("/devices", follow_redirects=False).status_code == 200
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as db:
        user = db.query(AdminUser).filter_by(username="alice").one()
        set_password(db, user, "a-brand-new-password")
    assert client.get("/devices", follow_redirects=False).status_code == 303

    with database.session() as db:
        user = db.query(AdminUser).filter_by(username="alice").one()
        set_password(db, user, PASSWORD, history=0)  # back to the fixture's: no history check
    _login(client)
    with database.session() as db:
        db.query(AdminUser).filter_by(username="alice").one().disabled = True
    assert client.get("/devices", follow_redirects=False).status_code == 303


def test_rest_api_takes_a_web_session_only_with_its_csrf_token(client: TestClient) -> None:
    token = _login(client)
    assert client.get("/api/v1/admin/me").json()["username"] == "alice"
    body = {"name": "Berlin", "kind": "site"}
    assert client.post("/api/v1/admin/groups", json=body).status_code == 401
    wrong = client.post("/api/v1/admin/groups", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 401
    ok = client.post("/api/v1/admin/groups", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201
    audit = client.get("/api/v1/admin/audit", params={"action": "group.create"}).json()
    assert audit[0]["actor"] == "admin:alice"


def test_login_redirect_never_leaves_the_site(client: TestClient) -> None:
    token = _token(client.get("/login").text)
    reply = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/"


def test_cookies_are_secure_over_https(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, purge_interval_s=0, notify_enabled=False)
    app = create_app(settings)
    with TestClient(app, base_url="https://127.0.0.1") as https_client:
        reply = https_client.get("/login")
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict"} <= flags
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
