"""What an imperfect network does to one direction of a media stream, decided per packet.

This kernel has no netem, so the media relay (``media_relay.py``) applies these decisions in user
space. An ``ImpairmentChannel`` is pure: it sees packets in arrival order and says, for each,
after which delays its copies leave (none: lost). The same impairment and seed give the same
decisions for the same sequence of packets, whatever the timing, so a run can be reproduced.

- random loss: each packet is lost with ``loss_pct`` / 100;
- bursty loss: a two-state Gilbert-Elliott chain (good: nothing lost, bad: everything lost) with
  the stationary loss ``burst_loss_pct`` and a mean burst of ``burst_length`` packets;
- delay and jitter: ``delay_ms`` plus a uniform draw in [0, ``jitter_ms``], independent per
  packet, so packets further apart than the jitter keep their order and closer ones may not
  (as netem's jitter does);
- reordering: ``reorder_pct`` of the packets wait ``reorder_gap_ms`` more, so the next ones
  overtake them;
- duplication: ``duplicate_pct`` of the delivered packets are sent twice (the copy 1 ms later).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

from offhook.contract.errors import OffhookError


class ImpairmentError(OffhookError, ValueError):
    """An impairment setting outside its range (the message names it)."""


@dataclass(frozen=True)
class Impairment:
    loss_pct: float = 0.0
    burst_loss_pct: float = 0.0
    burst_length: float = 3.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0
    reorder_gap_ms: float = 30.0
    duplicate_pct: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss_pct", "burst_loss_pct", "reorder_pct", "duplicate_pct"):
            value = getattr(self, name)
            if not 0.0 <= value < 100.0:
                raise ImpairmentError(f"{name}={value}: must be at least 0 and below 100")
        for name in ("delay_ms", "jitter_ms", "reorder_gap_ms"):
            if getattr(self, name) < 0.0:
                raise ImpairmentError(f"{name}={getattr(self, name)}: must not be negative")
        if self.burst_length < 1.0:
            raise ImpairmentError(f"burst_length={self.burst_length}: a burst is >= 1 packet")
        if self.burst_loss_pct and self.loss_pct:
            raise ImpairmentError("loss_pct and burst_loss_pct: choose one loss model")
        if self.burst_loss_pct / 100.0 >= self.burst_length / (self.burst_length + 1.0):
            raise ImpairmentError(
                f"burst_loss_pct={self.burst_loss_pct} with burst_length={self.burst_length}: "
                "gaps between bursts would be shorter than one packet"
            )

    @property
    def clean(self) -> bool:
        return self == Impairment()

    def describe(self) -> str:
        """Only the settings that differ from a clean network, e.g. ``loss 3%, jitter 40 ms``."""
        parts = []
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if self.burst_loss_pct:
            parts.append(f"bursty loss {self.burst_loss_pct:g}% (bursts {self.burst_length:g})")
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g} ms")
        if self.jitter_ms:
            parts.append(f"jitter {self.jitter_ms:g} ms")
        if self.reorder_pct:
            parts.append(f"reorder {self.reorder_pct:g}% (+{self.reorder_gap_ms:g} ms)")
        if self.duplicate_pct:
            parts.append(f"duplicate {self.duplicate_pct:g}%")
        return ", ".join(parts) or "clean"

    @classmethod
    def from_text(cls, text: str) -> Impairment:
        """``loss_pct=3,jitter_ms=40`` -> Impairment; unknown names and bad numbers are refused."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or name.strip() not in known:
                names = ", ".join(sorted(known))
                raise ImpairmentError(f"{item!r}: expected NAME=NUMBER with NAME one of {names}")
            try:
                values[name.strip()] = float(raw)
            except ValueError:
                raise ImpairmentError(f"{item!r}: {raw!r} is not a number") from None
        return cls(**values)


@dataclass
class ChannelStats:
    """What a channel decided so far (per direction)."""

    packets: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0  # held back by reorder_pct (the relay counts actual overtaking itself)
    loss_bursts: int = 0  # runs of consecutive lost packets
    delays_ms: list[float] = field(default_factory=list)  # per delivered original

    @property
    def loss_fraction(self) -> float:
        return self.lost / self.packets if self.packets else 0.0

    @property
    def mean_burst_length(self) -> float:
        return self.lost / self.loss_bursts if self.loss_bursts else 0.0


_DUPLICATE_SPACING_S = 0.001


class ImpairmentChannel:
    """Per-packet decisions for one direction; deterministic for a given impairment and seed."""

    def __init__(self, impairment: Impairment, seed: int | str) -> None:
        self.impairment = impairment
        self.stats = ChannelStats()
        self._rng = random.Random(f"{seed}")
        self._bad = False  # Gilbert-Elliott state
        self._last_lost = False
        pct = impairment.burst_loss_pct / 100.0
        # Mean sojourn in "bad" is burst_length packets; the stationary share of "bad" is pct.
        self._bad_to_good = 1.0 / impairment.burst_length
        self._good_to_bad = pct * self._bad_to_good / (1.0 - pct) if pct else 0.0

    def _lost(self) -> bool:
        imp = self.impairment
        if imp.burst_loss_pct:
            flip = self._rng.random()
            if self._bad:
                self._bad = flip >= self._bad_to_good
            else:
                self._bad = flip < self._good_to_bad
            return self._bad
        return self._rng.random() < imp.loss_pct / 100.0

    def decide(self) -> tuple[float, ...]:
        """Delays in seconds of the copies of the next packet; empty if it is lost."""
        imp, rng = self.impairment, self._rng
        stats = self.stats
        stats.packets += 1
        # Every draw happens for every packet, so one setting never shifts another's sequence.
        lost = self._lost()
        jitter = rng.random() * imp.jitter_ms
        reorder = rng.random() < imp.reorder_pct / 100.0
        duplicate = rng.random() < imp.duplicate_pct / 100.0
        if lost:
            stats.lost += 1
            if not self._last_lost:
                stats.loss_bursts += 1
            self._last_lost = True
            return ()
        self._last_lost = False
        delay_ms = imp.delay_ms + jitter
        if reorder:
            delay_ms += imp.reorder_gap_ms
            stats.reordered += 1
        stats.delays_ms.append(delay_ms)
        if duplicate:
            stats.duplicated += 1
            return (delay_ms / 1000.0, delay_ms / 1000.0 + _DUPLICATE_SPACING_S)
        return (delay_ms / 1000.0,)
