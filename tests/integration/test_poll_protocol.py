"""The inline config-poll answer (provisioning/poll_protocol.py) against uvicorn's own ASGI path:
same statuses, headers and bodies, per-request revocation kept, and everything it must not answer
left to the app. Both servers are real uvicorn on loopback over one SQLite database."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from offhook.provisioning import operations as ops
from offhook.provisioning.app import create_app, with_config_fast_path
from offhook.provisioning.auth import new_device_secret, secret_digest
from offhook.provisioning.models import Device, utcnow
from offhook.provisioning.poll_protocol import ConfigPollProtocol
from offhook.provisioning.settings import ServerSettings

HOST = "127.0.0.1"
CONFIG = "/api/v1/device/config"


class RunningServer:
    def __init__(
        self, app: object, protocol: type, keep_alive_s: int = 5, tls: object | None = None
    ) -> None:
        self.tls = tls
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            app,
            host=HOST,
            port=self.port,
            http=protocol,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=keep_alive_s,
            ssl_certfile=str(tls.cert) if tls else None,  # type: ignore[attr-defined]
            ssl_keyfile=str(tls.key) if tls else None,  # type: ignore[attr-defined]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            self.thread.join(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def client(self) -> httpx.Client:
        if self.tls is None:
            return httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=10)
        verify = ssl.create_default_context(cafile=str(self.tls.ca_cert))  # type: ignore[attr-defined]
        return httpx.Client(base_url=f"https://{HOST}:{self.port}", timeout=10, verify=verify)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[object, dict[str, str]]]:
    """An app on SQLite with two approved devices with a line each: (app, {device id: auth})."""
    settings = ServerSettings(data_dir=tmp_path, purge_interval_s=0, notify_enabled=False)
    app = create_app(settings)
    services = app.state.services
    actor = ops.Actor("test")
    auths: dict[str, str] = {}
    with app.state.database.session() as db:
        ops.create_group(db, actor, "site", "site", settings={"audio": {"tone_plan": "uk"}})
        for i in range(2):
            secret = new_device_secret()
            device = Device(
                mac=f"02:00:00:00:00:0{i}",
                name=f"desk {i}",
                status="approved",
                group_id=1,
                secret_hash=secret_digest(secret),
                secret_enc=services.keys.encrypt(secret, "devices.secret"),
                enrolled_at=utcnow(),
            )
            db.add(device)
            db.flush()
            ops.add_line(db, services.keys, actor, device.id, extension=f"10{i}",
                         registrar="pbx.test", password=f"pw{i}")  # fmt: skip
            token = base64.b64encode(f"{device.id}:{secret}".encode()).decode()
            auths[device.id] = f"Basic {token}"
    yield with_config_fast_path(app), auths


def _exchange(client: httpx.Client, auths: dict[str, str]) -> list[tuple[int, dict, bytes]]:
    """A device's whole polling life: first fetch, 304s, a bad secret, no credential, another
    device, a query string (not inline), a POST (not inline)."""
    first_id, second_id = list(auths)
    replies = []

    def keep(reply: httpx.Response) -> None:
        headers = {k: v for k, v in reply.headers.items() if k not in ("date", "server")}
        replies.append((reply.status_code, headers, reply.content))

    full = client.get(CONFIG, headers={"Authorization": auths[first_id]})
    keep(full)
    for _ in range(3):
        keep(client.get(CONFIG, headers={"Authorization": auths[first_id],
                                         "If-None-Match": full.headers["etag"]}))  # fmt: skip
    keep(client.get(CONFIG, headers={"Authorization": auths[first_id], "If-None-Match": '"0-x"'}))
    keep(client.get(CONFIG, headers={"Authorization": auths[first_id][:-4] + "AAAA"}))
    keep(client.get(CONFIG))
    keep(client.get(CONFIG, headers={"Authorization": auths[second_id]}))
    keep(client.get(CONFIG + "?x=1", headers={"Authorization": auths[second_id]}))
    keep(client.post(CONFIG, headers={"Authorization": auths[second_id]}))
    return replies


def _run(app: object, protocol: type, auths: dict[str, str]) -> list[tuple[int, dict, bytes]]:
    with RunningServer(app, protocol) as server, server.client() as client:
        return _exchange(client, auths)


def test_inline_answers_equal_the_asgi_path(fleet: tuple[object, dict[str, str]]) -> None:
    app, auths = fleet
    reference = _run(app, HttpToolsProtocol, auths)  # also warms the render cache
    before = ConfigPollProtocol.inline_answers
    inline = _run(app, ConfigPollProtocol, auths)
    answered_inline = ConfigPollProtocol.inline_answers - before
    assert inline == reference
    statuses = [status for status, _, _ in inline]
    assert statuses == [200, 304, 304, 304, 200, 401, 401, 200, 200, 405]
    # Every GET of the exact path is answered inline (the cache was warm); the query string
    # and the POST went through the app.
    assert answered_inline == 8


def test_cache_miss_goes_through_the_app_then_is_inline(
    fleet: tuple[object, dict[str, str]],
) -> None:
    app, auths = fleet
    device_id = next(iter(auths))
    with RunningServer(app, ConfigPollProtocol) as server, server.client() as client:
        before = ConfigPollProtocol.inline_answers
        first = client.get(CONFIG, headers={"Authorization": auths[device_id]})
        assert first.status_code == 200
        assert ConfigPollProtocol.inline_answers == before  # rendered on the ASGI path
        again = client.get(CONFIG, headers={"Authorization": auths[device_id]})
        assert again.content == first.content
        assert ConfigPollProtocol.inline_answers == before + 1


def test_revocation_and_new_revisions_are_seen_on_the_next_inline_poll(
    fleet: tuple[object, dict[str, str]],
) -> None:
    app, auths = fleet
    core = app.app  # type: ignore[attr-defined]
    services = core.state.services
    device_id = next(iter(auths))
    headers = {"Authorization": auths[device_id]}
    with RunningServer(app, ConfigPollProtocol) as server, server.client() as client:
        first = client.get(CONFIG, headers=headers)
        etag = first.headers["etag"]
        assert client.get(CONFIG, headers={**headers, "If-None-Match": etag}).status_code == 304
        with core.state.database.session() as db:
            ops.change_settings(
                db, ops.Actor("test"), "device", device_id, set_values={"audio.tone_plan": "eu"}
            )
        changed = client.get(CONFIG, headers={**headers, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert b'"eu"' in changed.content
        before = ConfigPollProtocol.inline_answers
        with core.state.database.session() as db:
            ops.set_device_status(db, ops.Actor("test"), device_id, "revoke")
        refused = client.get(CONFIG, headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "revoked"
        assert ConfigPollProtocol.inline_answers == before + 1
    assert services.render_cache.get(device_id, int(changed.headers["x-config-revision"]))


def test_pipelined_requests_are_answered_in_order(fleet: tuple[object, dict[str, str]]) -> None:
    app, auths = fleet
    first_id, second_id = list(auths)

    def request(auth: str) -> bytes:
        return f"GET {CONFIG} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()

    async def pipelined(port: int) -> bytes:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(request(auths[first_id]) + request(auths[second_id]) + request("Basic x"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"}"):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            data += chunk
        writer.close()
        return data

    with RunningServer(app, ConfigPollProtocol) as server, server.client() as client:
        for device_id in auths:  # warm the cache: the pipelined ones are then inline
            client.get(CONFIG, headers={"Authorization": auths[device_id]})
        data = asyncio.run(pipelined(server.port))
    heads = [part.split(b"\r\n", 1)[0] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert heads == [b"200 OK", b"200 OK", b"401 Unauthorized"]
    assert data.index(b'"101"') > data.index(b'"100"')  # first device's line, then the second's


def test_idle_connection_is_closed_after_the_keep_alive_timeout(
    fleet: tuple[object, dict[str, str]],
) -> None:
    app, auths = fleet
    auth = next(iter(auths.values()))
    request = f"GET {CONFIG} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()

    async def poll_then_idle(port: int) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, port)
        answers = 0
        for _ in range(3):  # inline answers: the idle check, not uvicorn's timer, is armed
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), 10)
            answers += 1
        rest = await asyncio.wait_for(reader.read(), 20)  # b"" once the server closes
        writer.close()
        return answers, rest

    with RunningServer(app, ConfigPollProtocol, keep_alive_s=1) as server, server.client() as c:
        c.get(CONFIG, headers={"Authorization": auth})  # warm the render cache
        before = ConfigPollProtocol.inline_answers
        answers, rest = asyncio.run(poll_then_idle(server.port))
    assert answers == 3 and rest == b""
    assert ConfigPollProtocol.inline_answers == before + 3


def test_inline_answers_over_tls(fleet: tuple[object, dict[str, str]], tmp_path: Path) -> None:
    from offhook.firmware.devtools.certs import make_certificates

    app, auths = fleet
    tls = make_certificates(tmp_path / "tls")
    reference = _run(app, HttpToolsProtocol, auths)
    with RunningServer(app, ConfigPollProtocol, tls=tls) as server, server.client() as client:
        before = ConfigPollProtocol.inline_answers
        over_tls = _exchange(client, auths)
        answered_inline = ConfigPollProtocol.inline_answers - before
    assert over_tls == reference
    assert answered_inline == 8


@pytest.mark.parametrize("protocol", [HttpToolsProtocol, ConfigPollProtocol])
def test_oversized_bodies_get_413_on_the_asgi_path_and_in_the_parser(
    fleet: tuple[object, dict[str, str]], protocol: type
) -> None:
    """uvicorn's own protocol (the ASGI path: provisioning.limits.BodyLimit) and ours (in the
    parser): a declared or streamed body above the route's cap is refused with 413."""
    app, _ = fleet
    too_big = b"{" + b" " * (64 * 1024) + b"}"

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 4096

    with RunningServer(app, protocol) as server, server.client() as client:
        declared = client.post("/api/v1/device/enroll", content=too_big)
        assert declared.status_code == 413 and declared.json()["code"] == "too_large"
        assert declared.headers["connection"] == "close"
        streamed = client.post("/api/v1/device/enroll", content=chunks())
        assert streamed.status_code == 413 and streamed.json()["code"] == "too_large"
        small = client.post("/api/v1/device/enroll", json={"mac": "nope"})
        assert small.status_code == 422
