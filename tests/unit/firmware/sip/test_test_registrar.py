"""The test-only broken build's registrar override: only $OFFHOOK_TEST_REGISTRAR moves where an
account registers (the QEMU rollback test's bundle), and the build refuses a malformed one."""

from __future__ import annotations

import pytest

from offhook.contract.config import parse_config
from offhook.contract.fault_env import TEST_REGISTRAR_ENV
from offhook.firmware.sip.accounts import account_config
from offhook.image.build import BuildError, check_test_registrar

CONFIG = parse_config({"accounts": [{"user": "1001", "domain": "pbx.example:5062"}]})


def test_accounts_register_at_their_domain_unless_the_test_build_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TEST_REGISTRAR_ENV, raising=False)
    assert account_config(CONFIG, CONFIG.accounts[0], 0).regConfig.registrarUri.startswith(
        "sip:pbx.example:5062"
    )
    monkeypatch.setenv(TEST_REGISTRAR_ENV, "192.0.2.1:5060")
    acfg = account_config(CONFIG, CONFIG.accounts[0], 0)
    assert acfg.regConfig.registrarUri.startswith("sip:192.0.2.1:5060")
    assert "pbx.example" in acfg.idUri  # only where it registers changes


@pytest.mark.parametrize("bad", ["192.0.2.1", "host:port", "a b:5060", "x:5060\nOFFHOOK_BOARD=rpi"])
def test_build_refuses_a_malformed_test_registrar(bad: str) -> None:
    with pytest.raises(BuildError, match="HOST:PORT"):
        check_test_registrar(bad)
    check_test_registrar("")  # the default: a real build
