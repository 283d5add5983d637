"""SIP NOTIFY check-sync listener: the server's push that says "fetch your config now".

A small UDP SIP endpoint that understands exactly one request: ``NOTIFY`` with
``Event: check-sync``, signed with ``X-Offhook-Signature: hex(HMAC-SHA256(secret, Call-ID +
CSeq number))``. Answers are proper SIP responses (Via, From, To with a tag, Call-ID, CSeq copied):
200 and a resync for a valid signature, 403 for a wrong or missing one, 400 for a malformed
message, 405 for other methods and 489 for other event packages. Nothing received can stop it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import re
import secrets
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_535
# RFC 3261 7.3.3 compact forms of the headers we read or copy
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "o": "event"}
REQUIRED = ("via", "from", "to", "call-id", "cseq")
TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~\-]+$")


class SipParseError(OffhookError, ValueError):
    """The datagram is not a well-formed SIP request."""


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: dict[str, list[str]] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def signature(secret: str, call_id: str, cseq_number: int | str) -> str:
    message = f"{call_id}{cseq_number}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def parse_headers(lines: list[str]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    previous: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t") and previous is not None:  # folded continuation line
            headers[previous][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not TOKEN.match(name):
            raise SipParseError(f"bad header line {line[:60]!r}")
        name = COMPACT.get(name, name)
        # Via may list several hops in one header; keep each as its own value for the response
        values = [v.strip() for v in value.split(",")] if name == "via" else [value.strip()]
        headers.setdefault(name, []).extend(values)
        previous = name
    return headers


def parse_request(data: bytes) -> SipRequest:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not UTF-8") from None
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not TOKEN.match(parts[0]):
        raise SipParseError(f"bad request line {lines[0][:80]!r}")
    request = SipRequest(method=parts[0], uri=parts[1], headers=parse_headers(lines[1:]))
    missing = [h for h in REQUIRED if not request.header(h)]
    if missing:
        raise SipParseError(f"missing header(s): {', '.join(missing)}")
    cseq = (request.header("cseq") or "").split()
    if len(cseq) != 2 or not cseq[0].isdigit() or cseq[1] != request.method:
        raise SipParseError(f"bad CSeq {request.header('cseq')!r}")
    length = request.header("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(body.encode())):
        raise SipParseError(f"Content-Length {length!r} does not match the body")
    return request


def build_response(headers: dict[str, list[str]], code: int, reason: str, to_tag: str) -> bytes:
    lines = [f"SIP/2.0 {code} {reason}"]
    for via in headers.get("via", []):
        lines.append(f"Via: {via}")
    for name, label in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        values = headers.get(name)
        if not values:
            continue
        value = values[0]
        if name == "to" and ";tag=" not in value.replace(" ", "").lower():
            value += f";tag={to_tag}"
        lines.append(f"{label}: {value}")
    lines += ["Server: offhook", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def _salvage_headers(data: bytes) -> dict[str, list[str]]:
    """Best-effort headers of a malformed message, to address the 400 to it."""
    headers: dict[str, list[str]] = {}
    text = data.decode("utf-8", "replace").split("\r\n\r\n", 1)[0]
    for line in text.split("\r\n")[1:]:
        try:
            for name, values in parse_headers([line]).items():
                headers.setdefault(name, []).extend(values)
        except SipParseError:
            continue
    return headers


class CheckSyncListener:
    """UDP listener thread; ``secret()`` gives the device secret (None before enrollment)."""

    def __init__(
        self,
        port: int,
        secret: Callable[[], str | None],
        on_check_sync: Callable[[], None],
        host: str = "0.0.0.0",
    ) -> None:
        self._secret = secret
        self._on_check_sync = on_check_sync
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self._to_tag = secrets.token_hex(6)
        self._seen: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checksync", daemon=True)
        self.accepted = 0  # NOTIFYs that triggered a resync

    def start(self) -> None:
        self._thread.start()
        log.info("check-sync listener started", extra=kv(host=self.host, port=self.port))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._sock], [], [], 0.25)
            if not readable:
                continue
            try:
                data, peer = self._sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                continue
            try:
                response = self.handle(data, peer)
            except Exception:  # the listener must outlive any input
                log.exception("check-sync handler failed", extra=kv(peer=f"{peer[0]}:{peer[1]}"))
                continue
            if response:
                try:
                    self._sock.sendto(response, peer)
                except OSError as exc:
                    log.warning(
                        "check-sync reply failed", extra=kv(peer=f"{peer[0]}:{peer[1]}", error=exc)
                    )

    def handle(self, data: bytes, peer: tuple[str, int]) -> bytes | None:
        """Answer one datagram; None for what needs no answer (responses, keep-alives)."""
        if not data.strip() or data.startswith(b"SIP/2.0 "):
            return None  # CRLF keep-alive or a stray response: RFC 3261 says no answer
        try:
            request = parse_request(data)
        except SipParseError as exc:
            log.warning("check-sync malformed", extra=kv(peer=f"{peer[0]}:{peer[1]}", error=exc))
            return build_response(_salvage_headers(data), 400, "Bad Request", self._to_tag)
        reply = build_response(request.headers, *self._decide(request, peer), self._to_tag)
        return reply

    def _decide(self, request: SipRequest, peer: tuple[str, int]) -> tuple[int, str]:
        if request.method != "NOTIFY":
            return 405, "Method Not Allowed"
        event = (request.header("event") or "").split(";")[0].strip().lower()
        if event != "check-sync":
            return 489, "Bad Event"
        call_id = request.header("call-id") or ""
        cseq_number = (request.header("cseq") or "").split()[0]
        secret = self._secret()
        given = (request.header("x-offhook-signature") or "").strip().lower()
        if not secret or not hmac.compare_digest(given, signature(secret, call_id, cseq_number)):
            log.warning(
                "check-sync signature refused",
                extra=kv(peer=f"{peer[0]}:{peer[1]}", call_id=call_id),
            )
            return 403, "Forbidden"
        key = (call_id, cseq_number)
        if key not in self._seen:  # a UDP retransmission gets its 200 again, not a second fetch
            self._seen.append(key)
            self.accepted += 1
            log.info("check-sync accepted", extra=kv(peer=f"{peer[0]}:{peer[1]}", call_id=call_id))
            self._on_check_sync()
        return 200, "OK"
