"""Call analytics against the real ``offhook server``: two phones report both legs of a call
between them (with the Call-ID, as the firmware sends it), another phone's firmware sends none;
the REST API joins, counts, trends and exports them, audits the reads, refuses bad queries, and
``offhook fleet calls`` prints the same."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.postgres import postgres_cluster  # noqa: F401 (fixture)
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration

PORT = 42310  # this module's loopback ports: 42310 (SQLite), 42311 (PostgreSQL)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvisioningServer]:
    db_url = ""
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres_cluster").create_database()
    running = ProvisioningServer(tmp_path_factory.mktemp("call-analytics"), db_url)
    running.port = PORT + (request.param == "postgres")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _leg(rid: str, direction: str, start: float, **fields: Any) -> dict[str, Any]:
    """A CDR as the phone's outbox posts it (firmware/runtime.py: asdict of the CallRecord)."""
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
        "reason": "",
        "count": 1,
        **fields,
    }


def _quality(rid: str, leg_id: str, when: float, mos: float) -> dict[str, Any]:
    return {
        "id": rid,
        "call_record_id": leg_id,
        "time": datetime.fromtimestamp(when, UTC).isoformat(),
        "codec": "G722",
        "jitter_ms": 4.0,
        "loss_pct": 0.5,
        "rtt_ms": 20.0,
        "mos": mos,
    }


@pytest.fixture(scope="module")
def fleet_calls(server: ProvisioningServer) -> dict[str, Any]:
    """Yesterday 09:00 UTC (11:00 in Berlin in summer, 10:00 in winter): Alice (1001) calls Bob
    (1002), answered, 2 min; Bob misses a call from Alice; Carol's older firmware reports an
    outside call without a Call-ID."""
    site = server.admin.post("/groups", json={"name": "Berlin office", "kind": "site"}).json()
    alice = server.enroll("b8:27:eb:00:aa:01", name="Alice desk", group=site["name"])
    bob = server.enroll("b8:27:eb:00:aa:02", name="Bob desk", group=site["name"])
    carol = server.enroll("b8:27:eb:00:aa:03", name="Carol desk")
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    t = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC).timestamp()
    a_uri, b_uri = "sip:1001@pbx.example", "sip:1002@pbx.example"
    with alice.client() as phone:
        legs = [
            _leg("a-1", "outgoing", t, local_uri=a_uri, remote_uri=b_uri, remote_name="Bob",
                 answer=t + 4, end=t + 124, sip_call_id="call-one@10.0.0.1"),
            _leg("a-2", "outgoing", t + 3600, local_uri=a_uri, remote_uri=b_uri,
                 disposition="no_answer", status_code=487, sip_call_id="call-two@10.0.0.1"),
        ]  # fmt: skip
        assert phone.post("/api/v1/device/cdrs", json={"records": legs}).json()["accepted"] == [
            "a-1",
            "a-2",
        ]
        phone.post(
            "/api/v1/device/quality", json={"records": [_quality("qa-1", "a-1", t + 124, 4.3)]}
        ).raise_for_status()
    with bob.client() as phone:
        legs = [
            _leg("b-1", "incoming", t + 0.3, local_uri=b_uri, remote_uri=a_uri,
                 remote_name="Alice", answer=t + 4, end=t + 124.2,
                 sip_call_id="call-one@10.0.0.1"),
            _leg("b-2", "incoming", t + 3600.2, local_uri=b_uri, remote_uri=a_uri,
                 disposition="missed", status_code=487, sip_call_id="call-two@10.0.0.1"),
        ]  # fmt: skip
        phone.post("/api/v1/device/cdrs", json={"records": legs}).raise_for_status()
        phone.post(
            "/api/v1/device/quality", json={"records": [_quality("qb-1", "b-1", t + 124, 3.1)]}
        ).raise_for_status()
    with carol.client() as phone:
        legacy = _leg("c-1", "outgoing", t + 7200, local_uri="sip:1003@pbx.example",
                      remote_uri="sip:+4930555@trunk", answer=t + 7210, end=t + 7270)  # fmt: skip
        for key in ("reason", "count"):
            del legacy[key]  # what firmware before the Call-ID sent
        phone.post("/api/v1/device/cdrs", json={"records": [legacy]}).raise_for_status()
    return {"day": day.isoformat(), "t": t, "site": site["name"], "alice": alice, "bob": bob}


def test_both_legs_are_one_call_with_names_links_and_both_mos(
    server: ProvisioningServer, fleet_calls: dict[str, Any]
) -> None:
    day = fleet_calls["day"]
    reply = server.admin.get("/calls", params={"from": day, "to": day, "tz": "Europe/Berlin"})
    assert reply.status_code == 200, reply.text
    calls = reply.json()
    assert [(c["call"], c["direction"], c["disposition"]) for c in calls] == [
        ("call-one@10.0.0.1", "internal", "answered"),
        ("call-two@10.0.0.1", "internal", "missed"),
        ("c-1", "outgoing", "answered"),
    ]
    one = calls[0]
    assert one["caller"]["device"] == "Alice desk" and one["caller"]["number"] == "1001"
    assert one["caller"]["device_id"] == fleet_calls["alice"].device_id
    assert one["callee"]["device"] == "Bob desk" and one["callee"]["name"] == "Bob"
    assert (one["caller_mos"], one["callee_mos"]) == (4.3, 3.1)
    assert sorted(one["legs"]) == ["a-1", "b-1"] and one["duration_s"] == pytest.approx(120.2)
    assert one["start_local"].endswith(("+02:00", "+01:00"))
    audit = server.admin.get("/audit", params={"action": "cdr.read"}).json()
    assert audit[0]["after"]["rows"] == 3 and audit[0]["after"]["tz"] == "Europe/Berlin"


def test_statistics_count_each_call_once_in_the_admins_zone(
    server: ProvisioningServer, fleet_calls: dict[str, Any]
) -> None:
    day = fleet_calls["day"]
    stats = server.admin.get(
        "/analytics/calls", params={"from": day, "to": day, "tz": "Europe/Berlin"}
    ).json()
    assert (stats["calls"], stats["answered"], stats["missed"], stats["rang_fleet"]) == (3, 2, 1, 2)
    assert stats["answer_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert stats["miss_rate"] == 0.5
    assert stats["average_duration_s"] == pytest.approx((120.2 + 60) / 2, abs=0.1)
    local = datetime.fromtimestamp(fleet_calls["t"], ZoneInfo("Europe/Berlin"))
    heat = stats["busy_hours"]
    assert heat[local.weekday()][local.hour] == 1 and heat[local.weekday()][local.hour + 1] == 1
    assert sum(map(sum, heat)) == 3
    assert stats["days"] == [
        {"day": day, "calls": 3, "answered": 2, "missed": 1, "mos": 3.7, "mos_samples": 2}
    ]
    site = server.admin.get(
        "/analytics/calls", params={"from": day, "to": day, "group": fleet_calls["site"]}
    ).json()
    assert site["calls"] == 2 and site["scope"]["group"] == "Berlin office"
    assert {d["device"] for d in site["devices"]} == {"Alice desk", "Bob desk"}
    one = server.admin.get(
        "/analytics/calls", params={"from": day, "to": day, "extension": "1003"}
    ).json()
    assert one["calls"] == 1 and one["devices"][0]["device"] == "Carol desk"


def test_quality_trend_counts_samples_and_filters_poor(
    server: ProvisioningServer, fleet_calls: dict[str, Any]
) -> None:
    day = fleet_calls["day"]
    trend = server.admin.get("/analytics/quality", params={"from": day, "to": day}).json()
    assert trend["samples"] == 2 and trend["days"] == [{"day": day, "mos": 3.7, "samples": 2}]
    assert [(d["label"], d["samples"], d["poor"]) for d in trend["devices"]] == [
        ("Bob desk", 1, 1),
        ("Alice desk", 1, 0),
    ]
    assert [(g["label"], g["samples"]) for g in trend["groups"]] == [("Berlin office", 2)]
    poor = server.admin.get(
        "/analytics/quality", params={"from": day, "to": day, "poor_only": "true"}
    ).json()
    assert poor["samples"] == 1 and poor["devices"][0]["label"] == "Bob desk"
    strict = server.admin.get(
        "/analytics/quality",
        params={"from": day, "to": day, "poor_only": "true", "threshold": "4.5"},
    ).json()
    assert strict["samples"] == 2


def test_billing_export_streams_one_row_per_call_and_is_audited(
    server: ProvisioningServer, fleet_calls: dict[str, Any]
) -> None:
    day = fleet_calls["day"]
    reply = server.admin.get(
        "/calls/export", params={"from": day, "to": day, "tz": "America/New_York"}
    )
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    assert "attachment" in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [r["call"] for r in rows] == ["call-one@10.0.0.1", "call-two@10.0.0.1", "c-1"]
    first = rows[0]
    start = datetime.fromtimestamp(fleet_calls["t"], UTC)
    assert first["start_utc"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    local = start.astimezone(ZoneInfo("America/New_York"))
    assert first["start_local"] == local.isoformat(timespec="seconds")
    assert (first["caller"], first["callee"], first["duration_s"]) == ("1001", "1002", "120")
    assert (first["direction"], first["disposition"], first["time_zone"]) == (
        "internal",
        "answered",
        "America/New_York",
    )
    audit = server.admin.get("/audit", params={"action": "cdr.read"}).json()
    assert audit[0]["target_id"] == "rest-export" and audit[0]["after"]["rows"] == 3


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"from": "2026-02-30"}, 422, "from: '2026-02-30' is not a date"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, 422, "from 2026-03-02 is after to 2026-03-01"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, 422, "at most 366"),
        ({"tz": "Mars/Olympus"}, 422, "'Mars/Olympus' is not a tz database name"),
        ({"group": "no such site"}, 404, "not found"),
        ({"device": "b8:27:eb:ff:ff:ff"}, 404, "not found"),
        ({"extension": "10 01"}, 422, "extension '10 01'"),
        ({"group": "site\x00"}, 422, "NUL"),
        ({"device": "\x00"}, 422, "NUL"),
        ({"tz": "UTC\x00"}, 422, "NUL"),
    ],
)
def test_bad_queries_are_clear_4xx(
    server: ProvisioningServer,
    fleet_calls: dict[str, Any],
    params: dict[str, str],
    status: int,
    detail: str,
) -> None:
    for path in ("/analytics/calls", "/analytics/quality", "/calls", "/calls/export"):
        reply = server.admin.get(path, params=params)
        assert reply.status_code == status, (path, reply.text)
        assert detail in reply.json()["detail"]
    bad = server.admin.get("/analytics/quality", params={"threshold": "9"})
    assert bad.status_code == 422 and "outside MOS 1.0-5.0" in bad.json()["detail"]


def test_time_zone_preference_is_validated_audited_and_used(
    server: ProvisioningServer, fleet_calls: dict[str, Any]
) -> None:
    refused = server.admin.put("/me/time-zone", json={"time_zone": "Europe/Atlantis"})
    assert refused.status_code == 422 and "Europe/Atlantis" in refused.json()["detail"]
    assert server.admin.get("/me/time-zone").json()["time_zone"] == "UTC"
    try:
        reply = server.admin.put("/me/time-zone", json={"time_zone": "Asia/Tokyo"})
        assert reply.json() == {"username": server.admin_user, "time_zone": "Asia/Tokyo"}
        day = fleet_calls["day"]
        stats = server.admin.get("/analytics/calls", params={"from": day, "to": day}).json()
        assert stats["scope"]["time_zone"] == "Asia/Tokyo"
        # 09:00 UTC is 18:00 in Tokyo
        assert stats["busy_hours"][datetime.fromisoformat(day).weekday()][18] == 1
        entry = server.admin.get("/audit", params={"action": "admin_user.time_zone"}).json()[0]
        assert entry["before"] == {"time_zone": "UTC"} and entry["after"] == {
            "time_zone": "Asia/Tokyo"
        }
    finally:
        server.admin.put("/me/time-zone", json={"time_zone": "UTC"}).raise_for_status()


def test_cli_prints_the_same_and_audits_its_reads(
    server: ProvisioningServer, fleet_calls: dict[str, Any], tmp_path: Path
) -> None:
    day = fleet_calls["day"]
    span = ("--from", day, "--to", day, "--tz", "Europe/Berlin")
    done = server.fleet("calls", "analytics", *span, "--json")
    assert done.returncode == 0, done.stderr
    rest = server.admin.get(
        "/analytics/calls", params={"from": day, "to": day, "tz": "Europe/Berlin"}
    ).json()
    assert json.loads(done.stdout) == rest
    out = tmp_path / "calls.csv"
    done = server.fleet("calls", "export", *span, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(list(csv.DictReader(out.open()))) == 3
    assert server.admin.get("/audit", params={"action": "cdr.read"}).json()[0]["target_id"] == (
        "cli-export"
    )
    listed = server.fleet("calls", "list", *span)
    assert "internal  answered   1001 -> 1002" in listed.stdout and "3 call(s)" in listed.stdout
    bad = server.fleet("calls", "analytics", "--from", "2026-03-02", "--to", "2026-03-01")
    assert bad.returncode != 0 and "from 2026-03-02 is after to 2026-03-01" in bad.stderr
    zone = server.fleet("time-zone", server.admin_user, "Nowhere/Special")
    assert zone.returncode != 0 and "'Nowhere/Special' is not a tz database name" in zone.stderr
    quality = server.fleet("calls", "quality", *span, "--poor-only")
    assert "Bob desk: MOS 3.10 over 1 sample(s), 1 poor" in quality.stdout
