"""The Phone: a pure state machine. Events in, commands out; no I/O, no clock, no threads.

The caller supplies ``now`` (epoch seconds) with every event, runs the returned commands in order,
and feeds timers back as ``TimerFired(name)``. Contract with the SIP engine: after ``MakeCall`` the
engine reports the new call with ``CallStateChanged(call_id, CALLING, ...)``; the first report of an
unknown call id while a call is being placed binds that id to it; a call the engine started itself
(a REFER, an INVITE with Replaces) is adopted like any other. See docs/phone.md.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from offhook.contract.config import PhoneConfig
from offhook.contract.dialplan import Decision, DigitMap
from offhook.contract.keys import DIGIT_KEYS
from offhook.contract.logs import kv
from offhook.firmware.calls import (
    UNPLACED,
    Call,
    Outcome,
    call_summary,
    collapse_repeats,
    ended_outcome,
    history_kind,
    merge_repeat,
    number_from_uri,
    record_summary,
    same_missed_caller,
)
from offhook.firmware.events import (
    Answer,
    AttendedTransfer,
    CallIncoming,
    CallMediaChanged,
    CallQuality,
    CallRecord,
    CallState,
    CallStateChanged,
    CancelTimer,
    ClockTick,
    Command,
    Conference,
    ConfigApplied,
    ConfigOutcome,
    DeviceInfo,
    Event,
    ExtensionState,
    Hangup,
    Hold,
    HookChanged,
    KeyPressed,
    MakeCall,
    MessageReceived,
    MessageStatus,
    MessageWaiting,
    PlayTone,
    ReconfigureEngine,
    RecordCall,
    Redirect,
    RegistrationChanged,
    Reject,
    Render,
    Ringing,
    Screen,
    SendDtmf,
    SetLed,
    SetMute,
    SetRinger,
    SetTonePlan,
    SetVolume,
    SipEngineStatus,
    StartTimer,
    StopTone,
    TimerFired,
    Tone,
    Transfer,
    TransferStatus,
    Unhold,
)
from offhook.firmware.features import (
    action_urls,
    blf_keys,
    compose,
    directory,
    settings,
    texts,
    trust,
)
from offhook.firmware.features.blf import blf_summary, key_index, watch_command
from offhook.firmware.features.events import (
    CallerNameFound,
    DirectoryResults,
    FactoryResetDone,
    NetworkApplied,
    NetworkStatus,
    ProvisioningStatus,
    ServerDiscovered,
)
from offhook.firmware.features.messages import text_target, unread
from offhook.firmware.features.state import AdminLock
from offhook.firmware.phone_state import (
    NO_NOTICE,
    NO_REGISTRATION,
    Browse,
    BrowseList,
    LineRegistration,
    Mailbox,
    Menu,
    Mode,
    Notice,
    PhoneState,
    VolumeTarget,
)
from offhook.firmware.screens.lists import browse_entries, status_menu_items
from offhook.firmware.screens.views import compose_screen, led_states

log = logging.getLogger(__name__)

HISTORY_SIZE = 50
# SIP codes the Phone answers with (docs/phone.md): DND says "not now", a busy line says "busy".
DND_STATUS = 480  # Temporarily Unavailable
BUSY_STATUS = 486  # Busy Here
DECLINE_STATUS = 603  # Decline: the user pressed cancel on a ringing call
RING_TIMEOUT_STATUS = 480  # nobody answered within features.ring_timeout_s
# What the Phone's own endings put in the call record (status, reason): the final status of the
# INVITE as pjsua reports it for a local hang-up (BYE after 200, CANCEL -> 487, and ours).
REASONS = {
    200: "OK",
    302: "Moved Temporarily",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    603: "Decline",
}
ENDING_KEPT = 64  # calls we ended whose engine DISCONNECTED has not arrived yet (bounded)

SOFTKEY_ACTIONS = {
    "History": "history",
    "Contacts": "phonebook",
    "DND": "dnd",
    "Back": "cancel",
    "Cancel": "cancel",
    "End": "cancel",
    "Reject": "cancel",
    "Redial": "redial",
    "Send": "ok",
    "Dial": "ok",
    "Answer": "ok",
    "Hold": "hold",
    "Resume": "hold",
    "Swap": "hold",
    "Xfer": "transfer",
    "Conf": "conference",
    "Open": "ok",
    "Calls": "history",
    "Dir": "phonebook",
    "Texts": "messages",
    "Call": texts.CALL_SENDER,
    "Reply": compose.REPLY,
    "Text": compose.TEXT,
    "Del": "cancel",
    "Retry": "ok",
    # the directory, the settings menu and the trust prompt (firmware/features/)
    "Search": "ok",
    "OK": "ok",
    "Next": "ok",
    "Erase": "ok",
    "Trust": "ok",
}

T_OFFHOOK = "offhook"  # off-hook without dialling -> howler
T_INTERDIGIT = "interdigit"
T_HOWLER = "howler"  # after a call ended and the handset stays up
T_NO_ANSWER = "no_answer:"  # + call id: forward on no answer
T_VOLUME = "volume"  # the volume bar goes away
T_RING = "ring_timeout:"  # + call id: nobody answered, give up with 480
T_XFER = "xfer:"  # + call id: a REFER was accepted but the transfer never reported its end
# Desk phones end the transferor's leg soon after the far end accepted the REFER, whether or not a
# final NOTIFY arrives (a lost or unparseable NOTIFY must not keep the call "on hold" for ever).
TRANSFER_GIVE_UP_S = 8.0

VOLUME_STEP = 10
VOLUME_BAR_S = 2.0
APPLY_PENDING = "pending"  # registration_outcome: no verdict yet


def registration_outcome(
    registration: Mapping[int, LineRegistration], config: PhoneConfig
) -> str | None:
    """None when every enabled account is registered, an error text when one was refused,
    APPLY_PENDING while waiting."""
    pending = False
    for index, account in enumerate(config.accounts):
        if not account.enabled:
            continue
        line = registration.get(index, NO_REGISTRATION)
        if line.registered:
            continue
        if line.status_code >= 300:
            return (
                f"accounts[{index}] ({account.user}@{account.domain}): "
                f"registration failed {line.status_code}"
            )
        pending = True
    return APPLY_PENDING if pending else None


def apply_outcome(state: PhoneState) -> str | None:
    """The verdict on the config in ``state``: first the SIP engine (APPLY_PENDING until it
    listens as configured, an error once it stopped: a port in use ends it, and that is the cause
    to report), then the lines' registration (see registration_outcome)."""
    engine = state.engine
    if engine is not None:
        if not engine.running:
            return f"sip engine stopped: {engine.failure or 'not running'}"
        wanted = state.config.sip.port
        if wanted and dict(engine.ports).get("udp") != wanted:
            return APPLY_PENDING
    return registration_outcome(state.registration, state.config)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown timezone, using UTC", extra=kv(timezone=name))
        return UTC


def _level(saved: object, default: int) -> int:
    """A kept volume level if it is a sane one, else the configured level."""
    if isinstance(saved, int) and not isinstance(saved, bool) and 0 <= saved <= 100:
        return saved
    return default


class Phone:
    def __init__(
        self,
        config: PhoneConfig,
        id_factory: Callable[[], str] | None = None,
        history: Iterable[CallRecord] = (),
        volumes: Mapping[str, int] | None = None,
        admin_lock: AdminLock | None = None,
    ) -> None:
        """``history``: calls kept from before a restart, oldest first (as a history file).
        ``volumes``: the user's last {"speaker", "ring"} levels (else the config's).
        ``admin_lock``: the wrong-PIN count and lock kept from before a restart."""
        self._digit_map = DigitMap(config.dialplan.digit_map)  # compiled from state.config
        self._new_id: Callable[[], str] = id_factory or (lambda: uuid.uuid4().hex)
        saved = volumes or {}
        self.state = PhoneState(
            config=config,
            tz=_zone(config.device.timezone),
            volume={
                VolumeTarget.SPEAKER: _level(saved.get("speaker"), config.audio.speaker_volume),
                VolumeTarget.RING: _level(saved.get("ring"), config.audio.ring_volume),
            },
            history=collapse_repeats(list(reversed(list(history))))[:HISTORY_SIZE],
            registration={i: NO_REGISTRATION for i in range(len(config.accounts))},
            dnd=config.features.dnd,
            admin_lock=admin_lock or AdminLock(),
        )

    # --- public API ------------------------------------------------------------------------------

    @property
    def screen(self) -> Screen:
        return self.state.screen

    def new_record_id(self) -> str:
        """A CallRecord id (from ``id_factory``): features take one early for a live call."""
        return self._new_id()

    @property
    def config(self) -> PhoneConfig:
        return self.state.config

    def start(self, now: float) -> list[Command]:
        self.state.now = now
        self.state.admin_lock = settings.restored_lock(self.state.admin_lock, now)
        out: list[Command] = [SetVolume(t.value, level) for t, level in self.state.volume.items()]
        if self.state.config.blf:
            out.append(watch_command(self.state.config))
        self._refresh(out, force=True)
        return out

    def handle(self, event: Event, now: float) -> list[Command]:
        self.state.now = now
        out: list[Command] = []
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"Phone cannot handle {type(event).__name__}")
        handler(self, event, out)
        if self.state.apply_request:
            self._judge_apply(out)
        self._refresh(out)
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        """The state as the control API shows it (JSON-ready)."""
        state = self.state
        calls = [call_summary(c, now) for c in state.calls.values()]
        if state.pending is not None:
            calls.append(call_summary(state.pending, now))
        return {
            "hook": "off" if state.hook_off else "on",
            "handset": "up" if state.handset_up else "down",
            "audio_path": self._audio_path(),
            "registration": [
                {
                    "account": i,
                    "user": acc.user,
                    "registered": state.registration_of(i).registered,
                    "status": state.registration_of(i).status_code,
                }
                for i, acc in enumerate(state.config.accounts)
            ],
            "calls": calls,
            "screen": list(state.screen.lines),
            "dialing": state.digits,
            "dnd": state.dnd,
            "muted": state.muted,
            "mwi": {
                "waiting": state.message_waiting,
                "new": state.new_messages,
                "old": sum(m.old for m in state.mwi.values()),
            },
            "history": [record_summary(r) for r in state.history],
            "volume": {target.value: level for target, level in state.volume.items()},
            "blf": blf_summary(state.config, state.watched),
            "messages": {"count": len(state.messages), "unread": unread(state.messages)},
        }

    # --- event handlers ------------------------------------------------------------------------

    def _on_hook(self, ev: HookChanged, out: list[Command]) -> None:
        if ev.offhook == self.state.handset_up:
            return
        self.state.handset_up = ev.offhook
        if self.state.handsfree:
            if ev.offhook:
                self.state.handsfree = False  # lifting the handset takes the call off the speaker
                log.info("audio path changed", extra=kv(path="handset"))
            return  # the handset going down does not end a hands-free call
        self._engage(ev.offhook, out)

    def _on_speaker_key(self, out: list[Command]) -> None:
        if self.state.handsfree:
            self.state.handsfree = False
            if self.state.handset_up:
                log.info("audio path changed", extra=kv(path="handset"))
            else:
                self._engage(False, out)  # hands-free hang up
            return
        self.state.handsfree = True
        log.info("audio path changed", extra=kv(path="speaker"))
        if not self.state.hook_off:
            self._engage(True, out)  # like lifting the handset, hands-free

    def _engage(self, offhook: bool, out: list[Command]) -> None:
        """The audio path (handset or speaker) goes into use or out of it: off-hook or on-hook."""
        if offhook == self.state.hook_off:
            return
        self.state.hook_off = offhook
        if offhook:
            if self.state.alerting is not None and self.state.active is None:
                self._answer(self.state.alerting, out)
            elif self.state.active is None and self.state.pending is None and not self.state.calls:
                self._begin_dialing(out, tone=True)
            return
        # On-hook: everything the handset (or the speaker) was doing ends.
        self.state.handsfree = False
        out.append(StopTone())
        for name in (T_OFFHOOK, T_INTERDIGIT, T_HOWLER):
            self._cancel_timer(name, out)
        self._abandon_pending(out)
        for call in list(self.state.calls.values()):
            if call.id != self.state.alerting:
                out.append(Hangup(call.id))
                self._finish_local(call, out)
        self.state.active = None
        self.state.conference.clear()
        self.state.transfer_target = None
        self.state.digits = ""
        if self.state.alerting is not None:
            # A waiting call that was never picked up now rings like any incoming call.
            out += [PlayTone(Tone.RING), SetRinger(True)]
            self.state.mode = Mode.CALLS
        else:
            self.state.mode = Mode.IDLE
        self.state.line = None  # back to the first line for the next call
        self._reset_mute(out)

    def _on_key(self, ev: KeyPressed, out: list[Command]) -> None:
        key = ev.key
        if key.startswith("softkey"):
            # Softkeys do what their label on the screen says.
            index = int(key.removeprefix("softkey")) - 1
            labels = self.state.screen.softkeys
            label = labels[index] if 0 <= index < len(labels) else ""
            key = SOFTKEY_ACTIONS.get(label, "")
            if not key:
                return
        if key == "speaker":
            self._on_speaker_key(out)
            return
        if key in ("vol_up", "vol_down"):
            self._change_volume(key == "vol_up", out)
            return
        if self.state.volume_bar is not None:
            self.state.volume_bar = None  # any other key: the bar gives way at once
            self._cancel_timer(T_VOLUME, out)
        if key == "dnd":
            self.state.dnd = not self.state.dnd
            log.info("dnd changed", extra=kv(dnd=self.state.dnd))
            return
        blf_index = key_index(key)
        if blf_index is not None:
            blf_keys.press(self, blf_index, out)
            return
        if key == "messages" and self.state.mode in (Mode.IDLE, Mode.DIALING):
            texts.open_list(self)
            return
        if key in ("line1", "line2") and self.state.mode in (Mode.IDLE, Mode.DIALING):
            index = int(key[-1]) - 1
            accounts = self.state.config.accounts
            if index < len(accounts) and accounts[index].enabled:
                self.state.line = index
            return
        if self.state.mode in (Mode.IDLE, Mode.DIALING) and key == "menu":
            self.state.menu = Menu(0, False, self.state.mode)
            self.state.mode = Mode.MENU
            return
        if self.state.mode in (Mode.IDLE, Mode.DIALING) and key in ("history", "phonebook"):
            which = BrowseList(key)
            self.state.browse = Browse(which, 0, self.state.mode)
            if which is BrowseList.HISTORY:
                self.state.unseen_missed = 0
            self.state.mode = Mode.BROWSE
            return
        if (
            self.state.mode in (Mode.ENDED, Mode.HOWLER)
            and self.state.held_calls
            and key in ("hold", "cancel")
        ):
            # A consultation call that failed: back to the caller waiting on hold.
            out.append(StopTone())
            self._cancel_timer(T_HOWLER, out)
            self.state.mode = Mode.CALLS
            self._resume(self.state.held_calls[-1], out)
            return
        handler = self._key_handlers.get(self.state.mode)
        if handler is not None:
            handler(self, key, out)

    def _key_idle(self, key: str, out: list[Command]) -> None:
        if key == "ok" and trust.show_if_waiting(self):
            return  # a discovered server still waits for the admin's answer
        if key == "redial" and self.state.last_dialled:
            self._place_call(self.state.last_dialled, out)
        elif key == "voicemail":
            self._dial_voicemail(out)

    def _key_dialing(self, key: str, out: list[Command]) -> None:
        if key == "#":
            if self._digit_map.decide(self.state.digits + "#") is not Decision.REJECT:
                self._dial_digit("#", out)
            elif self.state.digits:
                self._send_dialled(out)
        elif key in DIGIT_KEYS:
            self._dial_digit(key, out)
        elif key == "ok" and self.state.digits:
            self._send_dialled(out)
        elif key in ("cancel", "left") and self.state.digits:
            self.state.digits = self.state.digits[:-1]
            self._cancel_timer(T_INTERDIGIT, out)
            if self.state.digits:
                self._start_timer(
                    T_INTERDIGIT, self.state.config.dialplan.interdigit_timeout_s, out
                )
        elif key in ("cancel", "hold") and not self.state.digits and self.state.held_calls:
            self.state.mode = Mode.CALLS
            self._resume(self.state.held_calls[-1], out)
        elif key == "redial" and not self.state.digits and self.state.last_dialled:
            self._place_call(self.state.last_dialled, out)
        elif key == "voicemail" and not self.state.digits:
            self._dial_voicemail(out)

    def _key_browse(self, key: str, out: list[Command]) -> None:
        browse = self.state.browse
        index, back = browse.index, browse.back
        entries = browse_entries(browse.which, self.state.history, self.state.config)
        if key in ("up", "down") and entries:
            step = -1 if key == "up" else 1
            self.state.browse = replace(browse, index=(index + step) % len(entries))
        elif key == "ok" and entries:
            self.state.mode = back
            self._place_call(entries[index][1], out)
        elif key == compose.TEXT and entries:
            self._text_entry(browse.which, index)
        elif key == "right" and browse.which is BrowseList.PHONEBOOK:
            if directory.configured(self.state):
                directory.open_search(self, Mode.BROWSE, out)  # back to the contacts after
        elif key in ("cancel", "history", "phonebook", "left"):
            self.state.mode = (
                back if (back is not Mode.DIALING or self.state.hook_off) else Mode.IDLE
            )

    def _text_entry(self, which: BrowseList, index: int) -> None:
        """The "Text" softkey on a contact or a history entry: write to its number."""
        state = self.state
        if which is BrowseList.PHONEBOOK:
            entry = state.config.phonebook[index]
            account, to, name = state.next_line, entry.number, entry.name
        else:
            record = state.history[index]
            accounts = state.config.accounts
            domain = accounts[record.account].domain if record.account < len(accounts) else ""
            account, name = record.account, record.remote_name
            to = text_target(record.remote_uri, domain)
        compose.open_draft(self, account, to, name, Mode.BROWSE)

    def _key_menu(self, key: str, out: list[Command]) -> None:
        menu = self.state.menu
        index, back = menu.index, menu.back
        items = status_menu_items(self.state)
        if menu.opened:
            if key in ("cancel", "ok", "left"):
                self.state.menu = replace(menu, opened=False)
            elif key == "menu":
                self.state.mode = (
                    back if (back is not Mode.DIALING or self.state.hook_off) else Mode.IDLE
                )
            return
        if key in ("up", "down"):
            step = -1 if key == "up" else 1
            self.state.menu = Menu((index + step) % len(items), False, back)
        elif key in ("ok", "right") and items[index][0] == settings.SETTINGS_ROW:
            settings.open_menu(self, back, out)
        elif key in ("ok", "right"):
            self.state.menu = replace(menu, opened=True)
        elif key in ("cancel", "menu", "left"):
            self.state.mode = (
                back if (back is not Mode.DIALING or self.state.hook_off) else Mode.IDLE
            )

    def _key_calls(self, key: str, out: list[Command]) -> None:
        active = self.state.calls.get(self.state.active) if self.state.active is not None else None
        alerting = self.state.alerting
        if active is None:
            held = self.state.held_calls
            if self.state.pending is not None:
                if key == "cancel":
                    self._abandon_pending(out)
                    self._after_active_gone(out)
            elif alerting is not None:
                if key == "ok" or (key == "hold" and held):
                    self._answer(alerting, out)
                elif key == "cancel":
                    self._reject(alerting, BUSY_STATUS if held else DECLINE_STATUS, out)
            elif held and key in ("hold", "ok"):
                self._resume(held[-1], out)
            elif held and key == "transfer":
                self._enter_transfer(held[-1], out)
            elif held and key in DIGIT_KEYS:
                # Consultation call: dial a second number while the first waits on hold.
                self.state.mode = Mode.DIALING
                self.state.digits = ""
                self._dial_digit(key, out)
            return
        if key in DIGIT_KEYS:
            out.append(SendDtmf(active.id, key))
        elif key in ("hold", "ok") and alerting is not None:
            self._put_on_hold(active, out)
            self._answer(alerting, out)
        elif key == "cancel" and alerting is not None:
            self._reject(alerting, BUSY_STATUS, out)
        elif key == "hold":
            held = self.state.held_calls
            if active.id in self.state.conference:
                return  # a conference is ended by hanging up, not held
            self._put_on_hold(active, out)
            if held:
                self._resume(held[-1], out)
        elif key == "mute":
            self.state.muted = not self.state.muted
            out.append(SetMute(self.state.muted))
        elif key == "transfer":
            held = self.state.held_calls
            if held:
                # Attended: the held party is connected to the one we are talking to.
                out.append(AttendedTransfer(held[-1].id, active.id))
                held[-1].transferred = active.transferred = True
                held[-1].transfer_to = active.id
                self.state.notice = NO_NOTICE
            else:
                self._enter_transfer(active, out)
        elif key == "conference":
            held = self.state.held_calls
            if held:
                other = held[-1]
                out.append(Unhold(other.id))
                other.held = False
                self.state.conference = {other.id, active.id}
                out.append(Conference((other.id, active.id)))
        elif key == "cancel":
            # "End": hang up without putting the handset down (or a hands-free call).
            ending = [self.state.calls[i] for i in sorted(self.state.conference)] or [active]
            for call in ending:
                out.append(Hangup(call.id))
                self._finish_local(call, out)
            self.state.conference.clear()
            self.state.active = None
            self._after_active_gone(out)

    def _key_transfer(self, key: str, out: list[Command]) -> None:
        target = (
            None
            if self.state.transfer_target is None
            else self.state.calls.get(self.state.transfer_target)
        )
        if target is None:
            self.state.mode = Mode.CALLS
            return
        if key in DIGIT_KEYS - {"#"}:
            self.state.digits += key
        elif key in ("#", "ok", "transfer") and self.state.digits:
            out.append(Transfer(target.id, self.state.digits))
            target.transferred = True
            self.state.notice = Notice("Transferring", self.state.digits)
            self.state.digits = ""
            self.state.transfer_target = None
            self.state.mode = Mode.CALLS
        elif key in ("left",) and self.state.digits:
            self.state.digits = self.state.digits[:-1]
        elif key in ("cancel", "hold"):
            self.state.digits = ""
            self.state.transfer_target = None
            self.state.mode = Mode.CALLS
            self._resume(target, out)

    # The keys of each mode (ended and howler take only the ones handled above).
    _key_handlers: dict[Mode, Callable[[Phone, str, list[Command]], None]] = {
        Mode.IDLE: _key_idle,
        Mode.DIALING: _key_dialing,
        Mode.BROWSE: _key_browse,
        Mode.MENU: _key_menu,
        Mode.CALLS: _key_calls,
        Mode.TRANSFER: _key_transfer,
        Mode.DIRECTORY: directory.key,
        Mode.SETTINGS: settings.key,
        Mode.TRUST: trust.key,
        Mode.MESSAGES: texts.key,
        Mode.COMPOSE: compose.key,
    }

    def _on_incoming(self, ev: CallIncoming, out: list[Command]) -> None:
        feats = self.state.config.features
        if ev.call_id in self.state.calls:
            log.warning("incoming call reuses a live call id", extra=kv(call_id=ev.call_id))
            return
        if self.state.ending.pop(ev.call_id, None) is not None:
            # pjsua reuses a slot only after the call in it is gone: that end report was lost.
            log.info("call id reused before its end was reported", extra=kv(call_id=ev.call_id))
        call = Call(
            id=ev.call_id,
            direction="incoming",
            account=ev.account,
            number=number_from_uri(ev.remote_uri),
            remote_uri=ev.remote_uri,
            remote_name=ev.remote_name,
            state=CallState.INCOMING,
            start=self.state.now,
            sip_call_id=ev.sip_call_id,
        )
        self.state.calls[call.id] = call
        log.info("incoming call", extra=kv(call_id=call.id, remote=ev.remote_uri))
        action_urls.on_call(self, "incoming", call, out)
        if feats.forward_always:
            self._forward(call, feats.forward_always, "missed", out)
            return
        if self.state.dnd:
            self._reject(call.id, DND_STATUS, out)
            return
        in_call = bool(self.state.calls.keys() - {call.id}) or self.state.pending is not None
        # Off-hook without a call (dialling, listening to a tone) the line is busy too.
        can_wait = in_call and feats.call_waiting and self.state.alerting is None
        if (in_call or self.state.hook_off) and not can_wait:
            if feats.forward_busy:
                self._forward(call, feats.forward_busy, "missed", out)
            else:
                self._reject(call.id, BUSY_STATUS, out)
            return
        self.state.alerting = call.id
        directory.lookup_caller(self, call, out)
        if feats.auto_answer and not in_call:
            self.state.mode = Mode.CALLS
            self._answer(call.id, out)
            return
        if in_call:
            out.append(PlayTone(Tone.CALL_WAITING))
        else:
            self.state.mode = Mode.CALLS
            out += [PlayTone(Tone.RING), SetRinger(True)]
        # Only now, with the call going to ring or wait, does the caller hear 180 Ringing.
        out.append(Ringing(call.id))
        if feats.forward_no_answer:
            self._start_timer(T_NO_ANSWER + str(call.id), feats.forward_no_answer_s, out)
        self._start_timer(T_RING + str(call.id), feats.ring_timeout_s, out)

    def _on_call_state(self, ev: CallStateChanged, out: list[Command]) -> None:
        call = self.state.calls.get(ev.call_id)
        if call is None and ev.call_id in self.state.ending:
            # A call we ended (and recorded): its last reports are expected.
            if ev.state is CallState.DISCONNECTED:
                del self.state.ending[ev.call_id]
                log.info("call ended here", extra=kv(call_id=ev.call_id, status=ev.status_code))
            return
        placed_by_us = ev.replaces < 0 and ev.direction != "incoming"
        if call is None and placed_by_us and self.state.pending is None and self.state.orphans:
            # A call we gave up on before the engine told us its id: end it now. It was
            # recorded then; its further reports are expected until its DISCONNECTED.
            orphan = self.state.orphans.pop(0)
            if ev.state is not CallState.DISCONNECTED and ev.call_id >= 0:
                out.append(Hangup(ev.call_id))
                orphan.id = ev.call_id
                self._ended_here(orphan)
            return
        if call is None and placed_by_us and self.state.pending is not None:
            call, self.state.pending = self.state.pending, None
            call.id = ev.call_id
            self.state.calls[call.id] = call
            self.state.active = call.id
        if call is None:
            if ev.call_id < 0:
                log.warning("state for no call", extra=kv(state=ev.state, reason=ev.reason))
                return
            call = self._adopt(ev, out)
        previous, call.state = call.state, ev.state
        if ev.remote_uri:
            call.remote_uri = ev.remote_uri
        if ev.remote_name:
            call.remote_name = ev.remote_name
        if ev.sip_call_id:
            call.sip_call_id = ev.sip_call_id
        if ev.codec:
            call.codec = ev.codec
        if ev.state is CallState.EARLY and call.direction == "outgoing":
            if call.id == self.state.active and previous is not CallState.EARLY:
                out.append(PlayTone(Tone.RINGBACK))
        elif ev.state is CallState.CONFIRMED:
            if call.answer is None:
                call.answer = self.state.now
                action_urls.on_call(self, "answered", call, out)
            if call.takes_over is not None and call.takes_over == self.state.active:
                self._take_over(call, out)
            if call.id == self.state.active:
                out.append(StopTone())
        elif ev.state is CallState.DISCONNECTED:
            self._on_disconnected(call, ev, out)

    def _on_disconnected(self, call: Call, ev: CallStateChanged, out: list[Command]) -> None:
        del self.state.calls[call.id]
        self._cancel_timer(T_XFER + str(call.id), out)
        if call.id in self.state.conference:
            self.state.conference.discard(call.id)
            if call.id == self.state.active:
                # The remaining party stays connected to the handset.
                self.state.active = next(iter(self.state.conference))
            if len(self.state.conference) < 2:
                self.state.conference.clear()
        if call.id == self.state.transfer_target:
            self.state.transfer_target = None
            self.state.digits = ""
            self.state.mode = Mode.CALLS
        if call.direction == "incoming":
            answered = call.answer is not None
            disposition = "answered" if answered else "missed"
            self._record(call, disposition, ev.status_code, out, ev.reason)
            if call.id == self.state.alerting:
                self._stop_alerting(out)
                if self.state.hook_off and not self.state.calls and self.state.pending is None:
                    self._begin_dialing(out, tone=True)
                return
        outcome = ended_outcome(call, ev.status_code, ev.reason)
        if call.direction == "outgoing":
            self._record(call, outcome.disposition, ev.status_code, out, ev.reason)
        log.info(
            "call ended",
            extra=kv(call_id=call.id, status=ev.status_code, disposition=outcome.disposition),
        )
        successor = next((c for c in self.state.calls.values() if c.takes_over == call.id), None)
        if call.id == self.state.active and successor is not None:
            self._take_over(successor, out)  # the transferor hung up before the target answered
        elif call.id == self.state.active:
            self.state.active = None
            self._after_active_gone(out, outcome)
        elif not self.state.calls and self.state.pending is None and self.state.alerting is None:
            self._after_active_gone(out, outcome)  # e.g. a held call we transferred

    def _adopt(self, ev: CallStateChanged, out: list[Command]) -> Call:
        """A call the Phone did not start: pjsua followed a REFER (we are being transferred), an
        INVITE with Replaces took over one of ours, or it is a call we have not heard of. It is
        shown, ended by the handset and recorded like any other."""
        direction = ev.direction or "outgoing"
        call = Call(
            id=ev.call_id,
            direction=direction,
            account=ev.account,
            number=number_from_uri(ev.remote_uri),
            remote_uri=ev.remote_uri,
            remote_name=ev.remote_name or self._phonebook_name(number_from_uri(ev.remote_uri)),
            state=CallState.CALLING if direction == "outgoing" else CallState.INCOMING,
            start=self.state.now,
        )
        self.state.calls[ev.call_id] = call
        log.info(
            "call adopted",
            extra=kv(
                call_id=ev.call_id, direction=direction, replaces=ev.replaces, remote=ev.remote_uri
            ),
        )
        replaced = self.state.calls.get(ev.replaces) if ev.replaces >= 0 else None
        idle_handset = (
            self.state.active is None and self.state.alerting is None and self.state.pending is None
        )
        if replaced is not None and replaced.id == self.state.active:
            # It takes the handset over from the call it came from once it is answered (or that
            # call ends first); if it fails, the old call is still there.
            call.takes_over = replaced.id
        elif idle_handset:
            self._take_over(call, out)
        elif ev.state is not CallState.DISCONNECTED:
            self._put_on_hold(call, out)  # the handset is busy with another call
        return call

    def _take_over(self, call: Call, out: list[Command]) -> None:
        """An adopted call becomes the one the handset talks to."""
        call.takes_over = None
        self.state.active = call.id
        self.state.notice = NO_NOTICE
        if self.state.mode not in (Mode.CALLS, Mode.BROWSE, Mode.MENU):
            out.append(StopTone())
            for name in (T_OFFHOOK, T_INTERDIGIT, T_HOWLER):
                self._cancel_timer(name, out)
            self.state.digits = ""
            self.state.mode = Mode.CALLS
        if call.state is CallState.EARLY and call.direction == "outgoing":
            out.append(PlayTone(Tone.RINGBACK))

    def _on_transfer_status(self, ev: TransferStatus, out: list[Command]) -> None:
        call = self.state.calls.get(ev.call_id)
        if call is None or not call.transferred:
            return
        timer = T_XFER + str(call.id)
        if not ev.final:
            if ev.status_code == 100 and timer not in self.state.timers:
                # REFER accepted: the far end now calls the target; our leg ends on its final
                # NOTIFY, or on this timer if that never comes (or cannot be parsed).
                self._start_timer(timer, TRANSFER_GIVE_UP_S, out)
            return
        self._cancel_timer(timer, out)
        if 200 <= ev.status_code < 300:
            return  # the engine ends the leg (and the consultation call) on success
        log.info(
            "transfer failed", extra=kv(call_id=call.id, status=ev.status_code, reason=ev.reason)
        )
        partner = self.state.calls.get(call.transfer_to) if call.transfer_to is not None else None
        for leg in (call, partner):
            if leg is not None:
                leg.transferred = False
                leg.transfer_to = None
        self.state.notice = Notice("Transfer failed", f"{ev.status_code} {ev.reason}".strip())
        if self.state.mode is Mode.TRANSFER:
            self.state.digits = ""
            self.state.transfer_target = None
        self.state.mode = (
            Mode.CALLS if self.state.mode in (Mode.TRANSFER, Mode.CALLS) else self.state.mode
        )

    def _transfer_gave_up(self, call_id: int, out: list[Command]) -> None:
        """No final NOTIFY after the REFER was accepted: end our leg(s) as if it had come."""
        call = self.state.calls.get(call_id)
        if call is None or not call.transferred:
            return
        log.info("transfer final notify missing: ending our leg", extra=kv(call_id=call_id))
        partner = self.state.calls.get(call.transfer_to) if call.transfer_to is not None else None
        legs = [leg for leg in (call, partner) if leg is not None]
        was_active = self.state.active in {leg.id for leg in legs}
        for leg in legs:
            out.append(Hangup(leg.id))
            self._finish_local(leg, out)
            self.state.conference.discard(leg.id)
        if was_active:
            self.state.active = None
        if was_active or (
            not self.state.calls and self.state.pending is None and self.state.alerting is None
        ):
            self._after_active_gone(out, ended_outcome(call, 0, ""))

    def _ring_timeout(self, call_id: int, out: list[Command]) -> None:
        if call_id == self.state.alerting and call_id in self.state.calls:
            log.info("ring timeout", extra=kv(call_id=call_id))
            self._reject(call_id, RING_TIMEOUT_STATUS, out, disposition="missed")

    def _on_media(self, ev: CallMediaChanged, out: list[Command]) -> None:
        call = self.state.calls.get(ev.call_id)
        if call is not None:
            call.held_remotely = ev.held_remotely

    def _on_quality(self, ev: CallQuality, out: list[Command]) -> None:
        call = self.state.calls.get(ev.call_id)
        if call is not None:
            call.mos = ev.mos
            call.codec = ev.codec or call.codec

    def _on_registration(self, ev: RegistrationChanged, out: list[Command]) -> None:
        was = self.state.registration_of(ev.account).registered
        self.state.registration[ev.account] = LineRegistration(
            ev.registered, ev.status_code, ev.reason
        )
        if ev.registered and not was:
            action_urls.on_registered(self, ev.account, ev.status_code, out)

    def _on_device_info(self, ev: DeviceInfo, out: list[Command]) -> None:
        self.state.device = ev

    def _on_mwi(self, ev: MessageWaiting, out: list[Command]) -> None:
        self.state.mwi[ev.account] = Mailbox(ev.waiting, ev.new, ev.old)

    def _on_timer(self, ev: TimerFired, out: list[Command]) -> None:
        if ev.name not in self.state.timers:
            return  # cancelled (or restarted) while the callback was in flight
        self.state.timers.discard(ev.name)
        kind, _, call_id = ev.name.partition(":")  # "ring_timeout:7" -> "ring_timeout", "7"
        handler = self._timer_handlers.get(kind)
        if handler is not None:
            handler(self, call_id, out)

    def _offhook_timeout(self, _: str, out: list[Command]) -> None:
        if self.state.mode is Mode.DIALING and not self.state.digits:
            self._howler(out)

    def _interdigit_timeout(self, _: str, out: list[Command]) -> None:
        if self.state.mode is Mode.DIALING and self.state.digits:
            if self._digit_map.decide(self.state.digits, timed_out=True) is Decision.SEND:
                self._send_dialled(out)
            else:
                self._invalid_number(out)

    def _howler_timeout(self, _: str, out: list[Command]) -> None:
        if self.state.mode is Mode.ENDED and self.state.hook_off:
            self._howler(out)

    def _volume_bar_timeout(self, _: str, out: list[Command]) -> None:
        self.state.volume_bar = None

    def _no_answer_timeout(self, call_id: str, out: list[Command]) -> None:
        alerting = self.state.alerting
        if alerting == int(call_id) and alerting in self.state.calls:
            target = self.state.config.features.forward_no_answer
            self._forward(self.state.calls[alerting], target, "missed", out)

    def _ring_timeout_fired(self, call_id: str, out: list[Command]) -> None:
        self._ring_timeout(int(call_id), out)

    def _transfer_timeout(self, call_id: str, out: list[Command]) -> None:
        self._transfer_gave_up(int(call_id), out)

    # One handler per timer kind (the name before ":"; after it, the call id if any).
    _timer_handlers: dict[str, Callable[[Phone, str, list[Command]], None]] = {
        T_OFFHOOK: _offhook_timeout,
        T_INTERDIGIT: _interdigit_timeout,
        T_HOWLER: _howler_timeout,
        T_VOLUME: _volume_bar_timeout,
        T_NO_ANSWER.rstrip(":"): _no_answer_timeout,
        T_RING.rstrip(":"): _ring_timeout_fired,
        T_XFER.rstrip(":"): _transfer_timeout,
        directory.T_TAP: directory.tap_timeout,
        directory.T_ANSWER: directory.answer_timeout,
        settings.T_LOCK: settings.lock_timeout,
        compose.T_TAP: compose.tap_timeout,
    }

    def _on_tick(self, ev: ClockTick, out: list[Command]) -> None:
        pass  # the refresh after every event redraws the clock and call timers

    def _on_config(self, ev: ConfigApplied, out: list[Command]) -> None:
        new = ev.config
        if not isinstance(new, PhoneConfig):
            raise TypeError(f"ConfigApplied needs a PhoneConfig, got {type(new).__name__}")
        out += [ReconfigureEngine(new), SetTonePlan(new.audio.tone_plan)]
        if self.state.apply_request and self.state.apply_request != ev.request:
            out.append(ConfigOutcome(self.state.apply_request, "superseded by a newer config"))
        self.state.apply_request = ev.request
        self._digit_map = DigitMap(new.dialplan.digit_map)
        if new.features.dnd != self.state.config.features.dnd:
            self.state.dnd = new.features.dnd  # the administrator changed it: that wins
        # Likewise the volumes: a changed config value replaces the user's level.
        for target, old_level, new_level in (
            (
                VolumeTarget.SPEAKER,
                self.state.config.audio.speaker_volume,
                new.audio.speaker_volume,
            ),
            (VolumeTarget.RING, self.state.config.audio.ring_volume, new.audio.ring_volume),
        ):
            if new_level != old_level and new_level != self.state.volume[target]:
                self.state.volume[target] = new_level
                out.append(SetVolume(target.value, new_level))
        self._reset_changed_lines(self.state.config, new)
        old_config = self.state.config
        self.state.config = new
        blf_keys.config_changed(self, old_config, out)
        self.state.tz = _zone(new.device.timezone)
        log.info("config applied", extra=kv(accounts=len(new.accounts)))

    def _on_engine_status(self, ev: SipEngineStatus, out: list[Command]) -> None:
        self.state.engine = ev

    def _judge_apply(self, out: list[Command]) -> None:
        """Report the pending apply's outcome once there is one (after any event may decide it:
        a registration, the engine's status, the apply itself when nothing changed)."""
        outcome = apply_outcome(self.state)
        if outcome == APPLY_PENDING:
            return
        out.append(ConfigOutcome(self.state.apply_request, outcome))
        log.info("config outcome", extra=kv(request=self.state.apply_request, error=outcome))
        self.state.apply_request = 0

    def _reset_changed_lines(self, old: PhoneConfig, new: PhoneConfig) -> None:
        """A line whose account settings changed (even only its password) must register afresh:
        its old state says nothing about the new settings (provisioning judges an apply by it)."""
        registration: dict[int, LineRegistration] = {}
        for i, account in enumerate(new.accounts):
            same = (
                i < len(old.accounts)
                and old.accounts[i] == account
                and old.sip.bind_address == new.sip.bind_address
            )
            if same:
                registration[i] = self.state.registration_of(i)
            else:
                registration[i] = NO_REGISTRATION
                self.state.mwi.pop(i, None)
        for i in range(len(new.accounts), len(old.accounts)):
            self.state.mwi.pop(i, None)
        self.state.registration = registration

    # One handler per event type (each takes its own event type, hence Any here).
    _handlers: dict[type[Any], Callable[[Phone, Any, list[Command]], None]] = {
        HookChanged: _on_hook,
        KeyPressed: _on_key,
        CallIncoming: _on_incoming,
        CallStateChanged: _on_call_state,
        CallMediaChanged: _on_media,
        CallQuality: _on_quality,
        TransferStatus: _on_transfer_status,
        RegistrationChanged: _on_registration,
        MessageWaiting: _on_mwi,
        TimerFired: _on_timer,
        ClockTick: _on_tick,
        ConfigApplied: _on_config,
        SipEngineStatus: _on_engine_status,
        DeviceInfo: _on_device_info,
        DirectoryResults: directory.on_results,
        CallerNameFound: directory.on_caller_name,
        NetworkStatus: settings.on_network_status,
        NetworkApplied: settings.on_network_applied,
        ProvisioningStatus: settings.on_provisioning_status,
        FactoryResetDone: settings.on_reset_done,
        ServerDiscovered: trust.on_discovered,
        ExtensionState: blf_keys.on_state,
        MessageReceived: texts.on_message,
        MessageStatus: compose.on_status,
    }

    # --- actions -------------------------------------------------------------------------------

    def _begin_dialing(self, out: list[Command], tone: bool) -> None:
        self.state.mode = Mode.DIALING
        self.state.digits = ""
        if tone:
            out.append(PlayTone(Tone.STUTTER if self.state.message_waiting else Tone.DIAL))
        self._start_timer(T_OFFHOOK, self.state.config.dialplan.offhook_timeout_s, out)

    def _dial_digit(self, key: str, out: list[Command]) -> None:
        if not self.state.digits:
            out.append(StopTone())
            self._cancel_timer(T_OFFHOOK, out)
        self.state.digits += key
        if self.state.digits in self.state.config.dialplan.emergency_numbers:
            self._place_call(self.state.digits, out)  # at once, whatever the digit map says
            return
        decision = self._digit_map.decide(self.state.digits)
        if decision is Decision.SEND:
            self._send_dialled(out)
        elif decision is Decision.WAIT:
            self._start_timer(T_INTERDIGIT, self.state.config.dialplan.interdigit_timeout_s, out)
        else:
            self._invalid_number(out)

    def _send_dialled(self, out: list[Command]) -> None:
        number = self.state.digits
        for entry in self.state.config.phonebook:
            if entry.speed_dial and entry.speed_dial == number:
                number = entry.number
                break
        self._place_call(number, out)

    def _place_call(
        self, number: str, out: list[Command], replaces: str = "", name: str = ""
    ) -> None:
        """Call ``number``; ``replaces`` (a BLF pickup) takes over that ringing dialog."""
        self._cancel_timer(T_INTERDIGIT, out)
        self._cancel_timer(T_OFFHOOK, out)
        out.append(StopTone())
        if self.state.active is not None:
            self._put_on_hold(self.state.calls[self.state.active], out)
        account = self.state.next_line
        out.append(MakeCall(account, number, replaces))
        log.info("placing call", extra=kv(account=account, target=number, pickup=bool(replaces)))
        self.state.pending = Call(
            id=UNPLACED,
            direction="outgoing",
            account=account,
            number=number_from_uri(number),
            remote_uri=number,
            remote_name=name or self._phonebook_name(number),
            state=CallState.CALLING,
            start=self.state.now,
        )
        if not replaces:  # redial calls the number again, not the pickup
            self.state.last_dialled = number
        self.state.digits = ""
        self.state.mode = Mode.CALLS

    def _change_volume(self, up: bool, out: list[Command]) -> None:
        """Speaker volume while the audio path is in use (a call, off-hook), else the ringer's."""
        ringing_only = (
            self.state.alerting is not None
            and self.state.active is None
            and not self.state.hook_off
        )
        in_use = (
            self.state.hook_off or self.state.active is not None or self.state.pending is not None
        )
        target = VolumeTarget.SPEAKER if in_use and not ringing_only else VolumeTarget.RING
        level = self.state.volume[target] + (VOLUME_STEP if up else -VOLUME_STEP)
        level = max(0, min(100, level))
        if level != self.state.volume[target]:
            self.state.volume[target] = level
            out.append(SetVolume(target.value, level))
            log.info("volume changed", extra=kv(target=target, level=level))
        self.state.volume_bar = target
        self._start_timer(T_VOLUME, VOLUME_BAR_S, out)

    def _dial_voicemail(self, out: list[Command]) -> None:
        accounts = self.state.config.accounts
        index = self.state.next_line
        number = accounts[index].voicemail if index < len(accounts) else ""
        if number:
            self._place_call(number, out)

    def _answer(self, call_id: int, out: list[Command]) -> None:
        out += [StopTone(), Answer(call_id)]
        if not self.state.hook_off or self.state.active is None:
            out.append(SetRinger(False))
        self._cancel_timer(T_NO_ANSWER + str(call_id), out)
        self._cancel_timer(T_RING + str(call_id), out)
        self.state.alerting = None
        self.state.active = call_id
        self.state.mode = Mode.CALLS

    def _reject(
        self, call_id: int, status: int, out: list[Command], disposition: str = "rejected"
    ) -> None:
        out.append(Reject(call_id, status))
        call = self.state.calls[call_id]
        self._ended_here(call)
        self._record(call, disposition, status, out)
        if call_id == self.state.alerting:
            self._stop_alerting(out)

    def _stop_alerting(self, out: list[Command]) -> None:
        """The unanswered call is gone: silence the ringer or the call-waiting beep."""
        self._cancel_timer(T_NO_ANSWER + str(self.state.alerting), out)
        self._cancel_timer(T_RING + str(self.state.alerting), out)
        self.state.alerting = None
        out.append(StopTone())
        nothing_else = (
            self.state.active is None and not self.state.held_calls and self.state.pending is None
        )
        if nothing_else or not self.state.hook_off:
            out.append(SetRinger(False))  # on-hook, only the alerting call can have rung it
        if nothing_else and not self.state.hook_off:
            self.state.mode = Mode.IDLE

    def _forward(self, call: Call, target: str, disposition: str, out: list[Command]) -> None:
        out.append(Redirect(call.id, target))
        call.forwarded_to = target
        was_alerting = call.id == self.state.alerting
        self._ended_here(call)
        self._record(call, disposition, 302, out)
        if was_alerting:
            self._stop_alerting(out)

    def _put_on_hold(self, call: Call, out: list[Command]) -> None:
        out.append(Hold(call.id))
        call.held = True
        if self.state.active == call.id:
            self.state.active = None

    def _resume(self, call: Call, out: list[Command]) -> None:
        self.state.notice = NO_NOTICE
        out.append(Unhold(call.id))
        call.held = False
        self.state.active = call.id

    def _enter_transfer(self, call: Call, out: list[Command]) -> None:
        if not call.held:
            self._put_on_hold(call, out)
        self.state.transfer_target = call.id
        self.state.digits = ""
        self.state.mode = Mode.TRANSFER

    def _after_active_gone(self, out: list[Command], outcome: Outcome | None = None) -> None:
        """The handset's call is gone: fall back to what is left, or to an end screen."""
        if self.state.alerting is not None:
            self.state.mode = Mode.CALLS  # the waiting call keeps beeping until answered
            return
        held = bool(self.state.held_calls)
        if not held:
            self._reset_mute(out)
        if not held and self._handsfree_only():
            self._engage(False, out)  # a hands-free call that ends hangs up the speaker too
            return
        if not self.state.hook_off:
            self.state.mode = Mode.CALLS if held else Mode.IDLE
            out.append(StopTone())
            return
        if outcome is None:  # ended by the user with the handset up: ready for the next call
            if held:
                self.state.mode = Mode.CALLS
            else:
                self._begin_dialing(out, tone=True)
            return
        # Tell the user why (busy, not found...); with a call on hold, hold/cancel resumes it.
        self.state.mode = Mode.ENDED
        self.state.notice = Notice(outcome.title, outcome.detail)
        out.append(PlayTone(outcome.tone) if outcome.tone is not None else StopTone())
        if not held:
            self._start_timer(T_HOWLER, self.state.config.dialplan.offhook_timeout_s, out)

    def _invalid_number(self, out: list[Command]) -> None:
        self._cancel_timer(T_INTERDIGIT, out)
        self.state.mode = Mode.ENDED
        self.state.notice = Notice("Invalid number", self.state.digits)
        self.state.digits = ""
        out.append(PlayTone(Tone.CONGESTION))
        self._start_timer(T_HOWLER, self.state.config.dialplan.offhook_timeout_s, out)

    def _howler(self, out: list[Command]) -> None:
        if self._handsfree_only():
            self._engage(False, out)  # no handset left off the cradle: just hang up
            return
        self.state.mode = Mode.HOWLER
        self.state.notice = Notice("Please hang up", "")
        out.append(PlayTone(Tone.HOWLER))

    def _reset_mute(self, out: list[Command]) -> None:
        if self.state.muted:
            self.state.muted = False
            out.append(SetMute(False))

    def _start_timer(self, name: str, seconds: float, out: list[Command]) -> None:
        self.state.timers.add(name)
        out.append(StartTimer(name, seconds))

    def _cancel_timer(self, name: str, out: list[Command]) -> None:
        if name in self.state.timers:
            self.state.timers.discard(name)
            out.append(CancelTimer(name))

    def _abandon_pending(self, out: list[Command]) -> None:
        if self.state.pending is not None:
            self._finish_local(self.state.pending, out)
            self.state.orphans.append(self.state.pending)
            self.state.pending = None

    def _finish_local(self, call: Call, out: list[Command]) -> None:
        """We hung up: record the call now with the status the hang-up gives it (pjsua's own:
        200 after a BYE, 487 for a CANCEL, 603 for an incoming call not answered)."""
        self._ended_here(call)
        if call.answer is not None:
            disposition, status = "answered", 200
        elif call.direction == "incoming":
            disposition, status = "missed", DECLINE_STATUS
        else:
            disposition, status = "no_answer", 487
        self._record(call, disposition, status, out)

    def _ended_here(self, call: Call) -> None:
        """We ended the call: it leaves the live calls, and its id is remembered until the engine
        reports it DISCONNECTED (so those last reports are expected, not unknown)."""
        if call.id == UNPLACED:
            return
        self.state.calls.pop(call.id, None)
        self.state.ending[call.id] = call
        while len(self.state.ending) > ENDING_KEPT:
            del self.state.ending[next(iter(self.state.ending))]

    def _record(
        self, call: Call, disposition: str, status: int, out: list[Command], reason: str = ""
    ) -> None:
        accounts = self.state.config.accounts
        acc = accounts[call.account] if call.account < len(accounts) else None
        record = CallRecord(
            id=call.uid or self._new_id(),
            direction=call.direction,
            account=call.account,
            local_uri=f"sip:{acc.user}@{acc.domain}" if acc else "",
            remote_uri=call.remote_uri,
            remote_name=call.remote_name,
            start=call.start,
            answer=call.answer,
            end=self.state.now,
            disposition=disposition,
            status_code=status,
            call_id=call.id,
            reason=reason or REASONS.get(status, ""),
            sip_call_id=call.sip_call_id,
        )
        head = self.state.history[0] if self.state.history else None
        if head is not None and same_missed_caller(head, record):
            # A caller refused again and again (an INVITE flood while busy): one entry, counted,
            # as the history file keeps it. Seen already? Then it counts as missed again.
            self.state.history[0] = merge_repeat(head, record)
            self.state.unseen_missed = max(self.state.unseen_missed, 1)
        else:
            self.state.history.insert(0, record)
            del self.state.history[HISTORY_SIZE:]
            if history_kind(record) == "missed":
                self.state.unseen_missed += 1
        out.append(RecordCall(record))
        call.uid = record.id
        missed = history_kind(record) == "missed"
        action_urls.on_call(self, "missed" if missed else "ended", call, out, status)

    # --- queries -------------------------------------------------------------------------------

    def _handsfree_only(self) -> bool:
        return self.state.handsfree and not self.state.handset_up

    def _audio_path(self) -> str:
        if not self.state.hook_off:
            return "none"
        return "speaker" if self.state.handsfree else "handset"

    def _phonebook_name(self, number: str) -> str:
        for entry in self.state.config.phonebook:
            if entry.number == number:
                return entry.name
        return ""

    # --- views ---------------------------------------------------------------------------------

    def _refresh(self, out: list[Command], force: bool = False) -> None:
        """Emit LED changes and a Render when what the user sees differs from before."""
        state = self.state
        leds = led_states(state)
        for name, led in leds.items():
            if force or state.leds.get(name) != led:
                out.append(SetLed(name, led))
        state.leds = leds
        screen = compose_screen(state)
        if force or screen != state.screen:
            state.screen = screen
            out.append(Render(screen))
