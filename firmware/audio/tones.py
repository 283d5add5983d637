"""Call-progress tone plans as data, and a phase-continuous generator for them.

A tone is a list of steps (frequencies, level, duration). ``loop_from`` says where to go after the
last step: an index to repeat from, or ``None`` to fall silent (one-shot tones such as confirm).
A step with ``seconds=None`` lasts until the tone is stopped (continuous dial tone).

Numbers follow ANSI T1.401 / Telcordia LSSGR (us), ETSI TR 101 041 / ETS 300 512 (eu) and
BT SIN 350 (uk). Levels are in dBm0: a full-scale sine is +3.14 dBm0 (ITU-T G.711).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from offhook.contract.errors import OffhookError
from offhook.firmware.events import Tone

FULL_SCALE_DBM0 = 3.14
# Attack/release ramp at every on/off edge: an instant cut of a sine mid-cycle is an audible click.
EDGE_RAMP_S = 0.004


class TonePlanError(OffhookError, ValueError):
    """An unknown plan or tone, or an inconsistent tone definition."""


@dataclass(frozen=True)
class Step:
    frequencies: tuple[float, ...]  # () is silence
    seconds: float | None  # None: until stopped
    level_dbm0: float = -13.0

    @property
    def amplitude(self) -> float:
        return 32767.0 * 10.0 ** ((self.level_dbm0 - FULL_SCALE_DBM0) / 20.0)


@dataclass(frozen=True)
class ToneSpec:
    steps: tuple[Step, ...]
    loop_from: int | None = 0  # None: silence after the last step

    def __post_init__(self) -> None:
        if not self.steps:
            raise TonePlanError("a tone needs at least one step")
        for i, step in enumerate(self.steps):
            if step.seconds is None and i != len(self.steps) - 1:
                raise TonePlanError(f"step {i}: only the last step may be endless")
            if step.seconds is not None and step.seconds <= 0:
                raise TonePlanError(f"step {i}: duration must be positive, not {step.seconds}")
            peak = step.amplitude * len(step.frequencies)
            if peak > 32767:
                raise TonePlanError(f"step {i}: components sum to {peak:.0f}, above full scale")
        if self.loop_from is not None and not 0 <= self.loop_from < len(self.steps):
            raise TonePlanError(f"loop_from {self.loop_from} is not a step index")


def _on(freqs: tuple[float, ...], seconds: float | None, level: float) -> Step:
    return Step(freqs, seconds, level)


def _off(seconds: float) -> Step:
    return Step((), seconds)


def _cadence(freqs: tuple[float, ...], level: float, *on_off: float, loop: bool = True) -> ToneSpec:
    """Alternate on/off durations: ``_cadence(f, l, 0.5, 0.5)`` is on 0.5 s, off 0.5 s, repeat."""
    steps = tuple(_on(freqs, d, level) if i % 2 == 0 else _off(d) for i, d in enumerate(on_off))
    return ToneSpec(steps, 0 if loop else None)


def _continuous(freqs: tuple[float, ...], level: float) -> ToneSpec:
    return ToneSpec((_on(freqs, None, level),))


def _stutter_then_steady(freqs: tuple[float, ...], level: float, bursts: int) -> ToneSpec:
    """Message-waiting dial tone: short bursts, then steady dial tone."""
    steps: list[Step] = []
    for _ in range(bursts):
        steps += [_on(freqs, 0.1, level), _off(0.1)]
    steps.append(_on(freqs, None, level))
    return ToneSpec(tuple(steps))


# The local ringer: a trill (alternating pairs) under each country's ringing cadence.
_TRILL_A, _TRILL_B = (1000.0, 1250.0), (800.0, 1000.0)


def _ring(level: float, *on_off: float) -> ToneSpec:
    steps: list[Step] = []
    for i, seconds in enumerate(on_off):
        if i % 2:
            steps.append(_off(seconds))
            continue
        trill_steps = max(1, round(seconds / 0.05))
        for k in range(trill_steps):
            steps.append(_on(_TRILL_A if k % 2 == 0 else _TRILL_B, seconds / trill_steps, level))
    return ToneSpec(tuple(steps))


US_DIAL = (350.0, 440.0)
US_RINGBACK = (440.0, 480.0)
US_BUSY = (480.0, 620.0)
HOWLER = (1400.0, 2060.0, 2450.0, 2600.0)

TONE_PLANS: dict[str, dict[Tone, ToneSpec]] = {
    "us": {
        Tone.DIAL: _continuous(US_DIAL, -13.0),
        Tone.STUTTER: _stutter_then_steady(US_DIAL, -13.0, bursts=10),
        Tone.RINGBACK: _cadence(US_RINGBACK, -19.0, 2.0, 4.0),
        Tone.BUSY: _cadence(US_BUSY, -24.0, 0.5, 0.5),
        Tone.CONGESTION: _cadence(US_BUSY, -24.0, 0.25, 0.25),  # reorder
        Tone.HOWLER: _cadence(HOWLER, -10.0, 0.1, 0.1),
        Tone.CALL_WAITING: _cadence((440.0,), -13.0, 0.3, 9.7),
        Tone.RING: _ring(-10.0, 2.0, 4.0),
        Tone.CONFIRM: _cadence(US_DIAL, -13.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, loop=False),
    },
    "eu": {
        Tone.DIAL: _continuous((425.0,), -10.0),
        Tone.STUTTER: _cadence((425.0,), -10.0, 0.4, 0.04),  # ETSI special dial tone
        Tone.RINGBACK: _cadence((425.0,), -13.0, 1.0, 4.0),
        Tone.BUSY: _cadence((425.0,), -13.0, 0.5, 0.5),
        Tone.CONGESTION: _cadence((425.0,), -13.0, 0.25, 0.25),
        Tone.HOWLER: _cadence(HOWLER, -10.0, 0.1, 0.1),
        Tone.CALL_WAITING: _cadence((425.0,), -13.0, 0.2, 0.2, 0.2, 4.4),
        Tone.RING: _ring(-10.0, 1.0, 4.0),
        Tone.CONFIRM: _cadence((425.0,), -13.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, loop=False),
    },
    "uk": {
        # BT SIN 350 "proceed indication": 350 Hz plus 440 Hz, as in the us plan.
        Tone.DIAL: _continuous(US_DIAL, -13.0),
        Tone.STUTTER: _cadence(US_DIAL, -13.0, 0.75, 0.75),  # special proceed indication
        Tone.RINGBACK: _cadence((400.0, 450.0), -16.0, 0.4, 0.2, 0.4, 2.0),
        Tone.BUSY: _cadence((400.0,), -13.0, 0.375, 0.375),
        # "Path engaged": 400 Hz 0.4 on 0.35 off 0.225 on 0.525 off.
        Tone.CONGESTION: _cadence((400.0,), -13.0, 0.4, 0.35, 0.225, 0.525),
        Tone.HOWLER: _cadence(HOWLER, -10.0, 0.1, 0.1),
        Tone.CALL_WAITING: _cadence((400.0,), -13.0, 0.1, 4.0),
        Tone.RING: _ring(-10.0, 0.4, 0.2, 0.4, 2.0),
        Tone.CONFIRM: _cadence(US_DIAL, -13.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, loop=False),
    },
}
# UK tones that have no Tone member yet; kept as data for callers that want them by name.
UK_NUMBER_UNOBTAINABLE = _continuous((400.0,), -13.0)


def tone_spec(plan: str, tone: Tone) -> ToneSpec:
    try:
        tones = TONE_PLANS[plan]
    except KeyError:
        raise TonePlanError(f"unknown tone plan {plan!r}; known: {', '.join(TONE_PLANS)}") from None
    try:
        return tones[tone]
    except KeyError:
        raise TonePlanError(f"tone plan {plan!r} has no {tone.value!r} tone") from None


class ToneGenerator:
    """Renders a ToneSpec frame by frame.

    Oscillator phases and the cadence position carry over between frames, so frame boundaries
    are inaudible; each on-step is shaped with a short ramp at both ends.
    """

    def __init__(self, spec: ToneSpec, sample_rate: int) -> None:
        self.spec = spec
        self.sample_rate = sample_rate
        self._ramp = max(1, int(EDGE_RAMP_S * sample_rate))
        self._step_index = 0
        self._pos = 0  # samples into the current step
        self._phases: list[float] = []
        self._finished = False
        self._enter_step(0)

    @property
    def finished(self) -> bool:
        """True once a one-shot tone has played out (it then renders silence)."""
        return self._finished

    def _step_samples(self, step: Step) -> int | None:
        return None if step.seconds is None else max(1, round(step.seconds * self.sample_rate))

    def _enter_step(self, index: int) -> None:
        previous = self.spec.steps[self._step_index]
        step = self.spec.steps[index]
        self._step_index = index
        self._pos = 0
        # Keep phases when the frequencies do not change (e.g. stutter -> steady), else restart
        # at zero: the ramp starts from silence, so a reset cannot click.
        if step.frequencies != previous.frequencies or len(self._phases) != len(step.frequencies):
            self._phases = [0.0] * len(step.frequencies)

    def _advance_step(self) -> None:
        nxt = self._step_index + 1
        if nxt < len(self.spec.steps):
            self._enter_step(nxt)
        elif self.spec.loop_from is not None:
            self._enter_step(self.spec.loop_from)
        else:
            self._finished = True

    def render(self, samples: int) -> array:
        """The next ``samples`` samples of the tone as ``array('h')``."""
        out = array("h", bytes(2 * samples))
        i = 0
        while i < samples and not self._finished:
            step = self.spec.steps[self._step_index]
            total = self._step_samples(step)
            count = samples - i if total is None else min(samples - i, total - self._pos)
            if step.frequencies:
                self._render_step(step, total, out, i, count)
            self._pos += count
            i += count
            if total is not None and self._pos >= total:
                self._advance_step()
        return out

    def fade_out(self, samples: int) -> array:
        """The next ``samples`` samples, faded to silence over the edge ramp; then finished.

        Stopping or replacing a tone mid-burst this way avoids the click of a hard cut.
        """
        out = self.render(samples)
        ramp = self._ramp
        for k in range(min(ramp, samples)):
            out[k] = round(out[k] * (ramp - k) / ramp)
        for k in range(ramp, samples):
            out[k] = 0
        self._finished = True
        return out

    def _render_step(
        self, step: Step, total: int | None, out: array, start: int, count: int
    ) -> None:
        amp = step.amplitude
        ramp = self._ramp if total is None else min(self._ramp, total // 2)
        increments = [2.0 * math.pi * f / self.sample_rate for f in step.frequencies]
        phases = self._phases
        sin = math.sin
        pos = self._pos
        for k in range(count):
            value = 0.0
            for j, inc in enumerate(increments):
                value += sin(phases[j])
                phases[j] += inc
            p = pos + k
            gain = 1.0
            if p < ramp:
                gain = p / ramp
            elif total is not None and total - p <= ramp:
                gain = (total - p - 1) / ramp
            out[start + k] = round(amp * gain * value)
        # Keep phases small so precision does not decay over hours of dial tone.
        two_pi = 2.0 * math.pi
        self._phases = [ph % two_pi for ph in phases]
