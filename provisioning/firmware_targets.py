"""What a device's config says about firmware: the ``[firmware]`` keys its rollout or pin sets.

Read by the config render (``provisioning.render``) from the device's ``device_firmware`` row,
which only ``provisioning.rollouts`` writes. Kept apart from both so the render does not
import the rollout logic (which itself bumps revisions through the render module).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.provisioning.models import DeviceFirmware, FirmwareRelease, Rollout

# The [firmware] keys only rollouts and pins set (docs/updates.md); settings may not.
TARGET_KEYS = ("version", "url", "sha256", "size", "rollout")
PIN = "pin"  # the ``rollout`` value of a pinned phone


def bundle_url(sha256: str) -> str:
    """Relative to the phone's provisioning.url (docs/updates.md)."""
    return f"/api/v1/device/firmware/{sha256}.raucb"


def firmware_section(db: Session, device_id: str) -> dict[str, Any] | None:
    """The ``[firmware]`` keys set for this device, or None when it is asked for nothing."""
    row = db.execute(
        select(
            FirmwareRelease.version,
            FirmwareRelease.sha256,
            FirmwareRelease.size,
            DeviceFirmware.rollout_id,
            DeviceFirmware.pinned_release_id,
            Rollout.maintenance_window,
        )
        .join(FirmwareRelease, FirmwareRelease.id == DeviceFirmware.release_id)
        .outerjoin(Rollout, Rollout.id == DeviceFirmware.rollout_id)
        .where(DeviceFirmware.device_id == device_id)
    ).first()
    if row is None:
        return None
    version, sha256, size, rollout_id, pinned, window = row
    section: dict[str, Any] = {
        "version": version,
        "url": bundle_url(sha256),
        "sha256": sha256,
        "size": size,
        "rollout": PIN if pinned is not None or rollout_id is None else str(rollout_id),
    }
    if window:
        section["maintenance_window"] = window
    return section
