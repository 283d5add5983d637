"""A sine-wave AudioEndpoint: a stand-in handset for diagnostics and benchmarks (no ALSA)."""

from __future__ import annotations

import math
from array import array


class SineEndpoint:
    """Captures a continuous sine; counts and discards what would be played."""

    def __init__(self, frequency: float, sample_rate: int = 16000, amplitude: int = 8000) -> None:
        if not 0 < frequency < sample_rate / 2:
            raise ValueError(f"frequency {frequency} Hz must be below Nyquist ({sample_rate / 2})")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        # A one-second loop of whole frames: phase-continuous for whole-Hz frequencies.
        loop_frames = 50  # one second
        step = 2 * math.pi * frequency / sample_rate
        samples = array("h", (round(amplitude * math.sin(step * i)) for i in range(sample_rate)))
        frame_bytes = self.frame_samples * 2
        raw = samples.tobytes()
        self._frames = [raw[i * frame_bytes : (i + 1) * frame_bytes] for i in range(loop_frames)]
        self._next = 0
        self.frames_played = 0

    def read_capture_frame(self) -> bytes:
        frame = self._frames[self._next]
        self._next = (self._next + 1) % len(self._frames)
        return frame

    def write_playback_frame(self, pcm: bytes) -> None:
        self.frames_played += 1
