"""A user-space RTP relay that impairs both directions of each call, driven like an rtpproxy.

Kamailio's ``rtpproxy`` module (``KamailioServer(media_relay=relay.control_address)``) sends it
the classic rtpproxy control commands and rewrites every SDP offer and answer to point at the
relay, so any pair of endpoints (the phone, baresip, pjsua2) talks through it without knowing.
For each call the relay opens one face per party (an RTP port and RTCP on the next one); what
arrives at a party's face comes from the other party and is sent on, after the decisions of that
direction's ``ImpairmentChannel``, from the other party's face, so each side sees its peer at the
address its SDP names. As rtpproxy does, a party's real address is latched from its first packet.
RTCP is forwarded unimpaired (reports must arrive for the phone's jitter, loss and RTT figures).

Decisions are seeded per session and direction (``seed``, the session's number since the last
``configure`` and the direction), so a run with the same impairment and seed drops, delays and
duplicates the same packets. ``sessions()`` gives per-direction counts.

Control protocol (UDP, ``<cookie> <command>``, one reply ``<cookie> <answer>``): ``V`` (version
20040107), ``VF <date>``, ``U`` (offer: create or update the sender's face, answer its port and
address), ``L`` (answer: the other party's face), ``D`` (delete). Anything else gets ``E1``;
``VF`` answers 1 for the base protocol and 20050322 (several streams per call), 0 otherwise.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.devtools.impairment import ChannelStats, Impairment, ImpairmentChannel

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PROTOCOL_VERSION = "20040107"
# capabilities (``VF <date>``) this relay has: the base protocol and several media streams per
# call (``tag;medianum``), which Kamailio's rtpproxy module requires
CAPABILITIES = frozenset({PROTOCOL_VERSION, "20050322"})
_MAX_DATAGRAM = 65535
_RECEIVE_BUFFER = 1 << 20


class MediaRelayError(OffhookError, RuntimeError):
    """The relay could not bind or start (the message says which port or range)."""


@dataclass
class DirectionStats:
    """One direction of one session: what arrived, what the channel decided, what left."""

    received: int = 0
    sent: int = 0
    overtaken: int = 0  # packets sent after a packet that arrived later
    rtcp_forwarded: int = 0
    decisions: ChannelStats = field(default_factory=ChannelStats)
    _highest_sent: int = -1

    def record_sent(self, index: int) -> None:
        self.sent += 1
        if index < self._highest_sent:
            self.overtaken += 1
        self._highest_sent = max(self._highest_sent, index)


class _Face:
    """The relay's RTP/RTCP sockets that one party sends to; they forward to the other party."""

    def __init__(self, rtp: socket.socket, rtcp: socket.socket) -> None:
        self.rtp, self.rtcp = rtp, rtcp
        self.port = rtp.getsockname()[1]
        self.party: tuple[str, int] | None = None  # where this face's owner receives RTP
        self.party_rtcp: tuple[str, int] | None = None
        self.latched = False
        self.peer: _Face | None = None
        self.channel: ImpairmentChannel | None = None  # packets towards this face's owner
        self.stats = DirectionStats()

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@dataclass
class _Session:
    number: int
    call_id: str
    faces: dict[str, _Face] = field(default_factory=dict)  # by SIP tag
    offerer: str = ""


@dataclass(frozen=True)
class SessionReport:
    call_id: str
    number: int
    to_offerer: DirectionStats  # towards the party whose offer created the session
    to_answerer: DirectionStats


class MediaRelay:
    """Thread-owning relay; ``with MediaRelay(...) as relay`` starts and stops it."""

    def __init__(
        self,
        impairment: Impairment | None = None,
        seed: int | str = 0,
        *,
        host: str = HOST,
        port_range: tuple[int, int] | None = None,
    ) -> None:
        """``port_range``: (first, last) for the control port and the media pairs; None lets
        the system choose."""
        self.host = host
        self.port_range = port_range
        self._impairment = impairment or Impairment()
        self._seed: int | str = seed
        self._session_numbers = itertools.count()
        self._sessions: dict[str, _Session] = {}
        self._finished: list[SessionReport | None] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int], _Face, int]] = []
        self._queue_order = itertools.count()
        self._control: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._next_port = port_range[0] if port_range else 0

    # --- life cycle ------------------------------------------------------------------------

    @property
    def control_address(self) -> tuple[str, int]:
        if self._control is None:
            raise MediaRelayError("media relay is not started")
        host, port = self._control.getsockname()[:2]
        return host, port

    def start(self) -> MediaRelay:
        if self._thread is not None:
            raise MediaRelayError("media relay already started")
        self._control = self._bind_control()
        self._selector.register(self._control, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="media-relay", daemon=True)
        self._thread.start()
        settings = kv(control=self.control_address, impairment=self._impairment.describe())
        log.info("media relay started", extra=settings)
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(timeout=5)
        with self._lock:
            for session in self._sessions.values():
                for face in session.faces.values():
                    face.close()
            self._sessions.clear()
        if self._control is not None:
            self._control.close()
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()

    def __enter__(self) -> MediaRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- settings and figures --------------------------------------------------------------

    def configure(self, impairment: Impairment, seed: int | str) -> None:
        """Impairment and seed for sessions created from now on; session numbers restart at 0."""
        with self._lock:
            self._impairment = impairment
            self._seed = seed
            self._session_numbers = itertools.count()
            self._finished.clear()

    @property
    def impairment(self) -> Impairment:
        return self._impairment

    def sessions(self) -> list[SessionReport]:
        """Every session since the last ``configure`` that had both parties, ended ones too."""
        with self._lock:
            live = [_report(s) for s in self._sessions.values()]
            reports = [r for r in [*self._finished, *live] if r is not None]
            return sorted(reports, key=lambda r: r.number)

    # --- control protocol --------------------------------------------------------------------

    def handle_command(self, command: str) -> str:
        """One rtpproxy command without its cookie -> the answer (public for tests)."""
        words = command.split()
        if not words:
            return "E1"
        verb = words[0]
        op = verb[0].upper()
        if op == "V":
            if verb.upper() == "VF":
                return "1" if len(words) > 1 and words[1] in CAPABILITIES else "0"
            return PROTOCOL_VERSION
        if op in "UL" and len(words) >= 5:
            call_id, address, port_text, *tags = words[1:]
            try:
                port = int(port_text)
            except ValueError:
                return "E1"
            clean_tags = [t.split(";", 1)[0] for t in tags[:2]]
            try:
                face = self._face_for(op, call_id, clean_tags, (address, port))
            except OSError as exc:
                log.warning("media relay has no port pair", extra=kv(call_id=call_id, error=exc))
                return "E7"
            if face is None:
                return "E8"
            return f"{face.port} {self.host}"
        if op == "D" and len(words) >= 2:
            self._delete(words[1])
            return "0"
        return "E1"

    def _face_for(
        self, op: str, call_id: str, tags: list[str], party: tuple[str, int]
    ) -> _Face | None:
        """The face the *other* party will send to, forwarding to ``party`` (the sender's SDP)."""
        with self._lock:
            session = self._sessions.get(call_id)
            if op == "U":
                if session is None:
                    number = next(self._session_numbers)
                    session = _Session(number, call_id, offerer=tags[0])
                    self._sessions[call_id] = session
                party_tag = tags[0]
            else:
                if session is None:
                    return None
                others = [t for t in tags if t != session.offerer]
                # an answer to the offerer: the tag that is not the offerer's; a re-offer's
                # answer back to the other party names the offerer's tag only
                party_tag = others[0] if others else session.offerer
            face = session.faces.get(party_tag)
            if face is None:
                face = self._open_face()
                session.faces[party_tag] = face
                for sock in (face.rtp, face.rtcp):
                    self._selector.register(sock, selectors.EVENT_READ, face)
                direction = "to-offerer" if party_tag == session.offerer else "to-answerer"
                seed = f"{self._seed}/{session.number}/{direction}"
                face.channel = ImpairmentChannel(self._impairment, seed)
                face.stats.decisions = face.channel.stats
            if not face.latched:
                face.party = party
                face.party_rtcp = (party[0], party[1] + 1)
            if len(session.faces) == 2:
                first, second = session.faces.values()
                first.peer, second.peer = second, first
        self._wake()  # the selector picks up the new sockets
        return face

    def _delete(self, call_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(call_id, None)
            if session is None:
                return
            self._finished.append(_report(session))
            for face in session.faces.values():
                for sock in (face.rtp, face.rtcp):
                    with suppress(KeyError, ValueError):
                        self._selector.unregister(sock)
                face.close()

    # --- sockets ---------------------------------------------------------------------------

    def _bind_control(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for port in self._candidate_ports(pairs=False):
            try:
                sock.bind((self.host, port))
                return sock
            except OSError:
                continue
        sock.close()
        raise MediaRelayError(f"media relay: no free control port in {self.port_range}")

    def _candidate_ports(self, pairs: bool) -> Iterator[int]:
        """Ports of the range from where the last search stopped (even ones for RTP pairs)."""
        if self.port_range is None:
            while True:  # the system chooses; callers take as many tries as they allow
                yield 0
        first, last = self.port_range
        span = last - first + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = first + (port - first + 1) % span
            if not pairs or (port % 2 == 0 and port + 1 <= last):
                yield port

    def _open_face(self) -> _Face:
        """An RTP socket (an even port within a range) and RTCP on the next, both free."""
        for port in itertools.islice(self._candidate_ports(pairs=True), 100):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind((self.host, port))
                rtcp.bind((self.host, rtp.getsockname()[1] + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            for sock in (rtp, rtcp):
                sock.setblocking(False)
            # room for a burst while the loop is descheduled on a loaded machine
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            return _Face(rtp, rtcp)
        raise OSError(f"no free RTP port pair in {self.port_range or 'the ephemeral range'}")

    def _wake(self) -> None:
        with suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            timeout = None
            if self._queue:
                timeout = max(0.0, self._queue[0][0] - time.monotonic())
            try:
                ready = self._selector.select(timeout)
            except (OSError, ValueError):  # a socket closed by D between select calls
                continue
            for key, _ in ready:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    with suppress(OSError):
                        self._wake_r.recv(4096)
                elif sock is self._control:
                    self._serve_control()
                else:
                    self._receive(sock, key.data)
            self._send_due()

    def _serve_control(self) -> None:
        assert self._control is not None
        try:
            data, source = self._control.recvfrom(_MAX_DATAGRAM)
        except OSError:
            return
        cookie, _, command = data.decode(errors="replace").strip().partition(" ")
        answer = self.handle_command(command)
        log.debug("media relay command", extra=kv(command=command, answer=answer))
        with suppress(OSError):
            self._control.sendto(f"{cookie} {answer}\n".encode(), source)

    def _receive(self, sock: socket.socket, face: _Face) -> None:
        """A datagram from ``face``'s peer party: latch its address, impair, queue for ``face``."""
        try:
            data, source = sock.recvfrom(_MAX_DATAGRAM)
        except OSError:
            return
        peer = face.peer
        if peer is None:
            return  # the answer has not come yet: nowhere to send it
        is_rtcp = sock is face.rtcp
        with self._lock:
            if not peer.latched and not is_rtcp:
                peer.party, peer.party_rtcp, peer.latched = source, (source[0], source[1] + 1), True
        target = face.party_rtcp if is_rtcp else face.party
        if target is None:
            return
        out = peer.rtcp if is_rtcp else peer.rtp
        if is_rtcp:
            face.stats.rtcp_forwarded += 1
            with suppress(OSError):
                out.sendto(data, target)
            return
        index = face.stats.received
        face.stats.received += 1
        assert face.channel is not None
        now = time.monotonic()
        for delay in face.channel.decide():
            entry = (now + delay, next(self._queue_order), out, data, target, face, index)
            heapq.heappush(self._queue, entry)

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, _, out, data, target, face, index = heapq.heappop(self._queue)
            with suppress(OSError):
                out.sendto(data, target)
            face.stats.record_sent(index)


def _report(session: _Session) -> SessionReport | None:
    offerer = session.faces.get(session.offerer)
    answerer = next((f for t, f in session.faces.items() if t != session.offerer), None)
    if offerer is None or answerer is None:
        return None
    return SessionReport(session.call_id, session.number, offerer.stats, answerer.stats)


@contextmanager
def running_relay(
    impairment: Impairment | None = None,
    seed: int | str = 0,
    port_range: tuple[int, int] | None = None,
) -> Iterator[MediaRelay]:
    relay = MediaRelay(impairment, seed, port_range=port_range)
    with relay:
        yield relay
