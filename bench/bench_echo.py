"""The speakerphone's echo canceller on a synthetic room: echo loss over time and double talk.

The far end's speech (espeak-ng, three Harvard sentences, twice: 18 s) plays on the loudspeaker
and reaches the microphone through ``tests.fixtures.echo_path.EchoPath``: delayed 30, 60 or
120 ms, a 40 ms reflection tail, low-passed, 6 dB down, with noise at -60 dBFS. The bridge's
canceller (Speex MDF through ctypes, 10 ms periods at 16 kHz, the configured 200 ms tail) runs
on it period by period. Printed:

- ERLE (echo return loss enhancement, dB) per second where only the far end talks, the
  converged median (after 6 s) and the same without the canceller;
- double talk: the near end (other sentences) talks over the far end once the canceller has
  converged; its speech against everything else in the output (SNR) and PESQ (narrowband /
  wideband) of the output against the near end alone, for the microphone as it was, after the
  canceller, and the best case (near end plus the same noise, no echo);
- the canceller's CPU time per second of audio on this host.

``OFFHOOK_BENCH_TAIL_MS`` sets the tail (default 200).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from offhook.firmware.audio.echo import EchoCanceller
from tests.fixtures.echo_path import (
    EchoPath,
    EchoScene,
    erle_over_time,
    near_end_snr_db,
    run_canceller,
    scene,
)
from tests.fixtures.speech import RATE, make_reference, resample

PERIOD = RATE // 100
CONVERGED_AFTER_S = 6.0
DELAYS_MS = (30, 60, 120)
NEAR_TEXT = "A large size in stockings is hard to sell. The boy was there when the sun rose."


def _cancel(room: EchoScene, tail_ms: int) -> tuple[np.ndarray, float]:
    canceller = EchoCanceller(RATE, PERIOD, tail_ms)
    started = time.process_time()
    output = run_canceller(room.mic, room.speaker, PERIOD, canceller.process)
    cpu = time.process_time() - started
    canceller.close()
    return output, cpu / (len(room.mic) / RATE)


def _per_second(points: list[tuple[float, float]]) -> str:
    seconds: dict[int, list[float]] = {}
    for start, erle in points:
        seconds.setdefault(int(start), []).append(erle)
    return " ".join(f"{statistics.fmean(v):4.1f}" for _, v in sorted(seconds.items()))


def _pesq(near: np.ndarray, heard: np.ndarray) -> str:
    from pesq import pesq  # only the speech benchmarks need it

    narrow = pesq(8000, resample(near, RATE, 8000), resample(heard, RATE, 8000), "nb")
    wide = pesq(RATE, near, heard, "wb")
    return f"{narrow:4.2f} / {wide:4.2f}"


def main() -> int:
    tail_ms = int(os.environ.get("OFFHOOK_BENCH_TAIL_MS", "200"))
    with tempfile.TemporaryDirectory(prefix="bench-echo-") as tmp:
        speech = make_reference(Path(tmp) / "far")
        near = make_reference(Path(tmp) / "near", NEAR_TEXT)
    far = np.concatenate([speech, speech])
    print(
        f"echo canceller: Speex MDF (libspeexdsp), {PERIOD} samples per period at {RATE} Hz, "
        f"tail {tail_ms} ms; room: delay, 40 ms reflections, 6 dB down, noise -60 dBFS"
    )
    print("ERLE in dB per second of far-end-only speech (first second first)")
    cpu_shares = []
    for delay in DELAYS_MS:
        room = scene(far, EchoPath(delay_ms=delay))
        output, cpu = _cancel(room, tail_ms)
        cpu_shares.append(cpu)
        points = erle_over_time(room, output)
        late = [e for s, e in points if s >= CONVERGED_AFTER_S]
        off = erle_over_time(room, run_canceller(room.mic, room.speaker, PERIOD, None))
        print(f"  delay {delay:3d} ms: {_per_second(points)}")
        print(
            f"  delay {delay:3d} ms: converged median {statistics.median(late):4.1f} dB "
            f"(without the canceller {statistics.median(e for _, e in off):4.1f} dB)"
        )
    start = len(far) / RATE - len(near) / RATE - 0.5
    room = scene(far, EchoPath(delay_ms=60), near, near_at_s=start)
    output, _ = _cancel(room, tail_ms)
    stop = start + len(near) / RATE
    span = slice(int(start * RATE), int(start * RATE) + len(near))
    print(
        "double talk (delay 60 ms, near end over the far end after convergence): "
        "near-end SNR, PESQ nb / wb against the near end alone"
    )
    for label, heard in (
        ("microphone, no canceller", room.mic),
        ("after the canceller", output),
        ("best case: no echo at all", room.near + room.noise),
    ):
        snr = near_end_snr_db(room, heard, start, stop)
        print(f"  {label:<27} {snr:6.1f} dB   {_pesq(near, heard[span])}")
    print(
        f"canceller CPU: {100 * statistics.fmean(cpu_shares):.2f} % of real time on this host "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
