"""``offhook server`` with the inline config-poll protocol off (OFFHOOK_POLL_FAST_PATH=0, as when
the installed uvicorn does not fit provisioning.uvicorn_contract): it says so in its log, runs
uvicorn's own protocol, and a phone's polls get the same answers as with the fast path on."""

from __future__ import annotations

from pathlib import Path

import httpx

from offhook.provisioning.uvicorn_contract import FAST_PATH_ENV
from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer

CONFIG = "/api/v1/device/config"
OFF_MESSAGE = "config poll fast path off"
VARYING = {"date", "server"}  # differ between any two answers


def _answer(reply: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in reply.headers.items() if k not in VARYING}
    return reply.status_code, headers, reply.content


def _polls(device: DeviceCredential) -> list[tuple[int, dict[str, str], bytes]]:
    """A phone's polls: the config, the same revision again (304), and a wrong secret (401)."""
    with device.client() as client:
        first = client.get(CONFIG)
        assert first.status_code == 200, first.text
        again = client.get(CONFIG, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304, again.text
        forged = DeviceCredential(device.base_url, device.device_id, "x" * 43, device.mac)
        refused = client.get(CONFIG, headers={"Authorization": forged.authorization})
        assert refused.status_code == 401, refused.text
        return [_answer(first), _answer(again), _answer(refused)]


def test_server_without_the_fast_path_says_so_and_answers_polls_the_same(tmp_path: Path) -> None:
    server = ProvisioningServer(tmp_path, env={FAST_PATH_ENV: "0"})
    server.start()
    try:
        assert OFF_MESSAGE in server.log_text()
        device = server.enroll("02:00:00:00:0f:01")
        plain = _polls(device)
        server.extra_env[FAST_PATH_ENV] = "1"
        server.restart()
        assert server.log_text().count(OFF_MESSAGE) == 1  # the second run has it on
        assert _polls(device) == plain
    finally:
        server.stop()
