"""Admin sign-in security through the REST API and ``offhook fleet`` against the real server
(``offhook server``): the same service functions the web UI uses (second factor, sessions,
password history), each change audited with its actor."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration

PASSWORD = "rest-security-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("rest-security"))
    running.port = 18840
    with running:
        yield running


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:300]
    return match.group(1)


def web_sign_in(
    server: ProvisioningServer, username: str, password: str = PASSWORD
) -> httpx.Client:
    client = httpx.Client(base_url=server.base_url, timeout=30)
    form = client.get("/login")
    reply = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": _csrf(form.text)}
    )
    assert reply.status_code == 303, reply.text
    return client


def user_client(server: ProvisioningServer, username: str, role: str) -> httpx.Client:
    """A new admin user and a REST client with a bearer token of theirs."""
    server.admin.post(
        "/users", json={"username": username, "password": PASSWORD, "role": role}
    ).raise_for_status()
    web = web_sign_in(server, username)
    csrf = _csrf(web.get("/api-tokens").text)
    token = web.post("/api/v1/admin/api-tokens", json={"name": "t"}, headers={"x-csrf-token": csrf})
    token.raise_for_status()
    web.close()
    return httpx.Client(
        base_url=server.base_url + "/api/v1/admin",
        headers={"authorization": "Bearer " + token.json()["token"]},
        timeout=30,
    )


def audit(server: ProvisioningServer, action: str) -> list[dict[str, object]]:
    reply = server.admin.get("/audit", params={"action": action})
    reply.raise_for_status()
    return reply.json()


def test_second_factor_over_rest_and_reset_from_the_cli(server: ProvisioningServer) -> None:
    api = user_client(server, "rene", "operator")
    assert api.get("/me/mfa").json()["enabled"] is False
    enrol = api.post("/me/mfa/enrol")
    assert enrol.status_code == 200 and enrol.headers["cache-control"] == "no-store"
    secret = enrol.json()["secret"]
    assert enrol.json()["uri"].startswith("otpauth://totp/offhook:rene?secret=" + secret)
    wrong = api.post("/me/mfa/confirm", json={"code": "12345"})
    assert wrong.status_code == 422 and "does not match" in wrong.json()["detail"]
    confirmed = api.post("/me/mfa/confirm", json={"code": pyotp.TOTP(secret).now()})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10
    status = api.get("/me/mfa").json()
    assert status["enabled"] is True and status["recovery_codes_left"] == 10
    again = api.post("/me/mfa/enrol")
    assert again.status_code == 409

    # The server's owner removes it (a lost phone), audited as the CLI's user.
    shown = server.fleet("mfa", "status", "rene")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["enabled"] is True
    reset = server.fleet("mfa", "reset", "rene")
    assert reset.returncode == 0 and "removed" in reset.stdout, reset.stderr
    assert api.get("/me/mfa").json()["enabled"] is False
    entries = audit(server, "admin_user.mfa_reset")
    assert entries and str(entries[0]["actor"]).startswith("cli:")
    assert audit(server, "admin_user.mfa_enable")

    # An operator may not reset someone else's (admin_user.manage): 403; an admin may.
    assert api.delete("/users/fixture-admin/mfa").status_code == 403


def test_sessions_over_rest_and_cli(server: ProvisioningServer) -> None:
    server.admin.post(
        "/users", json={"username": "sara", "password": PASSWORD, "role": "read-only"}
    ).raise_for_status()
    browser = web_sign_in(server, "sara")
    assert browser.get("/devices").status_code == 200
    everyone = server.admin.get("/me/sessions", params={"all": "true"})
    assert everyone.status_code == 200
    listed = server.fleet("sessions", "list", "--user", "sara", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["user"] == "sara"
    assert rows[0]["id"] in {s["id"] for s in everyone.json()}

    ended = server.fleet("sessions", "revoke", str(rows[0]["id"]))
    assert ended.returncode == 0, ended.stderr
    assert browser.get("/devices").status_code == 303  # to the sign-in page
    twice = server.fleet("sessions", "revoke", str(rows[0]["id"]))
    assert twice.returncode != 0 and "ended already" in twice.stderr
    assert audit(server, "admin_session.revoke")
    browser.close()


def test_password_history_over_rest(server: ProvisioningServer, tmp_path: Path) -> None:
    api = user_client(server, "pia", "read-only")
    same = api.post("/me/password", json={"current": PASSWORD, "password": PASSWORD})
    assert same.status_code == 422 and "used recently" in same.json()["detail"]
    bad = api.post("/me/password", json={"current": "nope", "password": "a-new-password-1"})
    assert bad.status_code == 422 and "current password is wrong" in bad.json()["detail"]
    ok = api.post("/me/password", json={"current": PASSWORD, "password": "a-new-password-1"})
    assert ok.status_code == 204
    # A new password ends the user's API tokens too, this one included.
    assert api.get("/me/mfa").status_code == 401


def test_privacy_classes_archive_and_cdr_reads_over_rest_and_cli(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = "b8:27:eb:10:20:30"
    cred = server.enroll(mac, name="Archive me")
    with cred.client() as phone:
        call = {
            "id": "cdr-archive-1",
            "direction": "outgoing",
            "account": 0,
            "local_uri": "sip:301@pbx.example",
            "remote_uri": "sip:302@pbx.example",
            "remote_name": "",
            "start": time.time() - 600,
            "answer": time.time() - 595,
            "end": time.time() - 565,
            "disposition": "answered",
            "status_code": 200,
        }
        phone.post("/api/v1/device/cdrs", json={"records": [call]}).raise_for_status()

    classes = server.admin.get("/privacy/classes").json()
    by_key = {c["key"]: c for c in classes}
    assert set(by_key) == {"identity", "network", "cdr", "quality", "preferences", "security"}
    assert by_key["cdr"]["retention_days"] == 180 and by_key["cdr"]["tables"] == ["call_records"]
    assert by_key["security"]["readers"] == ["read-only", "operator", "admin"]

    reply = server.admin.post("/privacy/export.zip", json={"device": mac})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        assert json.loads(archive.read("manifest.json"))["tables"]["call_records"] == 1
        assert "sip:302@pbx.example" in archive.read("call_records.csv").decode()

    out = tmp_path / "subject.zip"
    made = server.fleet("privacy", "archive", "--device", mac, "--out", str(out))
    assert made.returncode == 0, made.stderr
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("device.json"))[0]["mac"] == mac
    shown = server.fleet("privacy", "classes")
    assert json.loads(shown.stdout)[2]["key"] == "cdr"

    exports = audit(server, "privacy.export")
    assert {str(e["actor"]).split(":")[0] for e in exports} >= {"admin", "cli"}
    assert server.admin.get("/cdrs", params={"device": mac}).status_code == 200
    reads = audit(server, "cdr.read")
    assert reads[0]["target_id"] == "rest" and reads[0]["after"]["rows"] == 1


def test_wrong_codes_lock_the_second_step(server: ProvisioningServer) -> None:
    """Wrong codes count like wrong passwords: after the lockout threshold (5) even the right
    code is refused and the sign-in starts again later."""
    api = user_client(server, "lou", "operator")
    secret = api.post("/me/mfa/enrol").json()["secret"]
    api.post("/me/mfa/confirm", json={"code": pyotp.TOTP(secret).now()}).raise_for_status()
    web = httpx.Client(base_url=server.base_url, timeout=30)
    form = web.get("/login")
    body = {"username": "lou", "password": PASSWORD, "csrf_token": _csrf(form.text)}
    step = web.post("/login", data=body)
    assert step.status_code == 303 and step.headers["location"] == "/login/code"
    page = web.get("/login/code")
    assert "Second factor" in page.text
    for _ in range(5):
        wrong = web.post("/login/code", data={"code": "000000", "csrf_token": _csrf(page.text)})
        assert wrong.headers["location"] == "/login/code"
        page = web.get("/login/code")
        assert "not right" in page.text
    right = pyotp.TOTP(secret).at(time.time() + 30)
    refused = web.post("/login/code", data={"code": right, "csrf_token": _csrf(page.text)})
    assert refused.headers["location"] == "/login"
    assert "Too many wrong codes" in web.get("/login").text
    assert web.get("/devices").status_code == 303  # not signed in
    web.close()
