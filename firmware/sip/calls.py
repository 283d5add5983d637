"""Calls: the pjsua2 Call subclass and helpers that read state, media and stream statistics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from offhook.contract.logs import kv
from offhook.firmware.events import CallState
from offhook.firmware.ports import PlayoutGaps
from offhook.firmware.sip.quality import QualitySample, estimate_mos

if TYPE_CHECKING:
    from offhook.firmware.sip.engine import _Core

log = logging.getLogger(__name__)

_STATES = {
    pj.PJSIP_INV_STATE_NULL: CallState.CALLING,
    pj.PJSIP_INV_STATE_CALLING: CallState.CALLING,
    pj.PJSIP_INV_STATE_INCOMING: CallState.INCOMING,
    pj.PJSIP_INV_STATE_EARLY: CallState.EARLY,
    pj.PJSIP_INV_STATE_CONNECTING: CallState.CONNECTING,
    pj.PJSIP_INV_STATE_CONFIRMED: CallState.CONFIRMED,
    pj.PJSIP_INV_STATE_DISCONNECTED: CallState.DISCONNECTED,
}


def phone_state(info: pj.CallInfo) -> CallState:
    state = _STATES[info.state]
    # An incoming call we answered with 180 is "early" to pjsua; to the phone it is still ringing.
    if state is CallState.EARLY and info.role == pj.PJSIP_ROLE_UAS:
        return CallState.INCOMING
    return state


class EngineCall(pj.Call):
    """Forwards pjsua2 call callbacks to the engine core (owner thread only)."""

    def __init__(self, core: _Core, account: pj.Account, account_index: int,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:  # fmt: skip
        super().__init__(account, call_id)
        self.core = core
        self.account_index = account_index
        self.held_locally = False
        self.held_remotely = False
        self.codec = ""
        self.audio_index = -1  # media index of the active audio stream
        self.last_state = CallState.CALLING
        self.last_status = 0
        self.replaced_call_id = -1  # attended transfer: our call to the target, ended on success
        self.replaces = -1  # a call pjsua made itself: the call it takes over (REFER, Replaces)
        # An offer of ours (hold/unhold re-INVITE, pjsua's codec-locking UPDATE or re-INVITE)
        # has no final answer yet: pjsip would drop a new offer made now, so hold, unhold and
        # REFER wait in ``deferred`` until it is answered.
        self.offer_pending = False
        self.deferred: list[Any] = []
        self.hold_sent: Any = None  # the Hold/Unhold whose re-INVITE is pending (to resend on 491)
        self.hold_491s = 0  # how often that re-INVITE was answered 491 Request Pending
        self.refer: Any = None  # the last Transfer/AttendedTransfer sent (to send it again)
        self.refer_491s = 0  # how often that REFER was answered 491 Request Pending
        self.setup_ms: float | None = None
        self.quality: QualitySample | None = None
        # the audio bridge's (gaps, frames) when this call began: its own gaps are the rest
        audio = core.audio
        self.playout_base = audio.playout_gaps() if isinstance(audio, PlayoutGaps) else (0, 0)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.core.on_call_state(self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.core.on_call_media_state(self)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        event = prm.e
        if event.type == pj.PJSIP_EVENT_TSX_STATE:
            self.core.on_tsx_state(self, event.body.tsxState.tsx)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self.core.on_transfer_status(self, prm.statusCode, prm.reason, prm.finalNotify)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # The far end asks us to call someone else (REFER): track that call like our own.
        prm.newCall = self.core.adopt_new_call(self.account_index, self.getId())

    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:
        # An INVITE with Replaces took this call's place (we are an attended-transfer target).
        prm.newCall = self.core.adopt_new_call(self.account_index, self.getId(), prm.newCallId)

    def onCallRedirected(self, prm: pj.OnCallRedirectedParam) -> int:
        # Follow 3xx like a desk phone does; pjsip bounds the number of redirects.
        return pj.PJSIP_REDIRECT_ACCEPT_REPLACE

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        log.info("dtmf received", extra=kv(call_id=self.getId(), digit=prm.digit))


def audio_media_index(info: pj.CallInfo) -> int:
    for media in info.media:
        if media.type == pj.PJMEDIA_TYPE_AUDIO:
            return media.index
    return -1


def stream_codec(call: EngineCall) -> str:
    if call.audio_index < 0:
        return ""
    try:
        return call.getStreamInfo(call.audio_index).codecName
    except pj.Error:
        return ""


def quality_sample(call: EngineCall) -> QualitySample | None:
    """The active audio stream's figures and its E-model MOS; None without media.

    Network: jitter, loss, RTCP round trip. The phone's own side: the jitter buffer's delay and
    the frames it concealed or discarded beyond the network's loss, and the gaps in playout the
    audio bridge counted since the call began."""
    if call.audio_index < 0:
        return None
    try:
        stat = call.getStreamStat(call.audio_index)
    except pj.Error:
        return None
    rtcp, jbuf = stat.rtcp, stat.jbuf
    rx = rtcp.rxStat
    received, lost = rx.pkt, rx.loss
    expected = received + lost
    loss_pct = 100.0 * lost / expected if expected else 0.0
    jitter_ms = rx.jitterUsec.mean / 1000.0 if rx.jitterUsec.n else 0.0
    rtt_ms = rtcp.rttUsec.mean / 1000.0 if rtcp.rttUsec.n else 0.0
    # pjmedia's jitter buffer: frames asked for while it was empty (concealed) and frames that
    # came too late or overflowed it (discarded); the network's losses it counts as lost.
    concealed = max(0, jbuf.empty + jbuf.discard - lost)
    concealed_pct = min(100.0, 100.0 * concealed / expected) if expected else 0.0
    gaps_pct = _playout_gaps_pct(call)
    codec = call.codec or "PCMU"
    jb_ms = float(jbuf.avgDelayMsec)
    mos = estimate_mos(codec, jitter_ms, loss_pct, rtt_ms, jb_ms, concealed_pct, gaps_pct)
    return QualitySample(
        codec, round(jitter_ms, 2), round(loss_pct, 2), round(rtt_ms, 2), mos,
        jitter_buffer_ms=round(jb_ms, 1), concealed_pct=round(concealed_pct, 2),
        playout_gaps_pct=round(gaps_pct, 2),
    )  # fmt: skip


def _playout_gaps_pct(call: EngineCall) -> float:
    """Gaps the audio bridge played (per frame it was given) since this call began."""
    audio = call.core.audio
    if not isinstance(audio, PlayoutGaps):
        return 0.0
    gaps, frames = audio.playout_gaps()
    base_gaps, base_frames = call.playout_base
    played = frames - base_frames
    return min(100.0, 100.0 * (gaps - base_gaps) / played) if played > 0 else 0.0
