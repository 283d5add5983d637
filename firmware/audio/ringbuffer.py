"""A bounded PCM ring between two clocks (pjsua2's conference clock and the ALSA card's).

The writer and reader use different chunk sizes (20 ms network frames, ALSA periods of 5-40 ms)
and their clocks drift. The ring keeps the latency bounded:

- overflow (writer faster, or reader stalled): the oldest samples are dropped;
- underflow (reader faster, or writer stalled): the read returns silence and leaves what little
  is buffered for the next read, so no partial frame is ever played; after running dry the ring
  first collects ``prime_samples`` beyond one read (a jitter cushion) before it plays again;
- standing latency: if the fill level never fell below ``target`` samples during a whole
  ``drift_window`` reads, the surplus is old audio that only adds delay; it is dropped (a drift
  correction);
- scheduling jitter: with ``max_cushion_samples``, each underrun while the writer is active adds
  ``cushion_step_samples`` to both the priming cushion and the target (up to the maximum), so a
  ring whose two sides are scheduled unevenly (a loaded CPU) stops running dry every few frames;
  each drift correction, which shows the surplus was not needed for a whole window, takes one
  step back.

Counters only run while both sides are active, so an idle direction (no call) counts nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from offhook.firmware.audio.pcm import SAMPLE_BYTES, silence

# A side that has not touched the ring for this long is idle: nothing is counted against it.
IDLE_AFTER_S = 0.2


class RingBuffer:
    def __init__(
        self,
        capacity_samples: int,
        target_samples: int,
        drift_window: int = 50,
        prime_samples: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_cushion_samples: int = 0,
        cushion_step_samples: int = 0,
    ) -> None:
        if capacity_samples <= 0:
            raise ValueError(f"capacity_samples must be positive, not {capacity_samples}")
        if not 0 <= target_samples <= capacity_samples:
            raise ValueError(f"target_samples {target_samples} not in 0..{capacity_samples}")
        if not 0 <= prime_samples < capacity_samples:
            raise ValueError(f"prime_samples {prime_samples} not in 0..{capacity_samples - 1}")
        if max_cushion_samples and not 0 < cushion_step_samples <= max_cushion_samples:
            raise ValueError(
                f"cushion_step_samples {cushion_step_samples} not in 1..{max_cushion_samples}"
            )
        if prime_samples + max_cushion_samples >= capacity_samples:
            raise ValueError(
                f"prime_samples + max_cushion_samples ({prime_samples + max_cushion_samples}) "
                f"must stay below capacity_samples ({capacity_samples})"
            )
        self.capacity = capacity_samples
        self.base_target = target_samples
        self.base_prime = prime_samples
        self.max_cushion = max_cushion_samples
        self.cushion_step = cushion_step_samples
        self.cushion = 0  # extra samples of cushion learnt from underruns
        self.target = target_samples
        self.drift_window = drift_window
        self.prime = prime_samples
        self._primed = False
        self._clock = clock
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._last_write = -1e9
        self._last_read = -1e9
        self._window_reads = 0
        self._window_min = capacity_samples
        self.underruns = 0
        self.overruns = 0
        self.drift_corrections = 0
        self.samples_written = 0
        self.samples_read = 0
        self.samples_dropped = 0

    @property
    def level(self) -> int:
        """Buffered samples."""
        with self._lock:
            return len(self._buf) // SAMPLE_BYTES

    def write(self, pcm: bytes) -> None:
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
        with self._lock:
            now = self._clock()
            self._last_write = now
            self._buf += pcm
            self.samples_written += len(pcm) // SAMPLE_BYTES
            excess = len(self._buf) - self.capacity * SAMPLE_BYTES
            if excess > 0:
                del self._buf[:excess]
                self.samples_dropped += excess // SAMPLE_BYTES
                if now - self._last_read < IDLE_AFTER_S:
                    self.overruns += 1

    def read(self, samples: int) -> bytes:
        """Exactly ``samples`` samples: buffered audio, or silence if not enough is buffered."""
        nbytes = samples * SAMPLE_BYTES
        with self._lock:
            now = self._clock()
            self._last_read = now
            need = nbytes if self._primed else nbytes + self.prime * SAMPLE_BYTES
            if len(self._buf) < need:
                if now - self._last_write < IDLE_AFTER_S:
                    self.underruns += 1
                    self._set_cushion(self.cushion + self.cushion_step)
                self._primed = False
                self._window_reads = 0
                self._window_min = self.capacity
                return silence(samples)
            self._primed = True
            out = bytes(self._buf[:nbytes])
            del self._buf[:nbytes]
            self.samples_read += samples
            self._track_drift()
            return out

    def _track_drift(self) -> None:
        level = len(self._buf) // SAMPLE_BYTES
        self._window_min = min(self._window_min, level)
        self._window_reads += 1
        if self._window_reads < self.drift_window:
            return
        surplus = self._window_min - self.target
        if surplus > 0:
            del self._buf[: surplus * SAMPLE_BYTES]
            self.samples_dropped += surplus
            self.drift_corrections += 1
            self._set_cushion(self.cushion - self.cushion_step)
        self._window_reads = 0
        self._window_min = self.capacity

    def _set_cushion(self, samples: int) -> None:
        self.cushion = max(0, min(self.max_cushion, samples))
        self.target = min(self.capacity, self.base_target + self.cushion)
        self.prime = self.base_prime + self.cushion

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()
            self._primed = False
            self._window_reads = 0
            self._window_min = self.capacity

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "level": len(self._buf) // SAMPLE_BYTES,
                "underruns": self.underruns,
                "overruns": self.overruns,
                "drift_corrections": self.drift_corrections,
                "cushion": self.cushion,
                "samples_written": self.samples_written,
                "samples_read": self.samples_read,
                "samples_dropped": self.samples_dropped,
            }
