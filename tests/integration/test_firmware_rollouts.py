"""Rollouts on the real server (``offhook server``, SQLite) with a real verified RAUC bundle:
stages, the canary, automatic pause on failures, resume, abort, exclude and pin; the target
reaching phones through their config; their reports moving their state."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer
from tests.fixtures.rauc_bundles import SigningPair, make_bundle
from tests.integration.test_firmware_releases import (
    _PORTS,
    COMPATIBLE,
    report_board,
    start_server,
    upload,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigningPair, Path]:
    directory = tmp_path_factory.mktemp("rollout-bundles")
    pair = SigningPair.make(directory, "fleet-signing")
    return pair, make_bundle(directory, pair, COMPATIBLE, "0.2.0")


@pytest.fixture
def server(tmp_path: Path, bundle: tuple[SigningPair, Path]) -> Iterator[ProvisioningServer]:
    running = start_server(tmp_path, bundle[0].cert)
    try:
        upload(running, bundle[1]).raise_for_status()
        yield running
    finally:
        running.stop()


def phones(server: ProvisioningServer, count: int, group: str) -> list[DeviceCredential]:
    server.admin.post("/groups", json={"name": group}).raise_for_status()
    made = []
    for n in range(count):
        mac = f"b8:27:eb:{secrets.randbelow(256):02x}:{n // 256:02x}:{n % 256:02x}"
        phone = server.enroll(mac, group=group)
        report_board(phone, COMPATIBLE)
        made.append(phone)
    return made


def target(phone: DeviceCredential) -> dict[str, Any]:
    with phone.client() as client:
        reply = client.get("/api/v1/device/config")
        reply.raise_for_status()
        section: dict[str, Any] = reply.json()["firmware"]
        return section


def report(phone: DeviceCredential, *steps: str, reason: str = "", rollout: str = "") -> None:
    records = [
        {
            "id": secrets.token_hex(8),
            "time": datetime.now(UTC).isoformat(),
            "type": f"firmware_{step}",
            "firmware_version": "0.2.0",
            "from_version": "0.1.0",
            "rollout": rollout,
            "slot": "B",
            "reason": reason if step in ("failed", "rolled_back") else "",
            "detail": "not registered within 120 s" if reason else "",
        }
        for step in steps
    ]
    with phone.client() as client:
        reply = client.post("/api/v1/device/events", json={"records": records})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["accepted"]) == len(records)


def asked(phones: list[DeviceCredential]) -> list[DeviceCredential]:
    return [p for p in phones if target(p)["version"] == "0.2.0"]


def rollout_state(server: ProvisioningServer, rollout_id: int) -> dict[str, Any]:
    reply = server.admin.get(f"/rollouts/{rollout_id}")
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def test_canary_then_stages_pause_on_failures_resume_and_complete(
    server: ProvisioningServer,
) -> None:
    fleet = phones(server, 10, "floor-1")
    outsider = phones(server, 1, "floor-2")[0]
    server.admin.put(
        f"/devices/{fleet[0].mac}/firmware", json={"excluded": True}
    ).raise_for_status()
    group = fleet[1:]  # 9 eligible phones
    started = server.admin.post(
        "/rollouts",
        json={
            "release": "0.2.0",
            "group": "floor-1",
            "stages": [10, 50, 100],
            "failure_threshold_pct": 30,
            "maintenance_window": "02:00-04:00",
        },
    )
    assert started.status_code == 201, started.text
    rollout = started.json()
    assert (rollout["status"], rollout["eligible"], rollout["admitted"]) == ("running", 9, 1)

    canary = asked(group)
    assert len(canary) == 1
    section = target(canary[0])
    assert section["rollout"] == str(rollout["id"])
    assert section["maintenance_window"] == "02:00-04:00"
    assert target(fleet[0])["version"] == "" and target(outsider)["version"] == ""

    report(canary[0], "downloading", "installed", "rebooting")
    assert rollout_state(server, rollout["id"])["stage"] == 0  # not finished yet
    state = server.admin.get(f"/devices/{canary[0].mac}/firmware").json()
    assert state["state"] == "rebooting" and state["target_version"] == "0.2.0"
    report(canary[0], "running")
    second = rollout_state(server, rollout["id"])
    assert (second["stage"], second["admitted"], second["running"]) == (1, 5, 1)
    stage_two = [p for p in asked(group) if p is not canary[0]]
    assert len(stage_two) == 4

    # One of stage 2's four rolls back (25 % < 30 %): the rollout moves on to everyone.
    report(stage_two[0], "downloading", "rolled_back", reason="health_check_failed")
    for phone in stage_two[1:]:
        report(phone, "downloading", "installed", "rebooting", "running")
    third = rollout_state(server, rollout["id"])
    assert (third["stage"], third["admitted"], third["rolled_back"]) == (2, 9, 1)
    rolled = server.admin.get(f"/devices/{stage_two[0].mac}/firmware").json()
    assert (rolled["state"], rolled["reason"]) == ("rolled_back", "health_check_failed")

    last = [p for p in asked(group) if p is not canary[0] and p not in stage_two]
    assert len(last) == 4
    report(last[0], "failed", reason="download_failed")
    report(last[1], "rolled_back", reason="boot_failed")  # 2 of stage 3's 4 = 50 % > 30 %
    paused = rollout_state(server, rollout["id"])
    assert paused["status"] == "paused"
    assert "failure rate 50.0% (2 of 4 phones of stage 3 (100%)" in paused["pause_reason"]
    assert "threshold of 30%" in paused["pause_reason"]
    assert [(s["asked"], s["failed"]) for s in paused["per_stage"]] == [(1, 0), (4, 1), (4, 2)]
    events = server.admin.get("/audit", params={"action": "rollout.auto_pause"}).json()
    assert len(events) == 1 and events[0]["actor"] == "system:rollout"

    # Phones asked before the pause carry on and report; resumed as it is, the rollout
    # pauses again at once; with a higher threshold it runs on.
    report(last[2], "rolled_back", reason="health_check_failed")
    again = server.admin.post(f"/rollouts/{rollout['id']}/resume").json()
    assert again["status"] == "paused"
    server.admin.patch(
        f"/rollouts/{rollout['id']}", json={"failure_threshold_pct": 80}
    ).raise_for_status()
    assert server.admin.post(f"/rollouts/{rollout['id']}/resume").json()["status"] == "running"
    report(last[3], "running")
    done = rollout_state(server, rollout["id"])
    assert done["status"] == "completed" and done["finished_at"]
    assert (done["running"], done["failed"], done["rolled_back"]) == (5, 1, 3)

    audit = [e["action"] for e in server.admin.get("/audit").json()]
    for action in ("rollout.start", "rollout.stage", "rollout.resume", "rollout.complete"):
        assert action in audit
    versions = {
        (v["compatible"], v["version"]): v["devices"]
        for v in server.admin.get("/firmware-versions").json()
    }
    assert versions[(COMPATIBLE, "0.1.0")] == 11  # the status reports still say 0.1.0


def test_a_status_with_the_new_version_counts_as_running_and_old_events_do_not_move_it(
    server: ProvisioningServer,
) -> None:
    fleet = phones(server, 2, "lab")
    started = server.admin.post(
        "/rollouts", json={"release": "0.2.0", "group": "lab", "stages": [50, 100]}
    ).json()
    canary = asked(fleet)[0]
    report_board(canary, COMPATIBLE, version="0.2.0")  # the event may still be in the outbox
    state = rollout_state(server, started["id"])
    assert (state["stage"], state["running"]) == (1, 1)
    with canary.client() as client:  # a step about another version leaves the state alone
        record = {
            "id": secrets.token_hex(8),
            "time": datetime.now(UTC).isoformat(),
            "type": "firmware_failed",
            "firmware_version": "0.1.5",
            "reason": "download_failed",
        }
        client.post("/api/v1/device/events", json={"records": [record]}).raise_for_status()
    assert server.admin.get(f"/devices/{canary.mac}/firmware").json()["state"] == "running"
    stored = server.admin.get("/events", params={"device": canary.mac}).json()
    assert any("reason=download_failed" in e["detail"] for e in stored)


def test_abort_takes_the_target_away_from_phones_not_yet_running_it(
    server: ProvisioningServer,
) -> None:
    fleet = phones(server, 4, "desk")
    started = server.admin.post(
        "/rollouts", json={"release": "0.2.0", "group": "desk", "stages": [50, 100]}
    ).json()
    first, second = asked(fleet)
    url = target(first)["url"]
    report(first, "downloading", "installed", "rebooting", "running")
    report(second, "downloading")
    conflict = server.admin.post("/rollouts", json={"release": "0.2.0", "group": "desk"})
    assert conflict.status_code == 409 and "already covers" in conflict.json()["detail"]
    aborted = server.admin.post(f"/rollouts/{started['id']}/abort")
    assert aborted.json()["status"] == "aborted"
    assert target(first)["version"] == "0.2.0"  # it runs it: nothing to take back
    assert target(second)["version"] == ""
    with second.client() as client:
        assert client.get(url).status_code == 404
    assert server.admin.get(f"/devices/{second.mac}/firmware").json()["state"] == "cancelled"
    assert server.admin.post(f"/rollouts/{started['id']}/resume").status_code == 409


def test_fleet_rollout_needs_an_admin_and_unknown_boards_are_left_alone(
    server: ProvisioningServer,
) -> None:
    fleet = phones(server, 2, "mixed")
    unknown = server.enroll("b8:27:eb:aa:bb:01", group="mixed")  # never reported its board
    pi = server.enroll("b8:27:eb:aa:bb:02", group="mixed")
    report_board(pi, "offhook-rpi")
    made = server.fleet(
        "create-admin", "ops", "--role", "operator", "--password-stdin", "--api-token",
        input_text="operator-password-1\n",
    )  # fmt: skip
    token = made.stdout.split("api token: ")[1].split()[0]
    import httpx

    with httpx.Client(
        base_url=f"{server.base_url}/api/v1/admin", headers={"Authorization": f"Bearer {token}"}
    ) as operator:
        refused = operator.post("/rollouts", json={"release": "0.2.0"})
        assert refused.status_code == 403
        assert "rollout.fleet needs the admin role" in refused.json()["detail"]
        group = operator.post("/rollouts", json={"release": "0.2.0", "group": "mixed"})
        assert group.status_code == 201, group.text
    assert group.json()["eligible"] == 2
    assert target(unknown)["version"] == "" and target(pi)["version"] == ""
    assert len(asked(fleet)) == 1


def test_cli_rollout_and_firmware_commands(server: ProvisioningServer) -> None:
    fleet = phones(server, 3, "cli-group")
    pinned = server.fleet("firmware", "pin", fleet[0].mac, "0.2.0")
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout)["pinned"] == "0.2.0"
    assert target(fleet[0])["rollout"] == "pin"
    started = server.fleet(
        "rollout", "start", "0.2.0", "--group", "cli-group", "--stages", "50,100"
    )
    assert started.returncode == 0, started.stderr
    assert "of 2 phones asked" in started.stdout  # the pinned phone is not the rollout's
    rollout_id = started.stdout.split()[1]
    assert server.fleet("rollout", "pause", rollout_id).returncode == 0
    listed = server.fleet("rollout", "list")
    assert "paused" in listed.stdout and "cli-group" in listed.stdout
    bad = server.fleet("rollout", "start", "0.2.0", "--group", "cli-group", "--stages", "50,20")
    assert bad.returncode == 1 and "rising percentages" in bad.stderr
    versions = server.fleet("firmware", "versions")
    assert COMPATIBLE in versions.stdout and "0.1.0" in versions.stdout
    audit = server.admin.get("/audit", params={"action": "rollout.pause"}).json()
    assert audit and audit[0]["actor"].startswith("cli:")
    _ = _PORTS  # the servers of both modules share one port counter


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_stage_not_done_within_its_time_limit_pauses_with_a_reason_and_an_audit(
    tmp_path: Path, bundle: tuple[SigningPair, Path]
) -> None:
    # the server's own periodic check (every second here), not a call from the test
    server = start_server(tmp_path, bundle[0].cert, env={"OFFHOOK_ROLLOUT_CHECK_INTERVAL_S": "1"})
    try:
        upload(server, bundle[1]).raise_for_status()
        slow = phones(server, 4, "slow-floor")
        quick = phones(server, 2, "quick-floor")
        bad = server.admin.post(
            "/rollouts", json={"release": "0.2.0", "group": "slow-floor", "stage_timeout_s": -1}
        )
        assert bad.status_code == 422
        limited = server.admin.post(
            "/rollouts",
            json={"release": "0.2.0", "group": "slow-floor", "stages": [50, 100],
                  "stage_timeout_s": 4},
        ).json()  # fmt: skip
        unlimited = server.admin.post(
            "/rollouts", json={"release": "0.2.0", "group": "quick-floor", "stages": [50, 100]}
        ).json()
        assert (limited["stage_timeout_s"], unlimited["stage_timeout_s"]) == (4, 0)
        first, second = asked(slow)
        report(first, "downloading", "installed", "rebooting", "running")
        report(second, "downloading")  # and then nothing: stuck
        report(asked(quick)[0], "downloading")  # stuck too, but that rollout has no limit
        paused = wait_for(
            lambda: (r := rollout_state(server, limited["id"]))["status"] == "paused" and r,
            "the stage time limit to pause the rollout",
        )
        assert paused["pause_reason"] == (
            "stage 1 (50%) did not complete within its time limit of 4 s: 1 of 2 phones asked"
            " had not finished"
        )
        assert paused["admitted"] == 2  # the second stage was never asked
        audit = server.admin.get("/audit", params={"action": "rollout.auto_pause"}).json()
        assert [(a["actor"], a["target_id"]) for a in audit] == [
            ("system:rollout", str(limited["id"]))
        ]
        assert audit[0]["after"]["cause"] == "stage_timeout"
        assert rollout_state(server, unlimited["id"])["status"] == "running"

        # resumed, the stage's clock starts again; once its phones finish the next stage comes
        resumed = server.admin.post(f"/rollouts/{limited['id']}/resume").json()
        assert resumed["status"] == "running"
        assert resumed["stage_started_at"] > limited["stage_started_at"]
        report(second, "installed", "rebooting", "running")
        moved = rollout_state(server, limited["id"])
        assert (moved["status"], moved["stage"], moved["admitted"]) == ("running", 1, 4)
    finally:
        server.stop()


def test_withdrawn_release_is_no_longer_offered_and_phones_on_it_are_untouched(
    server: ProvisioningServer, bundle: tuple[SigningPair, Path], tmp_path: Path
) -> None:
    fleet = phones(server, 2, "withdraw-floor")
    started = server.admin.post(
        "/rollouts", json={"release": "0.2.0", "group": "withdraw-floor", "stages": [100],
                           "failure_threshold_pct": 60},
    ).json()  # fmt: skip
    first, second = fleet
    report(first, "downloading", "installed", "rebooting", "running")
    report(second, "downloading")
    refused = server.admin.post("/firmware/0.2.0/withdraw")
    assert refused.status_code == 409 and refused.json()["code"] == "in_use"
    assert f"used by rollout {started['id']} (running)" in refused.json()["detail"]
    report(second, "failed", reason="download_failed")  # the rollout completes, one failed
    assert rollout_state(server, started["id"])["status"] == "completed"

    withdrawn = server.admin.post("/firmware/0.2.0/withdraw")
    assert withdrawn.status_code == 200, withdrawn.text
    release = withdrawn.json()
    assert release["withdrawn"] and release["withdrawn_by"].startswith("admin:")
    assert server.admin.get("/firmware/0.2.0").json()["withdrawn"] is True
    # the phone running it keeps it; the one it failed on is no longer offered it
    assert target(first)["version"] == "0.2.0"
    assert target(second)["version"] == ""
    with second.client() as client:
        assert client.get(f"/api/v1/device/firmware/{release['sha256']}.raucb").status_code == 404
    # ...nor to anyone else: a new rollout or a pin is refused
    again = server.admin.post("/rollouts", json={"release": "0.2.0", "group": "withdraw-floor"})
    assert again.status_code == 409 and again.json()["code"] == "withdrawn"
    pin = server.admin.put(f"/devices/{second.mac}/firmware", json={"pin": "0.2.0"})
    assert pin.status_code == 409 and "withdrawn" in pin.json()["detail"]
    twice = server.admin.post("/firmware/0.2.0/withdraw")
    assert twice.status_code == 409
    audit = server.admin.get("/audit", params={"action": "firmware.withdraw"}).json()
    assert len(audit) == 1 and audit[0]["actor"] == release["withdrawn_by"]
    assert audit[0]["after"]["targets_dropped"] == 1

    # a pinned release is in use too
    newer = make_bundle(tmp_path, bundle[0], COMPATIBLE, "0.3.0")
    upload(server, newer).raise_for_status()
    server.admin.put(f"/devices/{first.mac}/firmware", json={"pin": "0.3.0"}).raise_for_status()
    pinned = server.admin.post("/firmware/0.3.0/withdraw")
    assert pinned.status_code == 409 and "pinned on 1 phone(s)" in pinned.json()["detail"]
    server.admin.put(f"/devices/{first.mac}/firmware", json={"pin": ""}).raise_for_status()
    assert server.admin.post("/firmware/0.3.0/withdraw").status_code == 200
