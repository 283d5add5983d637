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
from collections.abc import Callable, Iterable
from datetime import UTC, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.calls import (
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
from firmware.config import PhoneConfig
from firmware.dialplan import Decision, DigitMap
from firmware.events import (
    DIGIT_KEYS,
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
    DeviceInfo,
    Event,
    Hangup,
    Hold,
    HookChanged,
    KeyPressed,
    MakeCall,
    MessageWaiting,
    PlayTone,
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
    SetVolume,
    StartTimer,
    StopTone,
    TimerFired,
    Tone,
    Transfer,
    TransferStatus,
    Unhold,
)
from firmware.screens.lists import browse_entries, status_menu_items
from firmware.screens.views import PhoneView, compose_screen, led_states

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


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown timezone, using UTC timezone=%s", name)
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
        volumes: dict[str, int] | None = None,
    ) -> None:
        """``history``: calls kept from before a restart, oldest first (as a history file).
        ``volumes``: the user's last {"speaker", "ring"} levels (else the config's)."""
        self._config = config
        self._digit_map = DigitMap(config.dialplan.digit_map)
        self._new_id = id_factory or (lambda: uuid.uuid4().hex)
        self._now = 0.0
        self._hook_off = False  # the audio path is in use: handset lifted or hands-free
        self._handset_up = False
        self._handsfree = False  # the loudspeaker and microphone instead of the handset
        # "idle" | "dialing" | "ended" | "howler" | "calls" | "transfer" | "browse" | "menu"
        self._mode = "idle"
        self._digits = ""
        self._notice: tuple[str, str] = ("", "")
        self._calls: dict[int, Call] = {}
        # Calls we ended (Hangup, Reject, Redirect): already recorded, kept until the engine's
        # DISCONNECTED so its last reports for them are expected, not "unknown".
        self._ending: dict[int, Call] = {}
        self._pending: Call | None = None  # placed, id not yet known
        self._orphans: list[Call] = []  # placed calls abandoned before their id was known
        self._active: int | None = None  # the call the handset talks to (not held)
        self._alerting: int | None = None  # unanswered incoming call (ringing or waiting)
        self._conference: set[int] = set()
        self._transfer_target: int | None = None
        self._timers: set[str] = set()
        self._dnd = config.features.dnd
        self._muted = False
        self._registration: dict[int, tuple[bool, int, str]] = {
            i: (False, 0, "") for i in range(len(config.accounts))
        }
        self._mwi: dict[int, tuple[bool, int, int]] = {}
        self._history: list[CallRecord] = collapse_repeats(list(reversed(list(history))))[
            :HISTORY_SIZE
        ]
        self._unseen_missed = 0
        self._last_dialled = ""
        self._line: int | None = None  # account picked with line1/line2 for the next call
        self._browse: tuple[str, int, str] = ("history", 0, "idle")  # list, index, return mode
        self._screen = Screen("idle", ())
        self._tz = _zone(config.device.timezone)
        self._leds: dict[str, str] = {}
        saved = volumes or {}
        self._volume = {
            "speaker": _level(saved.get("speaker"), config.audio.speaker_volume),
            "ring": _level(saved.get("ring"), config.audio.ring_volume),
        }
        self._volume_bar: str | None = None  # "speaker" | "ring" while the bar shows
        self._device = DeviceInfo()
        self._menu: tuple[int, bool, str] = (0, False, "idle")  # index, item open, return mode

    # --- public API ------------------------------------------------------------------------------

    @property
    def screen(self) -> Screen:
        return self._screen

    @property
    def config(self) -> PhoneConfig:
        return self._config

    def start(self, now: float) -> list[Command]:
        self._now = now
        out: list[Command] = [SetVolume(t, level) for t, level in self._volume.items()]
        self._refresh(out, force=True)
        return out

    def handle(self, event: Event, now: float) -> list[Command]:
        self._now = now
        out: list[Command] = []
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"Phone cannot handle {type(event).__name__}")
        handler(self, event, out)
        self._refresh(out)
        return out

    def snapshot(self, now: float) -> dict:
        calls = [call_summary(c, now) for c in self._calls.values()]
        if self._pending is not None:
            calls.append(call_summary(self._pending, now))
        return {
            "hook": "off" if self._hook_off else "on",
            "handset": "up" if self._handset_up else "down",
            "audio_path": self._audio_path(),
            "registration": [
                {
                    "account": i,
                    "user": acc.user,
                    "registered": self._registration.get(i, (False, 0, ""))[0],
                    "status": self._registration.get(i, (False, 0, ""))[1],
                }
                for i, acc in enumerate(self._config.accounts)
            ],
            "calls": calls,
            "screen": list(self._screen.lines),
            "dialing": self._digits,
            "dnd": self._dnd,
            "muted": self._muted,
            "mwi": {
                "waiting": any(w for w, _, _ in self._mwi.values()),
                "new": sum(n for _, n, _ in self._mwi.values()),
                "old": sum(o for _, _, o in self._mwi.values()),
            },
            "history": [record_summary(r) for r in self._history],
            "volume": dict(self._volume),
        }

    # --- event handlers ------------------------------------------------------------------------

    def _on_hook(self, ev: HookChanged, out: list[Command]) -> None:
        if ev.offhook == self._handset_up:
            return
        self._handset_up = ev.offhook
        if self._handsfree:
            if ev.offhook:
                self._handsfree = False  # lifting the handset takes the call off the speaker
                log.info("audio path changed path=handset")
            return  # the handset going down does not end a hands-free call
        self._engage(ev.offhook, out)

    def _on_speaker_key(self, out: list[Command]) -> None:
        if self._handsfree:
            self._handsfree = False
            if self._handset_up:
                log.info("audio path changed path=handset")
            else:
                self._engage(False, out)  # hands-free hang up
            return
        self._handsfree = True
        log.info("audio path changed path=speaker")
        if not self._hook_off:
            self._engage(True, out)  # like lifting the handset, hands-free

    def _engage(self, offhook: bool, out: list[Command]) -> None:
        """The audio path (handset or speaker) goes into use or out of it: off-hook or on-hook."""
        if offhook == self._hook_off:
            return
        self._hook_off = offhook
        if offhook:
            if self._alerting is not None and self._active is None:
                self._answer(self._alerting, out)
            elif self._active is None and self._pending is None and not self._calls:
                self._begin_dialing(out, tone=True)
            return
        # On-hook: everything the handset (or the speaker) was doing ends.
        self._handsfree = False
        out.append(StopTone())
        for name in (T_OFFHOOK, T_INTERDIGIT, T_HOWLER):
            self._cancel_timer(name, out)
        self._abandon_pending(out)
        for call in list(self._calls.values()):
            if call.id != self._alerting:
                out.append(Hangup(call.id))
                self._finish_local(call, out)
        self._active = None
        self._conference.clear()
        self._transfer_target = None
        self._digits = ""
        if self._alerting is not None:
            # A waiting call that was never picked up now rings like any incoming call.
            out += [PlayTone(Tone.RING), SetRinger(True)]
            self._mode = "calls"
        else:
            self._mode = "idle"
        self._line = None  # back to the first line for the next call
        self._reset_mute(out)

    def _on_key(self, ev: KeyPressed, out: list[Command]) -> None:
        key = ev.key
        if key.startswith("softkey"):
            # Softkeys do what their label on the screen says.
            index = int(key.removeprefix("softkey")) - 1
            labels = self._screen.softkeys
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
        if self._volume_bar is not None:
            self._volume_bar = None  # any other key: the bar gives way at once
            self._cancel_timer(T_VOLUME, out)
        if key == "dnd":
            self._dnd = not self._dnd
            log.info("dnd changed dnd=%s", self._dnd)
            return
        if key in ("line1", "line2") and self._mode in ("idle", "dialing"):
            index = int(key[-1]) - 1
            accounts = self._config.accounts
            if index < len(accounts) and accounts[index].enabled:
                self._line = index
            return
        if self._mode in ("idle", "dialing") and key == "menu":
            self._menu = (0, False, self._mode)
            self._mode = "menu"
            return
        if self._mode in ("idle", "dialing") and key in ("history", "phonebook"):
            self._browse = (key, 0, self._mode)
            if key == "history":
                self._unseen_missed = 0
            self._mode = "browse"
            return
        if self._mode in ("ended", "howler") and self._held_calls() and key in ("hold", "cancel"):
            # A consultation call that failed: back to the caller waiting on hold.
            out.append(StopTone())
            self._cancel_timer(T_HOWLER, out)
            self._mode = "calls"
            self._resume(self._held_calls()[-1], out)
            return
        handler = {
            "idle": self._key_idle,
            "dialing": self._key_dialing,
            "browse": self._key_browse,
            "menu": self._key_menu,
            "calls": self._key_calls,
            "transfer": self._key_transfer,
        }.get(self._mode)
        if handler is not None:
            handler(key, out)

    def _key_idle(self, key: str, out: list[Command]) -> None:
        if key == "redial" and self._last_dialled:
            self._place_call(self._last_dialled, out)
        elif key == "voicemail":
            self._dial_voicemail(out)

    def _key_dialing(self, key: str, out: list[Command]) -> None:
        if key == "#":
            if self._digit_map.decide(self._digits + "#") is not Decision.REJECT:
                self._dial_digit("#", out)
            elif self._digits:
                self._send_dialled(out)
        elif key in DIGIT_KEYS:
            self._dial_digit(key, out)
        elif key == "ok" and self._digits:
            self._send_dialled(out)
        elif key in ("cancel", "left") and self._digits:
            self._digits = self._digits[:-1]
            self._cancel_timer(T_INTERDIGIT, out)
            if self._digits:
                self._start_timer(T_INTERDIGIT, self._config.dialplan.interdigit_timeout_s, out)
        elif key in ("cancel", "hold") and not self._digits and self._held_calls():
            self._mode = "calls"
            self._resume(self._held_calls()[-1], out)
        elif key == "redial" and not self._digits and self._last_dialled:
            self._place_call(self._last_dialled, out)
        elif key == "voicemail" and not self._digits:
            self._dial_voicemail(out)

    def _key_browse(self, key: str, out: list[Command]) -> None:
        which, index, back = self._browse
        entries = browse_entries(which, self._history, self._config)
        if key in ("up", "down") and entries:
            step = -1 if key == "up" else 1
            self._browse = (which, (index + step) % len(entries), back)
        elif key == "ok" and entries:
            self._mode = back
            self._place_call(entries[index][1], out)
        elif key in ("cancel", "history", "phonebook", "left"):
            self._mode = back if (back != "dialing" or self._hook_off) else "idle"

    def _key_menu(self, key: str, out: list[Command]) -> None:
        index, opened, back = self._menu
        items = status_menu_items(self._device, self._config, self._registration, self._volume)
        if opened:
            if key in ("cancel", "ok", "left"):
                self._menu = (index, False, back)
            elif key == "menu":
                self._mode = back if (back != "dialing" or self._hook_off) else "idle"
            return
        if key in ("up", "down"):
            step = -1 if key == "up" else 1
            self._menu = ((index + step) % len(items), False, back)
        elif key in ("ok", "right"):
            self._menu = (index, True, back)
        elif key in ("cancel", "menu", "left"):
            self._mode = back if (back != "dialing" or self._hook_off) else "idle"

    def _key_calls(self, key: str, out: list[Command]) -> None:
        active = self._calls.get(self._active) if self._active is not None else None
        alerting = self._alerting
        if active is None:
            held = self._held_calls()
            if self._pending is not None:
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
                self._mode = "dialing"
                self._digits = ""
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
            held = self._held_calls()
            if active.id in self._conference:
                return  # a conference is ended by hanging up, not held
            self._put_on_hold(active, out)
            if held:
                self._resume(held[-1], out)
        elif key == "mute":
            self._muted = not self._muted
            out.append(SetMute(self._muted))
        elif key == "transfer":
            held = self._held_calls()
            if held:
                # Attended: the held party is connected to the one we are talking to.
                out.append(AttendedTransfer(held[-1].id, active.id))
                held[-1].transferred = active.transferred = True
                held[-1].transfer_to = active.id
                self._notice = ("", "")
            else:
                self._enter_transfer(active, out)
        elif key == "conference":
            held = self._held_calls()
            if held:
                other = held[-1]
                out.append(Unhold(other.id))
                other.held = False
                self._conference = {other.id, active.id}
                out.append(Conference((other.id, active.id)))
        elif key == "cancel":
            # "End": hang up without putting the handset down (or a hands-free call).
            ending = [self._calls[i] for i in sorted(self._conference)] or [active]
            for call in ending:
                out.append(Hangup(call.id))
                self._finish_local(call, out)
            self._conference.clear()
            self._active = None
            self._after_active_gone(out)

    def _key_transfer(self, key: str, out: list[Command]) -> None:
        target = None if self._transfer_target is None else self._calls.get(self._transfer_target)
        if target is None:
            self._mode = "calls"
            return
        if key in DIGIT_KEYS - {"#"}:
            self._digits += key
        elif key in ("#", "ok", "transfer") and self._digits:
            out.append(Transfer(target.id, self._digits))
            target.transferred = True
            self._notice = ("Transferring", self._digits)
            self._digits = ""
            self._transfer_target = None
            self._mode = "calls"
        elif key in ("left",) and self._digits:
            self._digits = self._digits[:-1]
        elif key in ("cancel", "hold"):
            self._digits = ""
            self._transfer_target = None
            self._mode = "calls"
            self._resume(target, out)

    def _on_incoming(self, ev: CallIncoming, out: list[Command]) -> None:
        feats = self._config.features
        if ev.call_id in self._calls:
            log.warning("incoming call reuses a live call id call_id=%s", ev.call_id)
            return
        if self._ending.pop(ev.call_id, None) is not None:
            # pjsua reuses a slot only after the call in it is gone: that end report was lost.
            log.info("call id reused before its end was reported call_id=%s", ev.call_id)
        call = Call(
            id=ev.call_id,
            direction="incoming",
            account=ev.account,
            number=number_from_uri(ev.remote_uri),
            remote_uri=ev.remote_uri,
            remote_name=ev.remote_name,
            state=CallState.INCOMING,
            start=self._now,
        )
        self._calls[call.id] = call
        log.info("incoming call call_id=%s from=%s", call.id, ev.remote_uri)
        if feats.forward_always:
            self._forward(call, feats.forward_always, "missed", out)
            return
        if self._dnd:
            self._reject(call.id, DND_STATUS, out)
            return
        in_call = bool(self._calls.keys() - {call.id}) or self._pending is not None
        # Off-hook without a call (dialling, listening to a tone) the line is busy too.
        can_wait = in_call and feats.call_waiting and self._alerting is None
        if (in_call or self._hook_off) and not can_wait:
            if feats.forward_busy:
                self._forward(call, feats.forward_busy, "missed", out)
            else:
                self._reject(call.id, BUSY_STATUS, out)
            return
        self._alerting = call.id
        if feats.auto_answer and not in_call:
            self._mode = "calls"
            self._answer(call.id, out)
            return
        if in_call:
            out.append(PlayTone(Tone.CALL_WAITING))
        else:
            self._mode = "calls"
            out += [PlayTone(Tone.RING), SetRinger(True)]
        # Only now, with the call going to ring or wait, does the caller hear 180 Ringing.
        out.append(Ringing(call.id))
        if feats.forward_no_answer:
            self._start_timer(T_NO_ANSWER + str(call.id), feats.forward_no_answer_s, out)
        self._start_timer(T_RING + str(call.id), feats.ring_timeout_s, out)

    def _on_call_state(self, ev: CallStateChanged, out: list[Command]) -> None:
        call = self._calls.get(ev.call_id)
        if call is None and ev.call_id in self._ending:
            # A call we ended (and recorded): its last reports are expected.
            if ev.state is CallState.DISCONNECTED:
                del self._ending[ev.call_id]
                log.info("call ended here call_id=%s status=%s", ev.call_id, ev.status_code)
            return
        placed_by_us = ev.replaces < 0 and ev.direction != "incoming"
        if call is None and placed_by_us and self._pending is None and self._orphans:
            # A call we gave up on before the engine told us its id: end it now. It was
            # recorded then; its further reports are expected until its DISCONNECTED.
            orphan = self._orphans.pop(0)
            if ev.state is not CallState.DISCONNECTED and ev.call_id >= 0:
                out.append(Hangup(ev.call_id))
                orphan.id = ev.call_id
                self._ended_here(orphan)
            return
        if call is None and placed_by_us and self._pending is not None:
            call, self._pending = self._pending, None
            call.id = ev.call_id
            self._calls[call.id] = call
            self._active = call.id
        if call is None:
            if ev.call_id < 0:
                log.warning("state for no call state=%s reason=%s", ev.state, ev.reason)
                return
            call = self._adopt(ev, out)
        previous, call.state = call.state, ev.state
        if ev.remote_uri:
            call.remote_uri = ev.remote_uri
        if ev.remote_name:
            call.remote_name = ev.remote_name
        if ev.codec:
            call.codec = ev.codec
        if ev.state is CallState.EARLY and call.direction == "outgoing":
            if call.id == self._active and previous is not CallState.EARLY:
                out.append(PlayTone(Tone.RINGBACK))
        elif ev.state is CallState.CONFIRMED:
            if call.answer is None:
                call.answer = self._now
            if call.takes_over is not None and call.takes_over == self._active:
                self._take_over(call, out)
            if call.id == self._active:
                out.append(StopTone())
        elif ev.state is CallState.DISCONNECTED:
            self._on_disconnected(call, ev, out)

    def _on_disconnected(self, call: Call, ev: CallStateChanged, out: list[Command]) -> None:
        del self._calls[call.id]
        self._cancel_timer(T_XFER + str(call.id), out)
        if call.id in self._conference:
            self._conference.discard(call.id)
            if call.id == self._active:
                # The remaining party stays connected to the handset.
                self._active = next(iter(self._conference))
            if len(self._conference) < 2:
                self._conference.clear()
        if call.id == self._transfer_target:
            self._transfer_target = None
            self._digits = ""
            self._mode = "calls"
        if call.direction == "incoming":
            answered = call.answer is not None
            disposition = "answered" if answered else "missed"
            self._record(call, disposition, ev.status_code, out, ev.reason)
            if call.id == self._alerting:
                self._stop_alerting(out)
                if self._hook_off and not self._calls and self._pending is None:
                    self._begin_dialing(out, tone=True)
                return
        outcome = ended_outcome(call, ev.status_code, ev.reason)
        if call.direction == "outgoing":
            self._record(call, outcome.disposition, ev.status_code, out, ev.reason)
        log.info(
            "call ended call_id=%s status=%s disposition=%s",
            call.id,
            ev.status_code,
            outcome.disposition,
        )
        successor = next((c for c in self._calls.values() if c.takes_over == call.id), None)
        if call.id == self._active and successor is not None:
            self._take_over(successor, out)  # the transferor hung up before the target answered
        elif call.id == self._active:
            self._active = None
            self._after_active_gone(out, outcome)
        elif not self._calls and self._pending is None and self._alerting is None:
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
            start=self._now,
        )
        self._calls[ev.call_id] = call
        log.info(
            "call adopted call_id=%s direction=%s replaces=%s remote=%s",
            ev.call_id,
            direction,
            ev.replaces,
            ev.remote_uri,
        )
        replaced = self._calls.get(ev.replaces) if ev.replaces >= 0 else None
        idle_handset = self._active is None and self._alerting is None and self._pending is None
        if replaced is not None and replaced.id == self._active:
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
        self._active = call.id
        self._notice = ("", "")
        if self._mode not in ("calls", "browse", "menu"):
            out.append(StopTone())
            for name in (T_OFFHOOK, T_INTERDIGIT, T_HOWLER):
                self._cancel_timer(name, out)
            self._digits = ""
            self._mode = "calls"
        if call.state is CallState.EARLY and call.direction == "outgoing":
            out.append(PlayTone(Tone.RINGBACK))

    def _on_transfer_status(self, ev: TransferStatus, out: list[Command]) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or not call.transferred:
            return
        timer = T_XFER + str(call.id)
        if not ev.final:
            if ev.status_code == 100 and timer not in self._timers:
                # REFER accepted: the far end now calls the target; our leg ends on its final
                # NOTIFY, or on this timer if that never comes (or cannot be parsed).
                self._start_timer(timer, TRANSFER_GIVE_UP_S, out)
            return
        self._cancel_timer(timer, out)
        if 200 <= ev.status_code < 300:
            return  # the engine ends the leg (and the consultation call) on success
        log.info(
            "transfer failed call_id=%s status=%s reason=%s",
            call.id,
            ev.status_code,
            ev.reason,
        )
        partner = self._calls.get(call.transfer_to) if call.transfer_to is not None else None
        for leg in (call, partner):
            if leg is not None:
                leg.transferred = False
                leg.transfer_to = None
        self._notice = ("Transfer failed", f"{ev.status_code} {ev.reason}".strip())
        if self._mode == "transfer":
            self._digits = ""
            self._transfer_target = None
        self._mode = "calls" if self._mode in ("transfer", "calls") else self._mode

    def _transfer_gave_up(self, call_id: int, out: list[Command]) -> None:
        """No final NOTIFY after the REFER was accepted: end our leg(s) as if it had come."""
        call = self._calls.get(call_id)
        if call is None or not call.transferred:
            return
        log.info("transfer final notify missing: ending our leg call_id=%s", call_id)
        partner = self._calls.get(call.transfer_to) if call.transfer_to is not None else None
        legs = [leg for leg in (call, partner) if leg is not None]
        was_active = self._active in {leg.id for leg in legs}
        for leg in legs:
            out.append(Hangup(leg.id))
            self._finish_local(leg, out)
            self._conference.discard(leg.id)
        if was_active:
            self._active = None
        if was_active or (not self._calls and self._pending is None and self._alerting is None):
            self._after_active_gone(out, ended_outcome(call, 0, ""))

    def _ring_timeout(self, call_id: int, out: list[Command]) -> None:
        if call_id == self._alerting and call_id in self._calls:
            log.info("ring timeout call_id=%s", call_id)
            self._reject(call_id, RING_TIMEOUT_STATUS, out, disposition="missed")

    def _on_media(self, ev: CallMediaChanged, out: list[Command]) -> None:
        call = self._calls.get(ev.call_id)
        if call is not None:
            call.held_remotely = ev.held_remotely

    def _on_quality(self, ev: CallQuality, out: list[Command]) -> None:
        call = self._calls.get(ev.call_id)
        if call is not None:
            call.mos = ev.mos
            call.codec = ev.codec or call.codec

    def _on_registration(self, ev: RegistrationChanged, out: list[Command]) -> None:
        self._registration[ev.account] = (ev.registered, ev.status_code, ev.reason)

    def _on_device_info(self, ev: DeviceInfo, out: list[Command]) -> None:
        self._device = ev

    def _on_mwi(self, ev: MessageWaiting, out: list[Command]) -> None:
        self._mwi[ev.account] = (ev.waiting, ev.new, ev.old)

    def _on_timer(self, ev: TimerFired, out: list[Command]) -> None:
        if ev.name not in self._timers:
            return  # cancelled (or restarted) while the callback was in flight
        self._timers.discard(ev.name)
        if ev.name == T_OFFHOOK and self._mode == "dialing" and not self._digits:
            self._howler(out)
        elif ev.name == T_INTERDIGIT and self._mode == "dialing" and self._digits:
            if self._digit_map.decide(self._digits, timed_out=True) is Decision.SEND:
                self._send_dialled(out)
            else:
                self._invalid_number(out)
        elif ev.name == T_HOWLER and self._mode == "ended" and self._hook_off:
            self._howler(out)
        elif ev.name == T_VOLUME:
            self._volume_bar = None
        elif ev.name.startswith(T_RING):
            self._ring_timeout(int(ev.name.removeprefix(T_RING)), out)
        elif ev.name.startswith(T_XFER):
            self._transfer_gave_up(int(ev.name.removeprefix(T_XFER)), out)
        elif ev.name.startswith(T_NO_ANSWER):
            call_id = int(ev.name.removeprefix(T_NO_ANSWER))
            if call_id == self._alerting and call_id in self._calls:
                target = self._config.features.forward_no_answer
                self._forward(self._calls[call_id], target, "missed", out)

    def _on_tick(self, ev: ClockTick, out: list[Command]) -> None:
        pass  # the refresh after every event redraws the clock and call timers

    def _on_config(self, ev: ConfigApplied, out: list[Command]) -> None:
        new = ev.config
        if not isinstance(new, PhoneConfig):
            raise TypeError(f"ConfigApplied needs a PhoneConfig, got {type(new).__name__}")
        self._digit_map = DigitMap(new.dialplan.digit_map)
        if new.features.dnd != self._config.features.dnd:
            self._dnd = new.features.dnd  # the administrator changed it: that wins
        # Likewise the volumes: a changed config value replaces the user's level.
        for target, old_level, new_level in (
            ("speaker", self._config.audio.speaker_volume, new.audio.speaker_volume),
            ("ring", self._config.audio.ring_volume, new.audio.ring_volume),
        ):
            if new_level != old_level and new_level != self._volume[target]:
                self._volume[target] = new_level
                out.append(SetVolume(target, new_level))
        self._reset_changed_lines(self._config, new)
        self._config = new
        self._tz = _zone(new.device.timezone)
        log.info("config applied accounts=%d", len(new.accounts))

    def _reset_changed_lines(self, old: PhoneConfig, new: PhoneConfig) -> None:
        """A line whose account settings changed (even only its password) must register afresh:
        its old state says nothing about the new settings (provisioning judges an apply by it)."""
        registration: dict[int, tuple[bool, int, str]] = {}
        for i, account in enumerate(new.accounts):
            same = (
                i < len(old.accounts)
                and old.accounts[i] == account
                and old.sip.bind_address == new.sip.bind_address
            )
            if same:
                registration[i] = self._registration.get(i, (False, 0, ""))
            else:
                registration[i] = (False, 0, "")
                self._mwi.pop(i, None)
        for i in range(len(new.accounts), len(old.accounts)):
            self._mwi.pop(i, None)
        self._registration = registration

    _handlers: dict[type, Callable[[Phone, object, list[Command]], None]] = {
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
        DeviceInfo: _on_device_info,
    }

    # --- actions -------------------------------------------------------------------------------

    def _begin_dialing(self, out: list[Command], tone: bool) -> None:
        self._mode = "dialing"
        self._digits = ""
        if tone:
            out.append(PlayTone(Tone.STUTTER if self._message_waiting() else Tone.DIAL))
        self._start_timer(T_OFFHOOK, self._config.dialplan.offhook_timeout_s, out)

    def _dial_digit(self, key: str, out: list[Command]) -> None:
        if not self._digits:
            out.append(StopTone())
            self._cancel_timer(T_OFFHOOK, out)
        self._digits += key
        if self._digits in self._config.dialplan.emergency_numbers:
            self._place_call(self._digits, out)  # at once, whatever the digit map says
            return
        decision = self._digit_map.decide(self._digits)
        if decision is Decision.SEND:
            self._send_dialled(out)
        elif decision is Decision.WAIT:
            self._start_timer(T_INTERDIGIT, self._config.dialplan.interdigit_timeout_s, out)
        else:
            self._invalid_number(out)

    def _send_dialled(self, out: list[Command]) -> None:
        number = self._digits
        for entry in self._config.phonebook:
            if entry.speed_dial and entry.speed_dial == number:
                number = entry.number
                break
        self._place_call(number, out)

    def _place_call(self, number: str, out: list[Command]) -> None:
        self._cancel_timer(T_INTERDIGIT, out)
        self._cancel_timer(T_OFFHOOK, out)
        out.append(StopTone())
        if self._active is not None:
            self._put_on_hold(self._calls[self._active], out)
        account = self._account_index()
        out.append(MakeCall(account, number))
        log.info("placing call account=%d target=%s", account, number)
        self._pending = Call(
            id=None,
            direction="outgoing",
            account=account,
            number=number,
            remote_uri=number,
            remote_name=self._phonebook_name(number),
            state=CallState.CALLING,
            start=self._now,
        )
        self._last_dialled = number
        self._digits = ""
        self._mode = "calls"

    def _change_volume(self, up: bool, out: list[Command]) -> None:
        """Speaker volume while the audio path is in use (a call, off-hook), else the ringer's."""
        ringing_only = self._alerting is not None and self._active is None and not self._hook_off
        in_use = self._hook_off or self._active is not None or self._pending is not None
        target = "speaker" if in_use and not ringing_only else "ring"
        level = self._volume[target] + (VOLUME_STEP if up else -VOLUME_STEP)
        level = max(0, min(100, level))
        if level != self._volume[target]:
            self._volume[target] = level
            out.append(SetVolume(target, level))
            log.info("volume changed target=%s level=%d", target, level)
        self._volume_bar = target
        self._start_timer(T_VOLUME, VOLUME_BAR_S, out)

    def _dial_voicemail(self, out: list[Command]) -> None:
        accounts = self._config.accounts
        index = self._account_index()
        number = accounts[index].voicemail if index < len(accounts) else ""
        if number:
            self._place_call(number, out)

    def _answer(self, call_id: int, out: list[Command]) -> None:
        out += [StopTone(), Answer(call_id)]
        if not self._hook_off or self._active is None:
            out.append(SetRinger(False))
        self._cancel_timer(T_NO_ANSWER + str(call_id), out)
        self._cancel_timer(T_RING + str(call_id), out)
        self._alerting = None
        self._active = call_id
        self._mode = "calls"

    def _reject(
        self, call_id: int, status: int, out: list[Command], disposition: str = "rejected"
    ) -> None:
        out.append(Reject(call_id, status))
        call = self._calls[call_id]
        self._ended_here(call)
        self._record(call, disposition, status, out)
        if call_id == self._alerting:
            self._stop_alerting(out)

    def _stop_alerting(self, out: list[Command]) -> None:
        """The unanswered call is gone: silence the ringer or the call-waiting beep."""
        self._cancel_timer(T_NO_ANSWER + str(self._alerting), out)
        self._cancel_timer(T_RING + str(self._alerting), out)
        self._alerting = None
        out.append(StopTone())
        nothing_else = self._active is None and not self._held_calls() and self._pending is None
        if nothing_else or not self._hook_off:
            out.append(SetRinger(False))  # on-hook, only the alerting call can have rung it
        if nothing_else and not self._hook_off:
            self._mode = "idle"

    def _forward(self, call: Call, target: str, disposition: str, out: list[Command]) -> None:
        out.append(Redirect(call.id, target))
        call.forwarded_to = target
        was_alerting = call.id == self._alerting
        self._ended_here(call)
        self._record(call, disposition, 302, out)
        if was_alerting:
            self._stop_alerting(out)

    def _put_on_hold(self, call: Call, out: list[Command]) -> None:
        out.append(Hold(call.id))
        call.held = True
        if self._active == call.id:
            self._active = None

    def _resume(self, call: Call, out: list[Command]) -> None:
        self._notice = ("", "")
        out.append(Unhold(call.id))
        call.held = False
        self._active = call.id

    def _enter_transfer(self, call: Call, out: list[Command]) -> None:
        if not call.held:
            self._put_on_hold(call, out)
        self._transfer_target = call.id
        self._digits = ""
        self._mode = "transfer"

    def _after_active_gone(self, out: list[Command], outcome: Outcome | None = None) -> None:
        """The handset's call is gone: fall back to what is left, or to an end screen."""
        if self._alerting is not None:
            self._mode = "calls"  # the waiting call keeps beeping until answered
            return
        held = bool(self._held_calls())
        if not held:
            self._reset_mute(out)
        if not held and self._handsfree_only():
            self._engage(False, out)  # a hands-free call that ends hangs up the speaker too
            return
        if not self._hook_off:
            self._mode = "calls" if held else "idle"
            out.append(StopTone())
            return
        if outcome is None:  # ended by the user with the handset up: ready for the next call
            if held:
                self._mode = "calls"
            else:
                self._begin_dialing(out, tone=True)
            return
        # Tell the user why (busy, not found...); with a call on hold, hold/cancel resumes it.
        self._mode = "ended"
        self._notice = (outcome.title, outcome.detail)
        out.append(PlayTone(outcome.tone) if outcome.tone is not None else StopTone())
        if not held:
            self._start_timer(T_HOWLER, self._config.dialplan.offhook_timeout_s, out)

    def _invalid_number(self, out: list[Command]) -> None:
        self._cancel_timer(T_INTERDIGIT, out)
        self._mode = "ended"
        self._notice = ("Invalid number", self._digits)
        self._digits = ""
        out.append(PlayTone(Tone.CONGESTION))
        self._start_timer(T_HOWLER, self._config.dialplan.offhook_timeout_s, out)

    def _howler(self, out: list[Command]) -> None:
        if self._handsfree_only():
            self._engage(False, out)  # no handset left off the cradle: just hang up
            return
        self._mode = "howler"
        self._notice = ("Please hang up", "")
        out.append(PlayTone(Tone.HOWLER))

    def _reset_mute(self, out: list[Command]) -> None:
        if self._muted:
            self._muted = False
            out.append(SetMute(False))

    def _start_timer(self, name: str, seconds: float, out: list[Command]) -> None:
        self._timers.add(name)
        out.append(StartTimer(name, seconds))

    def _cancel_timer(self, name: str, out: list[Command]) -> None:
        if name in self._timers:
            self._timers.discard(name)
            out.append(CancelTimer(name))

    def _abandon_pending(self, out: list[Command]) -> None:
        if self._pending is not None:
            self._finish_local(self._pending, out)
            self._orphans.append(self._pending)
            self._pending = None

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
        if call.id is None:
            return
        self._calls.pop(call.id, None)
        self._ending[call.id] = call
        while len(self._ending) > ENDING_KEPT:
            del self._ending[next(iter(self._ending))]

    def _record(
        self, call: Call, disposition: str, status: int, out: list[Command], reason: str = ""
    ) -> None:
        accounts = self._config.accounts
        acc = accounts[call.account] if call.account < len(accounts) else None
        record = CallRecord(
            id=self._new_id(),
            direction=call.direction,
            account=call.account,
            local_uri=f"sip:{acc.user}@{acc.domain}" if acc else "",
            remote_uri=call.remote_uri,
            remote_name=call.remote_name,
            start=call.start,
            answer=call.answer,
            end=self._now,
            disposition=disposition,
            status_code=status,
            call_id=call.id if call.id is not None else -1,
            reason=reason or REASONS.get(status, ""),
        )
        head = self._history[0] if self._history else None
        if head is not None and same_missed_caller(head, record):
            # A caller refused again and again (an INVITE flood while busy): one entry, counted,
            # as the history file keeps it. Seen already? Then it counts as missed again.
            self._history[0] = merge_repeat(head, record)
            self._unseen_missed = max(self._unseen_missed, 1)
        else:
            self._history.insert(0, record)
            del self._history[HISTORY_SIZE:]
            if history_kind(record) == "missed":
                self._unseen_missed += 1
        out.append(RecordCall(record))

    # --- queries -------------------------------------------------------------------------------

    def _handsfree_only(self) -> bool:
        return self._handsfree and not self._handset_up

    def _audio_path(self) -> str:
        if not self._hook_off:
            return "none"
        return "speaker" if self._handsfree else "handset"

    def _held_calls(self) -> list[Call]:
        return [c for c in self._calls.values() if c.held]

    def _message_waiting(self) -> bool:
        return any(w for w, _, _ in self._mwi.values())

    def _account_index(self) -> int:
        """The line for the next call: the one picked with a line key, else the first enabled."""
        accounts = self._config.accounts
        if self._line is not None and self._line < len(accounts) and accounts[self._line].enabled:
            return self._line
        for i, acc in enumerate(accounts):
            if acc.enabled:
                return i
        return 0

    def _phonebook_name(self, number: str) -> str:
        for entry in self._config.phonebook:
            if entry.number == number:
                return entry.name
        return ""

    # --- views ---------------------------------------------------------------------------------

    def _refresh(self, out: list[Command], force: bool = False) -> None:
        """Emit LED changes and a Render when what the user sees differs from before."""
        view = self._view()
        leds = led_states(view)
        for name, state in leds.items():
            if force or self._leds.get(name) != state:
                out.append(SetLed(name, state))
        self._leds = leds
        screen = compose_screen(view)
        if force or screen != self._screen:
            self._screen = screen
            out.append(Render(screen))

    def _view(self) -> PhoneView:
        """A read-only picture of the state for the screen and LEDs (firmware/screens/views.py)."""
        return PhoneView(
            now=self._now,
            tz=self._tz,
            config=self._config,
            mode=self._mode,
            digits=self._digits,
            notice=self._notice,
            calls=MappingProxyType(self._calls),
            pending=self._pending,
            active=self._active,
            alerting=self._alerting,
            conference=frozenset(self._conference),
            line=self._account_index(),
            registration=MappingProxyType(self._registration),
            mwi=MappingProxyType(self._mwi),
            dnd=self._dnd,
            muted=self._muted,
            handsfree=self._handsfree,
            unseen_missed=self._unseen_missed,
            history=tuple(self._history),
            browse=self._browse,
            menu=self._menu,
            device=self._device,
            volume=MappingProxyType(self._volume),
            volume_bar=self._volume_bar,
        )
