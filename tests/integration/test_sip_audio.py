"""Audio end to end: ALSA (file PCMs) <-> AlsaAudio <-> SipEngine <-> Kamailio <-> baresip.

baresip sends a sine (ausine) and records what it decodes; the phone's "mic" is a file holding
another sine and its "speaker" a file. Each side must hear the other's tone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from offhook.contract.config import AudioSettings
from offhook.firmware.audio import AlsaAudio
from offhook.firmware.events import CallState, Conference, Hangup, MakeCall, SetMute
from tests.fixtures.alsa import AlsaFiles, alsa_files, alsa_home  # noqa: F401
from tests.fixtures.baresip import (
    BaresipPeer,
    dominant_frequency,
    pcm16_to_float,
    read_wav_mono,
    rms,
)
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer, place_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RATE = 16000
MIC_HZ = 800
PEER_HZ = 440
TALK_S = 2.0
TOLERANCE_HZ = 15


@pytest.fixture
def alsa_audio(alsa_files: AlsaFiles) -> Iterator[AlsaAudio]:  # noqa: F811
    alsa_files.write_mic_tone(MIC_HZ, 10.0, RATE)
    settings = AudioSettings(playback=alsa_files.speaker, capture=alsa_files.mic, sample_rate=RATE)
    audio = AlsaAudio(settings)
    audio.start()
    try:
        yield audio
    finally:
        audio.stop()


def talk(engine_events: tuple, target: str, seconds: float = TALK_S) -> int:
    engine, events = engine_events
    mark = events.mark()
    engine.submit(MakeCall(0, target))
    call = events.wait_call_state(CallState.CONFIRMED, start=mark)
    time.sleep(seconds)  # let audio flow; the analysis below does not depend on exact timing
    engine.submit(Hangup(call.call_id))
    events.wait_call_state(CallState.DISCONNECTED, call.call_id, start=mark)
    return call.call_id


def heard(peer: BaresipPeer) -> tuple[np.ndarray, int]:
    """What baresip decoded in its only call, minus the first half second (set-up, jitter fill)."""
    (recording,) = peer.recordings()
    samples, rate = read_wav_mono(recording)
    return samples[rate // 2 :], rate


def test_tones_cross_between_alsa_and_baresip(
    kamailio_server: KamailioServer,  # noqa: F811
    alsa_audio: AlsaAudio,
    alsa_files: AlsaFiles,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    with (
        peer(kamailio_server, tmp_path, "1002", tone_hz=PEER_HZ) as far,
        running_engine(config, alsa_audio) as phone,
    ):
        talk(phone, "1002")
    alsa_audio.stop()
    speaker = pcm16_to_float(alsa_files.speaker_file.read_bytes())
    sounding = speaker[np.abs(speaker) > 0.01]
    assert len(sounding) > RATE // 2, "almost nothing reached the ALSA speaker"
    assert abs(dominant_frequency(sounding, RATE) - PEER_HZ) < TOLERANCE_HZ
    assert abs(dominant_frequency(*heard(far)) - MIC_HZ) < TOLERANCE_HZ


def test_mute_sends_silence(
    kamailio_server: KamailioServer,  # noqa: F811
    alsa_audio: AlsaAudio,
    tmp_path: Path,
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    with (
        peer(kamailio_server, tmp_path, "1002", tone_hz=PEER_HZ) as far,
        running_engine(config, alsa_audio) as phone,
    ):
        phone[0].submit(SetMute(True))
        talk(phone, "1002", seconds=1.0)
    assert rms(heard(far)[0]) < 0.003  # the mic file holds a loud 800 Hz tone (rms ~0.17)


def test_three_way_conference_bridges_both_far_ends(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")])
    with (
        peer(kamailio_server, tmp_path, "1002", tone_hz=440) as first,
        peer(kamailio_server, tmp_path, "1003", tone_hz=1300) as second,
        running_engine(config) as (engine, events),
    ):
        ids = [place_call(engine, events, target).call_id for target in ("1002", "1003")]
        engine.submit(Conference(tuple(ids)))
        time.sleep(TALK_S)
        for call_id in ids:
            engine.submit(Hangup(call_id))
        for call_id in ids:
            events.wait_call_state(CallState.DISCONNECTED, call_id)
    # Without a local audio device, each far end can only have heard the other one.
    assert abs(dominant_frequency(*heard(first)) - 1300) < TOLERANCE_HZ
    assert abs(dominant_frequency(*heard(second)) - 440) < TOLERANCE_HZ
