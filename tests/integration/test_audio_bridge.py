"""AlsaAudio on real alsa-lib: file PCMs (slave null) defined in a private alsa-lib config.

What reaches the "speaker" is read back from the playback file and analysed (Goertzel); the "mic"
is a file holding a known tone.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from offhook.contract.config import AudioSettings
from offhook.firmware.audio import AlsaAudio, AlsaDeviceError, TonePlanError
from offhook.firmware.audio.bridge import STANDBY_AFTER_S
from offhook.firmware.audio.pcm import rms, to_bytes, to_samples, tone_power
from offhook.firmware.audio.ringbuffer import IDLE_AFTER_S
from offhook.firmware.audio.tones import EDGE_RAMP_S, tone_spec
from offhook.firmware.events import Tone
from tests.fixtures.alsa import AlsaFiles, alsa_files, alsa_home  # noqa: F401  (fixtures)
from tests.fixtures.waiting import wait_until

RATE = 16000
BLOCK = RATE // 100  # 10 ms


def share(samples: list[int], freqs: tuple[float, ...]) -> float:
    return sum(tone_power(samples, f, RATE) for f in freqs) / max(rms(samples) ** 2, 1e-9)


def sounding_blocks(samples: list[int]) -> list[bool]:
    return [any(samples[i : i + BLOCK]) for i in range(0, len(samples) - BLOCK + 1, BLOCK)]


def longest_sounding_stretch(samples: list[int]) -> list[int]:
    """The samples of the longest run of non-silent 10 ms blocks."""
    best, best_start, start = 0, 0, None
    flags = [*sounding_blocks(samples), False]
    for i, on in enumerate(flags):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start > best:
                best, best_start = i - start, start
            start = None
    return samples[best_start * BLOCK : (best_start + best) * BLOCK]


def sounding_stretches(samples: list[int], min_blocks: int = 10) -> list[list[int]]:
    """Every run of at least ``min_blocks`` non-silent 10 ms blocks, in order."""
    stretches, start = [], None
    for i, on in enumerate([*sounding_blocks(samples), False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start >= min_blocks:
                stretches.append(samples[start * BLOCK : i * BLOCK])
            start = None
    return stretches


wait_for = partial(wait_until, timeout=3.0, interval=0.01)


@pytest.fixture
def make_audio(alsa_files: AlsaFiles) -> Iterator[Callable[..., AlsaAudio]]:  # noqa: F811
    started: list[AlsaAudio] = []

    def make(**overrides: object) -> AlsaAudio:
        fields = {"playback": alsa_files.speaker, "capture": alsa_files.mic, "sample_rate": RATE}
        fields["speaker_volume"] = 100
        fields.update(overrides)
        audio = AlsaAudio(AudioSettings(**fields))
        audio.start()
        started.append(audio)
        return audio

    yield make
    for audio in started:
        audio.stop()


def play_for(audio: AlsaAudio, tone: Tone, seconds: float) -> None:
    audio.play_tone(tone)
    time.sleep(seconds)
    audio.stop_tone()
    time.sleep(0.15)


@pytest.mark.parametrize(
    ("plan", "freqs", "absent"),
    [("us", (350, 440), (425,)), ("eu", (425,), (350, 440)), ("uk", (350, 440), (425,))],
)
def test_dial_tone_reaches_the_speaker_in_each_plan(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
    plan: str,
    freqs: tuple[int, ...],
    absent: tuple[int, ...],
) -> None:
    audio = make_audio(tone_plan=plan)
    time.sleep(0.1)
    play_for(audio, Tone.DIAL, 0.5)
    audio.stop()
    tone = longest_sounding_stretch(alsa_files.speaker_samples())
    assert len(tone) >= 0.3 * RATE  # it played for ~0.5 s of real time
    assert share(tone, freqs) > 0.95
    assert share(tone, absent) < 0.05


def test_uk_busy_differs_from_us_busy(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio(tone_plan="uk")
    play_for(audio, Tone.BUSY, 0.3)
    audio.stop()
    burst = longest_sounding_stretch(alsa_files.speaker_samples())
    assert share(burst, (400,)) > 0.95
    assert share(burst, (480, 620)) < 0.05


def test_stop_tone_leaves_silence(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio()
    play_for(audio, Tone.DIAL, 0.3)
    time.sleep(0.3)
    audio.stop()
    samples = alsa_files.speaker_samples()
    flags = sounding_blocks(samples)
    assert any(flags)
    last_sound = max(i for i, on in enumerate(flags) if on)
    assert len(flags) - last_sound > 20  # >= 200 ms of silence at the end
    assert audio.tone is None
    # Start and stop are ramped: no sample step beyond what 350+440 Hz (and the ramp) allow.
    step = tone_spec("us", Tone.DIAL).steps[0]
    bound = sum(step.amplitude * 2 * math.pi * f / RATE for f in step.frequencies)
    bound += step.amplitude * len(step.frequencies) / int(EDGE_RAMP_S * RATE)
    assert max(abs(b - a) for a, b in itertools.pairwise(samples)) <= bound * 1.02 + 2


def test_call_audio_written_by_the_sip_side_is_played(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio()
    frame_samples = audio.frame_samples
    assert frame_samples == RATE * 20 // 1000
    step = 2 * math.pi * 1000 / RATE

    def network() -> None:  # pjsua2's clock: one 20 ms frame every 20 ms
        n = 0
        next_at = time.monotonic()
        for _ in range(40):
            frame = [round(8000 * math.sin(step * (n + i))) for i in range(frame_samples)]
            audio.write_playback_frame(to_bytes(array("h", frame)))
            n += frame_samples
            next_at += 0.02
            time.sleep(max(0.0, next_at - time.monotonic()))

    feeder = threading.Thread(target=network)
    feeder.start()
    feeder.join(timeout=5)
    time.sleep(0.1)
    audio.stop()
    call = longest_sounding_stretch(alsa_files.speaker_samples())
    assert len(call) >= 0.6 * RATE
    assert share(call[BLOCK:-BLOCK], (1000,)) > 0.95
    assert audio.stats["network_frames_in"] == 40


def test_call_waiting_beep_is_mixed_over_call_audio(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio(tone_plan="us")
    frame_samples = audio.frame_samples
    step = 2 * math.pi * 1000 / RATE
    n = 0
    next_at = time.monotonic()
    for k in range(40):  # 0.8 s of call audio at 1 kHz; the 440 Hz beep (0.3 s) starts at 0.2 s
        if k == 10:
            audio.play_tone(Tone.CALL_WAITING)
        frame = [round(8000 * math.sin(step * (n + i))) for i in range(frame_samples)]
        audio.write_playback_frame(to_bytes(array("h", frame)))
        n += frame_samples
        next_at += 0.02
        time.sleep(max(0.0, next_at - time.monotonic()))
    audio.stop()
    samples = alsa_files.speaker_samples()
    window = 4 * BLOCK
    blocks = [samples[i : i + window] for i in range(0, len(samples) - window, window)]
    mixed = [b for b in blocks if any(b) and share(b, (440,)) > 0.1 and share(b, (1000,)) > 0.3]
    assert len(mixed) >= 3  # >= 120 ms where the beep sounds over the call
    assert all(share(b, (440, 1000)) > 0.9 for b in mixed)
    call_only = [b for b in blocks if any(b) and share(b, (1000,)) > 0.95]
    assert call_only  # and the call alone before/after the beep


def test_capture_delivers_the_mic_tone_and_mute_silences_it(
    alsa_files: AlsaFiles,  # noqa: F811
    make_audio: Callable[..., AlsaAudio],
) -> None:
    alsa_files.write_mic_tone(800, 10.0, RATE)
    audio = make_audio()
    assert wait_for(lambda: audio.stats["capture_ring_level"] >= audio.frame_samples)
    frame = audio.read_capture_frame()
    assert len(frame) == audio.frame_samples * 2
    samples = list(to_samples(frame))
    assert share(samples, (800,)) > 0.95
    audio.set_mute(True)
    assert wait_for(lambda: audio.stats["capture_ring_level"] >= audio.frame_samples)
    assert audio.read_capture_frame() == bytes(audio.frame_samples * 2)  # data there, muted
    audio.set_mute(False)
    assert wait_for(lambda: audio.stats["capture_ring_level"] >= audio.frame_samples)
    assert share(list(to_samples(audio.read_capture_frame())), (800,)) > 0.95


def test_capture_underrun_returns_silence_and_is_counted(
    alsa_files: AlsaFiles,  # noqa: F811
    make_audio: Callable[..., AlsaAudio],
) -> None:
    alsa_files.write_mic_tone(800, 10.0, RATE)
    audio = make_audio()
    assert wait_for(lambda: audio.stats["frames_captured"] > 0)
    # The network side reads much faster than the mic delivers: it must get silence, not block.
    reads = [audio.read_capture_frame() for _ in range(50)]
    assert all(len(r) == audio.frame_samples * 2 for r in reads)
    assert bytes(audio.frame_samples * 2) in reads
    assert audio.stats["capture_underruns"] >= 1
    audio.stop()
    time.sleep(IDLE_AFTER_S + 0.05)
    after = audio.stats["capture_underruns"]
    assert audio.read_capture_frame() == bytes(audio.frame_samples * 2)
    assert audio.stats["capture_underruns"] == after  # an idle mic counts nothing


def test_stalled_writer_is_recovered(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio()
    stalled = threading.Event()

    def stall_once(_frame: bytes) -> None:  # runs on the playback thread, like a long GC pause
        if not stalled.is_set():
            stalled.set()
            time.sleep(0.3)

    audio.play_tone(Tone.DIAL)
    time.sleep(0.1)
    audio.on_playback_write = stall_once
    assert wait_for(stalled.is_set)
    assert wait_for(lambda: audio.stats["xruns_recovered"] >= 1)
    played = audio.stats["frames_played"]
    assert wait_for(lambda: audio.stats["frames_played"] >= played + 20)  # still running
    time.sleep(0.3)
    audio.stop_tone()
    time.sleep(0.1)
    audio.stop()
    assert audio.stats["loop_errors"] == 0
    tail = longest_sounding_stretch(alsa_files.speaker_samples())
    assert share(tail, (350, 440)) > 0.95  # dial tone resumed after the stall


def test_tone_switch_and_plan_change_take_effect(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio(tone_plan="us")
    audio.play_tone(Tone.DIAL)
    time.sleep(0.3)
    audio.set_tone_plan("eu")  # the playing dial tone restarts as 425 Hz
    time.sleep(0.4)
    audio.stop_tone()
    time.sleep(0.1)
    audio.stop()
    samples = longest_sounding_stretch(alsa_files.speaker_samples())
    blocks = [samples[i : i + 4 * BLOCK] for i in range(0, len(samples) - 4 * BLOCK, 4 * BLOCK)]
    us = [share(b, (350, 440)) > 0.9 for b in blocks]
    eu = [share(b, (425,)) > 0.9 for b in blocks]
    assert us[0] and eu[-1]
    assert us.index(False) <= eu.index(True)  # first us, then eu, nothing after eu but eu
    assert audio.tone_plan == "eu"


def test_software_volume_scales_the_speaker(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio(speaker_volume=100)
    play_for(audio, Tone.DIAL, 0.3)
    loud = rms(longest_sounding_stretch(alsa_files.speaker_samples()))
    audio.set_volume(50)
    audio.play_tone(Tone.DIAL)
    time.sleep(0.3)
    audio.stop()
    quiet = rms(longest_sounding_stretch(alsa_files.speaker_samples()[-int(0.25 * RATE) :]))
    assert quiet / loud == pytest.approx(0.1, rel=0.1)  # 50 -> -20 dB
    with pytest.raises(ValueError, match="0-100"):
        audio.set_volume(120)


def test_missing_device_is_named(alsa_files: AlsaFiles) -> None:  # noqa: F811
    audio = AlsaAudio(AudioSettings(playback="offhook_no_such_pcm", capture=alsa_files.mic))
    with pytest.raises(AlsaDeviceError, match="playback PCM 'offhook_no_such_pcm'"):
        audio.start()
    audio = AlsaAudio(AudioSettings(playback=alsa_files.speaker, capture="offhook_no_mic"))
    with pytest.raises(AlsaDeviceError, match="capture PCM 'offhook_no_mic'"):
        audio.start()


def test_bad_tone_requests_are_rejected_in_the_caller(
    make_audio: Callable[..., AlsaAudio],
) -> None:
    audio = make_audio()
    with pytest.raises(TonePlanError, match="unknown tone plan 'xx'"):
        audio.set_tone_plan("xx")
    with pytest.raises(TonePlanError, match="not a Tone"):
        audio.play_tone("dial")  # type: ignore[arg-type]
    assert audio.stats["loop_errors"] == 0


@pytest.mark.parametrize(("rate", "period_ms"), [(8000, 20), (48000, 5)])
def test_other_rates_and_periods(alsa_files: AlsaFiles, rate: int, period_ms: int) -> None:  # noqa: F811
    settings = AudioSettings(
        playback=alsa_files.speaker,
        capture=alsa_files.mic,
        sample_rate=rate,
        period_ms=period_ms,
        tone_plan="eu",
        speaker_volume=100,
    )
    with AlsaAudio(settings) as audio:
        assert audio.frame_samples == rate // 50
        assert len(audio.read_capture_frame()) == 2 * rate // 50
        play_for(audio, Tone.DIAL, 0.3)
    samples = alsa_files.speaker_samples()
    first = next(i for i, x in enumerate(samples) if x)
    body = samples[first + rate // 100 : first + rate // 5]
    power = sum(tone_power(body, f, rate) for f in (425,)) / rms(body) ** 2
    assert power > 0.95


def test_ring_volume_scales_only_the_ringer(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    audio = make_audio(speaker_volume=100, ring_volume=100)
    play_for(audio, Tone.RING, 0.3)
    audio.set_ring_volume(50)
    play_for(audio, Tone.RING, 0.3)
    play_for(audio, Tone.DIAL, 0.3)
    audio.stop()
    loud, quiet, dial = sounding_stretches(alsa_files.speaker_samples())
    assert rms(quiet) / rms(loud) == pytest.approx(0.1, rel=0.15)  # 50 -> -20 dB
    dial_level = tone_spec("us", Tone.DIAL).steps[0].amplitude  # two sines of A: rms A
    assert rms(dial) == pytest.approx(dial_level, rel=0.05)  # the speaker volume is untouched


def test_idle_bridge_parks_both_device_threads_and_wakes_for_each_use(
    make_audio: Callable[..., AlsaAudio],
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    alsa_files.write_mic_tone(800, 10.0, RATE)
    audio = make_audio()
    # no tone, no call audio, nobody reading the mic: both threads park after STANDBY_AFTER_S
    assert wait_for(lambda: audio.standbys >= 2, timeout=STANDBY_AFTER_S + 2)
    played, captured = audio.stats["frames_played"], audio.stats["frames_captured"]
    time.sleep(0.3)
    assert (audio.stats["frames_played"], audio.stats["frames_captured"]) == (played, captured)
    # a tone wakes playback at once and reaches the speaker
    size_before = len(alsa_files.speaker_samples())
    audio.play_tone(Tone.DIAL)
    assert wait_for(lambda: audio.stats["frames_played"] > played + 10)
    audio.stop_tone()
    assert share(alsa_files.speaker_samples()[size_before:], (350, 440)) > 0.9
    # the network side asking for mic audio wakes capture; the mic tone then comes through
    assert audio.read_capture_frame() == bytes(audio.frame_samples * 2)  # nothing captured yet
    assert wait_for(lambda: audio.stats["capture_ring_level"] >= audio.frame_samples)
    assert share(list(to_samples(audio.read_capture_frame())), (800,)) > 0.95
    # call audio written while playback is parked again is played
    assert wait_for(lambda: audio.standbys >= 3, timeout=STANDBY_AFTER_S + 2)
    played = audio.stats["frames_played"]
    sine = to_bytes(
        array("h", (round(8000 * math.sin(2 * math.pi * 1000 * i / RATE)) for i in range(320)))
    )
    for _ in range(10):
        audio.write_playback_frame(sine)
    assert wait_for(lambda: audio.stats["frames_played"] > played + 5)
    assert audio.stats["xruns_recovered"] == 0  # a standby is not a stall
    assert audio.stats["loop_errors"] == 0


def _capture_for(audio: AlsaAudio, seconds: float) -> list[int]:
    """Mic frames as the SIP side takes them, one every 20 ms."""
    samples: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.extend(to_samples(audio.read_capture_frame()))
        time.sleep(0.02)
    return samples


@pytest.mark.parametrize("handsfree", [True, False])
def test_the_speakerphone_cancels_what_its_loudspeaker_plays(
    alsa_files: AlsaFiles,  # noqa: F811
    make_audio: Callable[..., AlsaAudio],
    handsfree: bool,
) -> None:
    # The mic "hears" the dial tone's 440 Hz component played on the loudspeaker. Hands-free,
    # the canceller (reference: what the playback thread played) learns it and takes it out;
    # on the handset the mic passes untouched. A stalled thread on a loaded host shifts the
    # reference against the mic and the canceller needs ~0.5 s to learn the new delay: the
    # median over 100 ms windows is what must be down (measured: 30 dB and more).
    alsa_files.write_mic_tone(440, 12.0, RATE, amplitude=4000)
    audio = make_audio()
    audio.set_handsfree(handsfree)
    audio.play_tone(Tone.DIAL)
    _capture_for(audio, 2.0)  # converge
    late = _capture_for(audio, 3.0)
    window = RATE // 10
    powers = [rms(late[i : i + window]) ** 2 for i in range(0, len(late) - window + 1, window)]
    heard = statistics.median(powers) / (4000**2 / 2)  # against the mic tone's power
    assert audio.echo_cancelling is handsfree
    if handsfree:
        assert audio.stats["echo_cancelled_periods"] > 200
        assert heard < 0.1  # the tone is more than 10 dB down
    else:
        assert audio.stats["echo_cancelled_periods"] == 0
        assert heard > 0.5


def test_echo_cancellation_off_in_the_config_leaves_the_speakerphone_without(
    make_audio: Callable[..., AlsaAudio],
) -> None:
    audio = make_audio(echo_cancellation=False)
    audio.set_handsfree(True)
    assert not audio.echo_cancelling


def test_realtime_priority_moves_both_device_threads_to_sched_fifo(
    make_audio: Callable[..., AlsaAudio],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("SCHED_FIFO needs CAP_SYS_NICE")
    audio = make_audio(realtime_priority=10)
    audio.play_tone(Tone.DIAL)
    audio.read_capture_frame()
    assert wait_for(lambda: audio.stats["realtime_threads"] == 2)
    threads = {t.name: t.native_id for t in threading.enumerate() if t.name.startswith("audio-")}
    for name in ("audio-playback", "audio-capture"):
        native_id = threads[name]
        assert native_id is not None
        assert os.sched_getscheduler(native_id) == os.SCHED_FIFO
        assert os.sched_getparam(native_id).sched_priority == 10
    normal = make_audio()
    assert wait_for(lambda: normal.stats["frames_played"] > 0 or normal.standbys > 0)
    assert normal.stats["realtime_threads"] == 0
