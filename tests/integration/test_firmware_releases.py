"""Firmware releases and bundle downloads on the real server (``offhook server``, SQLite) with
real RAUC: bundles made by ``rauc bundle`` with openssl key pairs, verified by the server with
``rauc info``/``rauc extract`` against its keyring."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.postgres import free_tcp_port
from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer
from tests.fixtures.rauc_bundles import SigningPair, make_bundle, tamper

pytestmark = pytest.mark.integration

COMPATIBLE = "offhook-qemu-amd64"
# Loopback ports for these servers (the range this suite was given), or a free one of
# $OFFHOOK_TEST_PORTS when the run has a range of its own.
_PORTS = itertools.count(18400)


def next_port() -> int:
    return free_tcp_port() if os.environ.get("OFFHOOK_TEST_PORTS") else next(_PORTS)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningPair]:
    directory = tmp_path_factory.mktemp("keys")
    return {
        "good": SigningPair.make(directory, "fleet-signing"),
        "other": SigningPair.make(directory, "someone-else"),
    }


@pytest.fixture(scope="module")
def bundles(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SigningPair]
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bundles")
    good = make_bundle(directory, keys["good"], COMPATIBLE, "0.2.0", 256 * 1024)
    return {
        "good": good,
        "next": make_bundle(directory, keys["good"], COMPATIBLE, "0.3.0"),
        "other_key": make_bundle(directory, keys["other"], COMPATIBLE, "0.2.1", name="other-key"),
        "tampered": tamper(good, offset=200),
    }


def start_server(tmp: Path, keyring: Path, env: dict[str, str] | None = None) -> ProvisioningServer:
    server = ProvisioningServer(tmp, env=env)
    server.port = next_port()
    (server.data_dir / "firmware-keyring.pem").write_bytes(keyring.read_bytes())
    server.start()
    return server


@pytest.fixture
def server(tmp_path: Path, keys: dict[str, SigningPair]) -> Iterator[ProvisioningServer]:
    running = start_server(tmp_path, keys["good"].cert)
    try:
        yield running
    finally:
        running.stop()


def upload(server: ProvisioningServer, bundle: Path) -> httpx.Response:
    return server.admin.post(
        "/firmware",
        content=bundle.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )


def stored_files(server: ProvisioningServer) -> list[str]:
    root = server.data_dir / "firmware"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def report_board(device: DeviceCredential, compatible: str, version: str = "0.1.0") -> None:
    with device.client() as client:
        reply = client.post(
            "/api/v1/device/status",
            json={
                "id": secrets.token_hex(8),
                "time": "2026-12-03T17:00:00Z",
                "firmware_version": version,
                "firmware": {"compatible": compatible, "state": "idle", "slot": "A"},
            },
        )
        reply.raise_for_status()


def test_verified_bundle_becomes_a_release_with_board_and_version_from_its_manifest(
    server: ProvisioningServer, bundles: dict[str, Path]
) -> None:
    reply = upload(server, bundles["good"])
    assert reply.status_code == 201, reply.text
    release = reply.json()
    data = bundles["good"].read_bytes()
    assert release["compatible"] == COMPATIBLE
    assert release["version"] == "0.2.0"
    assert release["sha256"] == hashlib.sha256(data).hexdigest()
    assert release["size"] == len(data)
    assert release["signer"] == "CN = fleet-signing"
    assert stored_files(server) == [f"{release['sha256']}.raucb"]  # no scratch file left
    assert (server.data_dir / "firmware" / f"{release['sha256']}.raucb").read_bytes() == data
    listed = server.admin.get("/firmware").json()
    assert [r["id"] for r in listed] == [release["id"]]
    assert server.admin.get("/firmware/0.2.0").json()["id"] == release["id"]
    audit = server.admin.get("/audit", params={"action": "firmware.upload"}).json()
    assert len(audit) == 1 and audit[0]["after"]["version"] == "0.2.0"
    # The same file again, or another file claiming the same board and version: 409.
    again = upload(server, bundles["good"])
    assert again.status_code == 409 and "already release" in again.json()["detail"]


def test_bundle_signed_with_another_key_is_refused_and_never_stored(
    server: ProvisioningServer, bundles: dict[str, Path]
) -> None:
    reply = upload(server, bundles["other_key"])
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["code"] == "bad_signature"
    assert "does not verify against the server's keyring" in body["detail"]
    assert "self-signed certificate" in body["detail"]  # RAUC's own reason
    assert server.admin.get("/firmware").json() == []
    assert stored_files(server) == []


def test_bundle_with_a_changed_payload_is_refused(
    server: ProvisioningServer, bundles: dict[str, Path]
) -> None:
    """The manifest's signature still verifies (``rauc info`` says yes); the payload does not
    match the signed verity hash, which only ``rauc extract`` reads."""
    reply = upload(server, bundles["tampered"])
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "bad_payload"
    assert "corrupted" in reply.json()["detail"]
    assert server.admin.get("/firmware").json() == []
    assert stored_files(server) == []


def test_not_a_bundle_and_an_empty_body_are_refused(server: ProvisioningServer) -> None:
    junk = server.admin.post("/firmware", content=b"not a bundle" * 1000)
    assert junk.status_code == 422, junk.text
    empty = server.admin.post("/firmware", content=b"")
    assert empty.status_code == 422 and "empty body" in empty.json()["detail"]
    assert stored_files(server) == []


def test_bundle_above_the_size_limit_is_refused_while_streaming(
    tmp_path: Path, keys: dict[str, SigningPair], bundles: dict[str, Path]
) -> None:
    server = start_server(tmp_path, keys["good"].cert, {"OFFHOOK_FIRMWARE_MAX_BYTES": "100000"})
    try:
        declared = upload(server, bundles["good"])  # Content-Length above the limit
        assert declared.status_code == 413, declared.text
        data = bundles["good"].read_bytes()

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for i in range(0, len(data), 32 * 1024):
                yield data[i : i + 32 * 1024]

        streamed = server.admin.post("/firmware", content=chunks())
        assert streamed.status_code == 413, streamed.text
        assert "OFFHOOK_FIRMWARE_MAX_BYTES" in streamed.json()["detail"]
        assert stored_files(server) == []
        small = upload(server, bundles["next"])  # 64 KiB payload: within the limit
        assert small.status_code == 201, small.text
    finally:
        server.stop()


def test_no_keyring_means_no_upload(tmp_path: Path, bundles: dict[str, Path]) -> None:
    server = ProvisioningServer(tmp_path)
    server.port = next_port()
    server.start()
    try:
        reply = upload(server, bundles["good"])
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == "no_keyring"
        assert "OFFHOOK_FIRMWARE_KEYRING" in reply.json()["detail"]
    finally:
        server.stop()


def test_only_admins_upload(server: ProvisioningServer, bundles: dict[str, Path]) -> None:
    made = server.fleet(
        "create-admin", "ops", "--role", "operator", "--password-stdin", "--api-token",
        input_text="operator-password-1\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("api token: ")[1].split()[0]
    reply = httpx.post(
        f"{server.base_url}/api/v1/admin/firmware",
        content=bundles["good"].read_bytes(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 403
    assert "firmware.upload needs the admin role" in reply.json()["detail"]
    assert stored_files(server) == []


def test_cli_upload_verifies_like_the_api(
    server: ProvisioningServer, bundles: dict[str, Path]
) -> None:
    refused = server.fleet("firmware", "upload", str(bundles["other_key"]))
    assert refused.returncode == 1
    assert "does not verify against the server's keyring" in refused.stderr
    done = server.fleet("firmware", "upload", str(bundles["good"]))
    assert done.returncode == 0, done.stderr
    assert f"{COMPATIBLE} 0.2.0" in done.stdout
    assert bundles["good"].is_file()  # the operator's file stays where it was
    listed = server.fleet("firmware", "list", "--json")
    assert [r["version"] for r in __import__("json").loads(listed.stdout)] == ["0.2.0"]
    audit = server.admin.get("/audit", params={"action": "firmware.upload"}).json()
    assert audit[0]["actor"].startswith("cli:")


def test_targeted_phone_downloads_its_bundle_with_range_resume(
    server: ProvisioningServer, bundles: dict[str, Path]
) -> None:
    release = upload(server, bundles["good"]).json()
    data = bundles["good"].read_bytes()
    phone = server.enroll("b8:27:eb:00:00:01")
    other = server.enroll("b8:27:eb:00:00:02")
    report_board(phone, COMPATIBLE)
    pinned = server.admin.put(f"/devices/{phone.mac}/firmware", json={"pin": "0.2.0"})
    assert pinned.status_code == 200, pinned.text
    with phone.client() as client:
        config = client.get("/api/v1/device/config").json()
        section = config["firmware"]
        assert section["version"] == "0.2.0"
        assert section["sha256"] == release["sha256"] and section["size"] == len(data)
        assert section["rollout"] == "pin"
        url = section["url"]
        assert url == f"/api/v1/device/firmware/{release['sha256']}.raucb"
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == data
        etag = whole.headers["etag"]
        assert etag == f'"{release["sha256"]}"'
        assert whole.headers["accept-ranges"] == "bytes"
        # Resume after 100 000 bytes, as the agent does with its .part file.
        rest = client.get(url, headers={"Range": "bytes=100000-", "If-Range": etag})
        assert rest.status_code == 206
        assert rest.headers["content-range"] == f"bytes 100000-{len(data) - 1}/{len(data)}"
        assert data[:100000] + rest.content == data
        # Another file under the same name (If-Range differs): the whole bundle again.
        stale = client.get(url, headers={"Range": "bytes=100000-", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == data
        beyond = client.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
        assert beyond.status_code == 416
    with other.client() as client:  # not targeted: not offered
        assert client.get(url).status_code == 404
        assert "firmware" not in client.get("/api/v1/device/config").json() or (
            client.get("/api/v1/device/config").json()["firmware"]["version"] == ""
        )
    with server.device_client() as anonymous:
        assert anonymous.get(url).status_code == 401
    # Unpinned: the config asks for nothing and the bundle is no longer offered to it.
    server.admin.put(f"/devices/{phone.mac}/firmware", json={"pin": ""}).raise_for_status()
    with phone.client() as client:
        assert client.get("/api/v1/device/config").json()["firmware"]["version"] == ""
        assert client.get(url).status_code == 404


def test_settings_cannot_set_the_firmware_target(server: ProvisioningServer) -> None:
    reply = server.admin.patch("/settings/fleet", json={"set": {"firmware.version": "9.9"}})
    assert reply.status_code == 422
    assert "firmware.version: set by firmware rollouts and pins" in reply.json()["detail"]
    window = server.admin.patch(
        "/settings/fleet", json={"set": {"firmware.maintenance_window": "02:00-04:00"}}
    )
    assert window.status_code == 200, window.text


def test_download_over_https_with_the_pinned_ca(
    tmp_path: Path, keys: dict[str, SigningPair], bundles: dict[str, Path]
) -> None:
    """As a phone does it: HTTPS trusting only the server's CA, the credential, a resume."""
    server = ProvisioningServer(tmp_path, tls=True)
    server.port = next_port()
    (server.data_dir / "firmware-keyring.pem").write_bytes(keys["good"].cert.read_bytes())
    server.start()
    try:
        release = upload(server, bundles["next"]).json()
        phone = server.enroll("b8:27:eb:00:01:01")
        report_board(phone, COMPATIBLE)
        server.admin.put(
            f"/devices/{phone.mac}/firmware", json={"pin": str(release["id"])}
        ).raise_for_status()
        data = bundles["next"].read_bytes()
        with phone.client() as client:
            assert client.base_url.scheme == "https"
            url = client.get("/api/v1/device/config").json()["firmware"]["url"]
            part = client.get(url, headers={"Range": "bytes=0-9999"})
            assert part.status_code == 206 and part.content == data[:10000]
            rest = client.get(
                url, headers={"Range": "bytes=10000-", "If-Range": part.headers["etag"]}
            )
            assert rest.status_code == 206 and part.content + rest.content == data
    finally:
        server.stop()
