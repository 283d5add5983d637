"""Off-hook -> dial tone: time from ``play_tone(DIAL)`` to the first non-silent audio at ALSA.

Both sides play into the same kind of PCM: alsa-lib's ``file`` plugin over ``null`` (private
alsa-lib config), 16 kHz mono S16_LE, 10 ms periods, 3-period buffer. Figures:

- ours, write path: play_tone() -> first non-silent period handed to the PCM (pcm.write returned);
- ours, file: play_tone() -> first non-silent sample appears in the PCM's output file;
- peer, ``aplay`` of a pre-generated dial-tone WAV on the same PCM with the same period and buffer:
  exec -> first non-silent sample in its output file.

The file plugin keeps one buffer of audio before writing it out, so the file figures include the
buffer length for us (we play in real time) but hardly for aplay (the unclocked PCM lets it push
the whole WAV at once). Run: ``.venv/bin/python -m bench offhook_tone`` (OFFHOOK_BENCH_RUNS=N).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

from offhook.contract.config import AudioSettings
from offhook.firmware.audio.bridge import AlsaAudio
from offhook.firmware.audio.pcm import to_bytes
from offhook.firmware.audio.tones import ToneGenerator, tone_spec
from offhook.firmware.audio.virtual import mic_pcm, speaker_pcm, use_private_config
from offhook.firmware.events import Tone

RATE = 16000
PERIOD_MS = 10
PERIODS = 3
TIMEOUT_S = 2.0
GOAL_MS = 30.0


def _first_sound_in(path: Path, offset: int, start: float, timeout: float = TIMEOUT_S) -> float:
    """Seconds from ``start`` until a non-zero sample shows up in ``path`` after ``offset``."""
    deadline = start + timeout
    while True:
        now = time.perf_counter()
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            if any(data[: len(data) // 2 * 2]):
                return now - start
            offset += len(data) // 2 * 2
        if now > deadline:
            raise TimeoutError(f"no sound in {path} within {timeout} s")
        time.sleep(0.0002)


def _pctl(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _measure_ours(tmp: Path, runs: int) -> tuple[list[float], list[float]]:
    out = tmp / "ours.raw"
    mic = tmp / "mic.raw"
    mic.write_bytes(bytes(2 * RATE * 60))
    settings = AudioSettings(
        playback=speaker_pcm(out), capture=mic_pcm(mic), sample_rate=RATE, period_ms=PERIOD_MS,
        speaker_volume=100,
    )  # fmt: skip
    audio = AlsaAudio(settings, playback_periods=PERIODS)
    first_write: list[float] = []
    armed = threading.Event()

    def on_write(frame: bytes) -> None:
        if armed.is_set() and any(frame):
            first_write.append(time.perf_counter())
            armed.clear()

    audio.on_playback_write = on_write
    write_ms: list[float] = []
    file_ms: list[float] = []
    audio.start()
    try:
        time.sleep(0.2)
        for _ in range(runs):
            time.sleep(0.1 + random.uniform(0, PERIOD_MS / 1000))  # off-hook at any phase
            offset = out.stat().st_size // 2 * 2
            first_write.clear()
            armed.set()
            start = time.perf_counter()
            audio.play_tone(Tone.DIAL)
            file_ms.append(1000 * _first_sound_in(out, offset, start))
            _wait(lambda: bool(first_write))
            write_ms.append(1000 * (first_write[0] - start))
            audio.stop_tone()
            time.sleep(0.1)  # let the tail of the tone flush into the file
    finally:
        audio.stop()
    return write_ms, file_ms


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the playback thread wrote no tone")
        time.sleep(0.0005)


def _dial_wav(path: Path, seconds: float = 2.0) -> None:
    tone = ToneGenerator(tone_spec("us", Tone.DIAL), RATE).render(int(seconds * RATE))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(to_bytes(tone))


def _measure_aplay(tmp: Path, runs: int) -> list[float]:
    aplay = shutil.which("aplay")
    if aplay is None:
        raise RuntimeError("aplay (alsa-utils) is not installed")
    wav = tmp / "dial.wav"
    _dial_wav(wav)
    results: list[float] = []
    for i in range(runs):
        out = tmp / f"aplay-{i}.raw"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [
                aplay, "-q", "-D", speaker_pcm(out), f"--period-time={PERIOD_MS * 1000}",
                f"--buffer-time={PERIOD_MS * PERIODS * 1000}", str(wav),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            results.append(1000 * _first_sound_in(out, 0, start))
        finally:
            _, err = proc.communicate(timeout=10)
        if proc.returncode != 0:
            raise RuntimeError(f"aplay failed: {err.decode(errors='replace').strip()}")
        out.unlink()
    return results


def _line(name: str, values: list[float]) -> str:
    return (
        f"{name}: median {statistics.median(values):.1f} ms, p99 {_pctl(values, 99):.1f} ms, "
        f"min {min(values):.1f} ms, max {max(values):.1f} ms (n={len(values)})"
    )


def main() -> int:
    runs = int(os.environ.get("OFFHOOK_BENCH_RUNS", "30"))
    with tempfile.TemporaryDirectory(prefix="offhook-bench-tone-") as name:
        tmp = Path(name)
        previous = use_private_config(tmp)  # aplay inherits it
        try:
            write_ms, file_ms = _measure_ours(tmp, runs)
            peer_ms = _measure_aplay(tmp, runs)
        finally:
            if previous is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = previous
    print(f"PCM: alsa-lib file plugin over null, {RATE} Hz, {PERIOD_MS} ms x {PERIODS} periods")
    print(_line("offhook play_tone(DIAL) -> first tone period written to ALSA", write_ms))
    print(_line("offhook play_tone(DIAL) -> first tone sample in the PCM output file", file_ms))
    print(_line("peer aplay exec -> first tone sample in the PCM output file", peer_ms))
    peer = statistics.median(peer_ms)
    print(f"ratio offhook/aplay (median, output file): {statistics.median(file_ms) / peer:.2f}")
    print(f"ratio offhook write path/aplay (median): {statistics.median(write_ms) / peer:.2f}")
    verdict = "met" if _pctl(file_ms, 99) <= GOAL_MS else "NOT met"
    print(f"goal <= {GOAL_MS:.0f} ms at the output file (p99): {verdict}")
    return 0
