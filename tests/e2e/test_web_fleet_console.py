"""The fleet console in real headless Chromium against the real server (``offhook server``,
SQLite): the device table (sortable columns, search by name/MAC/extension/IP/serial, filters
that combine, bulk actions with a confirmation that says how many, CSV export of what the
filters select), pending phones with their IP named at approval, the group tree with rolled-up
counts and "resync this group", and names instead of UUIDs in the audit log and dashboard.

The same list, bulk and tree use cases through the REST API and ``offhook fleet`` check that the
three front ends share one service and one permission.

Set OFFHOOK_WEB_SCREENSHOTS=DIR to keep the pages' screenshots (docs/web-ui.md uses them).
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 18120
PASSWORD = "console-password-1"
# (name, MAC suffix, extension, group): the fleet every test starts from
FLEET = [
    ("Reception", "10:00:01", "4101", "Front office"),
    ("Lobby", "10:00:02", "4102", "Front office"),
    ("Sales desk 1", "10:00:03", "4201", "Sales"),
    ("Sales desk 2", "10:00:04", "4202", "Sales"),
    ("Support 1", "10:00:05", "4301", "Support"),
    ("Warehouse", "10:00:06", "4401", ""),
]


def _mac(suffix: str) -> str:
    return f"b8:27:eb:{suffix}"


def _shots() -> Path | None:
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    return Path(where) if where else None


def shot(page: Page, name: str) -> None:
    where = _shots()
    if where is not None:
        where.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(where / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("console"))
    running.port = PORT
    with running:
        admin = running.admin
        for name, role in (("alice", "admin"), ("olga", "operator"), ("rita", "read-only")):
            body = {"username": name, "password": PASSWORD, "role": role}
            admin.post("/users", json=body).raise_for_status()
        hq = admin.post("/groups", json={"name": "HQ", "kind": "site"}).json()
        for group in ("Front office", "Sales"):
            admin.post("/groups", json={"name": group, "parent": hq["id"]}).raise_for_status()
        admin.post("/groups", json={"name": "Support"}).raise_for_status()
        for name, suffix, extension, group in FLEET:
            body: dict[str, Any] = {
                "mac": _mac(suffix),
                "name": name,
                "serial": "SN" + suffix.replace(":", ""),
            }
            if group:
                body["group"] = group
            device = admin.post("/devices", json=body).json()
            admin.post(
                f"/devices/{device['id']}/lines",
                json={"extension": extension, "registrar": "pbx.test"},
            ).raise_for_status()
        yield running


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        base_url=server.base_url, viewport={"width": 1400, "height": 900}, accept_downloads=True
    )
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


def names_shown(page: Page) -> list[str]:
    return page.locator("#devices tbody tr td.name a").all_inner_texts()


def column(page: Page, name: str) -> list[str]:
    return page.locator(f"#devices tbody tr td.{name}").all_inner_texts()


def apply_filters(page: Page) -> None:
    with page.expect_navigation():
        page.locator("#device-filters").get_by_role("button", name="Filter").click()


def sort_by(page: Page, heading: str) -> None:
    with page.expect_navigation():
        page.get_by_role("columnheader", name=heading).get_by_role("link").click()


def device(server: ProvisioningServer, ref: str) -> dict[str, Any]:
    reply = server.admin.get(f"/devices/{ref}")
    reply.raise_for_status()
    return reply.json()


def group_id(server: ProvisioningServer, name: str) -> int:
    return next(g["id"] for g in server.admin.get("/groups").json() if g["name"] == name)


# --- device table -------------------------------------------------------------------------------


def test_columns_sort_both_ways_and_say_so(server: ProvisioningServer, page: Page) -> None:
    login(page, "rita")
    page.goto("/devices")
    everyone = sorted(name for name, *_ in FLEET)
    assert [n for n in names_shown(page) if n in everyone] == everyone
    sort_by(page, "MAC")
    expect(page.get_by_role("columnheader", name="MAC")).to_have_attribute("aria-sort", "ascending")
    macs = column(page, "mac")
    assert macs == sorted(macs)
    sort_by(page, "MAC")
    expect(page.get_by_role("columnheader", name="MAC")).to_have_attribute(
        "aria-sort", "descending"
    )
    macs = column(page, "mac")
    assert macs == sorted(macs, reverse=True)
    sort_by(page, "Group")
    groups = column(page, "group")
    named = [g for g in groups if g]
    assert named == sorted(named) and groups[-1] == ""  # no group sorts last


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sales desk", ["Sales desk 1", "Sales desk 2"]),  # name
        ("B8:27:EB:10:00:05", ["Support 1"]),  # MAC, any case
        ("4401", ["Warehouse"]),  # a line's extension
        ("sn100002", ["Lobby"]),  # serial, any case
    ],
)
def test_search_finds_by_name_mac_extension_and_serial(
    page: Page, query: str, expected: list[str]
) -> None:
    login(page, "rita")
    page.goto("/devices")
    page.get_by_label("Search").fill(query)
    apply_filters(page)
    assert names_shown(page) == expected
    expect(page.locator("#device-count")).to_contain_text(f"{len(expected)} device")


def test_search_finds_by_ip(server: ProvisioningServer, page: Page) -> None:
    """A pending phone's address is the one it enrolled from (loopback here)."""
    mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    assert server.enroll_request(mac, server.enrollment_token()).status_code == 202
    login(page, "rita")
    page.goto("/devices?q=127.0.0.1")
    assert mac in page.locator("#devices tbody").inner_text()


def test_filters_combine(server: ProvisioningServer, page: Page) -> None:
    login(page, "rita")
    page.goto("/devices")
    filters = page.locator("#device-filters")
    filters.locator('select[name="group"]').select_option(label="HQ")
    apply_filters(page)
    assert names_shown(page) == []  # nobody sits in the site itself
    filters.get_by_label("with subgroups").check()
    apply_filters(page)
    assert names_shown(page) == ["Lobby", "Reception", "Sales desk 1", "Sales desk 2"]
    filters.get_by_label("Search").fill("41")  # extensions 4101, 4102
    apply_filters(page)
    assert names_shown(page) == ["Lobby", "Reception"]
    filters.locator('select[name="status"]').select_option("pending")
    apply_filters(page)
    assert names_shown(page) == []
    expect(page.locator("#devices tbody")).to_contain_text("No devices match.")


def test_csv_export_holds_what_the_filters_select(server: ProvisioningServer, page: Page) -> None:
    login(page, "rita")
    page.goto(f"/devices?group={group_id(server, 'HQ')}&subgroups=1&sort=-name")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export these as CSV").click()
    text = Path(download.value.path()).read_bytes().decode("utf-8")  # CRLF kept, as RFC 4180
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ["Sales desk 2", "Sales desk 1", "Reception", "Lobby"]
    assert rows[2]["extensions"] == "4101" and rows[2]["group"] == "Front office"
    assert rows[2]["mac"] == _mac("10:00:01")
    # The REST API exports the same file for the same filters.
    same = server.admin.get(
        "/devices/export", params={"group": "HQ", "subgroups": "true", "sort": "-name"}
    )
    assert same.headers["content-type"].startswith("text/csv")
    assert same.text == text


def test_bulk_move_asks_how_many_then_moves_them(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    page.goto("/devices?q=sales desk")
    for name in ("Sales desk 1", "Sales desk 2"):
        page.get_by_label(f"Tick {name}").check()
    expect(page.locator("#bulk-count")).to_have_text("2 ticked")
    page.get_by_label("With the ticked devices").select_option("move")
    page.get_by_label("Group (for move)").select_option(label="Support")
    page.get_by_role("button", name="Apply…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Move 2 devices?")
    expect(page.locator("#confirm-what")).to_have_text("Move 2 devices to Support?")
    expect(page.locator("#consequences")).to_contain_text("Sales desk 1, Sales desk 2")
    shot(page, "bulk-confirm")
    assert device(server, _mac("10:00:03"))["group_id"] == group_id(server, "Sales")  # not yet
    page.get_by_role("button", name="Move 2 devices").click()
    expect(page.get_by_role("status").first).to_have_text("2 devices moved.")
    support = group_id(server, "Support")
    assert device(server, _mac("10:00:03"))["group_id"] == support
    assert device(server, _mac("10:00:04"))["group_id"] == support
    updates = server.admin.get("/audit", params={"action": "device.update"}).json()
    assert sum(1 for e in updates if e["actor"] == "admin:olga") >= 2
    # and back, through the REST API's bulk route (same service)
    back = server.admin.post(
        "/devices/bulk",
        json={
            "action": "move",
            "device_ids": [_mac("10:00:03"), _mac("10:00:04")],
            "group": "Sales",
        },
    )
    assert back.status_code == 200 and back.json()["done"] == 2


def test_bulk_approve_reports_what_it_skipped(server: ProvisioningServer, page: Page) -> None:
    pending = []
    for _ in range(2):
        mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        assert server.enroll_request(mac, server.enrollment_token()).status_code == 202
        pending.append(mac)
    login(page, "olga")
    page.goto("/devices?status=pending")
    page.get_by_label(f"Tick {pending[0]}").check()
    page.get_by_label(f"Tick {pending[1]}").check()
    page.get_by_label("With the ticked devices").select_option("approve")
    page.get_by_role("button", name="Apply…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Approve 2 devices?")
    page.get_by_role("button", name="Approve 2 devices").click()
    expect(page.get_by_role("status").first).to_have_text("2 devices approved.")
    assert [device(server, m)["status"] for m in pending] == ["approved", "approved"]
    # The same approval again from the REST API: both already approved, both skipped.
    again = server.admin.post("/devices/bulk", json={"action": "approve", "device_ids": pending})
    body = again.json()
    assert body["done"] == 0 and len(body["skipped"]) == 2
    assert "only pending/rejected can be approved" in body["skipped"][0]["reason"]


def test_bulk_delete_needs_the_admin_role_everywhere(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "olga")
    page.goto("/devices")
    options = page.locator("#bulk-action option").all_inner_texts()
    assert "delete" not in options and "move to group" in options
    # A hand-made form post is refused like the single-device delete.
    target = device(server, _mac("10:00:06"))["id"]
    csrf = page.locator('#bulk input[name="csrf_token"]').get_attribute("value") or ""
    reply = page.request.post(
        "/devices/bulk",
        form={"csrf_token": csrf, "bulk_action": "delete", "device": target, "confirm": "yes"},
    )
    assert reply.status == 403
    assert "This needs the admin role; you are operator." in reply.text()
    # The REST API says the same to an operator's token.
    signed_in = page.request.post(
        "/api/v1/admin/api-tokens", data={"name": "op"}, headers={"x-csrf-token": csrf}
    )
    token = signed_in.json()["token"]
    rest = httpx.post(
        f"{server.base_url}/api/v1/admin/devices/bulk",
        json={"action": "delete", "device_ids": [target]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert rest.status_code == 403
    assert rest.json()["detail"] == "device.delete needs the admin role; you are operator"
    assert device(server, target)["name"] == "Warehouse"  # still there


def test_bulk_delete_by_an_admin(server: ProvisioningServer, page: Page) -> None:
    doomed = [
        server.admin.post("/devices", json={"mac": _mac(f"20:00:0{i}"), "name": f"Old {i}"}).json()
        for i in range(3)
    ]
    login(page, "alice")
    page.goto("/devices?q=old ")
    page.get_by_label("Tick every device on this page").check()
    expect(page.locator("#bulk-count")).to_have_text("3 ticked")
    page.get_by_label("With the ticked devices").select_option("delete")
    page.get_by_role("button", name="Apply…").click()
    expect(page.locator("#consequences")).to_contain_text("There is no undo.")
    page.get_by_role("button", name="Delete 3 devices").click()
    expect(page.get_by_role("status").first).to_have_text("3 devices deleted.")
    for made in doomed:
        assert server.admin.get(f"/devices/{made['id']}").status_code == 404


def test_pending_phone_shows_its_ip_and_is_named_at_approval(
    server: ProvisioningServer, page: Page
) -> None:
    mac = "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
    assert server.enroll_request(mac, server.enrollment_token()).status_code == 202
    login(page, "olga")
    page.goto("/approvals")
    row = page.locator(f'#pending tr[data-mac="{mac}"]')
    expect(row.locator("td").nth(1)).to_have_text("127.0.0.1")
    row.get_by_label(f"Name for {mac}").fill("Meeting room 3")
    row.get_by_label(f"Group for {mac}").select_option(label="Support")
    shot(page, "approvals")
    row.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").first).to_have_text(
        "Device Meeting room 3 approved into Support."
    )
    approved = device(server, mac)
    assert approved["name"] == "Meeting room 3" and approved["status"] == "approved"


def test_audit_and_dashboard_name_their_targets(server: ProvisioningServer, page: Page) -> None:
    login(page, "alice")
    reception = device(server, _mac("10:00:01"))
    server.admin.patch(f"/devices/{reception['id']}", json={"serial": "SN-CHANGED"})
    page.goto("/audit?action=device.update")
    target = page.locator("#audit tr td.target").first
    expect(target.get_by_role("link", name="Reception")).to_have_attribute(
        "href", f"/devices/{reception['id']}"
    )
    expect(target).not_to_contain_text(reception["id"])
    page.goto("/")
    expect(page.get_by_role("link", name="Reception").first).to_be_visible()


def test_the_device_table_fills_a_wide_window(page: Page) -> None:
    login(page, "rita")
    page.goto("/devices")
    width = page.evaluate("document.getElementById('devices').getBoundingClientRect().width")
    assert width > 1300  # the window is 1400 px: no fixed narrow column
    shot(page, "devices")


def test_the_device_list_is_usable_from_the_keyboard(page: Page) -> None:
    login(page, "olga")
    page.goto("/devices")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_label("Search").focus()
    page.keyboard.type("lobby")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert names_shown(page) == ["Lobby"]
    page.get_by_label("Tick Lobby").focus()
    page.keyboard.press("Space")
    expect(page.locator("#bulk-count")).to_have_text("1 ticked")


# --- groups --------------------------------------------------------------------------------------


def test_group_tree_rolls_counts_up_and_resyncs_a_group(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "olga")
    page.goto("/groups")
    hq = group_id(server, "HQ")
    expect(page.locator(f"#counts-{hq} .total")).to_have_text("4")
    sales = page.locator(f'#group-tree li[data-group="{hq}"] li', has_text="Sales").first
    expect(sales).to_contain_text("2 devices")
    shot(page, "groups")
    page.get_by_role("button", name="Resync HQ").click()
    expect(page.get_by_role("status").first).to_contain_text("Resync of HQ: 4 device(s)")
    entries = server.admin.get("/audit", params={"action": "resync"}).json()
    mine = [e for e in entries if e["actor"] == "admin:olga"]
    assert mine[0]["after"] == {"group": "HQ", "devices": 4}
    assert mine[0]["target_type"] == "group" and mine[0]["target_id"] == str(hq)
    # The REST tree counts the same.
    tree = server.admin.get("/groups/tree").json()
    node = next(n for n in tree if n["name"] == "HQ")
    assert node["total"] == 4 and node["devices"] == 0
    assert sorted(c["name"] for c in node["children"]) == ["Front office", "Sales"]


def test_a_read_only_admin_sees_the_tree_without_resync(page: Page) -> None:
    login(page, "rita")
    page.goto("/groups")
    expect(page.locator("#group-tree")).to_be_visible()
    expect(page.get_by_role("button", name="Resync HQ")).to_have_count(0)


def test_the_cli_shares_the_list_bulk_and_tree(server: ProvisioningServer) -> None:
    listed = server.fleet("devices", "--group", "HQ", "--subgroups", "--csv", "--sort=-name")
    assert listed.returncode == 0, listed.stderr
    rest = server.admin.get(
        "/devices/export", params={"group": "HQ", "subgroups": "true", "sort": "-name"}
    )
    # (the captured text mode output has universal newlines: compare without the CR)
    assert listed.stdout == rest.text.replace("\r\n", "\n")
    moved = server.fleet("bulk", "move", _mac("10:00:06"), "--group", "Support")
    assert moved.returncode == 0, moved.stderr
    assert "1 device moved" in moved.stdout
    assert device(server, _mac("10:00:06"))["group_id"] == group_id(server, "Support")
    server.fleet("bulk", "move", _mac("10:00:06"))  # out of any group again
    refused = server.fleet("bulk", "delete", _mac("10:00:06"))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    tree = server.fleet("groups")
    assert tree.returncode == 0, tree.stderr
    assert "HQ (site): 4 device(s), 0 here" in tree.stdout
