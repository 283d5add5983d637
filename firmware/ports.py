"""The phone shell's typed ports: what the Runtime and the SIP engine need from each part.

One definition each, so the real parts (SipEngine, AlsaAudio, the boards, the provisioning
outbox) and the stand-ins the tests and benchmarks build are checked against the same shape.
The board's own interfaces (Board, Display) live in board/base.py: the board package imports
nothing from the phone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from offhook.board.base import Board, Display

if TYPE_CHECKING:
    from offhook.contract.config import PhoneConfig
    from offhook.firmware import events as ev

__all__ = [
    "AudioEndpoint",
    "AudioPort",
    "Board",
    "Display",
    "Indicators",
    "Outbox",
    "SipPort",
    "UrlFetcher",
    "Watcher",
]


@runtime_checkable
class AudioEndpoint(Protocol):
    """What the SIP engine's AudioMediaPort talks to: 16-bit signed mono little-endian PCM in
    20 ms frames. pjsua2's clock thread calls both methods: neither may block."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_samples(self) -> int: ...

    def read_capture_frame(self) -> bytes:
        """Mic to network: always ``frame_samples * 2`` bytes (silence if nothing was captured)."""
        ...

    def write_playback_frame(self, pcm: bytes) -> None:
        """Network to speaker."""
        ...


@runtime_checkable
class PlayoutGaps(Protocol):
    """An AudioEndpoint that counts the gaps in what it played (underruns, overruns, drift
    corrections): the call's MOS includes them (``firmware/sip/quality.py``)."""

    def playout_gaps(self) -> tuple[int, int]:
        """(gaps so far, network frames written so far)."""
        ...


class AudioPort(Protocol):
    """What the Runtime does with the handset audio: tones, mute, volumes, the tone plan."""

    def play_tone(self, tone: ev.Tone) -> None: ...

    def stop_tone(self) -> None: ...

    def set_mute(self, muted: bool) -> None: ...

    def set_volume(self, speaker: int) -> None: ...

    def set_ring_volume(self, ring: int) -> None: ...

    def set_tone_plan(self, plan: str) -> None: ...

    def set_handsfree(self, on: bool) -> None:
        """The speakerphone is the audio path (echo cancellation on) or no longer is."""
        ...


class SipPort(Protocol):
    """What the Runtime hands the SIP engine: the Phone's call commands and new configs. Both
    only queue work for the engine's owner thread (they never block the loop)."""

    def submit(self, command: ev.Command) -> None: ...

    def apply_config(self, config: PhoneConfig) -> None: ...


class Indicators(Protocol):
    """The part of a Board the Runtime drives: LEDs and the ringer."""

    def set_led(self, name: str, state: str) -> None: ...

    def set_ringer(self, on: bool) -> None: ...


class Outbox(Protocol):
    """Where finished-call records and quality samples go for the provisioning server."""

    def enqueue(self, kind: str, record: dict) -> None: ...


class Watcher(Protocol):
    """The BLF subscription client (firmware/sip/dialog_watch.py): keeps exactly the given
    (account, extension) subscriptions; never blocks."""

    def watch(self, config: PhoneConfig, watches: tuple[tuple[int, str], ...]) -> None: ...


class UrlFetcher(Protocol):
    """Fetches action URLs off the loop (firmware/action_url_sender.py); never blocks."""

    def submit(self, command: ev.ActionUrl) -> None: ...
