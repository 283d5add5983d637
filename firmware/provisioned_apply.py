"""How the phone judges a provisioned config: applied, then accepted only once every enabled line
has registered with it (and the SIP engine listens as it says). The Phone gives the verdict
(``ConfigOutcome``, firmware/phone.py ``apply_outcome``); the provisioning client rolls back on
the error text returned here (docs/phone.md)."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Protocol

from offhook.contract.config import PhoneConfig
from offhook.contract.logs import kv

log = logging.getLogger("offhook.phone")

APPLY_TIMEOUT_S = 15.0


class LoopPort(Protocol):
    """The Runtime as the apply sees it: it posts the config and hands back the Phone's verdict."""

    def apply_config(self, config: PhoneConfig) -> Future[str | None]: ...


def apply_and_wait_registered(
    runtime: LoopPort, config: PhoneConfig, timeout_s: float = APPLY_TIMEOUT_S
) -> str | None:
    """Apply ``config`` and wait for the Phone's verdict: None once every enabled line is
    registered, else why not. The Phone forgets the registration state of every line whose
    account changed, so a changed line counts only once a fresh RegistrationChanged for the new
    settings has arrived: a 401/403 after a password change fails the apply instead of passing on
    the old registration. The SIP engine is judged the same way, from its SipEngineStatus events:
    not done until its sockets are bound as configured, failed once its loop ended (a port in use
    ends the engine: that is the cause to report, not the restart that follows)."""
    verdict = runtime.apply_config(config)
    try:
        outcome = verdict.result(timeout_s)
    except TimeoutError:
        verdict.cancel()  # a late verdict is dropped
        outcome = f"not registered within {timeout_s:.0f}s"
    log.info("provisioned config applied", extra=kv(result=outcome or "registered"))
    return outcome
