"""SIP accounts: pjsua2 AccountConfig from our config, and the Account callbacks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pjsua2 as pj

from offhook.contract.config import Account, PhoneConfig
from offhook.contract.logs import kv
from offhook.firmware.fault_hooks import test_registrar
from offhook.firmware.sip.mwi import parse_message_summary
from offhook.firmware.sip.uri import transport_param

if TYPE_CHECKING:
    from offhook.firmware.sip.engine import _Core

log = logging.getLogger(__name__)

_SRTP = {
    "disabled": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}


def account_settings(config: PhoneConfig, index: int) -> tuple:
    """Everything that, when changed, needs this account re-created (compared by apply_config)."""
    acc = config.accounts[index]
    return (acc.model_dump_json(), config.sip.bind_address)


def account_config(config: PhoneConfig, account: Account, transport_id: int) -> pj.AccountConfig:
    acfg = pj.AccountConfig()
    tparam = transport_param(account.transport)
    display = account.display_name.replace('"', "")
    uri = f"sip:{account.user}@{account.domain}"
    acfg.idUri = f'"{display}" <{uri}>' if display else uri
    broken = test_registrar()  # "" unless the image is the test-only broken build
    if broken:
        log.warning("TEST BUILD: registering at the test registrar", extra=kv(registrar=broken))
    acfg.regConfig.registrarUri = f"sip:{broken or account.domain}{tparam}"
    acfg.regConfig.timeoutSec = account.register_expires_s
    acfg.regConfig.retryIntervalSec = 30
    acfg.regConfig.registerOnAdd = True
    if account.password or account.auth_user:
        cred = pj.AuthCredInfo(
            "digest", "*", account.auth_user or account.user, 0, account.password
        )
        acfg.sipConfig.authCreds.append(cred)
    if account.outbound_proxy:
        acfg.sipConfig.proxies.append(f"sip:{account.outbound_proxy};lr{tparam}")
    acfg.sipConfig.transportId = transport_id
    media = acfg.mediaConfig
    media.srtpUse = _SRTP[account.srtp]
    media.srtpSecureSignaling = 0  # SDES over plain UDP/TCP is allowed: operators decide
    if config.sip.bind_address:
        media.transportConfig.boundAddress = config.sip.bind_address
        media.transportConfig.publicAddress = config.sip.bind_address
    media.transportConfig.port = 0  # RTP on any free port: several phones may share a host
    # Subscribe to message-summary only where a voicemail box exists; unsolicited NOTIFYs (what
    # most PBXes send) reach onMwiInfo regardless.
    acfg.mwiConfig.enabled = bool(account.voicemail)
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sipOutboundUse = 0
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    return acfg


class EngineAccount(pj.Account):
    """Reports registration, incoming calls and MWI to the engine core (owner thread only)."""

    def __init__(self, core: _Core, index: int) -> None:
        super().__init__()
        self.core = core
        self.index = index
        self.reg_reports = 0  # onRegState calls so far: lets teardown wait for the un-REGISTER

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        try:
            active = self.getInfo().regIsActive
        except pj.Error:
            active = False
        registered = bool(active) and 200 <= prm.code < 300
        self.reg_reports += 1
        self.core.on_registration(self.index, registered, prm.code, prm.reason)

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.core.on_incoming_call(self, prm.callId)

    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:
        if not prm.contentType.lower().startswith("text/"):
            log.info("message ignored", extra=kv(account=self.index, type=prm.contentType))
            return
        self.core.on_instant_message(self.index, prm.fromUri, prm.msgBody, prm.contentType)

    def onInstantMessageStatus(self, prm: pj.OnInstantMessageStatusParam) -> None:
        self.core.on_message_status(self.index, prm.toUri, prm.msgBody, prm.code, prm.reason)

    def onMwiInfo(self, prm: pj.OnMwiInfoParam) -> None:
        summary = parse_message_summary(prm.rdata.wholeMsg)
        if summary is None:
            log.warning("mwi notify without Messages-Waiting", extra=kv(account=self.index))
            return
        self.core.on_mwi(self.index, summary)
