"""Helpers for 16-bit signed little-endian mono PCM held in ``bytes`` or ``array('h')``.

Pure Python on purpose: frames are small (80-960 samples) and the phone must not need numpy.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence

SAMPLE_BYTES = 2
INT16_MAX = 32767
INT16_MIN = -32768
_NATIVE_IS_LITTLE = sys.byteorder == "little"


def silence(samples: int) -> bytes:
    return bytes(samples * SAMPLE_BYTES)


def to_samples(pcm: bytes) -> array:
    """Decode S16_LE bytes into an ``array('h')`` (native order)."""
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
    samples = array("h")
    samples.frombytes(pcm)
    if not _NATIVE_IS_LITTLE:
        samples.byteswap()
    return samples


def to_bytes(samples: array) -> bytes:
    if _NATIVE_IS_LITTLE:
        return samples.tobytes()
    swapped = array("h", samples)
    swapped.byteswap()
    return swapped.tobytes()


def clip(value: float) -> int:
    """Round and saturate to int16 (no wrap-around: a wrapped sample is a loud click)."""
    v = round(value)
    return INT16_MAX if v > INT16_MAX else INT16_MIN if v < INT16_MIN else v


def mix(frames: Sequence[Sequence[int]], gain: float = 1.0) -> array:
    """Sum equally long sample sequences, scale by ``gain`` and saturate to int16."""
    if not frames:
        raise ValueError("nothing to mix")
    length = len(frames[0])
    if any(len(f) != length for f in frames):
        raise ValueError(f"frames to mix differ in length: {[len(f) for f in frames]}")
    out = array("h", bytes(length * SAMPLE_BYTES))
    if len(frames) == 1:
        src = frames[0]
        for i in range(length):
            out[i] = clip(src[i] * gain)
        return out
    for i, parts in enumerate(zip(*frames, strict=True)):
        out[i] = clip(sum(parts) * gain)
    return out


def peak(samples: Sequence[int]) -> int:
    return max((abs(s) for s in samples), default=0)


def is_silent(pcm: bytes, threshold: int = 0) -> bool:
    """True if no sample's magnitude exceeds ``threshold``."""
    return peak(to_samples(pcm)) <= threshold


def rms(samples: Sequence[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def tone_power(samples: Sequence[int], frequency: float, sample_rate: int) -> float:
    """Mean power of ``samples`` at ``frequency`` (Goertzel), on the same scale as ``rms**2``.

    A pure sine of amplitude A gives about A**2/2, matching its share of the total power, so
    ``tone_power / rms**2`` is the fraction of the signal's energy at that frequency.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * frequency / sample_rate)
    s_prev = s_prev2 = 0.0
    for x in samples:
        s = x + coeff * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev * s_prev + s_prev2 * s_prev2 - coeff * s_prev * s_prev2
    return 2.0 * power / (n * n)
