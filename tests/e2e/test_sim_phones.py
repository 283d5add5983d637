"""Two simulated phones on a real Kamailio, driven only through their control APIs.

Each phone is ``offhook sim --headless``: the supervisor, the phone process with pjsua2, real
ALSA (null PCM), the emulated board. The tests share one pair of phones (start-up costs CPU).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from offhook.firmware.sim import SimPhone, is_registered
from tests.fixtures.baresip import BaresipPeer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pair(sim_phones) -> tuple[SimPhone, SimPhone]:
    alice = sim_phones("alice", "1001", display_name="Alice")
    bob = sim_phones("bob", "1002", display_name="Bob")
    alice.wait_registered(30)
    bob.wait_registered(30)
    return alice, bob


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def calls_in(state: dict, wanted: str) -> bool:
    return len(state["calls"]) == 1 and state["calls"][0]["state"] == wanted


def idle(state: dict) -> bool:
    return state["calls"] == [] and state["hook"] == "on"


def test_two_phones_call_each_other(pair, phone_logs_on_failure) -> None:
    alice, bob = pair
    phone_logs_on_failure += [alice, bob]
    alice.client.hook(True)
    dialled = alice.client.keys("1002")
    assert dialled["pressed"] == ["1", "0", "0", "2"]

    ringing = bob.wait_for(lambda s: calls_in(s, "incoming"), what="incoming call")
    call = ringing["calls"][0]
    assert call["direction"] == "incoming"
    assert "1001" in call["remote_uri"]
    assert any("1001" in line or "Alice" in line for line in ringing["screen"])
    alice.wait_for(lambda s: calls_in(s, "early"), what="ringback")

    bob.client.hook(True)  # answer by lifting the handset
    for phone in (alice, bob):
        state = phone.wait_for(lambda s: calls_in(s, "confirmed"), what="confirmed call")
        assert state["calls"][0]["codec"] == "G722"  # default priority G722 > PCMU > PCMA
    assert "1002" in alice.state()["calls"][0]["remote_uri"]

    alice.client.hook(False)
    bob.wait_for(lambda s: s["calls"] == [], what="call gone at the callee")
    bob.client.hook(False)
    for phone in (alice, bob):
        state = phone.wait_for(idle, what="idle")
        assert is_registered(state)
    history = alice.state()["history"]
    assert history and "1002" in str(history[-1])


def test_kill_9_of_the_phone_process_is_recovered(pair, phone_logs_on_failure) -> None:
    alice, _ = pair
    phone_logs_on_failure.append(alice)
    registered = alice.wait_registered()
    before = registered["device"]["pid"]
    history_before = registered["history"]
    assert history_before
    # A finished call reaches the history file on a worker thread a few ms after the screen shows
    # it; what must survive kill -9 is what was written, so wait for the write first.
    history_file = alice.directory / "state" / "history.jsonl"
    ids = {record["id"] for record in history_before}
    deadline = time.monotonic() + 10
    while not ids <= {json.loads(line)["id"] for line in _lines(history_file)}:
        assert time.monotonic() < deadline, f"history not written to {history_file}"
        time.sleep(0.02)
    os.kill(before, signal.SIGKILL)
    after = alice.wait_for(
        lambda s: s["device"]["pid"] != before and is_registered(s),
        timeout=30,
        what="a new phone process registered again",
    )
    assert after["device"]["pid"] != before
    assert after["hook"] == "on" and after["calls"] == []
    assert after["history"] == history_before  # call history survives
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)


def test_hung_sip_engine_is_killed_and_restarted(pair, phone_logs_on_failure) -> None:
    _, bob = pair
    phone_logs_on_failure.append(bob)
    before = bob.wait_registered()["device"]["pid"]
    assert bob.client.test_hook("hang-engine")["hook"] == "hang-engine"
    after = bob.wait_for(
        lambda s: s["device"]["pid"] != before and is_registered(s),
        timeout=40,
        what="the hung phone replaced by a registered one",
    )
    assert after["device"]["pid"] != before
    assert "hung" in bob.log_text()


def test_recovered_phones_still_call(pair, phone_logs_on_failure) -> None:
    alice, bob = pair
    phone_logs_on_failure += [alice, bob]
    bob.client.hook(True)
    bob.client.keys("1001")
    alice.wait_for(lambda s: calls_in(s, "incoming"), what="incoming call at alice")
    alice.client.hook(True)
    for phone in (alice, bob):
        phone.wait_for(lambda s: calls_in(s, "confirmed"), what="confirmed call")
    bob.client.hook(False)
    alice.wait_for(lambda s: s["calls"] == [], what="call gone")
    alice.client.hook(False)


def test_incoming_call_from_baresip_rings_with_caller_id(
    pair, kamailio_server, tmp_path, phone_logs_on_failure
) -> None:
    alice, _ = pair
    phone_logs_on_failure.append(alice)
    alice.wait_registered()
    with BaresipPeer(
        tmp_path / "baresip", user="1003", password="pw1003", registrar=kamailio_server.domain
    ) as peer:
        peer.dial(f"sip:1001@{kamailio_server.domain}")
        ringing = alice.wait_for(
            lambda s: calls_in(s, "incoming") and s["device"]["ringer"], what="ringing"
        )
        assert "1003" in ringing["calls"][0]["remote_uri"]
        assert any("1003" in line for line in ringing["screen"])
        assert ringing["device"]["leds"]["line1"] == "fast_blink"
        alice.client.hook(True)
        peer.wait_event("CALL_ESTABLISHED", timeout=15)
        state = alice.wait_for(lambda s: calls_in(s, "confirmed"), what="confirmed call")
        assert state["calls"][0]["codec"] in ("PCMU", "G722")  # the offerer's (baresip's) order
        assert state["device"]["ringer"] is False
        alice.client.hook(False)
        peer.wait_event("CALL_CLOSED", timeout=15)
    alice.wait_for(idle, what="idle")


def test_a_restarted_phone_says_how_the_one_before_ended(pair, phone_logs_on_failure) -> None:
    alice, _ = pair
    phone_logs_on_failure.append(alice)
    before = alice.wait_registered()["device"]["pid"]
    os.kill(before, signal.SIGKILL)
    after = alice.wait_for(  # registered again: the tests after this one use the phone
        lambda s: s["device"]["pid"] != before and is_registered(s),
        timeout=30,
        what="a new phone process registered again",
    )
    assert after["device"]["previous_exit"] == "was killed by SIGKILL"


def test_blind_transfer_the_transferred_phone_shows_and_ends_the_new_call(
    pair, kamailio_server, tmp_path, phone_logs_on_failure
) -> None:
    """Bob transfers Alice to 1003 (baresip): Alice's pjsua places the REFER'd call, and Alice's
    phone must show it, end it with the handset and record it."""
    alice, bob = pair
    phone_logs_on_failure += [alice, bob]
    alice.wait_registered()
    bob.wait_registered()
    with BaresipPeer(
        tmp_path / "baresip", user="1003", password="pw1003", registrar=kamailio_server.domain
    ) as target:
        alice.client.hook(True)
        alice.client.keys("1002")
        bob.wait_for(lambda s: calls_in(s, "incoming"), what="incoming call at bob")
        bob.client.hook(True)
        alice.wait_for(lambda s: calls_in(s, "confirmed"), what="alice talks to bob")
        bob.client.keys(["transfer", "1003", "#"])
        target.wait_event("CALL_ESTABLISHED", timeout=20, peer="sip:1001@")
        state = alice.wait_for(
            lambda s: calls_in(s, "confirmed") and "1003" in s["calls"][0]["remote_uri"],
            timeout=20,
            what="alice talks to the transfer target",
        )
        assert "Call ended" not in state["screen"]
        done = bob.wait_for(lambda s: s["calls"] == [], what="bob's leg ended")
        assert done["screen"][0] == "Call transferred"
        bob.client.hook(False)
        alice.client.hook(False)
        target.wait_event("CALL_CLOSED", timeout=15)
    state = alice.wait_for(idle, what="alice idle")
    assert "1003" in state["history"][0]["remote_uri"]
    assert state["history"][0]["disposition"] == "answered"


def test_state_api_says_held_remotely_when_the_far_end_holds(
    pair, kamailio_server, tmp_path, phone_logs_on_failure
) -> None:
    alice, _ = pair
    phone_logs_on_failure.append(alice)
    alice.wait_registered()
    with BaresipPeer(
        tmp_path / "baresip", user="1003", password="pw1003", registrar=kamailio_server.domain
    ) as far:
        alice.client.hook(True)
        alice.client.keys("1003")
        far.wait_event("CALL_ESTABLISHED", timeout=15)
        alice.wait_for(lambda s: calls_in(s, "confirmed"), what="confirmed call")
        far.command("hold")
        state = alice.wait_for(lambda s: calls_in(s, "held_remotely"), what="held_remotely")
        assert state["calls"][0]["held_remotely"] is True and "Held by remote" in state["screen"]
        alice.client.hook(False)
        far.wait_event("CALL_CLOSED", timeout=15)
    alice.wait_for(idle, what="idle")
