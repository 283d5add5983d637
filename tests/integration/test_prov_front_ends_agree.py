"""The same use case from the REST API, the CLI and the web UI writes the same audit row and
obeys the same permission: they all call one service function (provisioning.services,
provisioning.operations). Runs the real server (``offhook server``, SQLite), its REST API with a
bearer token, the web UI with a signed-in session (cookies + CSRF, as Chromium sends them) and
``offhook fleet`` against the same database.

For each use case three targets start in the same state; each front end acts on one; the audit
rows must then be equal in everything but who acted (``admin:<user>`` / ``cli:<login>``), when,
from where and the target's own id and name.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from offhook.provisioning.db import Database
from offhook.provisioning.models import AuditEntry
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration

PORT = 18111
PASSWORD = "front-ends-password"
WEB_ADMIN = "fe-webadmin"
OPERATOR = "fe-operator"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


@dataclass
class Web:
    client: httpx.Client
    csrf: str

    def post(self, path: str, **form: str) -> httpx.Response:
        return self.client.post(path, data={**form, "csrf_token": self.csrf})

    def flashes(self, reply: httpx.Response) -> list[tuple[str, str]]:
        assert reply.status_code == 303, (reply.status_code, reply.text[:300])
        page = self.client.get(reply.headers["location"]).text
        return re.findall(r'<p class="flash (\w+)"[^>]*>([^<]*)<', page)


def _sign_in(server: ProvisioningServer, username: str) -> Web:
    client = httpx.Client(base_url=server.base_url, timeout=30)
    form = client.get("/login")
    reply = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": _csrf(form.text)},
    )
    assert reply.status_code == 303, reply.text[:300]
    return Web(client, _csrf(client.get("/").text))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("front-ends"))
    running.port = PORT
    with running:
        for name, role in ((WEB_ADMIN, "admin"), (OPERATOR, "operator")):
            running.admin.post(
                "/users", json={"username": name, "password": PASSWORD, "role": role}
            ).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def web(server: ProvisioningServer) -> Iterator[Web]:
    session = _sign_in(server, WEB_ADMIN)
    yield session
    session.client.close()


@pytest.fixture(scope="module")
def operator_web(server: ProvisioningServer) -> Iterator[Web]:
    session = _sign_in(server, OPERATOR)
    yield session
    session.client.close()


@pytest.fixture(scope="module")
def operator_rest(server: ProvisioningServer) -> Iterator[httpx.Client]:
    reply = _sign_in(server, OPERATOR)
    token = reply.client.post(
        "/api/v1/admin/api-tokens", json={"name": "op"}, headers={"x-csrf-token": reply.csrf}
    )
    token.raise_for_status()
    client = httpx.Client(
        base_url=f"{server.base_url}/api/v1/admin",
        headers={"Authorization": f"Bearer {token.json()['token']}"},
        timeout=30,
    )
    yield client
    client.close()
    reply.client.close()


def _audit(server: ProvisioningServer, action: str, target_id: str) -> list[AuditEntry]:
    database = Database(server.db_url)
    try:
        with database.session() as db:
            query = select(AuditEntry).where(
                AuditEntry.action == action, AuditEntry.target_id == target_id
            )
            return list(db.scalars(query.order_by(AuditEntry.id)))
    finally:
        database.dispose()


def _comparable(entry: AuditEntry, name_key: str, name: str) -> dict[str, Any]:
    """The row without who, when, where and the target's own identity."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            # id, serial (the fixture derives it from the MAC), revision: the target's own
            out = {k: scrub(v) for k, v in value.items() if k not in ("id", "serial", "revision")}
            if out.get(name_key) == name:
                out[name_key] = "<target>"
            return out
        return value

    return {
        "action": entry.action,
        "target_type": entry.target_type,
        "before": scrub(entry.before),
        "after": scrub(entry.after),
    }


def _user(server: ProvisioningServer, role: str = "read-only") -> tuple[int, str]:
    name = f"fe-{secrets.token_hex(4)}"
    reply = server.admin.post("/users", json={"username": name, "password": PASSWORD, "role": role})
    reply.raise_for_status()
    return reply.json()["id"], name


def _cli(server: ProvisioningServer, *args: str, input_text: str | None = None) -> None:
    result = server.fleet(*args, input_text=input_text)
    assert result.returncode == 0, result.stderr


# --- admin users ------------------------------------------------------------------------------

# (audit action, REST call, CLI arguments, web form); each gets the user's id and name.
Rest = Callable[[httpx.Client, int, str], httpx.Response]
UserCase = tuple[str, Rest, Callable[[str], list[str]], Callable[[int], tuple[str, dict[str, str]]]]
NEW_PASSWORD = "a-new-password-42"
USER_CASES: dict[str, UserCase] = {
    "role": (
        "admin_user.role",
        lambda c, uid, name: c.post(f"/users/{uid}/role", json={"role": "operator"}),
        lambda name: ["admin-user", "role", name, "operator"],
        lambda uid: (f"/admins/{uid}/role", {"role": "operator"}),
    ),
    "disable": (
        "admin_user.disable",
        lambda c, uid, name: c.post(f"/users/{name}/disable"),
        lambda name: ["admin-user", "disable", name],
        lambda uid: (f"/admins/{uid}/state", {"action": "disable"}),
    ),
    "unlock": (
        "admin_user.unlock",
        lambda c, uid, name: c.post(f"/users/{uid}/unlock"),
        lambda name: ["admin-user", "unlock", name],
        lambda uid: (f"/admins/{uid}/state", {"action": "unlock"}),
    ),
    "password": (
        "admin_user.password",
        lambda c, uid, name: c.post(f"/users/{uid}/password", json={"password": NEW_PASSWORD}),
        lambda name: ["admin-user", "password", name, "--password-stdin"],
        lambda uid: (f"/admins/{uid}/password", {"password": NEW_PASSWORD}),
    ),
}


@pytest.mark.parametrize("case", list(USER_CASES))
def test_admin_user_change_writes_one_audit_row_from_every_front_end(
    server: ProvisioningServer, web: Web, case: str
) -> None:
    action, rest, cli_args, web_form = USER_CASES[case]
    (rest_id, rest_name), (cli_id, cli_name), (web_id, web_name) = (_user(server) for _ in range(3))
    rest(server.admin, rest_id, rest_name).raise_for_status()
    _cli(server, *cli_args(cli_name), input_text=NEW_PASSWORD + "\n")
    path, form = web_form(web_id)
    assert [kind for kind, _text in web.flashes(web.post(path, **form))] == ["ok"]

    rows = {
        front: _audit(server, action, str(uid))
        for front, uid in (("rest", rest_id), ("cli", cli_id), ("web", web_id))
    }
    assert all(len(found) == 1 for found in rows.values()), rows
    assert rows["rest"][0].actor == "admin:fixture-admin"
    assert rows["web"][0].actor == f"admin:{WEB_ADMIN}"
    assert rows["cli"][0].actor.startswith("cli:")
    shapes = [
        _comparable(rows[front][0], "username", name)
        for front, name in (("rest", rest_name), ("cli", cli_name), ("web", web_name))
    ]
    assert shapes[0] == shapes[1] == shapes[2], shapes
    if case == "password":  # said that it changed, never what it is
        assert NEW_PASSWORD not in repr(shapes[0])
        assert shapes[0]["after"] == {"username": "<target>", "password_changed": True}


def test_enable_writes_the_same_row_from_every_front_end(
    server: ProvisioningServer, web: Web
) -> None:
    users = [_user(server) for _ in range(3)]
    for uid, _name in users:
        server.admin.post(f"/users/{uid}/disable").raise_for_status()
    (rest_id, _), (_, cli_name), (web_id, _) = users
    assert server.admin.post(f"/users/{rest_id}/enable").json()["disabled"] is False
    _cli(server, "admin-user", "enable", cli_name)
    assert web.flashes(web.post(f"/admins/{web_id}/state", action="enable"))[0][0] == "ok"
    shapes = [
        _comparable(_audit(server, "admin_user.enable", str(uid))[0], "username", name)
        for uid, name in users
    ]
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0]["before"]["disabled"] is True and shapes[0]["after"]["disabled"] is False


@pytest.mark.parametrize("case", list(USER_CASES))
def test_admin_user_change_needs_the_admin_role_in_rest_and_web(
    server: ProvisioningServer,
    operator_rest: httpx.Client,
    operator_web: Web,
    case: str,
) -> None:
    action, rest, _cli_args, web_form = USER_CASES[case]
    uid, name = _user(server)
    reply = rest(operator_rest, uid, name)
    assert reply.status_code == 403, reply.text
    assert "admin_user.manage needs the admin role; you are operator" in reply.text
    path, form = web_form(uid)
    page = operator_web.post(path, **form)
    assert page.status_code == 403
    assert "This needs the admin role; you are operator." in page.text
    assert _audit(server, action, str(uid)) == []


def test_the_rules_about_ones_own_account_are_the_same_in_rest_and_web(
    server: ProvisioningServer, web: Web
) -> None:
    me = server.admin.get("/users").json()
    own_id = next(u["id"] for u in me if u["username"] == "fixture-admin")
    web_id = next(u["id"] for u in me if u["username"] == WEB_ADMIN)
    lowered = server.admin.post(f"/users/{own_id}/role", json={"role": "operator"})
    assert lowered.status_code == 409
    assert lowered.json()["detail"] == "you cannot lower your own role"
    disabled = server.admin.post(f"/users/{own_id}/disable")
    assert disabled.status_code == 409
    assert disabled.json()["detail"] == "you cannot disable yourself"
    assert web.flashes(web.post(f"/admins/{web_id}/role", role="operator")) == [
        ("error", "You cannot lower your own role.")
    ]
    assert web.flashes(web.post(f"/admins/{web_id}/state", action="disable")) == [
        ("error", "You cannot disable yourself.")
    ]
    for uid in (own_id, web_id):
        assert _audit(server, "admin_user.role", str(uid)) == []
        assert _audit(server, "admin_user.disable", str(uid)) == []


def test_a_bad_password_is_refused_alike_and_changes_nothing(
    server: ProvisioningServer, web: Web
) -> None:
    uid, name = _user(server)
    reply = server.admin.post(f"/users/{uid}/password", json={"password": "short"})
    assert reply.status_code == 422
    assert reply.json()["detail"] == "password must be at least 10 characters"
    result = server.fleet("admin-user", "password", name, "--password-stdin", input_text="short\n")
    assert result.returncode == 1
    assert "password must be at least 10 characters" in result.stderr
    flashes = web.flashes(web.post(f"/admins/{uid}/password", password="short"))
    assert flashes == [("error", "Password must be at least 10 characters.")]
    assert _audit(server, "admin_user.password", str(uid)) == []


def test_a_new_password_ends_the_users_api_tokens_from_every_front_end(
    server: ProvisioningServer, web: Web
) -> None:
    """The rule (a new password ends what the old one minted) is the service's, so all three
    front ends keep it."""
    for front in ("rest", "cli", "web"):
        uid, name = _user(server)
        signed_in = _sign_in(server, name)
        token = signed_in.client.post(
            "/api/v1/admin/api-tokens", json={}, headers={"x-csrf-token": signed_in.csrf}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.base_url}/api/v1/admin/me", headers=headers).status_code == 200
        if front == "rest":
            server.admin.post(f"/users/{uid}/password", json={"password": NEW_PASSWORD})
        elif front == "cli":
            _cli(
                server, "admin-user", "password", name, "--password-stdin", input_text=NEW_PASSWORD
            )
        else:
            web.post(f"/admins/{uid}/password", password=NEW_PASSWORD)
        after = httpx.get(f"{server.base_url}/api/v1/admin/me", headers=headers)
        assert after.status_code == 401, (front, after.text)
        signed_in.client.close()


# --- devices ----------------------------------------------------------------------------------


def _pending(server: ProvisioningServer) -> tuple[str, str]:
    mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    reply = server.enroll_request(mac, server.enrollment_token())
    assert reply.status_code == 202, reply.text
    device = server.admin.get(f"/devices/{mac}").json()
    return device["id"], mac


def test_approve_with_a_name_and_a_group_is_one_use_case(
    server: ProvisioningServer, web: Web
) -> None:
    group = f"fe-site-{secrets.token_hex(3)}"
    group_id = server.admin.post("/groups", json={"name": group, "kind": "site"}).json()["id"]
    (rest_id, rest_mac), (cli_id, cli_mac), (web_id, web_mac) = (_pending(server) for _ in range(3))
    approved = server.admin.post(
        f"/devices/{rest_id}/approve", json={"name": "Reception", "group": group}
    )
    approved.raise_for_status()
    assert approved.json()["status"] == "approved"
    _cli(server, "approve", cli_mac, "--name", "Reception", "--group", group)
    flashes = web.flashes(
        web.post(
            f"/devices/{web_id}/status",
            action="approve",
            back="approvals",
            name="Reception",
            group=str(group_id),
        )
    )
    assert flashes == [("ok", f"Device Reception approved into {group}.")]
    for device_id in (rest_id, cli_id, web_id):
        device = server.admin.get(f"/devices/{device_id}").json()
        assert (device["status"], device["name"], device["group_id"]) == (
            "approved",
            "Reception",
            group_id,
        )
    for action in ("device.approve", "device.update"):
        shapes = [
            _comparable(_audit(server, action, device_id)[0], "mac", mac)
            for device_id, mac in ((rest_id, rest_mac), (cli_id, cli_mac), (web_id, web_mac))
        ]
        assert shapes[0] == shapes[1] == shapes[2], (action, shapes)


def test_approve_without_a_body_still_works(server: ProvisioningServer) -> None:
    device_id, _mac = _pending(server)
    reply = server.admin.post(f"/devices/{device_id}/approve")
    assert reply.status_code == 200 and reply.json()["status"] == "approved"
    assert len(_audit(server, "device.approve", device_id)) == 1
    assert _audit(server, "device.update", device_id) == []


def test_a_line_without_an_extension_is_refused_alike(server: ProvisioningServer, web: Web) -> None:
    mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    device = server.admin.post("/devices", json={"mac": mac}).json()
    line = server.admin.post(
        f"/devices/{device['id']}/lines", json={"extension": "2001", "registrar": "pbx.test"}
    ).json()
    reply = server.admin.patch(f"/lines/{line['id']}", json={"extension": " "})
    assert reply.status_code == 422 and reply.json()["detail"] == "extension: required"
    page = web.post(
        f"/devices/{device['id']}/lines/{line['id']}",
        extension=" ",
        registrar="pbx.test",
        transport="udp",
    )
    assert page.status_code == 303
    shown = web.client.get(page.headers["location"]).text
    assert "Line not saved: extension: required" in shown
    assert _audit(server, "line.update", str(line["id"])) == []
