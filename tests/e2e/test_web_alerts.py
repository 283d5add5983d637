"""Alerts in real headless Chromium against the real server (``offhook server``, SQLite), the
alerts raised by real phone reports over the device API: the dashboard's count and list, the
Alerts page's state and kind filters, acknowledging one alert and the ticked ones through the
confirmation page, an acknowledged alert resolving by itself when its phone recovers, and a
read-only admin who sees alerts but cannot acknowledge them.

Set OFFHOOK_WEB_SCREENSHOTS=DIR to keep the pages' screenshots (docs/web-ui.md uses them).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer
from tests.fixtures.waiting import wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 42250  # this suite's loopback port (42200-42299)
PASSWORD = "alerts-password-1"


def shot(page: Page, name: str) -> None:
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def _mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def post(phone: DeviceCredential, route: str, body: dict[str, Any]) -> None:
    with phone.client() as client:
        reply = client.post(f"/api/v1/device/{route}", json=body)
        assert reply.status_code == 200, reply.text


def status(phone: DeviceCredential, *registered: bool, minutes_ago: float = 0) -> None:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    lines = [
        {"account": n, "user": f"41{n:02d}", "registered": ok, "status": 200 if ok else 403}
        for n, ok in enumerate(registered)
    ]
    post(phone, "status", {"id": secrets.token_hex(8), "time": when.isoformat(), "lines": lines})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    env = {"OFFHOOK_ALERT_SWEEP_INTERVAL_S": "1", "OFFHOOK_ALERT_NOT_SEEN_MINUTES": "30"}
    running = ProvisioningServer(tmp_path_factory.mktemp("web-alerts"), env=env)
    running.port = PORT
    with running:
        for name, role in (("olga", "operator"), ("rita", "read-only")):
            body = {"username": name, "password": PASSWORD, "role": role}
            running.admin.post("/users", json=body).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def phones(server: ProvisioningServer) -> dict[str, DeviceCredential]:
    """Four things wrong, each reported the way a phone reports it."""
    server.admin.post("/groups", json={"name": "Sales"}).raise_for_status()
    made = {
        name: server.enroll(_mac(), name=name, **({"group": "Sales"} if name == "Sales 1" else {}))
        for name in ("Reception", "Lobby", "Warehouse", "Sales 1")
    }
    status(made["Reception"], True, False)
    status(made["Lobby"], True)
    record = {
        "id": secrets.token_hex(8),
        "time": datetime.now(UTC).isoformat(),
        "type": "config_rejected",
        "config_revision": 4,
        "detail": "audio.tone_plan: Input should be 'us', 'eu' or 'uk'",
    }
    post(made["Lobby"], "events", {"records": [record]})
    status(made["Warehouse"], True, minutes_ago=90)
    status(made["Sales 1"], True)
    calls = [
        {"id": secrets.token_hex(8), "time": datetime.now(UTC).isoformat(), "mos": mos}
        for mos in (2.1, 2.4, 2.8)
    ]
    post(made["Sales 1"], "quality", {"records": calls})
    wait_until(
        lambda: len(server.admin.get("/alerts").json()["alerts"]) == 4,
        "four open alerts (the sweep's not_seen among them)",
        timeout=20,
    )
    return made


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=server.base_url, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")


def row(page: Page, subject: str) -> Any:
    return page.locator("#alerts tbody tr").filter(has=page.locator("td.subject", has_text=subject))


def test_dashboard_page_filters_acknowledge_and_auto_resolve(
    page: Page, server: ProvisioningServer, phones: dict[str, DeviceCredential]
) -> None:
    login(page, "olga")
    expect(page.locator("#alerts-open-count")).to_have_text("4")
    listed = page.locator("#dashboard-alert-list tbody tr td.subject")
    expect(listed).to_have_count(4)
    assert set(listed.all_inner_texts()) == {"Reception", "Lobby", "Warehouse", "Sales"}
    shot(page, "alerts-dashboard")

    page.get_by_role("navigation").get_by_role("link", name="Alerts").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Alerts")
    expect(page.locator("#alerts tbody tr")).to_have_count(4)
    expect(row(page, "Lobby").locator("td.message")).to_have_text(
        "revision 4 rejected by the phone: audio.tone_plan: Input should be 'us', 'eu' or 'uk'"
    )
    expect(row(page, "Warehouse").locator("td.message")).to_contain_text("not seen for 1 h 30")
    expect(row(page, "Sales").locator("td.subject a")).to_have_attribute("href", "/groups/1")
    shot(page, "alerts")

    # the kind filter
    page.get_by_label("Kind").select_option("not_seen")
    with page.expect_navigation():
        page.locator("#alert-filters").get_by_role("button", name="Filter").click()
    expect(page.locator("#alerts tbody tr td.subject")).to_have_text(["Warehouse"])
    page.get_by_role("link", name="Clear").click()

    # one row's button: the confirmation names it; Cancel changes nothing
    row(page, "Reception").get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Acknowledge 1 alert?")
    expect(page.locator("#consequences")).to_contain_text("Reception: 1 of 2 lines not registered")
    page.get_by_role("link", name="Cancel").click()
    expect(row(page, "Reception").locator("td.state")).to_contain_text("open")
    row(page, "Reception").get_by_role("button", name="Acknowledge").click()
    page.get_by_role("button", name="Acknowledge 1 alert").click()
    expect(page.locator(".flash.ok")).to_have_text("Acknowledged 1 alert.")
    expect(row(page, "Reception").locator("td.state")).to_contain_text("acknowledged by admin:olga")

    # the ticked ones, in one confirmation
    for subject in ("Lobby", "Warehouse"):
        row(page, subject).get_by_role("checkbox").check()
    page.get_by_role("button", name="Acknowledge ticked…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Acknowledge 2 alerts?")
    shot(page, "alerts-ack-confirm")
    page.get_by_role("button", name="Acknowledge 2 alerts").click()
    expect(page.locator(".flash.ok")).to_have_text("Acknowledged 2 alerts.")
    states = server.admin.get("/alerts").json()["alerts"]
    assert sorted(a["subject"]["name"] for a in states if a["state"] == "acknowledged") == [
        "Lobby",
        "Reception",
        "Warehouse",
    ]
    audit = server.admin.get("/audit", params={"action": "alert.ack"}).json()
    assert len(audit) == 3 and {e["actor"] for e in audit} == {"admin:olga"}

    page.get_by_label("State").select_option("acknowledged")
    with page.expect_navigation():
        page.locator("#alert-filters").get_by_role("button", name="Filter").click()
    expect(page.locator("#alerts tbody tr")).to_have_count(3)

    # Reception registers again: its acknowledged alert resolves by itself
    status(phones["Reception"], True, True)
    page.get_by_label("State").select_option("resolved")
    with page.expect_navigation():
        page.locator("#alert-filters").get_by_role("button", name="Filter").click()
    expect(page.locator("#alerts tbody tr td.subject")).to_have_text(["Reception"])
    expect(row(page, "Reception").locator("td.state")).to_contain_text("resolved")

    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    expect(page.locator("#alerts-open-count")).to_have_text("1")  # Sales' call quality
    expect(page.locator("#alerts-ack-count")).to_have_text("2")


def test_a_read_only_admin_sees_alerts_but_cannot_acknowledge(
    page: Page, server: ProvisioningServer, phones: dict[str, DeviceCredential]
) -> None:
    login(page, "rita")
    page.goto("/alerts?state=all")
    expect(page.locator("#alerts tbody tr")).not_to_have_count(0)
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.locator("#bulk-ack")).to_have_count(0)
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    open_ids = [
        a["id"] for a in server.admin.get("/alerts", params={"state": "open"}).json()["alerts"]
    ]
    reply = page.request.post(
        "/alerts/ack",
        form={"csrf_token": csrf or "", "alert": str(open_ids[0]), "confirm": "yes"},
    )
    assert reply.status == 403
    assert "This needs the operator role; you are read-only." in reply.text()
    assert server.admin.get(f"/alerts/{open_ids[0]}").json()["state"] == "open"
