"""BLF subscriptions: dialog-event SUBSCRIBE/NOTIFY (RFC 6665, RFC 4235) over a UDP socket of
our own, reported as ExtensionState events.

pjsua2's Python API (2.15.1) subscribes buddies to ``Event: presence`` only; the dialog event
package exists in the C library but not in the binding, and pjsua2 gives the application no hook
for NOTIFYs of other packages. So, as for check-sync, the phone runs a small SIP client of its own
for these subscriptions: one UDP socket, one thread, digest authentication (401/407), refresh
before expiry, re-subscription after a terminated or failed one. Requests go to the account's
outbound proxy, else its domain, over the line's transport: UDP on the watcher's socket, TCP or
TLS on a connection of its own (``sip_stream``; TLS verified as ``sip.tls_*`` say, like the
line's own). A subscription made on a connection keeps to it, and the notifier's NOTIFYs come
back on it; when it is lost, its subscriptions are reported unknown and made again on a new
connection, after 1 s, doubling to 60 s while connecting keeps failing.
"""

from __future__ import annotations

import logging
import queue
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from offhook.contract.config import Account, PhoneConfig
from offhook.contract.logs import kv
from offhook.firmware.events import ExtensionState, WatchedDialog
from offhook.firmware.provisioning.checksync import (
    SipParseError,
    build_response,
    parse_headers,
    parse_request,
)
from offhook.firmware.sip.dialog_info import DialogInfoError, parse_dialog_info
from offhook.firmware.sip.digest import DigestError, authorization, parse_challenge
from offhook.firmware.sip.sip_stream import StreamClosed, StreamConnection, client_context
from offhook.firmware.sip.uri import split_name_addr

log = logging.getLogger(__name__)

EXPIRES_S = 600  # asked for; the server may grant less
T1_S = 0.5  # RFC 3261 retransmission interval, doubled each time
MAX_SENDS = 7  # 0.5 + 1 + 2 + 4 + 4 + 4 s: then the request failed (timer F is 32 s)
PROVISIONAL_WAIT_S = 32.0  # after a 1xx, how long the final answer may take
RETRY_S = 30.0  # a refused or lost subscription is tried again after this
RESUBSCRIBE_S = 1.0  # after the server ended one (Subscription-State: terminated)
MAX_AUTH_TRIES = 2
SHUTDOWN_WAIT_S = 1.0  # for the answers to the un-SUBSCRIBEs
MAX_DATAGRAM = 65_535
SIP_PORT = 5060
SIPS_PORT = 5061
TIMER_F_S = 32.0  # a request over a stream is sent once; its answer may take this long
RECONNECT_FIRST_S = 1.0  # a lost connection is made again after this, doubling...
RECONNECT_MAX_S = 60.0  # ...up to this while connecting keeps failing

Watch = tuple[int, str]  # (account index, extension)
Flow = tuple[str, str, int]  # ("tcp"/"tls", address, port): one stream connection


def host_port(uri: str, default_port: int = SIP_PORT) -> tuple[str, int]:
    """``<sip:1002@127.0.0.1:5070;lr>`` or ``host:port`` -> ("127.0.0.1", 5070)."""
    value = uri.strip().strip("<>").split(">", 1)[0]
    for scheme in ("sips:", "sip:"):
        value = value.removeprefix(scheme)
    value = value.split(";", 1)[0].split("?", 1)[0]
    value = value.rsplit("@", 1)[-1]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, _, port = value.partition(":")
    return host, int(port) if port.isdigit() else default_port


def tag_of(value: str) -> str:
    for param in value.split(";")[1:]:
        name, _, tag = param.strip().partition("=")
        if name.lower() == "tag":
            return tag.strip()
    return ""


def header_list(headers: dict[str, list[str]], name: str) -> list[str]:
    """All values of a header that may be a comma list (Record-Route), in order."""
    out: list[str] = []
    for value in headers.get(name, []):
        out += [part.strip() for part in value.split(",") if part.strip()]
    return out


@dataclass
class Response:
    code: int
    reason: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> str:
        values = self.headers.get(name)
        return values[0] if values else ""


def parse_response(data: bytes) -> Response:
    text = data.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        raise SipParseError(f"bad status line {head[0][:80]!r}")
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", parse_headers(head[1:]))


@dataclass
class Subscription:
    """One dialog-event subscription and its pending SUBSCRIBE transaction, if any."""

    account: int
    extension: str
    transport: str = "udp"
    flow: Flow | None = None  # the stream connection it was made on (TCP, TLS)
    call_id: str = field(default_factory=lambda: secrets.token_hex(12))
    from_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    to_tag: str = ""
    cseq: int = 0
    route: list[str] = field(default_factory=list)
    target: str = ""  # the notifier's Contact (in-dialog requests go there)
    expires: int = EXPIRES_S
    # the pending request: what to send again, where, and when
    request: bytes = b""
    branch: str = ""
    destination: tuple[str, int] | None = None
    sends: int = 0
    next_send: float = 0.0
    # digest: the challenge to answer on the next request and how often it was answered
    auth_name: str = ""
    challenge: dict[str, str] | None = None
    nonce_count: int = 0
    auth_tries: int = 0
    refresh_at: float = 0.0  # 0: no refresh planned
    retry_at: float = 0.0  # 0: no new subscription planned
    version: int = -1  # the last dialog-info version seen
    dialogs: dict[tuple[str, str], WatchedDialog] = field(default_factory=dict)
    ending: bool = False  # an un-SUBSCRIBE (Expires: 0) is out
    refreshing: bool = False  # the pending SUBSCRIBE refreshes the subscription
    reported: bool | None = None  # the last `subscribed` reported

    @property
    def key(self) -> Watch:
        return (self.account, self.extension)


class DialogWatcher:
    """The BLF subscription client: ``watch(config, watches)`` from any thread, events out."""

    def __init__(
        self,
        on_event: Callable[[ExtensionState], None],
        bind_host: str = "0.0.0.0",
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = "offhook",
        expires_s: int = EXPIRES_S,
    ) -> None:
        """``expires_s``: the subscription lifetime asked for (refreshed at 80 % of what the
        server grants)."""
        self._on_event = on_event
        self._expires_s = expires_s
        self._clock = clock
        self._user_agent = user_agent
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((bind_host, 0))
        self.bind_host, self.port = self._sock.getsockname()[:2]
        self._commands: queue.SimpleQueue[tuple[PhoneConfig, tuple[Watch, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._config: PhoneConfig | None = None
        self._subs: dict[Watch, Subscription] = {}
        self._ending: list[Subscription] = []
        self._flows: dict[Flow, StreamConnection] = {}
        self._failures: dict[Flow, int] = {}  # connections lost in a row, for the backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blf", daemon=True)
        self.challenges_answered = 0  # 401/407 answered with digest credentials
        self.refreshes = 0  # in-dialog re-SUBSCRIBEs answered 2xx
        self.connections_lost = 0  # TCP/TLS connections that failed or closed under us

    # --- any thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def watch(self, config: PhoneConfig, watches: tuple[Watch, ...]) -> None:
        """Keep exactly these subscriptions (new ones start, dropped ones end)."""
        self._commands.put((config, tuple(watches)))
        self._wake()

    def stop(self, timeout: float = 3.0) -> None:
        if self._thread.is_alive():
            self._commands.put(None)
            self._wake()
            self._thread.join(timeout)
        for flow in list(self._flows.values()):
            flow.close()
        self._sock.close()

    def transport_of(self, watch: Watch) -> str:
        """The transport a watch's subscription runs on ("" when not watched); for status."""
        sub = self._subs.get(watch)
        return sub.transport if sub else ""

    def _wake(self) -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                host = "127.0.0.1" if self.bind_host == "0.0.0.0" else self.bind_host
                s.sendto(b"\r\n", (host, self.port))
        except OSError:
            pass  # the loop still turns within its poll interval

    # --- the watcher thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                while True:
                    command = self._commands.get_nowait()
                    if command is None:
                        self._shutdown()
                        return
                    self._apply(*command)
            except queue.Empty:
                pass
            try:
                self._poll(self._wait_s())
                self._run_timers()
            except Exception:
                log.exception("blf watcher loop error")
                time.sleep(0.1)

    def _poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the UDP socket and the connections; handle what came."""
        flows = list(self._flows.items())
        udp = self._sock.fileno()
        readable, writable, _ = select.select(
            [udp, *(flow.fileno() for _, flow in flows)],
            [flow.fileno() for _, flow in flows if flow.wants_write()],
            [],
            timeout,
        )
        if udp in readable:
            data, source = self._sock.recvfrom(MAX_DATAGRAM)
            self._receive(data, source)
        for key, flow in flows:
            if self._flows.get(key) is not flow:
                continue  # dropped while handling another's message
            fd = flow.fileno()
            try:
                if fd in writable:
                    flow.on_writable()
                if fd in readable:
                    for message in flow.on_readable():
                        self._receive(message, flow.destination, key)
                        if self._flows.get(key) is not flow:
                            break  # what we answered made us drop it
            except StreamClosed as exc:
                self._flow_lost(key, str(exc))

    def _wait_s(self) -> float:
        times = [t for s in self._subs.values() for t in (s.next_send if s.request else 0,
                 s.refresh_at, s.retry_at) if t]  # fmt: skip
        times += [f.deadline for f in self._flows.values() if not f.is_open]
        if not times:
            return 0.5
        return max(0.0, min(0.5, min(times) - self._clock()))

    def _apply(self, config: PhoneConfig, watches: tuple[Watch, ...]) -> None:
        old_config, self._config = self._config, config
        wanted = set(watches)
        for key, sub in list(self._subs.items()):
            changed = (
                old_config is not None
                and key[0] < len(old_config.accounts)
                and (key[0] >= len(config.accounts)
                     or old_config.accounts[key[0]] != config.accounts[key[0]])
            )  # fmt: skip
            if key not in wanted or changed:
                self._end(sub)
                del self._subs[key]
        for key in watches:
            if key not in self._subs:
                sub = Subscription(*key, transport=self._transport(key), expires=self._expires_s)
                self._subs[key] = sub
                self._send_subscribe(sub)
        self._close_unused_flows()
        log.info("blf watches", extra=kv(watches=[f"{a}:{e}" for a, e in watches]))

    def _transport(self, watch: Watch) -> str:
        config = self._config
        if config is None or watch[0] >= len(config.accounts):
            return "udp"
        return config.accounts[watch[0]].transport

    def _account(self, sub: Subscription) -> Account | None:
        config = self._config
        if config is None or sub.account >= len(config.accounts):
            return None
        return config.accounts[sub.account]

    def _local_host(self, destination: tuple[str, int]) -> str:
        if self.bind_host != "0.0.0.0":
            return str(self.bind_host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(destination)  # no packet: only picks the route's source address
            return str(probe.getsockname()[0])

    def _send_subscribe(self, sub: Subscription, expires: int | None = None) -> None:
        account = self._account(sub)
        if account is None:
            return
        now = self._clock()
        sub.retry_at = sub.refresh_at = 0.0
        sub.cseq += 1
        sub.branch = "z9hG4bK" + secrets.token_hex(8)
        aor_host = account.domain
        request_uri = sub.target or f"sip:{sub.extension}@{aor_host}"
        if sub.route:
            next_hop = sub.route[0]
        elif sub.target:
            next_hop = sub.target
        else:
            next_hop = account.outbound_proxy or account.domain
        host, port = host_port(next_hop, SIPS_PORT if sub.transport == "tls" else SIP_PORT)
        if sub.flow is not None:
            flow = self._flows.get(sub.flow)
            if flow is None:  # its connection is gone: _flow_lost has planned a new one
                return
            destination = flow.destination
        else:
            try:
                address = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
                destination = (str(address[0]), int(address[1]))
            except OSError as exc:
                log.warning("blf: cannot resolve the proxy", extra=kv(host=host, error=exc))
                self._failed(sub, now, f"cannot resolve {host}")
                return
        if sub.transport == "udp":
            local, local_port = self._local_host(destination), self.port
            contact_params = ""
        else:
            if sub.flow is None:
                sub.flow = self._open_flow(sub.transport, destination, host)
                if sub.flow is None:
                    return  # _flow_lost has reported it and planned the next try
            flow = self._flows[sub.flow]
            local, local_port = flow.local
            contact_params = f";transport={sub.transport}"
        to = f"<sip:{sub.extension}@{aor_host}>" + (f";tag={sub.to_tag}" if sub.to_tag else "")
        lines = [
            f"SUBSCRIBE {request_uri} SIP/2.0",
            f"Via: SIP/2.0/{sub.transport.upper()} {local}:{local_port};branch={sub.branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{account.user}@{aor_host}>;tag={sub.from_tag}",
            f"To: {to}",
            f"Call-ID: {sub.call_id}",
            f"CSeq: {sub.cseq} SUBSCRIBE",
            f"Contact: <sip:{account.user}@{local}:{local_port}{contact_params}>",
            *[f"Route: {route}" for route in sub.route],
            "Event: dialog",
            "Accept: application/dialog-info+xml",
            f"Expires: {sub.expires if expires is None else expires}",
            f"User-Agent: {self._user_agent}",
        ]
        if sub.challenge is not None:
            sub.nonce_count += 1
            value = authorization(
                sub.challenge, "SUBSCRIBE", request_uri, account.auth_user or account.user,
                account.password, sub.nonce_count,
            )  # fmt: skip
            lines.append(f"{sub.auth_name}: {value}")
        lines += ["Content-Length: 0", "", ""]
        sub.request = "\r\n".join(lines).encode()
        sub.destination = destination
        sub.sends = 0
        sub.next_send = now
        self._transmit(sub, now)

    def _transmit(self, sub: Subscription, now: float) -> None:
        if sub.destination is None:
            return
        if sub.flow is not None:
            # A stream is reliable: sent once, and the answer awaited for timer F.
            sub.sends = MAX_SENDS
            sub.next_send = now + TIMER_F_S
            flow = self._flows.get(sub.flow)
            if flow is None:
                return
            try:
                flow.send(sub.request)
            except StreamClosed as exc:
                self._flow_lost(sub.flow, str(exc))
            return
        try:
            self._sock.sendto(sub.request, sub.destination)
        except OSError as exc:
            log.warning("blf: send failed", extra=kv(extension=sub.extension, error=exc))
        sub.sends += 1
        sub.next_send = now + min(T1_S * 2 ** (sub.sends - 1), 4.0)

    # --- stream connections (TCP, TLS) ---------------------------------------------------------

    def _open_flow(self, transport: str, destination: tuple[str, int], host: str) -> Flow | None:
        """The connection to ``destination`` (a new one unless it is up); None when it could
        not even be started (then reported as lost)."""
        key: Flow = (transport, *destination)
        if key in self._flows:
            return key
        try:
            context = self._tls_context() if transport == "tls" else None
            flow = StreamConnection(destination, context, host, self.bind_host, self._clock)
        except (StreamClosed, OSError, ssl.SSLError) as exc:
            self._flow_lost(key, str(exc))
            return None
        self._flows[key] = flow
        where = f"{destination[0]}:{destination[1]}"
        log.info("blf connecting", extra=kv(transport=transport, destination=where))
        return key

    def _tls_context(self) -> ssl.SSLContext:
        assert self._config is not None
        sip = self._config.sip
        try:
            return client_context(
                sip.tls_ca_file, sip.tls_verify_server, sip.tls_cert_file, sip.tls_key_file
            )
        except (OSError, ssl.SSLError) as exc:
            raise StreamClosed(f"TLS settings unusable (sip.tls_*): {exc}") from None

    def _flow_lost(self, key: Flow, reason: str) -> None:
        """The connection failed or closed: its subscriptions are unknown until they are made
        again on a new connection, after a backoff that doubles while this keeps happening."""
        flow = self._flows.pop(key, None)
        if flow is not None:
            flow.close()
        self.connections_lost += 1
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(RECONNECT_FIRST_S * 2 ** (failures - 1), RECONNECT_MAX_S)
        log.warning("blf connection lost", extra=kv(transport=key[0], destination=f"{key[1]}:"
                    f"{key[2]}", reason=reason, retry_s=delay))  # fmt: skip
        now = self._clock()
        for sub in self._subs.values():
            if sub.flow == key:
                sub.request = b""
                sub.refresh_at = 0.0
                sub.retry_at = now + delay
                sub.dialogs.clear()
                self._report(sub, subscribed=False)
        self._ending = [s for s in self._ending if s.flow != key]

    def _close_unused_flows(self) -> None:
        used = {s.flow for s in [*self._subs.values(), *self._ending]}
        for key in [k for k in self._flows if k not in used]:
            self._flows.pop(key).close()
            where = f"{key[1]}:{key[2]}"
            log.info("blf connection closed", extra=kv(transport=key[0], destination=where))

    def _end(self, sub: Subscription) -> None:
        """Un-SUBSCRIBE (Expires: 0) an established subscription; no answer is awaited long."""
        if sub.to_tag and self._account(sub) is not None:
            sub.ending = True
            self._send_subscribe(sub, expires=0)
            self._ending.append(sub)

    def _shutdown(self) -> None:
        """End every subscription and wait (bounded) for the answers, so the server stops
        sending NOTIFYs to a socket that is about to close."""
        for sub in self._subs.values():
            self._end(sub)
        self._subs.clear()
        deadline = self._clock() + SHUTDOWN_WAIT_S
        while any(s.request for s in self._ending) and self._clock() < deadline:
            self._poll(0.05)

    def _run_timers(self) -> None:
        now = self._clock()
        for sub in list(self._subs.values()):
            if sub.request and now >= sub.next_send:
                if sub.sends >= MAX_SENDS:
                    self._failed(sub, now, "no answer")
                else:
                    self._transmit(sub, now)
            if sub.refresh_at and now >= sub.refresh_at:
                sub.refreshing = True
                self._send_subscribe(sub)
            if sub.retry_at and now >= sub.retry_at:
                self._restart(sub)
        for key, flow in list(self._flows.items()):
            if not flow.is_open and now >= flow.deadline:
                self._flow_lost(key, "connection timed out")
        self._ending = [s for s in self._ending if s.request and s.sends < 2]
        self._close_unused_flows()

    def _restart(self, sub: Subscription) -> None:
        """A new subscription for the same watch (new Call-ID and tags)."""
        fresh = Subscription(
            sub.account, sub.extension, transport=self._transport(sub.key),
            expires=self._expires_s, reported=sub.reported,
        )  # fmt: skip
        self._subs[sub.key] = fresh
        self._send_subscribe(fresh)

    def _failed(self, sub: Subscription, now: float, why: str) -> None:
        log.warning("blf subscription failed", extra=kv(extension=sub.extension, reason=why))
        sub.request = b""
        sub.retry_at = now + RETRY_S
        sub.refresh_at = 0.0
        sub.dialogs.clear()
        self._report(sub, subscribed=False)

    def _report(self, sub: Subscription, subscribed: bool) -> None:
        sub.reported = subscribed
        dialogs = tuple(sub.dialogs.values()) if subscribed else ()
        self._on_event(ExtensionState(sub.extension, dialogs, subscribed))

    # --- what arrives --------------------------------------------------------------------------

    def _receive(self, data: bytes, source: tuple[str, int], flow: Flow | None = None) -> None:
        """A datagram from ``source``, or a message that came on the connection ``flow``."""
        if not data.strip():
            return  # a keep-alive, or our own wake-up
        if data.startswith(b"SIP/2.0 "):
            try:
                self._on_response(parse_response(data))
            except SipParseError as exc:
                log.info("blf: unreadable response dropped", extra=kv(error=exc))
            return
        try:
            request = parse_request(data)
        except SipParseError as exc:
            log.info("blf: unreadable request dropped", extra=kv(error=exc, source=source))
            return
        headers = request.headers
        if request.method != "NOTIFY":
            self._answer(headers, source, flow, 405, "Method Not Allowed")
            return
        sub = self._find(request.header("call-id") or "", tag_of(request.header("to") or ""))
        if sub is None:
            self._answer(headers, source, flow, 481, "Subscription Does Not Exist")
            return
        self._answer(headers, source, flow, 200, "OK")
        self._on_notify(sub, headers, data)

    def _answer(self, headers: dict[str, list[str]], source: tuple[str, int], flow: Flow | None,
                code: int, reason: str) -> None:  # fmt: skip
        # The answer goes back where the request came from (RFC 3581 style; on a stream, the
        # same connection), tag kept as sent.
        response = build_response(dict(headers), code, reason, secrets.token_hex(4))
        if flow is None:
            self._sock.sendto(response, source)
            return
        connection = self._flows.get(flow)
        if connection is None:
            return
        try:
            connection.send(response)
        except StreamClosed as exc:
            self._flow_lost(flow, str(exc))

    def _find(self, call_id: str, our_tag: str) -> Subscription | None:
        for sub in [*self._subs.values(), *self._ending]:
            if sub.call_id == call_id and sub.from_tag == our_tag:
                return sub
        return None

    def _on_response(self, response: Response) -> None:
        cseq = response.header("cseq").split()
        via_branch = ""
        for param in response.header("via").split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "branch":
                via_branch = value
        sub = self._find(response.header("call-id"), tag_of(response.header("from")))
        if sub is None or not sub.request or via_branch != sub.branch or len(cseq) != 2:
            return  # a late answer to a request we no longer wait for
        now = self._clock()
        if response.code < 200:
            sub.sends = MAX_SENDS  # no more retransmissions; the final answer may take a while
            sub.next_send = now + PROVISIONAL_WAIT_S
            return
        sub.request = b""
        if sub.ending:
            if response.code in (401, 407) and sub.auth_tries < MAX_AUTH_TRIES:
                self._challenged(sub, response, now, expires=0)
            return
        if 200 <= response.code < 300:
            self._established(sub, response, now)
        elif response.code in (401, 407) and sub.auth_tries < MAX_AUTH_TRIES:
            self._challenged(sub, response, now)
        elif response.code == 423 and response.header("min-expires").isdigit():
            sub.expires = int(response.header("min-expires"))
            self._send_subscribe(sub)
        elif response.code == 481 and sub.to_tag:
            self._restart(sub)  # the server forgot the subscription: start a new one
        else:
            self._failed(sub, now, f"{response.code} {response.reason}".strip())

    def _challenged(
        self, sub: Subscription, response: Response, now: float, expires: int | None = None
    ) -> None:
        """Send the SUBSCRIBE again with digest credentials for the 401/407's challenge."""
        name = "www-authenticate" if response.code == 401 else "proxy-authenticate"
        try:
            sub.challenge = parse_challenge(response.header(name))
        except DigestError as exc:
            if not sub.ending:
                self._failed(sub, now, str(exc))
            return
        sub.auth_name = "Authorization" if response.code == 401 else "Proxy-Authorization"
        sub.auth_tries += 1
        sub.nonce_count = 0
        self.challenges_answered += 1
        self._send_subscribe(sub, expires)

    def _established(self, sub: Subscription, response: Response, now: float) -> None:
        sub.auth_tries = 0
        if sub.flow is not None:
            self._failures.pop(sub.flow, None)  # the connection works: the backoff starts over
        if sub.refreshing:
            sub.refreshing = False
            self.refreshes += 1
        if not sub.to_tag:
            sub.to_tag = tag_of(response.header("to"))
            # the route set of a UAC: the Record-Route of the answer, reversed
            sub.route = list(reversed(header_list(response.headers, "record-route")))
            contact = response.header("contact")
            if contact:
                sub.target = split_name_addr(contact)[1] if "<" in contact else contact
        expires = response.header("expires")
        granted = int(expires) if expires.isdigit() else sub.expires
        sub.refresh_at = now + max(granted * 0.8, granted - 32.0, 5.0) if granted else 0.0
        log.info("blf subscribed", extra=kv(extension=sub.extension, expires=granted,
                                            transport=sub.transport))  # fmt: skip

    def _on_notify(self, sub: Subscription, headers: dict[str, list[str]], data: bytes) -> None:
        if not sub.to_tag:  # the NOTIFY overtook the 2xx: it establishes the dialog as well
            sub.to_tag = tag_of((headers.get("from") or [""])[0])
            sub.route = header_list(headers, "record-route")
            contact = (headers.get("contact") or [""])[0]
            if contact:
                sub.target = split_name_addr(contact)[1]
        state = (headers.get("subscription-state") or [""])[0]
        raw = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
        body = raw.decode("utf-8", "replace")
        try:
            info = parse_dialog_info(body)
        except DialogInfoError as exc:
            log.warning("blf: dialog-info refused", extra=kv(extension=sub.extension, error=exc))
            info = None
        # A NOTIFY older than one already seen (two notifier processes can reorder them) is
        # answered but not believed; an empty body (nothing published yet) carries no version.
        if info is not None and (info.version > sub.version or not body.strip()):
            sub.version = info.version
            if info.full:
                sub.dialogs.clear()
            for dialog in info.dialogs:
                key = (dialog.call_id, dialog.local_tag)
                if dialog.state == "terminated":
                    sub.dialogs.pop(key, None)
                else:
                    sub.dialogs[key] = dialog
            if not sub.ending:
                self._report(sub, subscribed=True)
        if state.lower().startswith("terminated") and not sub.ending:
            reason = state.lower()
            delay = RETRY_S if ("rejected" in reason or "noresource" in reason) else RESUBSCRIBE_S
            log.info("blf subscription ended by the server", extra=kv(extension=sub.extension,
                                                                    state=state))  # fmt: skip
            sub.refresh_at = 0.0
            sub.request = b""
            sub.retry_at = self._clock() + delay
