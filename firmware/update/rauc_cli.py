"""RaucPort through the ``rauc`` command (which talks to the RAUC service over D-Bus)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from offhook.firmware.update.ports import BundleInfo, RaucError, RaucStatus, SlotState

INSTALL_TIMEOUT_S = 1800.0  # a slot on a slow SD card
COMMAND_TIMEOUT_S = 60.0


class RaucCli:
    """``conf``: the system.conf ``rauc info`` checks bundles with (it runs locally, not in the
    service); the phone's is /etc/rauc/system.conf, RAUC's default."""

    def __init__(
        self, rauc: str = "rauc", env: dict[str, str] | None = None, conf: Path | None = None
    ) -> None:
        self.rauc = rauc
        self.env = {**os.environ, **(env or {})}
        self.conf = conf

    def _run(self, args: list[str], timeout: float = COMMAND_TIMEOUT_S) -> str:
        try:
            proc = subprocess.run(
                [self.rauc, *args], capture_output=True, text=True, check=False,
                timeout=timeout, env=self.env,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RaucError(f"rauc {args[0]}: {exc}") from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise RaucError(f"rauc {' '.join(args[:2])} failed: {' | '.join(lines[-4:])}")
        return proc.stdout

    def status(self) -> RaucStatus:
        data = json.loads(_json_part(self._run(["status", "--detailed", "--output-format=json"])))
        slots = []
        for entry in data.get("slots", []):
            for name, slot in entry.items():
                bundle = (slot.get("slot_status") or {}).get("bundle") or {}
                slots.append(
                    SlotState(
                        name=name,
                        bootname=slot.get("bootname") or "",
                        state=slot.get("state") or "",
                        boot_good=slot.get("boot_status") == "good",
                        bundle_version=bundle.get("version") or "",
                    )
                )
        by_name = {s.name: s.bootname for s in slots}
        return RaucStatus(
            compatible=data.get("compatible", ""),
            booted=data.get("booted") or "",
            primary=by_name.get(data.get("boot_primary") or "", ""),
            slots=tuple(sorted(slots, key=lambda s: s.bootname)),
        )

    def info(self, bundle: Path) -> BundleInfo:
        try:
            conf = [f"--conf={self.conf}"] if self.conf else []
            text = self._run(["info", *conf, "--output-format=json", str(bundle)])
        except RaucError as exc:
            raise RaucError(str(exc), refused=True) from None
        data = json.loads(_json_part(text))
        return BundleInfo(compatible=data.get("compatible", ""), version=data.get("version", ""))

    def install(self, bundle: Path) -> None:
        self._run(["install", str(bundle)], timeout=INSTALL_TIMEOUT_S)

    def mark_good(self) -> None:
        self._run(["status", "mark-good", "booted"])
        durable()

    def mark_bad(self, which: str) -> None:
        if which not in ("booted", "other"):
            raise ValueError(f"mark_bad: {which!r} is neither 'booted' nor 'other'")
        self._run(["status", "mark-bad", which])
        durable()


def durable() -> None:
    """RAUC's grub backend rewrites grubenv with grub-editenv and syncs nothing: on the FAT boot
    partition the new state sat in the page cache, and a power cut within the writeback delay
    (seen in the QEMU update test) booted the slot as still "tried" - the fallback undoing a
    good update. sync(2) needs no write access to /boot/firmware (the phone's unit has it
    read-only)."""
    os.sync()


def _json_part(text: str) -> str:
    """RAUC may print messages before the JSON document."""
    start = text.find("{")
    if start < 0:
        raise RaucError(f"rauc printed no JSON: {text.strip()[:200]}")
    return text[start:]
