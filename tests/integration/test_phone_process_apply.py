"""A provisioned config applied to a whole phone process (real pjsua2, null ALSA, emulated
board): an apply that ends the SIP engine reports why, and going back re-binds the sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import parse_config
from offhook.firmware.phone_process import PhoneProcess
from offhook.firmware.sim import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[PhoneProcess]:
    local = parse_config(
        {
            "sip": {"port": free_port(), "bind_address": "127.0.0.1"},
            "audio": {"playback": "null", "capture": "null"},
            "control": {"listen": f"127.0.0.1:{free_port()}"},
        }
    )
    process = PhoneProcess(
        local, board_kind="emulated", headless=True, state_dir=tmp_path, test_hooks=False
    )
    process.simulated = False  # as on a Pi: the server's SIP port applies
    process.start(None)
    try:
        yield process
    finally:
        process.stop()


def test_an_apply_that_ends_the_sip_engine_reports_the_cause(phone: PhoneProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        error = phone.apply_provisioned(parse_config({"sip": {"port": busy}}))
    # the cause, for the server's config_rolled_back event (not a later "apply interrupted")
    assert error is not None
    assert f"127.0.0.1:{busy}" in error and "Address already in use" in error, error


def test_going_back_to_the_phones_own_config_rebinds_its_sockets(phone: PhoneProcess) -> None:
    own_port = phone.local_config.sip.port
    other = free_port()
    assert phone.apply_provisioned(parse_config({"sip": {"port": other}})) is None
    assert phone.engine.ports["udp"] == other
    assert phone.apply_provisioned(None) is None  # a refused first config's rollback
    assert phone.engine.ports["udp"] == own_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", other))  # the refused config's socket is gone
