"""Action URLs: which phone events fetch which configured URL, with the template filled in.

``action_urls.<event>`` (contract/config.py) is a URL template; the Phone fills its fields
(URL-encoded) when the event happens and emits ActionUrl, which the runtime's sender fetches off
the loop (firmware/action_url_sender.py). Events: ``incoming`` (a call is offered, caller ID
known), ``answered`` (any call connects), ``ended`` (a call that is not a missed one ends),
``missed`` (an incoming call nobody here answered: declined, given up, refused while busy or in
DND, forwarded), ``registered`` (a line registers after it was not).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from offhook.contract.config import PhoneConfig
from offhook.firmware.calls import Call
from offhook.firmware.events import ActionUrl, Command

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

_FIELD = re.compile(r"\{([A-Za-z_]+)\}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``{field}`` by its URL-encoded value ("" when the event has none)."""
    return _FIELD.sub(lambda m: quote(values.get(m.group(1), ""), safe=""), template)


def action(config: PhoneConfig, event: str, values: Mapping[str, str]) -> ActionUrl | None:
    template = config.action_urls.template(event)
    if not template:
        return None
    settings = config.action_urls
    return ActionUrl(event, fill(template, {"event": event, **values}), settings.timeout_s,
                     settings.retries)  # fmt: skip


def timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def call_values(
    config: PhoneConfig, call: Call, uid: str, now: float, status: int = 0
) -> dict[str, str]:
    """The fields of a call event: who called whom, the call's id and, once over, its duration."""
    accounts = config.accounts
    own = accounts[call.account].user if call.account < len(accounts) else ""
    incoming = call.direction == "incoming"
    duration = round(call.duration(now)) if call.answer is not None else 0
    return {
        "caller": call.number if incoming else own,
        "caller_name": call.remote_name if incoming else "",
        "callee": own if incoming else call.number,
        "call_id": uid,
        "direction": call.direction,
        "duration": str(duration),
        "account": str(call.account),
        "line": own,
        "status": str(status) if status else "",
        "time": timestamp(now),
    }


def registration_values(
    config: PhoneConfig, account: int, status: int, now: float
) -> dict[str, str]:
    accounts = config.accounts
    return {
        "account": str(account),
        "line": accounts[account].user if account < len(accounts) else "",
        "status": str(status),
        "time": timestamp(now),
    }


# --- what the Phone calls ----------------------------------------------------------------------


def on_call(phone: Phone, event: str, call: Call, out: list[Command], status: int = 0) -> None:
    """A call event: emit its ActionUrl when one is configured (the call gets its record id
    now, so every event of the call names the same {call_id})."""
    config = phone.state.config
    if not config.action_urls.template(event):
        return
    if not call.uid:
        call.uid = phone.new_record_id()
    command = action(config, event, call_values(config, call, call.uid, phone.state.now, status))
    if command is not None:
        out.append(command)


def on_registered(phone: Phone, account: int, status: int, out: list[Command]) -> None:
    config = phone.state.config
    command = action(config, "registered", registration_values(config, account, status,
                                                               phone.state.now))  # fmt: skip
    if command is not None:
        out.append(command)
