"""The real provisioning server process on SQLite and on PostgreSQL: device protocol end to end."""
# ruff: noqa: F811  (pytest fixtures imported by name are redefined as parameters)

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from offhook.provisioning.db import Database
from offhook.provisioning.models import EnrollmentToken, utcnow
from tests.fixtures.postgres import PostgresCluster, postgres_cluster  # noqa: F401 (fixture)
from tests.fixtures.provisioning_server import (  # noqa: F401 (fixture)
    DeviceCredential,
    ProvisioningServer,
    provisioning_server,
)

pytestmark = pytest.mark.integration

MAC_A = "b8:27:eb:00:00:0a"
MAC_B = "b8:27:eb:00:00:0b"


def _status_report(contact: str = "", revision: int | None = None) -> dict[str, object]:
    return {
        "id": uuid.uuid4().hex,
        "time": utcnow().isoformat(),
        "firmware_version": "0.1.0",
        "ip": "127.0.0.1",
        "uptime_s": 12.5,
        "config_revision": revision,
        "sip_contact": contact,
        "lines": [{"account": 0, "user": "1001", "registered": True, "status": 200}],
    }


def test_enrollment_pending_approval_and_nonce_rules(
    provisioning_server: ProvisioningServer,
) -> None:
    server = provisioning_server
    token = server.enrollment_token(max_uses=5)
    nonce = secrets.token_urlsafe(32)

    pending = server.enroll_request("B8-27-EB-00-00-0A", token, nonce)
    assert pending.status_code == 202
    assert pending.json() == {"status": "pending"}
    assert int(pending.headers["Retry-After"]) > 0
    assert server.enroll_request(MAC_A, token, nonce).status_code == 202  # still pending

    queue = server.admin.get("/devices", params={"status": "pending"}).json()
    assert [d["mac"] for d in queue] == [MAC_A]
    assert server.admin.post(f"/devices/{MAC_A}/approve").json()["status"] == "approved"

    first = server.enroll_request(MAC_A, token, nonce)
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "approved" and len(body["secret"]) == 43
    # The same nonce (a lost response retried) gets the same secret; another nonce does not.
    assert server.enroll_request(MAC_A, token, nonce).json() == body
    other = server.enroll_request(MAC_A, token)
    assert other.status_code == 409 and other.json()["code"] == "already_enrolled"

    cred = DeviceCredential(server.base_url, body["device_id"], body["secret"], MAC_A)
    with cred.client() as client:
        assert client.get("/api/v1/device/config").status_code == 200

    # Reset lets the phone enrol again (new secret); the old secret stops working.
    server.admin.post(f"/devices/{MAC_A}/reset").raise_for_status()
    again = server.enroll_request(MAC_A, token)
    assert again.status_code == 200 and again.json()["secret"] != body["secret"]
    with cred.client() as client:
        assert client.get("/api/v1/device/config").status_code == 401

    # Rejection is final for that MAC until an admin changes it.
    server.enroll_request(MAC_B, token).raise_for_status()
    server.admin.post(f"/devices/{MAC_B}/reject").raise_for_status()
    rejected = server.enroll_request(MAC_B, token)
    assert rejected.status_code == 403 and rejected.json()["code"] == "rejected"

    bad_mac = server.enroll_request("not-a-mac", token)
    assert bad_mac.status_code == 422


def test_tokens_forged_expired_revoked_credentials(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    one_use = server.enrollment_token(max_uses=1)
    server.add_device(MAC_A)
    server.add_device(MAC_B)
    assert server.enroll_request(MAC_A, one_use).status_code == 200  # pre-registered: at once
    exhausted = server.enroll_request(MAC_B, one_use)
    assert exhausted.status_code == 403 and exhausted.json()["code"] == "bad_token"
    assert server.enroll_request(MAC_B, "forged-" + one_use).json()["code"] == "bad_token"

    expiring = server.enrollment_token()
    database = Database(server.db_url)
    try:
        with database.session() as db:
            for row in db.query(EnrollmentToken):
                row.expires_at = utcnow() - timedelta(seconds=1)
    finally:
        database.dispose()
    assert server.enroll_request(MAC_B, expiring).json()["code"] == "bad_token"

    revoked_token = server.admin.post("/enrollment-tokens", json={"max_uses": 3}).json()
    server.admin.delete(f"/enrollment-tokens/{revoked_token['id']}").raise_for_status()
    assert server.enroll_request(MAC_B, revoked_token["token"]).json()["code"] == "bad_token"

    # Concurrent enrolments cannot use a token more than max_uses times.
    limited = server.enrollment_token(max_uses=3)
    macs = [f"b8:27:eb:00:01:{i:02x}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(lambda m: server.enroll_request(m, limited).status_code, macs))
    assert codes == [202] * 3 + [403] * 5

    cred = server.enroll("b8:27:eb:00:00:0c", name="desk c")
    other = server.enroll("b8:27:eb:00:00:0d", name="desk d")
    with server.device_client() as client:
        assert client.get("/api/v1/device/config").status_code == 401
        forged = DeviceCredential(server.base_url, cred.device_id, secrets.token_urlsafe(32), "")
        reply = client.get("/api/v1/device/config", headers={"Authorization": forged.authorization})
        assert reply.status_code == 401 and reply.json()["code"] == "unauthorized"
        # Own id with another device's secret: no access to either config.
        mixed = DeviceCredential(server.base_url, cred.device_id, other.secret, "")
        assert (
            client.get(
                "/api/v1/device/config", headers={"Authorization": mixed.authorization}
            ).status_code
            == 401
        )
    with cred.client() as client:
        assert client.get("/api/v1/device/config").json()["device"]["name"] == "desk c"
    with other.client() as client:
        assert client.get("/api/v1/device/config").json()["device"]["name"] == "desk d"

    server.admin.post(f"/devices/{cred.device_id}/revoke").raise_for_status()
    with cred.client() as client:
        reply = client.get("/api/v1/device/config")
        assert reply.status_code == 403 and reply.json()["code"] == "revoked"
        assert client.post("/api/v1/device/status", json=_status_report()).status_code == 403


def test_config_inheritance_etag_and_revisions(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    admin = server.admin
    admin.patch(
        "/settings/fleet", json={"set": {"audio.tone_plan": "uk", "features.call_waiting": False}}
    ).raise_for_status()
    admin.post(
        "/groups",
        json={"name": "hq", "kind": "site", "settings": {"audio": {"speaker_volume": 60}}},
    ).raise_for_status()
    admin.post(
        "/groups",
        json={"name": "sales", "parent": "hq", "settings": {"audio": {"tone_plan": "eu"}}},
    ).raise_for_status()
    admin.post(
        "/templates",
        json={"name": "quiet", "settings": {"audio": {"ring_volume": 20, "speaker_volume": 10}}},
    ).raise_for_status()
    admin.put("/groups/sales/templates/quiet").raise_for_status()
    cred = server.enroll(MAC_A, group="sales", name="sales desk")
    reply = admin.post(
        f"/devices/{MAC_A}/lines",
        json={
            "extension": "1001",
            "registrar": "pbx.example.net:5060",
            "password": "pw-1001-secret",
            "display_name": "Ada",
        },
    )
    reply.raise_for_status()
    admin.patch(
        f"/devices/{MAC_A}/settings", json={"set": {"features.dnd": True}}
    ).raise_for_status()

    with cred.client() as client:
        first = client.get("/api/v1/device/config")
        assert first.status_code == 200
        config = first.json()
        assert config["audio"]["tone_plan"] == "eu"  # group beats fleet
        assert config["audio"]["speaker_volume"] == 10  # sales' template beats its parent hq
        assert config["audio"]["ring_volume"] == 20
        assert config["features"] == {**config["features"], "call_waiting": False, "dnd": True}
        assert config["device"]["name"] == "sales desk"
        assert config["accounts"][0]["password"] == "pw-1001-secret"
        assert "provisioning" not in config and "control" not in config
        from offhook.contract.config import parse_config

        parse_config(config)  # the phone's own validator accepts it
        etag = first.headers["ETag"]
        assert re.fullmatch(r'"\d+-[0-9a-f]{16}"', etag)
        assert first.headers["X-Config-Revision"] == etag.strip('"').split("-")[0]

        cached = client.get("/api/v1/device/config", headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""

        admin.patch(
            "/groups/hq/settings",
            json={"set": {"features.auto_answer": "true"}, "unset": ["audio.speaker_volume"]},
        ).raise_for_status()
        changed = client.get("/api/v1/device/config", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag
        assert int(changed.headers["X-Config-Revision"]) > int(first.headers["X-Config-Revision"])
        assert changed.json()["features"]["auto_answer"] is True  # schema-coerced "true"

    invalid = admin.patch("/settings/fleet", json={"set": {"audio.tone_plan": "mars"}})
    assert invalid.status_code == 422 and "audio.tone_plan" in invalid.json()["detail"]
    unknown = admin.patch("/settings/fleet", json={"set": {"audio.volume_knob": 3}})
    assert unknown.status_code == 422 and "unknown key" in unknown.json()["detail"]
    local = admin.patch("/settings/fleet", json={"set": {"control.token": "x"}})
    assert local.status_code == 422


def test_secrets_are_encrypted_at_rest(
    provisioning_server: ProvisioningServer, request: pytest.FixtureRequest
) -> None:
    server = provisioning_server
    password = "Plaintext-SIP-" + secrets.token_hex(6)
    token = server.enrollment_token()
    server.add_device(MAC_A)
    cred_body = server.enroll_request(MAC_A, token).json()
    server.admin.post(
        f"/devices/{MAC_A}/lines",
        json={
            "extension": "1001",
            "registrar": "pbx.example.net",
            "password": password,
        },
    ).raise_for_status()
    with DeviceCredential(
        server.base_url, cred_body["device_id"], cred_body["secret"], MAC_A
    ).client() as client:
        assert client.get("/api/v1/device/config").json()["accounts"][0]["password"] == password

    if server.backend == "sqlite":
        db_file = server.data_dir / "provisioning.db"
        blob = b"".join(p.read_bytes() for p in db_file.parent.glob("provisioning.db*"))
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        blob = cluster.pg_dump(server.db_url).encode()
    assert b"lines.password" not in blob  # the purpose is AAD, not stored
    assert b"v1:" in blob  # ciphertexts are there ...
    for plain in (password, cred_body["secret"], token):  # ... plaintexts are not
        assert plain.encode() not in blob
    assert hashlib.sha256(cred_body["secret"].encode()).hexdigest().encode() in blob


def test_reports_are_idempotent_and_listed(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    cred = server.enroll(MAC_A)
    cdr = {
        "id": uuid.uuid4().hex,
        "direction": "outgoing",
        "account": 0,
        "local_uri": "sip:1001@pbx",
        "remote_uri": "sip:1002@pbx",
        "remote_name": "Bob",
        "start": time.time() - 60,
        "answer": time.time() - 55,
        "end": time.time(),
        "disposition": "answered",
        "status_code": 200,
    }
    second = {**cdr, "id": uuid.uuid4().hex}
    quality = {
        "id": uuid.uuid4().hex,
        "call_record_id": cdr["id"],
        "time": utcnow().isoformat(),
        "codec": "G722",
        "jitter_ms": 3.5,
        "loss_pct": 0.1,
        "rtt_ms": 20.0,
        "mos": 4.3,
    }
    event = {
        "id": uuid.uuid4().hex,
        "time": utcnow().isoformat(),
        "type": "config_applied",
        "config_revision": 2,
        "detail": "",
    }
    with cred.client() as client:
        assert client.post("/api/v1/device/cdrs", json={"records": [cdr]}).json() == {
            "accepted": [cdr["id"]]
        }
        again = client.post("/api/v1/device/cdrs", json={"records": [cdr, second]}).json()
        assert sorted(again["accepted"]) == sorted([cdr["id"], second["id"]])
        for _ in range(2):
            assert client.post("/api/v1/device/quality", json={"records": [quality]}).json()[
                "accepted"
            ] == [quality["id"]]
            assert client.post("/api/v1/device/events", json={"records": [event]}).json()[
                "accepted"
            ] == [event["id"]]
            report = {**_status_report("127.0.0.1:5999", 1), "poll_interval_s": 60}
            assert client.post("/api/v1/device/status", json=report).json()["accepted"] == [
                report["id"]
            ]
        bad = client.post("/api/v1/device/cdrs", json={"records": [{**cdr, "direction": "up"}]})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid"
        too_fast = {**_status_report(), "poll_interval_s": 5}  # below the phone schema's bound
        assert client.post("/api/v1/device/status", json=too_fast).status_code == 422

    cdrs = server.admin.get("/cdrs", params={"device": MAC_A}).json()
    assert sorted(c["id"] for c in cdrs) == sorted([cdr["id"], second["id"]])
    assert [q["mos"] for q in server.admin.get("/quality").json()] == [4.3]
    assert len(server.admin.get("/events").json()) == 1
    device = server.admin.get(f"/devices/{MAC_A}").json()
    assert device["sip_contact"] == "127.0.0.1:5999" and device["reported_revision"] == 1
    assert device["poll_interval_s"] == 60  # the phone's own interval, for its liveness


def test_notify_check_sync_sent_on_change(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    cred = server.enroll(MAC_A)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(15)
    try:
        contact = f"127.0.0.1:{listener.getsockname()[1]}"
        with cred.client() as client:
            client.post("/api/v1/device/status", json=_status_report(contact)).raise_for_status()
        server.admin.patch(
            f"/devices/{MAC_A}/settings", json={"set": {"audio.tone_plan": "uk"}}
        ).raise_for_status()
        data, peer = listener.recvfrom(65535)
        text = data.decode()
        head, *lines = text.split("\r\n")
        assert head.startswith(f"NOTIFY sip:{cred.device_id}@127.0.0.1:") and head.endswith(
            "SIP/2.0"
        )
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines if ":" in line)
        }
        assert headers["event"] == "check-sync"
        cseq_number = int(headers["cseq"].split()[0])
        assert headers["cseq"].split()[1] == "NOTIFY"
        expected = hmac.new(
            cred.secret.encode(), f"{headers['call-id']}{cseq_number}".encode(), hashlib.sha256
        ).hexdigest()
        assert headers["x-offhook-signature"] == expected
        assert text.endswith("\r\n\r\n")
        # Answer like the phone; the server logs the answer.
        reply_headers = [
            line
            for line in lines
            if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        reply = "\r\n".join(["SIP/2.0 200 OK", *reply_headers, "Content-Length: 0", "", ""])
        listener.sendto(reply.encode(), peer)
        deadline = time.monotonic() + 10
        while "notify answered" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"notify answered device={cred.device_id}" in server.log_text()

        # An explicit resync also notifies, without a revision change.
        resync = server.admin.post("/resync", json={"device_ids": [MAC_A]}).json()
        assert resync == {"devices": 1, "notified": 1}
        assert b"Event: check-sync" in listener.recvfrom(65535)[0]
    finally:
        listener.close()


def test_audit_privacy_export_erase(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    admin = server.admin
    cred = server.enroll(MAC_A)
    admin.post(
        f"/devices/{MAC_A}/lines",
        json={"extension": "2001", "registrar": "pbx.local", "password": "audit-pw-secret"},
    ).raise_for_status()
    cdr = {
        "id": uuid.uuid4().hex,
        "direction": "incoming",
        "account": 0,
        "start": time.time(),
        "end": time.time() + 5,
        "disposition": "missed",
    }
    with cred.client() as client:
        client.post("/api/v1/device/cdrs", json={"records": [cdr]}).raise_for_status()

    entries = admin.get("/audit", params={"action": "line.create"}).json()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor"] == "admin:fixture-admin" and entry["before"] is None
    assert entry["after"]["extension"] == "2001" and entry["after"]["password"] == "***"
    assert "audit-pw-secret" not in str(admin.get("/audit").json())
    approve = admin.get("/audit", params={"action": "device.create"}).json()[0]
    assert approve["after"]["mac"] == MAC_A

    export = admin.post("/privacy/export", json={"extension": "2001"}).json()
    assert [c["id"] for c in export["call_records"]] == [cdr["id"]]
    assert "password_enc" not in str(export)
    device_export = admin.post("/privacy/export", json={"device": MAC_A}).json()
    assert device_export["device"]["mac"] == MAC_A and "secret_hash" not in device_export["device"]

    erased = admin.post("/privacy/erase", json={"extension": "2001"}).json()
    assert erased["call_records"] == 1 and erased["lines"] == 1
    assert admin.get("/cdrs").json() == []
    actions = [e["action"] for e in admin.get("/audit").json()]
    assert actions.count("privacy.export") == 2 and "privacy.erase" in actions

    both = admin.post("/privacy/erase", json={"device": MAC_A, "extension": "2001"})
    assert both.status_code == 422
    assert admin.post("/privacy/erase", json={"device": MAC_A}).json()["devices"] == 1
    assert admin.get(f"/devices/{MAC_A}").status_code == 404


def test_admin_api_requires_token_and_role(provisioning_server: ProvisioningServer) -> None:
    server = provisioning_server
    with server.device_client() as anonymous:
        reply = anonymous.get("/api/v1/admin/devices")
        assert reply.status_code == 401
        bad = anonymous.get("/api/v1/admin/devices", headers={"Authorization": "Bearer ohk_x"})
        assert bad.status_code == 401
    server.admin.post(
        "/users", json={"username": "viewer", "password": "viewer-password", "role": "read-only"}
    ).raise_for_status()
    created = server.fleet(
        "create-admin",
        "op",
        "--role",
        "read-only",
        "--password-stdin",
        "--api-token",
        input_text="operator-password\n",
    )
    token = re.search(r"api token: (\S+)", created.stdout).group(1)  # type: ignore[union-attr]
    with server.device_client(headers={"Authorization": f"Bearer {token}"}) as viewer:
        assert viewer.get("/api/v1/admin/devices").status_code == 200
        denied = viewer.post("/api/v1/admin/devices", json={"mac": MAC_A})
        assert denied.status_code == 403
    schema = server.admin.get(server.base_url + "/openapi.json").json()
    assert "/api/v1/admin/devices/import" in schema["paths"]
    assert "/api/v1/device/enroll" in schema["paths"]
    assert server.admin.get(server.base_url + "/docs").status_code == 200


def test_https_with_generated_ca(tmp_path: Path) -> None:
    with ProvisioningServer(tmp_path, tls=True) as server:
        from offhook.provisioning.tls import fingerprint_of

        ca_pem = (server.data_dir / "tls" / "ca.pem").read_bytes()
        assert server.ca_fingerprint == fingerprint_of(ca_pem)
        assert server.admin.get("/status").status_code == 200  # verified against the CA
        import httpx

        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base_url + "/healthz", verify=True, timeout=5)  # system CAs: no


def test_two_app_processes_share_one_postgres(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    """Scale-out: stateless app processes on one database see each other's changes at once."""
    url = postgres_cluster.create_database()
    with ProvisioningServer(tmp_path / "a", url) as first:
        shared_key = {"OFFHOOK_KEY_FILE": str(first.key_file)}
        with ProvisioningServer(
            tmp_path / "b", url, env=shared_key, admin_user="second-admin"
        ) as second:
            cred = first.enroll(MAC_A)
            on_second = DeviceCredential(second.base_url, cred.device_id, cred.secret, MAC_A)
            with on_second.client() as client:
                before = client.get("/api/v1/device/config")
                assert before.status_code == 200
                first.admin.patch(
                    "/settings/fleet", json={"set": {"audio.tone_plan": "eu"}}
                ).raise_for_status()
                after = client.get(
                    "/api/v1/device/config", headers={"If-None-Match": before.headers["ETag"]}
                )
                assert after.status_code == 200 and after.json()["audio"]["tone_plan"] == "eu"
            second.admin.post(
                f"/devices/{MAC_A}/lines",
                json={
                    "extension": "1001",
                    "registrar": "pbx.local",
                    "password": "shared-key-pw",
                },
            ).raise_for_status()
            with cred.client() as client:
                config = client.get("/api/v1/device/config").json()
            assert config["accounts"][0]["password"] == "shared-key-pw"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_worker_serves_new_revisions_and_honours_revocation(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two app processes (``--workers 2``) behind one port, both with warm render caches: the
    config fast path must reflect a change and a revocation made through either on the very
    next request, whichever worker answers it (fresh connection per request)."""
    url = ""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_cluster").create_database()
    with ProvisioningServer(tmp_path, url, workers=2) as server:
        cred = server.enroll(MAC_A)
        other = server.enroll(MAC_B)

        def fetch(credential: DeviceCredential, etag: str = "") -> httpx.Response:
            headers = {"Authorization": credential.authorization}
            if etag:
                headers["If-None-Match"] = etag
            with server.device_client() as client:  # a new connection: either worker
                return client.get("/api/v1/device/config", headers=headers)

        first = [fetch(cred) for _ in range(12)]  # warms both workers' caches
        assert {r.status_code for r in first} == {200}
        etag = first[-1].headers["ETag"]
        assert {fetch(cred, etag).status_code for _ in range(12)} == {304}

        server.admin.patch(
            "/settings/fleet", json={"set": {"audio.ring_volume": 42}}
        ).raise_for_status()
        changed = [fetch(cred, etag) for _ in range(12)]
        assert {r.status_code for r in changed} == {200}
        assert {r.json()["audio"]["ring_volume"] for r in changed} == {42}
        assert len({r.headers["ETag"] for r in changed}) == 1 != etag

        server.admin.post(f"/devices/{cred.device_id}/revoke").raise_for_status()
        revoked = [fetch(cred, changed[0].headers["ETag"]) for _ in range(12)]
        assert {(r.status_code, r.json()["code"]) for r in revoked} == {(403, "revoked")}
        # the revocation is per device: the other phone is still served
        assert {fetch(other).status_code for _ in range(6)} == {200}
