"""Tone plans and the generator: frequencies (Goertzel), cadence durations, continuity."""

from __future__ import annotations

import itertools
import math

import pytest

from offhook.firmware.audio.pcm import rms, tone_power
from offhook.firmware.audio.tones import (
    EDGE_RAMP_S,
    TONE_PLANS,
    Step,
    ToneGenerator,
    TonePlanError,
    ToneSpec,
    tone_spec,
)
from offhook.firmware.events import Tone

RATE = 16000
PLANS = sorted(TONE_PLANS)
SILENT_RUN = RATE // 1000  # a zero run this long (1 ms) is a gap, not a zero crossing


def render(spec: ToneSpec, seconds: float, chunk: int = 137, rate: int = RATE) -> list[int]:
    """Render in odd-sized chunks so frame edges fall at arbitrary points of the cadence."""
    gen = ToneGenerator(spec, rate)
    total = int(seconds * rate)
    out: list[int] = []
    while len(out) < total:
        out.extend(gen.render(min(chunk, total - len(out))))
    return out


def energy_share(samples: list[int], freqs: tuple[float, ...], rate: int = RATE) -> float:
    return sum(tone_power(samples, f, rate) for f in freqs) / rms(samples) ** 2


def runs(samples: list[int]) -> list[tuple[bool, int]]:
    """(on, length) runs; a gap is at least SILENT_RUN zero samples."""
    result: list[tuple[bool, int]] = []
    i, n = 0, len(samples)
    while i < n:
        j = i
        while j < n and samples[j] == 0:
            j += 1
        if j - i >= SILENT_RUN or j == n:
            result.append((False, j - i))
            i = j
            continue
        # an on-run continues until the next real gap
        k = j
        while k < n:
            z = k
            while z < n and samples[z] == 0:
                z += 1
            if z - k >= SILENT_RUN or z == n:
                break
            k = z + 1
        if result and result[-1][0]:
            result[-1] = (True, result[-1][1] + k - i)
        else:
            result.append((True, k - i))
        i = k
    return result


def expected_on_off(spec: ToneSpec, rate: int = RATE) -> list[tuple[bool, int]]:
    """The spec's steps merged into on/off runs (one pass, no looping)."""
    merged: list[tuple[bool, int]] = []
    for step in spec.steps:
        on = bool(step.frequencies)
        length = round(step.seconds * rate) if step.seconds else 0
        if merged and merged[-1][0] == on:
            merged[-1] = (on, merged[-1][1] + length)
        else:
            merged.append((on, length))
    return merged


@pytest.mark.parametrize(
    ("plan", "freqs", "absent"),
    [("us", (350, 440), 425), ("eu", (425,), 350), ("uk", (350, 440), 425)],
)
def test_dial_tone_frequencies(plan: str, freqs: tuple[int, ...], absent: int) -> None:
    samples = render(tone_spec(plan, Tone.DIAL), 0.5)[int(0.1 * RATE) :]
    assert energy_share(samples, freqs) > 0.97
    for f in freqs:
        assert tone_power(samples, f, RATE) / rms(samples) ** 2 > 0.9 / len(freqs) / 1.5
    assert tone_power(samples, absent, RATE) / rms(samples) ** 2 < 0.05


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("tone", list(Tone))
def test_every_step_sounds_its_frequencies(plan: str, tone: Tone) -> None:
    spec = tone_spec(plan, tone)
    pos = 0
    gen = ToneGenerator(spec, RATE)
    for step in spec.steps:
        length = round((step.seconds or 0.3) * RATE)
        samples = list(gen.render(length))
        pos += length
        if not step.frequencies:
            assert not any(samples), f"{plan}/{tone.value}: off step is not silent"
            continue
        ramp = int(EDGE_RAMP_S * RATE)
        body = samples[ramp:-ramp] if length > 4 * ramp else samples
        assert energy_share(body, step.frequencies) > 0.9, f"{plan}/{tone.value} at {pos}"


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize(
    "tone", [Tone.RINGBACK, Tone.BUSY, Tone.CONGESTION, Tone.CALL_WAITING, Tone.CONFIRM]
)
def test_cadence_on_off_durations_measured_from_the_signal(plan: str, tone: Tone) -> None:
    spec = tone_spec(plan, tone)
    cycle = sum(s.seconds or 0 for s in spec.steps)
    measured = runs(render(spec, cycle))
    expected = expected_on_off(spec)
    assert [on for on, _ in measured] == [on for on, _ in expected]
    for (on, got), (_, want) in zip(measured, expected, strict=True):
        # the ramps make each burst start and end on a zero sample: +-2 samples, then 1 ms slack
        assert abs(got - want) <= 2 + SILENT_RUN, (plan, tone, on, got, want)


def test_cadence_repeats_across_cycles() -> None:
    spec = tone_spec("us", Tone.BUSY)
    measured = runs(render(spec, 3.0))
    on_runs = [n for on, n in measured if on]
    assert len(on_runs) == 3
    assert all(abs(n - RATE // 2) <= 2 for n in on_runs)


def test_chunked_render_equals_one_long_render() -> None:
    spec = tone_spec("uk", Tone.RINGBACK)
    whole = list(ToneGenerator(spec, RATE).render(3 * RATE))
    for chunk in (80, 137, 160, 320, 1000):
        assert render(spec, 3.0, chunk=chunk) == whole, f"chunk {chunk} differs"


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("tone", [Tone.DIAL, Tone.RINGBACK, Tone.STUTTER, Tone.RING])
def test_no_discontinuities(plan: str, tone: Tone) -> None:
    """No sample step larger than the steepest the step's sines (plus the edge ramp) allow."""
    spec = tone_spec(plan, tone)
    samples = render(spec, 2.5, chunk=160)
    ramp = int(EDGE_RAMP_S * RATE)
    bound = max(
        sum(s.amplitude * 2 * math.pi * f / RATE for f in s.frequencies)
        + s.amplitude * len(s.frequencies) / ramp
        for s in spec.steps
    )
    worst = max(abs(b - a) for a, b in itertools.pairwise(samples))
    assert worst <= bound * 1.02 + 2


def test_one_shot_confirm_finishes_then_stays_silent() -> None:
    gen = ToneGenerator(tone_spec("us", Tone.CONFIRM), RATE)
    first = list(gen.render(int(0.6 * RATE)))
    assert any(first)
    assert gen.finished
    assert not any(gen.render(RATE))


def test_stutter_becomes_steady_dial_tone() -> None:
    samples = render(tone_spec("us", Tone.STUTTER), 3.0)
    measured = runs(samples)
    assert sum(1 for on, _ in measured if on) == 11  # 10 bursts, then steady
    assert measured[-1][0] and measured[-1][1] > 0.9 * RATE
    assert energy_share(samples[-RATE:], (350, 440)) > 0.97


def test_levels_follow_dbm0() -> None:
    # -13 dBm0 per component: amplitude 32767 * 10**((-13 - 3.14) / 20)
    want = 32767 * 10 ** ((-13 - 3.14) / 20)
    samples = render(tone_spec("eu", Tone.BUSY), 0.4)[200:-200]
    assert abs(max(samples) - want) / want < 0.01


def test_other_sample_rates() -> None:
    for rate in (8000, 48000):
        samples = render(tone_spec("eu", Tone.DIAL), 0.3, rate=rate)
        assert energy_share(samples, (425,), rate) > 0.97


def test_unknown_plan_and_bad_specs_are_named() -> None:
    with pytest.raises(TonePlanError, match="unknown tone plan 'fr'"):
        tone_spec("fr", Tone.DIAL)
    with pytest.raises(TonePlanError, match="only the last step"):
        ToneSpec((Step((425.0,), None), Step((), 1.0)))
    with pytest.raises(TonePlanError, match="above full scale"):
        ToneSpec((Step((400.0, 500.0, 600.0), 1.0, 3.0),))
    with pytest.raises(TonePlanError, match="loop_from"):
        ToneSpec((Step((400.0,), 1.0),), loop_from=3)
    with pytest.raises(TonePlanError, match="positive"):
        ToneSpec((Step((400.0,), 0.0),))


def test_every_plan_covers_every_tone() -> None:
    for plan in PLANS:
        assert set(TONE_PLANS[plan]) == set(Tone)


def test_fade_out_ends_a_tone_without_a_click() -> None:
    spec = tone_spec("us", Tone.DIAL)
    gen = ToneGenerator(spec, RATE)
    playing = list(gen.render(1000))
    tail = list(gen.fade_out(160))
    samples = playing + tail
    step = spec.steps[0]
    ramp = int(EDGE_RAMP_S * RATE)
    bound = sum(step.amplitude * 2 * math.pi * f / RATE for f in step.frequencies)
    bound += step.amplitude * len(step.frequencies) / ramp
    assert max(abs(b - a) for a, b in itertools.pairwise(samples)) <= bound * 1.02 + 2
    assert abs(playing[-1]) > 100 or abs(playing[-2]) > 100  # it was sounding when stopped
    assert not any(tail[ramp:])
    assert gen.finished and not any(gen.render(160))
