"""A raw-file AudioEndpoint: the engine's audio without the ALSA bridge (diagnostics, benches).

Capture frames come from a raw S16_LE mono file in order (silence after its end); received
frames are kept in order and written to another raw file by ``close()``. Both run at the pace
of pjsua's conference clock alone, so a recording holds exactly what the engine decoded, with
none of the bridge's rings or device threads in between.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from offhook.contract.atomic import atomic_write_bytes


class FileEndpoint:
    def __init__(
        self, play: Path | None = None, record: Path | None = None, sample_rate: int = 16000
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._frame_bytes = self.frame_samples * 2
        self._source = play.read_bytes() if play is not None else b""
        self._position = 0
        self._record = record
        self._received = bytearray()
        self._lock = threading.Lock()
        self.frames_played = 0

    def read_capture_frame(self) -> bytes:
        start, self._position = self._position, self._position + self._frame_bytes
        frame = self._source[start : start + self._frame_bytes]
        return frame + bytes(self._frame_bytes - len(frame))

    def write_playback_frame(self, pcm: bytes) -> None:
        with self._lock:
            self._received += pcm
            self.frames_played += 1

    def close(self) -> None:
        """Write what was received (if a recording was asked for)."""
        if self._record is not None:
            with self._lock:
                data = bytes(self._received)
            atomic_write_bytes(self._record, data)


class EchoEndpoint:
    """Sends back what it receives, one frame later: a far end for delay measurements."""

    def __init__(self, sample_rate: int = 16000, max_frames: int = 50) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._frames: deque[bytes] = deque(maxlen=max_frames)

    def read_capture_frame(self) -> bytes:
        try:
            return self._frames.popleft()
        except IndexError:
            return bytes(self.frame_samples * 2)

    def write_playback_frame(self, pcm: bytes) -> None:
        self._frames.append(pcm)
