"""Admin web UI: time to serve a page of the devices list for a 5000-phone fleet.

Figures: the first page of the HTML list (/devices, 50 phones, each with its newest
registration state from the window-function query), the last page (deepest OFFSET), the
live-refresh fragment of the last page (/devices/rows), and the peer measured in the same run:
the admin REST API's JSON device list for the same page (?limit=50&offset=...), which returns
the devices without the registration join or HTML. In-process (ASGI test client, real SQLite).
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

FLEET = 5000
PAGE = 50
ROUNDS = 7
PASSWORD = "bench-web-password"


def _populate(database: object) -> None:
    from offhook.provisioning.admin_auth import create_admin
    from offhook.provisioning.models import DEVICE_APPROVED, Device, Group, StatusReport, utcnow

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

    from offhook.provisioning.app import create_app
    from offhook.provisioning.settings import ServerSettings

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
            last = FLEET // PAGE
            first_ms = _median_ms(client, f"/devices?per={PAGE}")
            last_ms = _median_ms(client, f"/devices?per={PAGE}&page={last}")
            rows_ms = _median_ms(client, f"/devices/rows?per={PAGE}&page={last}")
            api_ms = _median_ms(
                client, f"/api/v1/admin/devices?limit={PAGE}&offset={(last - 1) * PAGE}"
            )
            rows = client.get(f"/devices/rows?per={PAGE}&page={last}").text
    listed = rows.count("data-device=")
    if listed != PAGE or "registered" not in rows:
        print(f"last page listed {listed} devices, expected {PAGE} with their registration")
        return 1
    print(f"devices page 1 ({PAGE} of {FLEET} phones, HTML + registration): {first_ms:.1f} ms")
    print(f"devices page {last} (last, deepest offset): {last_ms:.1f} ms median")
    print(f"live-refresh fragment of page {last}: {rows_ms:.1f} ms median")
    print(f"peer: REST API JSON list of the same {PAGE} phones: {api_ms:.1f} ms median")
    print(
        f"ratio first page / REST: {first_ms / api_ms:.2f}x; last page / REST: "
        f"{last_ms / api_ms:.2f}x; fragment / REST: {rows_ms / api_ms:.2f}x"
    )
    return 0
