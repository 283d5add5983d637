"""Structured logs: journald's native datagrams on a real unix socket, key=value lines otherwise."""

from __future__ import annotations

import io
import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.logs import JournalHandler, encode_journal_entry, kv, setup_logging
from offhook.firmware.systemd import Notifier


def parse_journal(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    while data:
        line_end = data.index(b"\n")
        line = data[:line_end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = data[line_end + 1 :]
        else:
            (length,) = struct.unpack("<Q", data[line_end + 1 : line_end + 9])
            start = line_end + 9
            fields[line.decode()] = data[start : start + length].decode()
            data = data[start + length + 1 :]
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()
    setup_logging("info", stream=io.StringIO(), journal_socket=tmp_path / "absent")


def test_journald_gets_context_as_fields(journal, monkeypatch) -> None:
    path, sock = journal
    monkeypatch.delenv("OFFHOOK_LOG", raising=False)
    monkeypatch.delenv("OFFHOOK_LOG_FILE", raising=False)
    handler = setup_logging("info", journal_socket=path)
    assert isinstance(handler, JournalHandler)
    logging.getLogger("offhook.test").warning(
        "phone restarted", extra=kv(pid=42, reason="hung", **{"sip-port": 5060})
    )
    fields = parse_journal(sock.recv(65536))
    # journalctl and the console show MESSAGE only: the context follows the message there too
    assert fields["MESSAGE"] == "phone restarted pid=42 reason=hung sip-port=5060"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "offhook"
    assert fields["PID"] == "42"
    assert fields["REASON"] == "hung"
    assert fields["SIP_PORT"] == "5060"
    logging.getLogger("offhook.test").debug("not at info level")
    logging.getLogger("offhook.test").error("two\nlines")
    assert parse_journal(sock.recv(65536))["MESSAGE"] == "two\nlines"


def test_multiline_values_use_the_length_prefixed_form() -> None:
    data = encode_journal_entry({"MESSAGE": "a\nb", "X": "1"})
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\nX=1\n"


def test_stderr_fallback_is_key_value(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OFFHOOK_LOG_FILE", raising=False)
    out = io.StringIO()
    setup_logging("debug", journal_socket=tmp_path / "absent", stream=out)
    logging.getLogger("offhook.test").info(
        "call recorded", extra=kv(remote="sip:1002@h", name="Bob Smith")
    )
    line = out.getvalue().strip()
    assert line.endswith('INFO offhook.test call recorded remote=sip:1002@h name="Bob Smith"')
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("loud")


def test_notifier_abstract_socket_and_watchdog_period() -> None:
    name = f"offhook-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_interval_s == 2.0
        assert notifier.ready(status="phone running")
        assert sock.recv(1024) == b"READY=1\nSTATUS=phone running"
    finally:
        sock.close()
    assert not Notifier(environ={}).watchdog()
    other_pid = Notifier(environ={"WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval_s is None
