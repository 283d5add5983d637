"""Answers for the requests pjsip itself leaves unanswered or accepts against RFC 3261.

pjsua2 has no hook for these, so this module registers two pjsip modules and the transport
manager's drop-data callback through pjsip's C API, reached with ctypes in the very library the
pjsua2 binding loaded (as transports.py does for the log level). All of it runs in the engine's
owner thread, inside ``libHandleEvents``.

- ``mod-offhook-checks`` (priority 15, before the transaction layer, so it sees every new request
  and retransmission first): more than one Content-Length -> 400 (RFC 3261 20.14 allows one;
  pjsip keeps the last); a CSeq method other than the request's -> 400 (RFC 3261 8.1.1.5; pjsip
  answered an OPTIONS with ``CSeq: 1 INVITE`` 200); a ``Require`` option tag pjsip does not
  support -> 420 with ``Unsupported`` (RFC 3261 8.2.2.3; pjsip checks this for INVITE only:
  OPTIONS, MESSAGE, BYE... with ``Require: foo`` were answered 200).
- ``mod-offhook-unhandled`` (priority 74, after every pjsua module): a request no module took
  (pjsip drops those silently) -> REGISTER and other methods we know -> 405 with ``Allow``,
  SUBSCRIBE/NOTIFY for an event package nobody serves -> 489, unknown methods -> 501.
- Drop-data callback: a request pjsip's parser rejects (syntax error, missing Call-ID / From /
  To / Via / CSeq) is dropped before any module. Its bytes reach the callback without the
  sender's address, so the 400 is built from the request's own header lines and sent through the
  transport it came on, to the top Via's sent-by (an IPv4 literal; nothing is sent otherwise).

Reading a request needs ``rdata->msg_info.msg``, and ``pjsip_rx_data``'s layout depends on the
build (``PJSIP_MAX_PKT_LEN`` sizes a buffer before it). The offset is found once, on the first
request, from a value pjsip stores itself (``msg_info.info``, set by ``pjsip_rx_data_get_info``)
and checked against its neighbours; if that check fails the modules stay passive for the process
(logged), and pjsip behaves as it did without them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
import secrets
import traceback
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_size_t,
    c_ssize_t,
    c_uint16,
    c_void_p,
)
from dataclasses import dataclass

import pjsua2 as pj

from offhook.contract.logs import kv

log = logging.getLogger(__name__)

_PRIORITY_CHECKS = 15  # PJSIP_MOD_PRIORITY_TSX_LAYER - 1
_PRIORITY_UNHANDLED = 74  # PJSIP_MOD_PRIORITY_APPLICATION + 10
# pjsip_hdr_e values (sip_msg.h)
_H_ALLOW = 4
_H_CONTENT_LENGTH = 13
_H_CSEQ = 15
_H_REQUIRE = 31
_H_SUPPORTED = 36
_TPSELECTOR_TRANSPORT = 1
_TRANSPORT_TYPES = {"UDP": 1, "TCP": 2, "TLS": 3}  # pjsip_transport_type_e
# Drop-data statuses that mean "a request pjsip could not read" (sip_errno.h)
_PJSIP_EINVALIDMSG = 171020
_PJSIP_EMISSINGHDR = 171050
_KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)
_DIALOG_METHODS = frozenset({"BYE", "CANCEL", "PRACK", "UPDATE"})
_MSG_INFO_SCAN_LIMIT = 1 << 16  # bytes of pjsip_rx_data searched for msg_info
_HEADER_BUF = 4096


class _PjStr(Structure):
    _fields_ = [("ptr", c_void_p), ("slen", c_ssize_t)]


_RX_CALLBACK = CFUNCTYPE(c_int, c_void_p)


class _PjsipModule(Structure):
    _fields_ = [
        ("prev", c_void_p),
        ("next", c_void_p),
        ("name", _PjStr),
        ("id", c_int),
        ("priority", c_int),
        ("load", c_void_p),
        ("start", c_void_p),
        ("stop", c_void_p),
        ("unload", c_void_p),
        ("on_rx_request", _RX_CALLBACK),
        ("on_rx_response", c_void_p),
        ("on_tx_request", c_void_p),
        ("on_tx_response", c_void_p),
        ("on_tsx_state", c_void_p),
    ]


class _PjsipHdr(Structure):  # PJ_DECL_LIST_MEMBER + type, name, sname, vptr
    _fields_ = [
        ("prev", c_void_p),
        ("next", c_void_p),
        ("type", c_int),
        ("name", _PjStr),
        ("sname", _PjStr),
        ("vptr", c_void_p),
    ]


class _DroppedData(Structure):  # pjsip_tp_dropped_data
    _fields_ = [("tp", c_void_p), ("data", c_void_p), ("len", c_size_t), ("status", c_int)]


class _TpSelector(Structure):  # pjsip_tpselector with u.transport
    _fields_ = [("type", c_int), ("disable_connection_reuse", c_int), ("transport", c_void_p)]


_DROP_CALLBACK = CFUNCTYPE(None, POINTER(_DroppedData))


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(pj._pjsua2.__file__)
    signatures = {
        "pjsua_get_pjsip_endpt": (c_void_p, []),
        "pjsip_endpt_register_module": (c_int, [c_void_p, c_void_p]),
        "pjsip_endpt_unregister_module": (c_int, [c_void_p, c_void_p]),
        "pjsip_endpt_get_tpmgr": (c_void_p, [c_void_p]),
        "pjsip_tpmgr_set_drop_data_cb": (c_int, [c_void_p, c_void_p]),
        "pjsip_rx_data_get_info": (c_void_p, [c_void_p]),
        "pjsip_msg_find_hdr": (c_void_p, [c_void_p, c_int, c_void_p]),
        "pjsip_hdr_print_on": (c_int, [c_void_p, c_char_p, c_size_t]),
        "pjsip_endpt_get_capability": (c_void_p, [c_void_p, c_int, c_void_p]),
        "pjsip_endpt_create_pool": (c_void_p, [c_void_p, c_char_p, c_size_t, c_size_t]),
        "pjsip_endpt_release_pool": (None, [c_void_p, c_void_p]),
        "pjsip_generic_string_hdr_create": (c_void_p, [c_void_p, c_void_p, c_void_p]),
        "pjsip_hdr_clone": (c_void_p, [c_void_p, c_void_p]),
        "pjsip_endpt_respond_stateless": (
            c_int, [c_void_p, c_void_p, c_int, c_void_p, c_void_p, c_void_p],
        ),
        "pjsip_tpmgr_send_raw": (
            c_int,
            [c_void_p, c_int, c_void_p, c_void_p, c_char_p, c_size_t, c_void_p, c_int,
             c_void_p, c_void_p],
        ),
        "pj_sockaddr_in_init": (c_int, [c_void_p, c_void_p, c_uint16]),
        "pjsip_tpmgr_acquire_transport": (
            c_int, [c_void_p, c_int, c_void_p, c_int, c_void_p, POINTER(c_void_p)],
        ),
        "pjsip_transport_dec_ref": (c_int, [c_void_p]),
        "pjsip_transport_shutdown": (c_int, [c_void_p]),
    }  # fmt: skip
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def _pj_str(text: bytes) -> tuple[_PjStr, ctypes.Array[ctypes.c_char]]:
    """A pj_str_t over a buffer the caller keeps alive for as long as pjsip may read it."""
    buffer = ctypes.create_string_buffer(text, len(text))
    return _PjStr(ctypes.cast(buffer, c_void_p), len(text)), buffer


def _log_failure() -> None:
    # Text only, no exc_info: a handler keeping records must not keep these frames alive.
    log.error("request checks failed", extra=kv(traceback=traceback.format_exc().rstrip()))


def _read_pointer(address: int) -> int:
    return ctypes.c_void_p.from_address(address).value or 0


def option_tags(header_text: str) -> list[str]:
    """``Require: foo, Bar`` -> ["foo", "bar"] (option tags compare case-insensitively)."""
    _, _, value = header_text.partition(":")
    return [tag.strip().lower() for tag in value.split(",") if tag.strip()]


_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9.!%*_+`'~-]*)[ \t]*:(.*)$")
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
_TO_TAG = re.compile(r";\s*tag\s*=", re.IGNORECASE)
_VIA_SENT_BY = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;,\s]+)", re.IGNORECASE)


@dataclass(frozen=True)
class BadRequestReply:
    """A 400 (505) for a request pjsip could not parse: the text and where it goes."""

    text: bytes
    transport: str  # "UDP" / "TCP" / "TLS", from the top Via
    host: str
    port: int


def bad_request_reply(raw: bytes) -> BadRequestReply | None:
    """The 400 (505 for another SIP version) for an unparseable request, from its own header
    lines; None if there is no request line, no usable Via (IPv4 sent-by), or it is an ACK
    (never answered)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.replace("\r\n", "\n").split("\n")
    request_line = lines[0].split()
    if len(request_line) < 2 or request_line[0].upper().startswith("SIP/"):
        return None  # a response, or nothing like a request
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line:
            unfolded.append(line)
    kept: list[str] = []
    method_in_cseq = ""
    for line in unfolded:
        match = _HEADER_LINE.match(line)
        if not match:
            continue
        name = _COMPACT.get(match.group(1).lower(), match.group(1).lower())
        if name not in ("via", "from", "to", "call-id", "cseq"):
            continue
        value = match.group(2).strip()
        if name == "to" and not _TO_TAG.search(value):
            value += f";tag={secrets.token_hex(6)}"
        if name == "cseq":
            method_in_cseq = value.split()[-1].upper() if value.split() else ""
        canonical = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID"}
        kept.append(f"{canonical.get(name, 'CSeq')}: {value}")
    if request_line[0].upper() == "ACK" or method_in_cseq == "ACK":
        return None
    vias = [line for line in kept if line.startswith("Via: ")]
    if not vias:
        return None
    sent_by = _VIA_SENT_BY.search(vias[0])
    if not sent_by or sent_by.group(1).upper() not in _TRANSPORT_TYPES:
        return None
    host, _, port_text = sent_by.group(2).partition(":")
    try:
        ipaddress.IPv4Address(host)
        port = (
            int(port_text) if port_text else (5061 if sent_by.group(1).upper() == "TLS" else 5060)
        )
    except ValueError:
        return None  # a host name would need a (blocking) lookup in the SIP thread
    if not 0 < port < 65536:
        return None
    # RFC 3261 21.5.7: a request of another SIP version gets 505, anything unreadable 400.
    version = request_line[-1].upper() if len(request_line) == 3 else ""
    status = (
        "505 Version Not Supported"
        if version.startswith("SIP/") and version != "SIP/2.0"
        else "400 Bad Request"
    )
    text = "\r\n".join([f"SIP/2.0 {status}", *kept, "Content-Length: 0", "", ""])
    return BadRequestReply(text.encode(), sent_by.group(1).upper(), host, port)


class RequestChecks:
    """The two modules and the drop-data callback, installed on one pjsua library instance."""

    def __init__(self) -> None:
        self._lib = _library()
        self._endpt = 0
        self._tpmgr = 0
        self._msg_info_offset: int | None = None  # offset of msg_info in pjsip_rx_data
        self._layout_failed = False
        self._udp_transport = 0  # never shut down: it is the phone's SIP socket
        self._keep: list[object] = []  # ctypes objects pjsip points at
        self._modules: list[_PjsipModule] = []
        self._drop_callback = _DROP_CALLBACK(self._on_dropped)

    # --- life cycle -----------------------------------------------------------------------

    def install(self) -> None:
        """Register with the running library (after libInit, in the owner thread)."""
        self._endpt = self._lib.pjsua_get_pjsip_endpt() or 0
        if not self._endpt:
            raise RuntimeError("request checks: no pjsip endpoint")
        for name, priority, handler in (
            (b"mod-offhook-checks", _PRIORITY_CHECKS, self._on_request_checks),
            (b"mod-offhook-unhandled", _PRIORITY_UNHANDLED, self._on_request_unhandled),
        ):
            pj_name, buffer = _pj_str(name)
            callback = _RX_CALLBACK(handler)
            module = _PjsipModule(name=pj_name, id=-1, priority=priority, on_rx_request=callback)
            self._keep += [buffer, callback]
            status = self._lib.pjsip_endpt_register_module(self._endpt, ctypes.byref(module))
            if status != 0:
                raise RuntimeError(f"request checks: module registration failed status={status}")
            self._modules.append(module)
        self._tpmgr = self._lib.pjsip_endpt_get_tpmgr(self._endpt) or 0
        self._udp_transport = self._find_udp_transport()
        if self._tpmgr:
            self._lib.pjsip_tpmgr_set_drop_data_cb(
                self._tpmgr, ctypes.cast(self._drop_callback, c_void_p)
            )
        log.info("request checks installed")

    def _find_udp_transport(self) -> int:
        """The UDP transport, as pjsip hands it out for any destination (0 if none)."""
        if not self._tpmgr:
            return 0
        address = ctypes.create_string_buffer(32)
        host, host_buffer = _pj_str(b"127.0.0.1")
        self._lib.pj_sockaddr_in_init(address, ctypes.byref(host), 9)
        transport = c_void_p()
        status = self._lib.pjsip_tpmgr_acquire_transport(
            self._tpmgr, _TRANSPORT_TYPES["UDP"], address, 16, None, ctypes.byref(transport)
        )
        del host_buffer
        if status != 0 or not transport.value:
            return 0
        self._lib.pjsip_transport_dec_ref(transport)
        return transport.value

    def uninstall(self) -> None:
        """Unregister before libDestroy (pjsip would otherwise call into freed objects)."""
        if self._tpmgr:
            self._lib.pjsip_tpmgr_set_drop_data_cb(self._tpmgr, None)
            self._tpmgr = 0
        for module in reversed(self._modules):
            self._lib.pjsip_endpt_unregister_module(self._endpt, ctypes.byref(module))
        self._modules.clear()
        self._endpt = 0

    # --- reading a request ---------------------------------------------------------------------

    def _capability_text(self, header_type: int) -> str:
        hdr = self._lib.pjsip_endpt_get_capability(self._endpt, header_type, None)
        return self._print(hdr) if hdr else ""

    def _print(self, hdr: int) -> str:
        buffer = ctypes.create_string_buffer(_HEADER_BUF)
        length = self._lib.pjsip_hdr_print_on(hdr, buffer, _HEADER_BUF)
        return buffer.raw[:length].decode("utf-8", errors="replace") if length > 0 else ""

    def _message(self, rdata: int) -> int:
        """``rdata->msg_info.msg``, or 0 when the layout could not be established."""
        if self._msg_info_offset is None and not self._layout_failed:
            self._msg_info_offset = self._find_msg_info(rdata)
            self._layout_failed = self._msg_info_offset is None
            if self._layout_failed:
                log.error("request checks disabled: pjsip_rx_data layout not recognised")
        if self._msg_info_offset is None:
            return 0
        return _read_pointer(rdata + self._msg_info_offset + 16)

    def _find_msg_info(self, rdata: int) -> int | None:
        # msg_info = {char *msg_buf; int len; pjsip_msg *msg; char *info; ...}: info is what
        # pjsip_rx_data_get_info returns (it stores it there), msg_buf points into the packet
        # buffer earlier in the same struct, len is the message length.
        info = self._lib.pjsip_rx_data_get_info(rdata)
        if not info:
            return None
        for offset in range(0, _MSG_INFO_SCAN_LIMIT, ctypes.sizeof(c_void_p)):
            if _read_pointer(rdata + offset) != info or offset < 24:
                continue
            base = offset - 24
            msg_buf = _read_pointer(rdata + base)
            length = ctypes.c_int.from_address(rdata + base + 8).value
            msg = _read_pointer(rdata + base + 16)
            if rdata < msg_buf < rdata + base and 0 < length <= base and msg:
                return base
            return None
        return None

    @staticmethod
    def _method(msg: int) -> str:
        # pjsip_msg = {type; line.req.method = {id; pj_str_t name}; ...}
        name = _PjStr.from_address(msg + 16)
        if not name.ptr or not 0 < name.slen < 64:
            return ""
        return ctypes.string_at(name.ptr, name.slen).decode("ascii", errors="replace").upper()

    def _headers(self, msg: int, header_type: int) -> list[str]:
        found: list[str] = []
        start: int | None = None
        while True:
            hdr = self._lib.pjsip_msg_find_hdr(msg, header_type, start)
            if not hdr:
                return found
            found.append(self._print(hdr))
            start = _PjsipHdr.from_address(hdr).next

    # --- answering -----------------------------------------------------------------------------

    def _respond(self, rdata: int, code: int, reason: str = "", **headers: str) -> None:
        """A stateless response, with extra headers given as name=value."""
        pool = self._lib.pjsip_endpt_create_pool(self._endpt, b"offhook-checks", 512, 512)
        if not pool:
            return
        try:
            head = _PjsipHdr()
            head_address = ctypes.addressof(head)
            keep: list[object] = [head]
            nodes: list[int] = []
            for name, value in headers.items():
                pj_name, name_buffer = _pj_str(name.encode())
                pj_value, value_buffer = _pj_str(value.encode())
                keep += [pj_name, name_buffer, pj_value, value_buffer]
                hdr = self._lib.pjsip_generic_string_hdr_create(
                    pool, ctypes.byref(pj_name), ctypes.byref(pj_value)
                )
                if hdr:
                    nodes.append(hdr)
            # A pjsip list: head <-> nodes... <-> head (respond_stateless clones each node).
            ring = [head_address, *nodes]
            for index, address in enumerate(ring):
                node = _PjsipHdr.from_address(address)
                node.prev = ring[index - 1]
                node.next = ring[(index + 1) % len(ring)]
            text, text_buffer = _pj_str(reason.encode()) if reason else (None, None)
            keep += [text, text_buffer]
            status = self._lib.pjsip_endpt_respond_stateless(
                self._endpt, rdata, code,
                ctypes.byref(text) if text is not None else None,
                head_address if nodes else None, None,
            )  # fmt: skip
            if status != 0:
                log.warning("request checks: response failed", extra=kv(code=code, status=status))
        finally:
            self._lib.pjsip_endpt_release_pool(self._endpt, pool)

    def _on_request_checks(self, rdata: int) -> int:
        try:
            msg = self._message(rdata)
            if not msg:
                return 0
            method = self._method(msg)
            lengths = self._headers(msg, _H_CONTENT_LENGTH)
            if len(lengths) > 1:
                if method != "ACK":
                    self._respond(rdata, 400, "Bad Request: more than one Content-Length")
                log.info(
                    "request refused",
                    extra=kv(method=method, code=400, why="duplicate-content-length"),
                )
                transport = _read_pointer(rdata + 8)  # rdata->tp_info.transport
                values = {h.partition(":")[2].strip() for h in lengths}
                if len(values) > 1 and transport and transport != self._udp_transport:
                    # On a stream, differing lengths leave the framing of what follows unknown
                    # (pjsip frames with the first, parses with the last): close it.
                    self._lib.pjsip_transport_shutdown(transport)
                    log.info("connection closed why=conflicting-content-length")
                return 1
            cseq = self._headers(msg, _H_CSEQ)
            cseq_method = cseq[0].split()[-1].upper() if cseq and cseq[0].split() else ""
            if cseq_method != method:
                if method != "ACK":
                    self._respond(rdata, 400, "Bad Request: CSeq method differs")
                log.info("request refused", extra=kv(method=method, code=400, why="cseq-method"))
                return 1
            if method in ("ACK", "CANCEL"):
                return 0
            required = [t for h in self._headers(msg, _H_REQUIRE) for t in option_tags(h)]
            if not required:
                return 0
            # Read each time: pjsua adds tags (trickle-ice) after libStart.
            supported = set(option_tags(self._capability_text(_H_SUPPORTED)))
            unsupported = [t for t in dict.fromkeys(required) if t not in supported]
            if unsupported:
                self._respond(rdata, 420, Unsupported=", ".join(unsupported))
                log.info(
                    "request refused",
                    extra=kv(method=method, code=420, unsupported=",".join(unsupported)),
                )
                return 1
            return 0
        except Exception:  # never let an exception cross into pjsip
            _log_failure()
            return 0

    def _on_request_unhandled(self, rdata: int) -> int:
        try:
            msg = self._message(rdata)
            if not msg:
                return 0
            method = self._method(msg)
            if method == "ACK" or not method:
                return 0
            if method in ("SUBSCRIBE", "NOTIFY"):
                code = 489  # no module serves this event package (RFC 6665)
                self._respond(rdata, code)
            elif method in _DIALOG_METHODS:
                code = 481  # no dialog or transaction for it
                self._respond(rdata, code)
            elif method in _KNOWN_METHODS:
                code = 405
                allow = option_tags(self._capability_text(_H_ALLOW))
                self._respond(rdata, code, Allow=", ".join(a.upper() for a in allow))
            else:
                code = 501
                self._respond(rdata, code)
            log.info("request refused", extra=kv(method=method, code=code, why="unhandled"))
            return 1
        except Exception:
            _log_failure()
            return 0

    def _on_dropped(self, dropped: ctypes._Pointer[_DroppedData]) -> None:
        try:
            data = dropped.contents
            if data.status not in (_PJSIP_EINVALIDMSG, _PJSIP_EMISSINGHDR) or not data.len:
                return  # keep-alive CRLFs and partial stream data are not requests
            reply = bad_request_reply(ctypes.string_at(data.data, data.len))
            if reply is None:
                return
            address = ctypes.create_string_buffer(32)  # pj_sockaddr
            host, host_buffer = _pj_str(reply.host.encode())
            self._lib.pj_sockaddr_in_init(address, ctypes.byref(host), reply.port)
            selector = _TpSelector(_TPSELECTOR_TRANSPORT, 0, data.tp)
            status = self._lib.pjsip_tpmgr_send_raw(
                self._tpmgr, _TRANSPORT_TYPES[reply.transport], ctypes.byref(selector), None,
                reply.text, len(reply.text), address, 16, None, None,
            )  # fmt: skip
            del host_buffer
            log.info(
                "request refused",
                extra=kv(
                    code=reply.text[8:11].decode(),
                    why="unparseable",
                    status=status,
                    to=f"{reply.host}:{reply.port}",
                ),
            )
        except Exception:
            _log_failure()


def install_request_checks() -> RequestChecks | None:
    """Install on the running library; None (logged) if pjsip refuses: the phone still works,
    it only leaves those requests unanswered as pjsip alone does."""
    try:
        checks = RequestChecks()  # AttributeError: a pjsip function the library lacks
    except (OSError, AttributeError) as exc:
        log.error("request checks not installed", extra=kv(error=exc))
        return None
    try:
        checks.install()
    except RuntimeError as exc:
        log.error("request checks not installed", extra=kv(error=exc))
        checks.uninstall()
        return None
    return checks
