"""pjsua2 library set-up: endpoint config, SIP transports and codec priorities."""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field

import pjsua2 as pj

from offhook.contract.config import PhoneConfig
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.sip.dns import nameservers, needs_resolver

log = logging.getLogger(__name__)

_IPPROTO_TCP = 6
_TCP_NODELAY = 1
_TRANSPORT_TYPES = {
    "udp": pj.PJSIP_TRANSPORT_UDP,
    "tcp": pj.PJSIP_TRANSPORT_TCP,
    "tls": pj.PJSIP_TRANSPORT_TLS,
}


class TransportError(OffhookError, RuntimeError):
    """A SIP transport could not be created (port in use, bad certificate, ...)."""


@dataclass
class Transports:
    ids: dict[str, int] = field(default_factory=dict)  # "udp"/"tcp"/"tls" -> pjsua transport id
    ports: dict[str, int] = field(default_factory=dict)


def pjsip_log_level() -> int:
    return int(os.environ.get("OFFHOOK_PJSIP_LOG", "0") or 0)


def set_startup_log_level(level: int) -> None:
    """pjlib logs to stdout at level 4 until libInit applies our LogConfig; lower it earlier."""
    try:
        ctypes.CDLL(pj._pjsua2.__file__).pj_log_set_level(ctypes.c_int(level))
    except (OSError, AttributeError):
        log.debug("pj_log_set_level not reachable; start-up lines will be printed")


MEDIA_QUALITY = 4


def endpoint_config(config: PhoneConfig) -> pj.EpConfig:
    cfg = pj.EpConfig()
    ua = cfg.uaConfig
    ua.threadCnt = 0  # no pjsua worker threads: our owner thread pumps libHandleEvents
    ua.mainThreadOnly = True
    ua.userAgent = config.sip.user_agent
    ua.maxCalls = 8
    servers = nameservers(config)
    for server in servers:
        ua.nameserver.append(server)
    if not servers and needs_resolver(config):
        log.warning("no name server found: host names resolve synchronously in the sip thread")
    med = cfg.medConfig
    med.clockRate = config.audio.sample_rate
    med.sndClockRate = config.audio.sample_rate
    med.audioFramePtime = 20
    med.ptime = 20
    med.channelCount = 1
    # RTP shares the SIP ioqueue that the owner thread polls: no media worker thread polling
    # every 10 ms while the phone is idle. Packets wake libHandleEvents like SIP does.
    med.hasIoqueue = False
    med.threadCnt = 0
    # The null device is the conference clock; the engine starts and stops it around calls,
    # pjsua must never close it on its own during one.
    med.sndAutoCloseTime = -1
    med.noVad = True  # VAD would suppress RTP (and comfort noise confuses far ends) during silence
    med.ecTailLen = 0  # echo cancelling belongs to the handset audio path, not the bridge
    # 3-4 give the conference bridge libresample's small filter (Nmult 13 instead of 65) where
    # pjsua's default (8) takes the large one: a narrowband call on the 16 kHz bridge is
    # resampled both ways every frame, and the large filter was a sixth of a call's CPU (perf:
    # FilterUD + FilterUp 17 % -> 3 %). It also sets speex and iLBC complexity.
    med.quality = MEDIA_QUALITY
    level = pjsip_log_level()
    cfg.logConfig.level = level
    cfg.logConfig.consoleLevel = level
    return cfg


def _transport_config(config: PhoneConfig, kind: str, port: int) -> pj.TransportConfig:
    tcfg = pj.TransportConfig()
    tcfg.port = port
    if config.sip.bind_address:
        tcfg.boundAddress = config.sip.bind_address
        tcfg.publicAddress = config.sip.bind_address
    if kind in ("tcp", "tls"):
        # Without TCP_NODELAY, Nagle plus delayed ACK add ~45 ms to each call set-up.
        opt = pj.SockOpt()
        opt.level = _IPPROTO_TCP
        opt.optName = _TCP_NODELAY
        opt.setOptValInt(1)
        tcfg.sockOptParams.sockOpts.append(opt)
    if kind == "tls":
        tls = tcfg.tlsConfig
        tls.CaListFile = config.sip.tls_ca_file
        tls.certFile = config.sip.tls_cert_file
        tls.privKeyFile = config.sip.tls_key_file
        tls.verifyServer = config.sip.tls_verify_server
        tls.verifyClient = False
        tls.requireClientCert = False
    return tcfg


def wanted_transports(config: PhoneConfig) -> list[str]:
    """UDP and TCP always; TLS when an account uses it or a certificate is configured."""
    kinds = ["udp", "tcp"]
    uses_tls = any(a.transport == "tls" and a.enabled for a in config.accounts)
    if uses_tls or config.sip.tls_cert_file:
        kinds.append("tls")
        if not config.sip.tls_cert_file:
            log.warning("tls listener has no certificate: calls the proxy opens to us will fail")
    return kinds


def create_transports(ep: pj.Endpoint, config: PhoneConfig) -> Transports:
    result = Transports()
    base = config.sip.port
    for kind in wanted_transports(config):
        port = base + 1 if (kind == "tls" and base) else base
        try:
            tid = ep.transportCreate(_TRANSPORT_TYPES[kind], _transport_config(config, kind, port))
        except pj.Error as exc:
            where = f"{config.sip.bind_address or '0.0.0.0'}:{port}"  # the address at fault
            raise TransportError(f"sip {kind} transport on {where}: {exc.info()}") from None
        result.ids[kind] = tid
        local = ep.transportGetInfo(tid).localName  # "host:port"
        result.ports[kind] = int(local.rsplit(":", 1)[1])
    log.info("sip transports ready", extra=kv(ports=result.ports))
    return result


def apply_codec_priorities(ep: pj.Endpoint, wanted: list[str]) -> list[str]:
    """Enable exactly the configured codecs, first one highest; return the enabled codec ids."""
    enabled = []
    for info in ep.codecEnum2():
        codec_id = info.codecId  # e.g. "G722/16000/1"
        name = codec_id.split("/")[0]
        if name in wanted:
            priority = 255 - wanted.index(name) * 10
            # Several clock rates of one codec (speex 8/16/32 kHz): prefer the higher rate.
            rate = int(codec_id.split("/")[1]) if codec_id.count("/") >= 1 else 0
            priority -= 1 if rate < 16000 and name == "speex" else 0
            ep.codecSetPriority(codec_id, priority)
            enabled.append(codec_id)
        else:
            ep.codecSetPriority(codec_id, 0)
    if not enabled:
        raise TransportError(f"none of the configured codecs {wanted} is available")
    return enabled
