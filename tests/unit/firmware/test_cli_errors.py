"""The top-level command line turns any offhook refusal into one line and exit code 1."""

from __future__ import annotations

import pytest

from offhook.contract.errors import OffhookError
from offhook.firmware import cli


class Refusal(OffhookError, ValueError):
    pass


def refuse(argv: list[str]) -> int:
    raise Refusal(f"server: missing ({argv})")


def crash(argv: list[str]) -> int:
    raise KeyError("a programming error")


def test_an_offhook_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "refuse", (f"{__name__}:refuse", "test"))
    assert cli.main(["refuse", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "offhook refuse: server: missing (['x'])\n"


def test_other_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "crash", (f"{__name__}:crash", "test"))
    with pytest.raises(KeyError):
        cli.main(["crash"])
