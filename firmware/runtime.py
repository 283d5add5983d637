"""The phone's imperative shell: one event loop that feeds the Phone and carries out its commands.

Events arrive on a queue from board callbacks, the SIP engine thread, timers, the once-a-second
clock tick and the control API. The loop thread is the only one that touches the Phone. Slow work
(drawing the OLED, appending call history, the provisioning outbox) is handed to worker threads
so a slow display or disk never delays a key press or a SIP event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from offhook.contract.logs import kv
from offhook.firmware import events as ev
from offhook.firmware.features.events import SaveAdminLock
from offhook.firmware.ports import AudioPort, Indicators, Outbox, SipPort, UrlFetcher, Watcher
from offhook.firmware.state_files import AdminLockFile, CallHistoryFile, VolumeFile
from offhook.firmware.timers import TimerWheel
from offhook.firmware.workers import LatestWorker

if TYPE_CHECKING:
    from offhook.contract.config import PhoneConfig

log = logging.getLogger("offhook.runtime")

SIP_COMMANDS = (
    ev.MakeCall,
    ev.Ringing,
    ev.Answer,
    ev.Reject,
    ev.Redirect,
    ev.Hangup,
    ev.Hold,
    ev.Unhold,
    ev.Transfer,
    ev.AttendedTransfer,
    ev.Conference,
    ev.SendDtmf,
    ev.SendMessage,
)
MAX_QUALITY_SAMPLES = 720  # per call: an hour at one sample every 5 s


def _rfc3339(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class PhoneLike(Protocol):
    def start(self, now: float) -> list[ev.Command]: ...
    def handle(self, event: ev.Event, now: float) -> list[ev.Command]: ...
    def snapshot(self, now: float) -> dict: ...


T = TypeVar("T")


class _Call:
    """A function to run on the loop thread, and where its result goes."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        self.fn = fn
        self.future = future


class Runtime:
    """Owns the Phone; wires it to the SIP engine, audio, board, timers and the control API."""

    def __init__(
        self,
        phone: PhoneLike,
        *,
        engine: SipPort | None = None,
        audio: AudioPort | None = None,
        board: Indicators | None = None,
        render: Callable[[ev.Screen], None] | None = None,
        history: CallHistoryFile | None = None,
        outbox: Outbox | None = None,
        volumes: VolumeFile | None = None,
        admin_lock: AdminLockFile | None = None,
        watcher: Watcher | None = None,
        action_urls: UrlFetcher | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        services: Mapping[type[Any], Callable[[Any], None]] | None = None,
    ) -> None:
        """``services``: more command handlers by command type (the directory, the settings
        menu's network and reset, server trust); each only queues work, it never blocks."""
        self.phone = phone
        self.engine = engine
        self.audio = audio
        self.board = board
        self.history = history
        self.outbox = outbox
        self.volumes = volumes
        self.admin_lock = admin_lock
        self.watcher = watcher  # BLF subscriptions (WatchExtensions)
        self.action_urls = action_urls  # fetches ActionUrl off the loop
        self.clock = clock
        self.tick_s = tick_s
        self.services: dict[type[Any], Callable[[Any], None]] = dict(services or {})
        self.screen: ev.Screen | None = None
        self.last_beat = time.monotonic()  # the loop's last iteration (for the heartbeat)
        self.handled = 0
        # events, calls to run on the loop, None to stop
        self._queue: queue.Queue[ev.Event | _Call | None] = queue.Queue()
        self._timers = TimerWheel(lambda name: self.post(ev.TimerFired(name)))
        self._display = LatestWorker[ev.Screen]("display", render) if render else None
        # disk and outbox writes, in order, off the loop thread
        self._io: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._io_thread = threading.Thread(target=self._run_io, name="records", daemon=True)
        self._thread = threading.Thread(target=self._loop, name="runtime", daemon=True)
        self._running = False
        self._quality: dict[int, list[dict]] = {}  # engine call id -> samples not yet sent
        self._handsfree = False  # what the audio was last told (_follow_audio_path)
        # provisioned applies waiting for the Phone's ConfigOutcome, by request number
        self._applies: dict[int, Future[str | None]] = {}
        self._apply_numbers = count(1)

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._display:
            self._display.start()
        self._io_thread.start()
        self._timers.start()
        self._running = True
        self._execute(self.phone.start(self.clock()))
        self._thread.start()

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._queue.put(None)
        self._thread.join(5)
        self._timers.stop()
        self._io.put(None)
        self._io_thread.join(5)
        if self._display:
            self._display.stop()

    # --- called from any thread -----------------------------------------------------------------

    def post(self, event: ev.Event) -> None:
        self._queue.put(event)

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the loop thread (the Phone is not thread-safe) and return its result."""
        future: Future[T] = Future()
        self._queue.put(_Call(fn, future))
        return future.result(timeout)

    def apply_config(self, config: PhoneConfig) -> Future[str | None]:
        """Post ``config`` as ConfigApplied; the future gets the Phone's verdict (its
        ConfigOutcome): None once every enabled line registered with it, else why not."""
        future: Future[str | None] = Future()
        request = next(self._apply_numbers)
        self._applies[request] = future
        future.add_done_callback(lambda _: self._applies.pop(request, None))
        self.post(ev.ConfigApplied(config, request))
        return future

    def snapshot(self, timeout: float = 5.0) -> dict:
        return self.call(lambda: self.phone.snapshot(self.clock()), timeout)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                item: ev.Event | _Call | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ev.ClockTick()
            self.last_beat = time.monotonic()
            if item is None:
                return
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.tick_s
                if not isinstance(item, ev.ClockTick):
                    self._handle(ev.ClockTick())
            if isinstance(item, _Call):
                try:
                    item.future.set_result(item.fn())
                except Exception as exc:
                    item.future.set_exception(exc)
                continue
            self._handle(item)

    def _handle(self, event: ev.Event) -> None:
        self.handled += 1
        if not isinstance(event, ev.ClockTick):
            log.debug("event", extra=kv(event=event))
        self._track_quality(event)
        try:
            commands = self.phone.handle(event, self.clock())
        except Exception:
            log.exception("phone failed to handle event", extra=kv(event=event))
            return
        self._execute(commands)
        if not isinstance(event, ev.ClockTick):  # a tick changes no audio path
            self._follow_audio_path()

    def _follow_audio_path(self) -> None:
        """Hands-free or not is the Phone's state, not a command of its own: the audio follows
        it after every event (the speakerphone's echo canceller runs only while it is in use)."""
        handsfree = self.phone.snapshot(self.clock())["audio_path"] == "speaker"
        if handsfree == self._handsfree or self.audio is None:
            return
        self._handsfree = handsfree
        try:
            self.audio.set_handsfree(handsfree)
        except Exception:
            log.exception("audio path change failed", extra=kv(handsfree=handsfree))

    def _execute(self, commands: list[ev.Command]) -> None:
        for command in commands:
            try:
                self._execute_one(command)
            except Exception:
                log.exception("command failed", extra=kv(command=command))

    def _execute_one(self, command: ev.Command) -> None:
        handler = self._command_handlers.get(type(command))
        if handler is None:
            service = self.services.get(type(command))
            if service is None:
                log.warning("unknown command ignored", extra=kv(command=command))
                return
            service(command)
            return
        handler(self, command)

    # --- one handler per command type (the table is at the end of the class) --------------------

    def _to_engine(self, command: ev.Command) -> None:
        if self.engine is not None:
            self.engine.submit(command)

    def _play_tone(self, command: ev.PlayTone) -> None:
        if self.audio is not None:
            self.audio.play_tone(command.tone)

    def _stop_tone(self, command: ev.StopTone) -> None:
        if self.audio is not None:
            self.audio.stop_tone()

    def _set_mute(self, command: ev.SetMute) -> None:
        if self.audio is not None:
            self.audio.set_mute(command.muted)
        self._to_engine(command)  # the engine mutes the call's media too

    def _start_timer(self, command: ev.StartTimer) -> None:
        self._timers.set(command.name, command.seconds)

    def _cancel_timer(self, command: ev.CancelTimer) -> None:
        self._timers.cancel(command.name)

    def _render(self, command: ev.Render) -> None:
        self.screen = command.screen
        if self._display:
            self._display.submit(command.screen)

    def _set_led(self, command: ev.SetLed) -> None:
        if self.board is not None:
            self.board.set_led(command.name, command.state)

    def _set_ringer(self, command: ev.SetRinger) -> None:
        if self.board is not None:
            self.board.set_ringer(command.on)

    def _record(self, command: ev.RecordCall) -> None:
        record = command.record
        samples = self._quality_for(record)
        self._io.put(lambda: self._record_call(record, samples))

    def _reconfigure_engine(self, command: ev.ReconfigureEngine) -> None:
        if self.engine is not None:
            self.engine.apply_config(command.config)

    def _set_tone_plan(self, command: ev.SetTonePlan) -> None:
        if self.audio is not None:
            self.audio.set_tone_plan(command.plan)

    def _watch_extensions(self, command: ev.WatchExtensions) -> None:
        if self.watcher is not None:
            self.watcher.watch(command.config, command.watches)

    def _action_url(self, command: ev.ActionUrl) -> None:
        if self.action_urls is not None:
            self.action_urls.submit(command)

    def _config_outcome(self, command: ev.ConfigOutcome) -> None:
        waiting = self._applies.get(command.request)
        # False when the waiter gave up (cancelled): the verdict came too late
        if waiting is not None and waiting.set_running_or_notify_cancel():
            waiting.set_result(command.error)

    def _set_volume(self, command: ev.SetVolume) -> None:
        if self.audio is not None:
            if command.target == "speaker":
                self.audio.set_volume(command.level)
            elif command.target == "ring":
                self.audio.set_ring_volume(command.level)
            else:
                raise ValueError(f"unknown volume target {command.target!r}")
        volumes = self.volumes
        if volumes is not None:
            self._io.put(lambda: volumes.save(command.target, command.level))

    def _save_admin_lock(self, command: SaveAdminLock) -> None:
        admin_lock = self.admin_lock
        if admin_lock is not None:
            self._io.put(lambda: admin_lock.save(command.failures, command.locked_until))

    # --- workers --------------------------------------------------------------------------------

    def _run_io(self) -> None:
        while (job := self._io.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("background write failed")

    def _track_quality(self, event: ev.Event) -> None:
        """Keep each call's quality samples until its CallRecord exists (they cite its id)."""
        if isinstance(event, ev.CallQuality) and self.outbox is not None:
            samples = self._quality.setdefault(event.call_id, [])
            if len(samples) < MAX_QUALITY_SAMPLES:
                sample = asdict(event)
                sample["time"] = _rfc3339(self.clock())
                samples.append(sample)

    def _quality_for(self, record: ev.CallRecord) -> list[dict]:
        """The samples of the call this record is about, matched by the engine's call id."""
        out: list[dict] = []
        for sample in self._quality.pop(record.call_id, []):
            sample.pop("call_id", None)
            out.append({"id": uuid.uuid4().hex, "call_record_id": record.id, **sample})
        return out

    def _record_call(self, record: ev.CallRecord, quality: list[dict]) -> None:
        if self.history is not None:
            self.history.append(record)
        cdr = asdict(record)
        del cdr["call_id"]  # the engine's call id means nothing off the device
        self._enqueue_outbox("cdrs", cdr)
        for sample in quality:
            self._enqueue_outbox("quality", sample)
        log.info(
            "call recorded",
            extra=kv(
                id=record.id,
                direction=record.direction,
                remote=record.remote_uri,
                disposition=record.disposition,
            ),
        )

    def _enqueue_outbox(self, kind: str, record: dict) -> None:
        if self.outbox is None:
            return
        try:
            self.outbox.enqueue(kind, record)
        except Exception:
            log.exception("outbox enqueue failed", extra=kv(kind=kind))

    # One handler per command type, as the Phone's _handlers per event type and the SIP engine's
    # _HANDLERS (each takes its own command type, hence Any here).
    _command_handlers: dict[type[Any], Callable[[Runtime, Any], None]] = {
        **dict.fromkeys(SIP_COMMANDS, _to_engine),
        ev.PlayTone: _play_tone,
        ev.StopTone: _stop_tone,
        ev.SetMute: _set_mute,
        ev.SetVolume: _set_volume,
        SaveAdminLock: _save_admin_lock,
        ev.StartTimer: _start_timer,
        ev.CancelTimer: _cancel_timer,
        ev.Render: _render,
        ev.SetLed: _set_led,
        ev.SetRinger: _set_ringer,
        ev.RecordCall: _record,
        ev.ReconfigureEngine: _reconfigure_engine,
        ev.SetTonePlan: _set_tone_plan,
        ev.ConfigOutcome: _config_outcome,
        ev.WatchExtensions: _watch_extensions,
        ev.ActionUrl: _action_url,
    }
