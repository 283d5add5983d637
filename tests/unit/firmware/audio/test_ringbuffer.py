"""The PCM ring between the SIP clock and the ALSA clock: order, overflow, underflow, drift."""

from __future__ import annotations

import struct

import pytest

from offhook.firmware.audio.ringbuffer import IDLE_AFTER_S, RingBuffer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ramp(start: int, count: int) -> bytes:
    return struct.pack(f"<{count}h", *((start + i) % 30000 for i in range(count)))


def values(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def test_mixed_chunk_sizes_keep_every_sample_in_order() -> None:
    clock = FakeClock()
    ring = RingBuffer(capacity_samples=1920, target_samples=320, clock=clock)
    out: list[int] = []
    n = 0
    for _ in range(50):  # 20 ms network frames in, 10 ms periods out, same clock
        ring.write(ramp(n, 320))
        n += 320
        clock.now += 0.01
        out += values(ring.read(160))
        clock.now += 0.01
        out += values(ring.read(160))
    assert out == [i % 30000 for i in range(n)]
    assert ring.underruns == ring.overruns == ring.drift_corrections == 0


def test_underflow_returns_silence_and_keeps_the_partial_frame() -> None:
    clock = FakeClock()
    ring = RingBuffer(1920, 320, clock=clock)
    ring.write(ramp(1, 100))
    assert ring.read(160) == bytes(320)
    assert ring.underruns == 1
    ring.write(ramp(101, 60))
    assert values(ring.read(160)) == list(range(1, 161))


def test_overflow_drops_the_oldest() -> None:
    clock = FakeClock()
    ring = RingBuffer(640, 320, clock=clock)
    ring.read(160)  # the reader is active
    for k in range(4):
        ring.write(ramp(k * 320, 320))
    assert ring.level == 640
    assert ring.overruns == 2
    assert ring.samples_dropped == 640
    assert values(ring.read(640)) == list(range(640, 1280))


def test_idle_sides_count_nothing() -> None:
    clock = FakeClock()
    ring = RingBuffer(640, 320, clock=clock)
    for _ in range(10):  # no call: the speaker side reads an empty ring every period
        ring.read(160)
        clock.now += 0.01
    assert ring.underruns == 0
    clock.now += IDLE_AFTER_S * 2
    for k in range(5):  # no reader (no call): the mic side overflows silently
        ring.write(ramp(k, 320))
    assert ring.overruns == 0
    assert ring.level == 640


def test_fast_writer_drift_is_corrected_and_latency_bounded() -> None:
    clock = FakeClock()
    ring = RingBuffer(capacity_samples=1920, target_samples=320, drift_window=50, clock=clock)
    levels = []
    for _ in range(2000):  # writer clock 2% fast: 326.4 samples per 20 ms on average
        ring.write(ramp(0, 326 if clock.now * 10 % 5 > 1 else 327))
        for _ in range(2):
            clock.now += 0.01
            ring.read(160)
            levels.append(ring.level)
    assert ring.drift_corrections > 0
    assert ring.overruns == 0  # corrected before the ring ever filled
    assert max(levels[-200:]) <= 320 + 2 * 327


def test_slow_writer_underruns_are_counted_as_concealed_silence() -> None:
    clock = FakeClock()
    ring = RingBuffer(1920, 320, clock=clock)
    silent = 0
    for i in range(1000):  # writer 2% slow
        if i % 50 != 25:
            ring.write(ramp(0, 320))
        for _ in range(2):
            clock.now += 0.01
            if ring.read(160) == bytes(320):
                silent += 1
    assert ring.underruns == silent > 0
    assert ring.overruns == 0


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="capacity_samples"):
        RingBuffer(0, 0)
    with pytest.raises(ValueError, match="target_samples"):
        RingBuffer(100, 200)
    with pytest.raises(ValueError, match="whole number"):
        RingBuffer(100, 10).write(b"\x01\x02\x03")


def test_clear_and_stats() -> None:
    ring = RingBuffer(640, 160)
    ring.write(ramp(0, 300))
    assert ring.stats()["level"] == 300
    ring.clear()
    assert ring.stats()["level"] == 0
    assert ring.stats()["samples_written"] == 300


def test_priming_holds_back_until_a_cushion_is_buffered() -> None:
    clock = FakeClock()
    ring = RingBuffer(1920, 480, prime_samples=320, clock=clock)
    ring.write(ramp(0, 320))
    assert ring.read(160) == bytes(320)  # one read's worth is there, the cushion is not
    ring.write(ramp(320, 320))
    assert values(ring.read(160)) == list(range(160))  # primed: plays from the start
    assert values(ring.read(160)) == list(range(160, 320))
    for _ in range(2):
        ring.read(160)
    assert ring.read(160) == bytes(320)  # ran dry
    ring.write(ramp(640, 160))
    assert ring.read(160) == bytes(320)  # must re-prime, not play 160 samples then stall
    with pytest.raises(ValueError, match="prime_samples"):
        RingBuffer(100, 10, prime_samples=100)


def test_underruns_grow_the_cushion_up_to_its_limit_and_drift_corrections_shrink_it() -> None:
    clock = FakeClock()
    ring = RingBuffer(2560, 480, prime_samples=320, clock=clock,
                      max_cushion_samples=960, cushion_step_samples=160)  # fmt: skip
    assert (ring.cushion, ring.prime, ring.target) == (0, 320, 480)
    ring.write(ramp(0, 160))  # an active writer, too little buffered: each read runs dry
    for expected in (160, 320, 480, 640, 800, 960, 960):
        clock.now += 0.01
        assert ring.read(160) == bytes(320)
        assert ring.cushion == expected
    assert (ring.prime, ring.target) == (320 + 960, 480 + 960)
    # a steady writer with a surplus beyond the (raised) target: each window's correction
    # trims it and gives back one step of cushion
    for _ in range(400):
        ring.write(ramp(0, 320))
        for _ in range(2):
            clock.now += 0.01
            ring.read(160)
        ring.write(ramp(0, 40))  # a little fast: a standing surplus builds up
    assert ring.drift_corrections > 0
    assert ring.cushion < 960
    assert ring.stats()["cushion"] == ring.cushion


def test_without_a_cushion_limit_underruns_change_nothing() -> None:
    clock = FakeClock()
    ring = RingBuffer(1920, 320, prime_samples=320, clock=clock)
    ring.write(ramp(0, 160))
    for _ in range(5):
        clock.now += 0.01
        ring.read(160)
    assert ring.underruns == 5
    assert (ring.cushion, ring.prime, ring.target) == (0, 320, 320)
    with pytest.raises(ValueError, match="cushion_step_samples"):
        RingBuffer(1920, 320, max_cushion_samples=640)
    with pytest.raises(ValueError, match="below capacity_samples"):
        RingBuffer(1920, 320, prime_samples=320, max_cushion_samples=1600, cushion_step_samples=160)
