"""Speaker volume: the card's ALSA mixer control where there is one, software gain otherwise."""

from __future__ import annotations

import logging

import alsaaudio

from offhook.contract.logs import kv

log = logging.getLogger(__name__)

# Software gain spans 40 dB over the 1-100 scale: equal steps sound like equal changes.
_SOFT_RANGE_DB = 40.0


def software_gain(volume: int) -> float:
    """Linear gain for a 0-100 volume: 100 is unity, 0 is mute, 50 is -20 dB."""
    check_volume(volume)
    if volume == 0:
        return 0.0
    return 10.0 ** ((volume - 100) * _SOFT_RANGE_DB / 100.0 / 20.0)


def check_volume(volume: int) -> int:
    if isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume <= 100:
        raise ValueError(f"volume must be an integer 0-100, not {volume!r}")
    return volume


class SpeakerVolume:
    """Applies a 0-100 volume to a mixer control, or reports a gain for the bridge to apply.

    ``control`` is an ALSA simple mixer control name (e.g. "PCM", "Speaker"); "" means none.
    ``mixer_device`` is the ALSA control device (e.g. "default", "hw:1").
    """

    def __init__(self, control: str, mixer_device: str = "default", volume: int = 80) -> None:
        self.control = control
        self.mixer_device = mixer_device
        self._mixer: alsaaudio.Mixer | None = None
        if control:
            try:
                self._mixer = alsaaudio.Mixer(control=control, device=mixer_device)
            except alsaaudio.ALSAAudioError as exc:
                log.warning(
                    "mixer control unavailable, using software gain",
                    extra=kv(control=control, device=mixer_device, error=str(exc)),
                )
        self.volume = check_volume(volume)
        self.set(volume)

    @property
    def hardware(self) -> bool:
        return self._mixer is not None

    @property
    def gain(self) -> float:
        """The gain the bridge must apply in software (1.0 when the mixer does the work)."""
        return 1.0 if self._mixer is not None else software_gain(self.volume)

    def set(self, volume: int) -> None:
        self.volume = check_volume(volume)
        if self._mixer is None:
            return
        try:
            self._mixer.setvolume(volume)
        except alsaaudio.ALSAAudioError as exc:
            log.warning(
                "mixer set failed, using software gain",
                extra=kv(control=self.control, error=str(exc)),
            )
            self._mixer = None

    def close(self) -> None:
        if self._mixer is not None:
            self._mixer.close()
            self._mixer = None
