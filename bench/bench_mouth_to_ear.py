"""Mouth-to-ear delay through the phone's own audio path: the bridge vs the engine bare, same run.

The phone under test runs in this process and calls an echo far end (``python -m
offhook.firmware.sip --echo``, which sends back what it receives) through Kamailio and the media
relay. Its mic holds a click (5 ms of 1 kHz) every two seconds. Each click's mouth time is when the
capture device delivered the period holding it, its ear time when the period holding its echo
was handed to the playback device, both on this process's clock:

- ``offhook``: the engine with the phone's ALSA bridge (``AlsaAudio`` on file PCMs), timed at the
  capture ring's writes and the playback thread's ``on_playback_write`` (the playback device's
  own buffer, up to 3 periods, comes on top);
- ``pjsua2``: the same engine with a file endpoint, timed at pjsua's ``read_capture_frame`` and
  ``write_playback_frame`` calls.

Both round trips hold the same far end and network; the difference is what the bridge adds
(both directions). ``OFFHOOK_BENCH_JITTER_MS`` (default 40) is the relay's jitter for the second
pass. baresip has no equivalent hook, so it is not in this bench.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from offhook.contract.config import AudioSettings
from offhook.firmware.audio import AlsaAudio
from offhook.firmware.audio.virtual import mic_pcm, speaker_pcm, write_alsa_config
from offhook.firmware.devtools.impairment import Impairment
from offhook.firmware.devtools.kamailio import KamailioServer
from offhook.firmware.devtools.media_relay import MediaRelay
from offhook.firmware.events import CallState, Hangup, MakeCall
from offhook.firmware.sip.file_endpoint import FileEndpoint
from tests.fixtures.engine_process import EngineProcess
from tests.fixtures.kamailio import DEFAULT_USERS
from tests.fixtures.sip_phone import account, phone_config, running_engine

RATE = 16000
CLICK_EVERY_S = 2.0  # far apart enough that an echo cannot be taken for the next click
CLICKS = 8
_CLICK = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE * 5 // 1000) / RATE) * 32767).astype("<i2")


def click_track(seconds: float) -> bytes:
    track = np.zeros(int(seconds * RATE), dtype="<i2")
    for k in range(int(seconds / CLICK_EVERY_S)):
        start = int((k + 0.5) * CLICK_EVERY_S * RATE)
        track[start : start + len(_CLICK)] = _CLICK
    return track.tobytes()


class Timeline:
    """(time, first sample index) of each chunk that passed a point, and the chunks."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []
        self.chunks: list[bytes] = []
        self.samples = 0
        self._lock = threading.Lock()

    def record(self, pcm: bytes) -> None:
        with self._lock:
            self.marks.append((time.monotonic(), self.samples))
            self.chunks.append(pcm)
            self.samples += len(pcm) // 2

    def time_of(self, sample: int) -> float | None:
        """When the chunk holding ``sample`` passed, plus the sample's offset in it."""
        with self._lock:
            for (when, first), chunk in zip(self.marks, self.chunks, strict=True):
                if first <= sample < first + len(chunk) // 2:
                    return when + (sample - first) / RATE
        return None

    def signal(self) -> np.ndarray:
        with self._lock:
            return np.frombuffer(b"".join(self.chunks), dtype="<i2").astype(np.float64) / 32768


def click_onsets(samples: np.ndarray, threshold: float = 0.05) -> list[int]:
    """First sample of each burst above ``threshold`` after at least 200 ms below it."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    onsets: list[int] = []
    for index in loud:
        if not onsets or index - onsets[-1] > RATE // 5:
            onsets.append(int(index))
    return onsets


def delays(mouth: Timeline, ear: Timeline) -> list[float]:
    """Per heard click: ms from its mouth time (the latest click sent before it) to its ear time."""
    sent = [(t, s) for s in click_onsets(mouth.signal()) if (t := mouth.time_of(s)) is not None]
    found = []
    for sample in click_onsets(ear.signal()):
        heard = ear.time_of(sample)
        if heard is None:
            continue
        before = [t for t, _ in sent if t < heard]
        if before and heard - before[-1] < CLICK_EVERY_S * 0.9:
            found.append((heard - before[-1]) * 1000)
    return found


class TimedFiles(FileEndpoint):
    def __init__(self, play: Path, mouth: Timeline, ear: Timeline) -> None:
        super().__init__(play=play, sample_rate=RATE)
        self.mouth, self.ear = mouth, ear

    def read_capture_frame(self) -> bytes:
        frame = super().read_capture_frame()
        self.mouth.record(frame)
        return frame

    def write_playback_frame(self, pcm: bytes) -> None:
        super().write_playback_frame(pcm)
        self.ear.record(pcm)


def _bridge(directory: Path, mic: Path, mouth: Timeline, ear: Timeline) -> AlsaAudio:
    speaker = speaker_pcm(directory / "speaker.raw")
    settings = AudioSettings(
        playback=speaker, capture=mic_pcm(mic), sample_rate=RATE, speaker_volume=100
    )
    audio = AlsaAudio(settings)
    write = audio.capture_ring.write

    def captured(pcm: bytes) -> None:  # runs on the capture thread right after the device read
        mouth.record(pcm)
        write(pcm)

    audio.capture_ring.write = captured  # type: ignore[method-assign]
    audio.on_playback_write = ear.record
    audio.start()
    return audio


def _round_trips(kam: KamailioServer, far_user: str, directory: Path, bridge: bool) -> list[float]:
    mic = directory / "clicks.raw"
    mic.write_bytes(click_track(CLICKS + 30))
    mouth, ear = Timeline(), Timeline()
    config = phone_config(kam, [account(kam, "1001")], codecs=["PCMU"])
    stop: Callable[[], None]
    if bridge:
        audio = _bridge(directory, mic, mouth, ear)
        endpoint: object = audio
        stop = audio.stop
    else:
        endpoint = TimedFiles(mic, mouth, ear)
        stop = lambda: None  # noqa: E731
    try:
        with running_engine(config, endpoint) as (engine, events):  # type: ignore[arg-type]
            mark = events.mark()
            engine.submit(MakeCall(0, far_user))
            call = events.wait_call_state(CallState.CONFIRMED, start=mark)
            time.sleep(CLICKS * CLICK_EVERY_S)
            engine.submit(Hangup(call.call_id))
            events.wait_call_state(CallState.DISCONNECTED, call.call_id, start=mark)
    finally:
        stop()
    return delays(mouth, ear)[1:]  # the first click may meet jitter buffers still filling


def main() -> int:
    jitter = float(os.environ.get("OFFHOOK_BENCH_JITTER_MS", "40"))
    results: dict[tuple[str, float], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-m2e-") as tmp, MediaRelay() as relay:
        base = Path(tmp)
        previous = os.environ.get("ALSA_CONFIG_PATH")
        os.environ["ALSA_CONFIG_PATH"] = str(write_alsa_config(base))
        kam = KamailioServer(base / "kamailio", media_relay=relay.control_address)
        for user, password in DEFAULT_USERS.items():
            kam.add_user(user, password)
        try:
            with kam:
                far_config = phone_config(kam, [account(kam, "1002")], codecs=["PCMU"])
                with EngineProcess(base / "far", far_config, "--echo") as far:
                    far.wait_event("RegistrationChanged", registered="True")
                    answer = threading.Thread(target=_answer_calls, args=(far,), daemon=True)
                    answer.start()
                    for network_jitter in (0.0, jitter):
                        relay.configure(Impairment(jitter_ms=network_jitter), seed=1)
                        for pair, bridge in (("offhook", True), ("pjsua2", False)):
                            run_dir = base / f"{pair}-{network_jitter:g}"
                            run_dir.mkdir()
                            results[(pair, network_jitter)] = _round_trips(
                                kam, "1002", run_dir, bridge
                            )
        finally:
            if previous is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = previous
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"round trip mouth -> echo far end -> ear, PCMU, {CLICKS} clicks a run; load {load}")
    for network_jitter in (0.0, jitter):
        medians = {}
        for pair in ("offhook", "pjsua2"):
            found = results[(pair, network_jitter)]
            if not found:
                print(f"[jitter {network_jitter:g} ms] {pair}: no click heard back")
                continue
            medians[pair] = statistics.median(found)
            print(f"[jitter {network_jitter:g} ms] {pair}: median {medians[pair]:.1f} ms "
                  f"(min {min(found):.1f}, max {max(found):.1f}, {len(found)} clicks)")  # fmt: skip
        if len(medians) == 2:
            added = medians["offhook"] - medians["pjsua2"]
            print(f"[jitter {network_jitter:g} ms] the bridge adds {added:.1f} ms round trip "
                  f"(+ the playback device's buffer, up to 30 ms)")  # fmt: skip
    return 0


def _answer_calls(far: EngineProcess) -> None:
    """The echo far end answers every incoming call."""
    seen = 0
    while far.process is not None and far.process.poll() is None:
        try:
            event = far.wait_event("CallIncoming", timeout=1.0, start=seen)
        except AssertionError:
            continue
        seen = far.mark()
        far.send(f"answer {event['call_id']}")


if __name__ == "__main__":
    raise SystemExit(main())
