"""dialog-info+xml parsing (RFC 4235) and SIP digest answers (RFC 2617) for BLF subscriptions."""

from __future__ import annotations

import pytest

from offhook.firmware.sip.dialog_info import DialogInfoError, parse_dialog_info
from offhook.firmware.sip.dialog_watch import host_port, tag_of
from offhook.firmware.sip.digest import DigestError, authorization, parse_challenge

# What Kamailio's pua_dialoginfo published for a call ringing at 1002 (seen in the BLF tests).
EARLY = """<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full"
  entity="sip:1002@127.0.0.1">
  <dialog id="a7c3" call-id="a7c315b22713640a" local-tag="42071a2a" remote-tag="b1fea230"
    direction="recipient">
    <state>early</state>
    <remote><identity display="Carol">sip:1003@127.0.0.1</identity>
      <target uri="sip:1003-0x55d9@127.0.0.1:42255"/></remote>
    <local><identity>sip:1002@127.0.0.1</identity></local>
  </dialog>
</dialog-info>"""


def test_an_early_dialog_with_its_tags_and_caller() -> None:
    info = parse_dialog_info(EARLY)
    assert info.full and info.version == 3 and info.entity == "sip:1002@127.0.0.1"
    (dialog,) = info.dialogs
    assert dialog.state == "early" and dialog.direction == "recipient"
    assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == (
        "a7c315b22713640a", "42071a2a", "b1fea230",
    )  # fmt: skip
    assert dialog.remote_uri == "sip:1003@127.0.0.1" and dialog.remote_name == "Carol"
    assert dialog.remote_target == "sip:1003-0x55d9@127.0.0.1:42255"


def test_an_empty_body_is_an_empty_full_set() -> None:
    info = parse_dialog_info("")
    assert info.full and info.dialogs == ()


def test_partial_state_is_kept() -> None:
    assert not parse_dialog_info(EARLY.replace('state="full"', 'state="partial"')).full


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<dialog-info", "not well-formed"),
        ("<presence xmlns='urn:ietf:params:xml:ns:pidf'/>", "not dialog-info"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "DTD or entities"),
        (EARLY.replace('version="3"', 'version="three"'), "version"),
        ("<" + "x" * 70_000 + "/>", "over"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(body: str, message: str) -> None:
    with pytest.raises(DialogInfoError, match=message):
        parse_dialog_info(body)


def test_digest_matches_the_rfc_2617_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", 1, "0a4f113b"
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "nc=00000001" in value and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_digest_without_qop() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    value = authorization(challenge, "SUBSCRIBE", "sip:1002@r", "u", "p")
    assert "qop" not in value and 'response="' in value


@pytest.mark.parametrize(
    "header",
    ['Basic realm="r"', 'Digest realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-256'],
)
def test_challenges_that_cannot_be_answered_say_why(header: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(header)


def test_uri_host_port_and_tags() -> None:
    assert host_port("<sip:1002@127.0.0.1:5070;lr>") == ("127.0.0.1", 5070)
    assert host_port("pbx.example") == ("pbx.example", 5060)
    assert host_port("sip:[::1]:5080") == ("::1", 5080)
    assert tag_of("<sip:1001@h>;tag=abc ;x=1") == "abc"
    assert tag_of("<sip:1001@h>") == ""


def test_the_watcher_believes_no_older_notify_than_one_seen() -> None:
    from offhook.firmware.events import ExtensionState
    from offhook.firmware.sip.dialog_watch import DialogWatcher, Subscription

    seen: list[ExtensionState] = []
    watcher = DialogWatcher(seen.append, "127.0.0.1")
    try:
        sub = Subscription(0, "1002", to_tag="t")
        confirmed = EARLY.replace("<state>early</state>", "<state>confirmed</state>")
        idle = '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="5" state="full"/>'

        def notify(body: str) -> None:
            data = b"NOTIFY sip:x SIP/2.0\r\n\r\n" + body.encode()
            watcher._on_notify(sub, {"subscription-state": ["active"]}, data)

        notify(idle)  # version 5: nothing going on
        notify(confirmed.replace('version="3"', 'version="4"'))  # late: before 5
        assert [e.dialogs for e in seen] == [()]
        notify(confirmed.replace('version="3"', 'version="6"'))
        assert seen[-1].dialogs[0].state == "confirmed"
    finally:
        watcher.stop()
