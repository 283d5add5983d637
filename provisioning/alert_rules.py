"""The alert rules: facts about a phone, a group or a rollout in, the conditions that hold out.

Pure functions (no database, no clock: ``now`` is given), so every rule is a unit test.
``provisioning.alert_engine`` gathers the facts from the reports the server already stores
and turns conditions into alerts: a condition that holds opens (or refreshes) the one active
alert of its kind and subject, one that no longer holds resolves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

CRITICAL = "critical"
WARNING = "warning"

CONFIG_REJECTED = "config_rejected"
LINE_UNREGISTERED = "line_unregistered"
NOT_SEEN = "not_seen"
FIRMWARE_FAILED = "firmware_failed"
POOR_QUALITY = "poor_quality"
ROLLOUT_PAUSED = "rollout_paused"

# kind -> what it means, for the Alerts page's filter and the docs.
KINDS: dict[str, str] = {
    CONFIG_REJECTED: "config rejected or rolled back by a phone",
    LINE_UNREGISTERED: "SIP line not registered",
    NOT_SEEN: "phone not seen",
    FIRMWARE_FAILED: "firmware update failed or rolled back",
    POOR_QUALITY: "poor call quality in a group",
    ROLLOUT_PAUSED: "rollout paused itself on failures",
}
# The kinds whose subject is one phone; the others are about a group or a rollout.
DEVICE_KINDS = (CONFIG_REJECTED, LINE_UNREGISTERED, NOT_SEEN, FIRMWARE_FAILED)

CONFIG_FAILURES = {"config_rejected": "rejected", "config_rolled_back": "rolled back"}
FIRMWARE_FAILURES = {"failed": "failed", "rolled_back": "was rolled back"}
# A rollout paused by an admin carries this reason (provisioning.rollouts._steer); any other
# reason of a paused rollout is the failure threshold's.
MANUAL_PAUSE_PREFIX = "paused by "


@dataclass(frozen=True)
class Subject:
    type: str  # device | group | fleet | rollout
    id: str
    name: str

    @property
    def path(self) -> str:
        """Where the web UI shows it."""
        if self.type == "device":
            return f"/devices/{self.id}"
        if self.type == "group":
            return f"/groups/{self.id}"
        if self.type == "rollout":
            return "/firmware"
        return "/devices"


@dataclass(frozen=True)
class Condition:
    kind: str
    severity: str
    subject: Subject
    message: str

    @property
    def key(self) -> str:
        return active_key(self.kind, self.subject.type, self.subject.id)


def active_key(kind: str, subject_type: str, subject_id: str) -> str:
    return f"{kind}:{subject_type}:{subject_id}"


@dataclass(frozen=True)
class ConfigEvent:
    type: str  # config_applied | config_rejected | config_rolled_back
    revision: int | None
    detail: str


@dataclass(frozen=True)
class DeviceFacts:
    subject: Subject
    last_seen: datetime | None
    not_seen_after: timedelta
    lines: Sequence[dict[str, Any]] | None  # the newest status report's, None: no report
    last_config_event: ConfigEvent | None
    firmware_state: str = ""
    firmware_version: str = ""  # the target the state is about
    firmware_reason: str = ""
    firmware_detail: str = ""


@dataclass(frozen=True)
class GroupQuality:
    subject: Subject
    calls: int
    mean_mos: float


@dataclass(frozen=True)
class RolloutFacts:
    subject: Subject
    status: str
    pause_reason: str


def describe_duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def config_rule(facts: DeviceFacts, _now: datetime) -> Condition | None:
    """The phone's newest config event refuses a revision: it runs its last good config."""
    event = facts.last_config_event
    if event is None or event.type not in CONFIG_FAILURES:
        return None
    revision = f"revision {event.revision}" if event.revision is not None else "the config"
    reason = event.detail.strip() or "no reason given"
    return Condition(
        CONFIG_REJECTED,
        WARNING,
        facts.subject,
        f"{revision} {CONFIG_FAILURES[event.type]} by the phone: {reason}",
    )


def _line_name(line: dict[str, Any]) -> str:
    user = str(line.get("user") or f"account {line.get('account', 0)}")
    status = line.get("status") or 0
    return f"{user} (SIP {status})" if status else user


def line_rule(facts: DeviceFacts, _now: datetime) -> Condition | None:
    """Lines the newest status report says are not registered: critical when none is."""
    if not facts.lines:
        return None
    down = [line for line in facts.lines if not line.get("registered")]
    if not down:
        return None
    names = ", ".join(_line_name(line) for line in down)
    if len(down) == len(facts.lines):
        return Condition(LINE_UNREGISTERED, CRITICAL, facts.subject, f"no line registered: {names}")
    return Condition(
        LINE_UNREGISTERED,
        WARNING,
        facts.subject,
        f"{len(down)} of {len(facts.lines)} lines not registered: {names}",
    )


def not_seen_rule(facts: DeviceFacts, now: datetime) -> Condition | None:
    """No report for longer than the phone's threshold. A phone never heard from is not
    "not seen": it has not enrolled yet (the Approvals page and the device list show it)."""
    if facts.last_seen is None:
        return None
    silent = now - facts.last_seen
    if silent <= facts.not_seen_after:
        return None
    return Condition(
        NOT_SEEN,
        CRITICAL,
        facts.subject,
        f"not seen for {describe_duration(silent)} (threshold "
        f"{describe_duration(facts.not_seen_after)})",
    )


def firmware_rule(facts: DeviceFacts, _now: datetime) -> Condition | None:
    """The phone's update to its current target failed or was rolled back."""
    outcome = FIRMWARE_FAILURES.get(facts.firmware_state)
    if outcome is None:
        return None
    target = f"firmware {facts.firmware_version}" if facts.firmware_version else "firmware"
    why = "; ".join(p for p in (facts.firmware_reason, facts.firmware_detail) if p)
    return Condition(
        FIRMWARE_FAILED,
        WARNING,
        facts.subject,
        f"{target} update {outcome}" + (f": {why}" if why else ""),
    )


DeviceRule = Callable[[DeviceFacts, datetime], Condition | None]
DEVICE_RULES: dict[str, DeviceRule] = {
    CONFIG_REJECTED: config_rule,
    LINE_UNREGISTERED: line_rule,
    NOT_SEEN: not_seen_rule,
    FIRMWARE_FAILED: firmware_rule,
}


def device_conditions(
    facts: DeviceFacts, now: datetime, kinds: Sequence[str] = DEVICE_KINDS
) -> list[Condition]:
    found = (DEVICE_RULES[kind](facts, now) for kind in kinds)
    return [c for c in found if c is not None]


def quality_rule(quality: GroupQuality, threshold: float, min_calls: int) -> Condition | None:
    """The mean MOS of a group's recent calls below the threshold, over enough calls that one
    bad call does not page anyone."""
    if quality.calls < min_calls or quality.mean_mos >= threshold:
        return None
    return Condition(
        POOR_QUALITY,
        WARNING,
        quality.subject,
        f"mean MOS {quality.mean_mos:.2f} over {quality.calls} recent calls "
        f"(threshold {threshold:g})",
    )


def rollout_rule(facts: RolloutFacts) -> Condition | None:
    """A rollout the failure threshold paused (not one an admin paused)."""
    if (
        facts.status != "paused"
        or not facts.pause_reason
        or facts.pause_reason.startswith(MANUAL_PAUSE_PREFIX)
    ):
        return None
    return Condition(
        ROLLOUT_PAUSED,
        CRITICAL,
        facts.subject,
        f"{facts.subject.name} paused itself: {facts.pause_reason}",
    )
