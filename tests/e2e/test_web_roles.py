"""Every web UI page and action against every role, on the real server (``offhook server``).

The same policy as the REST API (tests/integration/test_prov_roles.py, docs/web-ui.md "Roles"):
for each route the least role that may use it. Each case prepares fresh objects through the
admin REST API, then sends the page's request with a signed-in browser session of each role
(cookies and the form's CSRF token, as Chromium would): a role at or above the minimum gets
the page (200) or the action's redirect without an error flash (303), one below gets 403.
``test_every_web_route_has_a_case`` keeps the table complete.
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
from tests.fixtures.soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.integration

ROLES = ("read-only", "operator", "admin")
PASSWORD = "web-roles-password"
PUBLIC_URL = "http://localhost"
USERS = {"read-only": "wr-rita", "operator": "wr-olga", "admin": "wr-alice"}
# Reached before any role is known: the sign-in itself, and the stylesheet and script.
PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/login/code"),
    ("POST", "/login/code"),
    ("POST", "/login/key/options"),
    ("POST", "/login/key"),
    ("POST", "/logout"),
    ("GET", "/static/{name}"),
}


def _mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _name(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(4)}"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


@dataclass
class Browser:
    """A signed-in web session: its cookies and the CSRF token of its forms."""

    client: httpx.Client
    csrf: str


def sign_in(server: ProvisioningServer, username: str) -> Browser:
    client = httpx.Client(base_url=server.base_url, timeout=30)
    form = client.get("/login")
    reply = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": _csrf(form.text)},
    )
    assert reply.status_code == 303 and reply.headers["location"] == "/", reply.text
    return Browser(client, _csrf(client.get("/").text))  # the signed-in session's token


@dataclass
class Env:
    server: ProvisioningServer
    admin: httpx.Client  # REST, prepares objects
    browser: Browser  # the caller

    def device(self, **fields: Any) -> dict[str, Any]:
        reply = self.admin.post("/devices", json={"mac": _mac(), **fields})
        reply.raise_for_status()
        return reply.json()

    def group(self) -> dict[str, Any]:
        reply = self.admin.post("/groups", json={"name": _name("group")})
        reply.raise_for_status()
        return reply.json()

    def template(self) -> dict[str, Any]:
        reply = self.admin.post("/templates", json={"name": _name("template"), "settings": {}})
        reply.raise_for_status()
        return reply.json()

    def line(self) -> tuple[str, int]:
        device = self.device()
        reply = self.admin.post(
            f"/devices/{device['id']}/lines", json={"extension": "2001", "registrar": "pbx.test"}
        )
        reply.raise_for_status()
        return device["id"], reply.json()["id"]

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

    def release(self) -> str:
        """The release the module's server started with (never withdrawn)."""
        return str(self.admin.get("/firmware").json()[-1]["id"])

    def fresh_release(self) -> str:
        """A release uploaded for this case alone (one to withdraw)."""
        reply = self.admin.post(
            "/firmware", content=self.bundle(),
            headers={"content-type": "application/octet-stream"},
        )  # fmt: skip
        reply.raise_for_status()
        return str(reply.json()["id"])

    def bundle(self) -> bytes:
        work, pair = BUNDLE_MAKER["work"], BUNDLE_MAKER["pair"]
        return make_bundle(work, pair, version=f"0.3.{secrets.randbelow(10**6)}").read_bytes()

    def group_rollout(self) -> int:
        """A rollout of the release to a new (empty) group: it waits for phones."""
        reply = self.admin.post(
            "/rollouts",
            json={"release": self.release(), "group": self.group()["name"], "stages": [100]},
        )
        reply.raise_for_status()
        return int(reply.json()["id"])

    def user(self) -> int:
        reply = self.admin.post(
            "/users",
            json={"username": _name("user"), "password": PASSWORD, "role": "read-only"},
        )
        reply.raise_for_status()
        return reply.json()["id"]

    def own_api_token(self) -> int:
        """Made with the caller's own session through the REST API (CSRF header)."""
        reply = self.browser.client.post(
            "/api/v1/admin/api-tokens",
            json={"name": _name("own")},
            headers={"x-csrf-token": self.browser.csrf},
        )
        reply.raise_for_status()
        return reply.json()["id"]

    def _rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"x-csrf-token": self.browser.csrf}
        return self.browser.client.request(
            method, "/api/v1/admin" + path, headers=headers, **kwargs
        )

    def enrolment_code(self) -> str:
        """A fresh TOTP enrolment of the caller (any earlier second factor removed): a code."""
        self._rest("DELETE", "/me/mfa")  # 422 when there is none
        reply = self._rest("POST", "/me/mfa/enrol")
        reply.raise_for_status()
        return pyotp.TOTP(reply.json()["secret"]).now()

    def mfa_on(self, path: str, form: dict[str, Any]) -> Request:
        """The caller's second factor on, then the request (path, form)."""
        self._rest("POST", "/me/mfa/confirm", json={"code": self.enrolment_code()})
        return path, form

    def new_password(self) -> dict[str, Any]:
        new = _name("password") + "-long"
        return {"current": PASSWORD, "password": new, "again": new}

    def own_other_session(self) -> int:
        """Another sign-in of the caller (a second browser): its session's id."""
        self._rest("DELETE", "/me/mfa")  # the second sign-in asks for no code
        username = self.browser.client.get("/api/v1/admin/me").json()["username"]
        sign_in(self.server, username).client.close()
        reply = self.browser.client.get("/api/v1/admin/me/sessions")
        reply.raise_for_status()
        return reply.json()[0]["id"]  # newest first

    def security_key(self) -> dict[str, Any]:
        """The form that registers a new security key of the caller (a software authenticator
        answering this session's challenge)."""
        options = self.browser.client.post(
            "/security/keys/options", headers={"x-csrf-token": self.browser.csrf}
        )
        options.raise_for_status()
        made = SoftAuthenticator(PUBLIC_URL).register(options.json())
        return {"name": _name("key"), "credential": made}

    def own_security_key(self) -> int:
        """A security key of the caller, registered through the web form: its id."""
        reply = self.browser.client.post(
            "/security/keys", data={**self.security_key(), "csrf_token": self.browser.csrf}
        )
        assert reply.status_code == 303, reply.text[:300]
        ids = re.findall(
            r'action="/security/keys/(\d+)/remove"', self.browser.client.get("/security/mfa").text
        )
        return int(ids[-1])


Request = tuple[str, dict[str, Any]]  # (path, form fields)
Make = Callable[[Env], Request]


BUNDLE_MAKER: dict[str, Any] = {}  # the module server's signing pair, for more releases


def _page(path: str) -> Make:
    return lambda e: (path, {})


def _line_path(e: Env, suffix: str) -> str:
    device_id, line_id = e.line()
    return f"/devices/{device_id}/lines/{line_id}{suffix}"


ROUTES: list[tuple[str, str, str, Make]] = [
    # pages
    ("GET", "/", "read-only", _page("/")),
    ("GET", "/alerts", "read-only", _page("/alerts?state=all")),
    (
        "POST",
        "/alerts/ack",
        "operator",
        lambda e: ("/alerts/ack", {"alert": str(e.alert()), "confirm": "yes"}),
    ),
    ("GET", "/devices", "read-only", _page("/devices")),
    ("GET", "/devices/rows", "read-only", _page("/devices/rows")),
    ("GET", "/devices.csv", "read-only", _page("/devices.csv?sort=-name")),
    # the bulk form's first post answers the confirmation page
    (
        "POST",
        "/devices/bulk",
        "operator",
        lambda e: ("/devices/bulk", {"bulk_action": "resync", "device": e.device()["id"]}),
    ),
    (
        "POST",
        "/devices/{device_id}/settings/section",
        "operator",
        lambda e: (
            f"/devices/{e.device()['id']}/settings/section",
            {"section": "audio", "audio.tone_plan": "uk"},
        ),
    ),
    (
        "POST",
        "/groups/{group_id}/settings/section",
        "operator",
        lambda e: (
            f"/groups/{e.group()['id']}/settings/section",
            {"section": "audio", "audio.tone_plan": "eu"},
        ),
    ),
    (
        "POST",
        "/templates/{template_id}/settings/section",
        "operator",
        lambda e: (
            f"/templates/{e.template()['id']}/settings/section",
            {"section": "features", "features.dnd": "true"},
        ),
    ),
    (
        "POST",
        "/fleet/settings/section",
        "admin",
        lambda e: ("/fleet/settings/section", {"section": "device", "device.language": "en"}),
    ),
    (
        "POST",
        "/groups/{group_id}/resync",
        "operator",
        lambda e: (f"/groups/{e.group()['id']}/resync", {}),
    ),
    ("GET", "/devices/{device_id}", "read-only", lambda e: (f"/devices/{e.device()['id']}", {})),
    ("GET", "/approvals", "read-only", _page("/approvals")),
    ("GET", "/fleet", "read-only", _page("/fleet")),
    ("GET", "/groups", "read-only", _page("/groups")),
    ("GET", "/groups/{group_id}", "read-only", lambda e: (f"/groups/{e.group()['id']}", {})),
    ("GET", "/templates", "read-only", _page("/templates")),
    (
        "GET",
        "/templates/{template_id}",
        "read-only",
        lambda e: (f"/templates/{e.template()['id']}", {}),
    ),
    ("GET", "/tokens", "read-only", _page("/tokens")),
    ("GET", "/cdrs", "read-only", _page("/cdrs")),
    ("GET", "/quality", "read-only", _page("/quality")),
    ("GET", "/analytics", "read-only", _page("/analytics")),
    ("GET", "/analytics/calls", "read-only", _page("/analytics/calls")),
    ("GET", "/analytics/export.csv", "read-only", _page("/analytics/export.csv")),
    ("GET", "/preferences", "read-only", _page("/preferences")),
    ("GET", "/audit", "read-only", _page("/audit")),
    ("GET", "/api-tokens", "read-only", _page("/api-tokens")),
    ("GET", "/privacy", "admin", _page("/privacy")),
    ("GET", "/firmware", "read-only", _page("/firmware")),
    ("POST", "/firmware/upload", "admin", lambda e: ("/firmware/upload", {"bundle": e.bundle()})),
    (
        "POST",
        "/firmware/{ref}/withdraw",
        "admin",
        lambda e: (f"/firmware/{e.fresh_release()}/withdraw", {}),
    ),
    # firmware rollouts: a group's needs an operator (rollout.group)
    (
        "POST",
        "/rollouts",
        "operator",
        lambda e: (
            "/rollouts",
            {"release": e.release(), "group": e.group()["name"], "stages": "100"},
        ),
    ),
    (
        "POST",
        "/rollouts/{ref}/{action}",
        "operator",
        lambda e: (f"/rollouts/{e.group_rollout()}/pause", {}),
    ),
    ("GET", "/admins", "admin", _page("/admins")),
    # confirmation pages of destructive actions: as the action itself
    (
        "GET",
        "/groups/{group_id}/delete",
        "operator",
        lambda e: (f"/groups/{e.group()['id']}/delete", {}),
    ),
    (
        "GET",
        "/templates/{template_id}/delete",
        "operator",
        lambda e: (f"/templates/{e.template()['id']}/delete", {}),
    ),
    (
        "GET",
        "/devices/{device_id}/lines/{line_id}/delete",
        "operator",
        lambda e: (_line_path(e, "/delete"), {}),
    ),
    # devices
    ("POST", "/devices", "operator", lambda e: ("/devices", {"mac": _mac()})),
    (
        "POST",
        "/devices/import",
        "operator",
        lambda e: ("/devices/import", {"csv_text": f"mac\n{_mac()}\n"}),
    ),
    (
        "POST",
        "/devices/{device_id}/name",
        "operator",
        lambda e: (f"/devices/{e.device()['id']}/name", {"name": "Desk"}),
    ),
    (
        "POST",
        "/devices/{device_id}/status",
        "operator",
        lambda e: (f"/devices/{e.device()['id']}/status", {"action": "revoke"}),
    ),
    (
        "POST",
        "/devices/{device_id}/resync",
        "operator",
        lambda e: (f"/devices/{e.device()['id']}/resync", {}),
    ),
    (
        "POST",
        "/devices/{device_id}/group",
        "operator",
        lambda e: (f"/devices/{e.device()['id']}/group", {"group": str(e.group()["id"])}),
    ),
    (
        "POST",
        "/devices/{device_id}/settings",
        "operator",
        lambda e: (
            f"/devices/{e.device()['id']}/settings",
            {"key": "audio.tone_plan", "value": "uk"},
        ),
    ),
    (
        "POST",
        "/devices/{device_id}/lines",
        "operator",
        lambda e: (
            f"/devices/{e.device()['id']}/lines",
            {"extension": "2002", "registrar": "pbx.test"},
        ),
    ),
    (
        "POST",
        "/devices/{device_id}/lines/{line_id}",
        "operator",
        lambda e: (
            _line_path(e, ""),
            {"extension": "2003", "registrar": "pbx.test", "transport": "udp"},
        ),
    ),
    (
        "POST",
        "/devices/{device_id}/lines/{line_id}/delete",
        "operator",
        lambda e: (_line_path(e, "/delete"), {"confirm": "yes"}),
    ),
    (
        "POST",
        "/devices/{device_id}/delete",
        "admin",
        lambda e: (lambda d: (f"/devices/{d['id']}/delete", {"confirm": d["mac"]}))(e.device()),
    ),
    # groups, templates, settings
    ("POST", "/groups", "operator", lambda e: ("/groups", {"name": _name("group")})),
    (
        "POST",
        "/groups/{group_id}/settings",
        "operator",
        lambda e: (
            f"/groups/{e.group()['id']}/settings",
            {"key": "audio.tone_plan", "value": "uk"},
        ),
    ),
    (
        "POST",
        "/groups/{group_id}/templates",
        "operator",
        lambda e: (
            f"/groups/{e.group()['id']}/templates",
            {"template": str(e.template()["id"]), "attach": "1"},
        ),
    ),
    (
        "POST",
        "/groups/{group_id}/edit",
        "operator",
        lambda e: (f"/groups/{e.group()['id']}/edit", {"name": _name("renamed")}),
    ),
    (
        "POST",
        "/groups/{group_id}/delete",
        "operator",
        lambda e: (f"/groups/{e.group()['id']}/delete", {"confirm": "yes"}),
    ),
    (
        "POST",
        "/templates",
        "operator",
        lambda e: ("/templates", {"name": _name("template"), "settings": "{}"}),
    ),
    (
        "POST",
        "/templates/{template_id}",
        "operator",
        lambda e: (f"/templates/{e.template()['id']}", {"description": "d", "settings": "{}"}),
    ),
    (
        "POST",
        "/templates/{template_id}/delete",
        "operator",
        lambda e: (f"/templates/{e.template()['id']}/delete", {"confirm": "yes"}),
    ),
    (
        "POST",
        "/fleet/settings",
        "admin",
        lambda e: ("/fleet/settings", {"key": "audio.ring_volume", "value": "60"}),
    ),
    # enrollment tokens
    ("POST", "/tokens", "operator", lambda e: ("/tokens", {"name": _name("enrol")})),
    (
        "POST",
        "/tokens/{token_id}/revoke",
        "operator",
        lambda e: (
            f"/tokens/{e.admin.post('/enrollment-tokens', json={}).json()['id']}/revoke",
            {},
        ),
    ),
    # privacy
    (
        "POST",
        "/privacy/export",
        "admin",
        lambda e: ("/privacy/export", {"kind": "device", "subject": e.device()["mac"]}),
    ),
    (
        "POST",
        "/privacy/erase",
        "admin",
        lambda e: (
            lambda mac: ("/privacy/erase", {"kind": "device", "subject": mac, "confirm": mac})
        )(e.device()["mac"]),
    ),
    # admin users
    (
        "POST",
        "/admins",
        "admin",
        lambda e: (
            "/admins",
            {"username": _name("user"), "password": PASSWORD, "role": "read-only"},
        ),
    ),
    (
        "POST",
        "/admins/{user_id}/role",
        "admin",
        lambda e: (f"/admins/{e.user()}/role", {"role": "operator"}),
    ),
    (
        "POST",
        "/admins/{user_id}/state",
        "admin",
        lambda e: (f"/admins/{e.user()}/state", {"action": "disable"}),
    ),
    (
        "POST",
        "/admins/{user_id}/password",
        "admin",
        lambda e: (f"/admins/{e.user()}/password", {"password": "another-password-1"}),
    ),
    # one's own sign-in security
    ("GET", "/security", "read-only", _page("/security")),
    ("GET", "/security/mfa", "read-only", _page("/security/mfa")),
    ("POST", "/security/mfa/start", "read-only", lambda e: ("/security/mfa/start", {})),
    (
        "POST",
        "/security/mfa/confirm",
        "read-only",
        lambda e: ("/security/mfa/confirm", {"code": e.enrolment_code()}),
    ),
    (
        "POST",
        "/security/mfa/recovery-codes",
        "read-only",
        lambda e: e.mfa_on("/security/mfa/recovery-codes", {}),
    ),
    (
        "POST",
        "/security/mfa/disable",
        "read-only",
        lambda e: e.mfa_on("/security/mfa/disable", {"password": PASSWORD}),
    ),
    (
        "POST",
        "/security/sessions/{session_id}/revoke",
        "read-only",
        lambda e: (f"/security/sessions/{e.own_other_session()}/revoke", {}),
    ),
    # one's own API tokens
    ("POST", "/api-tokens", "read-only", lambda e: ("/api-tokens", {"name": _name("mine")})),
    (
        "POST",
        "/api-tokens/{token_id}/revoke",
        "read-only",
        lambda e: (f"/api-tokens/{e.own_api_token()}/revoke", {}),
    ),
    # one's own security keys (after the session cases: a key makes a sign-in ask for it)
    (
        "POST",
        "/security/keys/options",
        "read-only",
        lambda e: ("/security/keys/options", {}),
    ),
    ("POST", "/security/keys", "read-only", lambda e: ("/security/keys", e.security_key())),
    (
        "POST",
        "/security/keys/{key_id}/remove",
        "read-only",
        lambda e: (f"/security/keys/{e.own_security_key()}/remove", {}),
    ),
    ("POST", "/preferences", "read-only", lambda e: ("/preferences", {"time_zone": "UTC"})),
    # Last: a new password ends the caller's session (the landing page is the sign-in page).
    ("POST", "/security/password", "read-only", lambda e: ("/security/password", e.new_password())),
]


def _at_least(role: str, least: str) -> bool:
    return ROLES.index(role) >= ROLES.index(least)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    work = tmp_path_factory.mktemp("web-roles")
    pair = SigningPair.make(work / "keys", "web-roles-signing")
    BUNDLE_MAKER.update(work=work, pair=pair)
    # Security keys are bound to the public address (the software authenticator's origin).
    running = ProvisioningServer(work / "server", env={"OFFHOOK_PUBLIC_URL": PUBLIC_URL})
    # A keyring and one verified release, so the rollout routes have something to roll out.
    (running.data_dir / "firmware-keyring.pem").write_bytes(pair.cert.read_bytes())
    with running:
        for role, name in USERS.items():
            running.admin.post(
                "/users", json={"username": name, "password": PASSWORD, "role": role}
            ).raise_for_status()
        running.admin.post(
            "/firmware",
            content=make_bundle(work, pair, version="0.2.0").read_bytes(),
            headers={"content-type": "application/octet-stream"},
        ).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def browsers(server: ProvisioningServer) -> Iterator[dict[str, Browser]]:
    made = {role: sign_in(server, name) for role, name in USERS.items()}
    yield made
    for browser in made.values():
        browser.client.close()


def _cases() -> Iterator[Any]:
    for method, path, least, make in ROUTES:
        for role in ROLES:
            verdict = "allowed" if _at_least(role, least) else "refused"
            yield pytest.param(method, least, make, role, id=f"{method} {path} {role} {verdict}")


@pytest.mark.parametrize(("method", "least", "make", "role"), list(_cases()))
def test_web_route_allows_exactly_its_roles(
    server: ProvisioningServer,
    browsers: dict[str, Browser],
    method: str,
    least: str,
    make: Make,
    role: str,
) -> None:
    browser = browsers[role]
    path, form = make(Env(server, server.admin, browser))
    if method == "GET":
        reply = browser.client.get(path)
    else:
        files = {name: (name, value) for name, value in form.items() if isinstance(value, bytes)}
        data = {name: value for name, value in form.items() if name not in files}
        reply = browser.client.post(path, data={**data, "csrf_token": browser.csrf},
                                    files=files or None)  # fmt: skip
    if not _at_least(role, least):
        assert reply.status_code == 403, (reply.status_code, reply.text[:300])
        assert f"This needs the {least} role; you are {role}." in reply.text
        return
    assert reply.status_code in (200, 303), (reply.status_code, reply.text[:300])
    if reply.status_code == 303:
        landed = browser.client.get(reply.headers["location"])
        assert landed.status_code == 200
        errors = re.findall(r'<p class="flash error"[^>]*>([^<]*)<', landed.text)
        assert errors == [], errors


def _web_routes(routes: list[Any]) -> Iterator[tuple[str, str]]:
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _web_routes(inner.routes)
        elif hasattr(route, "methods"):
            for method in route.methods:
                yield method, route.path


def test_every_web_route_has_a_case() -> None:
    import offhook.provisioning.web as web

    served = set(_web_routes(web.router.routes)) - PUBLIC
    assert served == {(method, path) for method, path, _least, _make in ROUTES}
