"""Speaker volume: software gain curve, validation, and the real-ALSA fallback without a card."""

from __future__ import annotations

import pytest

from offhook.firmware.audio.mixer import SpeakerVolume, software_gain
from tests.fixtures.alsa import alsa_home  # noqa: F401  (fixture)


def test_software_gain_curve() -> None:
    assert software_gain(100) == 1.0
    assert software_gain(0) == 0.0
    assert software_gain(50) == pytest.approx(0.1)  # -20 dB
    gains = [software_gain(v) for v in range(101)]
    assert gains == sorted(gains) and len(set(gains)) == 101


@pytest.mark.parametrize("bad", [-1, 101, 50.5, "50", True, None])
def test_bad_volumes_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="0-100"):
        software_gain(bad)  # type: ignore[arg-type]


def test_no_control_means_software_gain() -> None:
    volume = SpeakerVolume("", volume=50)
    assert not volume.hardware
    assert volume.gain == pytest.approx(0.1)
    volume.set(100)
    assert volume.gain == 1.0


@pytest.mark.usefixtures("alsa_home")
def test_missing_alsa_control_falls_back_to_software_gain(caplog: pytest.LogCaptureFixture) -> None:
    # Real alsa-lib: there is no card here, so opening the mixer fails and we must not crash.
    volume = SpeakerVolume("Speaker", mixer_device="default", volume=50)
    assert not volume.hardware
    assert volume.gain == pytest.approx(0.1)
    # the control is a field of the record (offhook.contract.logs.kv), not part of its message
    assert any(getattr(r, "fields", {}).get("control") == "Speaker" for r in caplog.records)
    volume.close()
