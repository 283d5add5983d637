"""Round trip to the registrar: one SIP OPTIONS over UDP from a socket of our own, timed.

pjsua2 gives no timing of its REGISTER transactions, and a REGISTER round trip includes the
digest challenge (two round trips) and the registrar's database write. An out-of-dialog OPTIONS
is answered at once by any SIP server (200, or 404/405/483 from one that does not serve it
there: every answer is a round trip), and costs one datagram each way, so the phone can measure
it for the fleet's status report without touching the engine's owner thread.
"""

from __future__ import annotations

import secrets
import socket
import time

from offhook.contract.config import PhoneConfig

DEFAULT_PORT = 5060
TIMEOUT_S = 2.0


def registrar_address(config: PhoneConfig) -> tuple[str, int] | None:
    """Where the first enabled line registers: its outbound proxy, else its domain
    (``host``, ``host:port``, ``[v6]`` or ``[v6]:port``, as the schema allows)."""
    for account in config.accounts:
        if not account.enabled:
            continue
        target = account.outbound_proxy or account.domain
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = target.partition(":")
        return host, int(port) if port else DEFAULT_PORT
    return None


def _options(host: str, port: int, local: tuple[str, int], call_id: str, branch: str) -> bytes:
    via_host = f"{local[0]}:{local[1]}"
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ping@{via_host}>;tag={branch[:10]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Accept: application/sdp\r\n"
        "User-Agent: offhook\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def options_rtt_ms(host: str, port: int, timeout_s: float = TIMEOUT_S) -> float | None:
    """Milliseconds from an OPTIONS to the first answer with its Call-ID; None without one
    (unreachable, no UDP listener, a name that does not resolve)."""
    call_id = secrets.token_hex(12)
    branch = secrets.token_hex(8)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            local = sock.getsockname()[:2]
            sent = time.monotonic()
            sock.send(_options(host, port, local, call_id, branch))
            deadline = sent + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                answer = sock.recv(65535)
                if answer.startswith(b"SIP/2.0 ") and call_id.encode() in answer:
                    return round((time.monotonic() - sent) * 1000, 2)
    except (OSError, UnicodeError):
        return None
    return None
