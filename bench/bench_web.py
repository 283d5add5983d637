"""Admin web UI: time to serve the devices page for a 1000-phone fleet.

Figures: the full HTML page (/devices, with each phone's latest registration state joined in),
the live-refresh fragment (/devices/rows), and the peer measured in the same run: the admin
REST API's JSON device list (/api/v1/admin/devices?limit=1000), which returns the same devices
without the registration join or HTML. In-process (ASGI test client, real SQLite file).
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

FLEET = 1000
ROUNDS = 7
PASSWORD = "bench-web-password"


def _populate(database: object) -> None:
    from provisioning.admin_auth import create_admin
    from provisioning.models import DEVICE_APPROVED, Device, Group, StatusReport, utcnow

    now = utcnow()
    with database.session() as db:  # type: ignore[attr-defined]
        create_admin(db, "bench", PASSWORD, "admin")
        group = Group(name="Bench site", kind="site")
        db.add(group)
        db.flush()
        for i in range(FLEET):
            device = Device(
                mac=f"b8:27:eb:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                name=f"Phone {i:04d}",
                status=DEVICE_APPROVED,
                group_id=group.id,
                secret_hash=uuid.uuid4().hex,
                firmware_version="0.1.0",
                last_ip=f"10.0.{i >> 8}.{i & 255}",
                last_seen=now,
                reported_revision=1,
            )
            db.add(device)
            db.flush()
            for age in (120, 0):  # two reports each: the page must pick the newest
                db.add(
                    StatusReport(
                        id=uuid.uuid4().hex,
                        device_id=device.id,
                        time=now - timedelta(seconds=age),
                        firmware_version="0.1.0",
                        ip=device.last_ip,
                        lines=[{"account": 0, "user": f"{1000 + i}", "registered": age == 0}],
                    )
                )


def _median_ms(client: object, path: str) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        reply = client.get(path)  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - start) * 1000)
        if reply.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {reply.status_code}")
    return statistics.median(samples)


def main() -> int:
    from fastapi.testclient import TestClient

    from provisioning.app import create_app
    from provisioning.settings import ServerSettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(data_dir=Path(tmp), purge_interval_s=0, notify_enabled=False)
        app = create_app(settings)
        _populate(app.state.database)
        with TestClient(app, base_url="http://127.0.0.1") as client:
            page = client.get("/login").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            client.post(
                "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
            )
            page_ms = _median_ms(client, "/devices")
            rows_ms = _median_ms(client, "/devices/rows")
            api_ms = _median_ms(client, "/api/v1/admin/devices?limit=1000")
            rows = client.get("/devices/rows").text.count("data-device=")
    if rows != FLEET:
        print(f"devices page listed {rows} devices, expected {FLEET}")
        return 1
    print(f"devices page ({FLEET} phones, HTML + registration state): {page_ms:.1f} ms median")
    print(f"live-refresh fragment /devices/rows: {rows_ms:.1f} ms median")
    print(f"peer: REST API JSON device list, same {FLEET} phones: {api_ms:.1f} ms median")
    print(
        f"ratio page / REST list: {page_ms / api_ms:.2f}x; fragment / REST list: "
        f"{rows_ms / api_ms:.2f}x"
    )
    return 0
