"""Engine paths through real Kamailio that need more than one peer: 3xx following, the MWI
subscription, being the target of an INVITE with Replaces, and the handset port's life cycle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.events import (
    Answer,
    CallIncoming,
    CallState,
    CallStateChanged,
    Hangup,
    MakeCall,
    MessageWaiting,
)
from offhook.firmware.sip.sine import SineEndpoint
from tests.fixtures.engine_process import EngineProcess
from tests.fixtures.kamailio import (  # noqa: F401
    DEFAULT_REDIRECTS,
    DEFAULT_USERS,
    KamailioServer,
    kamailio_server,
)
from tests.fixtures.mwi_notifier import MwiNotifier
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.tls import CertificateSet, tls_certificates  # noqa: F401
from tests.integration.sip_peers import peer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MOVED = next(iter(DEFAULT_REDIRECTS))  # Kamailio answers INVITEs to it with 302 -> its target


def test_outgoing_call_follows_a_302_to_the_contact(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    target = DEFAULT_REDIRECTS[MOVED]
    with (
        peer(kam, tmp_path, target) as far,
        running_engine(phone_config(kam, [account(kam, "1001")])) as (engine, events),
    ):
        mark = events.mark()
        engine.submit(MakeCall(0, MOVED))
        confirmed = events.wait_call_state(CallState.CONFIRMED, start=mark, timeout=15)
        established = far.wait_event("CALL_ESTABLISHED")
        assert f"{target}@" in confirmed.remote_uri
        assert "sip:1001@" in established["peeruri"]
        # one call from the phone's point of view: the redirect did not end it
        ended = [
            e
            for e in events.of_type(CallStateChanged)
            if e.state is CallState.DISCONNECTED and e.call_id == confirmed.call_id
        ]
        assert ended == []
        engine.submit(Hangup(confirmed.call_id))
        events.wait_call_state(CallState.DISCONNECTED, confirmed.call_id)


def test_voicemail_account_subscribes_to_message_summary(
    tmp_path: Path,
    tls_certificates: CertificateSet,  # noqa: F811
) -> None:
    with MwiNotifier(new=3, old=1) as notifier:
        kam = KamailioServer(tmp_path / "kamailio", tls_certificates, mwi_server=notifier.address)
        for user in ("1001", "1002"):
            kam.add_user(user, DEFAULT_USERS[user])
        with kam:
            accounts = [account(kam, "1001", voicemail="*97"), account(kam, "1002")]
            with running_engine(phone_config(kam, accounts)) as (_engine, events):
                event = events.wait_for(lambda e: isinstance(e, MessageWaiting), timeout=15)
                notifier.wait_for(
                    lambda n: any(s.notify_answers for s in n.subscriptions), timeout=10
                )
            # the engine's stop() ends the subscription (un-SUBSCRIBE answered 200)
            notifier.wait_for(lambda n: any(s.expires == 0 for s in n.subscriptions), timeout=10)
    assert event == MessageWaiting(account=0, waiting=True, new=3, old=1)
    (subscription,) = notifier.subscriptions  # account 1 has no voicemail: no SUBSCRIBE
    assert "1001@" in subscription.request_uri and "1001@" in subscription.from_
    assert subscription.notify_answers[0].startswith("SIP/2.0 200")


def engine_config(kam: KamailioServer, user: str) -> PhoneConfig:
    return phone_config(kam, [account(kam, user)], codecs=["PCMU"])


def test_invite_with_replaces_takes_over_our_call(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """We talk to A; A transfers B to us attended: B's INVITE with Replaces ends A's call."""
    kam = kamailio_server
    with (
        EngineProcess(tmp_path / "a", engine_config(kam, "1002")) as a,
        EngineProcess(tmp_path / "b", engine_config(kam, "1003")) as b,
        running_engine(engine_config(kam, "1001")) as (engine, events),
    ):
        a.wait_event("RegistrationChanged", registered="True")
        b.wait_event("RegistrationChanged", registered="True")
        a.send("call 1001")
        incoming = events.wait_for(lambda e: isinstance(e, CallIncoming), timeout=15)
        engine.submit(Answer(incoming.call_id))
        events.wait_call_state(CallState.CONFIRMED, incoming.call_id)
        to_us = a.wait_event("CallStateChanged", state="confirmed")["call_id"]

        mark = a.mark()
        a.send("call 1003")
        ringing_b = b.wait_event("CallIncoming")
        b.send(f"answer {ringing_b['call_id']}")
        to_b = a.wait_event("CallStateChanged", state="confirmed", start=mark)["call_id"]

        mark, b_mark = events.mark(), b.mark()
        a.send(f"replace {to_b} {to_us}")  # REFER to B: call 1001 with Replaces of A's call
        replacing = events.wait_for(
            lambda e: (
                isinstance(e, CallStateChanged)
                and e.state is CallState.CONFIRMED
                and e.call_id != incoming.call_id
            ),
            start=mark,
            timeout=15,
        )
        ended = events.wait_call_state(CallState.DISCONNECTED, incoming.call_id, start=mark)
        assert "1003@" in replacing.remote_uri
        assert ended.call_id == incoming.call_id
        # taken over without ringing: no second CallIncoming
        assert [e for e in events.events[mark:] if isinstance(e, CallIncoming)] == []
        (info,) = engine.calls_info()
        assert info["id"] == replacing.call_id and info["state"] == "confirmed"
        assert "1003@" in info["remote_uri"]
        # B's side: a confirmed call to us (the INVITE with Replaces it sent for the REFER)
        b.wait_event(
            "CallStateChanged",
            state="confirmed",
            start=b_mark,
            where=lambda e: "1001@" in e["remote_uri"],
        )


class CountingSine(SineEndpoint):
    """A sine handset that counts the frames pjsua2 asks for."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(1000.0, sample_rate)
        self.frames_captured = 0

    def read_capture_frame(self) -> bytes:
        self.frames_captured += 1
        return super().read_capture_frame()


def clock_running() -> bool:
    """pjmedia's conference clock thread (the null sound device) exists in this process."""
    tasks = Path("/proc/self/task").iterdir()
    return any((task / "comm").read_text().strip() == "clock" for task in tasks)


def test_handset_port_and_clock_run_only_during_call_media(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    kam = kamailio_server
    config = phone_config(kam, [account(kam, "1001")], codecs=["PCMU"])
    handset = CountingSine(config.audio.sample_rate)
    with (
        peer(kam, tmp_path, "1002") as far,
        running_engine(config, audio=handset) as (engine, events),
    ):
        assert not engine.handset_port_active and not clock_running()
        assert handset.frames_captured == 0 and handset.frames_played == 0
        mark = events.mark()
        engine.submit(MakeCall(0, "1002"))
        confirmed = events.wait_call_state(CallState.CONFIRMED, start=mark)
        far.wait_event("CALL_ESTABLISHED")
        # media may be reported just after the state: wait for it (bounded)
        poll_until(lambda: engine.handset_port_active and clock_running())
        poll_until(lambda: handset.frames_captured > 10 and handset.frames_played > 10)
        engine.submit(Hangup(confirmed.call_id))
        events.wait_call_state(CallState.DISCONNECTED, confirmed.call_id)
        far.wait_event("CALL_CLOSED")
        # released on the engine loop's next turn after the call's media went away
        poll_until(lambda: not engine.handset_port_active)
        poll_until(lambda: not clock_running())  # pjsua stops it 1 s after the last call
        captured = handset.frames_captured
        time.sleep(0.5)  # 25 frames' worth: none may be asked for without a call
        assert handset.frames_captured == captured


def poll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)
