"""Admin creation through each front end of the real server (REST API, ``offhook fleet``, web
UI): one use case (provisioning.services.admin_users), so one audit row shape."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.fixtures.provisioning_server import ProvisioningServer, sqlite_provisioning_server

__all__ = ["sqlite_provisioning_server"]

PASSWORD = "new-admin-password-1"


def _audit_row(server: ProvisioningServer, username: str) -> dict[str, Any]:
    reply = server.admin.get("/audit", params={"action": "admin_user.create"})
    reply.raise_for_status()
    rows = [r for r in reply.json() if (r["after"] or {}).get("username") == username]
    assert len(rows) == 1, reply.json()
    return rows[0]


def _user_id(server: ProvisioningServer, username: str) -> int:
    from offhook.provisioning.db import Database
    from offhook.provisioning.models import AdminUser

    database = Database(server.db_url)
    try:
        with database.session() as db:
            user = db.query(AdminUser).filter_by(username=username).one()
            return user.id
    finally:
        database.dispose()


def _check_row(server: ProvisioningServer, username: str, role: str, actor: str, ip: str) -> None:
    row = _audit_row(server, username)
    assert row["actor"] == actor
    assert row["target_type"] == "admin_user"
    assert row["target_id"] == str(_user_id(server, username))
    assert row["before"] is None
    assert row["after"] == {"username": username, "role": role, "disabled": False}
    assert row["ip"] == ip


def test_rest_api_creates_an_admin_with_the_shared_audit_entry(
    sqlite_provisioning_server: ProvisioningServer,
) -> None:
    server = sqlite_provisioning_server
    body = {"username": "rest-op", "password": PASSWORD, "role": "operator"}
    reply = server.admin.post("/users", json=body)
    assert reply.status_code == 201, reply.text
    _check_row(server, "rest-op", "operator", f"admin:{server.admin_user}", "127.0.0.1")


def test_cli_creates_an_admin_with_the_shared_audit_entry(
    sqlite_provisioning_server: ProvisioningServer,
) -> None:
    server = sqlite_provisioning_server
    proc = server.fleet(
        "create-admin",
        "cli-op",
        "--role",
        "operator",
        "--password-env",
        "NEW_PASSWORD",
        env={"NEW_PASSWORD": PASSWORD, "SUDO_USER": "fleet-owner"},
    )
    assert proc.returncode == 0, proc.stderr
    _check_row(server, "cli-op", "operator", "cli:fleet-owner", "")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def test_web_ui_creates_an_admin_with_the_shared_audit_entry(
    sqlite_provisioning_server: ProvisioningServer,
) -> None:
    server = sqlite_provisioning_server
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        login = {
            "username": server.admin_user,
            "password": server.admin_password,
            "csrf_token": _csrf(client.get("/login").text),
        }
        assert client.post("/login", data=login, follow_redirects=False).status_code == 303
        form = {
            "username": "web-op",
            "password": PASSWORD,
            "role": "operator",
            "csrf_token": _csrf(client.get("/admins").text),
        }
        reply = client.post("/admins", data=form, follow_redirects=False)
        assert reply.status_code == 303, reply.text
    _check_row(server, "web-op", "operator", f"admin:{server.admin_user}", "127.0.0.1")
