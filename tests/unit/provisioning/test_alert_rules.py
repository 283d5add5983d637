"""The alert rules (provisioning/alert_rules.py): facts in, conditions out, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from offhook.provisioning import alert_rules as rules

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PHONE = rules.Subject("device", "d-1", "Reception")


def facts(**changes: object) -> rules.DeviceFacts:
    values: dict[str, object] = {
        "subject": PHONE,
        "last_seen": NOW - timedelta(minutes=1),
        "not_seen_after": timedelta(minutes=10),
        "lines": [{"account": 0, "user": "1001", "registered": True, "status": 200}],
        "last_config_event": rules.ConfigEvent("config_applied", 4, ""),
    }
    values.update(changes)
    return rules.DeviceFacts(**values)  # type: ignore[arg-type]


def test_a_healthy_phone_has_no_condition() -> None:
    assert rules.device_conditions(facts(), NOW) == []


def test_config_rejected_and_rolled_back_carry_the_phones_reason() -> None:
    rejected = facts(
        last_config_event=rules.ConfigEvent("config_rejected", 7, "audio.tone_plan: bad")
    )
    (condition,) = rules.device_conditions(rejected, NOW)
    assert condition.kind == rules.CONFIG_REJECTED
    assert condition.message == "revision 7 rejected by the phone: audio.tone_plan: bad"
    assert condition.key == "config_rejected:device:d-1"
    rolled = facts(last_config_event=rules.ConfigEvent("config_rolled_back", 8, ""))
    (condition,) = rules.device_conditions(rolled, NOW)
    assert condition.message == "revision 8 rolled back by the phone: no reason given"
    # a later config_applied is the newest event: the condition is gone
    assert rules.config_rule(facts(), NOW) is None


def test_lines_not_registered_warning_when_some_critical_when_none() -> None:
    lines = [
        {"account": 0, "user": "1001", "registered": True, "status": 200},
        {"account": 1, "user": "1002", "registered": False, "status": 403},
    ]
    partial = rules.line_rule(facts(lines=lines), NOW)
    assert partial is not None and partial.severity == rules.WARNING
    assert partial.message == "1 of 2 lines not registered: 1002 (SIP 403)"
    down = [{**line, "registered": False} for line in lines]
    none = rules.line_rule(facts(lines=down), NOW)
    assert none is not None and none.severity == rules.CRITICAL
    assert none.message.startswith("no line registered: 1001 (SIP 200), 1002")
    assert rules.line_rule(facts(lines=None), NOW) is None  # no report yet: nothing known
    assert rules.line_rule(facts(lines=[]), NOW) is None  # no lines configured


def test_not_seen_after_the_threshold_only_and_never_for_a_phone_never_heard() -> None:
    assert rules.not_seen_rule(facts(last_seen=NOW - timedelta(minutes=10)), NOW) is None
    late = rules.not_seen_rule(facts(last_seen=NOW - timedelta(minutes=75)), NOW)
    assert late is not None and late.severity == rules.CRITICAL
    assert late.message == "not seen for 1 h 15 min (threshold 10 min)"
    assert rules.not_seen_rule(facts(last_seen=None), NOW) is None


def test_firmware_failed_or_rolled_back_names_the_target_and_reason() -> None:
    failed = facts(
        firmware_state="rolled_back",
        firmware_version="0.2.0",
        firmware_reason="not_registered",
        firmware_detail="not registered within 120 s",
    )
    (condition,) = rules.device_conditions(failed, NOW, [rules.FIRMWARE_FAILED])
    assert condition.message == (
        "firmware 0.2.0 update was rolled back: not_registered; not registered within 120 s"
    )
    assert rules.firmware_rule(facts(firmware_state="running"), NOW) is None
    assert rules.firmware_rule(facts(firmware_state="downloading"), NOW) is None


def test_kinds_limit_what_is_evaluated() -> None:
    bad = facts(
        last_seen=NOW - timedelta(hours=3),
        lines=[{"user": "1001", "registered": False, "status": 408}],
    )
    assert {c.kind for c in rules.device_conditions(bad, NOW)} == {
        rules.NOT_SEEN,
        rules.LINE_UNREGISTERED,
    }
    assert [c.kind for c in rules.device_conditions(bad, NOW, [rules.NOT_SEEN])] == [rules.NOT_SEEN]


def test_poor_quality_needs_enough_calls_below_the_threshold() -> None:
    sales = rules.Subject("group", "3", "Sales")
    assert rules.quality_rule(rules.GroupQuality(sales, 2, 1.5), 3.5, 3) is None
    assert rules.quality_rule(rules.GroupQuality(sales, 5, 3.5), 3.5, 3) is None
    poor = rules.quality_rule(rules.GroupQuality(sales, 5, 2.84), 3.5, 3)
    assert poor is not None and poor.key == "poor_quality:group:3"
    assert poor.message == "mean MOS 2.84 over 5 recent calls (threshold 3.5)"


def test_only_a_rollout_the_threshold_paused_alerts() -> None:
    subject = rules.Subject("rollout", "2", "rollout 2 of pi 0.2.0 to Sales")
    auto = rules.RolloutFacts(subject, "paused", "failure rate 50.0% (1 of 2 phones ...)")
    condition = rules.rollout_rule(auto)
    assert condition is not None and condition.severity == rules.CRITICAL
    assert rules.rollout_rule(rules.RolloutFacts(subject, "paused", "paused by admin:al")) is None
    assert rules.rollout_rule(rules.RolloutFacts(subject, "running", "")) is None


def test_subjects_link_to_their_pages() -> None:
    assert PHONE.path == "/devices/d-1"
    assert rules.Subject("group", "3", "Sales").path == "/groups/3"
    assert rules.Subject("rollout", "2", "r").path == "/firmware"
