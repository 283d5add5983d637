"""PcmStream on alsa-lib's real ``null`` PCM: wall-clock pacing, clocked detection, stalls."""

from __future__ import annotations

import alsaaudio
import pytest

from offhook.firmware.audio.alsa_device import AlsaDeviceError, PcmStream
from tests.fixtures.alsa import alsa_home  # noqa: F401  (fixture)

RATE = 16000
PERIOD = 160  # 10 ms
FRAME = bytes(2 * PERIOD)


class FakeTime:
    """A clock that only moves when slept on, plus ``cost`` per reading (a write that blocks)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cost = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        self.now += self.cost / 2  # a write reads the clock twice
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def stream(alsa_home: object, fake: FakeTime) -> PcmStream:  # noqa: F811
    s = PcmStream("null", False, RATE, PERIOD, periods=3, clock=fake.clock, sleep=fake.sleep)
    yield s
    s.close()


def test_unclocked_device_is_paced_to_real_time(stream: PcmStream, fake: FakeTime) -> None:
    start = fake.now
    for _ in range(10):
        stream.write(FRAME)
    assert not stream.clocked
    assert len(fake.sleeps) == 7  # three periods of "buffer" go in at once, then one per period
    assert fake.now - start == pytest.approx(0.07)


def test_a_stall_longer_than_the_buffer_is_an_xrun_and_is_recovered(
    stream: PcmStream, fake: FakeTime
) -> None:
    for _ in range(5):
        stream.write(FRAME)
    fake.now += 0.2  # the writer stalled (GC, CPU contention)
    stream.write(FRAME)
    assert stream.xruns_recovered == 1
    sleeps = len(fake.sleeps)
    for _ in range(3):  # re-anchored: the emptied buffer is filled at once again
        stream.write(FRAME)
    assert len(fake.sleeps) == sleeps
    stream.write(FRAME)
    assert len(fake.sleeps) == sleeps + 1


def test_blocking_writes_make_it_clocked_and_a_lone_slow_write_does_not(
    stream: PcmStream, fake: FakeTime
) -> None:
    fake.cost = 0.005
    stream.write(FRAME)
    fake.cost = 0.0
    for _ in range(5):
        stream.write(FRAME)
    assert not stream.clocked  # one slow write (contention) must not disable pacing
    fake.cost = 0.01  # every write blocks for a period: the device has a clock
    for _ in range(6):
        stream.write(FRAME)
    assert stream.clocked
    sleeps = len(fake.sleeps)
    for _ in range(5):
        stream.write(FRAME)
    assert len(fake.sleeps) == sleeps  # the device paces, we do not sleep
    fake.cost = 0.0  # writes stop blocking: not a clock after all, pace again
    for _ in range(20):
        stream.write(FRAME)
    assert not stream.clocked
    assert len(fake.sleeps) > sleeps


def test_capture_is_paced_and_returns_whole_periods(alsa_home: object, fake: FakeTime) -> None:  # noqa: F811
    cap = PcmStream("null", True, RATE, PERIOD, periods=4, clock=fake.clock, sleep=fake.sleep)
    try:
        data = [cap.read() for _ in range(10)]
    finally:
        cap.close()
    assert all(len(d) == 2 * PERIOD for d in data)
    assert len(fake.sleeps) == 6


def test_unknown_pcm_is_named(alsa_home: object) -> None:  # noqa: F811
    with pytest.raises(AlsaDeviceError, match="cannot open ALSA capture PCM 'offhook_nope'"):
        PcmStream("offhook_nope", True, RATE, PERIOD, periods=3)


class _CardPcm:
    """alsa-lib's real ``null`` PCM reporting a sound card behind it (``card_no`` 0), as ``plug``
    over ``hw:0,0`` does; this host has no sound card (the QEMU guest's snd-hda-intel is the real
    one, tests/integration/test_image_full.py)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._pcm = _REAL_PCM(*args, **kwargs)

    def info(self) -> dict:
        return self._pcm.info() | {"card_no": 0}

    def __getattr__(self, name: str) -> object:
        return getattr(self._pcm, name)


_REAL_PCM = alsaaudio.PCM


def test_a_pcm_on_a_sound_card_is_clocked_from_the_start_and_stays_so(
    alsa_home: object,  # noqa: F811
    fake: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen on snd-hda-intel in the QEMU guest: the playback stream was paced by the wall clock
    (it never blocked long enough to count as clocked), counted 'stalled' xruns and dropped the
    card's queue on top of the card's own xruns. A card has its own clock; alsa-lib says so."""
    import offhook.firmware.audio.alsa_device as alsa_device

    monkeypatch.setattr(alsa_device.alsaaudio, "PCM", _CardPcm)
    stream = PcmStream("null", False, RATE, PERIOD, periods=3, clock=fake.clock, sleep=fake.sleep)
    try:
        assert stream.clocked
        for _ in range(20):  # writes that do not block: a starved writer, the card underrunning
            stream.write(FRAME)
            fake.now += 0.05
        assert stream.clocked  # not demoted to wall-clock pacing
        assert fake.sleeps == []
        assert stream.xruns_recovered == 0  # no 'stalled' xruns invented on top of the card's
    finally:
        stream.close()


class _DmixPcm(_CardPcm):
    """The real ``null`` PCM behaving as alsa-lib's dmix under plug and softvol did in the QEMU
    guest (snd-hda-intel, alsa-lib 1.2.8, pyalsaaudio 0.11): after ``drop()`` the PCM still
    reports RUNNING, so pyalsaaudio (which prepares only from SETUP) writes straight away and
    every write fails with EBADFD until the PCM is opened again. The guest run itself is
    tests/integration/test_image_rpi.py::test_rpi_image_audio_survives_dmix_drops_and_xruns."""

    opened = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        type(self).opened += 1
        self.dropped = False

    def drop(self) -> None:
        self._pcm.drop()
        self.dropped = True

    def state(self) -> int:
        return alsaaudio.PCM_STATE_RUNNING if self.dropped else self._pcm.state()

    def write(self, data: bytes) -> int:
        if self.dropped:
            raise alsaaudio.ALSAAudioError("File descriptor in bad state [default]")
        return self._pcm.write(data)


def test_a_dmix_left_unrestartable_by_a_drop_is_reopened(
    alsa_home: object,  # noqa: F811
    fake: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the fix the playback stayed at EBADFD for good after the first drop (a new tone,
    or an xrun's recovery): 5640 failed writes in 40 s in the guest."""
    import offhook.firmware.audio.alsa_device as alsa_device

    monkeypatch.setattr(alsa_device.alsaaudio, "PCM", _DmixPcm)
    _DmixPcm.opened = 0
    stream = PcmStream("null", False, RATE, PERIOD, periods=3, clock=fake.clock, sleep=fake.sleep)
    try:
        for _ in range(5):
            stream.write(FRAME)
        stream.drop()  # silence queued ahead of a new tone is discarded
        for _ in range(20):
            stream.write(FRAME)
        assert stream.xruns_recovered == 0  # no write failed
        assert stream.reopens == 1 and _DmixPcm.opened == 2
        stream._recover("alsa reported xrun")  # an xrun's recovery drops as well
        for _ in range(5):
            stream.write(FRAME)
        assert stream.xruns_recovered == 1 and stream.reopens == 2
    finally:
        stream.close()


def test_a_hw_pcm_back_in_setup_after_a_drop_is_not_reopened(
    alsa_home: object,  # noqa: F811
    fake: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real ``null`` PCM goes to SETUP on drop, as hw and plughw do: pyalsaaudio prepares it
    on the next write, nothing is reopened."""
    import offhook.firmware.audio.alsa_device as alsa_device

    monkeypatch.setattr(alsa_device.alsaaudio, "PCM", _CardPcm)
    stream = PcmStream("null", False, RATE, PERIOD, periods=3, clock=fake.clock, sleep=fake.sleep)
    try:
        stream.write(FRAME)
        stream.drop()
        stream.write(FRAME)
        assert stream.reopens == 0 and stream.xruns_recovered == 0
    finally:
        stream.close()


class _UnderrunPcm(_CardPcm):
    """pyalsaaudio's answer to an underrun: it prepares the PCM and returns -EPIPE, unraised."""

    def write(self, data: bytes) -> int:
        return -32


def test_an_underrun_pyalsaaudio_returns_unraised_is_counted(
    alsa_home: object,  # noqa: F811
    fake: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import offhook.firmware.audio.alsa_device as alsa_device

    monkeypatch.setattr(alsa_device.alsaaudio, "PCM", _UnderrunPcm)
    stream = PcmStream("null", False, RATE, PERIOD, periods=3, clock=fake.clock, sleep=fake.sleep)
    try:
        stream.write(FRAME)
        stream.write(FRAME)
        assert stream.xruns_recovered == 2 and stream.reopens == 0
    finally:
        stream.close()
