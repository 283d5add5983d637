"""The admin web UI in real headless Chromium against the real server (``offhook server``).

One server (SQLite) for the module; every test gets a fresh browser context (its own cookies).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import socket
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD = "web-test-password-1"
SCREENSHOT = Path("/tmp/offhook-web-devices.png")


def _random_mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    with ProvisioningServer(tmp_path_factory.mktemp("web-server")) as running:
        for name, role in (("alice", "admin"), ("olga", "operator"), ("rita", "read-only")):
            reply = running.admin.post(
                "/users", json={"username": name, "password": PASSWORD, "role": role}
            )
            reply.raise_for_status()
        yield running


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def login(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def pending_device(server: ProvisioningServer) -> str:
    """A phone that enrols with a valid token but was not pre-registered: waits for approval."""
    mac = _random_mac()
    reply = server.enroll_request(mac, server.enrollment_token())
    assert reply.status_code == 202, reply.text
    return mac


def device_by_mac(server: ProvisioningServer, mac: str) -> dict[str, Any]:
    reply = server.admin.get(f"/devices/{mac}")
    reply.raise_for_status()
    return reply.json()


def audit_entries(server: ProvisioningServer) -> list[dict[str, Any]]:
    reply = server.admin.get("/audit")
    reply.raise_for_status()
    body = reply.json()
    return body["entries"] if isinstance(body, dict) else body


# --- the main flow --------------------------------------------------------------------------------


def test_admin_approves_device_changes_group_setting_and_sees_audit(
    server: ProvisioningServer, page: Page
) -> None:
    mac = pending_device(server)
    login(page, "alice")
    expect(page.get_by_role("status").first).to_contain_text("Signed in as alice")
    expect(page.locator("#count-pending")).not_to_have_text("0")

    page.get_by_role("link", name="Approvals").click()
    row = page.locator(f'#pending tr[data-mac="{mac}"]')
    expect(row).to_be_visible()
    row.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").first).to_contain_text("approved")
    expect(page.locator(f'#pending tr[data-mac="{mac}"]')).to_have_count(0)
    device = device_by_mac(server, mac)
    assert device["status"] == "approved"

    # A site with the UK tone plan; a wrong value is refused inline and nothing is stored.
    page.get_by_role("link", name="Groups").click()
    page.get_by_label("Name").fill("London office")
    page.get_by_label("Kind").select_option("site")
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Site London office")
    page.get_by_label("Setting").fill("audio.tone_plan")
    page.get_by_label("Value").fill("klingon")
    page.get_by_role("button", name="Set", exact=True).click()
    error = page.locator("#setting-error")
    expect(error).to_contain_text("audio.tone_plan")
    expect(page.get_by_label("Value")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#group-settings")).not_to_contain_text("klingon")

    page.get_by_label("Setting").fill("audio.tone_plan")
    page.get_by_label("Value").fill("uk")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("audio.tone_plan set")
    expect(page.locator("#group-settings")).to_contain_text('"uk"')
    group_id = re.search(r"/groups/(\d+)", page.url).group(1)  # type: ignore[union-attr]

    # Put the device in the site: its effective setting is now inherited from the site.
    page.goto(f"/devices/{device['id']}")
    page.get_by_label("Group").select_option(label="London office")
    page.get_by_role("button", name="Move").click()
    expect(page.get_by_role("status").first).to_contain_text("Group changed")
    tone_row = page.locator("#effective-settings tr", has_text="audio.tone_plan")
    expect(tone_row).to_contain_text('"uk"')
    expect(tone_row).to_contain_text("site London office")

    # The phone's rendered config carries it.
    config = server.admin.get(f"/devices/{device['id']}/config")
    config.raise_for_status()
    assert config.json()["audio"]["tone_plan"] == "uk"

    # The audit log shows who changed what, with before and after.
    page.get_by_role("link", name="Audit log").click()
    entry = page.locator('#audit tr[data-action="settings.group"]').first
    expect(entry.locator(".actor")).to_contain_text("admin:alice")
    change = entry.locator(".changes div", has_text="audio.tone_plan")
    expect(change.locator(".before")).to_have_text("(unset)")
    expect(change.locator(".after")).to_have_text('"uk"')
    approve = page.locator('#audit tr[data-action="device.approve"]').first
    expect(approve.locator(".actor")).to_contain_text("admin:alice")
    status_change = approve.locator(".changes div", has_text="status")
    expect(status_change.locator(".before")).to_have_text('"pending"')
    expect(status_change.locator(".after")).to_have_text('"approved"')

    # The same entries through the REST API: the UI used the audited service functions.
    mine = [e for e in audit_entries(server) if e["actor"] == "admin:alice"]
    settings_entry = next(e for e in mine if e["action"] == "settings.group")
    assert str(settings_entry["target_id"]) == group_id
    assert settings_entry["after"] == {"audio": {"tone_plan": "uk"}}
    assert settings_entry["before"] == {}


# --- login security -------------------------------------------------------------------------------


def test_repeated_wrong_passwords_lock_the_account(server: ProvisioningServer, page: Page) -> None:
    name = "lock-" + secrets.token_hex(3)
    server.admin.post(
        "/users", json={"username": name, "password": PASSWORD, "role": "operator"}
    ).raise_for_status()
    for _ in range(4):
        login(page, name, "not-the-password")
        expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    login(page, name, "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("locked")
    # Even the right password is refused while the lock lasts.
    login(page, name, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("locked")
    page.goto("/devices")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fdevices$"))

    # Every attempt is in the security log, visible to an admin.
    page.context.clear_cookies()
    login(page, "alice")
    page.goto("/admins")
    expect(page.locator(f'#admins tr[data-user="{name}"]')).to_contain_text("locked until")
    attempts = page.locator("#login-attempts tr", has_text=name)
    expect(attempts).to_have_count(6)
    expect(attempts.filter(has_text="bad_password_locked")).to_have_count(1)
    expect(attempts.filter(has_text="locked")).to_have_count(2)


def test_session_cookie_flags_and_logout(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    cookie = next(c for c in page.context.cookies() if c["name"] == "offhook_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain-HTTP test server; HTTPS sets Secure
    # Not readable from page scripts.
    assert "offhook_session" not in page.evaluate("document.cookie")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/approvals")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fapprovals$"))

    # Logout is server-side: the cookie copied before it no longer works anywhere.
    browser = page.context.browser
    assert browser is not None
    copy = browser.new_context(base_url=server.base_url)
    try:
        copy.add_cookies([cookie])
        stolen = copy.new_page()
        stolen.goto("/approvals")
        expect(stolen).to_have_url(re.compile(r"/login\?next=%2Fapprovals$"))
        assert copy.request.get("/api/v1/admin/me").status == 401
    finally:
        copy.close()


# --- roles ----------------------------------------------------------------------------------------


def _form_token(page: Page) -> str:
    value = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert value
    return value


def test_read_only_user_sees_but_cannot_approve(server: ProvisioningServer, page: Page) -> None:
    mac = pending_device(server)
    device_id = device_by_mac(server, mac)["id"]
    login(page, "rita")
    expect(page.get_by_role("link", name="Admins")).to_have_count(0)
    page.get_by_role("link", name="Approvals").click()
    row = page.locator(f'#pending tr[data-mac="{mac}"]')
    expect(row).to_be_visible()
    expect(row.get_by_role("button", name="Approve")).to_be_disabled()

    # A hand-made POST with a valid CSRF token is still refused by the role check.
    reply = page.request.post(
        f"/devices/{device_id}/status",
        form={"action": "approve", "csrf_token": _form_token(page)},
        max_redirects=0,
    )
    assert reply.status == 403
    assert "operator" in reply.text()
    assert device_by_mac(server, mac)["status"] == "pending"
    page.goto("/admins")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")


def test_operator_can_approve_but_not_manage_admins(server: ProvisioningServer, page: Page) -> None:
    mac = pending_device(server)
    login(page, "olga")
    page.goto("/approvals")
    page.locator(f'#pending tr[data-mac="{mac}"]').get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status").first).to_contain_text("rejected")
    assert device_by_mac(server, mac)["status"] == "rejected"
    entry = next(e for e in audit_entries(server) if e["action"] == "device.reject")
    assert entry["actor"] == "admin:olga"

    # Approve straight into a group.
    group = server.admin.post("/groups", json={"name": "Depot " + secrets.token_hex(2)}).json()
    other = pending_device(server)
    page.goto("/approvals")
    row = page.locator(f'#pending tr[data-mac="{other}"]')
    row.get_by_label(f"Group for {other}").select_option(label=group["name"])
    row.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").first).to_contain_text(f"approved into {group['name']}")
    approved = device_by_mac(server, other)
    assert (approved["status"], approved["group_id"]) == ("approved", group["id"])
    page.goto("/admins")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")


# --- CSRF -----------------------------------------------------------------------------------------


def test_post_without_or_with_foreign_csrf_token_is_refused(
    server: ProvisioningServer, browser: Browser, page: Page
) -> None:
    mac = pending_device(server)
    device_id = device_by_mac(server, mac)["id"]
    login(page, "alice")
    page.goto("/approvals")
    target = f"/devices/{device_id}/status"

    missing = page.request.post(target, form={"action": "approve"}, max_redirects=0)
    assert missing.status == 403
    forged = page.request.post(
        target, form={"action": "approve", "csrf_token": "x" * 43}, max_redirects=0
    )
    assert forged.status == 403

    # A token from another session (another browser) does not work in this one.
    other = browser.new_context(base_url=server.base_url)
    try:
        other_page = other.new_page()
        login(other_page, "olga")
        foreign = _form_token(other_page)
    finally:
        other.close()
    stolen = page.request.post(
        target, form={"action": "approve", "csrf_token": foreign}, max_redirects=0
    )
    assert stolen.status == 403
    assert device_by_mac(server, mac)["status"] == "pending"

    # The page's own token works: the refusals above were about the token alone.
    ok = page.request.post(
        target, form={"action": "approve", "csrf_token": _form_token(page)}, max_redirects=0
    )
    assert ok.status == 303
    assert device_by_mac(server, mac)["status"] == "approved"

    # Logging in needs a token too (no login CSRF).
    fresh = page.request.post(
        "/login", form={"username": "alice", "password": PASSWORD}, max_redirects=0
    )
    assert fresh.status == 403


# --- devices page: live status, calls, quality ----------------------------------------------------


def _status(cred: Any, ip: str, registered: bool, revision: int, contact: str = "") -> None:
    body = {
        "id": uuid.uuid4().hex,
        "time": datetime.now(UTC).isoformat(),
        "firmware_version": "0.1.0",
        "ip": ip,
        "uptime_s": 120,
        "config_revision": revision,
        "sip_contact": contact,
        "lines": [{"account": 0, "user": "1001", "registered": registered, "status": 200}],
    }
    with cred.client() as client:
        client.post("/api/v1/device/status", json=body).raise_for_status()


def _calls(cred: Any, mos_values: list[float]) -> None:
    now = time.time()
    cdrs, quality = [], []
    for i, mos in enumerate(mos_values):
        call_id = uuid.uuid4().hex
        cdrs.append(
            {
                "id": call_id,
                "direction": "outgoing",
                "account": 0,
                "local_uri": "sip:1001@pbx.example",
                "remote_uri": f"sip:20{i}@pbx.example",
                "remote_name": "",
                "start": now - 600 + i * 60,
                "answer": now - 595 + i * 60,
                "end": now - 555 + i * 60,
                "disposition": "answered",
                "status_code": 200,
            }
        )
        quality.append(
            {
                "id": uuid.uuid4().hex,
                "call_record_id": call_id,
                "time": datetime.now(UTC).isoformat(),
                "codec": "G722",
                "jitter_ms": 30.0 - mos * 5,
                "loss_pct": 5.0 - mos,
                "rtt_ms": 40,
                "mos": mos,
            }
        )
    with cred.client() as client:
        client.post("/api/v1/device/cdrs", json={"records": cdrs}).raise_for_status()
        client.post("/api/v1/device/quality", json={"records": quality}).raise_for_status()


def test_devices_page_shows_live_status_and_refreshes(
    server: ProvisioningServer, page: Page
) -> None:
    mac = _random_mac()
    cred = server.enroll(mac, name="Reception desk")
    revision = device_by_mac(server, mac)["revision"]
    _status(cred, "192.0.2.41", registered=False, revision=revision)
    _calls(cred, [4.3, 2.1, 3.8])

    page.clock.install()
    login(page, "rita")
    down_before = int(page.locator("#health-down").inner_text())
    ok_before = int(page.locator("#health-ok").inner_text())
    assert down_before >= 1
    page.goto("/devices")
    row = page.locator(f'#devices tr[data-device="{cred.device_id}"]')
    expect(row).to_contain_text("Reception desk")
    expect(row).to_contain_text("1001 unregistered")
    expect(row).to_contain_text("192.0.2.41")
    expect(row).to_contain_text("0.1.0")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The phone registers; the open page picks it up on its next refresh, without a reload.
    _status(cred, "192.0.2.42", registered=True, revision=revision)
    expect(row).to_contain_text("1001 unregistered")
    page.clock.fast_forward(11000)
    expect(row).to_contain_text("1001 registered")
    expect(row).to_contain_text("192.0.2.42")
    expect(page.locator("#live-note")).to_contain_text("Updated")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#health-down")).to_have_text(str(down_before - 1))
    expect(page.locator("#health-ok")).to_have_text(str(ok_before + 1))

    # Worst call first on the quality page; the CDR filter narrows by remote number.
    page.get_by_role("link", name="Quality").click()
    mos = page.locator("table.quality tbody tr td:nth-child(4)").all_inner_texts()
    values = [float(v) for v in mos]
    assert values == sorted(values)
    assert values[0] == pytest.approx(2.1)
    page.get_by_role("link", name="Calls").click()
    page.get_by_label("Extension").fill("201")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.cdrs tbody tr")).to_have_count(1)
    expect(page.locator("table.cdrs tbody tr")).to_contain_text("sip:201@pbx.example")


# --- privacy --------------------------------------------------------------------------------------


def test_privacy_export_and_erase_are_audited(server: ProvisioningServer, page: Page) -> None:
    mac = _random_mac()
    cred = server.enroll(mac, name="To be erased")
    _calls(cred, [4.0])
    login(page, "alice")
    page.goto("/privacy")
    export_form = page.locator('form[action="/privacy/export"]')
    export_form.get_by_label("Device id / MAC or extension").fill(mac)
    # The page describes each class of data from the running configuration.
    cdr_class = page.locator('#data-classes tr[data-class="cdr"]')
    expect(cdr_class).to_contain_text("call_records")
    expect(cdr_class).to_contain_text("180 days (OFFHOOK_RETENTION_CDR_DAYS)")
    expect(cdr_class).to_contain_text("read-only, operator, admin; export and erase: admin")
    with page.expect_download() as download_info:
        export_form.get_by_role("button", name="Download").click()
    assert download_info.value.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(download_info.value.path()) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        device_rows = json.loads(archive.read("device.json"))
        calls_csv = archive.read("call_records.csv").decode()
    assert {"device.json", "device.csv", "call_records.json", "call_records.csv"} <= names
    assert manifest["tables"]["call_records"] == 1
    assert device_rows[0]["id"] == cred.device_id and "secret_enc" not in device_rows[0]
    assert "sip:200@pbx.example" in calls_csv

    erase_form = page.locator('form[action="/privacy/erase"]')
    erase_form.get_by_label("Device id / MAC or extension").fill(mac)
    erase_form.get_by_label("Type it again to confirm").fill(mac)
    erase_form.get_by_role("button", name="Erase permanently").click()
    expect(page.get_by_role("status").first).to_contain_text("Erased device")
    erased = page.locator("#erased")
    expect(erased.locator("tr", has_text="call_records")).to_contain_text("1")
    expect(erased.locator("tr", has_text="devices")).to_contain_text("1")
    page.reload()  # shown once
    expect(page.locator("#erased")).to_have_count(0)
    assert server.admin.get(f"/devices/{mac}").status_code == 404

    page.goto("/cdrs?extension=201")  # reading call records is audited
    actions = [(e["action"], e["actor"]) for e in audit_entries(server)]
    assert ("privacy.export", "admin:alice") in actions
    assert ("privacy.erase", "admin:alice") in actions
    reads = [e for e in audit_entries(server) if e["action"] == "cdr.read"]
    assert reads[0]["actor"] == "admin:alice" and reads[0]["after"]["extension"] == "201"


def test_operator_adds_a_line_and_its_password_stays_out_of_the_audit_log(
    server: ProvisioningServer, page: Page
) -> None:
    mac = _random_mac()
    device_id = server.add_device(mac, name="Warehouse")["id"]
    login(page, "olga")
    page.goto(f"/devices/{device_id}")
    form = page.locator(f'form[action="/devices/{device_id}/lines"]')
    form.get_by_label("Extension").fill("2001")
    form.get_by_label("Registrar").fill("pbx.example:99999")
    form.get_by_role("button", name="Add line").click()
    expect(page.get_by_role("alert").first).to_contain_text("port 99999 out of range")
    expect(page.locator("#device-lines")).to_have_count(0)

    form.get_by_label("Extension").fill("2001")
    form.get_by_label("Registrar").fill("pbx.example:5060")
    form.get_by_label("SIP password").fill("line-secret-2001")
    form.get_by_label("Transport").select_option("tcp")
    form.get_by_role("button", name="Add line").click()
    expect(page.get_by_role("status").first).to_contain_text("Line 2001 added")
    expect(page.locator("#device-lines")).to_contain_text("pbx.example:5060")
    page.get_by_text("Rendered config").click()
    preview = page.locator("#rendered-config pre")
    expect(preview).to_contain_text('"user": "2001"')
    expect(preview).to_contain_text('"password": "***"')

    page.goto("/audit?action=line.create")
    entry = page.locator('#audit tr[data-action="line.create"]').first
    expect(entry.locator(".actor")).to_contain_text("admin:olga")
    expect(entry).to_contain_text('"2001"')
    expect(entry).to_contain_text('"***"')
    assert "line-secret-2001" not in page.content()
    config = server.admin.get(f"/devices/{device_id}/config").json()
    assert config["accounts"][0]["user"] == "2001"
    assert config["accounts"][0]["transport"] == "tcp"


def test_operator_edits_a_line_and_admin_deletes_the_device(
    server: ProvisioningServer, page: Page
) -> None:
    mac = _random_mac()
    phone = server.enroll(mac, name="Loading bay")
    device_id = phone.device_id

    def phone_account() -> dict[str, Any]:
        """What the phone itself receives (the admin API masks passwords)."""
        with phone.client() as client:
            reply = client.get("/api/v1/device/config")
            reply.raise_for_status()
            return reply.json()["accounts"][0]

    line = server.admin.post(
        f"/devices/{device_id}/lines",
        json={"extension": "3001", "registrar": "pbx.example", "password": "old-secret-3001"},
    )
    line.raise_for_status()
    login(page, "olga")
    page.goto(f"/devices/{device_id}")
    edit = page.locator("#device-lines details.line-edit").first
    edit.get_by_text("Edit").click()
    password = edit.get_by_label("New SIP password")
    expect(password).to_have_attribute("type", "password")
    expect(password).to_have_value("")  # the stored password never reaches the browser
    assert "old-secret-3001" not in page.content()
    edit.get_by_label("Extension").fill("3002")
    edit.get_by_label("Display name").fill("Bay 2")
    edit.get_by_label("Registrar").fill("pbx2.example:5070")
    edit.get_by_role("button", name="Save line").click()
    expect(page.get_by_role("status").first).to_contain_text("Line 3002 saved")
    expect(page.locator("#device-lines")).to_contain_text("Bay 2")
    account = phone_account()
    assert (account["user"], account["domain"]) == ("3002", "pbx2.example:5070")
    assert account["password"] == "old-secret-3001"  # left empty: unchanged

    edit = page.locator("#device-lines details.line-edit").first
    edit.get_by_text("Edit").click()
    edit.get_by_label("New SIP password").fill("new-secret-3002")
    edit.get_by_role("button", name="Save line").click()
    expect(page.get_by_role("status").first).to_contain_text("Line 3002 saved")
    assert phone_account()["password"] == "new-secret-3002"
    update = next(e for e in audit_entries(server) if e["action"] == "line.update")
    assert update["actor"] == "admin:olga"
    assert "new-secret-3002" not in str(update) and "old-secret-3001" not in str(update)

    # Deleting needs an admin: the operator sees no form and a hand-made POST is refused.
    expect(page.locator("#delete-device")).to_have_count(0)
    refused = page.request.post(
        f"/devices/{device_id}/delete",
        form={"confirm": mac, "csrf_token": _form_token(page)},
        max_redirects=0,
    )
    assert refused.status == 403
    page.get_by_role("button", name="Log out").click()

    login(page, "alice")
    page.goto(f"/devices/{device_id}")
    delete = page.locator("#delete-device")
    delete.get_by_label("Type the MAC to confirm").fill("b8:27:eb:00:00:00")
    delete.get_by_role("button", name="Delete device").click()
    expect(page.locator("#delete-error")).to_contain_text(mac)
    assert device_by_mac(server, mac)["id"] == device_id
    delete = page.locator("#delete-device")
    delete.get_by_label("Type the MAC to confirm").fill(mac)
    delete.get_by_role("button", name="Delete device").click()
    expect(page).to_have_url(re.compile(r"/devices$"))
    expect(page.get_by_role("status").first).to_contain_text("Loading bay deleted")
    assert server.admin.get(f"/devices/{mac}").status_code == 404
    gone = next(e for e in audit_entries(server) if e["action"] == "device.delete")
    assert (gone["actor"], gone["target_id"]) == ("admin:alice", device_id)


def test_operator_pre_registers_and_imports_devices(
    server: ProvisioningServer, page: Page, tmp_path: Path
) -> None:
    login(page, "olga")
    page.goto("/devices")
    single = _random_mac()
    add = page.locator("#add-device")
    add.get_by_label("MAC").fill(single.upper().replace(":", "-"))
    add.get_by_label("Name").fill("Front door")
    add.get_by_role("button", name="Add device").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Device {single} pre-registered")
    assert device_by_mac(server, single)["status"] == "approved"

    first, second = _random_mac(), _random_mac()
    csv_path = tmp_path / "phones.csv"
    csv_path.write_text(f"mac,name\n{first},Lab 1\nnot-a-mac,Broken\n{second},Lab 2\n")
    page.goto("/devices")
    page.get_by_text("Import many from CSV").click()
    page.get_by_label("CSV file").set_input_files(str(csv_path))
    page.get_by_role("button", name="Import").click()
    # All or nothing: the bad line is named and the good ones wait for a corrected file.
    expect(page.get_by_role("alert").first).to_contain_text("nothing imported")
    expect(page.get_by_role("alert").first).to_contain_text("line 3")
    assert server.admin.get(f"/devices/{first}").status_code == 404
    csv_path.write_text(f"mac,name\n{first},Lab 1\n{second},Lab 2\n")
    page.goto("/devices")
    page.get_by_text("Import many from CSV").click()
    page.get_by_label("CSV file").set_input_files(str(csv_path))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("status").first).to_contain_text("2 new, 0 updated")
    assert device_by_mac(server, first)["name"] == "Lab 1"
    assert device_by_mac(server, second)["name"] == "Lab 2"

    page.goto(f"/devices/{device_by_mac(server, first)['id']}")
    page.get_by_label("Name", exact=True).fill("Lab bench 1")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("status").first).to_contain_text("Name saved")
    assert device_by_mac(server, first)["name"] == "Lab bench 1"


def test_fleet_defaults_are_admin_only(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    page.goto("/fleet")
    expect(page.locator('form[action="/fleet/settings"]')).to_have_count(0)
    refused = page.request.post(
        "/fleet/settings",
        form={"key": "features.dnd", "value": "true", "csrf_token": _form_token(page)},
        max_redirects=0,
    )
    assert refused.status == 403

    page.context.clear_cookies()
    login(page, "alice")
    page.goto("/fleet")
    page.get_by_label("Setting").fill("features.dnd")
    page.get_by_label("Value").fill("maybe")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.locator("#setting-error")).to_contain_text("features.dnd")
    page.get_by_label("Setting").fill("features.dnd")
    page.get_by_label("Value").fill("true")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("features.dnd set fleet-wide")
    expect(page.locator("#fleet-settings")).to_contain_text("true")
    page.locator("#fleet-settings").get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status").first).to_contain_text("back to the built-in default")
    actions = [e["action"] for e in audit_entries(server) if e["actor"] == "admin:alice"]
    assert actions.count("settings.fleet") == 2


def test_enrollment_token_is_shown_once_works_and_can_be_revoked(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "olga")
    page.goto("/tokens")
    name = "Rollout " + secrets.token_hex(2)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Uses").fill("5")
    page.get_by_role("button", name="Create token").click()
    # Post/Redirect/Get: the browser lands on GET /tokens, the token shown once.
    expect(page).to_have_url(re.compile(r"/tokens$"))
    plain = page.locator("#new-token").inner_text().strip()
    assert len(plain) >= 24
    # Reloading neither creates a second token nor shows this one again.
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)
    assert plain not in page.content()
    expect(page.locator("#tokens tbody tr", has_text=name)).to_have_count(1)
    created = [
        e
        for e in audit_entries(server)
        if e["action"] == "enrollment_token.create" and (e["after"] or {}).get("name") == name
    ]
    assert len(created) == 1

    # A refused form also redirects: the error shows once, with what was typed.
    page.get_by_label("Name").fill(name + " bad")
    page.get_by_label("Valid for (days)").fill("9999")
    page.get_by_role("button", name="Create token").click()
    expect(page).to_have_url(re.compile(r"/tokens$"))
    expect(page.locator(".field-error")).to_contain_text("1-365")
    expect(page.get_by_label("Valid for (days)")).to_have_value("9999")
    page.reload()
    expect(page.locator(".field-error")).to_have_count(0)

    mac = _random_mac()
    server.add_device(mac)
    assert server.enroll_request(mac, plain).status_code == 200
    page.reload()
    row = page.locator("#tokens tbody tr", has_text=name)
    expect(row).to_contain_text("1 / 5")
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status").first).to_contain_text("Token revoked")
    expect(page.locator("#tokens tbody tr", has_text=name)).to_contain_text("revoked")
    refused = server.enroll_request(_random_mac(), plain)
    assert refused.status_code == 403
    assert refused.json()["code"] == "bad_token"


def test_template_attached_to_a_group_reaches_its_devices(
    server: ProvisioningServer, page: Page
) -> None:
    suffix = secrets.token_hex(2)
    group = server.admin.post("/groups", json={"name": f"Sales {suffix}"}).json()
    device_id = server.add_device(_random_mac(), group=group["id"])["id"]
    login(page, "olga")
    page.goto("/templates")
    page.get_by_label("Name").fill(f"quiet {suffix}")
    page.get_by_label("Settings (JSON)").fill('{"audio": {"ring_volume": 30,}}')
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid JSON")
    page.get_by_label("Settings (JSON)").fill('{"audio": {"ring_volume": 300}}')
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("alert")).to_contain_text("audio.ring_volume")
    page.get_by_label("Settings (JSON)").fill('{"audio": {"ring_volume": 30}}')
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Template quiet {suffix}")

    page.goto(f"/groups/{group['id']}")
    page.get_by_label("Template").select_option(label=f"quiet {suffix}")
    page.get_by_role("button", name="Attach").click()
    expect(page.get_by_role("status").first).to_contain_text("Template attached")
    page.goto(f"/devices/{device_id}")
    volume = page.locator("#effective-settings tr", has_text="audio.ring_volume")
    expect(volume).to_contain_text("30")
    expect(volume).to_contain_text(f"template quiet {suffix}")
    config = server.admin.get(f"/devices/{device_id}/config").json()
    assert config["audio"]["ring_volume"] == 30

    # Move the group under a region; the region cannot then move under its own child.
    region = server.admin.post("/groups", json={"name": f"Region {suffix}", "kind": "site"}).json()
    page.goto(f"/groups/{group['id']}")
    page.get_by_text("Rename or move").click()
    page.get_by_label("Group name").fill(f"Sales {suffix} north")
    page.get_by_label("Inside").select_option(label=region["name"])
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Group Sales {suffix} north")
    page.goto(f"/groups/{region['id']}")
    page.get_by_text("Rename or move").click()
    page.get_by_label("Inside").select_option(label=f"Sales {suffix} north")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert").first).to_contain_text("cannot be nested inside itself")


def test_admin_password_reset_ends_the_users_open_session(
    server: ProvisioningServer, browser: Browser, page: Page
) -> None:
    name = "temp-" + secrets.token_hex(3)
    server.admin.post(
        "/users", json={"username": name, "password": PASSWORD, "role": "read-only"}
    ).raise_for_status()
    theirs = browser.new_context(base_url=server.base_url)
    try:
        their_page = theirs.new_page()
        login(their_page, name)
        expect(their_page.get_by_role("heading", level=1)).to_have_text("Dashboard")

        login(page, "alice")
        page.goto("/admins")
        row = page.locator(f'#admins tr[data-user="{name}"]')
        row.get_by_text("New password").click()
        row.get_by_label(f"New password for {name}").fill("a-new-password-123")
        row.get_by_role("button", name="Set password").click()
        expect(page.get_by_role("status").first).to_contain_text(f"New password set for {name}")

        their_page.goto("/devices")
        expect(their_page).to_have_url(re.compile(r"/login\?next=%2Fdevices$"))
        login(their_page, name, "a-new-password-123")
        expect(their_page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    finally:
        theirs.close()
    entry = next(e for e in audit_entries(server) if e["action"] == "admin_user.password")
    assert entry["actor"] == "admin:alice"
    assert "a-new-password-123" not in str(entry)


def test_resync_button_notifies_the_phone_and_revoke_cuts_it_off(
    server: ProvisioningServer, page: Page
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(15)
    try:
        mac = _random_mac()
        cred = server.enroll(mac, name="Resync me")
        port = listener.getsockname()[1]
        _status(
            cred, "127.0.0.1", True, device_by_mac(server, mac)["revision"], f"127.0.0.1:{port}"
        )
        login(page, "olga")
        page.goto(f"/devices/{cred.device_id}")
        page.get_by_role("button", name="Resync now").click()
        expect(page.get_by_role("status").first).to_contain_text("the phone was notified")
        message = listener.recvfrom(65535)[0].decode()
    finally:
        listener.close()
    assert message.startswith("NOTIFY ")
    headers = dict(line.split(":", 1) for line in message.split("\r\n")[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    assert headers["event"] == "check-sync"
    cseq = headers["cseq"].split()[0]
    expected = hmac.new(
        cred.secret.encode(), (headers["call-id"] + cseq).encode(), hashlib.sha256
    ).hexdigest()
    assert headers["x-offhook-signature"] == expected
    entry = next(e for e in audit_entries(server) if e["action"] == "device.resync")
    assert (entry["actor"], entry["target_id"]) == ("admin:olga", cred.device_id)

    # Revoking cuts the phone off at once.
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status").first).to_contain_text("revoked")
    with cred.client() as client:
        refused = client.get("/api/v1/device/config")
    assert (refused.status_code, refused.json()["code"]) == (403, "revoked")


def test_device_list_pages_keep_the_filter_and_unknown_pages_get_html_404(
    server: ProvisioningServer, page: Page
) -> None:
    prefix = "Pager" + secrets.token_hex(2)
    lines = [f"{_random_mac()},{prefix} {i:02d}" for i in range(30)]
    reply = server.admin.post(
        "/devices/import",
        content="mac,name\n" + "\n".join(lines) + "\n",
        headers={"content-type": "text/csv"},
    )
    reply.raise_for_status()
    assert reply.json()["created"] == 30
    login(page, "rita")
    page.goto("/devices")
    page.get_by_label("Search").fill(prefix)
    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#devices tbody tr[data-device]")
    expect(rows).to_have_count(25)
    expect(rows.first).to_contain_text(f"{prefix} 00")
    page.locator("#devices-pager").get_by_role("link", name="Next").click()
    expect(rows).to_have_count(5)
    expect(rows.first).to_contain_text(f"{prefix} 25")
    assert f"q={prefix}" in page.url and "page=2" in page.url
    expect(page.get_by_label("Search")).to_have_value(prefix)
    expect(page.locator("#devices-pager").get_by_role("link", name="Next")).to_have_count(0)
    page.locator("#devices-pager").get_by_role("link", name="Previous").click()
    expect(rows).to_have_count(25)

    missing = page.goto("/no/such/page")
    assert missing is not None and missing.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    api = page.request.get("/api/v1/admin/no-such-thing")
    assert api.headers["content-type"].startswith("application/json")
