"""SipEngine: pjsua2 in one owner thread; other threads only enqueue commands.

The engine executes commands (firmware.events) and reports what happened as events; it takes no
decisions of its own. pjsua2 objects are created, used and destroyed only in the owner thread, and
every Python wrapper of a pjsua2 object is released before libDestroy (see docs/sip.md).
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import pjsua2 as pj

from offhook.contract.config import PhoneConfig
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.events import (
    Answer,
    AttendedTransfer,
    CallIncoming,
    CallMediaChanged,
    CallQuality,
    CallState,
    CallStateChanged,
    Command,
    Conference,
    Event,
    Hangup,
    Hold,
    MakeCall,
    MessageReceived,
    MessageStatus,
    MessageWaiting,
    Redirect,
    RegistrationChanged,
    Reject,
    Ringing,
    SendDtmf,
    SendMessage,
    SetMute,
    SipEngineStatus,
    Transfer,
    TransferStatus,
    Unhold,
)
from offhook.firmware.ports import AudioEndpoint
from offhook.firmware.sip.accounts import EngineAccount, account_config, account_settings
from offhook.firmware.sip.audio_port import EndpointPort
from offhook.firmware.sip.calls import (
    EngineCall,
    audio_media_index,
    phone_state,
    quality_sample,
    stream_codec,
)
from offhook.firmware.sip.mwi import MessageSummary
from offhook.firmware.sip.request_checks import RequestChecks, install_request_checks
from offhook.firmware.sip.text_out import TextSender
from offhook.firmware.sip.transports import (
    Transports,
    apply_codec_priorities,
    create_transports,
    endpoint_config,
    pjsip_log_level,
    set_startup_log_level,
    wanted_transports,
)
from offhook.firmware.sip.uri import TargetError, split_name_addr, target_uri

log = logging.getLogger(__name__)

# libHandleEvents returns early for SIP and RTP traffic and pjsip's timers; submit() wakes it
# with a CRLF keep-alive to our own UDP transport (pjsip drops those silently), so commands need
# no short poll interval. The interval bounds only how stale last_heartbeat can get (the
# heartbeat calls a loop hung after 3 s) and when an idle phone's loop turns: 10 turns a second
# cost an idle phone 0.06 CPU s/min.
PUMP_MS = 500
WAIT_PUMP_MS = 10  # while waiting for something in teardown
_KEEPALIVE = b"\r\n\r\n"
_PJ_EINVALIDOP = 70013  # pj_status_t: operation not valid now (a transaction is in progress)
_RETRY_S = 0.05
_RETRY_ATTEMPTS = 40  # two seconds
QUALITY_INTERVAL_S = 5.0
_DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
_TEARDOWN_WAIT_S = 2.0
# pjsua2 looks a MESSAGE's account up when its transaction ends, and asserts (aborts the process)
# if the account is gone, so an account is shut down only once its MESSAGEs have their answers,
# waiting this long at most (within SipEngine.stop's 10 s). A MESSAGE nobody answers lasts until
# Timer F (64 * T1 = 32 s); closing the transport does not end it sooner (pjsip shuts a UDP
# transport down only once its transactions let go of it).
_TEXT_WAIT_S = 6.0
_REFER_491_RETRIES = 3  # REFERs answered 491 Request Pending are sent again this often
_GLARE_RETRIES = 3  # so are hold/unhold re-INVITEs


class SipEngineError(OffhookError, RuntimeError):
    """The engine could not start, or was used in a way it cannot honour."""


@dataclass(frozen=True)
class _ApplyConfig:
    config: PhoneConfig


@dataclass(frozen=True)
class _Stop:
    pass


def _restart_key(config: PhoneConfig) -> tuple:
    """Settings that need the whole library re-created (transports, clock rate)."""
    sip = config.sip
    return (
        sip.port, sip.user_agent, sip.bind_address, sip.tls_ca_file, sip.tls_verify_server,
        sip.tls_cert_file, sip.tls_key_file, config.audio.sample_rate,
        tuple(wanted_transports(config)),
    )  # fmt: skip


class _Published:
    """What the owner thread hands to the engine's other threads: the bound ports (and the wake-up
    address they give), a snapshot of the calls, whether the handset port is on the bridge, and
    the events for the engine's consumer. The only part of the engine that _Core writes to."""

    def __init__(self, on_event: Callable[[Event], None], quality_interval_s: float) -> None:
        self.quality_interval_s = quality_interval_s
        self._on_event = on_event
        self._lock = threading.Lock()
        self._ports: dict[str, int] = {}
        self._wake_address: tuple[str, int] | None = None
        self._calls: dict[int, dict] = {}
        self.port_active = False  # a bool: written by the owner thread only, read anywhere

    def emit(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:  # a consumer's bug must not take the SIP stack down
            log.error(
                "on_event handler failed", extra=kv(event=repr(event), traceback=_traceback())
            )

    def publish_calls(self, snapshot: dict[int, dict]) -> None:
        with self._lock:
            self._calls = snapshot

    def calls(self) -> list[dict]:
        with self._lock:
            return [dict(info) for info in self._calls.values()]

    def set_ports(self, ports: dict[str, int], address: str) -> None:
        with self._lock:
            self._ports = ports
            self._wake_address = (address, ports["udp"]) if "udp" in ports else None
        self.emit(SipEngineStatus(True, tuple(sorted(ports.items()))))

    def ports(self) -> dict[str, int]:
        with self._lock:
            return dict(self._ports)

    def wake_address(self) -> tuple[str, int] | None:
        with self._lock:
            return self._wake_address


class _Core:
    """Everything that touches pjsua2. Lives in, and is only ever called from, the owner thread."""

    def __init__(
        self, published: _Published, config: PhoneConfig, audio: AudioEndpoint | None
    ) -> None:
        self.published = published
        self.config = config
        self.audio = audio
        self.ep: pj.Endpoint | None = None
        self.transports = Transports()
        self.accounts: dict[int, EngineAccount] = {}
        self.calls: dict[int, EngineCall] = {}
        self.graveyard: list[EngineCall] = []  # released on the next loop turn, not in callbacks
        self.texts = TextSender()  # MESSAGEs sent, waiting for their answer
        self.unborn: list[EngineCall] = []  # wrappers handed to pjsua before their first state
        self.port: EndpointPort | None = None
        self.muted = False
        self.clock_on = False  # the null sound device runs (see ensure_clock)
        self.next_quality = 0.0
        self.setup_started: dict[int, float] = {}
        self.closing = False  # set by teardown: new incoming calls are refused
        self.retries: list[tuple[float, object, int]] = []  # (due, command, attempt)
        self.checks: RequestChecks | None = None  # answers pjsip leaves out (400/405/420...)

    # --- life cycle ------------------------------------------------------------------------

    def setup(self) -> None:
        set_startup_log_level(pjsip_log_level())
        self.closing = False
        ep = pj.Endpoint()
        self.ep = ep
        ep.libCreate()
        ep.libInit(endpoint_config(self.config))
        # No clock while idle: ensure_clock() starts the null device when a call gets media.
        ep.audDevManager().setNoDev()
        self.clock_on = False
        self.transports = create_transports(ep, self.config)
        apply_codec_priorities(ep, self.config.sip.codecs)
        ep.libStart()
        self.checks = install_request_checks()
        for index, account in enumerate(self.config.accounts):
            if account.enabled:
                self.create_account(index)
        bound = self.config.sip.bind_address or "127.0.0.1"
        self.published.set_ports(dict(self.transports.ports), bound)

    def create_account(self, index: int) -> None:
        account = self.config.accounts[index]
        tid = self.transports.ids.get(account.transport)
        if tid is None:
            raise SipEngineError(f"accounts[{index}]: no {account.transport} transport")
        acc = EngineAccount(self, index)
        try:
            acc.create(account_config(self.config, account, tid), True)
        except pj.Error as exc:
            raise SipEngineError(f"accounts[{index}]: cannot create: {exc.info()}") from None
        self.accounts[index] = acc
        log.info(
            "account created",
            extra=kv(
                account=index,
                uri=f"sip:{account.user}@{account.domain}",
                transport=account.transport,
            ),
        )

    def remove_account(self, index: int) -> None:
        acc = self.accounts.pop(index, None)
        if acc is None:
            return
        for call in [c for c in self.calls.values() if c.account_index == index]:
            self.hangup_quietly(call)
        self.pump_until(lambda: not any(c.account_index == index for c in self.calls.values()))
        self.wait_for_texts(index)
        acc.shutdown()
        del acc

    def wait_for_texts(self, index: int | None = None) -> None:
        """Pump until the MESSAGEs of one account (or all) have their answers (bounded)."""
        waiting = self.texts.waiting(index)
        if waiting:
            log.info("waiting for text message answers", extra=kv(count=waiting, account=index))
            self.pump_until(lambda: not self.texts.waiting(index), _TEXT_WAIT_S)
            if self.texts.waiting(index):  # pjsua2 may abort when their transactions end
                log.error("text messages unanswered", extra=kv(count=self.texts.waiting(index)))

    def teardown(self) -> None:
        """Order that does not crash pjsua2: calls down, sound off, wrappers dropped, destroy."""
        ep = self.ep
        if ep is None:
            return
        try:
            ep.hangupAllCalls()
            self.pump_until(lambda: not self.calls)
        except pj.Error as exc:
            log.warning("hangup at teardown failed", extra=kv(error=exc.info()))
        self.release_clock_thread_state()
        try:
            ep.audDevManager().setNoDev()
        except pj.Error as exc:
            log.warning("setNoDev failed", extra=kv(error=exc.info()))
        self.clock_on = False
        self.closing = True
        self.wait_for_texts()
        self.retries.clear()
        self.port = None
        self.published.port_active = False
        self.unregister_all()
        # Wrappers go now, in this thread; one still alive at libDestroy aborts the process.
        self.calls.clear()
        self.graveyard.clear()
        self.unborn.clear()
        self.texts.clear()  # buddy wrappers go before their accounts
        for acc in self.accounts.values():
            try:
                acc.shutdown()
            except pj.Error as exc:
                log.warning(
                    "account shutdown failed", extra=kv(account=acc.index, error=exc.info())
                )
        self.accounts.clear()
        gc.collect()  # no stray wrapper may reach libDestroy
        if self.checks is not None:  # pjsip must not call into them once they are freed
            self.checks.uninstall()
            self.checks = None
        # Unregistration is already done: skip pjsua's fixed one-second wait for network replies.
        ep.libDestroy(pj.PJSUA_DESTROY_NO_RX_MSG)
        self.ep = None
        self.published.publish_calls({})

    def unregister_all(self) -> None:
        """Send un-REGISTERs and wait (bounded) for the answers, so the registrar forgets us."""
        pending: dict[EngineAccount, int] = {}
        for acc in self.accounts.values():
            try:
                if acc.getInfo().regIsActive:
                    pending[acc] = acc.reg_reports
                    acc.setRegistration(False)
            except pj.Error as exc:
                log.warning("unregister failed", extra=kv(account=acc.index, error=exc.info()))

        def done() -> bool:
            return all(acc.reg_reports > seen for acc, seen in pending.items())

        self.pump_until(done, limit_s=1.0)

    def pump(self, ms: int = PUMP_MS) -> None:
        assert self.ep is not None
        self.ep.libHandleEvents(ms)
        if self.texts.spent:
            self.texts.release_spent()
        if self.graveyard:
            # pjsua2's ~Call clears the user data of its call slot and hangs up whatever call is
            # active there. pjsua may already have given the slot of a call that just ended to
            # a new one (a burst of INVITEs reuses its few slots at once): such a wrapper waits
            # until that slot is idle, or it would hang up and orphan the new call.
            self.graveyard = [call for call in self.graveyard if call.isActive()]
        if self.clock_on and not self.calls:
            self.stop_clock()
        if self.port is not None and not self.clock_on:
            self.release_port()

    # --- clock and handset port: only while there are calls -------------------------------------
    # The conference clock (pjsua's null sound device) ticks every 20 ms, and the bridge then
    # hands every port a frame, connected or not: for our Python port a GIL round trip each time.
    # An idle phone needs neither. Order matters: the port is deleted only with the clock stopped
    # (deleting it under a running clock can crash pjsua2).

    def handset_port(self) -> EndpointPort | None:
        if self.port is None and self.audio is not None:
            self.port = EndpointPort(self.audio)
            self.port.muted = self.muted
            self.published.port_active = True
            log.info("handset port on the bridge")
        return self.port

    def release_port(self) -> None:
        self.port = None  # the C++ destructor takes it off the bridge
        self.published.port_active = False
        log.info("handset port off the bridge")

    def release_clock_thread_state(self) -> None:
        """The clock thread's Python state goes back while the clock still ticks (see
        audio_port.ClockThreadState); a thread that ended holding one would leak it."""
        if self.port is not None and self.clock_on and not self.port.thread_state.release():
            log.warning("clock thread state not released")

    def ensure_clock(self) -> None:
        """Run the conference clock: no RTP or DTMF goes out without it.

        Started before anything connects: with no device at all (setNoDev) pjsua never opens
        one by itself, which it would otherwise do with the default sound card."""
        assert self.ep is not None
        if not self.clock_on:
            self.ep.audDevManager().setNullDev()
            self.clock_on = True
            log.info("conference clock started")

    def stop_clock(self) -> None:
        assert self.ep is not None
        self.release_clock_thread_state()
        self.ep.audDevManager().setNoDev()
        self.clock_on = False
        log.info("conference clock stopped")

    def connect_handset(self, call: EngineCall, media: pj.AudioMedia) -> None:
        port = self.handset_port()
        if port is None:
            return
        port.startTransmit(media)
        media.startTransmit(port)

    def disconnect_handset(self, call: EngineCall, media: pj.AudioMedia) -> None:
        if self.port is not None:
            self.port.stopTransmit(media)
            media.stopTransmit(self.port)

    def pump_until(self, done: Callable[[], bool], limit_s: float = _TEARDOWN_WAIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while not done() and time.monotonic() < deadline:
            self.pump(WAIT_PUMP_MS)

    # --- commands ---------------------------------------------------------------------------

    def execute(self, command: object, attempt: int = 0) -> None:
        handler = _HANDLERS.get(type(command))
        if handler is None:
            log.warning("command ignored: not a SIP command", extra=kv(command=command))
            return
        try:
            handler(self, command)
        except (pj.Error, SipEngineError, ValueError) as exc:
            busy = isinstance(exc, pj.Error) and exc.status == _PJ_EINVALIDOP
            if busy and isinstance(command, _RETRIABLE) and attempt < _RETRY_ATTEMPTS:
                # The dialog has a transaction in progress (e.g. the far end's re-INVITE right
                # after answering): try again shortly instead of dropping the user's key press.
                self.retries.append((time.monotonic() + _RETRY_S, command, attempt + 1))
                return
            detail = exc.info() if isinstance(exc, pj.Error) else str(exc)
            log.warning("command failed", extra=kv(command=command, error=detail))
            if isinstance(command, MakeCall):
                # No call exists, so the phone learns of the failure through call_id -1.
                self.emit(CallStateChanged(-1, CallState.DISCONNECTED, 0, detail))

    def run_due_retries(self) -> None:
        now = time.monotonic()
        due = [r for r in self.retries if r[0] <= now]
        if not due:
            return
        self.retries = [r for r in self.retries if r[0] > now]
        for _, command, attempt in due:
            self.execute(command, attempt)

    def next_wait_ms(self) -> int:
        if not self.retries:
            return PUMP_MS
        soonest = min(r[0] for r in self.retries) - time.monotonic()
        return max(0, min(PUMP_MS, int(soonest * 1000) + 1))

    def call(self, call_id: int) -> EngineCall:
        call = self.calls.get(call_id)
        if call is None:
            raise SipEngineError(f"no call with id {call_id}")
        return call

    def do_make_call(self, cmd: MakeCall) -> None:
        acc = self.accounts.get(cmd.account)
        if acc is None:
            raise SipEngineError(f"account {cmd.account} is not configured or not enabled")
        uri = target_uri(self.config.accounts[cmd.account], cmd.target)
        call = EngineCall(self, acc, cmd.account)
        started = time.monotonic()
        prm = pj.CallOpParam(True)
        if cmd.replaces:  # directed pickup (BLF): this INVITE takes over that ringing dialog
            replaces = pj.SipHeader()
            replaces.hName = "Replaces"
            replaces.hValue = cmd.replaces
            prm.txOption.headers.append(replaces)
        call.makeCall(uri, prm)
        call_id = call.getId()
        self.calls[call_id] = call
        self.setup_started[call_id] = started
        log.info("call made", extra=kv(call_id=call_id, account=cmd.account, uri=uri))

    def do_ringing(self, cmd: Ringing) -> None:
        prm = pj.CallOpParam(True)
        prm.statusCode = 180
        self.call(cmd.call_id).answer(prm)

    def do_answer(self, cmd: Answer) -> None:
        prm = pj.CallOpParam(True)
        prm.statusCode = 200
        self.call(cmd.call_id).answer(prm)

    def do_reject(self, cmd: Reject) -> None:
        if not 400 <= cmd.status_code <= 699:
            raise SipEngineError(f"reject needs a 4xx-6xx status, not {cmd.status_code}")
        prm = pj.CallOpParam(True)
        prm.statusCode = cmd.status_code
        self.call(cmd.call_id).hangup(prm)

    def do_redirect(self, cmd: Redirect) -> None:
        call = self.call(cmd.call_id)
        uri = target_uri(self.config.accounts[call.account_index], cmd.target)
        prm = pj.CallOpParam(True)
        prm.statusCode = 302
        contact = pj.SipHeader()
        contact.hName = "Contact"
        contact.hValue = f"<{uri}>"
        prm.txOption.headers.append(contact)
        call.hangup(prm)

    def do_hangup(self, cmd: Hangup) -> None:
        self.call(cmd.call_id).hangup(pj.CallOpParam(True))

    def do_hold(self, cmd: Hold) -> None:
        call = self.call(cmd.call_id)
        if self.wait_for_offer(call, cmd):
            return
        call.setHold(pj.CallOpParam(True))
        self.hold_sent(call, cmd)

    def do_unhold(self, cmd: Unhold) -> None:
        call = self.call(cmd.call_id)
        if self.wait_for_offer(call, cmd):
            return
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(prm)
        self.hold_sent(call, cmd)

    @staticmethod
    def hold_sent(call: EngineCall, cmd: Hold | Unhold) -> None:
        call.offer_pending = True
        if call.hold_sent is not cmd:  # a new command, not the one sent again after a 491
            call.hold_sent, call.hold_491s = cmd, 0
        log.info(
            "re-invite sent", extra=kv(command=type(cmd).__name__.lower(), call_id=cmd.call_id)
        )

    def do_transfer(self, cmd: Transfer) -> None:
        call = self.call(cmd.call_id)
        if self.wait_for_offer(call, cmd):
            return
        uri = target_uri(self.config.accounts[call.account_index], cmd.target)
        call.xfer(uri, pj.CallOpParam(True))
        call.refer = cmd
        log.info("refer sent", extra=kv(call_id=cmd.call_id, target=uri))

    def do_attended_transfer(self, cmd: AttendedTransfer) -> None:
        call = self.call(cmd.call_id)
        if self.wait_for_offer(call, cmd):
            return
        call.xferReplaces(self.call(cmd.to_call_id), pj.CallOpParam(True))
        call.replaced_call_id = cmd.to_call_id
        call.refer = cmd
        log.info("refer sent", extra=kv(call_id=cmd.call_id, replaces=cmd.to_call_id))

    def wait_for_offer(self, call: EngineCall, cmd: _Deferrable) -> bool:
        """Keep a hold, unhold or REFER while an offer of ours is unanswered (on_offer_done
        sends it, in order). A REFER sent then is answered 491 by many UAs (linphone); a hold or
        unhold would be lost: pjsip sends a re-INVITE with the pending offer instead ("already
        have an offer, new offer is ignored") and pjsua still flips its hold flag."""
        call_id = call.getId()
        if isinstance(cmd, (Transfer, AttendedTransfer)) and any(
            isinstance(c, (Hold, Unhold)) and c.call_id == call_id for _, c, _ in self.retries
        ):
            # The hold itself still waits for a transaction of the far end: come back after it.
            self.retries.append((time.monotonic() + _RETRY_S, cmd, 0))
            return True
        if not call.offer_pending or cmd is call.hold_sent:
            return False
        log.info(
            "command waits for the pending offer to be answered",
            extra=kv(command=type(cmd).__name__.lower(), call_id=call_id),
        )
        call.deferred.append(cmd)
        return True

    def on_offer_done(self, call: EngineCall, code: int) -> None:
        """Our INVITE or UPDATE got its final answer: run the commands that waited for it.
        A hold re-INVITE answered 491 (its offer crossed one of the far end's) is sent again
        after the RFC 3261 back-off; what waits, waits for that one."""
        hold = call.hold_sent
        if code == 491 and hold is not None and call.hold_491s < _GLARE_RETRIES:
            call.hold_491s += 1
            delay = self.glare_backoff_s(call)
            log.info(
                "hold 491: sending it again", extra=kv(call_id=call.getId(), in_s=round(delay, 2))
            )
            self.retries.append((time.monotonic() + delay, hold, 0))
            return
        call.offer_pending = False
        call.hold_sent, call.hold_491s = None, 0
        waiting, call.deferred = call.deferred, []
        for command in waiting:
            self.retries.append((time.monotonic(), command, 0))

    def do_conference(self, cmd: Conference) -> None:
        if len(set(cmd.call_ids)) < 2:
            raise SipEngineError("a conference needs at least two different calls")
        self.ensure_clock()
        media = [self.call(cid).getAudioMedia(self.call(cid).audio_index) for cid in cmd.call_ids]
        for i, a in enumerate(media):
            for b in media[i + 1 :]:
                a.startTransmit(b)
                b.startTransmit(a)
        for call_id, a in zip(cmd.call_ids, media, strict=True):
            self.connect_handset(self.call(call_id), a)
        log.info("conference bridged", extra=kv(call_ids=list(cmd.call_ids)))

    def do_send_dtmf(self, cmd: SendDtmf) -> None:
        bad = set(cmd.digits) - _DTMF_DIGITS
        if not cmd.digits or bad:
            raise SipEngineError(f"dtmf digits {cmd.digits!r}: only 0-9 * # A-D can be sent")
        self.call(cmd.call_id).dialDtmf(cmd.digits)  # RFC 4733 by default

    def do_set_mute(self, cmd: SetMute) -> None:
        self.muted = cmd.muted
        if self.port is not None:
            self.port.muted = cmd.muted
        log.info("mute", extra=kv(muted=cmd.muted))

    def do_apply_config(self, cmd: _ApplyConfig) -> None:
        new, old = cmd.config, self.config
        if _restart_key(new) != _restart_key(old):
            log.info("sip settings changed: restarting the library")
            self.teardown()
            self.config = new
            self.setup()
            return
        self.config = new
        if new.sip.codecs != old.sip.codecs:
            assert self.ep is not None
            apply_codec_priorities(self.ep, new.sip.codecs)
        for index in range(max(len(new.accounts), len(old.accounts))):
            in_new = index < len(new.accounts) and new.accounts[index].enabled
            in_old = index < len(old.accounts) and old.accounts[index].enabled
            if in_new and in_old and account_settings(new, index) == account_settings(old, index):
                continue
            if in_old:
                self.remove_account(index)
                self.emit(RegistrationChanged(index, False, 0, "account removed or changed"))
            if in_new:
                self.create_account(index)

    def hangup_quietly(self, call: EngineCall) -> None:
        try:
            call.hangup(pj.CallOpParam(True))
        except pj.Error as exc:
            log.warning("hangup failed", extra=kv(call_id=call.getId(), error=exc.info()))

    # --- callbacks (from pjsua2, in the owner thread) ---------------------------------------

    def emit(self, event: Event) -> None:
        self.published.emit(event)

    def on_registration(self, index: int, registered: bool, code: int, reason: str) -> None:
        log.info("registration", extra=kv(account=index, registered=registered, code=code))
        self.emit(RegistrationChanged(index, registered, code, reason))

    def on_incoming_call(self, acc: EngineAccount, call_id: int) -> None:
        call = EngineCall(self, acc, acc.index, call_id)
        if self.closing or self.ep is None:
            prm = pj.CallOpParam(True)
            prm.statusCode = 503
            call.hangup(prm)
            self.graveyard.append(call)
            return
        self.calls[call_id] = call
        info = call.getInfo()
        name, uri = split_name_addr(info.remoteUri)
        call.last_state = CallState.INCOMING
        log.info("incoming call", extra=kv(call_id=call_id, account=acc.index, caller=uri))
        self.publish()
        # No 180 here: the Phone decides first (DND and busy are refused without ringing) and
        # sends Ringing for a call that will ring or wait. pjsua has answered 100 Trying.
        self.emit(CallIncoming(call_id, acc.index, uri, name, info.callIdString))

    def adopt_new_call(
        self, account_index: int, replaces: int, call_id: int = pj.PJSUA_INVALID_ID
    ) -> EngineCall:
        """A Call wrapper for a call pjsua creates itself: following a REFER that arrived on
        call ``replaces``, or an INVITE with Replaces taking over call ``replaces``."""
        call = EngineCall(self, self.accounts[account_index], account_index, call_id)
        call.replaces = replaces
        self.unborn.append(call)  # pjsua holds only a C++ pointer: keep the wrapper alive
        return call

    def on_call_state(self, call: EngineCall) -> None:
        info = call.getInfo()
        call_id = info.id
        self.calls.setdefault(call_id, call)
        if call in self.unborn:
            self.unborn.remove(call)
        state = phone_state(info)
        code = info.lastStatusCode
        if state is call.last_state and code == call.last_status:
            return
        call.last_state, call.last_status = state, code
        if state is CallState.CONFIRMED:
            call.codec = call.codec or stream_codec(call)
            started = self.setup_started.pop(call_id, None)
            if started is not None:
                call.setup_ms = (time.monotonic() - started) * 1000.0
        name, uri = split_name_addr(info.remoteUri)
        log.info(
            "call state",
            extra=kv(call_id=call_id, state=state.value, code=code, reason=info.lastReason),
        )
        if state is CallState.DISCONNECTED:
            # Deleting a Call inside its DISCONNECTED callback crashes pjsua2: defer the release.
            self.calls.pop(call_id, None)
            self.setup_started.pop(call_id, None)
            self.graveyard.append(call)
        self.publish()  # before the event, so calls_info() already agrees with it
        direction = "outgoing" if info.role == pj.PJSIP_ROLE_UAC else "incoming"
        self.emit(
            CallStateChanged(
                call_id, state, code, info.lastReason, uri, name, call.codec,
                direction, call.account_index, call.replaces, info.callIdString,
            )
        )  # fmt: skip

    def on_call_media_state(self, call: EngineCall) -> None:
        info = call.getInfo()
        call.audio_index = audio_media_index(info)
        if call.audio_index < 0:
            return
        media = info.media[call.audio_index]
        status = media.status
        # pjsua's LOCAL_HOLD is its own flag, set when a hold re-INVITE is sent and cleared with
        # an unhold, whatever offer that re-INVITE then carried: held locally is what was
        # negotiated, a stream we made sendonly or inactive (one that does not receive).
        held_locally = status in _OWN_MEDIA and not media.dir & pj.PJMEDIA_DIR_DECODING
        held_remotely = status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD
        call.codec = stream_codec(call) or call.codec
        if held_locally:
            # A call we hold still sends (sendonly): the handset must not be what it sends.
            self.disconnect_handset(call, call.getAudioMedia(call.audio_index))
        elif status in (*_OWN_MEDIA, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
            self.ensure_clock()
            self.connect_handset(call, call.getAudioMedia(call.audio_index))
        changed = (held_locally, held_remotely) != (call.held_locally, call.held_remotely)
        call.held_locally, call.held_remotely = held_locally, held_remotely
        self.publish()
        if changed:
            self.emit(CallMediaChanged(info.id, held_locally, held_remotely))

    def on_tsx_state(self, call: EngineCall, tsx: pj.SipTransaction) -> None:
        # Every INVITE or UPDATE we send carries an offer, pjsua's own included (after an answer
        # with several codecs it locks one with an UPDATE, or a re-INVITE).
        if tsx.role != pj.PJSIP_ROLE_UAC or tsx.method not in ("INVITE", "UPDATE"):
            return
        if tsx.statusCode < 200:
            call.offer_pending = True
        elif call.offer_pending:
            self.on_offer_done(call, tsx.statusCode)

    def on_transfer_status(self, call: EngineCall, code: int, reason: str, final: bool) -> None:
        call_id = call.getId()
        log.info(
            "transfer status", extra=kv(call_id=call_id, code=code, reason=reason, final=final)
        )
        retry = final and code == 491 and call.refer is not None
        if retry and call.refer_491s < _REFER_491_RETRIES:
            call.refer_491s += 1
            delay = self.glare_backoff_s(call)
            log.info("refer 491: sending it again", extra=kv(call_id=call_id, in_s=round(delay, 2)))
            self.retries.append((time.monotonic() + delay, call.refer, 0))
            return
        if final and not 200 <= code < 300:
            call.refer, call.refer_491s = None, 0
        self.emit(TransferStatus(call_id, code, reason, final))
        if final and 200 <= code < 300:
            # The far end now talks to the transfer target; our leg is done.
            self.hangup_quietly(call)
            # A target that honours Replaces has already ended our leg to it; one that does not
            # (baresip 1.0) would leave it up, talking to nobody.
            replaced = self.calls.get(call.replaced_call_id)
            if replaced is not None:
                self.hangup_quietly(replaced)

    @staticmethod
    def glare_backoff_s(call: EngineCall) -> float:
        """RFC 3261 14.1: a random wait in 10 ms steps, 2.1-4 s if we own the dialog's Call-ID
        (we sent the INVITE), else 0-2 s."""
        try:
            caller = call.getInfo().role == pj.PJSIP_ROLE_UAC
        except pj.Error:
            caller = False
        steps = random.randint(210, 400) if caller else random.randint(0, 200)
        return steps / 100.0

    def on_instant_message(self, index: int, from_uri: str, body: str, content_type: str) -> None:
        """A MESSAGE for one of our lines; pjsua has already answered it 200."""
        name, uri = split_name_addr(from_uri)
        log.info("text message", extra=kv(account=index, sender=uri, type=content_type))
        self.emit(MessageReceived(index, uri, name, body, content_type))

    def on_message_status(self, index: int, to_uri: str, body: str, code: int, reason: str) -> None:
        """The final answer to a MESSAGE we sent (pjsua reports 408 itself on no answer)."""
        sent = self.texts.answered(index, to_uri, body)
        if sent is None:
            log.warning("message status for no pending send", extra=kv(account=index, code=code))
            return
        log.info("text message answered", extra=kv(request=sent.request, code=code, reason=reason))
        self.emit(MessageStatus(sent.request, code, reason))

    def do_send_message(self, cmd: SendMessage) -> None:
        acc = self.accounts.get(cmd.account)
        reason = ""
        if acc is None:
            reason = f"account {cmd.account} is not configured or not enabled"
        else:
            try:
                uri = target_uri(self.config.accounts[cmd.account], cmd.target)
                self.texts.send(cmd.request, acc, cmd.account, uri, cmd.body)
            except TargetError as exc:
                reason = str(exc)
            except pj.Error as exc:
                reason = exc.reason or exc.info()
        if reason:  # refused before anything went out: the Phone still gets its answer
            log.warning("text message not sent", extra=kv(request=cmd.request, error=reason))
            self.emit(MessageStatus(cmd.request, 0, reason))

    def on_mwi(self, index: int, summary: MessageSummary) -> None:
        log.info(
            "mwi",
            extra=kv(account=index, waiting=summary.waiting, new=summary.new, old=summary.old),
        )
        self.emit(MessageWaiting(index, summary.waiting, summary.new, summary.old))

    # --- periodic ---------------------------------------------------------------------------

    def report_quality(self) -> None:
        now = time.monotonic()
        if now < self.next_quality:
            return
        self.next_quality = now + self.published.quality_interval_s
        samples = []
        for call_id, call in list(self.calls.items()):
            if call.last_state is not CallState.CONFIRMED:
                continue
            sample = quality_sample(call)
            if sample is not None:
                call.quality = sample
                samples.append((call_id, sample))
        if samples:
            self.publish()
        for call_id, q in samples:
            self.emit(CallQuality(call_id, q.codec, q.jitter_ms, q.loss_pct, q.rtt_ms, q.mos))

    def publish(self) -> None:
        snapshot = {}
        for call_id, call in self.calls.items():
            quality = call.quality
            snapshot[call_id] = {
                "id": call_id,
                "account": call.account_index,
                "state": call.last_state.value,
                "status_code": call.last_status,
                "remote_uri": self._remote_uri(call),
                "codec": call.codec,
                "held_locally": call.held_locally,
                "held_remotely": call.held_remotely,
                "setup_ms": call.setup_ms,
                "stats": None if quality is None else quality.__dict__.copy(),
            }
        self.published.publish_calls(snapshot)

    @staticmethod
    def _remote_uri(call: EngineCall) -> str:
        try:
            return split_name_addr(call.getInfo().remoteUri)[1]
        except pj.Error:
            return ""


def _traceback() -> str:
    """The current exception's traceback as text, for a log field.

    log.exception would hand the traceback to the handlers, and a handler that keeps records
    (pytest's, a memory buffer) would keep its frames, with their pjsua2 wrappers, alive past
    libDestroy: pjsua2 then aborts the process when it finally drops them.
    """
    return traceback.format_exc().rstrip()


_RETRIABLE = (Hold, Unhold, Transfer, AttendedTransfer, SendDtmf)
_Deferrable = Hold | Unhold | Transfer | AttendedTransfer
# Media states in which our own hold flag, not the far end's, decides the direction.
_OWN_MEDIA = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD)

# each handler takes the _Core and a command of its key's type
_HANDLERS: dict[type, Callable[..., None]] = {
    MakeCall: _Core.do_make_call,
    Ringing: _Core.do_ringing,
    Answer: _Core.do_answer,
    Reject: _Core.do_reject,
    Redirect: _Core.do_redirect,
    Hangup: _Core.do_hangup,
    Hold: _Core.do_hold,
    Unhold: _Core.do_unhold,
    Transfer: _Core.do_transfer,
    AttendedTransfer: _Core.do_attended_transfer,
    Conference: _Core.do_conference,
    SendDtmf: _Core.do_send_dtmf,
    SetMute: _Core.do_set_mute,
    SendMessage: _Core.do_send_message,
    _ApplyConfig: _Core.do_apply_config,
}


class SipEngine:
    """Thread-safe facade: commands go into a queue that the owner thread drains."""

    def __init__(
        self,
        config: PhoneConfig,
        on_event: Callable[[Event], None],
        audio: AudioEndpoint | None = None,
        quality_interval_s: float = QUALITY_INTERVAL_S,
    ) -> None:
        if audio is not None and audio.sample_rate not in (8000, 16000, 32000, 48000):
            raise SipEngineError(f"audio endpoint sample rate {audio.sample_rate} unsupported")
        self._config = config
        self._audio = audio
        self._published = _Published(on_event, quality_interval_s)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: str | None = None
        self._heartbeat = 0.0
        self._wake_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._wake_socket.setblocking(False)
        self.failure = ""  # why the owner loop ended, when it failed (say, a port in use)

    # --- public API -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the owner thread; return once transports and accounts exist."""
        if self._thread is not None and self._thread.is_alive():
            raise SipEngineError("engine already running")
        self._ready.clear()
        self._startup_error = None
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sip-engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise SipEngineError(f"sip engine did not start within {timeout} s")
        if self._startup_error is not None:
            self._thread.join(timeout)
            raise SipEngineError(f"sip engine failed to start: {self._startup_error}")

    def submit(self, command: Command) -> None:
        """Queue a command for the owner thread; never blocks."""
        self._queue.put(command)
        self._wake()

    def apply_config(self, config: PhoneConfig) -> None:
        """Re-register only accounts whose settings changed (transport changes restart all)."""
        self._queue.put(_ApplyConfig(config))
        self._wake()

    def stop(self, timeout: float = 10.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_Stop())
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            raise SipEngineError(f"sip engine thread did not stop within {timeout} s")
        self._thread = None

    @property
    def last_heartbeat(self) -> float:
        return self._heartbeat

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ports(self) -> dict[str, int]:
        """Bound SIP ports by transport ("udp", "tcp", "tls"), known once start() returned."""
        return self._published.ports()

    @property
    def handset_port_active(self) -> bool:
        """True while the audio endpoint's port is on pjsua's bridge (only during call media)."""
        return self._published.port_active

    @property
    def quality_interval_s(self) -> float:
        return self._published.quality_interval_s

    def calls_info(self) -> list[dict]:
        return self._published.calls()

    # --- owner thread -----------------------------------------------------------------------

    def _run(self) -> None:
        core = _Core(self._published, self._config, self._audio)
        try:
            core.setup()
        except BaseException as exc:  # reported to start(); the thread must still clean up
            # Keep only the text: the traceback's frames hold pjsua2 wrappers, and those must die
            # here, not later in whichever thread drops the last reference.
            self._startup_error = f"{type(exc).__name__}: {exc}"
            log.error("sip engine start failed", extra=kv(error=exc))
            del exc
            self._safe_teardown(core)
            del core
            gc.collect()
            self._ready.set()
            return
        self._heartbeat = time.monotonic()
        self._ready.set()
        try:
            self._loop(core)
        except Exception as exc:
            # The heartbeat stops and running turns False: the supervisor restarts the engine.
            self.failure = f"{type(exc).__name__}: {exc}"  # text only (see _traceback)
            del exc
            log.error("sip engine loop failed", extra=kv(traceback=_traceback()))
            # the status fails a pending apply
            self._published.emit(SipEngineStatus(False, failure=self.failure))
        finally:
            self._safe_teardown(core)
            del core
            gc.collect()  # any wrapper left in a cycle is released in this thread
            log.info("sip engine stopped")

    def _loop(self, core: _Core) -> None:
        while True:
            self._heartbeat = time.monotonic()
            core.pump(core.next_wait_ms())
            core.run_due_retries()
            while True:
                try:
                    command = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(command, _Stop):
                    return
                core.execute(command)
            core.report_quality()

    @staticmethod
    def _safe_teardown(core: _Core) -> None:
        try:
            core.teardown()
        except Exception:
            log.error("sip engine teardown failed", extra=kv(traceback=_traceback()))

    def _wake(self) -> None:
        """Make the owner thread's libHandleEvents return now (a datagram to its UDP socket)."""
        address = self._published.wake_address()
        if address is None:
            return
        try:
            self._wake_socket.sendto(_KEEPALIVE, address)
        except OSError as exc:  # the loop still picks the command up within PUMP_MS
            log.debug("wake-up datagram failed", extra=kv(error=exc))
