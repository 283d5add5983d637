"""Firmware rollout to a simulated fleet: N phones (no SIP) polling the real server over HTTP.

One run, SQLite, the real server (2 workers, NOTIFY off so only polls bring targets), a real
bundle made by ``rauc bundle`` and verified by the server on upload:
- a fleet-wide rollout with stages 1, 10, 50, 100 % and a 10 % failure threshold is started
  over the REST API; the simulated agents then poll round after round (each phone once per
  round, back to back: a compressed poll interval). A phone whose config names a new version
  downloads the bundle with its credential, posts ``firmware_downloading/installed/
  rebooting`` events, then a status with the new version and ``firmware_running``, as the
  agent in docs/updates.md does. Measured: wall time and rounds from the start to the
  rollout's ``completed``, the server's CPU (all its processes, /proc) over that time per 1000
  phones, and requests per phone.
- the download part against a peer: the same number of downloads of the same file from the
  server (device credential, targeting check) and from nginx serving it as a static file, in
  the same run, same client, interleaved: seconds and server CPU per 1000 downloads.
OFFHOOK_BENCH_PHONES (10000), OFFHOOK_BENCH_CONNECTIONS (32), OFFHOOK_BENCH_BUNDLE_KB (256),
OFFHOOK_BENCH_PORT (18480; this and the next two).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_config_fetch import HOST, process_cpu_seconds, start_nginx, start_server, stop
from tests.fixtures.rauc_bundles import SigningPair, make_bundle

COMPATIBLE = "offhook-qemu-amd64"
OLD, NEW = "0.1.0", "0.2.0"


def seed(db_url: str, data_dir: Path, phones: int) -> list[tuple[str, str]]:
    """Approved phones with credentials that have reported their board, written in bulk."""
    from sqlalchemy import insert

    from offhook.provisioning.auth import new_device_secret, secret_digest
    from offhook.provisioning.crypto import load_key_ring
    from offhook.provisioning.db import Database
    from offhook.provisioning.models import Device, DeviceFirmware, new_uuid, utcnow

    database = Database(db_url)
    database.migrate()
    load_key_ring(data_dir / "secret.key", create=True)
    creds = [(new_uuid(), new_device_secret()) for _ in range(phones)]
    now = utcnow()
    with database.session() as db:
        db.execute(
            insert(Device),
            [
                {
                    "id": device_id,
                    "mac": f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
                    "status": "approved",
                    "secret_hash": secret_digest(secret),
                    "firmware_version": OLD,
                    "enrolled_at": now,
                }
                for i, (device_id, secret) in enumerate(creds)
            ],
        )
        db.execute(
            insert(DeviceFirmware),
            [
                {"device_id": d, "compatible": COMPATIBLE, "excluded": False, "state": ""}
                for d, _ in creds
            ],
        )
    database.dispose()
    return creds


class Http:
    """One keep-alive HTTP/1.1 connection; counts requests by kind."""

    def __init__(self, port: int, counts: dict[str, int]) -> None:
        self.port = port
        self.counts = counts
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, kind: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        for _attempt in range(10):  # a phone retries a 503 later (Retry-After); count them
            answer = await self._once(kind, method, path, headers, body)
            if answer[0] != 503:
                return answer
            self.counts["503"] = self.counts.get("503", 0) + 1
            await asyncio.sleep(0.5)
        return answer

    async def _once(
        self, kind: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name:
                fields[name.strip().lower().decode()] = value.strip().decode()
        data = await self.reader.readexactly(int(fields.get("content-length", "0")))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if fields.get("connection") == "close":
            self.close()
            self.writer = None
        return status, fields, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Phone:
    def __init__(self, device_id: str, secret: str) -> None:
        token = base64.b64encode(f"{device_id}:{secret}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}
        self.etag = ""
        self.version = OLD

    def _event(self, kind: str) -> dict[str, Any]:
        return {
            "id": secrets.token_hex(8),
            "time": datetime.now(UTC).isoformat(),
            "type": f"firmware_{kind}",
            "firmware_version": NEW,
            "from_version": OLD,
            "slot": "B",
        }

    async def poll(self, http: Http) -> None:
        headers = dict(self.auth)
        if self.etag:
            headers["If-None-Match"] = self.etag
        status, fields, body = await http.request("poll", "GET", "/api/v1/device/config", headers)
        if status == 304:
            return
        if status != 200:
            raise RuntimeError(f"config poll answered {status}: {body[:200]!r}")
        self.etag = fields.get("etag", "")
        section = json.loads(body)["firmware"]
        if section["version"] and section["version"] != self.version:
            await self.update(http, section)

    async def update(self, http: Http, section: dict[str, Any]) -> None:
        status, _, data = await http.request("download", "GET", section["url"], self.auth)
        if status != 200 or len(data) != section["size"]:
            raise RuntimeError(f"download answered {status} with {len(data)} bytes")
        steps = [self._event(k) for k in ("downloading", "installed", "rebooting")]
        await self._post(http, "events", "/api/v1/device/events", {"records": steps})
        self.version = section["version"]  # rebooted into the new slot
        status_body = {
            "id": secrets.token_hex(8),
            "time": datetime.now(UTC).isoformat(),
            "firmware_version": self.version,
            "firmware": {"compatible": COMPATIBLE, "state": "idle", "slot": "B"},
        }
        await self._post(http, "status", "/api/v1/device/status", status_body)
        await self._post(
            http, "events", "/api/v1/device/events", {"records": [self._event("running")]}
        )

    async def _post(self, http: Http, kind: str, path: str, body: dict[str, Any]) -> None:
        status, _, reply = await http.request(
            kind, "POST", path, self.auth, json.dumps(body).encode()
        )
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {reply[:200]!r}")


async def poll_round(
    port: int, phones: list[Phone], connections: int, counts: dict[str, int]
) -> None:
    queue: asyncio.Queue[Phone] = asyncio.Queue()
    for phone in phones:
        queue.put_nowait(phone)

    async def worker() -> None:
        http = Http(port, counts)
        try:
            while not queue.empty():
                await queue.get_nowait().poll(http)
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


async def report_sweep(port: int, phones: list[Phone], connections: int) -> dict[str, int]:
    """Each phone posts one status and one ``config_applied`` event: the existing report
    ingestion, with no update to move - the baseline a rollout's reports are compared with."""
    queue: asyncio.Queue[Phone] = asyncio.Queue()
    for phone in phones:
        queue.put_nowait(phone)
    counts: dict[str, int] = {}

    async def worker() -> None:
        http = Http(port, counts)
        try:
            while not queue.empty():
                phone = queue.get_nowait()
                status = {"id": secrets.token_hex(8), "time": datetime.now(UTC).isoformat()}
                await phone._post(http, "status", "/api/v1/device/status", status)
                event = {**status, "id": secrets.token_hex(8), "type": "config_applied"}
                await phone._post(http, "events", "/api/v1/device/events", {"records": [event]})
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return counts


async def download_sweep(
    port: int, path: str, auths: list[dict[str, str]], connections: int, size: int
) -> None:
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for auth in auths:
        queue.put_nowait(auth)
    counts: dict[str, int] = {}

    async def worker() -> None:
        http = Http(port, counts)
        try:
            while not queue.empty():
                status, _, data = await http.request("download", "GET", path, queue.get_nowait())
                if status != 200 or len(data) != size:
                    raise RuntimeError(f"download from port {port}: {status}, {len(data)} bytes")
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


def main() -> int:
    import httpx

    count = int(os.environ.get("OFFHOOK_BENCH_PHONES", "10000"))
    connections = int(os.environ.get("OFFHOOK_BENCH_CONNECTIONS", "32"))
    bundle_kb = int(os.environ.get("OFFHOOK_BENCH_BUNDLE_KB", "256"))
    port = int(os.environ.get("OFFHOOK_BENCH_PORT", "18480"))
    work = Path(tempfile.mkdtemp(prefix="offhook-bench-rollout-"))
    server = nginx = None
    try:
        data_dir = work / "server"
        data_dir.mkdir()
        db_url = f"sqlite:///{data_dir / 'provisioning.db'}"
        started = time.monotonic()
        creds = seed(db_url, data_dir, count)
        print(f"seeded {count} phones in {time.monotonic() - started:.1f} s")
        pair = SigningPair.make(work / "keys", "bench-signing")
        bundle = make_bundle(work, pair, COMPATIBLE, NEW, bundle_kb * 1024)
        (data_dir / "firmware-keyring.pem").write_bytes(pair.cert.read_bytes())
        server = start_server(data_dir, db_url, port, 2)
        from offhook.provisioning.admin_auth import create_admin, create_api_token
        from offhook.provisioning.db import Database

        database = Database(db_url)
        with database.session() as db:
            token = create_api_token(db, create_admin(db, "bench", "bench-password-1"), "b")[0]
        database.dispose()
        admin = httpx.Client(
            base_url=f"http://{HOST}:{port}/api/v1/admin",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        upload_started = time.monotonic()
        release = admin.post("/firmware", content=bundle.read_bytes())
        release.raise_for_status()
        upload_s = time.monotonic() - upload_started
        size = release.json()["size"]
        print(f"bundle {size} bytes, uploaded and verified with rauc in {upload_s:.2f} s")

        phones = [Phone(d, s) for d, s in creds]
        counts: dict[str, int] = {}
        asyncio.run(poll_round(port, phones, connections, counts))  # every phone holds an ETag
        counts.clear()
        cpu_before = process_cpu_seconds(server.pid)
        t0 = time.monotonic()
        body = {"release": str(release.json()["id"]), "stages": [1, 10, 50, 100]}
        rollout = admin.post("/rollouts", json=body)
        rollout.raise_for_status()
        rollout_id = rollout.json()["id"]
        rounds = 0
        state = rollout.json()
        while state["status"] != "completed":
            rounds += 1
            asyncio.run(poll_round(port, phones, connections, counts))
            state = admin.get(f"/rollouts/{rollout_id}").json()
            print(
                f"  round {rounds}: {time.monotonic() - t0:6.1f} s, stage {state['stage'] + 1}"
                f" ({state['stage_pct']}%), {state['running']}/{state['eligible']} running"
            )
            if state["status"] not in ("running", "completed") or rounds > 20:
                raise RuntimeError(f"rollout did not complete: {state}")
        elapsed = time.monotonic() - t0
        cpu = process_cpu_seconds(server.pid) - cpu_before
        total = sum(counts.values())
        print(
            f"rollout to {count} phones: 100% in {elapsed:.1f} s over {rounds} poll rounds"
            f" (stages 1/10/50/100%)"
        )
        print(
            f"server CPU {cpu:.1f} s = {1000 * cpu / count:.2f} CPU s per 1000 phones;"
            f" {total} requests = {total / count:.2f} per phone ({counts})"
        )

        # The reports against the existing ingestion: a status and an event per phone.
        cpu0, t1 = process_cpu_seconds(server.pid), time.monotonic()
        base = asyncio.run(report_sweep(port, phones, connections))
        base_cpu, base_s = process_cpu_seconds(server.pid) - cpu0, time.monotonic() - t1
        print(
            f"baseline, one status + one config event per phone (no update): {base_s:.1f} s,"
            f" {1000 * base_cpu / count:.2f} CPU s per 1000 phones ({base});"
            f" the rollout cost {cpu / base_cpu:.1f}x that"
        )

        # The download part against nginx serving the same file, interleaved.
        static = work / "nginx" / "static"
        static.mkdir(parents=True)
        shutil.copy(bundle, static / "bundle.raucb")
        nginx = start_nginx(work / "nginx", port + 1)
        url = f"/api/v1/device/firmware/{release.json()['sha256']}.raucb"
        sample = [p.auth for p in phones[: min(count, 2000)]]
        results: dict[str, list[tuple[float, float]]] = {"offhook": [], "nginx": []}
        for _ in range(2):
            for name, target_port, path, pid in (
                ("offhook", port, url, server.pid),
                ("nginx", port + 1, "/bundle.raucb", nginx.pid),
            ):
                cpu0, t1 = process_cpu_seconds(pid), time.monotonic()
                asyncio.run(download_sweep(target_port, path, sample, connections, size))
                results[name].append((time.monotonic() - t1, process_cpu_seconds(pid) - cpu0))
        for name, runs in results.items():
            secs = min(r[0] for r in runs)
            cpus = min(r[1] for r in runs)
            print(
                f"{name:>7}: {len(sample)} downloads of {size} bytes in {secs:.2f} s"
                f" ({len(sample) * size / secs / 1e6:.0f} MB/s), {1000 * cpus / len(sample):.2f}"
                " server CPU s per 1000 downloads"
            )
        ratio = min(r[0] for r in results["nginx"]) / min(r[0] for r in results["offhook"])
        print(f"download throughput: offhook = {100 * ratio:.0f}% of nginx (same run)")
        return 0
    except Exception:
        log = work / "server" / "server.log"
        if log.is_file():
            print("server log (last lines):", *log.read_text().splitlines()[-15:], sep="\n  ")
        raise
    finally:
        for process in (server, nginx):
            if process is not None:
                stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
