"""The settings editor generated from the phone's config schema, in real headless Chromium
against the real server: sections with each key's meaning, dropdowns for enums, number ranges,
the effective value with its source, on device, group, fleet and template pages; a refused
value names the key and stores nothing. The REST API and the CLI give the same schema and the
same effective values (services.setting_fields).

Set OFFHOOK_WEB_SCREENSHOTS=DIR to keep the pages' screenshots (docs/web-ui.md uses them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 18130
PASSWORD = "editor-password-1"
MAC = "b8:27:eb:30:00:01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("editor"))
    running.port = PORT
    with running:
        for name, role in (("alice", "admin"), ("olga", "operator"), ("rita", "read-only")):
            body = {"username": name, "password": PASSWORD, "role": role}
            running.admin.post("/users", json=body).raise_for_status()
        running.admin.post("/groups", json={"name": "HQ", "kind": "site"}).raise_for_status()
        running.admin.patch(
            "/groups/HQ/settings", json={"set": {"features.call_waiting": False}}
        ).raise_for_status()
        body = {"mac": MAC, "name": "Desk 1", "group": "HQ"}
        running.admin.post("/devices", json=body).raise_for_status()
        yield running


@pytest.fixture
def page(browser: Browser, server: ProvisioningServer) -> Iterator[Page]:
    ctx: BrowserContext = browser.new_context(
        base_url=server.base_url, viewport={"width": 1400, "height": 900}
    )
    ctx.set_default_timeout(15000)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def login(page: Page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")


def shot(page: Page, name: str) -> None:
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def device_id(server: ProvisioningServer) -> str:
    return str(server.admin.get(f"/devices/{MAC}").json()["id"])


def effective(server: ProvisioningServer) -> dict[str, dict[str, Any]]:
    rows = server.admin.get(f"/devices/{MAC}/settings/effective").json()
    return {r["key"]: r for r in rows}


def open_section(page: Page, name: str) -> Any:
    section = page.locator(f"#section-{name}")
    if section.get_attribute("open") is None:
        section.locator("summary").click()
    return section


def test_fields_come_from_the_schema(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    page.goto(f"/devices/{device_id(server)}")
    audio = open_section(page, "audio")
    tone = audio.get_by_label("audio.tone_plan")
    options = tone.locator("option").all_inner_texts()
    assert options[1:] == ["us", "eu", "uk"] and options[0].startswith("inherit")
    volume = audio.get_by_label("audio.ring_volume")
    assert (volume.get_attribute("type"), volume.get_attribute("min")) == ("number", "0")
    assert volume.get_attribute("max") == "100"
    help_text = audio.locator("#set-audio-ring_volume-help")
    expect(help_text).to_contain_text("the user's volume keys override and persist")
    expect(help_text).to_contain_text("integer, 0\u2013100")
    expect(help_text.locator(".source")).to_have_text("default")
    features = open_section(page, "features")
    waiting = features.locator("#set-features-call_waiting-help")
    expect(waiting.locator(".effective")).to_have_text("false")
    expect(waiting.locator(".source")).to_have_text("site HQ")
    # The REST API publishes the same schema the form is generated from.
    schema = {s["name"]: s for s in server.admin.get("/settings/schema").json()}
    tone_field = next(f for f in schema["audio"]["fields"] if f["key"] == "audio.tone_plan")
    assert tone_field["choices"] == ["us", "eu", "uk"] and tone_field["default"] == "us"


def test_a_section_saves_through_the_settings_change(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "olga")
    page.goto(f"/devices/{device_id(server)}")
    audio = open_section(page, "audio")
    audio.get_by_label("audio.tone_plan").select_option("uk")
    audio.get_by_label("audio.ring_volume").fill("40")
    audio.get_by_role("button", name="Apply [audio]").click()
    expect(page.get_by_role("status").first).to_have_text(
        "Section audio saved; 1 device(s) will update."
    )
    shot(page, "settings-editor")  # after the save: a full-page shot before it can lose the edits
    now = effective(server)
    assert (now["audio.tone_plan"]["value"], now["audio.tone_plan"]["source"]) == ("uk", "device")
    assert now["audio.ring_volume"]["value"] == 40
    entry = server.admin.get("/audit", params={"action": "settings.device"}).json()[0]
    assert entry["actor"] == "admin:olga"
    assert entry["after"]["audio"] == {"tone_plan": "uk", "ring_volume": 40}
    # Emptying a field inherits again.
    audio = open_section(page, "audio")
    expect(audio.get_by_label("audio.ring_volume")).to_have_value("40")
    audio.get_by_label("audio.ring_volume").fill("")
    audio.get_by_role("button", name="Apply [audio]").click()
    expect(page.get_by_role("status").first).to_contain_text("Section audio saved")
    assert effective(server)["audio.ring_volume"]["source"] == "default"
    # The CLI reads the same effective values.
    cli = server.fleet("effective", MAC, "--json")
    assert cli.returncode == 0, cli.stderr
    by_key = {r["key"]: r for r in json.loads(cli.stdout)}
    assert by_key["audio.tone_plan"] == {
        "key": "audio.tone_plan",
        "value": "uk",
        "source": "device",
    }


def test_a_bad_value_is_refused_naming_the_key(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    page.goto(f"/devices/{device_id(server)}")
    csrf = page.locator('#section-audio input[name="csrf_token"]').get_attribute("value") or ""
    before = effective(server)
    reply = page.request.post(
        f"/devices/{device_id(server)}/settings/section",
        form={"csrf_token": csrf, "section": "audio", "audio.ring_volume": "150"},
    )
    assert reply.ok  # followed back to the page, which shows the refusal once
    assert "audio.ring_volume: 150 is above 100" in reply.text()
    assert 'id="section-audio" open' in reply.text()
    assert effective(server) == before


def test_the_group_page_has_the_same_form(server: ProvisioningServer, page: Page) -> None:
    login(page, "olga")
    hq = next(g for g in server.admin.get("/groups").json() if g["name"] == "HQ")
    page.goto(f"/groups/{hq['id']}")
    dialplan = open_section(page, "dialplan")
    dialplan.get_by_label("dialplan.interdigit_timeout_s").fill("2.5")
    dialplan.get_by_role("button", name="Apply [dialplan]").click()
    expect(page.get_by_role("status").first).to_contain_text("Section dialplan saved")
    row = effective(server)["dialplan.interdigit_timeout_s"]
    assert (row["value"], row["source"]) == (2.5, "site HQ")


def test_a_template_is_edited_with_the_same_form(server: ProvisioningServer, page: Page) -> None:
    server.admin.post("/templates", json={"name": "quiet", "settings": {}}).raise_for_status()
    template = next(t for t in server.admin.get("/templates").json() if t["name"] == "quiet")
    login(page, "olga")
    page.goto(f"/templates/{template['id']}")
    features = open_section(page, "features")
    features.get_by_label("features.dnd").select_option("true")
    features.get_by_role("button", name="Apply [features]").click()
    expect(page.get_by_role("status").first).to_contain_text("Section features saved")
    stored = next(t for t in server.admin.get("/templates").json() if t["name"] == "quiet")
    assert stored["settings"] == {"features": {"dnd": True}}
    page.locator("#raw-json summary").click()  # raw JSON stays an option
    expect(page.get_by_label("Settings (JSON)")).to_contain_text('"dnd": true')


def test_fleet_defaults_use_the_form_and_need_the_admin_role(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "olga")
    page.goto("/fleet")
    expect(page.get_by_role("button", name="Apply [device]")).to_have_count(0)
    page.get_by_role("button", name="Log out").click()
    login(page, "alice")
    page.goto("/fleet")
    device = open_section(page, "device")
    device.get_by_label("device.timezone").fill("Europe/London")
    device.get_by_role("button", name="Apply [device]").click()
    expect(page.get_by_role("status").first).to_contain_text("Section device saved")
    assert server.admin.get("/settings/fleet").json() == {"device": {"timezone": "Europe/London"}}


def test_read_only_sees_the_values_but_cannot_save(server: ProvisioningServer, page: Page) -> None:
    login(page, "rita")
    page.goto(f"/devices/{device_id(server)}")
    audio = open_section(page, "audio")
    expect(audio.get_by_label("audio.tone_plan")).to_be_disabled()
    expect(audio.get_by_role("button", name="Apply [audio]")).to_have_count(0)
