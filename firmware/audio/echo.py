"""Acoustic echo cancellation for the speakerphone: Speex's canceller (libspeexdsp) via ctypes.

pjsua2 runs on its null sound device, so pjmedia's echo canceller (which sits in its sound port)
never sees our audio: the canceller runs in the bridge instead. The loudspeaker's output is the
far-end reference, the microphone's input the near end plus the echo of that reference; Speex's
adaptive filter (MDF, multidelay block frequency domain) learns the echo path up to ``tail_ms``
long and subtracts its estimate, on 16-bit mono frames of one ALSA period. Speex's residual echo
suppressor (its preprocessor) is left out on purpose: on the synthetic path of
``python -m bench echo`` it added nothing to the echo loss in single talk and took the near end's
speech down by 14 dB in double talk.

``EchoCanceller.process(mic, speaker)`` takes the captured period and the played period it goes
with; the bridge keeps the played periods in a short FIFO (``ReferenceQueue``) between its
playback and capture threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import deque

from offhook.contract.errors import OffhookError

# speex/speex_echo.h (stable since speexdsp 1.2rc1)
_ECHO_SET_SAMPLING_RATE = 24

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class EchoCancellerError(OffhookError, RuntimeError):
    """libspeexdsp is missing or refused the settings (the message says which)."""


def _speexdsp() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise EchoCancellerError(
                f"echo cancellation needs libspeexdsp ({name}: {exc}); "
                "install the Debian package libspeexdsp1"
            ) from exc
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.c_char_p] * 3
        _lib = lib
        return lib


class EchoCanceller:
    """One Speex echo canceller for frames of ``frame_samples``.

    Not thread-safe: the bridge calls ``process`` from its capture thread only."""

    def __init__(self, sample_rate: int, frame_samples: int, tail_ms: int) -> None:
        if frame_samples <= 0 or tail_ms <= 0:
            raise EchoCancellerError(
                f"echo canceller: frame {frame_samples} samples, tail {tail_ms} ms"
            )
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.tail_ms = tail_ms
        self._lib = _speexdsp()
        tail_samples = sample_rate * tail_ms // 1000
        self._echo = self._lib.speex_echo_state_init(frame_samples, tail_samples)
        if not self._echo:
            raise EchoCancellerError("libspeexdsp could not create an echo canceller")
        rate = ctypes.c_int(sample_rate)
        self._lib.speex_echo_ctl(self._echo, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._out = ctypes.create_string_buffer(frame_samples * 2)
        self.frames = 0

    def process(self, mic: bytes, speaker: bytes) -> bytes:
        """The captured period with the echo of ``speaker`` (what was played) taken out."""
        size = self.frame_samples * 2
        if len(mic) != size or len(speaker) != size:
            raise EchoCancellerError(
                f"echo canceller works on {size}-byte periods, got mic {len(mic)}, "
                f"speaker {len(speaker)}"
            )
        if self._echo is None:
            raise EchoCancellerError("echo canceller used after close()")
        self._lib.speex_echo_cancellation(self._echo, mic, speaker, self._out)
        self.frames += 1
        return self._out.raw

    def reset(self) -> None:
        """Forget the learnt echo path (the loudspeaker, its level or the room changed)."""
        if self._echo is not None:
            self._lib.speex_echo_state_reset(self._echo)

    def close(self) -> None:
        if self._echo is not None:
            self._lib.speex_echo_state_destroy(self._echo)
        self._echo = None


class ReferenceQueue:
    """What the loudspeaker played, period by period, until the capture side takes it.

    The playback thread ``put``s every period it writes; the capture thread ``take``s one per
    period it captures. Playback and capture run one period apart at most in steady state; the
    queue is bounded (the oldest periods go) so a stalled capture thread cannot make the
    reference lag the echo by more than the canceller's tail. An empty queue (playback parked)
    gives silence: nothing was played, so there is no echo to cancel."""

    def __init__(self, period_samples: int, max_periods: int) -> None:
        self._silence = bytes(period_samples * 2)
        self._periods: deque[bytes] = deque(maxlen=max_periods)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, period: bytes) -> None:
        with self._lock:
            if len(self._periods) == self._periods.maxlen:
                self.dropped += 1
            self._periods.append(period)

    def take(self) -> bytes:
        with self._lock:
            return self._periods.popleft() if self._periods else self._silence

    def clear(self) -> None:
        with self._lock:
            self._periods.clear()

    def __len__(self) -> int:
        return len(self._periods)
