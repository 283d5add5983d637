"""The call analytics pages in real headless Chromium against the real server, with the reports
posted as phones post them: the Analytics page (figures, charts as SVG, filters by range and
site, a bad range refused) with JavaScript off, the joined calls with links and both legs' MOS
and the billing CSV download, the Quality page's trends, sample counts and poor-only filter, and
the time zone preference moving every time and the busy hours.

Set OFFHOOK_WEB_SCREENSHOTS=DIR to keep the pages' screenshots (docs/web-ui.md uses them).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 42320
PASSWORD = "analytics-password-1"
TODAY = datetime.now(UTC).date()
DAY1 = TODAY - timedelta(days=3)
DAY2 = TODAY - timedelta(days=2)


def shot(page: Page, name: str) -> None:
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def at(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def leg(rid: str, direction: str, start: float, **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "direction": direction,
        "account": 0,
        "local_uri": "",
        "remote_uri": "",
        "remote_name": "",
        "start": start,
        "answer": None,
        "end": start + 30,
        "disposition": "answered",
        "status_code": 200,
        **fields,
    }


def quality(rid: str, leg_id: str, when: float, mos: float) -> dict[str, Any]:
    time = datetime.fromtimestamp(when, UTC).isoformat()
    return {"id": rid, "call_record_id": leg_id, "time": time, "codec": "G722", "mos": mos}


def report(phone: DeviceCredential, legs: list[dict], samples: list[dict]) -> None:
    with phone.client() as client:
        client.post("/api/v1/device/cdrs", json={"records": legs}).raise_for_status()
        client.post("/api/v1/device/quality", json={"records": samples}).raise_for_status()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("analytics-web"))
    running.port = PORT
    with running:
        admin = running.admin
        body = {"username": "rita", "password": PASSWORD, "role": "read-only"}
        admin.post("/users", json=body).raise_for_status()
        admin.post("/groups", json={"name": "Berlin office", "kind": "site"}).raise_for_status()
        alice = running.enroll("b8:27:eb:20:00:01", name="Alice desk", group="Berlin office")
        bob = running.enroll("b8:27:eb:20:00:02", name="Bob desk", group="Berlin office")
        carol = running.enroll("b8:27:eb:20:00:03", name="Carol desk")
        a, b, c = "sip:1001@pbx.test", "sip:1002@pbx.test", "sip:1003@pbx.test"
        t1, t2 = at(DAY1, 9), at(DAY1, 10)
        report(
            alice,
            [
                leg("a1", "outgoing", t1, local_uri=a, remote_uri=b, remote_name="Bob",
                    answer=t1 + 3, end=t1 + 123, sip_call_id="one@pbx"),
                leg("a2", "outgoing", t2, local_uri=a, remote_uri=b, disposition="no_answer",
                    sip_call_id="two@pbx"),
            ],
            [quality("qa1", "a1", t1 + 123, 4.3)],
        )  # fmt: skip
        t3 = at(DAY2, 9, 30)
        report(
            bob,
            [
                leg("b1", "incoming", t1 + 0.2, local_uri=b, remote_uri=a, remote_name="Alice",
                    answer=t1 + 3, end=t1 + 123, sip_call_id="one@pbx"),
                leg("b2", "incoming", t2 + 0.2, local_uri=b, remote_uri=a, disposition="missed",
                    sip_call_id="two@pbx"),
                leg("b3", "incoming", t3, local_uri=b, remote_uri="sip:+4930777@trunk",
                    answer=t3 + 5, end=t3 + 65),
            ],
            [quality("qb1", "b1", t1 + 123, 3.1), quality("qb3", "b3", t3 + 65, 4.0)],
        )  # fmt: skip
        t4 = at(DAY2, 14)
        report(
            carol,
            [leg("c1", "outgoing", t4, local_uri=c, remote_uri="sip:+4930555@trunk",
                 answer=t4 + 2, end=t4 + 62)],
            [quality("qc1", "c1", t4 + 62, 2.5)],
        )  # fmt: skip
        running.ids = {"alice": alice.device_id, "bob": bob.device_id}  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def context(browser: Browser, server: ProvisioningServer) -> Iterator[BrowserContext]:
    # No JavaScript: every page and filter must work without it.
    ctx = browser.new_context(
        base_url=server.base_url,
        viewport={"width": 1300, "height": 900},
        accept_downloads=True,
        java_script_enabled=False,
    )
    ctx.set_default_timeout(15000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    return page


def show(page: Page, since: date, until: date, site: str = "") -> None:
    page.get_by_label("From", exact=True).fill(since.isoformat())
    page.get_by_label("To", exact=True).fill(until.isoformat())
    page.get_by_label("Site or group").select_option(site)
    page.get_by_role("button", name="Show").click()


def test_analytics_page_figures_charts_and_filters(page: Page) -> None:
    page.get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Call analytics")
    show(page, DAY1, DAY2)
    expect(page.locator("#fig-calls .figure")).to_have_text("4")
    expect(page.locator("#fig-answer .figure")).to_have_text("75 %")
    expect(page.locator("#fig-miss")).to_contain_text("1 of 3 that rang a fleet phone")
    # one bar per day, each with its count as data and as printed text
    volume = page.locator("svg#chart-volume")
    expect(volume.locator("title").first).to_have_text("Calls per day")
    bars = volume.locator("rect.bar")
    expect(bars).to_have_count(2)
    assert [bars.nth(i).get_attribute("data-value") for i in range(2)] == ["2", "2"]
    # busy hours in UTC (the default zone): DAY1 09:00 and 10:00, DAY2 09:00 and 14:00
    heat = page.locator("svg#chart-busy")
    weekday1 = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[DAY1.weekday()]
    cell = heat.locator(f'rect.cell[data-row="{weekday1}"][data-col="09"]')
    expect(cell).to_have_attribute("data-value", "1")
    mos = page.locator("svg#chart-mos circle.point")
    expect(mos).to_have_count(2)
    assert mos.first.get_attribute("data-value") == "3.70"  # (4.3 + 3.1) / 2 on DAY1
    expect(page.locator("table.analytics-devices tbody tr")).to_have_count(3)
    shot(page, "analytics")

    show(page, DAY1, DAY2, "Berlin office")
    expect(page.locator("#fig-calls .figure")).to_have_text("3")
    expect(page.locator("table.analytics-devices tbody tr")).to_have_count(2)

    show(page, DAY2, DAY1)
    expect(page.get_by_role("alert")).to_have_text(f"from {DAY2} is after to {DAY1}")
    expect(page.locator("svg")).to_have_count(0)


def test_joined_calls_link_both_phones_and_export_for_billing(
    page: Page, server: ProvisioningServer
) -> None:
    page.goto(f"/analytics?since={DAY1}&until={DAY2}")
    page.get_by_role("link", name="The calls, one row each").click()
    rows = page.locator("table.joined-calls tbody tr")
    expect(rows).to_have_count(4)
    joined = page.locator('tr[data-call="one@pbx"]')
    expect(joined).to_have_attribute("data-legs", "2")
    expect(joined.locator("td.caller")).to_contain_text("Alice desk")
    expect(joined.locator("td.callee")).to_contain_text("Bob desk")
    expect(joined.locator(".badge")).to_have_text(["4.30", "3.10"])
    expect(page.locator('tr[data-call="two@pbx"]')).to_contain_text("missed")
    shot(page, "joined-calls")
    ids: dict[str, str] = server.ids  # type: ignore[attr-defined]
    joined.locator("td.callee a").click()
    expect(page).to_have_url(f"{server.base_url}/devices/{ids['bob']}")

    page.goto(f"/analytics/calls?since={DAY1}&until={DAY2}")
    with page.expect_download() as caught:
        page.get_by_role("link", name="Export for billing (CSV)").click()
    download = caught.value
    assert download.suggested_filename == f"calls-{DAY1}-{DAY2}.csv"
    rows_csv = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [r["call"] for r in rows_csv] == ["one@pbx", "two@pbx", "b3", "c1"]
    assert rows_csv[0]["caller_device"] == "Alice desk" and rows_csv[0]["duration_s"] == "120"
    reads = server.admin.get("/audit", params={"action": "cdr.read"}).json()
    assert (reads[0]["actor"], reads[0]["target_id"]) == ("admin:rita", "web-export")
    assert reads[0]["after"]["rows"] == 4


def test_quality_trend_counts_samples_and_filters_poor_calls(page: Page) -> None:
    page.goto("/quality")
    show(page, DAY1, DAY2)
    expect(page.locator("#quality-samples")).to_contain_text("4 samples")
    carol = page.locator("table.quality-devices tbody tr", has_text="Carol desk")
    expect(carol.locator("td.samples")).to_have_text("1 sample")
    expect(page.locator("table.quality-groups tbody tr", has_text="Berlin office")).to_contain_text(
        "3 samples"
    )
    expect(page.locator("svg#chart-quality circle.point")).to_have_count(2)
    page.get_by_label("Poor calls only").check()
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#quality-samples")).to_contain_text("2 samples below MOS 3.6")
    expect(page.locator("table.quality tbody tr")).to_have_count(2)
    shot(page, "quality-trends")
    page.get_by_label("Poor below MOS").fill("3")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#quality-samples")).to_contain_text("1 sample below MOS 3")


def test_time_zone_preference_moves_times_and_busy_hours(page: Page) -> None:
    page.get_by_role("link", name="Preferences").click()
    page.get_by_label("Time zone").fill("Asia/Atlantis")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("'Asia/Atlantis' is not a tz database name")
    page.get_by_label("Time zone").fill("Asia/Tokyo")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Times are now shown in Asia/Tokyo.")).to_be_visible()
    shot(page, "preferences")
    try:
        page.goto(f"/analytics/calls?since={DAY1}&until={DAY2}")
        first = page.locator('tr[data-call="one@pbx"] td.when')
        expect(first).to_have_text(f"{DAY1} 18:00:00 JST")  # 09:00 UTC
        page.goto(f"/cdrs?since={DAY1}&until={DAY1}")  # every page's times, not only the new ones
        expect(page.locator('tr[data-call="a1"] td.when')).to_have_text(f"{DAY1} 18:00:00 JST")
        page.goto(f"/analytics?since={DAY1}&until={DAY2}")
        weekday1 = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[DAY1.weekday()]
        cell = page.locator(f'svg#chart-busy rect.cell[data-row="{weekday1}"][data-col="18"]')
        expect(cell).to_have_attribute("data-value", "1")
        expect(page.locator("svg#chart-busy title").first).to_have_text("Busy hours")
        expect(page.get_by_text("Days and hours in Asia/Tokyo")).to_be_visible()
    finally:
        page.goto("/preferences")
        page.get_by_label("Time zone").fill("UTC")
        page.get_by_role("button", name="Save").click()
