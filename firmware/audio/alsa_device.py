"""One ALSA PCM (pyalsaaudio) opened for 16-bit mono, with pacing and xrun recovery.

alsa-lib's ``null`` and ``file`` PCMs (and some network sinks) are unclocked: they accept or
return any amount of audio at once. A thread driving one would spin a core and run arbitrarily
ahead of real time, so the device paces itself by the wall clock until a transfer blocks, which
proves the device has a clock of its own; from then on it is left to the device. The pacing
models a card with ``periods`` periods of buffer: after opening (or a drop) that many periods go
in at once, then one per period.

A PCM with a sound card behind it (alsa-lib reports the card, through ``plug`` or ``dmix`` too)
is clocked from the start and stays so: a writer too starved to ever wait on it is no reason
to pace it by the wall clock.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

import alsaaudio

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

# A transfer that blocks for at least this share of a period shows the device has its own clock.
_BLOCKING_SHARE = 0.25
# So many blocking transfers in a row make a device "clocked": a single slow write (CPU contention)
# must not switch the pacing off, or an unclocked device would spin a core.
_CLOCKED_AFTER = 5


# States a dropped PCM may be left in for pyalsaaudio's next transfer to restart it.
_RESTARTABLE = (alsaaudio.PCM_STATE_SETUP, alsaaudio.PCM_STATE_PREPARED)


class AlsaDeviceError(OffhookError, RuntimeError):
    """An ALSA PCM that cannot be opened or used; the message names the device."""


# alsa-lib prints every failed lookup to stderr ("ALSA lib pcm.c:2666:(snd_pcm_open_noupdate)
# Unknown PCM default" and a dozen like it), over the simulator's terminal and before our own
# message. Its error handler is replaced once per process by one that logs at debug level; the
# error that matters reaches the caller as an AlsaDeviceError.
_ErrorHandler = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_handler_lock = threading.Lock()
_installed_handler: object = None


def _log_alsa_lib_error(file: bytes, line: int, function: bytes, err: int, fmt: bytes) -> None:
    # The message's arguments are C varargs, out of reach here; the format names the problem.
    log.debug(
        "alsa-lib error",
        extra=kv(
            at=f"{(file or b'').decode(errors='replace')}:{line}",
            function=(function or b"").decode(errors="replace"),
            err=err,
            format=(fmt or b"").decode(errors="replace").strip(),
        ),
    )


def route_alsa_lib_errors_to_log() -> None:
    """Send alsa-lib's own error messages to the log instead of stderr (idempotent)."""
    global _installed_handler
    with _handler_lock:
        if _installed_handler is not None:
            return
        name = ctypes.util.find_library("asound")
        if name is None:
            return
        try:
            library = ctypes.CDLL(name)  # the copy pyalsaaudio already loaded
            handler = _ErrorHandler(_log_alsa_lib_error)
            library.snd_lib_error_set_handler(handler)
        except (OSError, AttributeError) as exc:
            log.debug("alsa-lib error handler not set", extra=kv(error=str(exc)))
            return
        _installed_handler = handler  # must outlive every call alsa-lib makes to it
        # and alsa-lib must not call into Python once the interpreter is going away
        atexit.register(library.snd_lib_error_set_handler, None)


def open_failure_hint() -> str:
    """What to add to a failed open when the cause is plain: no sound card at all."""
    try:
        cards = alsaaudio.cards()
    except alsaaudio.ALSAAudioError:
        cards = []
    if cards:
        return ""
    return (
        '; this machine has no sound card: set [audio] playback and capture to "null"'
        " to run without audio"
    )


class PcmStream:
    """A PCM for playback or capture in period-sized chunks of S16_LE mono."""

    def __init__(
        self,
        device: str,
        capture: bool,
        sample_rate: int,
        period_samples: int,
        periods: int,
        lead_periods: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.device = device
        self.capture = capture
        self.sample_rate = sample_rate
        self.period_samples = period_samples
        self.period_s = period_samples / sample_rate
        self.periods = periods
        self.lead_periods = periods if lead_periods is None else lead_periods
        self._clock = clock
        self._sleep = sleep
        self.clocked = False  # True while transfers block: the device paces us
        self.on_card = False  # a sound card behind the PCM: clocked for good
        self._blocking_streak = 0
        self._free_streak = 0
        self.xruns_recovered = 0
        self.reopens = 0  # PCMs a drop left where pyalsaaudio cannot restart them (dmix)
        self.transfers = 0
        self._anchor = 0.0
        self._transferred = 0
        self._pcm = self._open()

    @property
    def direction(self) -> str:
        return "capture" if self.capture else "playback"

    def _open(self) -> alsaaudio.PCM:
        route_alsa_lib_errors_to_log()
        kind = alsaaudio.PCM_CAPTURE if self.capture else alsaaudio.PCM_PLAYBACK
        try:
            pcm = alsaaudio.PCM(
                kind,
                mode=alsaaudio.PCM_NORMAL,
                device=self.device,
                channels=1,
                rate=self.sample_rate,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self.period_samples,
                periods=self.periods,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise AlsaDeviceError(
                f"cannot open ALSA {self.direction} PCM {self.device!r}: {exc}"
                + open_failure_hint()
            ) from None
        info = pcm.info()
        if info.get("rate") != self.sample_rate or info.get("channels") != 1:
            pcm.close()
            raise AlsaDeviceError(
                f"ALSA {self.direction} PCM {self.device!r} refused {self.sample_rate} Hz mono "
                f"(got {info.get('rate')} Hz, {info.get('channels')} channels)"
            )
        if info.get("period_size") != self.period_samples:
            log.info(
                "alsa period adjusted",
                extra=kv(
                    device=self.device,
                    direction=self.direction,
                    wanted=self.period_samples,
                    got=info.get("period_size"),
                ),
            )
        # alsa-lib names the sound card behind a PCM (through plug, dmix...), -1 for none (null,
        # file): a card has its own clock, so it paces us from the first transfer, even while a
        # starved writer never waits on it. Guessing from blocking is only for card-less PCMs.
        self.on_card = int(info.get("card_no", -1)) >= 0
        if self.on_card and not self.clocked:
            self.clocked = True
            log.info(
                "audio device clocked",
                extra=kv(device=self.device, direction=self.direction, card=info.get("card_no")),
            )
        self._anchor = self._clock()
        self._transferred = 0
        return pcm

    def _check_xrun(self) -> None:
        """Recover a real device's xrun before the next transfer (pyalsaaudio would re-prepare
        silently; we want it counted)."""
        if self._pcm.state() == alsaaudio.PCM_STATE_XRUN:
            self._recover("alsa reported xrun")

    def _recover(self, why: str) -> None:
        self.xruns_recovered += 1
        log.warning(
            "audio xrun", extra=kv(device=self.device, direction=self.direction, reason=why)
        )
        self._drop_queued("xrun recovery")

    def _drop_queued(self, during: str) -> None:
        """Discard what is queued and leave the PCM where the next transfer restarts it.

        pyalsaaudio re-prepares a dropped PCM only if it reports SETUP. alsa-lib's dmix (the
        default PCM of most cards, USB ones too) under plug and softvol still reports RUNNING
        after a drop while refusing every write with EBADFD ("File descriptor in bad state"), so
        the next transfer would fail, be recovered by another drop, and so on for ever. pyalsaaudio
        cannot prepare by itself: such a PCM is reopened instead (a few milliseconds).
        """
        try:
            self._pcm.drop()
        except alsaaudio.ALSAAudioError as exc:
            log.warning(
                "audio drop failed", extra=kv(device=self.device, during=during, error=str(exc))
            )
        try:
            state = self._pcm.state()
        except alsaaudio.ALSAAudioError:  # closed: an earlier reopen failed, so try again
            state = -1
        self._anchor = self._clock()
        self._transferred = 0
        if state not in _RESTARTABLE:
            self._reopen(f"state {state} after drop")  # AlsaDeviceError if the card is gone

    def _reopen(self, why: str) -> None:
        self.reopens += 1
        log.info(
            "audio device reopened",
            extra=kv(device=self.device, direction=self.direction, reason=why),
        )
        try:
            self._pcm.close()
        except alsaaudio.ALSAAudioError as exc:
            log.warning("audio close failed", extra=kv(device=self.device, error=str(exc)))
        self._pcm = self._open()

    def _pace(self, started: float) -> None:
        """After a transfer: learn whether the device blocks; if not, keep to wall-clock time."""
        now = self._clock()
        self.transfers += 1
        if now - started >= _BLOCKING_SHARE * self.period_s:
            self._blocking_streak += 1
            self._free_streak = 0
        else:
            self._blocking_streak = 0
            self._free_streak += 1
        if not self.clocked and self._blocking_streak >= _CLOCKED_AFTER:
            self.clocked = True
            log.info("audio device clocked", extra=kv(device=self.device, direction=self.direction))
        elif self.clocked and not self.on_card and self._free_streak > 2 * self.periods + 2:
            # A clocked device never accepts more than its buffer without blocking.
            self.clocked = False
            self._anchor, self._transferred = now, 0
            log.info(
                "audio device unclocked", extra=kv(device=self.device, direction=self.direction)
            )
        if self.clocked:
            return
        self._transferred += 1
        due = self._anchor + (self._transferred - self.lead_periods) * self.period_s
        behind = now - (self._anchor + self._transferred * self.period_s)
        if behind > self.periods * self.period_s:
            # We stalled longer than the device buffer: on a real card that is an underrun.
            self._recover(f"stalled {behind * 1000:.0f} ms")
            return
        if due > now:
            self._sleep(due - now)

    def write(self, pcm: bytes) -> None:
        """Play one period (blocks on a clocked device; paced by wall clock otherwise)."""
        self._check_xrun()
        started = self._clock()
        try:
            written = self._pcm.write(pcm)
        except alsaaudio.ALSAAudioError as exc:
            self._recover(f"write failed: {exc}")
            return
        if written < 0:
            # pyalsaaudio reports an underrun it has already prepared from as -EPIPE, unraised:
            # the period was not played. Counted, and the PCM is left as it is (prepared).
            self.xruns_recovered += 1
            log.warning(
                "audio xrun",
                extra=kv(
                    device=self.device, direction=self.direction, reason=f"write returned {written}"
                ),
            )
            self._anchor, self._transferred = self._clock(), 0
            return
        self._pace(started)

    def read(self) -> bytes:
        """Capture one period; on a transient error returns silence and recovers."""
        self._check_xrun()
        started = self._clock()
        try:
            length, data = self._pcm.read()
        except alsaaudio.ALSAAudioError as exc:
            self._recover(f"read failed: {exc}")
            return bytes(self.period_samples * 2)
        if length < 0:
            self._recover(f"read returned {length}")
            return bytes(self.period_samples * 2)
        self._pace(started)
        want = self.period_samples * 2
        if len(data) < want:
            data += bytes(want - len(data))
        return data[:want]

    def drop(self) -> None:
        """Discard what is queued in the device (e.g. silence ahead of a new tone)."""
        self._drop_queued("drop")

    def close(self) -> None:
        try:
            self._pcm.close()
        except alsaaudio.ALSAAudioError as exc:
            log.warning("audio close failed", extra=kv(device=self.device, error=str(exc)))
