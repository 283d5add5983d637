"""Listening quality (MOS) from stream statistics with the ITU-T G.107 E-model, simplified.

pjsua2 gives jitter, loss and RTCP round-trip time; the E-model turns those into an R factor and R
into a MOS. Codec impairments (Ie, Bpl) come from ITU-T G.113 Appendix I.
"""

from __future__ import annotations

from dataclasses import dataclass

# codec -> (Ie equipment impairment, Bpl packet-loss robustness) with packet loss concealment
_CODEC_IMPAIRMENT: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "G722": (0.0, 25.1),  # narrowband-equivalent figures: MOS stays on the familiar 1-4.5 scale
    "GSM": (20.0, 43.0),
    "iLBC": (11.0, 32.0),
    "speex": (11.0, 25.0),
    "L16": (0.0, 25.1),
}
_DEFAULT_IMPAIRMENT = (10.0, 20.0)
_R0_MINUS_IS = 93.2  # default basic signal-to-noise ratio minus simultaneous impairments
_CODEC_DELAY_MS = 25.0  # packetisation (20 ms) plus look-ahead and processing


@dataclass(frozen=True)
class QualitySample:
    codec: str
    jitter_ms: float
    loss_pct: float
    rtt_ms: float
    mos: float


def delay_impairment(one_way_ms: float) -> float:
    """Id: delay impairment for a one-way mouth-to-ear delay."""
    d = max(0.0, one_way_ms)
    extra = 0.11 * (d - 177.3) if d > 177.3 else 0.0
    return 0.024 * d + extra


def r_factor(codec: str, jitter_ms: float, loss_pct: float, rtt_ms: float) -> float:
    if jitter_ms < 0 or rtt_ms < 0 or not 0 <= loss_pct <= 100:
        raise ValueError(
            f"impossible stream figures jitter={jitter_ms} loss={loss_pct} rtt={rtt_ms}"
        )
    ie, bpl = _CODEC_IMPAIRMENT.get(codec.split("/")[0], _DEFAULT_IMPAIRMENT)
    # The jitter buffer holds roughly two jitters' worth of audio on top of the network delay.
    one_way = rtt_ms / 2 + 2 * jitter_ms + _CODEC_DELAY_MS
    ie_eff = ie + (95 - ie) * loss_pct / (loss_pct + bpl)
    return _R0_MINUS_IS - delay_impairment(one_way) - ie_eff


def mos_from_r(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def estimate_mos(codec: str, jitter_ms: float, loss_pct: float, rtt_ms: float) -> float:
    return round(mos_from_r(r_factor(codec, jitter_ms, loss_pct, rtt_ms)), 2)
