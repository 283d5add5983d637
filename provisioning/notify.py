"""SIP NOTIFY check-sync sender (UDP), signed per docs/provisioning-protocol.md.

Best effort and asynchronous: ``Notifier.notify(targets)`` returns at once; one background thread
sends each batch over a single UDP socket, retransmits once to phones that did not answer, and
logs the outcome per phone and per batch. Polling remains the safety net.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import re
import secrets
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from offhook.contract.logs import kv

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Offhook-Signature"
RESPONSE_WAIT_S = 1.0
ATTEMPTS = 2


@dataclass(frozen=True)
class NotifyTarget:
    device_id: str
    contact: str  # host:port last reported by the phone
    secret: str  # the device secret (HMAC key, its UTF-8 bytes)


def sign(secret: str, call_id: str, cseq_number: int) -> str:
    """hex HMAC-SHA256(secret UTF-8, Call-ID + CSeq number): ``abc@h`` + CSeq 1 -> ``abc@h1``."""
    message = f"{call_id}{cseq_number}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def parse_contact(contact: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", contact.strip())
    if not match:
        raise ValueError(f"sip_contact {contact!r} is not host:port")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"sip_contact {contact!r}: port out of range")
    return host, port


def build_notify(
    target: NotifyTarget, call_id: str, cseq: int, local_host: str, local_port: int
) -> bytes:
    host, port = parse_contact(target.contact)
    uri_host = f"[{host}]" if ":" in host else host
    local = f"[{local_host}]" if ":" in local_host else local_host
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"NOTIFY sip:{target.device_id}@{uri_host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:provisioning@{local}>;tag={secrets.token_hex(6)}",
        f"To: <sip:{target.device_id}@{uri_host}:{port}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} NOTIFY",
        f"Contact: <sip:provisioning@{local}:{local_port}>",
        "Event: check-sync",
        "Subscription-State: terminated;reason=timeout",
        f"{SIGNATURE_HEADER}: {sign(target.secret, call_id, cseq)}",
        "User-Agent: offhook-provisioning",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def parse_response(data: bytes) -> tuple[int, str] | None:
    """(status code, Call-ID) of a SIP response, or None when it is not one."""
    try:
        text = data.decode("utf-8", "replace")
    except Exception:
        return None
    head = text.split("\r\n", 1)[0]
    match = re.match(r"SIP/2\.0 (\d{3})", head)
    call_id = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    if not match or not call_id:
        return None
    return int(match.group(1)), call_id.group(1)


@dataclass
class BatchResult:
    sent: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # device id -> SIP status
    unanswered: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def send_batch(targets: list[NotifyTarget], wait_s: float = RESPONSE_WAIT_S) -> BatchResult:
    """Send one signed NOTIFY per target, retransmit once, collect responses (bounded wait).
    One UDP socket per address family in use (IPv4 and IPv6 contacts)."""
    result = BatchResult(answered={}, unanswered=[], invalid=[])
    if not targets:
        return result
    sockets: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()

    def socket_for(family: int) -> socket.socket:
        if family not in sockets:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            sock.setblocking(False)
            sockets[family] = sock
            selector.register(sock, selectors.EVENT_READ)
        return sockets[family]

    try:
        pending: dict[str, tuple[NotifyTarget, bytes, tuple[str, int], socket.socket]] = {}
        for target in targets:
            try:
                host, port = parse_contact(target.contact)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket_for(family)
                call_id = f"{secrets.token_hex(12)}@offhook-provisioning"
                local_host = _local_address_for(host, port)
                message = build_notify(target, call_id, 1, local_host, sock.getsockname()[1])
            except (ValueError, OSError) as exc:
                log.warning(
                    "notify skipped",
                    extra=kv(device=target.device_id, contact=target.contact, error=exc),
                )
                result.invalid.append(target.device_id)
                continue
            pending[call_id] = (target, message, (host, port), sock)
        for _attempt in range(ATTEMPTS):
            for _target, message, address, sock in pending.values():
                try:
                    sock.sendto(message, address)
                    result.sent += 1
                except OSError as exc:
                    log.debug("notify send failed", extra=kv(address=address, error=exc))
            deadline = time.monotonic() + wait_s
            while pending and (remaining := deadline - time.monotonic()) > 0:
                for key, _events in selector.select(timeout=remaining):
                    try:
                        data = key.fileobj.recv(65535)  # type: ignore[union-attr]
                    except OSError:  # e.g. ICMP port unreachable from an earlier send
                        continue
                    _record_answer(data, pending, result)
            if not pending:
                break
        result.unanswered = [t.device_id for t, _, _, _ in pending.values()]
        for target, _, _, _ in pending.values():
            log.info("notify unanswered", extra=kv(device=target.device_id, contact=target.contact))
    finally:
        selector.close()
        for sock in sockets.values():
            sock.close()
    return result


def _record_answer(data: bytes, pending: dict[str, Any], result: BatchResult) -> None:
    parsed = parse_response(data)
    if parsed is None or parsed[1] not in pending or parsed[0] < 200:
        return  # not ours, or provisional
    status, call_id = parsed
    target = pending.pop(call_id)[0]
    result.answered[target.device_id] = status
    log.info(
        "notify answered", extra=kv(device=target.device_id, contact=target.contact, status=status)
    )


def _local_address_for(host: str, port: int) -> str:
    """The local address the kernel would use to reach (host, port), for Via/Contact."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect((host, port))
        return probe.getsockname()[0]
    finally:
        probe.close()


class Notifier:
    """Background sender; ``notify`` never blocks the request that changed the config."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._queue: queue.Queue[list[NotifyTarget] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, targets: list[NotifyTarget]) -> None:
        if not self.enabled or not targets:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notify-sender", daemon=True)
                self._thread.start()
        self._queue.put(list(targets))

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                result = send_batch(batch)
                log.info(
                    "notify batch",
                    extra=kv(
                        targets=len(batch),
                        answered=len(result.answered or {}),
                        unanswered=len(result.unanswered or []),
                        invalid=len(result.invalid or []),
                    ),
                )
            except Exception:
                log.exception("notify batch failed", extra=kv(targets=len(batch)))

    def close(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=5)
