"""The audio bridge: ALSA on one side, the SIP engine's media port on the other, tones in between.

Two threads per phone:

- playback: every ALSA period, take call audio from the playback ring (written by the SIP engine),
  add the current tone, apply software gain, saturate, write to the playback PCM;
- capture: read the capture PCM into the capture ring (read by the SIP engine); on the
  speakerphone, through the echo canceller first, with what the playback thread played as its
  reference (``echo.py``).

The SIP engine runs on its own clock (pjsua2's null device), ALSA on the card's; the rings absorb
the drift. A tone change is picked up at the next period. If everything queued in the device is
silence, a new tone also drops that queue so the first tone sample is not stuck behind it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from array import array
from collections.abc import Callable
from functools import partial

from offhook.contract.config import AudioSettings
from offhook.contract.logs import kv
from offhook.firmware.audio import pcm
from offhook.firmware.audio.alsa_device import PcmStream
from offhook.firmware.audio.echo import EchoCanceller, EchoCancellerError, ReferenceQueue
from offhook.firmware.audio.mixer import SpeakerVolume, check_volume, software_gain
from offhook.firmware.audio.ringbuffer import RingBuffer
from offhook.firmware.audio.tones import TONE_PLANS, ToneGenerator, TonePlanError, tone_spec
from offhook.firmware.events import Tone

log = logging.getLogger(__name__)

FRAME_MS = 20  # the SIP side's frame (ptime)
RING_FRAMES = 8  # ring capacity in network frames: bounds the added latency to 160 ms
# Extra cushion a ring may learn from underruns (uneven scheduling of its two sides), in frames;
# it grows one ALSA period per underrun and shrinks again with each drift correction.
MAX_CUSHION_FRAMES = 3
# With no tone, no call audio and nobody taking the mic for this long, both device threads park
# (an idle phone would otherwise wake 200 times a second to move silence) until needed again.
STANDBY_AFTER_S = 1.0
# Played periods the echo canceller's reference may hold while the capture thread catches up.
REFERENCE_PERIODS = 8


class AlsaAudio:
    """AudioEndpoint on pyalsaaudio, with tones, mute and volume.

    ``playback_periods`` / ``capture_periods`` size the ALSA buffers; small playback buffers keep
    the off-hook-to-dial-tone delay short.
    """

    def __init__(
        self,
        settings: AudioSettings,
        playback_periods: int = 3,
        capture_periods: int = 4,
        mixer_device: str = "default",
    ) -> None:
        self.settings = settings
        self.sample_rate = settings.sample_rate
        self.frame_samples = self.sample_rate * FRAME_MS // 1000
        self.period_samples = self.sample_rate * settings.period_ms // 1000
        self.playback_periods = playback_periods
        self.capture_periods = capture_periods
        # Network frames arrive in 20 ms bursts with scheduling jitter: keep one frame of cushion,
        # and more in each direction while its two sides are seen to be scheduled unevenly.
        most, step = MAX_CUSHION_FRAMES * self.frame_samples, self.period_samples
        self.playback_ring = RingBuffer(
            RING_FRAMES * self.frame_samples,
            target_samples=self.frame_samples + self.period_samples,
            prime_samples=self.frame_samples,
            max_cushion_samples=most,
            cushion_step_samples=step,
        )
        self.capture_ring = RingBuffer(
            RING_FRAMES * self.frame_samples,
            self.period_samples,
            max_cushion_samples=most,
            cushion_step_samples=step,
        )
        self._volume = SpeakerVolume(settings.mixer_control, mixer_device, settings.speaker_volume)
        self._ring_gain = software_gain(settings.ring_volume)
        self._ring_volume = settings.ring_volume
        self._lock = threading.Lock()
        self._plan: str = settings.tone_plan
        self._tone: Tone | None = None
        self._tone_version = 0  # bumped on every change; the playback thread compares
        self._muted = False
        self._running = threading.Event()
        self._wake = threading.Event()  # cuts the playback thread's pacing sleep short
        self._playback_wanted = threading.Event()  # ends the playback thread's standby
        self._capture_wanted = threading.Event()  # ends the capture thread's standby
        self._last_call_audio = time.monotonic()  # last write_playback_frame
        self._last_capture_request = time.monotonic()  # last read_capture_frame
        self.standbys = 0  # times a device thread parked
        self._threads: list[threading.Thread] = []
        self._playback: PcmStream | None = None
        self._capture: PcmStream | None = None
        self._frames_played = 0
        self._frames_captured = 0
        self._network_frames_in = 0
        self._network_frames_out = 0
        self._loop_errors = 0
        self._xruns_of_closed_streams = 0
        # Echo cancellation: only while hands-free (the Runtime follows the Phone's audio path).
        self._handsfree = False
        self._canceller: EchoCanceller | None = None
        self._reference = ReferenceQueue(self.period_samples, REFERENCE_PERIODS)
        self._echo_frames = 0
        self.realtime_threads = 0  # device threads running SCHED_FIFO (audio.realtime_priority)
        # Diagnostics hook: called on the playback thread after each period is handed to ALSA.
        self.on_playback_write: Callable[[bytes], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open both PCMs (AlsaDeviceError names a missing device) and start the threads."""
        if self._running.is_set():
            return
        self._playback = PcmStream(
            self.settings.playback, False, self.sample_rate, self.period_samples,
            self.playback_periods, sleep=self._paced_sleep,
        )  # fmt: skip
        try:
            self._capture = PcmStream(
                self.settings.capture, True, self.sample_rate, self.period_samples,
                self.capture_periods,
            )  # fmt: skip
        except Exception:
            self._playback.close()
            self._playback = None
            raise
        self._running.set()
        self._threads = [
            threading.Thread(target=self._playback_loop, name="audio-playback", daemon=True),
            threading.Thread(target=self._capture_loop, name="audio-capture", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "audio started",
            extra=kv(
                playback=self.settings.playback,
                capture=self.settings.capture,
                rate=self.sample_rate,
                period_ms=self.settings.period_ms,
                plan=self._plan,
            ),
        )

    def stop(self) -> None:
        self._running.clear()
        self._wake.set()
        self._playback_wanted.set()
        self._capture_wanted.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.error("audio thread did not stop", extra=kv(thread=thread.name))
        self._threads = []
        for stream in (self._playback, self._capture):
            if stream is not None:
                self._xruns_of_closed_streams += stream.xruns_recovered
                stream.close()
        self._playback = self._capture = None
        # Stale audio must not reach the network or the speaker after a restart.
        self.playback_ring.clear()
        self.capture_ring.clear()
        self._reference.clear()
        log.info("audio stopped", extra=kv(stats=self.stats))

    def __enter__(self) -> AlsaAudio:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- commands --------------------------------------------------------------------------------

    def play_tone(self, tone: Tone) -> None:
        if not isinstance(tone, Tone):
            raise TonePlanError(f"not a Tone: {tone!r}")
        with self._lock:
            tone_spec(self._plan, tone)  # fail here, in the caller, not on the audio thread
            self._tone = tone
            self._tone_version += 1
        self._wake.set()
        self._playback_wanted.set()

    def stop_tone(self) -> None:
        with self._lock:
            self._tone = None
            self._tone_version += 1
        self._wake.set()

    def set_tone_plan(self, plan: str) -> None:
        if plan not in TONE_PLANS:
            raise TonePlanError(f"unknown tone plan {plan!r}; known: {', '.join(TONE_PLANS)}")
        with self._lock:
            self._plan = plan
            self._tone_version += 1  # a playing tone restarts in the new plan
        self._wake.set()

    def set_mute(self, muted: bool) -> None:
        self._muted = bool(muted)

    def set_handsfree(self, on: bool) -> None:
        """The speakerphone is (or is no longer) the audio path: echo cancellation on or off.

        The canceller is created on the first hands-free use (libspeexdsp is loaded then); if it
        cannot be, the speakerphone works without one and the error is logged."""
        on = bool(on)
        if on and self.settings.echo_cancellation and self._canceller is None:
            try:
                self._canceller = EchoCanceller(
                    self.sample_rate, self.period_samples, self.settings.echo_tail_ms
                )
            except EchoCancellerError as exc:
                log.error("echo cancellation unavailable", extra=kv(error=str(exc)))
        self._handsfree = on
        log.info("audio path", extra=kv(handsfree=on, echo_cancellation=self.echo_cancelling))

    @property
    def echo_cancelling(self) -> bool:
        return self._handsfree and self._canceller is not None

    def set_volume(self, speaker: int) -> None:
        self._volume.set(check_volume(speaker))

    def set_ring_volume(self, ring: int) -> None:
        """Volume of Tone.RING (software gain on top of the speaker volume)."""
        self._ring_gain = software_gain(ring)
        self._ring_volume = ring
        with self._lock:
            self._tone_version += 1  # a ringing tone restarts at the new level

    @property
    def volume(self) -> int:
        return self._volume.volume

    @property
    def ring_volume(self) -> int:
        return self._ring_volume

    @property
    def muted(self) -> bool:
        return self._muted

    @property
    def tone(self) -> Tone | None:
        return self._tone

    @property
    def tone_plan(self) -> str:
        return self._plan

    # --- AudioEndpoint -------------------------------------------------------------------------

    def read_capture_frame(self) -> bytes:
        self._last_capture_request = time.monotonic()
        if not self._capture_wanted.is_set():
            self._capture_wanted.set()
        frame = self.capture_ring.read(self.frame_samples)
        self._network_frames_out += 1
        return pcm.silence(self.frame_samples) if self._muted else frame

    def write_playback_frame(self, frame: bytes) -> None:
        self._last_call_audio = time.monotonic()
        if not self._playback_wanted.is_set():
            self._playback_wanted.set()
        self.playback_ring.write(frame)
        self._network_frames_in += 1

    # --- threads -------------------------------------------------------------------------------

    def _playback_idle(self) -> bool:
        quiet = time.monotonic() - self._last_call_audio > STANDBY_AFTER_S
        return quiet and self.playback_ring.level == 0

    def _playback_still_idle(self, seen_version: int) -> bool:
        return self._tone_version == seen_version and self._playback_idle()

    def _capture_idle(self) -> bool:
        return time.monotonic() - self._last_capture_request > STANDBY_AFTER_S

    def _standby(
        self, stream: PcmStream, wanted: threading.Event, still_idle: Callable[[], bool]
    ) -> None:
        """Park a device thread until ``wanted`` is set.

        The flag is cleared before idleness is checked again, so a request that came in
        between is never missed. The device is stopped while parked (dropped: a card neither
        underruns nor records meanwhile) and dropped again on waking, which restarts its pacing
        from now instead of counting the standby as a stall."""
        wanted.clear()
        if not still_idle() or not self._running.is_set():
            return
        stream.drop()
        self.standbys += 1
        wanted.wait()
        stream.drop()

    def _paced_sleep(self, seconds: float) -> None:
        """Pacing sleep of an unclocked playback PCM; a tone change ends it early."""
        if self._wake.wait(seconds):
            self._wake.clear()

    def _raise_priority(self) -> None:
        """Move the calling device thread to SCHED_FIFO: on a CPU-starved host an ALSA thread
        that waits behind other work under- or overruns its ring (docs/quality.md)."""
        priority = self.settings.realtime_priority
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # this thread
        except OSError as exc:
            log.warning("audio thread stays at normal priority", extra=kv(error=str(exc)))
            return
        with self._lock:
            self.realtime_threads += 1

    def _playback_loop(self) -> None:
        self._raise_priority()
        stream = self._playback
        assert stream is not None
        seen_version = -1
        generator: ToneGenerator | None = None
        tone_gain = 1.0
        fading: tuple[ToneGenerator, float] | None = None  # a replaced tone, faded over one period
        queued_silent = True  # everything written so far (and thus queued) was silence
        while self._running.is_set():
            try:
                with self._lock:
                    version, tone, plan = self._tone_version, self._tone, self._plan
                if version != seen_version:
                    seen_version = version
                    if generator is not None and not generator.finished:
                        fading = (generator, tone_gain)
                    generator = None
                    if tone is not None:
                        generator = ToneGenerator(tone_spec(plan, tone), self.sample_rate)
                        tone_gain = self._ring_gain if tone is Tone.RING else 1.0
                        if queued_silent and stream.transfers:
                            stream.drop()
                if generator is None and fading is None and self._playback_idle():
                    self._standby(
                        stream,
                        self._playback_wanted,
                        partial(self._playback_still_idle, seen_version),
                    )
                    continue
                tone_frame = self._tone_period(generator, tone_gain, fading)
                fading = None
                if generator is not None and generator.finished:
                    generator = None
                frame = self._next_playback_period(tone_frame)
                stream.write(frame)
                if self._handsfree:  # what the loudspeaker plays is what the mic will echo
                    self._reference.put(frame)
                queued_silent = frame.count(0) == len(frame)
                self._frames_played += 1
                hook = self.on_playback_write
                if hook is not None:
                    hook(frame)
            except Exception:
                # Keep the phone audible: log, count, and carry on after one period.
                self._loop_errors += 1
                log.exception("audio playback loop error", extra=kv(count=self._loop_errors))
                time.sleep(stream.period_s)

    def _tone_period(
        self,
        generator: ToneGenerator | None,
        gain: float,
        fading: tuple[ToneGenerator, float] | None,
    ) -> array | None:
        """One period of tone: the current tone plus the fade-out of the one it replaced."""
        n = self.period_samples
        parts: list[array] = []
        if generator is not None:
            tone = generator.render(n)
            parts.append(tone if gain == 1.0 else pcm.mix([tone], gain))
        if fading is not None:
            old, old_gain = fading
            tail = old.fade_out(n)
            parts.append(tail if old_gain == 1.0 else pcm.mix([tail], old_gain))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pcm.mix(parts)

    def _next_playback_period(self, tone: array | None) -> bytes:
        call = self.playback_ring.read(self.period_samples)
        gain = self._volume.gain
        call_silent = call.count(0) == len(call)
        if tone is None:
            if call_silent or gain == 1.0:
                return call
            return pcm.to_bytes(pcm.mix([pcm.to_samples(call)], gain))
        if call_silent:
            return pcm.to_bytes(tone if gain == 1.0 else pcm.mix([tone], gain))
        return pcm.to_bytes(pcm.mix([pcm.to_samples(call), tone], gain))

    def _capture_loop(self) -> None:
        self._raise_priority()
        stream = self._capture
        assert stream is not None
        cancelling = False
        while self._running.is_set():
            try:
                if self._capture_idle():
                    self.capture_ring.clear()  # what the mic heard before is stale by now
                    self._standby(stream, self._capture_wanted, self._capture_idle)
                    continue
                captured = stream.read()
                canceller = self._canceller
                if cancelling and not self.echo_cancelling and canceller is not None:
                    canceller.reset()  # back on the handset: the next room is another one
                    self._reference.clear()
                cancelling = self.echo_cancelling
                if cancelling and canceller is not None:
                    captured = canceller.process(captured, self._reference.take())
                    self._echo_frames += 1
                self.capture_ring.write(captured)
                self._frames_captured += 1
            except Exception:
                self._loop_errors += 1
                log.exception("audio capture loop error", extra=kv(count=self._loop_errors))
                time.sleep(stream.period_s)

    def playout_gaps(self) -> tuple[int, int]:
        """(gaps, network frames written): each playback-ring underrun (silence), overrun or
        drift correction (audio skipped) and each playback xrun is a gap the listener hears;
        the call's MOS counts them (PlayoutGaps)."""
        play = self.playback_ring.stats()
        gaps = play["underruns"] + play["overruns"] + play["drift_corrections"]
        stream = self._playback
        xruns = stream.xruns_recovered if stream is not None else 0  # the device ran dry
        return gaps + xruns, self._network_frames_in

    # --- stats -----------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        play = self.playback_ring.stats()
        cap = self.capture_ring.stats()
        streams = (self._playback, self._capture)
        xruns = self._xruns_of_closed_streams + sum(
            s.xruns_recovered for s in streams if s is not None
        )
        return {
            "underruns": play["underruns"] + cap["underruns"],
            "overruns": play["overruns"] + cap["overruns"],
            "xruns_recovered": xruns,
            "frames_played": self._frames_played,
            "frames_captured": self._frames_captured,
            "drift_corrections": play["drift_corrections"] + cap["drift_corrections"],
            "playback_cushion": play["cushion"],
            "capture_cushion": cap["cushion"],
            "playback_underruns": play["underruns"],
            "playback_overruns": play["overruns"],
            "capture_underruns": cap["underruns"],
            "capture_overruns": cap["overruns"],
            "playback_ring_level": play["level"],
            "capture_ring_level": cap["level"],
            "network_frames_in": self._network_frames_in,
            "network_frames_out": self._network_frames_out,
            "loop_errors": self._loop_errors,
            "echo_cancelled_periods": self._echo_frames,
            "echo_reference_dropped": self._reference.dropped,
            "realtime_threads": self.realtime_threads,
        }
