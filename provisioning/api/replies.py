"""The bodies the REST API (admin and device) answers with, so the OpenAPI document describes
every reply.

Field by field these are what the handlers return today (the audit snapshots of
provisioning.audit, table rows, counts). Times stay the ISO 8601 text the handlers write
(``IsoTime``), not re-parsed datetimes, so an answer is byte-for-byte what it was before it had
a model. ``tests/integration/test_prov_openapi.py`` fails on a 2xx JSON reply without one.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, RootModel

IsoTime = Annotated[
    str, Field(description="ISO 8601 time, UTC", json_schema_extra={"format": "date-time"})
]
Settings = Annotated[
    dict[str, Any],
    Field(description="partial phone config (keys of offhook.contract.config), nested by section"),
]


class DeviceOut(BaseModel):
    """A device as configured (its audit snapshot) and as its phone last reported."""

    id: str
    mac: str
    serial: str
    model: str
    name: str
    group_id: int | None
    status: str = Field(description="pending | approved | rejected | revoked")
    pre_registered: bool
    settings: Settings
    revision: int = Field(description="config revision the server renders")
    enrolled: bool = Field(description="the phone holds a device secret")
    reported_revision: int | None
    firmware_version: str
    last_ip: str
    sip_contact: str
    poll_interval_s: int | None
    last_seen: IsoTime | None
    created_at: IsoTime


class LineRow(BaseModel):
    """A SIP line as stored (never its password)."""

    id: int
    device_id: str
    position: int
    extension: str
    auth_user: str
    display_name: str
    registrar: str
    transport: str
    outbound_proxy: str
    enabled: bool
    created_at: IsoTime


class DeviceDetail(DeviceOut):
    lines: list[LineRow]


class BulkSkipped(BaseModel):
    device: str = Field(description="its name, or MAC, or the reference given")
    reason: str


class BulkOut(BaseModel):
    action: str
    done: int
    device_ids: list[str] = Field(description="the devices the action was done to")
    skipped: list[BulkSkipped]
    notified: int = Field(description="phones told to fetch their config now")


class LineOut(BaseModel):
    """A SIP line's audit snapshot: ``password`` is ``***`` when one is set, else empty."""

    id: int
    device_id: str
    position: int
    extension: str
    auth_user: str
    password: str
    display_name: str
    registrar: str
    transport: str
    outbound_proxy: str
    enabled: bool


class ImportOut(BaseModel):
    created: int
    updated: int
    errors: list[str]


class ChangedDevices(BaseModel):
    """A config change: how many devices' rendered config changed, how many NOTIFYs went out."""

    changed_devices: int
    notified: int


class ResyncOut(BaseModel):
    devices: int
    notified: int


class PartialConfig(RootModel[dict[str, Any]]):
    """A partial phone config: sections and keys of offhook.contract.config."""


class RenderedConfig(RootModel[dict[str, Any]]):
    """The whole config a phone would receive (offhook.contract.config), SIP passwords as
    ``***``."""


class SettingFieldOut(BaseModel):
    key: str = Field(description="dotted: section.key")
    kind: str = Field(description="boolean | integer | number | string | choice | list")
    description: str
    choices: list[Any] = Field(description="choice: the allowed values")
    minimum: float | None
    maximum: float | None
    default: Any
    secret: bool = Field(description="never shown back once set")


class SettingsSection(BaseModel):
    name: str
    description: str
    fields: list[SettingFieldOut]


class EffectiveSetting(BaseModel):
    key: str
    value: Any
    source: str = Field(
        description="default | fleet | template NAME | site NAME | group NAME | device"
    )


class GroupOut(BaseModel):
    id: int
    name: str
    kind: str = Field(description="site | group")
    parent_id: int | None
    settings: Settings
    templates: list[str] = Field(description="names of the attached templates, in order")


class GroupTreeNode(BaseModel):
    id: int
    name: str
    kind: str
    templates: list[str]
    devices: int = Field(description="devices in this group itself")
    total: int = Field(description="devices in this group and every group below it")
    by_status: dict[str, int] = Field(description="``total`` by device status")
    children: list[GroupTreeNode]


class TemplateOut(BaseModel):
    id: int
    name: str
    description: str
    settings: Settings


class StatusReportOut(BaseModel):
    id: str
    device_id: str
    time: IsoTime
    received_at: IsoTime
    firmware_version: str
    ip: str
    uptime_s: float
    config_revision: int | None
    sip_contact: str
    lines: Any = Field(description="per-line registration state as the phone reported it")


class CallRecordOut(BaseModel):
    """One leg of a call as one phone recorded it; times are Unix seconds."""

    id: str
    device_id: str
    direction: str
    account: int
    local_uri: str
    remote_uri: str
    remote_name: str
    start: float
    answer: float | None
    end: float
    disposition: str
    status_code: int
    sip_call_id: str = Field("", description='the SIP Call-ID; "" from older firmware')
    received_at: IsoTime


class QualityOut(BaseModel):
    id: str
    device_id: str
    call_record_id: str
    time: IsoTime
    codec: str
    jitter_ms: float
    loss_pct: float
    rtt_ms: float
    mos: float
    received_at: IsoTime


class EventOut(BaseModel):
    id: str
    device_id: str
    time: IsoTime
    type: str
    config_revision: int | None
    detail: str
    received_at: IsoTime


class AuditEntryOut(BaseModel):
    id: int
    time: IsoTime
    actor: str = Field(description="admin:<user>, cli:<login>, device:<mac> or system:<job>")
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    ip: str


class EnrollmentTokenOut(BaseModel):
    id: int
    name: str
    expires_at: IsoTime
    max_uses: int
    uses: int
    revoked: bool
    created_by: str
    created_at: IsoTime


class EnrollmentTokenCreated(EnrollmentTokenOut):
    token: str = Field(description="the token text, shown this once")


class FleetSummary(BaseModel):
    devices: dict[str, int] = Field(description="device count per status")
    out_of_date: int = Field(description="enrolled, approved devices not on their revision")


class SubjectExport(RootModel[dict[str, Any]]):
    """Everything stored about one device or extension: ``subject``, ``exported_at`` and one
    list of rows per table (device, lines, status_reports, call_records, quality_records,
    device_events)."""


class RowCounts(RootModel[dict[str, int]]):
    """Rows removed, per table."""


class Me(BaseModel):
    username: str
    role: str


class AdminUserCreated(BaseModel):
    id: int
    username: str
    role: str


class AdminUserOut(BaseModel):
    id: int
    username: str
    role: str
    disabled: bool
    locked_until: IsoTime | None
    last_login_at: IsoTime | None


class ApiTokenOut(BaseModel):
    """An admin API token (never the token itself)."""

    id: int
    user: str
    name: str
    prefix: str
    created_at: IsoTime | None
    expires_at: IsoTime | None
    last_used_at: IsoTime | None
    revoked: bool


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="the bearer token, shown this once")


# --- device API ---------------------------------------------------------------------------------


class EnrollReply(BaseModel):
    """``pending`` (202, ask again after Retry-After) or ``approved`` with the device's id and
    secret (its HTTP Basic credential from now on)."""

    status: str = Field(description="pending | approved")
    device_id: str | None = None
    secret: str | None = Field(None, description="shown with each approved answer to this nonce")


class DeviceConfig(RootModel[dict[str, Any]]):
    """The phone's whole rendered config (offhook.contract.config), with its ETag; 304 when
    If-None-Match matches."""


# --- firmware releases and rollouts (docs/updates.md) ------------------------------------------


class FirmwareReleaseOut(BaseModel):
    """A verified RAUC bundle the server offers: board and version from its signed manifest."""

    id: int
    compatible: str = Field(description="RAUC compatible: the board the bundle is built for")
    version: str
    description: str
    build: str
    sha256: str = Field(description="of the whole bundle file; its download name")
    size: int
    signer: str = Field(description="subject of the certificate that signed it")
    uploaded_by: str
    created_at: IsoTime | None
    withdrawn: bool = Field(description="no longer offered to new rollouts or pins")
    withdrawn_at: IsoTime | None
    withdrawn_by: str


class RolloutRelease(BaseModel):
    """The release a rollout installs."""

    id: int
    compatible: str
    version: str


class RolloutStageOut(BaseModel):
    """One stage so far: its share of the eligible phones, how many it asked, how many failed."""

    stage: int
    pct: int
    asked: int
    failed: int


class RolloutOut(BaseModel):
    """A rollout and its progress across the phones it may ask."""

    id: int
    release: RolloutRelease
    group: str | None = Field(description="group name; null for the whole fleet")
    status: str = Field(description="running | paused | completed | aborted")
    stages: list[int] = Field(description="rising percentages; the first is the canary")
    stage: int = Field(description="index into stages of the stage now running")
    stage_pct: int
    failure_threshold_pct: float
    maintenance_window: str
    pause_reason: str
    stage_timeout_s: int = Field(description="time limit of each stage (0: none)")
    stage_started_at: IsoTime | None = Field(description="when the current stage began")
    eligible: int
    admitted: int = Field(description="phones asked so far")
    stage_quota: int
    running: int
    failed: int
    rolled_back: int
    in_progress: int
    states: dict[str, int] = Field(description="phones per update state")
    failure_rate_pct: float
    per_stage: list[RolloutStageOut]
    created_by: str
    created_at: IsoTime | None
    finished_at: IsoTime | None


class FleetVersionRow(BaseModel):
    """Approved phones running one version of one board."""

    compatible: str
    version: str
    devices: int
    updating: int = Field(description="of them, mid-update")


class DeviceFirmwareOut(BaseModel):
    """A phone's running version, its target, pin, exclusion and last update step."""

    device_id: str
    mac: str
    running_version: str
    compatible: str
    target_version: str
    target_release: int | None
    rollout: int | None
    pinned: str
    excluded: bool
    state: str
    reason: str
    detail: str
    state_at: IsoTime | None


# --- call analytics (provisioning/services/call_analytics.py) -----------------------------------


class AnalyticsScopeOut(BaseModel):
    from_: str = Field(alias="from", description="first day, in time_zone")
    to: str = Field(description="last day (included), in time_zone")
    time_zone: str
    group: str = ""
    device: str = ""
    extension: str = ""

    model_config = {"populate_by_name": True}


class CallDayOut(BaseModel):
    day: str
    calls: int
    answered: int
    missed: int
    mos: float | None = Field(description="mean MOS of the day's call legs with a measurement")
    mos_samples: int = Field(description="how many call legs the MOS rests on")


class CallBreakdownOut(BaseModel):
    device_id: str
    device: str
    calls: int
    answered: int
    missed: int
    average_duration_s: float | None


class CallStatsOut(BaseModel):
    scope: AnalyticsScopeOut
    calls: int
    answered: int
    missed: int
    rang_fleet: int = Field(description="calls that rang a fleet phone (the miss rate's base)")
    answer_rate: float | None
    miss_rate: float | None
    average_duration_s: float | None = Field(description="answered calls, answer to end")
    busy_hours: list[list[int]] = Field(
        description="calls per weekday (Mon..Sun) and local hour (0..23)"
    )
    days: list[CallDayOut]
    devices: list[CallBreakdownOut]


class PartyOut(BaseModel):
    uri: str
    number: str
    name: str
    device_id: str = Field(description='the fleet phone of this side, "" outside the fleet')
    device: str


class JoinedCallOut(BaseModel):
    call: str = Field(description="the SIP Call-ID, or the record id of a call of one leg")
    start: IsoTime
    start_local: str = Field(description="ISO 8601 in the admin's time zone")
    answer: IsoTime | None
    end: IsoTime
    duration_s: float
    direction: str = Field(description="internal | outgoing | incoming")
    disposition: str
    caller: PartyOut
    callee: PartyOut
    caller_mos: float | None
    callee_mos: float | None
    legs: list[str] = Field(description="the call records joined into this call")


class QualityGroupOut(BaseModel):
    key: str
    label: str
    samples: int = Field(description="how many call legs the figures rest on")
    mos: float | None
    worst_mos: float | None
    poor: int
    loss_pct: float | None
    jitter_ms: float | None


class QualityDayOut(BaseModel):
    day: str
    mos: float | None
    samples: int


class QualityTrendOut(BaseModel):
    scope: AnalyticsScopeOut
    threshold: float
    poor_only: bool
    samples: int
    days: list[QualityDayOut]
    devices: list[QualityGroupOut]
    groups: list[QualityGroupOut]


class TimeZoneOut(BaseModel):
    username: str
    time_zone: str


# --- alerts (provisioning/api/alerts.py) --------------------------------------------------------


class AlertSubjectOut(BaseModel):
    type: str = Field(description="device | group | fleet | rollout")
    id: str
    name: str
    url: str = Field(description="where the web UI shows it (absolute with OFFHOOK_PUBLIC_URL)")


class AlertNotificationOut(BaseModel):
    event: str = Field(description="opened | resolved")
    channel: str = Field(description="smtp | webhook")
    status: str = Field(description="pending | sending | sent | failed")
    attempts: int
    error: str = Field(description="why the last attempt failed")
    sent_at: IsoTime | None


class AlertOut(BaseModel):
    """Something wrong in the fleet, found from the phones' reports."""

    id: int
    kind: str = Field(
        description="config_rejected | line_unregistered | not_seen | firmware_failed | "
        "poor_quality | rollout_paused"
    )
    kind_text: str
    severity: str = Field(description="critical | warning")
    state: str = Field(description="open | acknowledged | resolved")
    subject: AlertSubjectOut
    message: str
    first_seen: IsoTime
    last_seen: IsoTime
    resolved_at: IsoTime | None
    acknowledged_by: str = Field(description="who acknowledged it (admin:<user>, cli:<login>)")
    acknowledged_at: IsoTime | None
    url: str
    notifications: list[AlertNotificationOut]


class AlertCountsOut(BaseModel):
    open: int
    acknowledged: int
    by_severity: dict[str, int] = Field(description="active alerts per severity")
    failed_notifications: int


class AlertListOut(BaseModel):
    alerts: list[AlertOut]
    counts: AlertCountsOut


class AlertSkipped(BaseModel):
    id: int
    reason: str


class AlertAckOut(BaseModel):
    acknowledged: list[int]
    skipped: list[AlertSkipped] = Field(description="already acknowledged or resolved")
