"""The phone's typed configuration: one schema shared by the phone and the provisioning server.

The phone reads it from TOML; the server renders it as JSON. Unknown keys and bad values are
rejected with a message that names the key (``accounts[0].transport: ...``).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from offhook.contract.atomic import atomic_write_bytes
from offhook.contract.dialplan import DigitMap, DigitMapError
from offhook.contract.errors import OffhookError

HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(:\d{1,5})?$")
KNOWN_CODECS = ("G722", "PCMU", "PCMA", "GSM", "iLBC", "speex", "L16")
TONE_PLANS = ("us", "eu", "uk")


REDACTED = "(set, not shown)"
# Secrets outside the accounts' passwords, as (section, key).
SECRET_KEYS = (
    ("control", "token"),
    ("provisioning", "enrollment_token"),
    ("directory", "bind_password"),
    ("admin", "pin"),
)


class ConfigError(OffhookError, ValueError):
    """A configuration that cannot be used; the message names each offending key."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _check_host_port(value: str) -> str:
    if not HOST_PORT.match(value):
        raise ValueError(f"{value!r} is not host or host:port")
    if ":" in value and not value.endswith("]"):
        port = int(value.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range 1-65535")
    return value


class DeviceSettings(_Section):
    name: str = "offhook phone"
    timezone: str = "UTC"
    language: str = "en"


class Account(_Section):
    user: Annotated[str, Field(min_length=1, max_length=64)]
    password: str = ""
    domain: str
    transport: Literal["udp", "tcp", "tls"] = "udp"
    display_name: str = ""
    auth_user: str = ""
    enabled: bool = True
    register_expires_s: Annotated[int, Field(ge=30, le=86400)] = 300
    srtp: Literal["disabled", "optional", "mandatory"] = "disabled"
    voicemail: str = ""
    outbound_proxy: str = ""

    @field_validator("domain", "outbound_proxy")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return value if value == "" else _check_host_port(value)

    @field_validator("user")
    @classmethod
    def _user_chars(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._~+\-!$&'()*,;=]+", value):
            raise ValueError("user may contain only SIP user characters (no spaces, @ or :)")
        return value


class SipSettings(_Section):
    port: Annotated[int, Field(ge=0, le=65535)] = 5060
    codecs: list[str] = Field(default_factory=lambda: ["G722", "PCMU", "PCMA"])
    user_agent: str = "offhook"
    tls_ca_file: str = ""
    tls_verify_server: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Address the SIP and RTP sockets bind to and advertise; "" = all interfaces (tests: 127.0.0.1).
    bind_address: str = ""

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one codec is needed")
        unknown = [c for c in value if c not in KNOWN_CODECS]
        if unknown:
            raise ValueError(f"unknown codec(s) {unknown}; known: {', '.join(KNOWN_CODECS)}")
        return value


class AudioSettings(_Section):
    capture: str = "default"
    playback: str = "default"
    tone_plan: Literal["us", "eu", "uk"] = "us"
    sample_rate: Literal[8000, 16000, 48000] = 16000
    period_ms: Annotated[int, Field(ge=5, le=40)] = 10
    speaker_volume: Annotated[int, Field(ge=0, le=100)] = 80
    ring_volume: Annotated[int, Field(ge=0, le=100)] = 80
    mixer_control: str = ""
    # Acoustic echo cancellation on the speakerphone (hands-free) path; the handset has none.
    echo_cancellation: bool = True
    echo_tail_ms: Annotated[int, Field(ge=20, le=500)] = 200  # longest echo path it learns
    # SCHED_FIFO priority of the bridge's two device threads (0: normal scheduling); needs
    # CAP_SYS_NICE or an RLIMIT_RTPRIO (systemd LimitRTPRIO=), else they stay as they are.
    realtime_priority: Annotated[int, Field(ge=0, le=99)] = 0


class DialPlanSettings(_Section):
    digit_map: str = "[2-9]xxx|0|00|911|112|999|1[2-9]xx[2-9]xxxxxx|011x.T|x.T"
    interdigit_timeout_s: Annotated[float, Field(gt=0, le=30)] = 4.0
    emergency_numbers: list[str] = Field(default_factory=lambda: ["911", "112", "999"])
    offhook_timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0


class FeatureSettings(_Section):
    dnd: bool = False
    call_waiting: bool = True
    auto_answer: bool = False
    forward_always: str = ""
    forward_busy: str = ""
    forward_no_answer: str = ""
    forward_no_answer_s: Annotated[int, Field(ge=5, le=120)] = 20
    # An incoming call nobody answers (and the caller never cancels) is refused with 480 after this.
    ring_timeout_s: Annotated[int, Field(ge=5, le=600)] = 120


class PhonebookEntry(_Section):
    name: Annotated[str, Field(min_length=1)]
    number: Annotated[str, Field(min_length=1)]
    speed_dial: str = ""


BLF_KEYS = 8  # blf1..blf8 (contract/keys.py): the line keys that can watch an extension
EXTENSION_RE = re.compile(r"^[A-Za-z0-9._+*-]{1,64}$")


class BlfKey(_Section):
    """A line key watching a colleague's extension (busy lamp field, RFC 4235 dialog events):
    its LED shows idle/ringing/busy; pressing it calls the extension or picks up its call."""

    extension: str
    label: str = ""  # shown on the screen; the extension when empty
    account: Annotated[int, Field(ge=0)] = 0  # the line that subscribes and calls

    @field_validator("extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        if not EXTENSION_RE.match(value):
            raise ValueError("extension must be 1-64 of letters, digits and . _ + * -")
        return value


ACTION_EVENTS = ("incoming", "answered", "ended", "missed", "registered")
ACTION_FIELDS = (
    "event", "caller", "caller_name", "callee", "call_id", "direction", "duration",
    "account", "line", "status", "time",
)  # fmt: skip
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


class ActionUrlSettings(_Section):
    """Outbound HTTP(S) GETs on phone events, for CRM and business-app integration. Each URL is
    a template: {caller}, {caller_name}, {call_id}, {duration}... (docs/config.md)."""

    incoming: str = ""
    answered: str = ""
    ended: str = ""
    missed: str = ""
    registered: str = ""
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 3.0
    retries: Annotated[int, Field(ge=0, le=5)] = 2

    @field_validator("incoming", "answered", "ended", "missed", "registered")
    @classmethod
    def _template(cls, value: str) -> str:
        if not value:
            return value
        if not re.match(r"^https?://[^\s/{}]+", value):
            raise ValueError("must start with http:// or https:// and a host")
        if any(c.isspace() for c in value):
            raise ValueError("must not contain spaces")
        unknown = [f for f in _TEMPLATE_FIELD.findall(value) if f not in ACTION_FIELDS]
        if unknown:
            raise ValueError(f"unknown field {{{unknown[0]}}} (known: {', '.join(ACTION_FIELDS)})")
        return value

    def template(self, event: str) -> str:
        return str(getattr(self, event))


class ControlSettings(_Section):
    listen: str = "127.0.0.1:8080"
    token: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _check_host_port(value)
        if ":" not in value:
            raise ValueError("listen needs host:port")
        return value


class ProvisioningSettings(_Section):
    url: str = ""
    ca_fingerprint: str = ""
    enrollment_token: str = ""
    poll_interval_s: Annotated[int, Field(ge=10, le=7 * 86400)] = 3600
    notify_port: Annotated[int, Field(ge=0, le=65535)] = 0
    state_dir: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("url must start with https:// (or http:// for tests)")
        return value

    @field_validator("ca_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        hexdigits = value.replace(":", "").lower()
        if value and not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
            raise ValueError("ca_fingerprint must be a SHA-256 fingerprint (64 hex digits)")
        return hexdigits


class DirectorySettings(_Section):
    """The remote phonebook: an LDAP directory searched from the keypad and for caller names."""

    url: str = ""  # ldap://host[:port] or ldaps://host[:port]; empty: no directory
    base_dn: str = ""
    bind_dn: str = ""  # empty: anonymous bind
    bind_password: str = ""
    name_attributes: list[str] = Field(default_factory=lambda: ["cn", "sn", "givenName"])
    number_attributes: list[str] = Field(
        default_factory=lambda: ["telephoneNumber", "mobile", "ipPhone"]
    )
    display_attribute: str = "cn"
    max_results: Annotated[int, Field(ge=1, le=200)] = 20
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 3.0
    lookup_incoming: bool = True  # name unknown callers from the directory
    start_tls: bool = False  # ldap:// upgraded to TLS (StartTLS) before the bind
    # The CA (PEM) the directory's certificate must lead to, for ldaps:// and StartTLS; empty:
    # the system's CAs. The certificate must also name the url's host.
    tls_ca_file: str = ""
    tls_verify: bool = True  # off takes any certificate (a lab directory only)

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        if value and not re.match(r"^ldaps?://[^\s/]+/?$", value):
            raise ValueError("url must be ldap://host[:port] or ldaps://host[:port]")
        return value

    @model_validator(mode="after")
    def _base_with_url(self) -> DirectorySettings:
        if self.url and not self.base_dn:
            raise ValueError("directory.base_dn is required when directory.url is set")
        if self.start_tls and self.url.startswith("ldaps://"):
            raise ValueError(
                "directory.start_tls is for ldap:// urls (ldaps:// is TLS from the start)"
            )
        return self


class AdminSettings(_Section):
    """The phone-side settings menu: locked behind this PIN (digits); empty keeps it locked."""

    pin: str = ""

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9]{4,12}", value):
            raise ValueError("pin must be 4-12 digits")
        return value


class BoardSettings(_Section):
    profile: str = "offhook-v1"
    display: Literal["ssd1306", "sh1106", "none"] = "ssd1306"
    display_bus: Literal["i2c", "spi"] = "i2c"
    display_address: int = 0x3C
    display_rotate: Literal[0, 1, 2, 3] = 0
    serial_console: str = ""


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


VERSION_RE = re.compile(r"^[0-9A-Za-z.+~_-]{1,64}$")
ROLLOUT_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class FirmwareSettings(_Section):
    """The firmware the server wants this phone to run (docs/updates.md). An empty version
    asks for nothing: the phone stays on what it runs."""

    version: str = ""
    url: str = ""
    sha256: str = ""
    size: Annotated[int, Field(ge=0)] = 0
    rollout: str = ""
    maintenance_window: str = ""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value and not VERSION_RE.match(value):
            raise ValueError("version must be 1-64 of letters, digits and . + ~ _ -")
        return value

    @field_validator("url")
    @classmethod
    def _bundle_url(cls, value: str) -> str:
        if value and not (re.match(r"^https?://[^\s/]+", value) or re.match(r"^/\S*$", value)):
            raise ValueError("url must be https:// (http:// for tests) or a path starting with /")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("sha256 must be 64 hex digits")
        return value.lower()

    @field_validator("rollout")
    @classmethod
    def _rollout(cls, value: str) -> str:
        if value and not ROLLOUT_RE.match(value):
            raise ValueError("rollout must be 1-64 of letters, digits, _ and -")
        return value

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if value and not WINDOW_RE.match(value):
            raise ValueError("maintenance_window must be HH:MM-HH:MM (24 h)")
        if value and value[:5] == value[6:]:
            raise ValueError("maintenance_window is empty (start equals end)")
        return value

    @model_validator(mode="after")
    def _url_with_version(self) -> FirmwareSettings:
        if self.version and not self.url:
            raise ValueError("firmware.url is required when firmware.version is set")
        return self


class PhoneConfig(_Section):
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    accounts: list[Account] = Field(default_factory=list)
    sip: SipSettings = Field(default_factory=SipSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    dialplan: DialPlanSettings = Field(default_factory=DialPlanSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    phonebook: list[PhonebookEntry] = Field(default_factory=list)
    blf: list[BlfKey] = Field(default_factory=list, max_length=BLF_KEYS)
    action_urls: ActionUrlSettings = Field(default_factory=ActionUrlSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    board: BoardSettings = Field(default_factory=BoardSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    firmware: FirmwareSettings = Field(default_factory=FirmwareSettings)

    @model_validator(mode="after")
    def _dial_plan_compiles(self) -> PhoneConfig:

        try:
            DigitMap(self.dialplan.digit_map)
        except DigitMapError as exc:
            raise ValueError(f"dialplan.digit_map: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _blf_lines_exist(self) -> PhoneConfig:
        for index, key in enumerate(self.blf):
            if key.account >= len(self.accounts):
                raise ValueError(
                    f"blf[{index}].account: {key.account} names no account "
                    f"(there are {len(self.accounts)})"
                )
        return self

    # --- serialisation -------------------------------------------------------------------------

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json"))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def redacted_json(self) -> str:
        """JSON for logs: every secret (SIP passwords, tokens) replaced by whether it is set."""
        data = self.model_dump(mode="json")
        for account in data["accounts"]:
            account["password"] = REDACTED if account["password"] else ""
        for section, key in SECRET_KEYS:
            if data[section][key]:
                data[section][key] = REDACTED
        return json.dumps(data, sort_keys=True)


# --- what a provisioning server may set ------------------------------------------------------

# Sections that belong to the phone alone: how it is reached and how it finds its server.
PHONE_LOCAL_SECTIONS = ("provisioning", "control")
# Keys that name the phone's own addresses, devices or files. A server that could set them could
# open a way into the phone (a ``socket://`` serial console dials out and hands over a console; an
# ALSA ``file`` PCM writes wherever it is told), and only the phone knows what exists on it. The
# server refuses them; a phone applying a provisioned config keeps its own values.
PHONE_LOCAL_KEYS: tuple[tuple[str, str], ...] = (
    ("sip", "bind_address"),
    ("sip", "tls_ca_file"),
    ("sip", "tls_cert_file"),
    ("sip", "tls_key_file"),
    ("directory", "tls_ca_file"),
    ("audio", "capture"),
    ("audio", "playback"),
    ("board", "profile"),
    ("board", "serial_console"),
)
# On a simulator several phones share one PC, so the SIP port is the PC's to choose as well.
SIM_LOCAL_KEYS: tuple[tuple[str, str], ...] = (("sip", "port"),)


def phone_local_keys(simulated: bool = False) -> tuple[tuple[str, str], ...]:
    return PHONE_LOCAL_KEYS + (SIM_LOCAL_KEYS if simulated else ())


def provisioned_local_keys(provisioned: PhoneConfig, simulated: bool = False) -> list[str]:
    """Dotted names of the phone-local keys a provisioned config sets (to other than the
    default): a server that sends them is misconfigured, or worse."""
    defaults = PhoneConfig()
    return [
        f"{section}.{key}"
        for section, key in phone_local_keys(simulated)
        if getattr(getattr(provisioned, section), key) != getattr(getattr(defaults, section), key)
    ]


def with_local_settings(
    local: PhoneConfig, provisioned: PhoneConfig, simulated: bool = False
) -> tuple[PhoneConfig, list[str]]:
    """``provisioned`` with the phone's own local sections and keys put back, and the local keys
    it tried to set (ignored)."""
    data = provisioned.model_dump(mode="json")
    mine = local.model_dump(mode="json")
    for section in PHONE_LOCAL_SECTIONS:
        data[section] = mine[section]
    for section, key in phone_local_keys(simulated):
        data[section][key] = mine[section][key]
    return PhoneConfig.model_validate(data), provisioned_local_keys(provisioned, simulated)


def format_validation_errors(exc: ValidationError, unknown: str = "unknown key") -> list[str]:
    """One ``path: problem`` line per pydantic error, paths written as ``accounts[0].transport``.

    A model-level check has no path of its own: its message already names the keys, one per line.
    """
    problems = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: {unknown}")
        elif err["type"] == "value_error" and not path:
            problems += msg.split("\n")
        else:
            problems.append(f"{path or '(top level)'}: {msg}")
    return problems


def parse_config(data: dict[str, Any], source: str = "config") -> PhoneConfig:
    """Validate a decoded config; raise ConfigError naming every bad key."""
    try:
        return PhoneConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_errors(exc), source) from None


def parse_toml(text: str, source: str = "config") -> PhoneConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    return parse_config(data, source)


def load_config(path: str | Path) -> PhoneConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["file not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(path)) from None
    return parse_toml(text, str(path))


def save_config(config: PhoneConfig, path: str | Path) -> None:
    """Write the config so that a power loss leaves either the old or the new file, never a mix."""
    atomic_write_bytes(Path(path), config.to_toml().encode("utf-8"))
