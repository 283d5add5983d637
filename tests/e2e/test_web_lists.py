"""Web UI lists and request handling in-process (real app, real SQLite or PostgreSQL):
paging with filters kept, the newest status per device, "not seen" from the poll interval,
server-side logout, Post/Redirect/Get for refused forms, and the HTML 404 page.

The device-list queries (window function over the page's ids, paging order) run on both
backends; the rest run on SQLite only, which keeps the module fast.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from offhook.provisioning.admin_auth import create_admin
from offhook.provisioning.app import create_app
from offhook.provisioning.models import (
    DEVICE_APPROVED,
    AuditEntry,
    CallRecordRow,
    Device,
    Group,
    QualityRecord,
    StatusReport,
)
from offhook.provisioning.settings import ServerSettings
from offhook.provisioning.web.liveness import POLL_INTERVAL_ENV, poll_interval_from_env
from offhook.provisioning.web.sessions import SESSION_COOKIE
from tests.fixtures.postgres import PostgresCluster, postgres_cluster  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD = "lists-test-password"
POLL_INTERVAL_S = 600  # "not seen" after 2 x 600 s x 1.2 = 24 min
PAGED = 30  # devices matching the filter: a full page of 25 and 5 more
# Far from the threshold on both sides, so a slow run cannot move a device across it.
SEEN_RECENTLY_S = 10
SEEN_LONG_AGO_S = 7200


def _now() -> datetime:
    return datetime.now(UTC)


def _seed_devices(app: FastAPI) -> dict[str, dict[str, Any]]:
    """PAGED devices named "Paging NN" in one group, each with an older report (every line
    down) and a newer one (registered when NN is even); odd NN were last seen long ago.
    Plus two devices outside the filter."""
    expected: dict[str, dict[str, Any]] = {}
    now = _now()
    with app.state.database.session() as db:
        group = Group(name="Paging floor", kind="group")
        db.add(group)
        db.flush()
        for i in range(PAGED):
            seen = now - timedelta(seconds=SEEN_LONG_AGO_S if i % 2 else SEEN_RECENTLY_S)
            device = Device(
                mac=f"b8:27:eb:10:00:{i:02x}",
                name=f"Paging {i:02d}",
                group_id=group.id,
                status=DEVICE_APPROVED,
                last_seen=seen,
                secret_hash=uuid.uuid4().hex,  # enrolled: the dashboard's health counts it
            )
            db.add(device)
            db.flush()
            for age_s, registered in ((3600, False), (0, i % 2 == 0)):
                db.add(
                    StatusReport(
                        id=uuid.uuid4().hex,
                        device_id=device.id,
                        time=seen - timedelta(seconds=age_s),
                        lines=[{"account": 0, "user": f"4{i:03d}", "registered": registered}],
                    )
                )
            expected[device.id] = {"registered": i % 2 == 0, "online": i % 2 == 0}
        for i in range(2):
            db.add(Device(mac=f"b8:27:eb:20:00:{i:02x}", name=f"Other {i}", status="pending"))
        create_admin(db, "alice", PASSWORD, "admin")
    return expected


def _make_app(tmp_path: Path, db_url: str = "") -> FastAPI:
    settings = ServerSettings(
        data_dir=tmp_path, db_url=db_url, purge_interval_s=0, notify_enabled=False
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POLL_INTERVAL_ENV, str(POLL_INTERVAL_S))
        return create_app(settings)


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def _login(client: TestClient, username: str = "alice") -> str:
    token = _token(client.get("/login").text)
    reply = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    return _token(client.get("/").text)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, dict[str, Any]]]]:
    """One seeded app per backend, shared by the read-only tests below."""
    db_url = ""
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        db_url = cluster.create_database()
    app = _make_app(tmp_path_factory.mktemp(f"lists-{request.param}"), db_url)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        expected = _seed_devices(app)
        _login(client)
        yield client, expected


def _device_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-device="([^"]+)"', html)


def _link(html: str, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="{rel}">', html)
    return match.group(1).replace("&amp;", "&") if match else None


def test_devices_list_pages_keep_filters_and_show_each_newest_status(
    seeded: tuple[TestClient, dict[str, dict[str, Any]]],
) -> None:
    client, expected = seeded
    first = client.get("/devices", params={"q": "paging", "per": "25"})
    assert first.status_code == 200
    first_ids = _device_ids(first.text)
    assert len(first_ids) == 25
    assert _link(first.text, "prev") is None
    next_url = _link(first.text, "next")
    assert next_url is not None
    assert "q=paging" in next_url and "per=25" in next_url and "page=2" in next_url

    second = client.get(next_url)
    second_ids = _device_ids(second.text)
    assert len(second_ids) == PAGED - 25
    assert _link(second.text, "next") is None
    assert _link(second.text, "prev") == "/devices?q=paging&per=25"
    # Every matching device exactly once, in name order, none of the others.
    assert sorted(first_ids + second_ids) == sorted(expected)
    assert len(set(first_ids + second_ids)) == PAGED

    # The live refresh of page 2 returns the same rows.
    rows = client.get("/devices/rows", params={"q": "paging", "per": "25", "page": "2"})
    assert _device_ids(rows.text) == second_ids

    # Each row shows its newest report and, from the poll interval, whether it is overdue.
    for html in (first.text, second.text):
        for block in re.findall(r'<tr data-device="[^"]+">.*?</tr>', html, re.S):
            device_id = re.search(r'data-device="([^"]+)"', block).group(1)  # type: ignore[union-attr]
            want = expected[device_id]
            assert ("unregistered" not in block) == want["registered"], block
            assert ("not seen" not in block) == want["online"], block


def test_dashboard_counts_not_seen_from_the_poll_interval(
    seeded: tuple[TestClient, dict[str, dict[str, Any]]],
) -> None:
    client, expected = seeded
    page = client.get("/").text
    assert "not seen for 24 min" in page
    offline = re.search(r'id="health-offline">(\d+)<', page)
    assert offline is not None
    assert int(offline.group(1)) == sum(1 for e in expected.values() if not e["online"])


def test_poll_interval_setting_is_checked() -> None:
    assert poll_interval_from_env({}) == 3600
    assert poll_interval_from_env({POLL_INTERVAL_ENV: "600"}) == 600
    for bad in ("5", "ten", "-60"):
        with pytest.raises(ValueError, match=POLL_INTERVAL_ENV):
            poll_interval_from_env({POLL_INTERVAL_ENV: bad})


# --- SQLite only from here -------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = _make_app(tmp_path)
    with app.state.database.session() as db:
        create_admin(db, "alice", PASSWORD, "admin")
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_calls_quality_and_audit_pages_keep_their_filters(client: TestClient) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    start = _now().timestamp() - 10_000
    with app.state.database.session() as db:
        device = Device(mac="b8:27:eb:30:00:01", name="Busy phone", status=DEVICE_APPROVED)
        db.add(device)
        db.flush()
        for i in range(PAGED + 3):
            direction = "incoming" if i < 3 else "outgoing"
            db.add(
                CallRecordRow(
                    id=f"call-{i:03d}",
                    device_id=device.id,
                    direction=direction,
                    start=start + i,
                    end=start + i + 30,
                    disposition="answered",
                )
            )
            db.add(
                QualityRecord(id=f"q-{i:03d}", device_id=device.id, time=_now(), mos=1.0 + i / 100)
            )
            db.add(AuditEntry(actor="admin:bob" if i < PAGED else "admin:carol", action="x.y"))
    _login(client)

    cdrs = client.get("/cdrs", params={"direction": "outgoing", "per": "25"}).text
    outgoing_newest_first = [f"call-{i:03d}" for i in range(PAGED + 2, 2, -1)]
    assert re.findall(r'data-call="([^"]+)"', cdrs) == outgoing_newest_first[:25]
    next_url = _link(cdrs, "next")
    assert next_url is not None and "direction=outgoing" in next_url
    rest = client.get(next_url).text
    assert re.findall(r'data-call="([^"]+)"', rest) == outgoing_newest_first[25:]
    assert _link(rest, "next") is None and "calls 26-30" in rest

    quality = client.get("/quality", params={"per": "25"}).text
    worst_first = [f"q-{i:03d}" for i in range(PAGED + 3)]
    assert re.findall(r'data-quality="([^"]+)"', quality) == worst_first[:25]
    second = client.get(_link(quality, "next") or "").text
    assert re.findall(r'data-quality="([^"]+)"', second) == worst_first[25:]
    assert "calls 26-33" in second and _link(second, "next") is None

    audit = client.get("/audit", params={"actor": "bob", "per": "25"}).text
    assert audit.count('<tr data-action="x.y">') == 25 and "admin:carol" not in audit
    more = client.get(_link(audit, "next") or "").text
    assert "actor=bob" in (_link(more, "prev") or "")
    assert more.count('<tr data-action="x.y">') == PAGED - 25
    assert "entries 26-30" in more and "admin:carol" not in more

    # A hand-edited address still gets a list: bad numbers fall back to page 1 / 50 per page.
    odd = client.get("/audit", params={"actor": "bob", "page": "zzz", "per": "7"})
    assert odd.status_code == 200 and "Page 1 " in odd.text
    assert odd.text.count('<tr data-action="x.y">') == PAGED


def test_logout_ends_the_session_on_the_server(client: TestClient, tmp_path: Path) -> None:
    _login(client)
    stolen = client.cookies.get(SESSION_COOKIE)
    assert stolen
    with TestClient(client.app, base_url="http://127.0.0.1") as other:
        _login(other)  # the same user's other session is unaffected by this logout
        token = _token(client.get("/").text)
        reply = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        assert reply.status_code == 303
        with TestClient(client.app, base_url="http://127.0.0.1") as thief:
            thief.cookies.set(SESSION_COOKIE, stolen)
            page = thief.get("/devices", follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"].startswith("/login")
            assert thief.get("/api/v1/admin/me").status_code == 401
        assert other.get("/devices", follow_redirects=False).status_code == 200
    admins = client.get("/login", follow_redirects=False)
    assert admins.status_code == 200  # logged out: the login form, not a redirect


def test_refused_form_redirects_back_and_shows_its_error_once(client: TestClient) -> None:
    token = _login(client)
    app: FastAPI = client.app  # type: ignore[assignment]
    with app.state.database.session() as db:
        device = Device(mac="b8:27:eb:40:00:01", status=DEVICE_APPROVED)
        db.add(device)
        db.flush()
        device_id = device.id
    reply = client.post(
        f"/devices/{device_id}/settings",
        data={"key": "audio.tone_plan", "value": "klingon", "csrf_token": token},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/devices/{device_id}#settings"
    shown = client.get(f"/devices/{device_id}").text
    assert 'id="setting-error"' in shown and "audio.tone_plan" in shown
    assert 'value="klingon"' in shown
    again = client.get(f"/devices/{device_id}").text
    assert 'id="setting-error"' not in again
    # The one-shot state belongs to the page it was left for.
    client.post(
        f"/devices/{device_id}/settings",
        data={"key": "audio.tone_plan", "value": "klingon", "csrf_token": token},
    )
    assert 'id="setting-error"' not in client.get("/fleet").text
    # An empty key gets the same guidance on the device form as on the fleet and group forms.
    client.post(
        f"/devices/{device_id}/settings",
        data={"key": "  ", "value": "uk", "csrf_token": token},
        follow_redirects=False,
    )
    assert "choose a setting, e.g. audio.tone_plan" in client.get(f"/devices/{device_id}").text


def test_unknown_ui_path_gets_an_html_404_and_the_api_keeps_json(client: TestClient) -> None:
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    page = client.get("/no/such/page", headers=browser)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text and "/no/such/page" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    api = client.get("/api/v1/admin/no-such-thing", headers=browser)
    assert api.status_code in (401, 404)
    assert api.json()["code"] in ("unauthorized", "not_found")
    machine = client.get("/no/such/page", headers={"accept": "application/json"})
    assert (machine.status_code, machine.json()["code"]) == (404, "not_found")


REFUSED_FORMS = [
    ("/groups", {"name": "", "kind": "group"}, "/groups"),
    ("/templates", {"name": "Broken", "settings": "{not json"}, "/templates"),
    ("/fleet/settings", {"key": "audio.tone_plan", "value": "klingon"}, "/fleet"),
    ("/admins", {"username": "has space", "password": "x", "role": "operator"}, "/admins"),
    ("/privacy/erase", {"kind": "device", "subject": "abc", "confirm": "xyz"}, "/privacy"),
    ("/tokens", {"name": "t", "days": "0", "max_uses": "1"}, "/tokens"),
]


def test_every_refused_form_redirects_and_reload_is_harmless(client: TestClient) -> None:
    token = _login(client)
    for action, fields, page in REFUSED_FORMS:
        reply = client.post(action, data={**fields, "csrf_token": token}, follow_redirects=False)
        assert reply.status_code == 303, (action, reply.status_code)
        assert reply.headers["location"].split("#")[0] == page
        shown = client.get(page).text
        assert 'role="alert"' in shown, action
        assert 'role="alert"' not in client.get(page).text, f"{page}: error shown twice"


def test_created_token_is_shown_once_after_the_redirect(client: TestClient) -> None:
    token = _login(client)
    form = {"name": "once", "days": "1", "max_uses": "1", "csrf_token": token}
    reply = client.post("/tokens", data=form, follow_redirects=False)
    assert (reply.status_code, reply.headers["location"]) == (303, "/tokens")
    first = client.get("/tokens").text
    plain = re.search(r'<code id="new-token">([^<]+)</code>', first)
    assert plain is not None and len(plain.group(1)) >= 24
    second = client.get("/tokens").text
    assert 'id="new-token"' not in second and plain.group(1) not in second
    app: FastAPI = client.app  # type: ignore[assignment]
    with app.state.database.session() as db:
        names = [e.action for e in db.query(AuditEntry).filter_by(action="enrollment_token.create")]
    assert len(names) == 1


def test_wrong_password_redirects_back_to_the_form(client: TestClient) -> None:
    token = _token(client.get("/login").text)
    form = {"username": "alice", "password": "wrong", "next": "/devices", "csrf_token": token}
    reply = client.post("/login", data=form, follow_redirects=False)
    assert (reply.status_code, reply.headers["location"]) == (303, "/login?next=%2Fdevices")
    shown = client.get(reply.headers["location"]).text
    assert "Wrong username or password." in shown and 'value="alice"' in shown
    assert 'name="next" value="/devices"' in shown
    assert "Wrong username or password." not in client.get("/login").text
