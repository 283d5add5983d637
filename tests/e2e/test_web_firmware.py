"""The web UI's firmware page in Chromium against the real server: versions across the fleet,
rollout progress, starting and pausing a rollout (the same service and audit as the REST API),
a stage time limit, uploading a release with the file form (streamed into the same service
as the REST upload, a forged form without the token refused) and withdrawing one, and a
read-only admin seeing no buttons."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer
from tests.fixtures.rauc_bundles import SigningPair, make_bundle
from tests.integration.test_firmware_releases import COMPATIBLE, next_port, report_board, upload

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = pytest.mark.integration
PASSWORD = "web-firmware-password"
PORT = 18460  # this suite's loopback range (or a free port of $OFFHOOK_TEST_PORTS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    work = tmp_path_factory.mktemp("web-firmware")
    pair = SigningPair.make(work / "keys", "fleet-signing")
    running = ProvisioningServer(work / "server")
    running.port = next_port() if os.environ.get("OFFHOOK_TEST_PORTS") else PORT
    (running.data_dir / "firmware-keyring.pem").write_bytes(pair.cert.read_bytes())
    running.start()
    try:
        for name, role in (("alice", "admin"), ("rita", "read-only")):
            running.admin.post(
                "/users", json={"username": name, "password": PASSWORD, "role": role}
            ).raise_for_status()
        upload(running, make_bundle(work, pair, COMPATIBLE, "0.2.0")).raise_for_status()
        running.admin.post("/groups", json={"name": "reception"}).raise_for_status()
        for n in range(4):
            phone = running.enroll(f"b8:27:eb:10:00:{n:02x}", group="reception")
            report_board(phone, COMPATIBLE)
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser: Browser, server: ProvisioningServer) -> Iterator[Page]:
    ctx = browser.new_context(base_url=server.base_url)
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


def test_admin_starts_and_pauses_a_rollout_and_sees_its_progress(
    page: Page, server: ProvisioningServer, tmp_path: Path
) -> None:
    login(page, "alice")
    page.get_by_role("link", name="Firmware").click()
    versions = page.locator("#fleet-versions")
    expect(versions).to_contain_text(COMPATIBLE)
    expect(versions).to_contain_text("0.1.0")
    expect(page.locator("#releases")).to_contain_text("CN = fleet-signing")
    page.get_by_label("Scope").select_option("reception")
    page.get_by_label("Stages (cumulative %, the first the canary)").fill("25,100")
    page.get_by_role("button", name="Start rollout").click()
    expect(page.get_by_role("status")).to_contain_text("phone(s) told now")
    row = page.locator("#rollouts tbody tr").first
    expect(row).to_have_attribute("data-status", "running")
    expect(row).to_contain_text("0 of 4 running")
    expect(row).to_contain_text("1 asked")
    row.get_by_role("button", name="Pause").click()
    expect(page.locator("#rollouts tbody tr").first).to_have_attribute("data-status", "paused")
    expect(page.locator(".pause-reason")).to_contain_text("paused by admin:alice")
    audit = server.admin.get("/audit", params={"action": "rollout.pause"}).json()
    assert audit[0]["actor"] == "admin:alice"
    rollout = server.admin.get("/rollouts").json()[0]
    assert (rollout["status"], rollout["admitted"]) == ("paused", 1)

    # A bad form comes back with the reason and what was typed.
    page.get_by_label("Stages (cumulative %, the first the canary)").fill("50,10")
    page.get_by_role("button", name="Start rollout").click()
    expect(page.locator(".field-error")).to_contain_text("rising percentages")


def test_read_only_sees_progress_but_no_buttons(page: Page, server: ProvisioningServer) -> None:
    login(page, "rita")
    page.goto("/firmware")
    expect(page.locator("#fleet-versions")).to_contain_text(COMPATIBLE)
    expect(page.get_by_role("button", name="Start rollout")).to_have_count(0)
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    expect(page.get_by_role("button", name="Upload release")).to_have_count(0)
    expect(page.get_by_role("button", name="Withdraw")).to_have_count(0)


def test_admin_uploads_a_release_with_the_file_form_and_withdraws_it(
    page: Page, server: ProvisioningServer, tmp_path: Path
) -> None:
    pair = SigningPair.make(tmp_path / "keys", "fleet-signing")
    (server.data_dir / "firmware-keyring.pem").write_bytes(pair.cert.read_bytes())
    good = make_bundle(tmp_path, pair, COMPATIBLE, "0.4.0")
    stranger = SigningPair.make(tmp_path / "other-keys", "someone-else")
    foreign = make_bundle(tmp_path, stranger, COMPATIBLE, "0.4.1", name="foreign")
    login(page, "alice")
    page.goto("/firmware")

    # refused by the server's keyring: the reason on the page, no release
    page.get_by_label("Bundle (.raucb", exact=False).set_input_files(foreign)
    page.get_by_role("button", name="Upload release").click()
    expect(page.locator("#upload .field-error")).to_contain_text("signature does not verify")
    assert all(r["version"] != "0.4.1" for r in server.admin.get("/firmware").json())

    page.get_by_label("Bundle (.raucb", exact=False).set_input_files(good)
    page.get_by_role("button", name="Upload release").click()
    expect(page.get_by_role("status")).to_contain_text(f"stored: {COMPATIBLE} 0.4.0")
    release = next(r for r in server.admin.get("/firmware").json() if r["version"] == "0.4.0")
    assert release["uploaded_by"] == "admin:alice"
    assert release["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    upload_audit = server.admin.get("/audit", params={"action": "firmware.upload"}).json()
    assert upload_audit[0]["actor"] == "admin:alice"
    row = page.locator(f"#releases tr[data-release='{release['id']}']")
    expect(row).to_have_attribute("data-withdrawn", "no")

    # a file form without the session's token keeps nothing
    part = {"name": "x.raucb", "mimeType": "application/octet-stream", "buffer": good.read_bytes()}
    forged = page.request.post("/firmware/upload", multipart={"bundle": part})
    assert forged.status == 403

    # a release a rollout is using cannot be withdrawn; an unused one can
    in_use = server.admin.get("/rollouts").json()
    active = [r for r in in_use if r["status"] in ("running", "paused")]
    if not active:
        server.admin.post(
            "/rollouts", json={"release": "0.2.0", "group": "reception"}
        ).raise_for_status()
    used = page.locator("#releases tr", has_text="0.2.0")
    used.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_role("alert")).to_contain_text("abort it first")
    row = page.locator(f"#releases tr[data-release='{release['id']}']")
    row.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_role("status")).to_contain_text("0.4.0) withdrawn")
    expect(row).to_have_attribute("data-withdrawn", "yes")
    expect(row.get_by_role("button", name="Withdraw")).to_have_count(0)
    expect(page.locator("select[name=release] option", has_text="0.4.0")).to_have_count(0)
    audit = server.admin.get("/audit", params={"action": "firmware.withdraw"}).json()
    assert audit[0]["actor"] == "admin:alice"
    assert server.admin.get(f"/firmware/{release['id']}").json()["withdrawn"] is True


def test_stage_time_limit_from_the_rollout_form(page: Page, server: ProvisioningServer) -> None:
    for rollout in server.admin.get("/rollouts").json():
        if rollout["status"] in ("running", "paused"):
            server.admin.post(f"/rollouts/{rollout['id']}/abort").raise_for_status()
    login(page, "alice")
    page.goto("/firmware")
    page.get_by_label("Release").select_option(label=f"{COMPATIBLE} 0.2.0")
    page.get_by_label("Scope").select_option("reception")
    page.get_by_label("Stage time limit (minutes, 0: none)").fill("90")
    page.get_by_role("button", name="Start rollout").click()
    expect(page.get_by_role("status")).to_contain_text("phone(s) told now")
    expect(page.locator("#rollouts tbody tr").first).to_contain_text("stage limit 90.0 min")
    assert server.admin.get("/rollouts").json()[0]["stage_timeout_s"] == 5400
