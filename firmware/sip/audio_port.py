"""The bridge between pjsua2's conference bridge and the phone's audio (firmware/audio/)."""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
from collections.abc import Callable

import pjsua2 as pj

from offhook.contract.logs import kv
from offhook.firmware.ports import AudioEndpoint

log = logging.getLogger(__name__)

FRAME_MS = 20


def _copy_by_iteration(vector: pj.ByteVector) -> bytes:
    return bytes(vector)  # SWIG iterates element by element: ~0.4 ms per 20 ms frame


_BEGIN_END = struct.Struct("PP")


def _copy_from_storage(vector: pj.ByteVector) -> bytes:
    # std::vector<unsigned char> in libstdc++ starts with its begin and end pointers.
    begin, end = _BEGIN_END.unpack(ctypes.string_at(int(vector.this), _BEGIN_END.size))
    return ctypes.string_at(begin, end - begin) if end > begin else b""


def _storage_address(vector: pj.ByteVector) -> int:
    return _BEGIN_END.unpack(ctypes.string_at(int(vector.this), _BEGIN_END.size))[0]


def _pick_vector_copier() -> Callable[[pj.ByteVector], bytes]:
    """Use the direct storage read (~100x faster) only if it reads a known vector exactly."""
    probe = bytes(range(256)) * 3
    try:
        if _copy_from_storage(pj.ByteVector(probe)) == probe:
            return _copy_from_storage
    except (ValueError, TypeError, OSError, AttributeError):
        pass
    log.warning("audio port uses the slow ByteVector copy (unexpected vector layout)")
    return _copy_by_iteration


copy_byte_vector = _pick_vector_copier()


_gil_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_ensure.restype = ctypes.c_int
_gil_release = ctypes.pythonapi.PyGILState_Release
_gil_release.argtypes = [ctypes.c_int]


class ClockThreadState:
    """Keeps the Python thread state of pjmedia's clock thread from one frame callback to the
    next.

    pjsua2's callbacks come from a C thread: SWIG's PyGILState_Ensure creates a Python thread
    state for each one and its Release destroys it again, with a fresh data stack each time (an
    mmap, page faults and a munmap), 100 times a second during a call: about a fifth of the
    engine's CPU in a call. One extra Ensure in the first callback keeps the state alive;
    ``release()`` (before the clock stops) gives it back from inside the next callback, so no
    state outlives its thread.
    """

    def __init__(self) -> None:
        self._holder: int | None = None  # the thread holding a state, its Ensure's result
        self._held = 0
        self._release_wanted = False
        self._released = threading.Event()
        self._released.set()

    def enter(self) -> None:
        """At the start of every callback (the GIL is held)."""
        if self._holder is not None and not self._release_wanted:
            return  # held: the path of every frame but the first and the last
        ident = threading.get_ident()
        if self._holder is None:
            if not self._release_wanted:
                self._held = _gil_ensure()
                self._holder = ident
                self._released.clear()
        elif self._holder == ident and self._release_wanted:
            self._holder = None
            _gil_release(self._held)  # the callback's own Release then frees the state
            self._released.set()

    def release(self, timeout_s: float = 0.1) -> bool:
        """Give the state back in the next callback (the clock must still run); True once done.
        Afterwards no callback takes a state again."""
        self._release_wanted = True
        return self._released.wait(timeout_s)


class EndpointPort(pj.AudioMediaPort):
    """An AudioMediaPort whose frames come from and go to an AudioEndpoint.

    pjsua2 calls these methods from its conference clock thread; they only touch the endpoint,
    which is built for that (ring buffers, no blocking).
    """

    def __init__(self, endpoint: AudioEndpoint) -> None:
        super().__init__()
        expected = endpoint.sample_rate * FRAME_MS // 1000
        if endpoint.frame_samples != expected:
            raise ValueError(
                f"audio endpoint frames must be {FRAME_MS} ms: {endpoint.frame_samples} samples "
                f"at {endpoint.sample_rate} Hz (expected {expected})"
            )
        self.endpoint = endpoint
        self.muted = False
        self._frame_bytes = endpoint.frame_samples * 2
        self._silence = pj.ByteVector(bytes(self._frame_bytes))
        # Outgoing frames are copied into one preallocated vector: building a ByteVector from
        # bytes iterates element by element (~0.1 ms a frame); a memmove takes microseconds.
        self._out = pj.ByteVector(bytes(self._frame_bytes))
        self._out_address = (
            _storage_address(self._out) if copy_byte_vector is _copy_from_storage else 0
        )
        self._errors = 0
        self.thread_state = ClockThreadState()
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, endpoint.sample_rate, 1, FRAME_MS * 1000, 16)
        self.createPort("offhook-audio", fmt)

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        self.thread_state.enter()
        try:
            pcm = self.endpoint.read_capture_frame()
            if len(pcm) != self._frame_bytes:
                raise ValueError(f"capture frame of {len(pcm)} bytes, want {self._frame_bytes}")
            # Keep draining the capture ring while muted so nothing stale plays out on unmute.
            if self.muted:
                frame.buf = self._silence
            elif self._out_address:
                ctypes.memmove(self._out_address, pcm, self._frame_bytes)
                frame.buf = self._out  # the setter copies into the frame's own vector
            else:
                frame.buf = pj.ByteVector(pcm)
        except Exception as exc:  # an exception must never escape into the clock thread
            self._count_error("capture", exc)
            frame.buf = self._silence
        frame.size = self._frame_bytes
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        self.thread_state.enter()
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size == 0:
            return
        try:
            self.endpoint.write_playback_frame(copy_byte_vector(frame.buf)[: frame.size])
        except Exception as exc:
            self._count_error("playback", exc)

    def _count_error(self, direction: str, exc: Exception) -> None:
        self._errors += 1
        if self._errors == 1 or self._errors % 500 == 0:
            log.warning(
                "audio port error", extra=kv(direction=direction, count=self._errors, error=exc)
            )
