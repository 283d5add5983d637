"""BLF in real simulated phones: ``offhook sim --headless`` processes on a Kamailio with its
presence modules. Alice watches Bob; Carol calls Bob; Alice's lamp (control API state and the
emulated board's LED) blinks, and her BLF key picks the call up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig
from offhook.firmware.devtools.certs import CertificateSet
from offhook.firmware.sim import SimPhone, sim_config, stop_all
from tests.e2e.conftest import dump_logs
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.tls import tls_certificates  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def presence_kamailio(
    tmp_path_factory: pytest.TempPathFactory,
    tls_certificates: CertificateSet,  # noqa: F811
) -> Iterator[KamailioServer]:
    server = KamailioServer(
        tmp_path_factory.mktemp("kam-presence"), tls_certificates, presence=True
    )
    for user, password in DEFAULT_USERS.items():
        server.add_user(user, password)
    with server:
        yield server


def _phone(directory: Path, name: str, user: str, kam: KamailioServer, **extra: object) -> SimPhone:
    config = sim_config(name, user, DEFAULT_USERS[user], kam.domain)
    config = PhoneConfig.model_validate({**config.model_dump(), **extra})
    phone = SimPhone(directory / name, config)
    phone.start()
    return phone


def lamp(state: dict) -> str:
    return str(state["blf"][0]["lamp"]) if state.get("blf") else ""


def test_a_sim_phone_sees_a_colleague_ring_and_picks_the_call_up(
    presence_kamailio: KamailioServer, tmp_path: Path
) -> None:
    kam = presence_kamailio
    phones: list[SimPhone] = []
    try:
        alice = _phone(tmp_path, "alice", "1001", kam, blf=[{"extension": "1002", "label": "Bob"}])
        bob = _phone(tmp_path, "bob", "1002", kam)
        phones += [alice, bob]
        alice.wait_registered(30)
        bob.wait_registered(30)
        alice.wait_for(lambda s: lamp(s) == "idle", 20, "subscribed to Bob")
        # the caller is a sim phone too (pjsua honours Replaces; baresip 1.0 does not: it
        # would take the pickup INVITE as a second call and leave Bob ringing)
        carol = _phone(tmp_path, "carol", "1003", kam)
        phones.append(carol)
        carol.wait_registered(30)
        carol.client.hook(True)
        carol.client.keys(list("1002#"))
        bob.wait_for(lambda s: s["screen"][:1] == ["Incoming call"], 20, "Bob rings")
        state = alice.wait_for(lambda s: lamp(s) == "ringing", 20, "Bob's lamp blinking")
        assert state["device"]["leds"]["blf1"] == "fast_blink"
        assert "Bob ringing" in state["screen"]
        alice.client.hook(True)
        alice.client.keys(["blf1"])
        talking = alice.wait_for(
            lambda s: [c["state"] for c in s["calls"]] == ["confirmed"], 20, "Alice talking"
        )
        assert "1003" in talking["calls"][0]["remote_uri"]
        carol.wait_for(
            lambda s: [c["state"] for c in s["calls"]] == ["confirmed"], 20, "Carol talking"
        )
        bob.wait_for(lambda s: not s["calls"], 20, "Bob's phone stops ringing")
        alice.wait_for(lambda s: lamp(s) == "idle", 20, "Bob idle again")
        alice.client.hook(False)
        carol.wait_for(lambda s: not s["calls"], 20, "the call ended")
    except Exception:
        print(dump_logs(phones))
        raise
    finally:
        stop_all(phones)
