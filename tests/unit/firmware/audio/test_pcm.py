"""PCM helpers: mixing with saturation, gain, conversions, tone power."""

from __future__ import annotations

import math
from array import array

import pytest

from offhook.firmware.audio.pcm import (
    INT16_MAX,
    INT16_MIN,
    clip,
    is_silent,
    mix,
    peak,
    rms,
    silence,
    to_bytes,
    to_samples,
    tone_power,
)


def test_mix_adds_and_saturates_instead_of_wrapping() -> None:
    a = array("h", [30000, -30000, 1000, 0])
    b = array("h", [30000, -30000, -3000, 7])
    assert list(mix([a, b])) == [INT16_MAX, INT16_MIN, -2000, 7]


def test_mix_applies_gain_after_summing() -> None:
    a = array("h", [20000, -20000, 100])
    b = array("h", [20000, -20000, 100])
    assert list(mix([a, b], gain=0.5)) == [20000, -20000, 100]
    assert list(mix([a], gain=0.0)) == [0, 0, 0]
    assert list(mix([a], gain=2.0)) == [INT16_MAX, INT16_MIN, 200]


def test_mix_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        mix([array("h", [1, 2]), array("h", [1])])
    with pytest.raises(ValueError, match="nothing"):
        mix([])


def test_bytes_round_trip_is_little_endian() -> None:
    pcm = b"\x01\x00\xff\x7f\x00\x80"
    samples = to_samples(pcm)
    assert list(samples) == [1, 32767, -32768]
    assert to_bytes(samples) == pcm
    with pytest.raises(ValueError, match="whole number"):
        to_samples(b"\x00")


def test_levels() -> None:
    assert clip(40000.4) == INT16_MAX and clip(-40000) == INT16_MIN and clip(1.6) == 2
    assert silence(3) == bytes(6) and is_silent(silence(3))
    assert not is_silent(b"\x05\x00") and is_silent(b"\x05\x00", threshold=5)
    assert peak([3, -9, 4]) == 9
    assert rms([3, -3, 3, -3]) == 3.0


def test_tone_power_measures_each_component() -> None:
    rate = 16000
    x = [
        round(
            10000 * math.sin(2 * math.pi * 440 * i / rate)
            + 5000 * math.sin(2 * math.pi * 350 * i / rate)
        )
        for i in range(rate)
    ]
    total = rms(x) ** 2
    assert tone_power(x, 440, rate) / total == pytest.approx(0.8, abs=0.01)
    assert tone_power(x, 350, rate) / total == pytest.approx(0.2, abs=0.01)
    assert tone_power(x, 1000, rate) / total < 0.001
    assert tone_power([], 440, rate) == 0.0
