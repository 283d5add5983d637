"""Every admin REST route against every role, on the real server (``offhook server``, SQLite).

``ROUTES`` is the policy as the docs state it (docs/provisioning.md, docs/web-ui.md): for each
route the least role that may call it. Each case builds fresh objects with the admin's token,
then calls the route with a token of each role: a role at or above the minimum succeeds (2xx),
one below gets 403. ``test_every_admin_route_has_a_case`` keeps the table complete.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
import pytest

from tests.fixtures.provisioning_server import ProvisioningServer
from tests.fixtures.rauc_bundles import SigningPair, make_bundle

pytestmark = pytest.mark.integration

ROLES = ("read-only", "operator", "admin")
PREFIX = "/api/v1/admin"
ROLE_PW = "role-test-password"  # the password of the users made for the non-admin roles


def _mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _name(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(4)}"


@dataclass
class Env:
    """The running server, the admin client that prepares objects, and the caller's client."""

    server: ProvisioningServer
    admin: httpx.Client
    caller: httpx.Client

    def device(self, **fields: Any) -> str:
        mac = _mac()
        self.admin.post("/devices", json={"mac": mac, **fields}).raise_for_status()
        return mac

    def pending(self) -> str:
        mac = _mac()
        reply = self.server.enroll_request(mac, self.server.enrollment_token())
        assert reply.status_code == 202, reply.text
        return mac

    def group(self) -> str:
        name = _name("group")
        self.admin.post("/groups", json={"name": name}).raise_for_status()
        return name

    def template(self) -> str:
        name = _name("template")
        self.admin.post("/templates", json={"name": name, "settings": {}}).raise_for_status()
        return name

    def line(self) -> int:
        reply = self.admin.post(
            f"/devices/{self.device()}/lines", json={"extension": "2001", "registrar": "pbx.test"}
        )
        reply.raise_for_status()
        return reply.json()["id"]

    def enrollment_token(self) -> int:
        reply = self.admin.post("/enrollment-tokens", json={"name": _name("enrol")})
        reply.raise_for_status()
        return reply.json()["id"]

    def user(self) -> str:
        name = _name("user")
        body = {"username": name, "password": "user-password-1", "role": "read-only"}
        self.admin.post("/users", json=body).raise_for_status()
        return name

    def own_api_token(self) -> int:
        reply = self.caller.post("/api-tokens", json={"name": _name("own")})
        reply.raise_for_status()
        return reply.json()["id"]

    def enrolment_code(self, client: httpx.Client | None = None) -> str:
        """A fresh TOTP enrolment (an earlier second factor removed first): a valid code."""
        client = client or self.caller
        client.delete("/me/mfa")  # 422 when there is none
        reply = client.post("/me/mfa/enrol")
        reply.raise_for_status()
        return pyotp.TOTP(reply.json()["secret"]).now()

    def mfa_on(self, client: httpx.Client | None = None) -> None:
        client = client or self.caller
        code = self.enrolment_code(client)
        client.post("/me/mfa/confirm", json={"code": code}).raise_for_status()

    def with_mfa(self, path: str, client: httpx.Client | None = None) -> tuple[str, dict[str, Any]]:
        """The second factor on (the caller's, or ``client``'s user's), then ``path``."""
        self.mfa_on(client)
        return path, {}

    def without_mfa(self, path: str) -> tuple[str, dict[str, Any]]:
        self.caller.delete("/me/mfa")  # 422 when there is none
        return path, {}

    def own_session(self) -> int:
        """A web sign-in of the caller's user: its session's id."""
        username = self.caller.get("/me").json()["username"]
        self.caller.delete("/me/mfa")  # the sign-in asks for no code
        password = self.server.admin_password if username == self.server.admin_user else ROLE_PW
        web = httpx.Client(base_url=self.server.base_url, timeout=30)
        form = web.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        body = {"username": username, "password": password, "csrf_token": csrf}
        assert web.post("/login", data=body).status_code == 303
        web.close()
        return self.caller.get("/me/sessions").json()[0]["id"]

    def throwaway_caller(self) -> dict[str, str]:
        """Headers of a new user with the caller's role: a new password ends the user's
        tokens, so the module's callers must not change theirs."""
        role = self.caller.get("/me").json()["role"]
        made = self.server.fleet(
            "create-admin",
            _name("pw"),
            "--role",
            role,
            "--password-stdin",
            "--api-token",
            input_text=ROLE_PW + "\n",
        )
        assert made.returncode == 0, made.stderr
        token = re.search(r"api token: (\S+)", made.stdout).group(1)  # type: ignore[union-attr]
        return {"Authorization": f"Bearer {token}"}

    def bundle(self, compatible: str = "offhook-roles") -> bytes:
        """A real signed RAUC bundle the server's keyring accepts, of a new version."""
        work = self.server.directory / "firmware-work"
        pair = (
            SigningPair.make(work / "keys", "roles")
            if not (work / "keys").is_dir()
            else (SigningPair(work / "keys" / "roles.key.pem", work / "keys" / "roles.cert.pem"))
        )
        keyring = self.server.data_dir / "firmware-keyring.pem"
        if not keyring.is_file():
            keyring.write_bytes(pair.cert.read_bytes())
        version = f"1.{secrets.randbelow(10**6)}"
        return make_bundle(work, pair, compatible, version, name=_name("bundle")).read_bytes()

    def release(self, compatible: str = "offhook-roles") -> int:
        reply = self.admin.post("/firmware", content=self.bundle(compatible))
        reply.raise_for_status()
        return reply.json()["id"]

    def rollout(self, paused: bool = False) -> int:
        body = {"release": str(self.release()), "group": self.group()}
        reply = self.admin.post("/rollouts", json=body)
        reply.raise_for_status()
        rollout = reply.json()["id"]
        if paused:
            self.admin.post(f"/rollouts/{rollout}/pause").raise_for_status()
        return rollout

    def alert(self) -> int:
        """An open alert: a phone whose status says its line is not registered."""
        phone = self.server.enroll(_mac())
        report = {
            "id": secrets.token_hex(8),
            "time": datetime.now(UTC).isoformat(),
            "lines": [{"account": 0, "user": "2001", "registered": False, "status": 408}],
        }
        with phone.client() as client:
            client.post("/api/v1/device/status", json=report).raise_for_status()
        found = self.admin.get("/alerts", params={"kind": "line_unregistered"}).json()
        (alert,) = [a for a in found["alerts"] if a["subject"]["id"] == phone.device_id]
        return int(alert["id"])


Request = tuple[str, dict[str, Any]]  # (path below /api/v1/admin, httpx keyword arguments)
Make = Callable[[Env], Request]


def _attached(env: Env) -> Request:
    group, template = env.group(), env.template()
    env.admin.put(f"/groups/{group}/templates/{template}").raise_for_status()
    return f"/groups/{group}/templates/{template}", {}


# (method, route path, least role, what to send). The policy, as documented.
ROUTES: list[tuple[str, str, str, Make]] = [
    ("GET", "/devices", "read-only", lambda e: ("/devices", {})),
    ("POST", "/devices", "operator", lambda e: ("/devices", {"json": {"mac": _mac()}})),
    (
        "POST",
        "/devices/import",
        "operator",
        lambda e: (
            "/devices/import",
            {"content": f"mac\n{_mac()}\n", "headers": {"content-type": "text/csv"}},
        ),
    ),
    ("GET", "/devices/{ref}", "read-only", lambda e: (f"/devices/{e.device()}", {})),
    (
        "PATCH",
        "/devices/{ref}",
        "operator",
        lambda e: (f"/devices/{e.device()}", {"json": {"name": "renamed"}}),
    ),
    ("DELETE", "/devices/{ref}", "admin", lambda e: (f"/devices/{e.device()}", {})),
    (
        "POST",
        "/devices/{ref}/approve",
        "operator",
        lambda e: (f"/devices/{e.pending()}/approve", {}),
    ),
    ("POST", "/devices/{ref}/reject", "operator", lambda e: (f"/devices/{e.pending()}/reject", {})),
    ("POST", "/devices/{ref}/revoke", "operator", lambda e: (f"/devices/{e.device()}/revoke", {})),
    ("POST", "/devices/{ref}/reset", "operator", lambda e: (f"/devices/{e.device()}/reset", {})),
    ("GET", "/devices/{ref}/config", "read-only", lambda e: (f"/devices/{e.device()}/config", {})),
    ("GET", "/devices/{ref}/status", "read-only", lambda e: (f"/devices/{e.device()}/status", {})),
    ("GET", "/settings/fleet", "read-only", lambda e: ("/settings/fleet", {})),
    (
        "PATCH",
        "/settings/fleet",
        "admin",
        lambda e: (
            "/settings/fleet",
            {"json": {"set": {"audio.ring_volume": secrets.randbelow(90) + 5}}},
        ),
    ),
    (
        "PATCH",
        "/groups/{ref}/settings",
        "operator",
        lambda e: (f"/groups/{e.group()}/settings", {"json": {"set": {"audio.tone_plan": "uk"}}}),
    ),
    (
        "PATCH",
        "/devices/{ref}/settings",
        "operator",
        lambda e: (f"/devices/{e.device()}/settings", {"json": {"set": {"audio.tone_plan": "uk"}}}),
    ),
    ("GET", "/groups", "read-only", lambda e: ("/groups", {})),
    ("GET", "/groups/tree", "read-only", lambda e: ("/groups/tree", {})),
    ("GET", "/settings/schema", "read-only", lambda e: ("/settings/schema", {})),
    (
        "GET",
        "/devices/{ref}/settings/effective",
        "read-only",
        lambda e: (f"/devices/{e.device()}/settings/effective", {}),
    ),
    ("GET", "/devices/export", "read-only", lambda e: ("/devices/export", {})),
    (
        "POST",
        "/devices/bulk",
        "operator",
        lambda e: ("/devices/bulk", {"json": {"action": "resync", "device_ids": [e.device()]}}),
    ),
    ("POST", "/groups", "operator", lambda e: ("/groups", {"json": {"name": _name("group")}})),
    ("GET", "/groups/{ref}", "read-only", lambda e: (f"/groups/{e.group()}", {})),
    (
        "PATCH",
        "/groups/{ref}",
        "operator",
        lambda e: (f"/groups/{e.group()}", {"json": {"name": _name("renamed")}}),
    ),
    ("DELETE", "/groups/{ref}", "operator", lambda e: (f"/groups/{e.group()}", {})),
    (
        "PUT",
        "/groups/{ref}/templates/{template}",
        "operator",
        lambda e: (f"/groups/{e.group()}/templates/{e.template()}", {}),
    ),
    ("DELETE", "/groups/{ref}/templates/{template}", "operator", _attached),
    ("GET", "/templates", "read-only", lambda e: ("/templates", {})),
    (
        "POST",
        "/templates",
        "operator",
        lambda e: ("/templates", {"json": {"name": _name("template"), "settings": {}}}),
    ),
    (
        "PATCH",
        "/templates/{ref}",
        "operator",
        lambda e: (f"/templates/{e.template()}", {"json": {"description": "changed"}}),
    ),
    ("DELETE", "/templates/{ref}", "operator", lambda e: (f"/templates/{e.template()}", {})),
    ("GET", "/lines", "read-only", lambda e: ("/lines", {})),
    (
        "POST",
        "/devices/{ref}/lines",
        "operator",
        lambda e: (
            f"/devices/{e.device()}/lines",
            {"json": {"extension": "2002", "registrar": "pbx.test"}},
        ),
    ),
    (
        "PATCH",
        "/lines/{line_id}",
        "operator",
        lambda e: (f"/lines/{e.line()}", {"json": {"display_name": "Desk"}}),
    ),
    ("DELETE", "/lines/{line_id}", "operator", lambda e: (f"/lines/{e.line()}", {})),
    ("GET", "/enrollment-tokens", "read-only", lambda e: ("/enrollment-tokens", {})),
    ("POST", "/enrollment-tokens", "operator", lambda e: ("/enrollment-tokens", {"json": {}})),
    (
        "DELETE",
        "/enrollment-tokens/{token_id}",
        "operator",
        lambda e: (f"/enrollment-tokens/{e.enrollment_token()}", {}),
    ),
    ("GET", "/status", "read-only", lambda e: ("/status", {})),
    ("GET", "/cdrs", "read-only", lambda e: ("/cdrs", {})),
    ("GET", "/quality", "read-only", lambda e: ("/quality", {})),
    ("GET", "/events", "read-only", lambda e: ("/events", {})),
    ("GET", "/analytics/calls", "read-only", lambda e: ("/analytics/calls", {})),
    ("GET", "/analytics/quality", "read-only", lambda e: ("/analytics/quality", {})),
    ("GET", "/calls", "read-only", lambda e: ("/calls", {})),
    ("GET", "/calls/export", "read-only", lambda e: ("/calls/export", {})),
    ("GET", "/me/time-zone", "read-only", lambda e: ("/me/time-zone", {})),
    (
        "PUT",
        "/me/time-zone",
        "read-only",
        lambda e: ("/me/time-zone", {"json": {"time_zone": "Europe/Berlin"}}),
    ),
    ("GET", "/audit", "read-only", lambda e: ("/audit", {})),
    ("POST", "/resync", "operator", lambda e: ("/resync", {"json": {"device_ids": [e.device()]}})),
    (
        "POST",
        "/privacy/export",
        "admin",
        lambda e: ("/privacy/export", {"json": {"device": e.device()}}),
    ),
    (
        "POST",
        "/privacy/erase",
        "admin",
        lambda e: ("/privacy/erase", {"json": {"device": e.device()}}),
    ),
    ("POST", "/purge", "admin", lambda e: ("/purge", {})),
    ("GET", "/me", "read-only", lambda e: ("/me", {})),
    (
        "POST",
        "/users",
        "admin",
        lambda e: (
            "/users",
            {
                "json": {
                    "username": _name("user"),
                    "password": "user-password-1",
                    "role": "operator",
                }
            },
        ),
    ),
    ("GET", "/users", "admin", lambda e: ("/users", {})),
    (
        "POST",
        "/users/{ref}/role",
        "admin",
        lambda e: (f"/users/{e.user()}/role", {"json": {"role": "operator"}}),
    ),
    ("POST", "/users/{ref}/disable", "admin", lambda e: (f"/users/{e.user()}/disable", {})),
    ("POST", "/users/{ref}/enable", "admin", lambda e: (f"/users/{e.user()}/enable", {})),
    ("POST", "/users/{ref}/unlock", "admin", lambda e: (f"/users/{e.user()}/unlock", {})),
    (
        "POST",
        "/users/{ref}/password",
        "admin",
        lambda e: (f"/users/{e.user()}/password", {"json": {"password": "user-password-2"}}),
    ),
    ("GET", "/api-tokens", "read-only", lambda e: ("/api-tokens", {})),
    ("POST", "/firmware", "admin", lambda e: ("/firmware", {"content": e.bundle()})),
    (
        "POST",
        "/firmware/{ref}/withdraw",
        "admin",
        lambda e: (f"/firmware/{e.release()}/withdraw", {}),
    ),
    ("GET", "/me/security-keys", "read-only", lambda e: ("/me/security-keys", {})),
    ("GET", "/firmware", "read-only", lambda e: ("/firmware", {})),
    ("GET", "/firmware/{ref}", "read-only", lambda e: (f"/firmware/{e.release()}", {})),
    ("GET", "/firmware-versions", "read-only", lambda e: ("/firmware-versions", {})),
    ("GET", "/rollouts", "read-only", lambda e: ("/rollouts", {})),
    (
        "POST",
        "/rollouts",
        "operator",
        lambda e: ("/rollouts", {"json": {"release": str(e.release()), "group": e.group()}}),
    ),
    ("GET", "/rollouts/{ref}", "read-only", lambda e: (f"/rollouts/{e.rollout()}", {})),
    (
        "PATCH",
        "/rollouts/{ref}",
        "operator",
        lambda e: (f"/rollouts/{e.rollout()}", {"json": {"failure_threshold_pct": 20}}),
    ),
    ("POST", "/rollouts/{ref}/pause", "operator", lambda e: (f"/rollouts/{e.rollout()}/pause", {})),
    (
        "POST",
        "/rollouts/{ref}/resume",
        "operator",
        lambda e: (f"/rollouts/{e.rollout(paused=True)}/resume", {}),
    ),
    ("POST", "/rollouts/{ref}/abort", "operator", lambda e: (f"/rollouts/{e.rollout()}/abort", {})),
    ("GET", "/alerts", "read-only", lambda e: ("/alerts", {})),
    ("GET", "/alerts/{alert_id}", "read-only", lambda e: (f"/alerts/{e.alert()}", {})),
    ("POST", "/alerts/{alert_id}/ack", "operator", lambda e: (f"/alerts/{e.alert()}/ack", {})),
    ("POST", "/alerts/ack", "operator", lambda e: ("/alerts/ack", {"json": {"ids": [e.alert()]}})),
    (
        "GET",
        "/devices/{ref}/firmware",
        "read-only",
        lambda e: (f"/devices/{e.device()}/firmware", {}),
    ),
    (
        "PUT",
        "/devices/{ref}/firmware",
        "operator",
        lambda e: (f"/devices/{e.device()}/firmware", {"json": {"excluded": True}}),
    ),
    ("POST", "/api-tokens", "read-only", lambda e: ("/api-tokens", {"json": {"name": "mine"}})),
    (
        "DELETE",
        "/api-tokens/{token_id}",
        "read-only",
        lambda e: (f"/api-tokens/{e.own_api_token()}", {}),
    ),
    # one's own sign-in security; another admin's second factor; privacy classes and archive
    ("GET", "/me/mfa", "read-only", lambda e: ("/me/mfa", {})),
    ("POST", "/me/mfa/enrol", "read-only", lambda e: e.without_mfa("/me/mfa/enrol")),
    (
        "POST",
        "/me/mfa/confirm",
        "read-only",
        lambda e: ("/me/mfa/confirm", {"json": {"code": e.enrolment_code()}}),
    ),
    (
        "POST",
        "/me/mfa/recovery-codes",
        "read-only",
        lambda e: e.with_mfa("/me/mfa/recovery-codes"),
    ),
    ("DELETE", "/me/mfa", "read-only", lambda e: e.with_mfa("/me/mfa")),
    (
        "DELETE",
        "/users/{ref}/mfa",
        "admin",
        lambda e: e.with_mfa(f"/users/{e.server.admin_user}/mfa", e.admin),
    ),
    ("GET", "/me/sessions", "read-only", lambda e: ("/me/sessions", {})),
    (
        "DELETE",
        "/sessions/{session_id}",
        "read-only",
        lambda e: (f"/sessions/{e.own_session()}", {}),
    ),
    ("GET", "/me/networks", "read-only", lambda e: ("/me/networks", {})),
    (
        "POST",
        "/me/password",
        "read-only",
        lambda e: (
            "/me/password",
            {
                "json": {"current": ROLE_PW, "password": _name("new-password")},
                "headers": e.throwaway_caller(),
            },
        ),
    ),
    ("GET", "/privacy/classes", "admin", lambda e: ("/privacy/classes", {})),
    (
        "POST",
        "/privacy/export.zip",
        "admin",
        lambda e: ("/privacy/export.zip", {"json": {"device": e.device()}}),
    ),
]
# Variants of a route that need more than the route itself (not counted for coverage).
VARIANTS: list[tuple[str, str, str, Make]] = [
    ("GET", "/api-tokens?all", "admin", lambda e: ("/api-tokens", {"params": {"all": "true"}})),
    ("GET", "/me/sessions?all", "admin", lambda e: ("/me/sessions", {"params": {"all": "true"}})),
    # A rollout to the whole fleet is the admins' (each on a board of its own: no overlap).
    (
        "POST",
        "/rollouts (fleet)",
        "admin",
        lambda e: ("/rollouts", {"json": {"release": str(e.release(_name("offhook-board")))}}),
    ),
]


def _at_least(role: str, least: str) -> bool:
    return ROLES.index(role) >= ROLES.index(least)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    with ProvisioningServer(tmp_path_factory.mktemp("roles-server")) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(server: ProvisioningServer) -> dict[str, str]:
    """An API token per role: the fixture admin's, and users made with the CLI."""
    found = {"admin": server.admin_token}
    for role in ("operator", "read-only"):
        made = server.fleet(
            "create-admin",
            f"role-{role}",
            "--role",
            role,
            "--password-stdin",
            "--api-token",
            input_text=ROLE_PW + "\n",
        )
        assert made.returncode == 0, made.stderr
        found[role] = re.search(r"api token: (\S+)", made.stdout).group(1)  # type: ignore[union-attr]
    return found


@pytest.fixture(scope="module")
def clients(
    server: ProvisioningServer, tokens: dict[str, str]
) -> Iterator[dict[str, httpx.Client]]:
    made = {
        role: httpx.Client(
            base_url=server.base_url + PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        for role, token in tokens.items()
    }
    yield made
    for client in made.values():
        client.close()


def _cases() -> Iterator[Any]:
    for method, path, least, make in ROUTES + VARIANTS:
        for role in ROLES:
            verdict = "allowed" if _at_least(role, least) else "refused"
            yield pytest.param(method, least, make, role, id=f"{method} {path} {role} {verdict}")


@pytest.mark.parametrize(("method", "least", "make", "role"), list(_cases()))
def test_route_allows_exactly_its_roles(
    server: ProvisioningServer,
    clients: dict[str, httpx.Client],
    method: str,
    least: str,
    make: Make,
    role: str,
) -> None:
    env = Env(server, server.admin, clients[role])
    path, kwargs = make(env)
    reply = clients[role].request(method, path, **kwargs)
    if _at_least(role, least):
        assert reply.is_success, (reply.status_code, reply.text)
    else:
        assert reply.status_code == 403, (reply.status_code, reply.text)
        assert reply.json()["code"] == "forbidden"
        assert f"needs the {least} role" in reply.json()["detail"]


def test_every_admin_route_has_a_case(server: ProvisioningServer) -> None:
    schema = server.admin.get(server.base_url + "/openapi.json").json()
    served = {
        (method.upper(), path[len(PREFIX) :])
        for path, operations in schema["paths"].items()
        if path.startswith(PREFIX)
        for method in operations
    }
    assert served == {(method, path) for method, path, _least, _make in ROUTES} | UNCASED


# Removing one's own security key: every role may (the route needs only a signed-in admin), so
# there is no refusal to check, and a key exists only after a browser's WebAuthn ceremony; the web
# form that removes one is in tests/e2e/test_web_roles.py, the ceremony in test_web_security_keys.
UNCASED = {("DELETE", "/me/security-keys/{key_id}")}


def test_operator_cannot_change_fleet_defaults_or_delete_devices(
    server: ProvisioningServer, clients: dict[str, httpx.Client]
) -> None:
    """The two refusals the docs promised and the API did not keep: nothing changes."""
    operator = clients["operator"]
    before = server.admin.get("/settings/fleet").json()
    refused = operator.patch("/settings/fleet", json={"set": {"audio.tone_plan": "uk"}})
    assert refused.status_code == 403
    assert server.admin.get("/settings/fleet").json() == before
    mac = Env(server, server.admin, operator).device()
    assert operator.delete(f"/devices/{mac}").status_code == 403
    assert server.admin.get(f"/devices/{mac}").status_code == 200


def test_someone_elses_api_token_is_not_found_unless_admin(
    server: ProvisioningServer, clients: dict[str, httpx.Client]
) -> None:
    mine = clients["operator"].post("/api-tokens", json={"name": "op-own"}).json()["id"]
    assert clients["read-only"].delete(f"/api-tokens/{mine}").status_code == 404
    listed = {t["id"] for t in clients["read-only"].get("/api-tokens").json()}
    assert mine not in listed
    everyone = {
        t["id"]: t for t in clients["admin"].get("/api-tokens", params={"all": True}).json()
    }
    assert everyone[mine]["user"] == "role-operator" and not everyone[mine]["revoked"]
    assert clients["admin"].delete(f"/api-tokens/{mine}").json()["revoked"] is True


def test_api_tokens_always_expire_within_the_roles_limit(
    clients: dict[str, httpx.Client],
) -> None:
    from datetime import datetime, timedelta

    from offhook.provisioning.models import utcnow

    def lifetime(reply: httpx.Response) -> timedelta:
        assert reply.status_code == 201, reply.text
        return datetime.fromisoformat(reply.json()["expires_at"]) - utcnow()

    for role, longest in (("read-only", 90), ("operator", 90), ("admin", 365)):
        api = clients[role]
        default = lifetime(api.post("/api-tokens", json={"name": "default"}))
        assert timedelta(days=29) < default <= timedelta(days=30)
        assert lifetime(api.post("/api-tokens", json={"ttl_days": longest})) > timedelta(
            days=longest - 1
        )
        too_long = api.post("/api-tokens", json={"ttl_days": longest + 1})
        assert too_long.status_code == 422
        assert f"at most {longest} days" in too_long.json()["detail"]
        never = api.post("/api-tokens", json={"ttl_days": None})  # no way to ask for "never"
        assert timedelta(days=29) < lifetime(never) <= timedelta(days=30)
