"""SIP over a stream (TCP, TLS) for the phone's own small SIP clients: messages framed by
Content-Length (RFC 3261 18.3) and one non-blocking client connection, driven by ``select``.

A stream has no message boundaries, so every message must say how long its body is; a message
without Content-Length, with a value that is not a number, or one larger than the limits cannot
be framed, and everything after it on the connection is ambiguous: the connection is closed
(``StreamClosed`` with the reason) and its user connects again.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import ssl
from collections.abc import Callable

from offhook.contract.errors import OffhookError

MAX_HEADER_BYTES = 16 * 1024  # a SUBSCRIBE answer or NOTIFY head is well under 2 KiB
MAX_BODY_BYTES = 64 * 1024  # dialog_info refuses bodies above this anyway
MAX_QUEUED_BYTES = 256 * 1024  # unsent output; more means the peer stopped reading
CONNECT_TIMEOUT_S = 5.0  # TCP connect plus TLS handshake
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.I | re.M)


class StreamClosed(OffhookError, ConnectionError):
    """The connection is gone or unusable; the message says why (refused, EOF, bad framing,
    TLS certificate verification...)."""


class StreamFramer:
    """Bytes in, whole SIP messages out. CRLF keep-alives between messages (RFC 5626 pings and
    pongs) are skipped."""

    def __init__(self, max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_BODY_BYTES):
        self._buffer = bytearray()
        self._max_header = max_header
        self._max_body = max_body

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``; raises StreamClosed when one cannot be framed."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_header:
                    raise StreamClosed(
                        f"no end of headers within {self._max_header} bytes: not SIP framing"
                    )
                return messages
            if end > self._max_header:
                raise StreamClosed(f"headers of {end} bytes, over the {self._max_header} limit")
            length = self._content_length(bytes(self._buffer[:end]))
            total = end + 4 + length
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    def _content_length(self, head: bytes) -> int:
        values = {v.strip() for v in _CONTENT_LENGTH.findall(head)}
        if not values:
            raise StreamClosed("a message without Content-Length (required on a stream)")
        if len(values) > 1:
            raise StreamClosed(f"a message with differing Content-Lengths {sorted(values)}")
        value = values.pop()
        if not value.isdigit():
            raise StreamClosed(f"a message with Content-Length {value[:20]!r}, not a number")
        length = int(value)
        if length > self._max_body:
            raise StreamClosed(
                f"a message with Content-Length {length}, over the {self._max_body} byte limit"
            )
        return length


def tls_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    return f"TLS handshake failed: {exc.reason or exc}"


class StreamConnection:
    """One client connection (TCP, or TLS with ``context``), non-blocking: the owner selects on
    ``fileno()`` for reading always and for writing while ``wants_write()``, and calls
    ``on_readable``/``on_writable``, which raise StreamClosed once the connection is unusable.
    ``send`` queues until the connection (and the TLS handshake) is up."""

    def __init__(
        self,
        destination: tuple[str, int],
        context: ssl.SSLContext | None,
        server_hostname: str,
        bind_host: str,
        clock: Callable[[], float],
    ) -> None:
        self.destination = destination
        self._context = context
        self._server_hostname = server_hostname
        self._raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._raw.setblocking(False)
        self._raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = self._raw
        self._framer = StreamFramer()
        self._out = bytearray()
        self.state = "connecting"  # -> "handshake" (TLS) -> "open"; "closed"
        self._want_write_in_handshake = True
        self.deadline = clock() + CONNECT_TIMEOUT_S  # for connecting and the handshake
        try:
            if bind_host != "0.0.0.0":
                self._raw.bind((bind_host, 0))
            code = self._raw.connect_ex(destination)
        except OSError as exc:
            self.close()
            raise StreamClosed(f"cannot connect: {exc}") from None
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.close()
            raise StreamClosed(f"cannot connect: {errno.errorcode.get(code, code)}")
        host, port = self._raw.getsockname()[:2]
        self.local = (str(host), int(port))  # known once connect() has started

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def wants_write(self) -> bool:
        if self.state == "connecting":
            return True
        if self.state == "handshake":
            return self._want_write_in_handshake
        return self.state == "open" and bool(self._out)

    def send(self, data: bytes) -> None:
        if self.state == "closed":
            raise StreamClosed("connection closed")
        if len(self._out) + len(data) > MAX_QUEUED_BYTES:
            raise StreamClosed(f"over {MAX_QUEUED_BYTES} bytes queued: the peer stopped reading")
        self._out += data
        if self.state == "open":
            self._flush()

    def on_writable(self) -> None:
        if self.state == "connecting":
            code = self._raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise StreamClosed(f"cannot connect: {errno.errorcode.get(code, code)}")
            if self._context is None:
                self.state = "open"
            else:
                self.sock = self._context.wrap_socket(
                    self._raw, server_hostname=self._server_hostname,
                    do_handshake_on_connect=False,
                )  # fmt: skip
                self.state = "handshake"
        if self.state == "handshake":
            self._handshake()
        if self.state == "open":
            self._flush()

    def on_readable(self) -> list[bytes]:
        """The whole messages that arrived (none while connecting or mid-handshake)."""
        if self.state == "handshake":
            self._handshake()
            if self.state != "open":
                return []
        if self.state != "open":
            return []
        messages: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(65_536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except ssl.SSLError as exc:
                raise StreamClosed(f"TLS error: {exc.reason or exc}") from None
            except OSError as exc:
                raise StreamClosed(f"receive failed: {exc}") from None
            if not data:
                raise StreamClosed("closed by the peer")
            messages += self._framer.feed(data)
            pending = getattr(self.sock, "pending", None)
            if not (pending and pending()):
                break  # TLS keeps no decrypted bytes back: select tells of the next ones
        if self._out:
            self._flush()
        return messages

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want_write_in_handshake = False
            return
        except ssl.SSLWantWriteError:
            self._want_write_in_handshake = True
            return
        except ssl.SSLError as exc:
            raise StreamClosed(tls_failure(exc)) from None
        except OSError as exc:
            raise StreamClosed(f"TLS handshake failed: {exc}") from None
        self.state = "open"

    def _flush(self) -> None:
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except OSError as exc:
                raise StreamClosed(f"send failed: {exc}") from None
            del self._out[:sent]

    def close(self) -> None:
        self.state = "closed"
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.sock is not self._raw:
            self._raw.close()


def client_context(
    ca_file: str, verify: bool, cert_file: str = "", key_file: str = ""
) -> ssl.SSLContext:
    """The TLS client side as pjsip's transport has it for the same settings (``sip.tls_*``):
    with ``verify`` the server's chain must lead to ``ca_file`` (the system's CAs when empty)
    and its certificate name the host dialled; without, any certificate is taken. The phone's
    own certificate, when it has one, is offered to servers that ask for it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context
