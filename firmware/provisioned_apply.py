"""How the phone judges a provisioned config: applied, then accepted only once every enabled line
has registered with it (and the SIP engine listens as it says). The provisioning client rolls
back on the error text returned here (docs/phone.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from firmware import events as ev
from firmware.config import PhoneConfig
from firmware.logs import kv

log = logging.getLogger("offhook.phone")

APPLY_POLL_S = 0.1
APPLY_TIMEOUT_S = 15.0


class LoopPort(Protocol):
    """The Runtime as the apply sees it: post an event, read the Phone's snapshot."""

    def post(self, event: ev.Event) -> None: ...

    def snapshot(self, timeout: float = 5.0) -> dict: ...


def registration_outcome(state: dict, config: PhoneConfig) -> str | None:
    """None when every enabled account is registered, an error text when one was refused,
    "pending" while waiting."""
    rows = {row["account"]: row for row in state.get("registration", [])}
    pending = False
    for index, account in enumerate(config.accounts):
        if not account.enabled:
            continue
        row = rows.get(index, {})
        if row.get("registered"):
            continue
        status = int(row.get("status") or 0)
        if status >= 300:
            return (
                f"accounts[{index}] ({account.user}@{account.domain}): registration failed {status}"
            )
        pending = True
    return "pending" if pending else None


def apply_and_wait_registered(
    runtime: LoopPort,
    config: PhoneConfig,
    timeout_s: float = APPLY_TIMEOUT_S,
    transports: Callable[[PhoneConfig], str | None] | None = None,
) -> str | None:
    """Apply ``config`` and judge it by registration: None once every enabled line is registered,
    else why not. The Phone forgets the registration state of every line whose account changed
    (and the snapshot is taken on the loop after ConfigApplied), so a changed line counts only
    once a fresh RegistrationChanged for the new settings has arrived: a 401/403 after a password
    change fails the apply instead of passing on the old registration.

    ``transports(config)`` (optional) judges the SIP engine the same way: "pending" until its
    sockets are bound as configured, an error text once it has failed (a port in use ends the
    engine: that is the cause to report, not the restart that follows)."""
    runtime.post(ev.ConfigApplied(config))
    deadline = time.monotonic() + timeout_s
    outcome: str | None = "pending"
    while time.monotonic() < deadline:
        outcome = transports(config) if transports is not None else None
        if outcome is None:
            outcome = registration_outcome(runtime.snapshot(), config)
        if outcome != "pending":
            break
        time.sleep(APPLY_POLL_S)
    if outcome == "pending":
        outcome = f"not registered within {timeout_s:.0f}s"
    log.info("provisioned config applied", extra=kv(result=outcome or "registered"))
    return outcome
