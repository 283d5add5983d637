"""The phone's imperative shell: one event loop that feeds the Phone and carries out its commands.

Events arrive on a queue from board callbacks, the SIP engine thread, timers, the once-a-second
clock tick and the control API. The loop thread is the only one that touches the Phone. Slow work
(drawing the OLED, appending call history, the provisioning outbox) is handed to worker threads
so a slow display or disk never delays a key press or a SIP event.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from firmware import events as ev
from firmware.logs import kv

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
)
HISTORY_KEEP = 200  # call records kept in the history file
MAX_QUALITY_SAMPLES = 720  # per call: an hour at one sample every 5 s


def _rfc3339(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class PhoneLike(Protocol):
    def start(self, now: float) -> list[Any]: ...
    def handle(self, event: Any, now: float) -> list[Any]: ...
    def snapshot(self, now: float) -> dict: ...


class TimerWheel:
    """Named one-shot timers on one thread; starting a name again replaces the pending one."""

    def __init__(self, fire: Callable[[str], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, int] = {}  # name -> sequence number of its live entry
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(2)

    def set(self, name: str, seconds: float) -> None:
        with self._cond:
            seq = next(self._seq)
            self._current[name] = seq
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, seconds), seq, name))
            self._cond.notify()

    def cancel(self, name: str) -> None:
        with self._cond:
            self._current.pop(name, None)

    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._current)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due: list[str] = []
                while self._heap and self._heap[0][0] <= now:
                    _, seq, name = heapq.heappop(self._heap)
                    if self._current.get(name) == seq:
                        del self._current[name]
                        due.append(name)
                if not due:
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                    continue
            for name in due:
                self._fire(name)


class LatestWorker:
    """Runs ``job(item)`` on its own thread for the newest item only (e.g. OLED frames)."""

    def __init__(self, name: str, job: Callable[[Any], None]) -> None:
        self._job = job
        self._item: Any = None
        self._has_item = False
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: Any) -> None:
        with self._cond:
            self._item, self._has_item = item, True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_item and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                item, self._has_item = self._item, False
            try:
                self._job(item)
            except Exception:
                log.exception("worker job failed", extra=kv(worker=self._thread.name))


class CallHistoryFile:
    """Finished calls as JSON lines, newest last, trimmed to the last HISTORY_KEEP records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: ev.CallRecord) -> None:
        from firmware.atomic import atomic_write_text
        from firmware.calls import merge_repeat, same_missed_caller

        lines = self.read_lines()
        last = self._parse(lines[-1]) if lines else None
        if last is not None and same_missed_caller(last, record):
            # A caller refused again and again (an INVITE flood while busy): one line, counted,
            # so the flood cannot push the rest of the history out of the file. Each call is
            # still a CDR of its own in the outbox.
            lines[-1] = json.dumps(asdict(merge_repeat(last, record)), sort_keys=True)
        else:
            lines = lines[-(HISTORY_KEEP - 1) :]
            lines.append(json.dumps(asdict(record), sort_keys=True))
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    @staticmethod
    def _parse(line: str) -> ev.CallRecord | None:
        known = {f.name for f in fields(ev.CallRecord)}
        try:
            data = json.loads(line)
            return ev.CallRecord(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError, AttributeError):
            return None

    def read_lines(self) -> list[str]:
        try:
            return [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def records(self) -> list[dict]:
        out = []
        for line in self.read_lines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def call_records(self) -> list[ev.CallRecord]:
        """The kept calls as CallRecords, oldest first; lines that do not fit are skipped, so a
        damaged or older-format file costs those entries, never the phone's start."""
        known = {f.name for f in fields(ev.CallRecord)}
        out = []
        for data in self.records():
            if not isinstance(data, dict):
                continue
            with contextlib.suppress(TypeError):
                out.append(ev.CallRecord(**{k: v for k, v in data.items() if k in known}))
        return out


class VolumeFile:
    """The user's speaker and ring volume levels, kept across restarts (JSON, atomic writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._levels = self._read()

    def levels(self) -> dict[str, int]:
        return dict(self._levels)

    def save(self, target: str, level: int) -> None:
        from firmware.atomic import atomic_write_text

        if target not in ("speaker", "ring"):
            raise ValueError(f"volume target must be 'speaker' or 'ring', not {target!r}")
        if self._levels.get(target) == level:
            return
        self._levels[target] = level
        atomic_write_text(self.path, json.dumps(self._levels, sort_keys=True) + "\n")

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("volume file unreadable; using the config", extra=kv(error=exc))
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v
            for k, v in data.items()
            if k in ("speaker", "ring") and isinstance(v, int) and 0 <= v <= 100
        }


class Runtime:
    """Owns the Phone; wires it to the SIP engine, audio, board, timers and the control API."""

    def __init__(
        self,
        phone: PhoneLike,
        *,
        engine: Any = None,
        audio: Any = None,
        board: Any = None,
        render: Callable[[ev.Screen], None] | None = None,
        history: CallHistoryFile | None = None,
        outbox: Any = None,
        volumes: VolumeFile | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ) -> None:
        self.phone = phone
        self.engine = engine
        self.audio = audio
        self.board = board
        self.history = history
        self.outbox = outbox
        self.volumes = volumes
        self.clock = clock
        self.tick_s = tick_s
        self.screen: ev.Screen | None = None
        self.last_beat = time.monotonic()  # the loop's last iteration (for the heartbeat)
        self.handled = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._timers = TimerWheel(lambda name: self.post(ev.TimerFired(name)))
        self._display = LatestWorker("display", render) if render else None
        # disk and outbox writes, in order, off the loop thread
        self._io: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._io_thread = threading.Thread(target=self._run_io, name="records", daemon=True)
        self._thread = threading.Thread(target=self._loop, name="runtime", daemon=True)
        self._running = False
        self._quality: dict[int, list[dict]] = {}  # engine call id -> samples not yet sent

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

    def post(self, event: Any) -> None:
        self._queue.put(event)

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the loop thread (the Phone is not thread-safe) and return its result."""
        future: Future[Any] = Future()
        self._queue.put(("call", fn, future))
        return future.result(timeout)

    def snapshot(self, timeout: float = 5.0) -> dict:
        return self.call(lambda: self.phone.snapshot(self.clock()), timeout)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ev.ClockTick()
            self.last_beat = time.monotonic()
            if item is None:
                return
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.tick_s
                if not isinstance(item, ev.ClockTick):
                    self._handle(ev.ClockTick())
            if isinstance(item, tuple) and item and item[0] == "call":
                _, fn, future = item
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)
                continue
            self._handle(item)

    def _handle(self, event: Any) -> None:
        self.handled += 1
        if not isinstance(event, ev.ClockTick):
            log.debug("event", extra=kv(event=event))
        self._track_quality(event)
        if isinstance(event, ev.ConfigApplied):
            self._apply_config_side_effects(event.config)
        try:
            commands = self.phone.handle(event, self.clock())
        except Exception:
            log.exception("phone failed to handle event", extra=kv(event=event))
            return
        self._execute(commands)

    def _execute(self, commands: list[Any]) -> None:
        for command in commands:
            try:
                self._execute_one(command)
            except Exception:
                log.exception("command failed", extra=kv(command=command))

    def _execute_one(self, command: Any) -> None:
        if isinstance(command, SIP_COMMANDS):
            if self.engine is not None:
                self.engine.submit(command)
        elif isinstance(command, ev.PlayTone):
            if self.audio is not None:
                self.audio.play_tone(command.tone)
        elif isinstance(command, ev.StopTone):
            if self.audio is not None:
                self.audio.stop_tone()
        elif isinstance(command, ev.SetMute):
            if self.audio is not None:
                self.audio.set_mute(command.muted)
            if self.engine is not None:
                self.engine.submit(command)
        elif isinstance(command, ev.SetVolume):
            self._set_volume(command)
        elif isinstance(command, ev.StartTimer):
            self._timers.set(command.name, command.seconds)
        elif isinstance(command, ev.CancelTimer):
            self._timers.cancel(command.name)
        elif isinstance(command, ev.Render):
            self.screen = command.screen
            if self._display:
                self._display.submit(command.screen)
        elif isinstance(command, ev.SetLed):
            if self.board is not None and hasattr(self.board, "set_led"):
                self.board.set_led(command.name, command.state)
        elif isinstance(command, ev.SetRinger):
            if self.board is not None and hasattr(self.board, "set_ringer"):
                self.board.set_ringer(command.on)
        elif isinstance(command, ev.RecordCall):
            record = command.record
            samples = self._quality_for(record)
            self._io.put(lambda: self._record_call(record, samples))
        else:
            log.warning("unknown command ignored", extra=kv(command=command))

    def _apply_config_side_effects(self, config: Any) -> None:
        if self.engine is not None:
            self.engine.apply_config(config)
        if self.audio is not None:
            self.audio.set_tone_plan(config.audio.tone_plan)
        # volumes: the Phone sends SetVolume when the config changes them

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

    # --- workers --------------------------------------------------------------------------------

    def _run_io(self) -> None:
        while (job := self._io.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("background write failed")

    def _track_quality(self, event: Any) -> None:
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
