"""Control API over real HTTP, driving the real Phone through the real Runtime."""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from offhook.contract.config import parse_config
from offhook.firmware.control import ControlError, ControlServer, PhoneActions, parse_keys
from offhook.firmware.phone import Phone
from offhook.firmware.phone_process import png_renderer
from offhook.firmware.runtime import Runtime

TOKEN = "s3cret-token"


class Client:
    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.port = port
        self.token = token

    def request(self, method: str, path: str, body: bytes | str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(data) if "json" in ctype else data)

    def post(self, path: str, data: object):
        return self.request("POST", path, json.dumps(data))

    def get(self, path: str):
        return self.request("GET", path)


@pytest.fixture
def phone_api() -> Iterator[tuple[Client, Runtime]]:
    config = parse_config(
        {
            "accounts": [{"user": "1001", "domain": "127.0.0.1", "password": "x"}],
        }
    )
    runtime = Runtime(Phone(config))
    runtime.start()
    server = ControlServer("127.0.0.1:0", TOKEN, PhoneActions(runtime, png_renderer(128, 64)))
    server.start()
    yield Client(server.port), runtime
    server.stop()
    runtime.stop()


def test_requests_without_the_token_are_refused(phone_api) -> None:
    client, _ = phone_api
    for token in (None, "wrong", TOKEN + "x", ""):
        status, body = Client(client.port, token).get("/api/v1/state")
        assert status == 401, token
        assert "token" in body["error"]
    status, _ = Client(client.port, TOKEN).get("/api/v1/state")
    assert status == 200


def test_refuses_network_listen_without_token() -> None:
    with pytest.raises(ControlError, match=r"control\.token"):
        ControlServer("0.0.0.0:0", "", PhoneActions(None, png_renderer()))


def test_hook_and_digits_reach_the_phone(phone_api) -> None:
    client, _ = phone_api
    status, state = client.get("/api/v1/state")
    assert status == 200
    assert state["hook"] == "on"
    assert state["registration"] == [
        {"account": 0, "user": "1001", "registered": False, "status": 0}
    ]
    status, body = client.post("/api/v1/hook", {"offhook": True})
    assert status == 200
    assert body["hook"] == "off"
    status, body = client.post("/api/v1/keys", {"keys": "12"})
    assert status == 200
    assert body["pressed"] == ["1", "2"]
    assert any("12" in line for line in body["screen"])
    status, state = client.get("/api/v1/state")
    assert state["hook"] == "off"
    assert state["dialing"] == "12"
    assert any("12" in line for line in state["screen"])
    status, screen = client.get("/api/v1/screen")
    assert status == 200
    assert screen["lines"] == state["screen"]
    assert screen["kind"]
    client.post("/api/v1/hook", {"offhook": False})
    status, state = client.get("/api/v1/state")
    assert state["hook"] == "on"
    assert state["dialing"] == ""


def test_function_keys_by_name(phone_api) -> None:
    client, _ = phone_api
    status, body = client.post("/api/v1/keys", {"keys": ["dnd"]})
    assert status == 200
    assert body["pressed"] == ["dnd"]
    _, state = client.get("/api/v1/state")
    assert state["dnd"] is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"keys": "12x"}', "unknown key 'x'"),
        ('{"keys": ["hold", "launch"]}', "unknown key 'launch'"),
        ('{"keys": 12}', "string or a list"),
        ('{"keys": ""}', "empty"),
        ('{"keys": "1", "extra": 1}', "expected"),
    ],
)
def test_bad_key_requests_get_a_specific_400(phone_api, body: str, needle: str) -> None:
    client, _ = phone_api
    status, reply = client.request("POST", "/api/v1/keys", body)
    assert status == 400
    assert needle in reply["error"]


def test_bad_hook_requests_and_routing(phone_api) -> None:
    client, _ = phone_api
    status, reply = client.post("/api/v1/hook", {"offhook": "yes"})
    assert status == 400 and "offhook" in reply["error"]
    status, reply = client.request("POST", "/api/v1/hook", "")
    assert status == 400 and "body" in reply["error"]
    status, reply = client.get("/api/v1/hook")
    assert status == 405 and "POST" in reply["error"]
    status, reply = client.get("/api/v1/nope")
    assert status == 404
    status, reply = client.post("/api/v1/test/hang-engine", {})
    assert status == 404 and "disabled" in reply["error"]
    status, reply = client.post("/api/v1/resync", {})
    assert status == 409 and "provisioning" in reply["error"]


def test_screen_png_is_the_oled_image(phone_api) -> None:
    client, _ = phone_api
    status, idle_png = client.get("/api/v1/screen.png")
    assert status == 200
    client.post("/api/v1/hook", {"offhook": True})
    client.post("/api/v1/keys", {"keys": "555"})
    _, dialing_png = client.get("/api/v1/screen.png")
    images = [Image.open(io.BytesIO(data)) for data in (idle_png, dialing_png)]
    assert all(img.format == "PNG" and img.size == (128, 64) for img in images)
    lit = [sum(img.convert("L").point(lambda v: 1 if v else 0).histogram()[1:]) for img in images]
    assert all(n > 50 for n in lit)  # text was drawn
    assert images[0].tobytes() != images[1].tobytes()  # and it follows the screen


def test_parse_keys_mixes_digits_and_names() -> None:
    assert parse_keys(["hold", "12", "#"]) == ["hold", "1", "2", "#"]
    assert parse_keys("*9") == ["*", "9"]


# --- hostile clients, over a raw socket ------------------------------------------------------


@pytest.fixture
def strict_api() -> Iterator[tuple[ControlServer, Runtime]]:
    """A control server whose request deadline is short enough for a test to outlast."""
    runtime = Runtime(Phone(parse_config({})))
    runtime.start()
    actions = PhoneActions(runtime, png_renderer(128, 64))
    server = ControlServer("127.0.0.1:0", TOKEN, actions, request_timeout_s=1.0)
    server.start()
    yield server, runtime
    server.stop()
    runtime.stop()


def read_until_closed(sock: socket.socket, limit_s: float = 15.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took;
    fails if it is still open after ``limit_s``."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"connection still open after {limit_s}s; got {data!r}")
    return data, time.monotonic() - started


def test_a_half_sent_request_is_cut_off_at_the_deadline(strict_api) -> None:
    server, _ = strict_api
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/state HTTP/1.1\r\nHost: phone\r\n")
        started = time.monotonic()
        closed = False
        # trickle a header one byte at a time, each well inside any per-read timeout
        for byte in b"X-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                closed = sock.recv(4096) == b""
                break
        assert closed, "the server kept a trickling request open past its deadline"
        assert time.monotonic() - started >= 0.9  # not before the deadline
    # and the server still answers a normal client
    assert Client(server.port).get("/api/v1/state")[0] == 200


def test_an_idle_connection_is_closed_at_the_deadline(strict_api) -> None:
    server, _ = strict_api
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        data, _ = read_until_closed(sock)
    assert data == b""


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /api/v1/keys HTTP/1.1\r\nContent-Type: application/json\r\n",
        b"GET /api/v1/state HTTP/1.1\r\n",
        b"POST /api/v1/no-such-endpoint HTTP/1.1\r\n",
    ],
)
def test_an_oversized_body_gets_413_without_being_read(strict_api, request_head: bytes) -> None:
    server, _ = strict_api
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            request_head
            + f"Host: phone\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Length: 100000000\r\n\r\n"
            + b'{"keys": "1'  # the start of a body the server must not wait for
        )
        data, _ = read_until_closed(sock, limit_s=0.9)  # answered before the read deadline
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", data
    assert b"Connection: close" in rest
    assert b"too large" in rest


def test_a_chunked_body_is_refused_and_the_connection_closed(strict_api) -> None:
    server, _ = strict_api
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/keys HTTP/1.1\r\nHost: phone\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        data, _ = read_until_closed(sock, limit_s=0.9)
    assert data.startswith(b"HTTP/1.1 411 "), data


def test_connections_beyond_the_limit_get_503_at_once() -> None:
    runtime = Runtime(Phone(parse_config({})))
    runtime.start()
    actions = PhoneActions(runtime, png_renderer(128, 64))
    server = ControlServer("127.0.0.1:0", TOKEN, actions, max_connections=3)
    server.start()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        # each idle connection holds a slot until the request deadline; the next one is refused
        status, body = Client(server.port).get("/api/v1/state")
        assert status == 503 and "too many connections" in body["error"]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while (status := Client(server.port).get("/api/v1/state")[0]) != 200:  # slots come back
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    server.stop()
    runtime.stop()


def test_expect_100_continue_with_an_oversized_body_gets_413_not_100(strict_api) -> None:
    server, _ = strict_api
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/keys HTTP/1.1\r\nHost: phone\r\nExpect: 100-continue\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Length: 100000000\r\n\r\n"
        )
        data, _ = read_until_closed(sock, limit_s=0.9)
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert b"100 Continue" not in data
