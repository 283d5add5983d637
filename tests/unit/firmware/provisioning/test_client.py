"""ProvisioningClient without a server: cached config at start-up, backoff, validate/apply/rollback.

The server never serves a schema-invalid config (it validates with the same schema), so the
rejection path is driven here with the body a broken or newer server would send.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig, ProvisioningSettings, parse_config
from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient, effective_config
from offhook.firmware.provisioning.backoff import Backoff
from offhook.firmware.provisioning.server_api import ConfigReply
from offhook.firmware.provisioning.store import ConfigStore, StoredConfig

IDENTITY = DeviceIdentity(mac="b8:27:eb:00:00:01", serial="00000000abcdef01", model="offhook-pi4")


def provisioned(user: str, revision: int) -> dict:
    return {"device": {"name": f"rev {revision}"}, "accounts": [{"user": user, "domain": "pbx"}]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(base_s=0.02, cap_s=0.16)
        self.steps: list[tuple[float, float]] = []  # (ceiling, delay) per failure
        self.reached = threading.Event()

    def failed(self) -> float:
        delay = super().failed()
        self.steps.append((self.ceiling(), delay))
        if len(self.steps) >= 6:
            self.reached.set()
        return delay


class Runtime:
    """The runtime's side: records applies, fails those whose first account user is 'bad'."""

    def __init__(self) -> None:
        self.applied: list[PhoneConfig] = []
        self.event = threading.Event()

    def apply(self, config: PhoneConfig | None) -> str | None:
        self.applied.append(config)  # None: back to the phone's own config
        self.event.set()
        if config is not None and config.accounts and config.accounts[0].user == "bad":
            return "registration rejected: 403 Forbidden"
        return None


@pytest.fixture
def runtime() -> Runtime:
    return Runtime()


def make_client(tmp_path: Path, runtime: Runtime, backoff: Backoff | None = None):
    settings = ProvisioningSettings(url=f"http://127.0.0.1:{closed_port()}", poll_interval_s=10)
    return ProvisioningClient(
        settings,
        tmp_path / "state",
        IDENTITY,
        runtime.apply,
        lambda: {"lines": []},
        notify_host="127.0.0.1",
        backoff=backoff,
    )


def seed_lkg(tmp_path: Path, revision: int = 3) -> StoredConfig:
    stored = StoredConfig(f'"{revision}-x"', revision, parse_config(provisioned("1001", revision)))
    ConfigStore(tmp_path / "state" / "config").finish_apply(stored)
    return stored


def events(client: ProvisioningClient) -> list[dict]:
    return client.outbox.pending("events")


@pytest.fixture
def started() -> Iterator[list[ProvisioningClient]]:
    clients: list[ProvisioningClient] = []
    yield clients
    for client in clients:
        client.stop()


def test_server_down_runs_on_cached_config_and_backs_off(
    tmp_path: Path, runtime: Runtime, started: list
) -> None:
    lkg = seed_lkg(tmp_path)
    backoff = RecordingBackoff()
    client = make_client(tmp_path, runtime, backoff)
    started.append(client)
    client.start()
    assert runtime.event.wait(10)
    assert runtime.applied[0] == lkg.config  # the cached config, before any server contact
    assert backoff.reached.wait(20)
    client.stop()
    ceilings = [c for c, _ in backoff.steps[:6]]
    assert ceilings == [0.02, 0.04, 0.08, 0.16, 0.16, 0.16]  # doubling, then capped
    assert all(0 <= d <= c for c, d in backoff.steps)
    assert "unavailable" in client.last_error or "ConnectError" in client.last_error
    assert len(runtime.applied) == 1  # nothing else was applied while offline


def test_schema_invalid_config_is_rejected_and_reported(tmp_path: Path, runtime: Runtime) -> None:
    lkg = seed_lkg(tmp_path)
    client = make_client(tmp_path, runtime)
    bad = provisioned("1001", 4) | {"sip": {"codecs": ["opus"]}, "frobnicate": True}
    client.handle_config(ConfigReply(False, '"4-bad"', 4, bad))
    assert runtime.applied == []  # never handed to the runtime
    assert client.store.last_known_good() == lkg
    assert client.store.if_none_match() == '"4-bad"'  # next poll gets 304, not the same bad body
    [event] = events(client)
    assert event["type"] == "config_rejected" and event["config_revision"] == 4
    assert "sip.codecs" in event["detail"] and "frobnicate: unknown key" in event["detail"]
    client.handle_config(ConfigReply(False, '"5-x"', 5, ["not", "an", "object"]))
    assert events(client)[-1]["type"] == "config_rejected"


def test_config_whose_apply_fails_is_rolled_back(tmp_path: Path, runtime: Runtime) -> None:
    lkg = seed_lkg(tmp_path)
    client = make_client(tmp_path, runtime)
    client.handle_config(ConfigReply(False, '"4-y"', 4, provisioned("bad", 4)))
    assert [c.accounts[0].user for c in runtime.applied] == ["bad", "1001"]  # tried, restored
    assert runtime.applied[-1] == lkg.config
    assert client.store.last_known_good() == lkg
    [event] = events(client)
    assert event["type"] == "config_rolled_back"
    assert "registration rejected" in event["detail"] and "restored revision 3" in event["detail"]


def test_good_config_becomes_last_known_good(tmp_path: Path, runtime: Runtime) -> None:
    seed_lkg(tmp_path)
    client = make_client(tmp_path, runtime)
    client.handle_config(ConfigReply(False, '"4-z"', 4, provisioned("1004", 4)))
    lkg = client.store.last_known_good()
    assert lkg is not None and lkg.revision == 4 and client.config_revision == 4
    assert client.cached_config() == runtime.applied[-1]
    assert events(client)[0]["type"] == "config_applied"
    # an apply callback that raises counts as a failed apply, not a crash
    client._apply = lambda _config: 1 / 0  # type: ignore[method-assign]
    client.handle_config(ConfigReply(False, '"5-z"', 5, provisioned("1005", 5)))
    assert client.store.last_known_good().revision == 4  # type: ignore[union-attr]
    assert "ZeroDivisionError" in events(client)[-1]["detail"]


def test_config_that_kills_the_phone_twice_is_rejected_at_boot(
    tmp_path: Path, runtime: Runtime, started: list
) -> None:
    lkg = seed_lkg(tmp_path)
    store = ConfigStore(tmp_path / "state" / "config")
    crashy = StoredConfig('"4-crash"', 4, parse_config(provisioned("1004", 4)))
    store.begin_apply(crashy)
    store.begin_apply(crashy)  # two boots died while applying it
    client = make_client(tmp_path, runtime)
    started.append(client)
    client.start()
    assert runtime.event.wait(10)
    client.stop()
    assert runtime.applied[0] == lkg.config
    assert client.store.if_none_match() == '"4-crash"'
    assert events(client)[0]["type"] == "config_rolled_back"


def test_effective_config_keeps_local_provisioning_and_control() -> None:
    local = parse_config(
        {
            "provisioning": {"url": "https://prov.example.com", "poll_interval_s": 600},
            "control": {"listen": "0.0.0.0:8080", "token": "local-secret"},
            "device": {"name": "local name"},
        }
    )
    server = parse_config(provisioned("1001", 1))
    merged = effective_config(local, server)
    assert merged.device.name == "rev 1" and merged.accounts[0].user == "1001"
    assert merged.provisioning == local.provisioning and merged.control == local.control
    assert effective_config(local, None) is local


def test_bad_settings_are_refused(tmp_path: Path, runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="url is empty"):
        ProvisioningClient(ProvisioningSettings(), tmp_path, IDENTITY, runtime.apply, dict)
    https = ProvisioningSettings(url="https://prov.example.com")
    with pytest.raises(ValueError, match="ca_fingerprint is required"):
        ProvisioningClient(https, tmp_path, IDENTITY, runtime.apply, dict)
    with pytest.raises(ValueError, match="unknown record kind"):
        make_client(tmp_path, runtime).enqueue("calls", {})


def test_a_refused_first_config_goes_back_to_the_phones_own(
    tmp_path: Path, runtime: Runtime
) -> None:
    client = make_client(tmp_path, runtime)  # nothing provisioned yet: no last known good
    client.handle_config(ConfigReply(False, '"1-bad"', 1, provisioned("bad", 1)))
    # tried, then the phone's own config applied again: nothing of the refused one (its SIP
    # sockets, say) may stay in force
    assert [c.accounts[0].user if c else None for c in runtime.applied] == ["bad", None]
    assert client.store.last_known_good() is None
    [event] = events(client)
    assert event["type"] == "config_rolled_back"
    assert "registration rejected" in event["detail"]
    assert "restored the phone's own config" in event["detail"]


HOSTILE = {
    "board": {"serial_console": "socket://203.0.113.7:4444", "profile": "/tmp/evil.toml"},
    "sip": {
        "port": 5060,
        "bind_address": "0.0.0.0",
        "tls_key_file": "/data/offhook/provisioning/credential.json",
        "tls_cert_file": "/etc/shadow",
        "tls_ca_file": "/dev/zero",
    },
    "audio": {"playback": "file:'/data/offhook/phone.toml'", "capture": "file:'/dev/urandom'"},
}
LOCAL = {
    "board": {"serial_console": "", "profile": "offhook-v1"},
    "sip": {"port": 5071, "bind_address": "127.0.0.1"},
    "audio": {"playback": "null", "capture": "null"},
}


def test_phone_local_settings_from_a_server_are_ignored() -> None:
    local = parse_config(LOCAL)
    server = parse_config(provisioned("1001", 2) | HOSTILE)
    phone = effective_config(local, server)
    assert phone.board.serial_console == "" and phone.board.profile == "offhook-v1"
    assert phone.sip.bind_address == "127.0.0.1"
    assert (phone.sip.tls_key_file, phone.sip.tls_cert_file, phone.sip.tls_ca_file) == ("", "", "")
    assert (phone.audio.playback, phone.audio.capture) == ("null", "null")
    assert phone.sip.port == 5060  # a phone's SIP port is the server's to set...
    assert phone.accounts[0].user == "1001"  # and so is everything else
    sim = effective_config(local, server, simulated=True)
    assert sim.sip.port == 5071  # ...but several simulators share one PC


def test_ignored_phone_local_settings_are_reported(tmp_path: Path, runtime: Runtime) -> None:
    client = make_client(tmp_path, runtime)
    client.handle_config(ConfigReply(False, '"2-h"', 2, provisioned("1001", 2) | HOSTILE))
    [event] = events(client)
    assert event["type"] == "config_applied"
    for key in ("board.serial_console", "sip.tls_key_file", "audio.playback", "sip.bind_address"):
        assert key in event["detail"], event
    assert "sip.port" not in event["detail"]


def test_an_interrupted_apply_is_reported_with_how_the_phone_died(
    tmp_path: Path, runtime: Runtime, started: list
) -> None:
    seed_lkg(tmp_path)
    store = ConfigStore(tmp_path / "state" / "config")
    crashy = StoredConfig('"4-crash"', 4, parse_config(provisioned("1004", 4)))
    store.begin_apply(crashy)
    store.begin_apply(crashy)
    settings = ProvisioningSettings(url=f"http://127.0.0.1:{closed_port()}", poll_interval_s=10)
    client = ProvisioningClient(
        settings,
        tmp_path / "state",
        IDENTITY,
        runtime.apply,
        lambda: {"lines": []},
        notify_host="127.0.0.1",
        previous_exit="was killed by SIGSEGV",  # what the supervisor saw
    )
    started.append(client)
    client.start()
    assert runtime.event.wait(10)
    client.stop()
    [event] = events(client)
    assert event["type"] == "config_rolled_back"
    assert "interrupted 2 times" in event["detail"]
    assert "the last phone process was killed by SIGSEGV" in event["detail"]
