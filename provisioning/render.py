"""Settings inheritance and config rendering.

Order (later wins): fleet defaults -> each group from the root site down to the device's group
(per group: its templates by name, then the group's own settings) -> the device's name -> the
device's own settings -> the device's lines as ``accounts``. The result is validated with
``contract.config.parse_config`` - the phone's own validator - so the server never serves a config
the phone would reject. ``provisioning`` and ``control`` stay local to the phone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from offhook.contract.config import (
    PHONE_LOCAL_KEYS,
    PHONE_LOCAL_SECTIONS,
    ConfigError,
    PhoneConfig,
    parse_config,
)
from offhook.contract.errors import OffhookError
from offhook.provisioning.crypto import KeyRing
from offhook.provisioning.firmware_targets import TARGET_KEYS, firmware_section
from offhook.provisioning.models import Device, FleetDefaults, Group, Line, Template

LOCAL_SECTIONS = PHONE_LOCAL_SECTIONS
# Keys naming the phone's own addresses, devices and files (firmware.config.PHONE_LOCAL_KEYS).
LOCAL_KEYS = PHONE_LOCAL_KEYS
# Set through lines (passwords encrypted), never through settings.
SERVER_MANAGED = ("accounts",)
MAX_GROUP_DEPTH = 32
# Stand-in lines a partial config's BLF keys may name (a phone has far fewer lines).
BLF_LINES_CHECKED = 16


class SettingsError(OffhookError, ValueError):
    """Settings that cannot be stored; the message names the key."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge key by key; any other value (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_settings(partial: dict[str, Any], where: str = "settings") -> dict[str, Any]:
    """Check a partial PhoneConfig against the schema; returns it unchanged."""
    if not isinstance(partial, dict):
        raise SettingsError(f"{where}: must be a JSON object")
    for key in (*LOCAL_SECTIONS, *SERVER_MANAGED):
        if key in partial:
            hint = "manage SIP accounts as lines" if key == "accounts" else "it stays on the phone"
            raise SettingsError(f"{where}.{key}: cannot be set by the server ({hint})")
    for section, key in LOCAL_KEYS:
        if isinstance(partial.get(section), dict) and key in partial[section]:
            raise SettingsError(
                f"{where}.{section}.{key}: cannot be set by the server (it names the phone's own"
                " address, device or file; it stays on the phone)"
            )
    firmware = partial.get("firmware")
    for key in TARGET_KEYS:
        if isinstance(firmware, dict) and key in firmware:
            raise SettingsError(
                f"{where}.firmware.{key}: set by firmware rollouts and pins, not by settings"
                " (offhook fleet rollout / firmware pin)"
            )
    try:
        parse_config(_with_lines_for_blf(partial), where)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    return partial


def _with_lines_for_blf(partial: dict[str, Any]) -> dict[str, Any]:
    """A partial config's BLF keys name lines (``account``) that only the device has: stand-in
    accounts let the partial pass, and the device's render checks them against its lines."""
    keys = partial.get("blf")
    if not isinstance(keys, list) or not keys:
        return partial
    numbers = [k.get("account", 0) for k in keys if isinstance(k, dict)]
    wanted = max([n for n in numbers if isinstance(n, int)] + [0]) + 1
    stand_in = {"user": "line", "domain": "line.invalid"}
    return {**partial, "accounts": [stand_in] * min(wanted, BLF_LINES_CHECKED)}


def set_dotted(settings: dict[str, Any], dotted: str, raw_value: Any) -> dict[str, Any]:
    """Return a copy of ``settings`` with ``dotted`` (e.g. ``audio.tone_plan``) set to the value
    as the schema parses it (``"80"`` becomes ``80`` for an int field)."""
    parts = dotted.split(".")
    whole_list = len(parts) == 1 and isinstance(raw_value, list)  # phonebook, blf
    if (len(parts) < 2 and not whole_list) or not all(parts):
        raise SettingsError(f"{dotted!r}: use section.key, e.g. audio.tone_plan")
    candidate = copy.deepcopy(settings)
    node = candidate
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SettingsError(f"{dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = raw_value
    validate_settings(candidate)
    # Store the schema's parsed value (types coerced), not the raw text.
    parsed: Any = parse_config(_with_lines_for_blf(candidate)).model_dump(mode="json")
    for part in parts:
        parsed = parsed[part]
    node[parts[-1]] = parsed
    return candidate


def unset_dotted(settings: dict[str, Any], dotted: str) -> dict[str, Any]:
    candidate = copy.deepcopy(settings)
    parts = dotted.split(".")
    node: Any = candidate
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return candidate
    if isinstance(node, dict):
        node.pop(parts[-1], None)
    return candidate


def group_chain(db: Session, group_id: int | None) -> list[Group]:
    """Groups from the root site down to ``group_id``."""
    chain: list[Group] = []
    seen: set[int] = set()
    while group_id is not None:
        if group_id in seen or len(chain) >= MAX_GROUP_DEPTH:
            raise SettingsError(f"group {group_id}: parent chain loops or is too deep")
        seen.add(group_id)
        group = db.get(Group, group_id)
        if group is None:
            break
        chain.append(group)
        group_id = group.parent_id
    chain.reverse()
    return chain


def fleet_defaults(db: Session) -> FleetDefaults:
    row = db.get(FleetDefaults, 1)
    if row is None:  # the initial migration creates it; recreate if someone deleted it
        row = FleetDefaults(id=1, settings={})
        db.add(row)
        db.flush()
    return row


class InheritedCache:
    """Merged fleet + group-chain settings by (group id, settings epoch). The epoch changes with
    any fleet/group/template change in any process, so an entry never goes stale."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[int | None, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int | None, int]) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple[int | None, int], value: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def inherited_settings(
    db: Session,
    group_id: int | None,
    cache: InheritedCache | None = None,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Fleet defaults merged with the group chain (each group: templates, then its own).
    ``epoch``: the settings epoch read in the same statement as the device being rendered, so
    a cache hit needs no query of its own."""
    if cache is not None and epoch is not None:
        hit = cache.get((group_id, epoch))
        if hit is not None:
            return hit
    row = db.execute(
        select(FleetDefaults.settings_epoch, FleetDefaults.settings).where(FleetDefaults.id == 1)
    ).first()
    epoch, fleet = (row[0], row[1]) if row is not None else (-1, fleet_defaults(db).settings)
    if cache is not None and (hit := cache.get((group_id, epoch))) is not None:
        return hit
    merged = copy.deepcopy(fleet or {})
    for group in group_chain(db, group_id):
        for template in group.templates:
            merged = deep_merge(merged, template.settings or {})
        merged = deep_merge(merged, group.settings or {})
    if cache is not None:
        cache.put((group_id, epoch), merged)
    return merged


INHERITED_MODELS = (FleetDefaults, Group, Template)


@event.listens_for(Session, "before_flush")
def _bump_settings_epoch(session: Session, _context: Any, _instances: Any) -> None:
    """Any flushed change to fleet defaults, groups or templates bumps the settings epoch."""
    changed = [*session.new, *session.deleted]
    changed += [o for o in session.dirty if session.is_modified(o)]
    if any(isinstance(obj, INHERITED_MODELS) for obj in changed):
        # Connection-level execute: no autoflush (we are inside the flush machinery).
        session.connection().execute(
            update(FleetDefaults)
            .where(FleetDefaults.id == 1)
            .values(settings_epoch=FleetDefaults.settings_epoch + 1)
        )


def effective_settings(
    db: Session, device: Device, cache: InheritedCache | None = None, epoch: int | None = None
) -> dict[str, Any]:
    merged = inherited_settings(db, device.group_id, cache, epoch)
    if device.name:
        merged = deep_merge(merged, {"device": {"name": device.name}})
    return deep_merge(merged, device.settings or {})


def line_account(line: Line, keys: KeyRing) -> dict[str, Any]:
    password = keys.decrypt(line.password_enc, "lines.password") if line.password_enc else ""
    return {
        "user": line.extension,
        "password": password,
        "domain": line.registrar,
        "transport": line.transport,
        "display_name": line.display_name,
        "auth_user": line.auth_user,
        "enabled": line.enabled,
        "outbound_proxy": line.outbound_proxy,
    }


@dataclass(frozen=True)
class Rendered:
    revision: int
    etag: str  # with quotes, as sent in the header
    body: bytes
    # Encoded reply heads by status, filled by the config path on first use (see config_path).
    wire: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)


def render_device(
    db: Session,
    device: Device,
    keys: KeyRing,
    cache: InheritedCache | None = None,
    epoch: int | None = None,
) -> Rendered:
    """Raises ConfigError when the merged settings are not a valid PhoneConfig. ``epoch``: see
    inherited_settings (it must come from the same snapshot as ``device``)."""
    settings = effective_settings(db, device, cache, epoch)
    lines = sorted(device.lines, key=lambda line: line.position)  # eager-loaded on the hot path
    settings["accounts"] = [line_account(line, keys) for line in lines]
    for section in LOCAL_SECTIONS:
        settings.pop(section, None)
    for section, key in LOCAL_KEYS:  # stored before the server refused them: never served
        if isinstance(settings.get(section), dict):
            settings[section].pop(key, None)
    target = firmware_section(db, device.id)
    if target is not None:  # the rollout's window wins over the settings' one
        settings["firmware"] = {**(settings.get("firmware") or {}), **target}
    config: PhoneConfig = parse_config(settings, f"device {device.id}")
    data = config.model_dump(mode="json", exclude=set(LOCAL_SECTIONS))
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256(body).hexdigest()[:16]
    return Rendered(device.revision, f'"{device.revision}-{digest}"', body)


class RenderCache:
    """Rendered configs by (device id, revision); bounded LRU, thread-safe. A revision bump is
    the invalidation, so entries never go stale."""

    def __init__(self, capacity: int = 20000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], Rendered] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, device_id: str, revision: int) -> Rendered | None:
        with self._lock:
            item = self._items.get((device_id, revision))
            if item is not None:
                self._items.move_to_end((device_id, revision))
            return item

    def put(self, device_id: str, rendered: Rendered) -> None:
        with self._lock:
            self._items[(device_id, rendered.revision)] = rendered
            self._items.move_to_end((device_id, rendered.revision))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


# --- revision bumps: every change that affects a rendered config calls one of these ------------


def subtree_group_ids(db: Session, group_id: int) -> list[int]:
    ids = [group_id]
    frontier = [group_id]
    while frontier:
        children = list(db.scalars(select(Group.id).where(Group.parent_id.in_(frontier))))
        children = [c for c in children if c not in ids]
        ids.extend(children)
        frontier = children
    return ids


def bump_devices(db: Session, device_ids: list[str]) -> list[str]:
    if device_ids:
        db.execute(
            update(Device)
            .where(Device.id.in_(device_ids))
            .values(revision=Device.revision + 1)
            .execution_options(synchronize_session=False)
        )
        db.expire_all()  # loaded Device objects would otherwise keep their old revision
    return device_ids


def bump_group(db: Session, group_id: int) -> list[str]:
    groups = subtree_group_ids(db, group_id)
    ids = list(db.scalars(select(Device.id).where(Device.group_id.in_(groups))))
    return bump_devices(db, ids)


def bump_all(db: Session) -> list[str]:
    db.execute(
        update(Device)
        .values(revision=Device.revision + 1)
        .execution_options(synchronize_session=False)
    )
    db.expire_all()
    return list(db.scalars(select(Device.id)))
