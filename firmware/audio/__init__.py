"""Audio: the ALSA bridge to the SIP engine, ring buffers, call-progress tones, speaker volume."""

from offhook.firmware.audio.alsa_device import AlsaDeviceError
from offhook.firmware.audio.bridge import AlsaAudio
from offhook.firmware.audio.tones import TONE_PLANS, ToneGenerator, TonePlanError, tone_spec
from offhook.firmware.ports import AudioEndpoint

__all__ = [
    "TONE_PLANS",
    "AlsaAudio",
    "AlsaDeviceError",
    "AudioEndpoint",
    "ToneGenerator",
    "TonePlanError",
    "tone_spec",
]
