"""Fleet simulator on PostgreSQL: N virtual phones (no SIP) enrolling and polling.

Measures, in one run against a throwaway PostgreSQL cluster and the real server (2 workers):
- enrollment rate (a sample of phones enrolling over HTTP with a shared token),
- the fleet-wide resync: one admin change (fleet default) bumps every phone's revision, then
  every phone fetches its new config (re-rendered) - the time until ALL phones hold the new
  revision, extrapolated linearly to 100k phones (goal: within 5 minutes),
- the peer: the same phones' steady-state poll sweep (If-None-Match -> 304) in the same run.
Phones fetch as soon as they are told (as after a NOTIFY), through a bounded number of
keep-alive connections. OFFHOOK_BENCH_PHONES (default 10000), OFFHOOK_BENCH_ENROLL (200),
OFFHOOK_BENCH_CONNECTIONS (32).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_config_fetch import HOST, free_port, get_request, start_server, stop

GOAL_100K_S = 300.0


Reply = tuple[int, int, str]  # status, X-Config-Revision, ETag


async def _sweep_worker(
    port: int, requests: list[tuple[int, bytes]], results: list[Reply | None]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for index, request in requests:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, revision, etag = int(head[9:12]), 0, -1, ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-config-revision":
                    revision = int(value)
                elif name == b"etag":
                    etag = value.strip().decode()
            if length:
                await reader.readexactly(length)
            results[index] = (status, revision, etag)
    finally:
        writer.close()


def sweep(port: int, requests: list[bytes], connections: int) -> tuple[float, list[Reply]]:
    """Every request exactly once over ``connections``; (seconds, replies in request order)."""
    results: list[Reply | None] = [None] * len(requests)
    indexed = list(enumerate(requests))
    chunks = [indexed[i::connections] for i in range(connections)]

    async def run() -> None:
        await asyncio.gather(*(_sweep_worker(port, c, results) for c in chunks if c))

    start = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - start
    return elapsed, [r if r is not None else (0, -1, "") for r in results]


def seed_fleet(db_url: str, data_dir: Path, phones: int) -> list[tuple[str, str]]:
    """Bulk insert approved, enrolled phones with one line each (as after a mass roll-out)."""
    from sqlalchemy import insert

    from offhook.provisioning.auth import new_device_secret, secret_digest
    from offhook.provisioning.crypto import load_key_ring
    from offhook.provisioning.db import Database
    from offhook.provisioning.models import Device, Group, Line, new_uuid, utcnow

    database = Database(db_url)
    database.migrate()
    keys = load_key_ring(data_dir / "secret.key", create=True)
    now = utcnow()
    creds: list[tuple[str, str]] = []
    devices, lines = [], []
    for i in range(phones):
        device_id, secret = new_uuid(), new_device_secret()
        creds.append((device_id, secret))
        devices.append(
            {
                "id": device_id,
                "mac": f"02:01:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:"
                f"{(i >> 8) & 255:02x}:{i & 255:02x}",
                "serial": f"{i:016x}",
                "model": "offhook-pi4",
                "name": f"phone {i}",
                "group_id": 1 + i % 10,
                "status": "approved",
                "pre_registered": True,
                "settings": {},
                "revision": 1,
                "secret_hash": secret_digest(secret),
                "secret_enc": keys.encrypt(secret, "devices.secret"),
                "enrolled_at": now,
                "firmware_version": "0.1.0",
                "last_ip": "",
                # a reported check-sync contact, so the admin change also computes every phone's
                # NOTIFY target (the sender itself is off: no packets leave the bench)
                "sip_contact": f"127.0.0.1:{20000 + i % 40000}",
                "created_at": now,
                "updated_at": now,
            }
        )
        lines.append(
            {
                "device_id": device_id,
                "position": 0,
                "extension": str(100000 + i),
                "auth_user": "",
                "password_enc": keys.encrypt(f"pw-{i}", "lines.password"),
                "display_name": f"User {i}",
                "registrar": "pbx.fleet.local",
                "transport": "udp",
                "outbound_proxy": "",
                "enabled": True,
                "created_at": now,
            }
        )
    with database.session() as db:
        db.execute(
            insert(Group),
            [
                {
                    "id": g,
                    "name": f"site {g}",
                    "kind": "site",
                    "parent_id": None,
                    "settings": {"audio": {"tone_plan": "eu"}},
                    "created_at": now,
                }
                for g in range(1, 11)
            ],
        )
        for start in range(0, phones, 2000):
            db.execute(insert(Device), devices[start : start + 2000])
            db.execute(insert(Line), lines[start : start + 2000])
    database.dispose()
    return creds


def _auth(device_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()


def main() -> int:
    import httpx

    from tests.fixtures.postgres import PostgresCluster

    phones = int(os.environ.get("OFFHOOK_BENCH_PHONES", "10000"))
    enroll_sample = int(os.environ.get("OFFHOOK_BENCH_ENROLL", "200"))
    connections = int(os.environ.get("OFFHOOK_BENCH_CONNECTIONS", "32"))
    root = Path(tempfile.mkdtemp(prefix="offhook-bench-fleet-"))
    cluster = PostgresCluster()
    server = None
    try:
        cluster.start()
        db_url = cluster.create_database("fleet")
        data_dir = root / "server"
        data_dir.mkdir()
        t0 = time.monotonic()
        creds = seed_fleet(db_url, data_dir, phones)
        print(f"seeded {phones} phones in {time.monotonic() - t0:.1f} s (PostgreSQL 15)")

        from offhook.provisioning.admin_auth import create_admin, create_api_token
        from offhook.provisioning.db import Database

        database = Database(db_url)
        with database.session() as db:
            token = create_api_token(db, create_admin(db, "bench", "bench-password!"))[0]
        database.dispose()
        port = free_port()
        server = start_server(data_dir, db_url, port, workers=2)
        base = f"http://{HOST}:{port}"
        admin = httpx.Client(
            base_url=base + "/api/v1/admin",
            timeout=120,
            headers={"Authorization": f"Bearer {token}"},
        )

        # Enrollment: pre-registered phones enrolling with one shared token.
        enroll_token = admin.post("/enrollment-tokens", json={"max_uses": enroll_sample}).json()[
            "token"
        ]
        new_macs = [f"02:02:00:00:{i >> 8:02x}:{i & 255:02x}" for i in range(enroll_sample)]
        for mac in new_macs:
            admin.post("/devices", json={"mac": mac}).raise_for_status()

        async def enroll_all() -> int:
            limits = httpx.Limits(max_connections=connections)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
                replies = await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/device/enroll",
                            json={
                                "mac": mac,
                                "serial": f"{i:016x}",
                                "model": "offhook-pi4",
                                "firmware_version": "0.1.0",
                                "enrollment_token": enroll_token,
                                "nonce": secrets.token_urlsafe(32),
                            },
                        )
                        for i, mac in enumerate(new_macs)
                    )
                )
            return sum(r.status_code == 200 for r in replies)

        t0 = time.monotonic()
        enrolled = asyncio.run(enroll_all())
        enroll_s = time.monotonic() - t0
        print(
            f"enrollment: {enrolled}/{enroll_sample} phones in {enroll_s:.1f} s "
            f"= {enrolled / enroll_s:.0f} /s"
        )
        if enrolled != enroll_sample:
            return 1

        plain = [
            get_request("/api/v1/device/config", {"Authorization": _auth(d, s)}) for d, s in creds
        ]
        first_s, first = sweep(port, plain, connections)
        if any(status != 200 for status, _, _ in first):
            print(f"initial sync failed: {sorted({s for s, _, _ in first})}")
            return 1
        print(
            f"initial sync (every phone renders + fetches): {first_s:.1f} s "
            f"= {phones / first_s:.0f} phones/s"
        )
        revision = max(rev for _, rev, _ in first)

        # Steady state (the peer): everyone polls with the ETag it holds.
        conditional = [
            get_request(
                "/api/v1/device/config", {"Authorization": _auth(d, s), "If-None-Match": etag}
            )
            for (d, s), (_, _, etag) in zip(creds, first, strict=True)
        ]
        steady_s, steady = sweep(port, conditional, connections)
        if any(status != 304 for status, _, _ in steady):
            print(f"steady-state poll not all 304: {sorted({s for s, _, _ in steady})}")
            return 1
        print(
            f"steady-state poll sweep (all 304): {steady_s:.1f} s "
            f"= {phones / steady_s:.0f} phones/s"
        )

        # The fleet-wide change and the resync.
        t0 = time.monotonic()
        admin.patch("/settings/fleet", json={"set": {"audio.ring_volume": 42}}).raise_for_status()
        change_s = time.monotonic() - t0
        resync_s, resynced = sweep(port, conditional, connections)
        total_s = change_s + resync_s
        fresh = sum(1 for status, rev, _ in resynced if status == 200 and rev > revision)
        if fresh != phones:
            print(f"resync incomplete: {fresh}/{phones} phones got the new revision")
            return 1
        per_100k = change_s * 100_000 / phones + resync_s * 100_000 / phones
        print(
            f"fleet-wide change: admin call {change_s:.2f} s (bumps {phones + enroll_sample} "
            f"revisions), all {phones} phones on the new revision after {total_s:.1f} s"
        )
        print(
            f"resync {phones} phones: {total_s:.1f} s; extrapolated to 100k: {per_100k:.0f} s "
            f"(goal <= {GOAL_100K_S:.0f} s: {'met' if per_100k <= GOAL_100K_S else 'NOT met'})"
        )
        print(f"resync sweep vs steady-state 304 sweep (peer): {resync_s / steady_s:.2f}x the time")
        admin.close()
        return 0
    finally:
        if server is not None:
            stop(server)
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
