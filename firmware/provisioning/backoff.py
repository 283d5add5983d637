"""Retry and polling delays.

Failures back off exponentially with *full jitter* (a uniform draw in [0, min(cap, base*2^n)]), so
phones that lost the server together do not come back together. The steady polling interval gets a
±20 % per-device jitter from an RNG seeded with the device id: each phone keeps its own rhythm and
a fleet never polls in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self, base_s: float = 1.0, cap_s: float = 600.0, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got base={base_s} cap={cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """Upper bound of the next delay (the un-jittered exponential step)."""
        if self.failures == 0:
            return 0.0
        # min() before the power would overflow after ~1000 failures; cap the exponent instead
        return min(self.cap_s, self.base_s * 2 ** min(self.failures - 1, 64))

    def failed(self) -> float:
        """Record a failure and return how long to wait before the next try."""
        self.failures += 1
        return self._rng.uniform(0.0, self.ceiling())

    def succeeded(self) -> None:
        self.failures = 0


class PollSchedule:
    """Steady-state poll interval with per-device jitter of ±``spread`` around ``interval_s``."""

    def __init__(self, interval_s: float, device_seed: str, spread: float = 0.2) -> None:
        if interval_s <= 0 or not 0 <= spread < 1:
            raise ValueError(f"bad poll schedule interval={interval_s} spread={spread}")
        self.interval_s = interval_s
        self.spread = spread
        self._rng = random.Random(device_seed)

    def next_delay(self) -> float:
        return self.interval_s * self._rng.uniform(1 - self.spread, 1 + self.spread)
