"""Settings inheritance and rendering against the phone's schema, on a migrated SQLite DB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from offhook.contract.config import ConfigError, parse_config
from offhook.provisioning import operations as ops
from offhook.provisioning.crypto import KeyRing, new_key_line
from offhook.provisioning.db import Database
from offhook.provisioning.models import Device
from offhook.provisioning.render import (
    SettingsError,
    deep_merge,
    render_device,
    set_dotted,
    validate_settings,
)

ACTOR = ops.Actor("test:render")


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing.parse(new_key_line(), "test")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def test_deep_merge_and_dotted_keys() -> None:
    base = {"audio": {"tone_plan": "us", "ring_volume": 50}, "sip": {"codecs": ["PCMU"]}}
    merged = deep_merge(base, {"audio": {"tone_plan": "uk"}, "sip": {"codecs": ["G722"]}})
    assert merged == {"audio": {"tone_plan": "uk", "ring_volume": 50}, "sip": {"codecs": ["G722"]}}
    assert base["audio"]["tone_plan"] == "us"  # inputs untouched
    assert set_dotted({}, "audio.speaker_volume", "55") == {"audio": {"speaker_volume": 55}}
    assert set_dotted({}, "features.dnd", "true") == {"features": {"dnd": True}}
    with pytest.raises(SettingsError, match=r"audio\.tone_plan"):
        set_dotted({}, "audio.tone_plan", "mars")
    with pytest.raises(SettingsError, match="unknown key"):
        set_dotted({}, "audio.bass_boost", 3)
    with pytest.raises(SettingsError, match=r"section\.key"):
        set_dotted({}, "audio", 3)
    with pytest.raises(SettingsError, match="manage SIP accounts as lines"):
        validate_settings({"accounts": []})
    with pytest.raises(SettingsError, match="stays on the phone"):
        validate_settings({"provisioning": {"url": "https://x"}})


def test_inheritance_order_templates_and_lines(db: Session, keys: KeyRing) -> None:
    ops.change_settings(
        db,
        ACTOR,
        "fleet",
        set_values={"audio.tone_plan": "uk", "audio.ring_volume": 11, "sip.codecs": ["PCMU"]},
    )
    ops.create_group(db, ACTOR, "emea", "site", settings={"audio": {"ring_volume": 22}})
    ops.create_group(db, ACTOR, "london", parent="emea", settings={"audio": {"tone_plan": "eu"}})
    ops.create_template(db, ACTOR, "loud", {"audio": {"ring_volume": 99, "speaker_volume": 90}})
    ops.attach_template(db, ACTOR, "london", "loud")
    device = ops.add_device(db, ACTOR, "b8:27:eb:aa:bb:cc", name="reception", group="london")
    ops.change_settings(db, ACTOR, "device", device.id, set_values={"audio.speaker_volume": 5})
    ops.add_line(
        db,
        keys,
        ACTOR,
        device.id,
        extension="1001",
        registrar="pbx.local:5060",
        password="pw-1001",
        display_name="Reception",
    )
    db.flush()

    device = db.get(Device, device.id)
    rendered = render_device(db, device, keys)
    config = json.loads(rendered.body)
    assert config["audio"]["tone_plan"] == "eu"  # london beats fleet
    assert config["audio"]["ring_volume"] == 99  # london's template beats emea
    assert config["audio"]["speaker_volume"] == 5  # device beats the template
    assert config["sip"]["codecs"] == ["PCMU"]  # fleet default kept
    assert config["device"]["name"] == "reception"
    assert config["accounts"] == [
        parse_config(
            {
                "accounts": [
                    {
                        "user": "1001",
                        "domain": "pbx.local:5060",
                        "password": "pw-1001",
                        "display_name": "Reception",
                    }
                ]
            }
        ).model_dump(mode="json")["accounts"][0]
    ]
    assert "provisioning" not in config and "control" not in config
    assert rendered.etag.startswith(f'"{device.revision}-')

    # Every change bumps the revision of exactly the affected devices.
    other = ops.add_device(db, ACTOR, "b8:27:eb:aa:bb:cd", group="emea")
    outside = ops.add_device(db, ACTOR, "b8:27:eb:aa:bb:ce")
    changed = ops.change_settings(db, ACTOR, "group", "emea", set_values={"features.dnd": True})
    assert sorted(changed) == sorted([device.id, other.id])
    assert outside.id not in changed
    assert ops.update_template(db, ACTOR, "loud", settings={"audio": {"ring_volume": 1}}) == [
        device.id
    ]
    assert (
        len(
            ops.change_settings(db, ACTOR, "fleet", set_values={"dialplan.interdigit_timeout_s": 3})
        )
        == 3
    )


def test_invalid_merged_config_is_caught_on_the_server(db: Session, keys: KeyRing) -> None:
    device = ops.add_device(db, ACTOR, "b8:27:eb:00:00:01")
    # Bypass validation (as a hand-edited database would): the render must refuse it.
    device.settings = {"audio": {"sample_rate": 12345}}
    db.flush()
    with pytest.raises(ConfigError, match=r"audio\.sample_rate"):
        render_device(db, device, keys)
    with pytest.raises(ops.OperationError, match="transport"):
        ops.add_line(db, keys, ACTOR, device.id, extension="1", registrar="x", transport="sctp")
    with pytest.raises(ops.OperationError, match="user"):
        ops.add_line(db, keys, ACTOR, device.id, extension="bad user", registrar="pbx")
    with pytest.raises(ops.OperationError, match="nested inside itself"):
        ops.create_group(db, ACTOR, "a")
        ops.create_group(db, ACTOR, "b", parent="a")
        ops.update_group(db, ACTOR, "a", parent="b")


def test_inherited_settings_cache_follows_every_change(db: Session, keys: KeyRing) -> None:
    from offhook.provisioning.render import InheritedCache

    cache = InheritedCache()
    ops.create_group(db, ACTOR, "site", "site", settings={"audio": {"ring_volume": 10}})
    device = ops.add_device(db, ACTOR, "b8:27:eb:00:00:09", group="site")
    db.flush()

    def ring() -> int:
        return json.loads(render_device(db, db.get(Device, device.id), keys, cache).body)["audio"][
            "ring_volume"
        ]

    assert ring() == 10 and ring() == 10  # second render from the cache
    ops.change_settings(db, ACTOR, "group", "site", set_values={"audio.ring_volume": 20})
    db.flush()
    assert ring() == 20
    ops.create_template(db, ACTOR, "t", {"audio": {"speaker_volume": 1}})
    ops.attach_template(db, ACTOR, "site", "t")
    db.flush()
    assert (
        json.loads(render_device(db, db.get(Device, device.id), keys, cache).body)["audio"][
            "speaker_volume"
        ]
        == 1
    )
    ops.change_settings(db, ACTOR, "fleet", set_values={"audio.tone_plan": "eu"})
    db.flush()
    assert (
        json.loads(render_device(db, db.get(Device, device.id), keys, cache).body)["audio"][
            "tone_plan"
        ]
        == "eu"
    )


def test_phone_local_keys_stored_before_are_never_rendered(db: Session, keys: KeyRing) -> None:
    device = ops.add_device(db, ACTOR, "b8:27:eb:00:00:02")
    # stored by a server that did not refuse them yet (or a hand-edited database)
    device.settings = {
        "board": {"serial_console": "socket://203.0.113.7:4444", "display_rotate": 2},
        "sip": {"tls_key_file": "/etc/shadow", "codecs": ["PCMU"]},
        "audio": {"playback": "file:'/data/offhook/phone.toml'"},
    }
    db.flush()
    body = json.loads(render_device(db, device, keys).body)
    assert body["board"]["serial_console"] == "" and body["board"]["display_rotate"] == 2
    assert body["sip"]["tls_key_file"] == "" and body["sip"]["codecs"] == ["PCMU"]
    assert body["audio"]["playback"] == "default"
    with pytest.raises(SettingsError, match=r"board\.serial_console.*stays on the phone"):
        validate_settings({"board": {"serial_console": "/dev/ttyS1"}})
