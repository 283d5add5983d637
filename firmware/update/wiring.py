"""The update service as the phone process builds it: RAUC through its CLI, bundles fetched from
the provisioning server with the device credential, idleness and health read from the phone.

Only on a card with RAUC configured (``/etc/rauc/system.conf``); a simulator has none. A card
without a provisioning server gets no updates but still runs the service: GRUB marks the slot it
boots as tried, and only the service marks it good again, so without it the slot watchdog would
mark a healthy phone's slot bad and reboot it every 15 minutes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from offhook.contract.logs import kv
from offhook.firmware.provisioning.server_api import basic_auth
from offhook.firmware.update.download import HttpBundleFetcher
from offhook.firmware.update.rauc_cli import RaucCli
from offhook.firmware.update.service import UpdateService

if TYPE_CHECKING:
    from offhook.contract.config import PhoneConfig
    from offhook.firmware.provisioning import ProvisioningClient
    from offhook.firmware.runtime import Runtime

log = logging.getLogger("offhook.update")

SYSTEM_CONF = Path("/etc/rauc/system.conf")
CONTROL_PROBE_TIMEOUT_S = 5.0


def phone_idle(snapshot: dict) -> bool:
    """No call (ringing, dialling or connected) and the handset down."""
    return not snapshot.get("calls") and snapshot.get("handset") == "down"


def all_registered(snapshot: dict) -> bool:
    lines = snapshot.get("registration") or []
    return bool(lines) and all(line.get("registered") for line in lines)


def control_answers(listen: str, token: str) -> bool:
    """The local control API answers ``GET /api/v1/state`` (what a helpdesk would use)."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "", "[::]"):
        host = "127.0.0.1"
    request = urllib.request.Request(f"http://{host}:{port}/api/v1/state")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=CONTROL_PROBE_TIMEOUT_S) as response:
            json.loads(response.read() or b"{}")
            return response.status == 200
    except (OSError, ValueError):
        return False


def unreported(kind: str, record: dict) -> None:
    """Update steps of a phone with no server to report to: the journal has them."""
    log.info(
        "update step not reported: no provisioning server",
        extra=kv(kind=kind, type=record.get("type", ""), detail=record.get("detail", "")),
    )


def systemctl_reboot() -> None:
    subprocess.run(["systemctl", "reboot"], check=False)


def update_service(
    config: PhoneConfig,
    state_dir: Path,
    provisioning: ProvisioningClient | None,
    runtime: Runtime,
    running_version: str,
    system_conf: Path = SYSTEM_CONF,
) -> UpdateService | None:
    if not system_conf.is_file():
        return None
    client = provisioning

    def authorization() -> str | None:
        credential = client.enrollment.credential() if client is not None else None
        return basic_auth(credential.device_id, credential.secret) if credential else None

    def health() -> tuple[bool, bool]:
        snapshot = runtime.snapshot()
        return all_registered(snapshot), control_answers(
            config.control.listen, config.control.token
        )

    return UpdateService(
        state_dir,
        RaucCli(),
        HttpBundleFetcher(
            config.provisioning.url, authorization, client.pinned_ca if client else None
        ),
        enqueue=client.enqueue if client is not None else unreported,
        idle=lambda: phone_idle(runtime.snapshot()),
        health=health,
        reboot=systemctl_reboot,
        running_version=running_version,
        timezone=config.device.timezone,
    )
