"""The speakerphone's echo canceller (Speex's, libspeexdsp through ctypes) on a synthetic room.

The far end's speech (espeak-ng) plays on the loudspeaker and comes back into the microphone
delayed by 30-120 ms, coloured and 6 dB down, with a little noise. Once the canceller has
converged the echo must be at least 15 dB down (echo return loss enhancement, ERLE): without the
canceller it is 0 dB, a canceller fed the wrong reference or a tail too short for the delay
stays below 10 dB. With the near end talking at the same time (double talk), the near end's
speech must come through: not cut away, and cleaner than the microphone signal was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from offhook.firmware.audio.echo import EchoCanceller, EchoCancellerError, ReferenceQueue
from tests.fixtures.echo_path import (
    EchoPath,
    erle_over_time,
    near_end_snr_db,
    run_canceller,
    scene,
)
from tests.fixtures.speech import RATE, make_reference

pytestmark = pytest.mark.integration

PERIOD = RATE // 100  # the bridge's 10 ms ALSA period
CONVERGED_AFTER_S = 6.0
ERLE_FLOOR_DB = 15.0
NEAR_TEXT = "A large size in stockings is hard to sell. The boy was there when the sun rose."


@pytest.fixture(scope="module")
def far(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    speech = make_reference(Path(tmp_path_factory.mktemp("far")))
    return np.concatenate([speech, speech])  # 18 s: converge, then measure


@pytest.fixture(scope="module")
def near(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return make_reference(Path(tmp_path_factory.mktemp("near")), NEAR_TEXT)


def converged_erle(far: np.ndarray, path: EchoPath, tail_ms: int) -> float:
    room = scene(far, path)
    canceller = EchoCanceller(RATE, PERIOD, tail_ms)
    try:
        output = run_canceller(room.mic, room.speaker, PERIOD, canceller.process)
    finally:
        canceller.close()
    late = [erle for start, erle in erle_over_time(room, output) if start >= CONVERGED_AFTER_S]
    assert len(late) >= 10, "too few far-end-only windows to judge"
    return float(np.median(late))


@pytest.mark.parametrize("delay_ms", [30, 60, 120])
def test_echo_is_15_db_down_after_convergence(far: np.ndarray, delay_ms: int) -> None:
    assert converged_erle(far, EchoPath(delay_ms=delay_ms), tail_ms=200) >= ERLE_FLOOR_DB


def test_without_the_canceller_the_echo_stays(far: np.ndarray) -> None:
    room = scene(far, EchoPath())
    output = run_canceller(room.mic, room.speaker, PERIOD, None)
    assert max(erle for _, erle in erle_over_time(room, output)) < 1.0


def test_a_tail_shorter_than_the_echo_does_not_cancel_it(far: np.ndarray) -> None:
    # 120 ms direct path + 40 ms of reflections against a 60 ms filter: the echo is out of reach
    assert converged_erle(far, EchoPath(delay_ms=120), tail_ms=60) < 10.0


def test_the_near_end_comes_through_double_talk(far: np.ndarray, near: np.ndarray) -> None:
    start = len(far) / RATE - len(near) / RATE - 0.5  # the near end talks once converged
    room = scene(far, EchoPath(), near, near_at_s=start)
    canceller = EchoCanceller(RATE, PERIOD, 200)
    output = run_canceller(room.mic, room.speaker, PERIOD, canceller.process)
    canceller.close()
    stop = start + len(near) / RATE
    before = near_end_snr_db(room, room.mic, start, stop)  # the echo is louder than the talker
    after = near_end_snr_db(room, output, start, stop)
    assert before < 0.0
    assert after > before + 8.0  # measured: -4.0 dB -> 11.5 dB
    window = slice(int(start * RATE), int(stop * RATE))
    kept = float(np.sum(output[window] * room.near[window]) / np.sum(room.near[window] ** 2))
    assert kept > 0.7  # the near end's speech is not cancelled along with the echo


def test_bad_frames_are_refused_with_their_sizes() -> None:
    canceller = EchoCanceller(RATE, PERIOD, 200)
    with pytest.raises(EchoCancellerError, match="320-byte periods, got mic 10"):
        canceller.process(bytes(10), bytes(PERIOD * 2))
    canceller.close()
    with pytest.raises(EchoCancellerError, match="after close"):
        canceller.process(bytes(PERIOD * 2), bytes(PERIOD * 2))
    with pytest.raises(EchoCancellerError, match="tail 0 ms"):
        EchoCanceller(RATE, PERIOD, 0)


def test_the_reference_queue_is_bounded_and_gives_silence_when_empty() -> None:
    queue = ReferenceQueue(4, max_periods=2)
    assert queue.take() == bytes(8)
    for value in (1, 2, 3):
        queue.put(bytes([value]) * 8)
    assert queue.dropped == 1
    assert queue.take() == bytes([2]) * 8  # the oldest went
