"""Provisioning client figures against the real provisioning server (HTTPS, pinned CA).

- config push: admin changes a setting -> the phone's apply() runs, via the server's SIP NOTIFY
  check-sync. Peer: the same change fetched by calling resync_now() right after the change (the
  floor: one pinned-TLS config fetch). Polling, the fallback, averages poll_interval/2 (>= 5 s).
- durable enqueue: one record per atomic file (fsync file + directory). Peer: SQLite WAL with
  synchronous=FULL, one transaction per record (the usual alternative for a durable queue).
- upload: 1000 queued CDRs from the outbox to the server in one cycle (with its config check and
  status report). Peer: the same 1000 records POSTed straight from memory in the same batch size
  on an open connection (no disk queue, no config check).
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from offhook.contract.config import PhoneConfig, ProvisioningSettings
from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient
from offhook.firmware.provisioning.client import BATCH_SIZE
from offhook.firmware.provisioning.outbox import Outbox
from offhook.firmware.provisioning.pinning import PinnedCA
from tests.fixtures.provisioning_server import ProvisioningServer

CHANGES = 10
ENQUEUES = 300
UPLOAD = 1000


class _Phone:
    def __init__(self, server: ProvisioningServer, state: Path, mac: str) -> None:
        self.applied = threading.Condition()
        self.names: list[str] = []
        settings = ProvisioningSettings(
            url=server.base_url,
            ca_fingerprint=server.ca_fingerprint,
            enrollment_token=server.enrollment_token(),
            poll_interval_s=3600,
        )
        identity = DeviceIdentity(mac=mac, serial="00000000" + mac.replace(":", "")[-8:])
        self.client = ProvisioningClient(
            settings, state, identity, self.apply, dict, notify_host="127.0.0.1"
        )

    def apply(self, config: PhoneConfig) -> None:
        with self.applied:
            self.names.append(config.device.name)
            self.applied.notify_all()

    def wait_for(self, name: str, timeout_s: float = 30) -> None:
        with self.applied:
            if not self.applied.wait_for(lambda: name in self.names, timeout_s):
                raise TimeoutError(f"config {name!r} never applied")


def _cdr(n: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex, "direction": "outgoing", "account": 0,
        "local_uri": "sip:1001@pbx", "remote_uri": f"sip:{n}@pbx", "remote_name": "",
        "start": 1.7e9 + n, "answer": None, "end": 1.7e9 + n + 5,
        "disposition": "no_answer", "status_code": 487,
    }  # fmt: skip


def _wait(predicate: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} in {timeout_s} s")
        time.sleep(0.02)


def _change_ms(server: ProvisioningServer, phone: _Phone, mac: str, tag: str, push: bool) -> float:
    started = time.perf_counter()
    reply = server.admin.patch(f"/devices/{mac}/settings", json={"set": {"device.name": tag}})
    reply.raise_for_status()
    if not push:
        phone.client.resync_now()
    phone.wait_for(tag)
    return (time.perf_counter() - started) * 1000


def bench_push(server: ProvisioningServer, base: Path) -> None:
    mac = "02:be:4c:00:00:01"
    server.add_device(mac)
    phone = _Phone(server, base / "phone", mac)
    phone.client.start()
    try:
        _wait(lambda: server.admin.get(f"/devices/{mac}").json().get("sip_contact"), "contact")
        push, pull = [], []
        for i in range(CHANGES):
            push.append(_change_ms(server, phone, mac, f"push {i}", push=True))
            pull.append(_change_ms(server, phone, mac, f"pull {i}", push=False))
    finally:
        phone.client.stop()
    p, q = statistics.median(push), statistics.median(pull)
    print(f"config change -> applied via NOTIFY: median {p:.1f} ms (n={CHANGES})")
    print(f"peer, change + resync_now(): median {q:.1f} ms; ratio {p / q:.2f}")


def bench_enqueue(base: Path) -> None:
    outbox = Outbox(base / "outbox")
    started = time.perf_counter()
    for n in range(ENQUEUES):
        outbox.put("cdrs", _cdr(n))
    ours = ENQUEUES / (time.perf_counter() - started)
    db = sqlite3.connect(base / "queue.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE q (id TEXT PRIMARY KEY, body TEXT)")
    started = time.perf_counter()
    for n in range(ENQUEUES):
        record = _cdr(n)
        db.execute("INSERT INTO q VALUES (?, ?)", (record["id"], str(record)))
    peer = ENQUEUES / (time.perf_counter() - started)
    db.close()
    print(f"durable enqueue (file per record, fsync): {ours:.0f} records/s")
    print(f"peer, SQLite WAL synchronous=FULL: {peer:.0f} records/s; ratio {ours / peer:.2f}")


def bench_upload(server: ProvisioningServer, base: Path) -> None:
    mac = "02:be:4c:00:00:02"
    credential = server.enroll(mac)
    state = base / "upload"
    state.mkdir()
    (state / "credential.json").write_text(
        f'{{"device_id": "{credential.device_id}", "secret": "{credential.secret}"}}'
    )
    phone = _Phone(server, state, mac)
    outbox = phone.client.outbox
    phone.client.start()
    try:
        _wait(lambda: phone.client.cycles >= 1 and outbox.count() == 0, "first cycle")
        for n in range(UPLOAD):
            outbox.put("cdrs", _cdr(n))  # queued behind the client's back: no upload yet
        started = time.perf_counter()
        phone.client.resync_now()  # one cycle: config (304), status, then the queue
        _wait(lambda: outbox.count("cdrs") == 0, "outbox drained")
        ours = time.perf_counter() - started
    finally:
        phone.client.stop()
    records = [_cdr(n) for n in range(UPLOAD)]
    context = PinnedCA(server.ca_fingerprint, base / "ca.der").ssl_context("127.0.0.1", server.port)
    with httpx.Client(
        base_url=server.base_url,
        verify=context,
        headers={"Authorization": credential.authorization},
    ) as http:
        started = time.perf_counter()
        for i in range(0, UPLOAD, BATCH_SIZE):
            http.post("/api/v1/device/cdrs", json={"records": records[i : i + BATCH_SIZE]})
        peer = time.perf_counter() - started
    print(f"upload {UPLOAD} queued CDRs (resync -> outbox empty): {ours * 1000:.0f} ms")
    print(f"peer, same batches POSTed from memory: {peer * 1000:.0f} ms; ratio {ours / peer:.2f}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-prov-") as tmp:
        base = Path(tmp)
        bench_enqueue(base)
        with ProvisioningServer(base / "server", tls=True) as server:
            bench_push(server, base)
            bench_upload(server, base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
