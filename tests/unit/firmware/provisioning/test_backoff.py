"""Backoff with full jitter and per-device poll jitter."""

from __future__ import annotations

import random
import statistics

import pytest

from offhook.firmware.provisioning.backoff import Backoff, PollSchedule


def test_full_jitter_stays_under_a_doubling_ceiling_capped_at_ten_minutes() -> None:
    backoff = Backoff(rng=random.Random(7))
    ceilings = []
    for _ in range(15):
        delay = backoff.failed()
        ceilings.append(backoff.ceiling())
        assert 0 <= delay <= backoff.ceiling()
    assert ceilings[:5] == [1, 2, 4, 8, 16]
    assert ceilings[-1] == 600
    backoff.succeeded()
    assert backoff.ceiling() == 0 and backoff.failures == 0


def test_full_jitter_spreads_a_fleet() -> None:
    delays = []
    for seed in range(200):
        backoff = Backoff(rng=random.Random(seed))
        for _ in range(6):
            delay = backoff.failed()
        delays.append(delay)
    # full jitter: uniform over [0, 32]; phones that failed together do not retry together
    assert min(delays) < 4 and max(delays) > 28
    assert 12 < statistics.mean(delays) < 20


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff()
    for _ in range(5000):
        assert backoff.failed() <= 600


def test_poll_jitter_is_per_device_and_within_twenty_percent() -> None:
    a = [PollSchedule(3600, "device-a").next_delay() for _ in range(1)]
    a_again = PollSchedule(3600, "device-a")
    assert a_again.next_delay() == a[0]  # seeded by the device id
    fleet = [PollSchedule(3600, f"device-{i}").next_delay() for i in range(200)]
    assert all(2880 <= d <= 4320 for d in fleet)
    assert max(fleet) - min(fleet) > 1000  # no lockstep


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0)
    with pytest.raises(ValueError, match="poll schedule"):
        PollSchedule(0, "x")
