"""The remote directory on the keypad, and directory names for incoming calls (pure).

Opened from the contacts list (`right`, or its "Search" softkey) when ``directory.url`` is set.
Letters are typed by multi-tap (firmware/features/t9.py); each letter kept (another key, or a
pause of TAP_S) asks the directory again with SearchDirectory, and only the newest request's
answer is shown. `down` moves into the results, `ok` dials the selected one (or searches at once
while typing), `cancel`/`left` deletes a letter, then leaves. An incoming call whose caller has no
name asks the directory with LookupCaller; the name fills in when CallerNameFound arrives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from offhook.contract.keys import DIGIT_KEYS
from offhook.firmware.calls import Call
from offhook.firmware.events import Command
from offhook.firmware.features.events import (
    CallerNameFound,
    DirectoryResults,
    LookupCaller,
    SearchDirectory,
)
from offhook.firmware.features.state import DirectorySearch
from offhook.firmware.features.t9 import commit, letters_of, tap
from offhook.firmware.phone_state import Mode, PhoneState

if TYPE_CHECKING:
    from offhook.firmware.phone import Phone

T_TAP = "t9"  # the letter being chosen is kept
T_ANSWER = "directory"  # the directory did not answer in time
TAP_S = 1.0
ANSWER_GRACE_S = 2.0  # beyond directory.timeout_s: the adapter's own timeout answers first


def configured(state: PhoneState) -> bool:
    return bool(state.config.directory.url)


def open_search(phone: Phone, back: Mode, out: list[Command]) -> None:
    state = phone.state
    state.directory = DirectorySearch(back=back.value)
    state.mode = Mode.DIRECTORY


def _leave(phone: Phone, out: list[Command]) -> None:
    state = phone.state
    phone._cancel_timer(T_TAP, out)
    phone._cancel_timer(T_ANSWER, out)
    back = Mode(state.directory.back)
    state.mode = back if (back is not Mode.DIALING or state.hook_off) else Mode.IDLE


def _search(phone: Phone, search: DirectorySearch, out: list[Command]) -> DirectorySearch:
    """Ask for ``search.text`` unless that is what was last asked."""
    if not search.text.strip() or search.text == search.searched:
        return search
    phone.state.requests += 1
    request = phone.state.requests
    out.append(SearchDirectory(request, search.text))
    phone._start_timer(T_ANSWER, phone.state.config.directory.timeout_s + ANSWER_GRACE_S, out)
    return replace(search, request=request, searched=search.text, waiting=True, error="")


def _keep_letter(phone: Phone, search: DirectorySearch, out: list[Command]) -> DirectorySearch:
    phone._cancel_timer(T_TAP, out)
    text = commit(search.text, search.tap_key, search.tap_index)
    return replace(search, text=text, tap_key="", tap_index=0)


def key(phone: Phone, key: str, out: list[Command]) -> None:
    state = phone.state
    search = state.directory
    if search.index >= 0:  # in the results
        entries = search.entries
        if key in ("up", "down") and entries:
            if key == "up" and search.index == 0:
                state.directory = replace(search, index=-1)
            else:
                step = -1 if key == "up" else 1
                state.directory = replace(search, index=min(len(entries) - 1, search.index + step))
        elif key == "ok" and entries:
            number = entries[search.index].number
            _leave(phone, out)
            phone._place_call(number, out)
        elif key in ("cancel", "left"):
            state.directory = replace(search, index=-1)
        return
    if key in DIGIT_KEYS and letters_of(key):
        text, tap_key, tap_index = tap(search.text, search.tap_key, search.tap_index, key)
        search = replace(search, text=text, tap_key=tap_key, tap_index=tap_index)
        phone._start_timer(T_TAP, TAP_S, out)
        state.directory = _search(phone, search, out)  # a letter kept by a new key searches
    elif key == "ok":
        state.directory = _search(phone, _keep_letter(phone, search, out), out)
    elif key == "down" and search.entries:
        state.directory = replace(_keep_letter(phone, search, out), index=0)
    elif key in ("cancel", "left"):
        if search.tap_key:
            phone._cancel_timer(T_TAP, out)
            state.directory = replace(search, tap_key="", tap_index=0)
        elif search.text:
            state.directory = replace(search, text=search.text[:-1])
        else:
            _leave(phone, out)
    elif key in ("phonebook", "menu"):
        _leave(phone, out)


def tap_timeout(phone: Phone, _: str, out: list[Command]) -> None:
    if phone.state.mode is Mode.DIRECTORY:
        search = _keep_letter(phone, phone.state.directory, out)
        phone.state.directory = _search(phone, search, out)


def answer_timeout(phone: Phone, _: str, out: list[Command]) -> None:
    search = phone.state.directory
    if search.waiting:
        phone.state.directory = replace(search, waiting=False, error="no answer")


def on_results(phone: Phone, ev: DirectoryResults, out: list[Command]) -> None:
    search = phone.state.directory
    if ev.request != search.request:
        return  # an answer to a question no longer asked
    phone._cancel_timer(T_ANSWER, out)
    phone.state.directory = replace(
        search, waiting=False, entries=ev.entries, error=ev.error, index=-1
    )


def lookup_caller(phone: Phone, call: Call, out: list[Command]) -> None:
    """Ask the directory for the name of a caller who sent none and is not in the phonebook."""
    directory = phone.state.config.directory
    if not directory.url or not directory.lookup_incoming or call.remote_name:
        return
    if phone._phonebook_name(call.number):
        return  # the phonebook knows this caller
    out.append(LookupCaller(call.id, call.number))


def on_caller_name(phone: Phone, ev: CallerNameFound, out: list[Command]) -> None:
    call = phone.state.calls.get(ev.call_id)
    if call is not None and call.number == ev.number and not call.remote_name:
        call.remote_name = ev.name  # shown from now on, and kept in the call's history record
