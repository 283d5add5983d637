"""Audio: the ALSA bridge to the SIP engine, ring buffers, call-progress tones, speaker volume."""

from firmware.audio.alsa_device import AlsaDeviceError
from firmware.audio.bridge import AlsaAudio, AudioEndpoint
from firmware.audio.tones import TONE_PLANS, ToneGenerator, TonePlanError, tone_spec

__all__ = [
    "TONE_PLANS",
    "AlsaAudio",
    "AlsaDeviceError",
    "AudioEndpoint",
    "ToneGenerator",
    "TonePlanError",
    "tone_spec",
]
