"""Pure helpers of the SIP engine: dial targets, name-addr parsing, MWI bodies, E-model MOS."""

from __future__ import annotations

from pathlib import Path

import pjsua2 as pj
import pytest

from offhook.contract.config import Account, PhoneConfig
from offhook.firmware.sip.audio_port import _copy_by_iteration, _copy_from_storage, copy_byte_vector
from offhook.firmware.sip.dns import nameservers, parse_resolv_conf
from offhook.firmware.sip.mwi import MessageSummary, parse_message_summary
from offhook.firmware.sip.quality import delay_impairment, estimate_mos, mos_from_r, r_factor
from offhook.firmware.sip.uri import TargetError, split_name_addr, target_uri, user_part


def acc(transport: str = "udp") -> Account:
    return Account(user="1001", domain="pbx.example.com:5070", transport=transport)


@pytest.mark.parametrize(
    ("transport", "target", "uri"),
    [
        ("udp", "1002", "sip:1002@pbx.example.com:5070"),
        ("tcp", "1002", "sip:1002@pbx.example.com:5070;transport=tcp"),
        ("tls", "*97", "sip:*97@pbx.example.com:5070;transport=tls"),
        ("udp", "12#", "sip:12%23@pbx.example.com:5070"),
        ("udp", "alice@other.org", "sip:alice@other.org"),
        ("udp", "sips:bob@secure.org", "sips:bob@secure.org"),
    ],
)
def test_target_uri(transport: str, target: str, uri: str) -> None:
    assert target_uri(acc(transport), target) == uri


@pytest.mark.parametrize("target", ["", "  ", "12 34", "a<b", "@host", "user@"])
def test_bad_targets_are_refused(target: str) -> None:
    with pytest.raises(TargetError):
        target_uri(acc(), target)


def test_split_name_addr() -> None:
    assert split_name_addr('"Bob \\"B\\" Builder" <sip:1002@h>;tag=1') == (
        'Bob "B" Builder',
        "sip:1002@h",
    )
    assert split_name_addr("Alice <sip:1@h>") == ("Alice", "sip:1@h")
    assert split_name_addr("<sip:1@h>") == ("", "sip:1@h")
    assert split_name_addr("sip:1@h") == ("", "sip:1@h")
    assert user_part("sip:1001@host;x=y") == "1001"


def test_message_summary() -> None:
    message = "NOTIFY sip:x SIP/2.0\r\nEvent: message-summary\r\n\r\nMessages-Waiting: yes\r\n"
    message += "Voice-Message: 3/12 (1/2)\r\n"
    assert parse_message_summary(message) == MessageSummary(True, 3, 12)
    assert parse_message_summary("Messages-Waiting: no") == MessageSummary(False, 0, 0)
    assert parse_message_summary("Voice-Message: 1/1") is None


def test_mos_falls_with_loss_delay_and_codec() -> None:
    clean = estimate_mos("PCMU", jitter_ms=1, loss_pct=0, rtt_ms=1)
    assert 4.3 <= clean <= 4.5
    assert estimate_mos("PCMU", 1, 5, 1) < clean - 0.5
    assert estimate_mos("PCMU", 1, 0, 600) < clean - 0.5
    assert estimate_mos("GSM", 1, 0, 1) < clean
    assert mos_from_r(0) == 1.0 and mos_from_r(120) == 4.5
    assert all(mos_from_r(r / 10) >= 1.0 for r in range(100))  # the curve's dip is floored
    assert delay_impairment(300) > delay_impairment(150) * 2
    with pytest.raises(ValueError, match="impossible"):
        r_factor("PCMU", -1, 0, 0)


def test_the_phones_own_side_lowers_the_mos() -> None:
    network_only = estimate_mos("PCMU", 1, 0, 1)
    # frames the jitter buffer concealed count as loss with the codec's concealment
    assert estimate_mos("PCMU", 1, 0, 1, concealed_pct=3) == estimate_mos("PCMU", 1, 3, 1)
    # a gap in playout (bridge underrun, overrun) has no concealment: far worse than a loss
    gaps = estimate_mos("PCMU", 1, 0, 1, playout_gaps_pct=2)
    assert gaps < estimate_mos("PCMU", 1, 2, 1) - 0.5
    assert gaps < network_only - 1.0
    # a measured jitter buffer delay replaces the two-jitters guess
    assert estimate_mos("PCMU", 1, 0, 1, jitter_buffer_ms=400) < network_only - 0.5
    with pytest.raises(ValueError, match="gaps=-1"):
        r_factor("PCMU", 1, 0, 1, playout_gaps_pct=-1)


def test_g722_is_rated_on_the_wideband_scale_and_reported_on_the_narrowband_one() -> None:
    assert r_factor("G722", 1, 0, 1) > 100  # G.107.1: up to 129
    clean = estimate_mos("G722", 1, 0, 1)
    assert abs(clean - estimate_mos("PCMU", 1, 0, 1)) < 0.2  # comparable across codecs
    assert estimate_mos("G722", 1, 10, 1) < clean - 1.0
    assert estimate_mos("G722", 1, 100, 1) < 1.2


def test_fast_vector_copy_matches_the_slow_one() -> None:
    data = bytes(range(256)) * 2 + b"\x01\x02"
    vector = pj.ByteVector(data)
    assert _copy_from_storage(vector) == _copy_by_iteration(vector) == data
    assert copy_byte_vector is _copy_from_storage  # the self-check chose the fast path here
    assert _copy_from_storage(pj.ByteVector(b"")) == b""


def test_nameservers_only_when_a_server_is_named_by_host(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nsearch lan\nnameserver 192.0.2.1\nnameserver fe80::1\n")
    by_ip = PhoneConfig.model_validate({"accounts": [{"user": "1", "domain": "192.0.2.9:5060"}]})
    by_name = PhoneConfig.model_validate({"accounts": [{"user": "1", "domain": "pbx.example"}]})
    assert nameservers(by_ip, resolv) == []
    assert nameservers(by_name, resolv) == ["192.0.2.1"]
    assert nameservers(by_name, tmp_path / "missing") == []
    assert parse_resolv_conf("nameserver 10.0.0.1 # x\nnameserver bogus\n") == ["10.0.0.1"]
