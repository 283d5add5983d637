"""Listening quality (MOS) with the ITU-T G.107 E-model, from what the phone itself can see.

The network's part comes from pjsua2's stream statistics (loss, jitter, RTCP round trip); the
phone's own part from the same stream's jitter buffer (its real delay, the frames it had to
conceal or throw away beyond the network's loss) and from the audio bridge (each ring underrun,
overrun or drift correction is a 10-20 ms gap or jump in what the listener hears, with no
concealment). Without the phone's part the figure saw only the network and stood 2.4-2.6 above
PESQ on a loaded host (docs/quality.md).

Codec impairments come from ITU-T G.113 Appendix I: Ie and Bpl (packet-loss robustness with
concealment) on the narrowband scale (R up to 93.2), and for G.722 the wideband scale of
G.107.1 (R up to 129, Ie,wb 13 for G.722 at 64 kbit/s). The MOS is always on the narrowband
scale (a wideband R is divided by 1.29 first), so it compares with P.862 narrowband PESQ and
across codecs: a clean G.722 call reports about the same MOS as a clean G.711 one.
"""

from __future__ import annotations

from dataclasses import dataclass

# codec -> (Ie equipment impairment, Bpl packet-loss robustness) with packet loss concealment
_CODEC_IMPAIRMENT: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
    "GSM": (20.0, 43.0),
    "iLBC": (11.0, 32.0),
    "speex": (11.0, 25.0),
    "L16": (0.0, 25.1),
}
# wideband codecs: Ie,wb and Bpl on G.107.1's scale (Bpl of G.722 with concealment as G.711's)
_WIDEBAND_IMPAIRMENT: dict[str, tuple[float, float]] = {"G722": (13.0, 25.1)}
_DEFAULT_IMPAIRMENT = (10.0, 20.0)
_R0_MINUS_IS = 93.2  # narrowband: default basic signal-to-noise ratio minus simultaneous ones
_R_MAX_WIDEBAND = 129.0  # G.107.1
_WIDEBAND_TO_NARROW = 1.29  # G.107.1: R_wb / 1.29 on the narrowband MOS curve
# A playout gap with nothing concealing it: G.113's Bpl of G.711 without packet loss
# concealment. A bridge underrun plays silence, an overrun skips audio.
_BPL_UNCONCEALED = 4.3
_CODEC_DELAY_MS = 25.0  # packetisation (20 ms) plus look-ahead and processing
_BRIDGE_DELAY_MS = 30.0  # the bridge's rings and the playback device's buffer, one way


@dataclass(frozen=True)
class QualitySample:
    codec: str
    jitter_ms: float
    loss_pct: float  # lost on the network
    rtt_ms: float
    mos: float
    jitter_buffer_ms: float = 0.0  # its mean delay (0: not known)
    concealed_pct: float = 0.0  # frames the jitter buffer concealed or discarded beyond the loss
    playout_gaps_pct: float = 0.0  # the bridge's underruns, overruns and drift corrections


def delay_impairment(one_way_ms: float) -> float:
    """Id: delay impairment for a one-way mouth-to-ear delay."""
    d = max(0.0, one_way_ms)
    extra = 0.11 * (d - 177.3) if d > 177.3 else 0.0
    return 0.024 * d + extra


def is_wideband(codec: str) -> bool:
    return codec.split("/")[0] in _WIDEBAND_IMPAIRMENT


def r_factor(
    codec: str,
    jitter_ms: float,
    loss_pct: float,
    rtt_ms: float,
    jitter_buffer_ms: float = 0.0,
    concealed_pct: float = 0.0,
    playout_gaps_pct: float = 0.0,
) -> float:
    """R on the codec's own scale (narrowband up to 93.2, wideband up to 129)."""
    figures = (jitter_ms, rtt_ms, jitter_buffer_ms, concealed_pct, playout_gaps_pct)
    if min(figures) < 0 or not 0 <= loss_pct <= 100:
        raise ValueError(
            f"impossible stream figures jitter={jitter_ms} loss={loss_pct} rtt={rtt_ms} "
            f"jitter_buffer={jitter_buffer_ms} concealed={concealed_pct} gaps={playout_gaps_pct}"
        )
    name = codec.split("/")[0]
    if name in _WIDEBAND_IMPAIRMENT:
        r_max, (ie, bpl) = _R_MAX_WIDEBAND, _WIDEBAND_IMPAIRMENT[name]
    else:
        r_max, (ie, bpl) = _R0_MINUS_IS, _CODEC_IMPAIRMENT.get(name, _DEFAULT_IMPAIRMENT)
    # Without a measured jitter buffer delay, it holds roughly two jitters' worth of audio.
    buffered = jitter_buffer_ms if jitter_buffer_ms > 0 else 2 * jitter_ms
    one_way = rtt_ms / 2 + buffered + _CODEC_DELAY_MS + _BRIDGE_DELAY_MS
    # Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl), with the concealed and the unconcealed losses
    # each weighed by their own robustness: x = Ppl / Bpl summed over both kinds.
    x = (loss_pct + concealed_pct) / bpl + playout_gaps_pct / _BPL_UNCONCEALED
    ceiling = 95.0 * r_max / _R0_MINUS_IS  # all lost: R at zero on either scale
    ie_eff = ie + (ceiling - ie) * x / (x + 1)
    return r_max - delay_impairment(one_way) - ie_eff


def mos_from_r(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    # G.107's curve dips just below 1 for R under about 6.5: 1 is the scale's floor
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def estimate_mos(
    codec: str,
    jitter_ms: float,
    loss_pct: float,
    rtt_ms: float,
    jitter_buffer_ms: float = 0.0,
    concealed_pct: float = 0.0,
    playout_gaps_pct: float = 0.0,
) -> float:
    """MOS on the narrowband scale whatever the codec (wideband R / 1.29)."""
    r = r_factor(
        codec, jitter_ms, loss_pct, rtt_ms, jitter_buffer_ms, concealed_pct, playout_gaps_pct
    )
    return round(mos_from_r(r / _WIDEBAND_TO_NARROW if is_wideband(codec) else r), 2)
