"""A config applied to the Phone: the commands that reconfigure engine and audio, and the verdict
on a provisioned apply (registered / refused / engine failed) reported as ConfigOutcome."""

from __future__ import annotations

from offhook.firmware.events import (
    ConfigApplied,
    ConfigOutcome,
    ReconfigureEngine,
    RegistrationChanged,
    SetTonePlan,
    SetVolume,
    SipEngineStatus,
)
from offhook.firmware.phone import T_NO_ANSWER, T_OFFHOOK, T_RING, T_XFER, Phone
from offhook.firmware.phone_state import Mode
from offhook.firmware.screens.views import _SCREENS
from tests.unit.firmware.test_phone import Driver, make_config

ACCOUNT = {"user": "1001", "domain": "pbx.example", "password": "old"}


def outcomes(d: Driver) -> list[ConfigOutcome]:
    return d.of(ConfigOutcome)


def test_config_applied_returns_the_engine_and_tone_plan_commands_first() -> None:
    d = Driver()
    new = make_config(audio={"tone_plan": "eu", "speaker_volume": 30})
    out = d(ConfigApplied(new))
    assert out[:2] == [ReconfigureEngine(new), SetTonePlan("eu")]
    assert SetVolume("speaker", 30) in out
    assert outcomes(d) == [], "a plain ConfigApplied asks for no verdict"


def test_unchanged_registered_line_passes_the_apply_at_once() -> None:
    d = Driver(make_config(accounts=[ACCOUNT]))
    d(RegistrationChanged(0, True, 200))
    d(ConfigApplied(make_config(accounts=[ACCOUNT], features={"dnd": True}), request=4))
    assert outcomes(d) == [ConfigOutcome(4, None)]
    d(RegistrationChanged(0, True, 200))
    assert outcomes(d) == [], "reported once"


def test_changed_line_is_judged_by_its_fresh_registration() -> None:
    d = Driver(make_config(accounts=[ACCOUNT]))
    d(RegistrationChanged(0, True, 200))
    d(ConfigApplied(make_config(accounts=[{**ACCOUNT, "password": "new"}]), request=1))
    assert outcomes(d) == [], "the old registration no longer counts"
    d(RegistrationChanged(0, False, 403, "Forbidden"))
    (outcome,) = outcomes(d)
    assert outcome.request == 1
    assert outcome.error is not None and "accounts[0]" in outcome.error and "403" in outcome.error


def test_engine_that_stopped_fails_the_apply_and_a_new_port_is_waited_for() -> None:
    d = Driver(make_config(accounts=[ACCOUNT]))
    d(SipEngineStatus(True, (("udp", 5060),)))
    d(RegistrationChanged(0, True, 200))
    d(ConfigApplied(make_config(accounts=[ACCOUNT], sip={"port": 5070}), request=2))
    assert outcomes(d) == [], "still listening on the old port"
    d(SipEngineStatus(True, (("udp", 5070),)))
    assert outcomes(d) == [ConfigOutcome(2, None)]

    d(ConfigApplied(make_config(accounts=[ACCOUNT], sip={"port": 5080}), request=3))
    d(SipEngineStatus(False, failure="SipEngineError: udp port 5080 in use"))
    assert outcomes(d) == [
        ConfigOutcome(3, "sip engine stopped: SipEngineError: udp port 5080 in use")
    ]


def test_a_newer_config_supersedes_the_pending_verdict() -> None:
    d = Driver(make_config(accounts=[ACCOUNT]))
    d(ConfigApplied(make_config(accounts=[{**ACCOUNT, "password": "a"}]), request=5))
    d(ConfigApplied(make_config(accounts=[{**ACCOUNT, "password": "b"}]), request=6))
    assert outcomes(d) == [ConfigOutcome(5, "superseded by a newer config")]
    d(RegistrationChanged(0, True, 200))
    assert outcomes(d) == [ConfigOutcome(6, None)]


def test_every_mode_has_a_screen_and_every_timer_kind_a_handler() -> None:
    assert set(_SCREENS) == set(Mode)
    for name in (T_OFFHOOK, T_NO_ANSWER, T_RING, T_XFER):
        assert name.rstrip(":") in Phone._timer_handlers
