"""The phone's provisioning client against the real provisioning server (HTTPS, generated CA).

Covers enrollment (pending -> approved -> config; revoked), CA pinning (wrong fingerprint refused
before any API request), check-sync NOTIFY from the server's sender, rollback of a config whose
apply fails (reported to the server), and exactly-once CDR delivery across a server outage and a
kill -9 of the client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from offhook.contract.config import PhoneConfig, ProvisioningSettings
from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient
from offhook.firmware.provisioning.backoff import Backoff
from offhook.firmware.provisioning.outbox import Outbox
from tests.fixtures import waiting
from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration
WAIT_S = 60.0
FAILING_NAME = "reject-me"  # the runtime's apply fails for this device name (as a 403 would)


wait_until = partial(waiting.wait_until, timeout=WAIT_S, interval=0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisioningServer]:
    with ProvisioningServer(tmp_path_factory.mktemp("prov-server"), tls=True) as running:
        assert running.ca_fingerprint, "server did not print its CA fingerprint"
        yield running


class Phone:
    """A phone's runtime side around a real ProvisioningClient."""

    def __init__(
        self, server: ProvisioningServer, state_dir: Path, mac: str, token: str, pin: str = ""
    ) -> None:
        self.mac = mac
        self.applied: list[PhoneConfig] = []
        settings = ProvisioningSettings(
            url=server.base_url,
            ca_fingerprint=pin or server.ca_fingerprint,
            enrollment_token=token,
            poll_interval_s=3600,  # only enrollment, NOTIFY and resync_now cause fetches here
        )
        self.state_dir = state_dir
        identity = DeviceIdentity(mac=mac, serial="00000000" + mac.replace(":", "")[-8:])
        self.client = ProvisioningClient(
            settings,
            state_dir,
            identity,
            self.apply,
            lambda: {"lines": [{"account": 0, "user": "1001", "registered": True, "status": 200}]},
            notify_host="127.0.0.1",
            backoff=Backoff(base_s=0.05, cap_s=0.5),
        )

    def apply(self, config: PhoneConfig) -> str | None:
        self.applied.append(config)
        if config.device.name == FAILING_NAME:
            return "registration rejected: 403 Forbidden"
        return None

    def names(self) -> list[str]:
        return [c.device.name for c in self.applied]

    def __enter__(self) -> Phone:
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()


def new_mac() -> str:
    raw = uuid.uuid4().hex[:10]
    return "02:" + ":".join(raw[i : i + 2] for i in range(0, 10, 2))


def device(server: ProvisioningServer, mac: str) -> dict[str, Any]:
    reply = server.admin.get(f"/devices/{mac}")
    return reply.json() if reply.status_code == 200 else {}


def set_name(server: ProvisioningServer, mac: str, name: str) -> None:
    reply = server.admin.patch(f"/devices/{mac}/settings", json={"set": {"device.name": name}})
    reply.raise_for_status()


def test_enrollment_pending_approved_config_then_revoked(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = new_mac()
    with Phone(server, tmp_path / "state", mac, server.enrollment_token()) as phone:
        wait_until(lambda: phone.client.state == "pending", "enrollment pending")
        assert device(server, mac)["status"] == "pending"
        assert 30 < phone.client.next_cycle_in_s <= 60  # the server's Retry-After: 60
        assert not (phone.state_dir / "credential.json").exists()

        set_name(server, mac, "desk one")
        server.admin.post(f"/devices/{mac}/approve").raise_for_status()
        phone.client.resync_now()  # instead of waiting out Retry-After
        wait_until(lambda: "desk one" in phone.names(), "config fetched after approval")
        credential = phone.state_dir / "credential.json"
        assert credential.stat().st_mode & 0o777 == 0o600
        assert json.loads(credential.read_text())["device_id"] == device(server, mac)["id"]
        wait_until(
            lambda: device(server, mac)["sip_contact"] == phone.client.sip_contact,
            "status report with the check-sync contact",
        )
        assert device(server, mac)["reported_revision"] == phone.client.config_revision
        assert device(server, mac)["poll_interval_s"] == 3600  # its own, for per-device liveness

        server.admin.post(f"/devices/{mac}/revoke").raise_for_status()
        phone.client.resync_now()
        wait_until(lambda: phone.client.state == "revoked", "revocation noticed")
        assert not credential.exists()  # never sent again
        applied_before = len(phone.applied)
        phone.client.resync_now()
        wait_until(lambda: phone.client.cycles >= 2 and phone.client.state == "revoked", "retry")
        assert len(phone.applied) == applied_before
        # still running on the last known good config
        assert phone.client.cached_config() is not None
        assert phone.client.cached_config().device.name == "desk one"  # type: ignore[union-attr]


def test_lost_enrollment_answer_is_recovered_with_the_same_nonce(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = new_mac()
    state = tmp_path / "state"
    token = server.enrollment_token()
    with Phone(server, state, mac, token) as phone:
        wait_until(lambda: phone.client.state == "pending", "enrollment pending")
    nonce = json.loads((state / "enroll-nonce.json").read_text())["nonce"]
    server.admin.post(f"/devices/{mac}/approve").raise_for_status()
    # the approval answer reached the network but never the phone (crash, lost packet)
    lost = server.enroll_request(mac, token, nonce=nonce).json()
    assert lost["status"] == "approved"
    with Phone(server, state, mac, token) as phone:  # after a reboot: same state dir
        wait_until(lambda: phone.client.state == "enrolled" and phone.applied, "enrolled")
    credential = json.loads((state / "credential.json").read_text())
    assert credential == {"device_id": lost["device_id"], "secret": lost["secret"]}
    assert not (state / "enroll-nonce.json").exists()


def test_wrong_ca_fingerprint_is_refused_before_any_request(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = new_mac()
    wrong_pin = "ab" * 32
    with Phone(server, tmp_path / "state", mac, server.enrollment_token(), pin=wrong_pin) as phone:
        wait_until(lambda: phone.client.backoff.failures >= 3, "repeated refusals")
        assert "lacks the pinned CA" in phone.client.last_error
        assert phone.client.state == "unenrolled"
    assert device(server, mac) == {}  # the enrollment request never reached the server
    assert not (tmp_path / "state" / "pinned-ca.der").exists()


def test_check_sync_notify_fetches_and_failed_apply_rolls_back(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = new_mac()
    server.add_device(mac)  # pre-registered: approved at enrollment
    set_name(server, mac, "desk two")
    with Phone(server, tmp_path / "state", mac, server.enrollment_token()) as phone:
        wait_until(lambda: "desk two" in phone.names(), "first config")
        wait_until(lambda: device(server, mac)["sip_contact"], "check-sync contact reported")
        cycles = phone.client.cycles
        phone.client.resync_now()  # unchanged config: If-None-Match -> 304, nothing re-applied
        wait_until(lambda: phone.client.cycles > cycles, "a poll")
        assert phone.names() == ["desk two"] and phone.client.last_error == ""

        set_name(server, mac, "desk three")  # the server NOTIFYs the phone
        wait_until(lambda: "desk three" in phone.names(), "fetch triggered by NOTIFY")
        assert phone.client.listener is not None and phone.client.listener.accepted >= 1
        good = wait_until(
            lambda: (
                (lkg := phone.client.store.last_known_good())
                and lkg.config.device.name == "desk three"
                and lkg
            ),
            "desk three stored as last known good",
        )
        good_revision = good.revision

        set_name(server, mac, FAILING_NAME)
        wait_until(lambda: FAILING_NAME in phone.names(), "failing config tried")
        wait_until(lambda: phone.names()[-1] == "desk three", "last known good re-applied")
        events = wait_until(
            lambda: [
                e
                for e in server.admin.get("/events", params={"device": mac}).json()
                if e["type"] == "config_rolled_back"
            ],
            "config_rolled_back event at the server",
        )
        assert "registration rejected" in events[0]["detail"]
        assert events[0]["config_revision"] > good_revision
        assert phone.client.config_revision == good_revision
        # periodic polls leave the refused revision alone (304); an operator's resync retries it
        server.admin.post("/resync", json={"device_ids": [device(server, mac)["id"]]})
        wait_until(lambda: phone.names().count(FAILING_NAME) == 2, "refused config retried")
        wait_until(lambda: phone.names()[-1] == "desk three", "rolled back again")
        assert phone.client.cached_config().device.name == "desk three"  # type: ignore[union-attr]


def cdr(n: int) -> dict[str, Any]:
    start = 1_760_000_000.0 + n * 100
    return {
        "id": uuid.uuid4().hex,
        "direction": "outgoing",
        "account": 0,
        "local_uri": "sip:1001@pbx",
        "remote_uri": f"sip:{2000 + n}@pbx",
        "remote_name": "",
        "start": start,
        "answer": start + 3,
        "end": start + 60,
        "disposition": "answered",
        "status_code": 200,
    }


def test_cdrs_queued_during_outage_are_delivered_exactly_once(tmp_path: Path) -> None:
    mac = new_mac()
    state_dir = tmp_path / "phone-state"
    child_log = tmp_path / "runner.log"  # the runner's stderr, shown if it dies early
    with ProvisioningServer(tmp_path / "srv", tls=True) as server, child_log.open("w") as log:
        server.add_device(mac)
        token = server.enrollment_token()
        child = subprocess.Popen(
            [
                sys.executable, "-m", "offhook.firmware.provisioning",
                "--state-dir", str(state_dir),
                "--url", server.base_url, "--ca-fingerprint", server.ca_fingerprint,
                "--token", token, "--mac", mac, "--serial", "00000000cafe0001",
                "--notify-host", "127.0.0.1",
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdin is not None
            first = child.stdout.readline()
            assert first.startswith("ready"), (
                f"runner said {first!r}, exit {child.poll()}: {child_log.read_text()[-3000:]}"
            )
            outbox = Outbox(state_dir / "outbox")
            wait_until(lambda: device(server, mac).get("sip_contact"), "enrolled and reporting")
            wait_until(lambda: outbox.count() == 0, "initial reports delivered")

            server.stop()  # outage
            records = [cdr(n) for n in range(25)]
            for record in records:
                child.stdin.write(json.dumps({"kind": "cdrs", "record": record}) + "\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == f"queued {record['id']}"
            assert outbox.count("cdrs") == 25
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        queued = sorted((state_dir / "outbox" / "cdrs").iterdir())
        copies = {p.name: p.read_bytes() for p in queued[:5]}

        server.restart()  # back, same database
        phone = Phone(server, state_dir, mac, token)
        with phone:
            wait_until(lambda: outbox.count("cdrs") == 0, "queued CDRs delivered after restart")
            # the phone dies after the server stored a batch but before deleting it: resent
            for name, data in copies.items():
                (state_dir / "outbox" / "cdrs" / name).write_bytes(data)
            extra = cdr(99)
            phone.client.enqueue("cdrs", extra)
            wait_until(lambda: outbox.count("cdrs") == 0, "resent CDRs acknowledged")

        held = server.admin.get("/cdrs", params={"device": mac}).json()
        held_ids = [row["id"] for row in held]
        assert sorted(held_ids) == sorted([r["id"] for r in records] + [extra["id"]])
        assert len(held_ids) == len(set(held_ids)) == 26


def test_overloaded_server_503_keeps_cached_config_and_honours_retry_after(
    tmp_path: Path,
) -> None:
    from offhook.contract.config import parse_config
    from offhook.firmware.provisioning.store import ConfigStore, StoredConfig

    state = tmp_path / "state"
    cached = parse_config({"device": {"name": "cached desk"}})
    ConfigStore(state / "config").finish_apply(StoredConfig('"1-cached"', 1, cached))
    (state / "credential.json").write_text('{"device_id": "d", "secret": "s"}')
    env = {"OFFHOOK_MAX_INFLIGHT": "0", "OFFHOOK_RETRY_AFTER_S": "7"}  # every device call: 503
    with ProvisioningServer(tmp_path / "srv", env=env) as server:
        with Phone(server, state, new_mac(), "") as phone:
            wait_until(lambda: phone.client.cycles >= 1, "a refused poll")
            assert phone.names() == ["cached desk"]  # started on the cache, nothing else
            assert "HTTP 503" in phone.client.last_error
            # the backoff alone would retry within 0.05 s; Retry-After: 7 is the floor
            assert 5 < phone.client.next_cycle_in_s <= 7
            phone.client.resync_now()
            wait_until(lambda: phone.client.cycles >= 2, "a second refused poll")
            assert phone.client.backoff.failures == 2
            assert phone.names() == ["cached desk"]
        assert (state / "credential.json").exists()  # overload is not a reason to drop it


def test_record_the_server_refuses_is_set_aside_without_blocking_the_queue(
    server: ProvisioningServer, tmp_path: Path
) -> None:
    mac = new_mac()
    server.add_device(mac)
    with Phone(server, tmp_path / "state", mac, server.enrollment_token()) as phone:
        wait_until(lambda: phone.client.state == "enrolled" and phone.applied, "enrolled")
        good = [cdr(1), cdr(3)]
        bad = cdr(2) | {"disposition": "teleported"}  # not a disposition the server knows
        for record in (good[0], bad, good[1]):
            phone.client.enqueue("cdrs", record)
        wait_until(lambda: phone.client.outbox.count("cdrs") == 0, "queue drained")
    held = {row["id"] for row in server.admin.get("/cdrs", params={"device": mac}).json()}
    assert held == {r["id"] for r in good}
    [refused] = list((tmp_path / "state" / "outbox" / "cdrs").glob("*.refused"))
    assert json.loads(refused.read_text())["id"] == bad["id"]


def test_runner_logs_the_config_without_sip_passwords(tmp_path: Path) -> None:
    """The provisioning runner logs each config it would apply: never the secrets."""
    mac = new_mac()
    password = "pw-" + uuid.uuid4().hex  # unmistakable in any log line
    log_path = tmp_path / "runner.log"
    with ProvisioningServer(tmp_path / "srv") as server, log_path.open("w") as log:
        server.add_device(mac, name="log check")
        server.add_line(mac, extension="1004", registrar="127.0.0.1", password=password)
        token = server.enrollment_token()
        child = subprocess.Popen(
            [
                sys.executable, "-m", "offhook.firmware.provisioning",
                "--state-dir", str(tmp_path / "st"),
                "--url", server.base_url, "--token", token, "--mac", mac,
                "--serial", "00000000cafe0002", "--notify-host", "127.0.0.1",
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "OFFHOOK_LOG": "stderr"},
        )  # fmt: skip
        try:
            wait_until(lambda: "config to apply" in log_path.read_text(), "the config logged")
            wait_until(lambda: device(server, mac).get("reported_revision"), "a status report")
        finally:
            child.terminate()
            child.wait(timeout=30)
    text = log_path.read_text()
    # the config is there (a kv field: its JSON quoted, inner quotes escaped)...
    assert '\\"user\\": \\"1004\\"' in text
    assert password not in text  # ...its password is not
    assert token not in text
    assert "(set, not shown)" in text
