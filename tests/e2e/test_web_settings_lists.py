"""The settings editor's lists of tables (BLF keys, phonebook), in real headless Chromium
against the real server: a row per item with the item's fields from the schema, rows added,
reordered and removed without JavaScript, a bad value refused with its row and field named and
every typed row kept, and the saved rows in the config the phone itself fetches. SIP accounts
are the device's lines (their own form on the device page): the BLF key's ``account`` names one.

Set OFFHOOK_WEB_SCREENSHOTS=DIR to keep the page's screenshot (docs/web-ui.md uses it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 42410  # this module's port (42400-42499 are set aside for these tests)
PASSWORD = "lists-password-1"
MAC = "b8:27:eb:42:41:01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path_factory.mktemp("lists"))
    running.port = PORT
    with running:
        for name, role in (("alice", "admin"), ("olga", "operator")):
            body = {"username": name, "password": PASSWORD, "role": role}
            running.admin.post("/users", json=body).raise_for_status()
        running.admin.post("/groups", json={"name": "Sales", "kind": "group"}).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def phone(server: ProvisioningServer) -> DeviceCredential:
    return server.enroll(MAC, name="Front desk", group="Sales")


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


def shot(part: Locator, name: str) -> None:
    """The list's own part of the (long) device page."""
    where = os.environ.get("OFFHOOK_WEB_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        part.screenshot(path=str(Path(where) / f"{name}.png"))


def fetched_config(phone: DeviceCredential) -> dict[str, Any]:
    """What the phone itself receives from the device API."""
    with phone.client() as client:
        reply = client.get("/api/v1/device/config")
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        return body


def open_list(page: Page, name: str) -> Locator:
    section = page.locator(f"#list-{name}")
    if section.get_attribute("open") is None:
        section.locator("summary").click()
    return section


def cell(section: Locator, name: str, row: int, field: str) -> Locator:
    return section.get_by_label(f"{name} row {row} {field}", exact=True)


def test_an_account_and_blf_keys_reach_the_phone_and_a_bad_row_keeps_the_others(
    server: ProvisioningServer, phone: DeviceCredential, page: Page
) -> None:
    login(page, "olga")
    page.goto(f"/devices/{phone.device_id}")
    # The account: the device's line form.
    form = page.locator(f'form[action="/devices/{phone.device_id}/lines"]')
    form.get_by_label("Extension").fill("2001")
    form.get_by_label("Registrar").fill("pbx.example")
    form.get_by_label("SIP password").fill("line-secret-2001")
    form.get_by_role("button", name="Add line").click()
    expect(page.get_by_role("status").first).to_contain_text("2001")

    blf = open_list(page, "blf")
    header = blf.locator("thead")
    expect(header).to_contain_text("integer, 0\u2013\u2026")  # account: the schema's range
    expect(header).to_contain_text("required")  # extension has no default
    blf.get_by_role("button", name="Add a blf row").click()
    blf = open_list(page, "blf")
    cell(blf, "blf", 1, "extension").fill("2002")
    cell(blf, "blf", 1, "label").fill("Ann")
    cell(blf, "blf", 1, "account").fill("0")
    blf.get_by_role("button", name="Add a blf row").click()  # the typed row comes back
    blf = open_list(page, "blf")
    expect(cell(blf, "blf", 1, "extension")).to_have_value("2002")
    expect(blf.get_by_role("status")).to_contain_text("Not saved yet")
    cell(blf, "blf", 2, "extension").fill("bad ext")
    cell(blf, "blf", 2, "account").fill("-1")
    blf.get_by_role("button", name="Save [[blf]]").click()

    # Refused: each problem beside its field, named by row; every typed row kept.
    blf = open_list(page, "blf")
    expect(blf.locator("#list-blf-1-extension-error")).to_contain_text(
        "blf[1].extension: extension must be 1-64 of letters"
    )
    expect(blf.locator("#list-blf-1-account-error")).to_contain_text(
        "blf[1].account: -1 is below 0"
    )
    expect(cell(blf, "blf", 2, "extension")).to_have_attribute("aria-invalid", "true")
    expect(cell(blf, "blf", 1, "extension")).to_have_value("2002")
    expect(cell(blf, "blf", 1, "label")).to_have_value("Ann")
    expect(cell(blf, "blf", 2, "extension")).to_have_value("bad ext")
    assert "blf" not in fetched_config(phone) or fetched_config(phone)["blf"] == []

    cell(blf, "blf", 2, "extension").fill("2003")
    cell(blf, "blf", 2, "account").fill("")  # the schema's default, line 0
    blf.get_by_role("button", name="Move blf row 2 up").click()
    blf = open_list(page, "blf")
    expect(cell(blf, "blf", 1, "extension")).to_have_value("2003")
    shot(blf, "settings-lists")
    blf.get_by_role("button", name="Save [[blf]]").click()
    expect(page.get_by_role("status").first).to_contain_text("List blf saved")

    config = fetched_config(phone)
    assert [(k["extension"], k["label"], k["account"]) for k in config["blf"]] == [
        ("2003", "", 0),
        ("2002", "Ann", 0),
    ]
    assert config["accounts"][0]["user"] == "2001"
    assert config["accounts"][0]["password"] == "line-secret-2001"

    # A row removed and saved: the phone loses that key.
    blf = open_list(page, "blf")
    blf.get_by_role("button", name="Remove blf row 1").click()
    open_list(page, "blf").get_by_role("button", name="Save [[blf]]").click()
    expect(page.get_by_role("status").first).to_contain_text("List blf saved")
    assert [k["extension"] for k in fetched_config(phone)["blf"]] == ["2002"]


def test_a_key_naming_a_line_the_schema_cannot_check_alone_is_refused_at_its_row(
    server: ProvisioningServer, page: Page
) -> None:
    """On a template nothing knows the lines; a wrong type is still named by row and field."""
    template = server.admin.post("/templates", json={"name": "Reception", "settings": {}})
    template.raise_for_status()
    login(page, "olga")
    page.goto(f"/templates/{template.json()['id']}")
    blf = open_list(page, "blf")
    blf.get_by_role("button", name="Add a blf row").click()
    blf = open_list(page, "blf")
    cell(blf, "blf", 1, "extension").fill("2010")
    cell(blf, "blf", 1, "account").fill("1.5")  # not a whole number
    blf.get_by_role("button", name="Save [[blf]]").click()
    blf = open_list(page, "blf")
    expect(blf.locator("#list-blf-0-account-error")).to_contain_text("'1.5' is not a number")
    expect(cell(blf, "blf", 1, "extension")).to_have_value("2010")
    cell(blf, "blf", 1, "account").fill("1")  # line 2: checked against each phone's lines
    blf.get_by_role("button", name="Save [[blf]]").click()
    expect(page.get_by_role("status").first).to_contain_text("List blf saved")
    (stored,) = [t for t in server.admin.get("/templates").json() if t["name"] == "Reception"]
    assert stored["settings"]["blf"] == [{"extension": "2010", "label": "", "account": 1}]


def test_a_group_phonebook_reaches_its_phones_and_the_fleet_page_has_the_lists(
    server: ProvisioningServer, phone: DeviceCredential, page: Page
) -> None:
    group = server.admin.get("/groups/Sales").json()
    login(page, "alice")
    page.goto(f"/groups/{group['id']}")
    book = open_list(page, "phonebook")
    book.get_by_role("button", name="Add a phonebook row").click()
    book = open_list(page, "phonebook")
    cell(book, "phonebook", 1, "name").fill("Reception")
    cell(book, "phonebook", 1, "number").fill("100")
    book.get_by_role("button", name="Add a phonebook row").click()
    book = open_list(page, "phonebook")
    cell(book, "phonebook", 2, "name").fill("Nobody")  # no number: required
    book.get_by_role("button", name="Save [[phonebook]]").click()
    book = open_list(page, "phonebook")
    expect(book.locator("#list-phonebook-1-number-error")).to_contain_text("Field required")
    expect(cell(book, "phonebook", 1, "name")).to_have_value("Reception")
    book.get_by_role("button", name="Remove phonebook row 2").click()
    open_list(page, "phonebook").get_by_role("button", name="Save [[phonebook]]").click()
    expect(page.get_by_role("status").first).to_contain_text("List phonebook saved")
    assert fetched_config(phone)["phonebook"] == [
        {"name": "Reception", "number": "100", "speed_dial": ""}
    ]

    # The device inherits it: its page says so and offers the rows as a start of its own.
    page.goto(f"/devices/{phone.device_id}")
    book = open_list(page, "phonebook")
    expect(book.locator("summary")).to_contain_text("inherited: 1 rows from group Sales")
    book.get_by_role("button", name="Copy the 1 inherited rows").click()
    expect(cell(open_list(page, "phonebook"), "phonebook", 1, "name")).to_have_value("Reception")

    page.goto("/fleet")
    expect(
        open_list(page, "phonebook").get_by_role("button", name="Save [[phonebook]]")
    ).to_be_visible()
