"""The update agent's state machine, event by event (pure: no RAUC, no network, no clock)."""

from __future__ import annotations

from datetime import time

import pytest

from offhook.contract.config import FirmwareSettings
from offhook.firmware.update import agent as ag

SHA = "ab" * 32
WANT = FirmwareSettings(version="0.2.0", url="/fw/0.2.0.raucb", sha256=SHA, size=1000,
                        rollout="r-1")  # fmt: skip
NOON = time(12, 0)


def reports(commands: list[ag.Command]) -> list[str]:
    return [c.type.removeprefix("firmware_") for c in commands if isinstance(c, ag.Report)]


def kinds(commands: list[ag.Command]) -> list[type]:
    return [type(c) for c in commands if not isinstance(c, (ag.Persist, ag.Report))]


def booted(slot: str = "A", version: str = "0.1.0", record: ag.UpdateRecord | None = None):
    agent = ag.UpdateAgent(record=record or ag.UpdateRecord())
    agent.handle(ag.Started(0.0, slot, version))
    return agent


def installed_agent() -> ag.UpdateAgent:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadFinished(2.0, 1000, SHA))
    agent.handle(ag.Tick(3.0, True, NOON))
    agent.handle(ag.InstallFinished(4.0, True, version="0.2.0"))
    assert agent.record.phase == "installed"
    return agent


def after_reboot(agent: ag.UpdateAgent, slot: str, version: str) -> ag.UpdateAgent:
    """A new process after a reboot: only the persisted record survives."""
    fresh = ag.UpdateAgent(record=agent.record)
    fresh.handle(ag.Started(0.0, slot, version))
    return fresh


def test_no_version_or_the_running_one_asks_for_nothing() -> None:
    agent = booted()
    assert agent.handle(ag.Wanted(1.0, FirmwareSettings())) == []
    same = FirmwareSettings(version="0.1.0", url="/fw/x")
    assert agent.handle(ag.Wanted(1.0, same)) == []
    assert agent.record.phase == "idle"


def test_a_new_version_is_downloaded_into_the_other_slot_and_reported() -> None:
    agent = booted("A")
    commands = agent.handle(ag.Wanted(1.0, WANT))
    assert reports(commands) == ["downloading"]
    start = next(c for c in commands if isinstance(c, ag.StartDownload))
    assert (start.url, start.resume_from, start.max_size) == ("/fw/0.2.0.raucb", 0, 1000)
    report = next(c for c in commands if isinstance(c, ag.Report))
    assert (report.version, report.from_version, report.rollout, report.slot) == (
        "0.2.0", "0.1.0", "r-1", "B",
    )  # fmt: skip
    assert any(isinstance(c, ag.Persist) for c in commands)
    # the same config polled again changes nothing
    assert agent.handle(ag.Wanted(2.0, WANT)) == []


def test_install_waits_for_idle_and_reboot_for_the_window() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT.model_copy(update={"maintenance_window": "02:00-04:00"})))
    agent.handle(ag.DownloadFinished(2.0, 1000, SHA))
    assert agent.record.phase == "downloaded"
    assert kinds(agent.handle(ag.Tick(3.0, False, NOON))) == []  # in a call: no install
    commands = agent.handle(ag.Tick(4.0, True, NOON))
    assert kinds(commands) == [ag.Install]
    assert agent.handle(ag.Tick(5.0, True, NOON)) == []  # one install at a time
    commands = agent.handle(ag.InstallFinished(6.0, True, version="0.2.0"))
    assert reports(commands) == ["installed"]
    assert kinds(agent.handle(ag.Tick(7.0, True, NOON))) == []  # outside the window
    assert kinds(agent.handle(ag.Tick(8.0, False, time(3, 0)))) == []  # in it, but busy
    commands = agent.handle(ag.Tick(9.0, True, time(3, 0)))
    assert reports(commands) == ["rebooting"]
    assert kinds(commands) == [ag.Reboot]
    assert agent.record.phase == "rebooting"


def test_trial_boot_marks_good_only_after_registration() -> None:
    agent = installed_agent()
    agent.handle(ag.Tick(5.0, True, NOON))  # rebooting
    new = after_reboot(agent, "B", "0.2.0")
    assert new.record.phase == "verifying"
    assert new.handle(ag.Health(10.0, False, True)) == []  # control API up, not registered
    commands = new.handle(ag.Health(20.0, True, True))
    assert kinds(commands) == [ag.MarkGood, ag.DiscardBundle]
    assert reports(commands) == ["running"]
    running = next(c for c in commands if isinstance(c, ag.Report))
    assert (running.slot, running.version, running.from_version) == ("B", "0.2.0", "0.1.0")
    assert new.record.phase == "idle"


def test_trial_boot_that_never_registers_marks_itself_bad_and_the_old_slot_reports_it() -> None:
    agent = installed_agent()
    agent.handle(ag.Tick(5.0, True, NOON))
    new = after_reboot(agent, "B", "0.2.0")
    assert kinds(new.handle(ag.Tick(ag.HEALTH_TIMEOUT_S - 1, True, NOON))) == []
    commands = new.handle(ag.Tick(ag.HEALTH_TIMEOUT_S + 1, True, NOON))
    assert kinds(commands) == [ag.MarkBad, ag.Reboot]
    assert next(c for c in commands if isinstance(c, ag.MarkBad)).slot == "booted"
    assert reports(commands) == []  # the old slot reports, once it is back
    old = ag.UpdateAgent(record=new.record)
    commands = old.handle(ag.Started(0.0, "A", "0.1.0"))
    assert reports(commands) == ["rolled_back"]
    report = next(c for c in commands if isinstance(c, ag.Report))
    assert (report.reason, report.slot, report.version) == ("health_check_failed", "A", "0.2.0")
    assert "not registered" in report.detail
    assert old.record.phase == "failed"
    # the old slot is in service: marked good once the phone is up, without registration
    assert kinds(old.handle(ag.Health(5.0, False, True))) == [ag.MarkGood]
    assert old.handle(ag.Health(6.0, True, True)) == []  # once per boot
    # and the failed version is not taken again from the same rollout
    assert old.handle(ag.Wanted(7.0, WANT)) == []
    again = old.handle(ag.Wanted(8.0, WANT.model_copy(update={"rollout": "r-2"})))
    assert reports(again) == ["downloading"]


@pytest.mark.parametrize("phase", ["rebooting", "verifying"])
def test_new_slot_that_never_marked_itself_is_a_boot_failure(phase: str) -> None:
    """Power cut or hang during the trial boot: GRUB skipped the tried slot."""
    agent = installed_agent()
    agent.handle(ag.Tick(5.0, True, NOON))
    if phase == "verifying":
        agent = after_reboot(agent, "B", "0.2.0")
    old = after_reboot(agent, "A", "0.1.0")
    assert old.record.phase == "failed"
    assert old.record.reason == "boot_failed"


def test_power_cut_after_install_boots_the_new_slot_on_trial() -> None:
    agent = installed_agent()  # installed, never rebooted on purpose
    new = after_reboot(agent, "B", "0.2.0")
    assert new.record.phase == "verifying"


def test_interrupted_install_is_tried_again_then_given_up() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadFinished(2.0, 1000, SHA))
    for _ in range(ag.MAX_INSTALL_ATTEMPTS):
        assert kinds(agent.handle(ag.Tick(3.0, True, NOON))) == [ag.Install]
        agent = after_reboot(agent, "A", "0.1.0")  # power cut while RAUC writes
        assert agent.record.phase == "downloaded"
    commands = agent.handle(ag.Tick(3.0, True, NOON))
    assert reports(commands) == ["failed"]
    assert agent.record.reason == "install_failed"


def test_checksum_and_size_mismatch_fail_before_rauc_sees_the_bundle() -> None:
    for finished, detail in (
        (ag.DownloadFinished(2.0, 999, SHA), "999 bytes"),
        (ag.DownloadFinished(2.0, 1000, "cd" * 32), "SHA-256"),
    ):
        agent = booted()
        agent.handle(ag.Wanted(1.0, WANT))
        commands = agent.handle(finished)
        assert reports(commands) == ["failed"]
        assert ag.DiscardBundle in kinds(commands)
        assert agent.record.reason == "checksum_mismatch"
        assert detail in agent.record.detail


def test_refused_bundle_and_wrong_version() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadFinished(2.0, 1000, SHA))
    agent.handle(ag.Tick(3.0, True, NOON))
    agent.handle(ag.InstallFinished(4.0, False, "signature verification failed", refused=True))
    assert (agent.record.phase, agent.record.reason) == ("failed", "bundle_refused")
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadFinished(2.0, 1000, SHA))
    agent.handle(ag.Tick(3.0, True, NOON))
    commands = agent.handle(ag.InstallFinished(4.0, True, version="0.3.0"))
    assert ag.MarkBad in kinds(commands)
    assert agent.record.reason == "version_mismatch"


def test_download_failures_resume_then_give_up() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadFailed(2.0, "connection reset", 400))
    assert agent.handle(ag.Tick(3.0, True, NOON)) == []  # waits before retrying
    commands = agent.handle(ag.Tick(2.0 + ag.DOWNLOAD_RETRY_S[0], True, NOON))
    assert [c.resume_from for c in commands if isinstance(c, ag.StartDownload)] == [400]
    for attempt in range(2, ag.MAX_DOWNLOAD_ATTEMPTS + 1):
        commands = agent.handle(ag.DownloadFailed(float(attempt), "HTTP 503", 500))
    assert reports(commands) == ["failed"]
    assert agent.record.reason == "download_failed"


def test_download_resumes_after_a_reboot() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    agent.handle(ag.DownloadProgress(2.0, 600))
    agent = after_reboot(agent, "A", "0.1.0")
    commands = agent.handle(ag.Tick(3.0, True, NOON))
    assert [c.resume_from for c in commands if isinstance(c, ag.StartDownload)] == [600]


def test_server_withdrawing_the_version_cancels_and_an_installed_slot_is_marked_bad() -> None:
    agent = booted()
    agent.handle(ag.Wanted(1.0, WANT))
    commands = agent.handle(ag.Wanted(2.0, FirmwareSettings()))
    assert ag.CancelDownload in kinds(commands)
    assert reports(commands) == ["failed"]
    assert agent.record.phase == "idle"
    agent = installed_agent()
    commands = agent.handle(ag.Wanted(5.0, FirmwareSettings()))
    assert [c.slot for c in commands if isinstance(c, ag.MarkBad)] == ["other"]
    assert agent.record.reason == "cancelled"


def test_maintenance_window_wraps_midnight() -> None:
    assert ag.in_window("", NOON)
    assert ag.in_window("23:00-02:00", time(23, 30))
    assert ag.in_window("23:00-02:00", time(1, 59))
    assert not ag.in_window("23:00-02:00", time(2, 0))
    assert ag.in_window("02:00-04:00", time(2, 0))
    assert not ag.in_window("02:00-04:00", time(4, 0))
