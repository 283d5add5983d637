"""Web UI hardening in real headless Chromium against the real server (``offhook server``):
destructive actions confirmed on a page of their own (with JavaScript off), API tokens on
/api-tokens, tokens ended by a new password or a disabled account, and /docs working with no
network beyond the server under its Content-Security-Policy.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD = "security-test-password"


def _mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    with ProvisioningServer(tmp_path_factory.mktemp("web-security")) as running:
        for name, role in (("alice", "admin"), ("olga", "operator"), ("rita", "read-only")):
            running.admin.post(
                "/users", json={"username": name, "password": PASSWORD, "role": role}
            ).raise_for_status()
        yield running


def _context(browser: Browser, server: ProvisioningServer, *, javascript: bool) -> BrowserContext:
    ctx = browser.new_context(base_url=server.base_url, java_script_enabled=javascript)
    ctx.set_default_timeout(15000)
    return ctx


@pytest.fixture
def page(browser: Browser, server: ProvisioningServer) -> Iterator[Page]:
    """A page of a fresh context with JavaScript off: every flow here must work without it."""
    ctx = _context(browser, server, javascript=False)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def login(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Signed in as {username}")


def _form_token(page: Page) -> str:
    value = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert value
    return value


def _bearer(server: ProvisioningServer, token: str) -> httpx.Client:
    return server.device_client(headers={"Authorization": f"Bearer {token}"})


# --- destructive actions ask first --------------------------------------------------------------


def test_deleting_a_site_says_how_many_devices_and_asks_first(
    server: ProvisioningServer, page: Page
) -> None:
    site = "Depot " + secrets.token_hex(2)
    group = server.admin.post("/groups", json={"name": site, "kind": "site"}).json()
    server.admin.patch(
        f"/groups/{group['id']}/settings", json={"set": {"audio.tone_plan": "uk"}}
    ).raise_for_status()
    macs = [_mac() for _ in range(3)]
    for mac in macs:
        server.add_device(mac, group=site)
    login(page, "olga")
    page.goto(f"/groups/{group['id']}")

    page.get_by_role("button", name="Delete this site…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delete site {site}?")
    consequences = page.locator("#consequences")
    expect(consequences).to_contain_text("3 devices will leave it and have no group")
    expect(consequences).to_contain_text("Its own settings (1 section) are deleted")
    assert server.admin.get(f"/groups/{group['id']}").status_code == 200  # nothing yet

    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Site {site}")
    assert server.admin.get(f"/groups/{group['id']}").status_code == 200

    # A hand-made POST without the confirmation lands on the question, deleting nothing.
    direct = page.request.post(
        f"/groups/{group['id']}/delete", form={"csrf_token": _form_token(page)}, max_redirects=0
    )
    assert direct.status == 303
    assert direct.headers["location"] == f"/groups/{group['id']}/delete"
    assert server.admin.get(f"/groups/{group['id']}").status_code == 200

    page.get_by_role("button", name="Delete this site…").click()
    page.get_by_role("button", name=f"Delete site {site}").click()
    expect(page).to_have_url(re.compile(r"/groups$"))
    expect(page.get_by_role("status").first).to_contain_text(f"Group {site} deleted")
    assert server.admin.get(f"/groups/{group['id']}").status_code == 404
    for mac in macs:  # the devices stay, without a group
        assert server.admin.get(f"/devices/{mac}").json()["group_id"] is None


def test_a_group_with_subgroups_cannot_be_confirmed(server: ProvisioningServer, page: Page) -> None:
    parent = "Region " + secrets.token_hex(2)
    made = server.admin.post("/groups", json={"name": parent, "kind": "site"}).json()
    server.admin.post("/groups", json={"name": parent + " east", "parent": parent})
    login(page, "alice")
    page.goto(f"/groups/{made['id']}/delete")
    expect(page.get_by_role("alert")).to_contain_text(f"{parent} east")
    expect(page.get_by_role("button", name=f"Delete site {parent}")).to_have_count(0)


def test_template_and_line_removal_ask_first(server: ProvisioningServer, page: Page) -> None:
    name = "quiet-" + secrets.token_hex(2)
    site = "Office " + secrets.token_hex(2)
    template = server.admin.post(
        "/templates", json={"name": name, "settings": {"features": {"dnd": True}}}
    ).json()
    server.admin.post("/groups", json={"name": site}).raise_for_status()
    server.admin.put(f"/groups/{site}/templates/{name}").raise_for_status()
    mac = _mac()
    device = server.add_device(mac, group=site)
    line = server.add_line(mac, extension="4711", registrar="pbx.test")
    login(page, "olga")

    page.goto(f"/templates/{template['id']}")
    page.get_by_role("button", name="Delete template…").click()
    expect(page.locator("#consequences")).to_contain_text(
        f"attached to 1 group ({site}): the configs of 1 device change"
    )
    assert server.admin.get("/templates").json()[0]["name"] == name
    page.get_by_role("button", name=f"Delete template {name}").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Template {name} deleted")
    assert all(t["name"] != name for t in server.admin.get("/templates").json())

    page.goto(f"/devices/{device['id']}")
    page.locator("#device-lines").get_by_role("button", name="Remove…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Remove line 4711?")
    assert len(server.admin.get(f"/devices/{mac}").json()["lines"]) == 1
    page.get_by_role("button", name="Remove line 4711").click()
    expect(page.get_by_role("status").first).to_contain_text("Line removed")
    assert server.admin.get(f"/devices/{mac}").json()["lines"] == []
    removed = server.admin.get("/audit", params={"action": "line.delete"}).json()
    assert removed[0]["target_id"] == str(line["id"]) and removed[0]["actor"] == "admin:olga"


# --- API tokens ---------------------------------------------------------------------------------


def test_read_only_user_manages_own_expiring_api_tokens(
    server: ProvisioningServer, page: Page
) -> None:
    login(page, "rita")
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API tokens")
    page.get_by_label("Name").fill("forever")
    page.get_by_label(re.compile(r"Valid for")).fill("36500")
    page.get_by_role("button", name="Create API token").click()
    expect(page.get_by_role("alert")).to_contain_text("at most 90 days")

    page.get_by_label("Name").fill("dashboard")
    page.get_by_label(re.compile(r"Valid for")).fill("")  # the default
    page.get_by_role("button", name="Create API token").click()
    expect(page.get_by_role("status").first).to_contain_text("API token dashboard created")
    token = page.locator("#new-api-token").inner_text()
    assert token.startswith("ohk_")
    row = page.locator("#api-tokens tbody tr", has_text="dashboard")
    expect(row).to_contain_text("active")
    expires = re.search(
        r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", row.locator("td").nth(3).inner_text()
    )
    assert expires is not None
    lifetime = datetime.strptime(expires.group(1), "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=UTC
    ) - datetime.now(UTC)
    assert timedelta(days=29) < lifetime <= timedelta(days=30)
    with _bearer(server, token) as api:
        assert api.get("/api/v1/admin/me").json() == {"username": "rita", "role": "read-only"}

        page.reload()  # shown once
        expect(page.locator("#new-api-token")).to_have_count(0)
        row = page.locator("#api-tokens tbody tr", has_text="dashboard")
        row.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status").first).to_contain_text("API token dashboard revoked")
        expect(page.locator("#api-tokens tbody tr", has_text="dashboard")).to_contain_text(
            "revoked"
        )
        assert api.get("/api/v1/admin/me").status_code == 401
    # Someone else's tokens are not listed for her; an admin sees them all.
    expect(page.locator("#api-tokens")).not_to_contain_text("fixture")


def test_new_password_or_disabled_account_ends_api_tokens(
    server: ProvisioningServer, page: Page
) -> None:
    tokens = {}
    for name in ("pat-" + secrets.token_hex(2), "dan-" + secrets.token_hex(2)):
        server.admin.post(
            "/users", json={"username": name, "password": PASSWORD, "role": "operator"}
        ).raise_for_status()
        made = server.fleet("api-tokens", "create", "--user", name, "--name", "automation")
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip().splitlines()[-1]
        with _bearer(server, tokens[name]) as api:
            assert api.get("/api/v1/admin/me").status_code == 200
    pat, dan = tokens
    login(page, "alice")
    page.goto("/admins")
    row = page.locator(f'#admins tr[data-user="{pat}"]')
    row.get_by_text("New password").click()
    row.get_by_label(f"New password for {pat}").fill("another-password-42")
    row.get_by_role("button", name="Set password").click()
    expect(page.get_by_role("status").first).to_contain_text(f"New password set for {pat}")
    with _bearer(server, tokens[pat]) as api:
        assert api.get("/api/v1/admin/me").status_code == 401

    page.locator(f'#admins tr[data-user="{dan}"]').get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status").first).to_contain_text(f"{dan}: disabled")
    page.locator(f'#admins tr[data-user="{dan}"]').get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status").first).to_contain_text(f"{dan}: enabled")
    with _bearer(server, tokens[dan]) as api:  # enabled again, the old token stays dead
        assert api.get("/api/v1/admin/me").status_code == 401

    page.get_by_role("link", name="API tokens").click()  # the admin sees everyone's
    for name in (pat, dan):
        expect(page.locator("#api-tokens tbody tr", has_text=name)).to_contain_text("revoked")


# --- /docs --------------------------------------------------------------------------------------


def test_api_docs_render_offline_under_the_csp(
    browser: Browser, server: ProvisioningServer
) -> None:
    ctx = _context(browser, server, javascript=True)
    elsewhere: list[str] = []
    problems: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(server.base_url):
            route.continue_()
        else:  # what an offline network does to a CDN
            elsewhere.append(route.request.url)
            route.abort()

    try:
        ctx.route("**/*", only_this_server)
        page = ctx.new_page()
        page.on(
            "console",
            lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        response = page.goto("/docs")
        assert (
            response is not None
            and "default-src 'self'" in response.headers["content-security-policy"]
        )
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "offhook provisioning server"
        )
        operation = page.locator(".opblock", has_text="/api/v1/admin/devices/import")
        expect(operation.first).to_be_visible()
        operation.first.locator(".opblock-summary").click()  # expands: the script runs fully
        expect(page.locator(".opblock-body").first).to_be_visible()
    finally:
        ctx.close()
    assert elsewhere == []
    assert [p for p in problems if "Content Security Policy" in p or "Refused" in p] == []
