"""Security keys (WebAuthn) as the second factor, in real headless Chromium against the real
server: Chromium's virtual authenticator (DevTools protocol ``WebAuthn`` domain, CTAP2 with
user verification) stands in for the key, py_webauthn on the server checks what it signs.

The browser opens the server as ``http://localhost:PORT``: WebAuthn needs a secure context and
a host name as its relying party ID (an IP address is not one), and Chromium treats localhost
over plain HTTP as secure. The server is told the same address (``OFFHOOK_PUBLIC_URL``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PASSWORD = "security-key-password-1"
# This module's servers listen in the port range set aside for these tests.
PORTS = iter(range(42400, 42410))
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}
# An assertion made in the page without submitting it (static/webauthn.js's own steps), with
# the server's options changed by ``allow`` when it is given (a removed key's id).
ASSERTION_JS = """async ([allow]) => {
  const csrf = document.querySelector("form[data-webauthn] input[name=csrf_token]").value;
  const options = await window.offhookWebauthn.fetchOptions("/login/key/options", csrf);
  if (allow) options.allowCredentials = [{type: "public-key", id: allow}];
  return window.offhookWebauthn.get(options);
}"""
OPTIONS_ONLY_JS = """async () => {
  const csrf = document.querySelector("form[data-webauthn] input[name=csrf_token]").value;
  await window.offhookWebauthn.fetchOptions("/login/key/options", csrf);
}"""


def shot(page: Page, name: str) -> None:
    """With OFFHOOK_WEB_SCREENSHOTS=DIR the page is kept as DIR/name.png (docs/web-ui.md)."""
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    """Admins must have a second factor (a key meets it); a code or key at every sign-in."""
    port = next(PORTS)
    env = {
        "OFFHOOK_MFA_REQUIRED_ROLES": "admin",
        "OFFHOOK_LOGIN_IP_MAX_FAILURES": "50",
        "OFFHOOK_PUBLIC_URL": f"http://localhost:{port}",
    }
    running = ProvisioningServer(tmp_path_factory.mktemp("security-keys"), env=env)
    running.port = port
    with running:
        yield running


def browser_url(server: ProvisioningServer) -> str:
    return f"http://localhost:{server.port}"


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=browser_url(server), viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


class Authenticators:
    """The page's virtual authenticators through the DevTools protocol."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        cdp.send("WebAuthn.enable", {"enableUI": False})

    def add(self, transport: str = "usb") -> str:
        options = {**AUTHENTICATOR, "transport": transport}
        reply = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        return str(reply["authenticatorId"])

    def credentials(self, authenticator: str) -> list[dict[str, Any]]:
        reply = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
        return list(reply["credentials"])

    def remove(self, authenticator: str) -> None:
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator})

    def add_holding(self, credential: dict[str, Any]) -> str:
        """A new authenticator holding a copy of ``credential`` (with its counter then)."""
        authenticator = self.add()
        self.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": credential}
        )
        return authenticator


def authenticators(context: BrowserContext, page: Page) -> Authenticators:
    return Authenticators(context.new_cdp_session(page))


def add_user(server: ProvisioningServer, name: str, role: str) -> None:
    reply = server.admin.post("/users", json={"username": name, "password": PASSWORD, "role": role})
    reply.raise_for_status()


def sign_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Username")).to_be_visible()


def register_key(page: Page, name: str) -> None:
    page.goto("/security/mfa")
    page.get_by_label("Name of the key").fill(name)
    page.get_by_role("button", name="Add a security key").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Security key '{name}' added")
    expect(page.locator("#security-keys")).to_contain_text(name)


def post_assertion(page: Page, credential: str) -> None:
    """Send an assertion to the sign-in's key step as its form would, then show the result."""
    csrf = page.locator("form[data-webauthn] input[name=csrf_token]").input_value()
    reply = page.request.post(
        "/login/key", form={"csrf_token": csrf, "credential": credential}, max_redirects=0
    )
    assert reply.status == 303, reply.status
    page.goto(reply.headers["location"])


def audit_actions(server: ProvisioningServer, username: str) -> list[str]:
    reply = server.admin.get("/audit", params={"per": 200})
    reply.raise_for_status()
    body = reply.json()
    entries = body["entries"] if isinstance(body, dict) else body
    return [e["action"] for e in entries if username in str(e.get("after"))]


def stored_key(server: ProvisioningServer, username: str) -> tuple[int, str]:
    with sqlite3.connect(server.data_dir / "provisioning.db") as con:
        row = con.execute(
            "select sign_count, public_key from admin_security_keys k join admin_users u "
            "on u.id = k.user_id where u.username = ?",
            (username,),
        ).fetchone()
    return int(row[0]), str(row[1])


def test_admin_registers_a_key_then_signs_in_with_it(
    server: ProvisioningServer, context: BrowserContext, page: Page
) -> None:
    add_user(server, "kim", "admin")
    keys = authenticators(context, page)
    keys.add("usb")
    sign_in(page, "kim")
    # The admin role needs a second factor: the key page is where the sign-in lands.
    expect(page).to_have_url(f"{browser_url(server)}/security/mfa")
    register_key(page, "Desk key")
    shot(page, "security-keys")
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")  # a key meets it
    assert "admin_user.security_key_add" in audit_actions(server, "kim")
    count_at_registration, _public_key = stored_key(server, "kim")

    log_out(page)
    sign_in(page, "kim")
    expect(page.get_by_role("heading", level=1)).to_have_text("Second factor")
    expect(page.get_by_label("Code")).to_have_count(0)  # no TOTP: only the key is offered
    shot(page, "login-key")
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_role("status").first).to_contain_text("Signed in as kim")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    count_after, _ = stored_key(server, "kim")
    assert count_after > count_at_registration  # the counter the server keeps moved on

    page.goto("/security")
    expect(page.locator("tr[data-session]").first).to_contain_text("key")
    # The last factor an enforced role has cannot be removed.
    page.goto("/security/mfa")
    page.get_by_role("button", name="Remove Desk key").click()
    expect(page.locator("#key-error")).to_contain_text("requires a second factor")
    expect(page.locator("#security-keys")).to_contain_text("Desk key")
    # The REST API (here by the web session with its CSRF token) lists it and refuses the same.
    (listed,) = page.request.get("/api/v1/admin/me/security-keys").json()
    assert (listed["name"], listed["sign_count"]) == ("Desk key", count_after)
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    refused = page.request.delete(
        f"/api/v1/admin/me/security-keys/{listed['id']}", headers={"X-CSRF-Token": csrf}
    )
    assert refused.status == 409 and "requires a second factor" in refused.text()


def test_a_used_or_foreign_challenge_is_refused(
    server: ProvisioningServer, context: BrowserContext, page: Page
) -> None:
    add_user(server, "rex", "operator")
    keys = authenticators(context, page)
    keys.add("internal")
    sign_in(page, "rex")
    register_key(page, "Laptop passkey")
    log_out(page)

    sign_in(page, "rex")
    answer = page.evaluate(ASSERTION_JS, [None])
    post_assertion(page, answer)
    expect(page.get_by_role("status").first).to_contain_text("Signed in as rex")
    log_out(page)

    # The same answer again: its challenge was used up, none is waiting for this session.
    sign_in(page, "rex")
    post_assertion(page, answer)
    expect(page.locator("#key-error")).to_contain_text("no security-key request is waiting")
    # A new challenge waits now: the old answer signed another one.
    page.evaluate(OPTIONS_ONLY_JS)
    post_assertion(page, answer)
    expect(page.locator("#key-error")).to_contain_text("challenge")
    # A good answer to a challenge that a refused answer used up first: good once means once.
    fresh = page.evaluate(ASSERTION_JS, [None])
    post_assertion(page, '{"rawId": "AAAA"}')
    expect(page.locator("#key-error")).to_contain_text("not registered")
    post_assertion(page, fresh)
    expect(page.locator("#key-error")).to_contain_text("no security-key request is waiting")
    # The key itself still works.
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_role("status").first).to_contain_text("Signed in as rex")


def test_a_removed_key_and_a_cloned_key_are_refused(
    server: ProvisioningServer, context: BrowserContext, page: Page
) -> None:
    add_user(server, "uma", "operator")
    keys = authenticators(context, page)
    first = keys.add()
    sign_in(page, "uma")
    register_key(page, "Old key")
    (old,) = keys.credentials(first)
    keys.remove(first)
    second = keys.add()
    register_key(page, "New key")
    (new,) = keys.credentials(second)
    keys.remove(second)
    page.get_by_role("button", name="Remove Old key").click()
    expect(page.get_by_role("status").first).to_contain_text("Security key 'Old key' removed")
    expect(page.locator("#security-keys")).not_to_contain_text("Old key")
    assert "admin_user.security_key_remove" in audit_actions(server, "uma")
    listed = page.request.get("/api/v1/admin/me/security-keys").json()
    assert [k["name"] for k in listed] == ["New key"]
    log_out(page)

    # The removed key signs the server's challenge properly, and is refused.
    sign_in(page, "uma")
    holder = keys.add_holding(old)
    post_assertion(page, page.evaluate(ASSERTION_JS, [old["credentialId"]]))
    expect(page.locator("#key-error")).to_contain_text("not registered for this account")
    keys.remove(holder)

    # The registered key works once its copy signs in...
    holder = keys.add_holding(new)
    page.get_by_role("button", name="Use a security key").click()
    expect(page.get_by_role("status").first).to_contain_text("Signed in as uma")
    keys.remove(holder)
    log_out(page)
    # ... and a clone taken before that use repeats the counter: refused.
    sign_in(page, "uma")
    keys.add_holding(new)
    page.get_by_role("button", name="Use a security key").click()
    expect(page.locator("#key-error")).to_contain_text("sign count")
