"""Phone state -> what the user sees: the Screen to draw and the LED states.

Pure functions over the Phone's own ``PhoneState`` (firmware/phone_state.py), read after every
event and never changed here; the Phone decides behaviour, this module only composes text (see
docs/phone.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from offhook.firmware.calls import Call, format_duration, quality_bars
from offhook.firmware.events import CallState, Screen
from offhook.firmware.features import blf
from offhook.firmware.features.desk_screens import draft_screen, messages_screen, notice_line
from offhook.firmware.features.messages import unread
from offhook.firmware.features.screens import directory_screen, settings_screen, trust_screen
from offhook.firmware.phone_state import NO_NOTICE, BrowseList, Mode, Notice, PhoneState
from offhook.firmware.screens.lists import browse_entries, status_menu_items, window
from offhook.firmware.screens.text import wrap

# Each label fits its slot: 4 slots of 32 pixels hold 5 characters of the 6-pixel font.
IDLE_SOFTKEYS = ("Calls", "Dir", "DND", "Texts")
MENU_TEXT_WIDTH = 21  # characters per line of the 6x11 font on a 128-pixel panel
BAR_CELL_PERCENT = 10  # one cell of the volume bar: one press of a volume key


def led_states(view: PhoneState) -> dict[str, str]:
    if view.alerting is not None:
        line = "fast_blink"
    elif view.active is not None or view.pending is not None:
        line = "on"
    elif view.calls:
        line = "blink"
    else:
        line = "off"
    return {
        "line1": line,
        # the message lamp: voicemail waiting or unread text messages
        "mwi": "blink" if view.message_waiting or unread(view.messages) else "off",
        "dnd": "on" if view.dnd else "off",
        "mute": "on" if view.muted else "off",
        "speaker": "on" if view.handsfree else "off",
        **blf.led_states(view.config, view.watched),
    }


def status_bar(view: PhoneState) -> dict[str, str]:
    status = {"time": datetime.fromtimestamp(view.now, view.tz).strftime("%H:%M")}
    accounts = view.config.accounts
    if accounts:
        reg = view.registration_of(view.next_line)
        registered, code = reg.registered, reg.status_code
        acc = accounts[view.next_line]
        status["line"] = acc.display_name or acc.user
        status["reg"] = "ok" if registered else (f"fail {code}" if code else "none")
    else:
        status["line"] = "no account"
        status["reg"] = "none"
    if view.dnd:
        status["dnd"] = "on"
    if view.message_waiting:
        status["mwi"] = str(view.new_messages)
    texts = unread(view.messages)
    if texts:
        status["texts"] = str(texts)
    if view.muted:
        status["mute"] = "on"
    active = view.call(view.active)
    if active is not None and active.codec:
        status["codec"] = active.codec
    if active is not None and active.mos is not None:
        status["quality"] = str(quality_bars(active.mos))
    return status


def compose_screen(view: PhoneState) -> Screen:
    status = status_bar(view)
    if view.volume_bar is not None:
        return _volume_screen(view, status)
    return _SCREENS[view.mode](view, status)


def _dialing_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    lines = ("Enter number", view.digits or "_")
    held = view.held_calls
    if held:
        lines = (f"Hold: {held[-1].label}", view.digits or "_")
    return Screen("dialing", lines, status, ("Back", "Redial", "Send"))


def _notice_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    """Why a call or a number failed (mode ended), or "Please hang up" (mode howler)."""
    title, detail = view.notice.title, view.notice.detail
    told: tuple[str, ...] = (title, detail) if detail else (title,)
    held = view.held_calls
    kind = view.mode.value
    if held:
        return Screen(kind, (*told, f"Hold: {held[-1].label}"), status, ("Resume", "", ""))
    return Screen(kind, told, status, ("", "", ""))


def _transfer_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    return Screen("transfer", ("Transfer to:", view.digits or "_"), status, ("Cancel", "", "Send"))


def _volume_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    target = view.volume_bar
    level = view.volume[target] if target is not None else 0
    filled = level // BAR_CELL_PERCENT
    bar = "#" * filled + "-" * (100 // BAR_CELL_PERCENT - filled)
    title = "Speaker volume" if target == "speaker" else "Ring volume"
    return Screen("volume", (title, f"[{bar}]", f"{level}%"), status)


def _idle_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    reg = status["reg"]
    if reg == "ok":
        state = "Registered"
    elif reg == "none":
        state = "Not registered"
    else:
        code = reg.split()[1]
        reason = view.registration_of(view.next_line).reason
        state = f"No service {code} {reason}".strip()
    lines = [status["line"], state]
    notices = notice_line(view)  # one line, so the softkeys always keep their row
    if notices:
        lines.append(notices)
    return Screen("idle", tuple(lines), status, IDLE_SOFTKEYS)


def _menu_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    items = status_menu_items(view)
    index = min(view.menu.index, len(items) - 1)
    if view.menu.opened:
        return Screen("menu", wrap(items[index][1], MENU_TEXT_WIDTH, 4), status)
    lines = ["Status", *window([label for label, _ in items], index)]
    return Screen("menu", tuple(lines), status, ("Back", "", "Open"))


def _browse_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    which, index = view.browse.which, view.browse.index
    entries = browse_entries(which, view.history, view.config, view.tz)
    title = "History" if which is BrowseList.HISTORY else "Contacts"
    if not entries:
        return Screen(which.value, (title, "(empty)"), status, ("Back", "", ""))
    lines = [title, *window([label for label, _ in entries], index)]
    return Screen(which.value, tuple(lines), status, ("Back", "Text", "Dial"))


def _calls_screen(view: PhoneState, status: dict[str, str]) -> Screen:
    now = view.now
    if view.pending is not None:
        return Screen("calling", ("Calling", view.pending.label), status, ("", "", "End"))
    active = view.call(view.active)
    alerting = view.call(view.alerting)
    held = view.held_calls
    if active is None and alerting is not None and not held:
        who = alerting.remote_name or alerting.number
        if alerting.remote_name:
            lines: tuple[str, ...] = ("Incoming call", who, alerting.number)
        else:
            lines = ("Incoming call", who)
        return Screen("incoming", lines, status, ("Reject", "", "Answer"))
    if active is not None and active.id in view.conference:
        names = [view.calls[i].label for i in sorted(view.conference) if i in view.calls]
        lines = ("Conference", *names, format_duration(active.duration(now)))
        return Screen("conference", lines, status, ("", "", "End"))
    if active is not None:
        return _talking_screen(active, alerting, held, now, status, view.notice)
    if held:
        rows = ["On hold", held[-1].label, format_duration(held[-1].duration(now))]
        if view.notice.title == "Transfer failed":
            # The REFER was refused or the transfer failed: the call is still ours, on hold.
            rows = ["Transfer failed", view.notice.detail, f"Hold: {held[-1].label}"]
        if alerting is not None:
            rows.append(f"Waiting: {alerting.label}")
        elif view.notice.title == "Transferring":
            rows.append(f"Xfer to {view.notice.detail}")
        return Screen("held", tuple(rows), status, ("Resume", "Xfer", ""))
    return _idle_screen(view, status)


def _talking_screen(
    active: Call,
    alerting: Call | None,
    held: list[Call],
    now: float,
    status: dict[str, str],
    notice: Notice = NO_NOTICE,
) -> Screen:
    """The call the handset talks to (still ringing out, or connected)."""
    if active.state in (CallState.CALLING, CallState.EARLY):
        title = "Ringing" if active.state is CallState.EARLY else "Calling"
        return Screen("calling", (title, active.label), status, ("", "", "End"))
    if active.state in (CallState.INCOMING, CallState.CONNECTING):
        third = "Connecting"
    elif active.held_remotely:
        third = "Held by remote"
    else:
        third = format_duration(active.duration(now))
        if active.codec:
            third += f"  {active.codec}"
    lines = [active.label, active.number if active.remote_name else "", third]
    if alerting is not None:
        lines.append(f"Waiting: {alerting.label}")
    elif held and notice.title == "Transfer failed":
        lines.append("Transfer failed")
    elif held:
        lines.append(f"Hold: {held[-1].label}")
    softkeys = ("Swap", "Xfer", "Conf") if held else ("Hold", "Xfer", "End")
    if alerting is not None:
        softkeys = ("Reject", "", "Answer")
    return Screen("talking", tuple(line for line in lines if line), status, softkeys)


# The screen of each mode (a volume bar, while it shows, goes over all of them).
_SCREENS: dict[Mode, Callable[[PhoneState, dict[str, str]], Screen]] = {
    Mode.IDLE: _idle_screen,
    Mode.DIALING: _dialing_screen,
    Mode.ENDED: _notice_screen,
    Mode.HOWLER: _notice_screen,
    Mode.CALLS: _calls_screen,
    Mode.TRANSFER: _transfer_screen,
    Mode.BROWSE: _browse_screen,
    Mode.MENU: _menu_screen,
    Mode.DIRECTORY: directory_screen,
    Mode.SETTINGS: settings_screen,
    Mode.TRUST: trust_screen,
    Mode.MESSAGES: messages_screen,
    Mode.COMPOSE: draft_screen,
}
