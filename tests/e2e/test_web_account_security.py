"""Admin sign-in security in real headless Chromium against the real server (``offhook
server``): TOTP enrolment and sign-in with codes computed by pyotp, recovery codes, a role that
must have a second factor, sign-ins from a new network (the address comes from
``X-Forwarded-For``, which uvicorn trusts from loopback as it would from a local reverse proxy),
the per-address throttle, the session list and its revocation, password history.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PASSWORD = "account-test-password-1"
# This module's servers listen in the port range set aside for these tests.
PORTS = iter(range(18810, 18830))


def shot(page: Page, name: str) -> None:
    """With OFFHOOK_WEB_SCREENSHOTS=DIR the page is kept as DIR/name.png (docs/web-ui.md)."""
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def _server(directory: Path, env: dict[str, str]) -> ProvisioningServer:
    server = ProvisioningServer(directory, env=env)
    server.port = next(PORTS)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    """Admins must have a second factor; operators and read-only users may choose one. A
    code is asked for at every sign-in of an admin who has one."""
    env = {"OFFHOOK_MFA_REQUIRED_ROLES": "admin", "OFFHOOK_LOGIN_IP_MAX_FAILURES": "50"}
    with _server(tmp_path_factory.mktemp("account-security"), env) as running:
        yield running


def add_user(server: ProvisioningServer, name: str, role: str) -> None:
    reply = server.admin.post("/users", json={"username": name, "password": PASSWORD, "role": role})
    reply.raise_for_status()


def new_context(
    browser: Browser, server: ProvisioningServer, forwarded_for: str = ""
) -> BrowserContext:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    ctx = browser.new_context(
        base_url=server.base_url,
        viewport={"width": 1280, "height": 900},
        extra_http_headers=headers,
    )
    ctx.set_default_timeout(15000)
    return ctx


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    ctx = new_context(browser, server)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def enter_code(page: Page, code: str) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text("Second factor")
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Verify").click()


def fresh_code(secret: str) -> str:
    """A code for a step after any used so far: the server takes each step's code once, and
    the enrolment (or the last sign-in) may have used the current one."""
    totp = pyotp.TOTP(secret)
    return totp.at(time.time() + 30)


def enrol(page: Page) -> tuple[str, list[str]]:
    """Set up TOTP on the Security page: returns the secret and the recovery codes shown."""
    page.goto("/security/mfa")
    page.get_by_role("button", name="Set up a second factor").click()
    expect(page.locator("figure.qr svg")).to_be_visible()
    shot(page, "mfa-enrol")
    secret = page.locator("#mfa-secret").inner_text().strip()
    uri = page.locator("#mfa-uri").inner_text().strip()
    assert uri.startswith("otpauth://totp/offhook:") and f"secret={secret}" in uri
    page.get_by_label("Code from the app").fill(
        "123456" if pyotp.TOTP(secret).now() != "123456" else "654321"
    )
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#mfa-error")).to_contain_text("does not match")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status").first).to_contain_text("Second factor on")
    codes = [c.strip() for c in page.locator("#recovery-codes li").all_inner_texts()]
    assert len(codes) == 10 and all(
        re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", c) for c in codes
    )
    return secret, codes


def audit_actions(server: ProvisioningServer) -> list[dict[str, Any]]:
    reply = server.admin.get("/audit", params={"per": 200})
    reply.raise_for_status()
    body = reply.json()
    return body["entries"] if isinstance(body, dict) else body


def test_totp_enrolment_then_sign_in_asks_for_the_code(
    server: ProvisioningServer, page: Page
) -> None:
    add_user(server, "mia", "operator")
    sign_in(page, "mia")
    expect(page.get_by_role("status").first).to_contain_text("Signed in as mia")
    secret, _codes = enrol(page)

    # The codes are shown once: a reload shows the page without them.
    page.reload()
    expect(page.locator("#recovery-codes")).to_have_count(0)
    expect(page.locator("#mfa-state")).to_contain_text("10 recovery codes left")

    # At rest the secret is an AES-GCM ciphertext of the server's key ring, never the secret.
    with sqlite3.connect(server.data_dir / "provisioning.db") as con:
        (stored,) = con.execute(
            "select secret_enc from admin_mfa join admin_users on admin_users.id = user_id "
            "where username = 'mia'"
        ).fetchone()
        hashes = [r[0] for r in con.execute("select code_hash from admin_recovery_codes")]
    assert stored.startswith("v1:") and secret not in stored
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)

    page.get_by_role("button", name="Log out").click()
    sign_in(page, "mia")
    enter_code(page, "000000" if fresh_code(secret) != "000000" else "111111")
    expect(page.get_by_role("alert")).to_contain_text("not right")
    shot(page, "login-code")
    enter_code(page, fresh_code(secret))
    expect(page.get_by_role("status").first).to_contain_text("Signed in as mia")
    expect(page.get_by_role("link", name="Devices")).to_be_visible()

    actions = [e["action"] for e in audit_actions(server) if "mia" in str(e.get("after"))]
    assert "admin_user.mfa_enable" in actions


def test_recovery_code_works_once(server: ProvisioningServer, browser: Browser) -> None:
    add_user(server, "rob", "read-only")
    ctx = new_context(browser, server)
    try:
        page = ctx.new_page()
        sign_in(page, "rob")
        _secret, codes = enrol(page)
        page.get_by_role("button", name="Log out").click()

        sign_in(page, "rob")
        enter_code(page, codes[0].lower())  # typed in any case
        expect(page.get_by_role("status").first).to_contain_text("Signed in as rob")
        expect(page.get_by_role("status").nth(1)).to_contain_text("Recovery code used: 9 left")
        page.get_by_role("button", name="Log out").click()

        sign_in(page, "rob")
        enter_code(page, codes[0])
        expect(page.get_by_role("alert")).to_contain_text("not right")
    finally:
        ctx.close()


def test_admin_role_is_sent_to_enrol_before_anything_else(
    server: ProvisioningServer, page: Page, context: BrowserContext
) -> None:
    add_user(server, "ada", "admin")
    sign_in(page, "ada")
    expect(page).to_have_url(re.compile(r"/security/mfa$"))
    expect(page.locator("main")).to_contain_text("The admin role requires a second factor")
    page.goto("/devices")
    expect(page).to_have_url(re.compile(r"/security/mfa$"))
    # The REST API does not take this session either, before the second factor is set up...
    assert context.request.get("/api/v1/admin/devices").status == 401
    # ... while API tokens are no sign-ins and keep working.
    assert server.admin.get("/devices").status_code == 200

    secret, _codes = enrol(page)
    expect(page.locator("main")).not_to_contain_text("Turn off the second factor")
    page.goto("/devices")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Devices")
    assert context.request.get("/api/v1/admin/devices").status == 200
    page.goto("/privacy")
    expect(page.locator("#data-classes")).to_contain_text("OFFHOOK_RETENTION_CDR_DAYS")
    shot(page, "privacy")

    # Turning it off is refused for a role that requires it (a hand-made POST too).
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    page.request.post(
        "/security/mfa/disable", form={"csrf_token": token or "", "password": PASSWORD}
    )
    page.goto("/security/mfa")
    expect(page.locator("#mfa-state")).to_contain_text("on")

    page.get_by_role("button", name="Log out").click()
    sign_in(page, "ada")
    enter_code(page, fresh_code(secret))
    expect(page).to_have_url(re.compile(r"/$"))


def test_sign_in_from_a_new_network_is_recorded_and_shown(
    server: ProvisioningServer, browser: Browser
) -> None:
    add_user(server, "nina", "operator")
    home = new_context(browser, server, forwarded_for="192.0.2.10")
    away = new_context(browser, server, forwarded_for="198.51.100.23")
    try:
        page = home.new_page()
        sign_in(page, "nina")
        expect(page.get_by_role("status").nth(1)).to_contain_text(
            "First sign-in from network 192.0.2.0/24"
        )
        page.get_by_role("button", name="Log out").click()
        sign_in(page, "nina")  # the same network again: not flagged
        expect(page.get_by_role("status")).to_have_count(1)

        other = away.new_page()
        sign_in(other, "nina")
        expect(other.get_by_role("status").nth(1)).to_contain_text(
            "198.51.100.0/24 (198.51.100.23)"
        )
        other.goto("/security")
        networks = other.locator("#networks")
        expect(networks).to_contain_text("192.0.2.0/24")
        expect(networks).to_contain_text("198.51.100.0/24")
        entries = [e for e in audit_actions(server) if e["action"] == "admin_user.new_network"]
        assert {"192.0.2.0/24", "198.51.100.0/24"} <= {
            e["after"]["network"] for e in entries if e["after"]["username"] == "nina"
        }
    finally:
        home.close()
        away.close()


def test_new_network_asks_for_the_code_when_configured(tmp_path: Path, browser: Browser) -> None:
    env = {"OFFHOOK_MFA_PROMPT": "new-network"}
    with _server(tmp_path, env) as server:
        add_user(server, "nora", "operator")
        home = new_context(browser, server, forwarded_for="192.0.2.10")
        away = new_context(browser, server, forwarded_for="203.0.113.9")
        try:
            page = home.new_page()
            sign_in(page, "nora")
            secret, _codes = enrol(page)
            page.get_by_role("button", name="Log out").click()
            sign_in(page, "nora")  # a known network: no code
            expect(page.get_by_role("status").first).to_contain_text("Signed in as nora")

            other = away.new_page()
            sign_in(other, "nora")  # a network never seen for nora: the code is needed
            enter_code(other, fresh_code(secret))
            expect(other.get_by_role("status").first).to_contain_text("Signed in as nora")
        finally:
            home.close()
            away.close()


def test_failures_from_one_address_across_accounts_are_throttled(
    tmp_path: Path, browser: Browser
) -> None:
    env = {"OFFHOOK_LOGIN_IP_MAX_FAILURES": "4", "OFFHOOK_LOGIN_IP_WINDOW_MINUTES": "10"}
    with _server(tmp_path, env) as server:
        add_user(server, "tom", "operator")
        attacker = new_context(browser, server, forwarded_for="203.0.113.66")
        neighbour = new_context(browser, server, forwarded_for="203.0.113.67")
        try:
            page = attacker.new_page()
            for name in ("tom", "root", "admin", "tom"):
                sign_in(page, name, "wrong-password-123")
                expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
            # The right password of a real account is refused too, with a clear 429.
            page.goto("/login")
            page.get_by_label("Username").fill("tom")
            page.get_by_label("Password").fill(PASSWORD)
            with page.expect_response(lambda r: r.request.method == "POST") as answer:
                page.get_by_role("button", name="Sign in").click()
            assert answer.value.status == 429
            assert 1 <= int(answer.value.headers["retry-after"]) <= 600
            expect(page.get_by_role("alert")).to_contain_text(
                "Too many failed sign-ins from your address (4 in 10 minutes). Try again in"
            )
            # Another address is not held up.
            other = neighbour.new_page()
            sign_in(other, "tom")
            expect(other.get_by_role("status").first).to_contain_text("Signed in as tom")
        finally:
            attacker.close()
            neighbour.close()


def test_sessions_listed_and_one_ended_from_another(
    server: ProvisioningServer, browser: Browser
) -> None:
    add_user(server, "sam", "read-only")
    laptop = new_context(browser, server)
    desk = new_context(browser, server)
    try:
        first = laptop.new_page()
        sign_in(first, "sam")
        second = desk.new_page()
        sign_in(second, "sam")
        second.goto("/security")
        rows = second.locator("#sessions tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.filter(has_text="this session")).to_have_count(1)
        shot(second, "security")
        rows.filter(has_not_text="this session").get_by_role("button", name="End session").click()
        expect(second.get_by_role("status").first).to_contain_text("ended")
        expect(second.locator("#sessions tbody tr")).to_have_count(1)

        first.goto("/devices")
        expect(first).to_have_url(re.compile(r"/login"))
        assert any(e["action"] == "admin_session.revoke" for e in audit_actions(server))
    finally:
        laptop.close()
        desk.close()


def test_password_change_refuses_recent_passwords(server: ProvisioningServer, page: Page) -> None:
    add_user(server, "pat", "operator")
    sign_in(page, "pat")

    def change(current: str, new: str) -> None:
        page.goto("/security")
        page.get_by_label("Current password").fill(current)
        page.get_by_label("New password", exact=True).fill(new)
        page.get_by_label("New password again").fill(new)
        page.get_by_role("button", name="Change password").click()

    change(PASSWORD, PASSWORD)
    expect(page.locator("#security-error")).to_contain_text("used recently")
    change(PASSWORD, "second-password-22")
    expect(page.get_by_role("status").first).to_contain_text("Password changed")
    sign_in(page, "pat", "second-password-22")
    change("second-password-22", PASSWORD)  # the one before: still in the history
    expect(page.locator("#security-error")).to_contain_text("not among the last 5")
    change("wrong-current-pw", "third-password-333")
    expect(page.locator("#security-error")).to_contain_text("current password is wrong")
