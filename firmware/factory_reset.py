"""Factory reset: the phone's data partition back to what a freshly flashed card has.

Everything the phone wrote under its data directory goes (config, provisioning credential and
pinned CA, cached configs, call history, volumes, the outbox, the kept machine-id and hostname):
only the image stays. The phone then starts with a default config, so it looks for its
provisioning server again (zero-touch discovery).

A power cut must not leave half a reset, and the data directory itself may not be renamed (on the
image it is the service's only writable path, a bind mount). So the reset first makes the
marker directory ``.factory-reset`` inside it (synced), moves every entry into it, writes the
default config and deletes the marker with what it holds. ``finish_interrupted``, called by the
phone process before it reads its config, completes a reset the power cut interrupted.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from offhook.contract.config import PhoneConfig, save_config
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

PENDING = ".factory-reset"
CONFIG_NAME = "phone.toml"


class FactoryResetError(OffhookError, RuntimeError):
    """The reset could not be done; the message names the path and the reason."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FactoryResetter:
    """The real adapter of the settings menu's factory reset (ResetPort in firmware/ports.py).

    ``data_dir`` is the phone's directory on the data partition (``/data/offhook`` on the image):
    everything in it goes, then ``phone.toml`` holds the defaults.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pending = data_dir / PENDING

    def reset(self) -> None:
        data = self.data_dir
        if not data.is_dir():
            raise FactoryResetError(f"{data}: not a directory")
        try:
            self.pending.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(data)  # from here on the reset completes, whatever happens
            self._complete()
        except OSError as exc:
            raise FactoryResetError(f"{exc.filename or data}: {exc.strerror or exc}") from exc
        log.warning("factory reset done", extra=kv(data_dir=data))

    def _complete(self) -> None:
        data = self.data_dir
        for entry in list(data.iterdir()):
            if entry.name == PENDING:
                continue
            dest = self.pending / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)  # moved there by a reset interrupted before
            os.replace(entry, dest)
        _fsync_dir(data)
        save_config(PhoneConfig(), data / CONFIG_NAME)
        shutil.rmtree(self.pending)
        _fsync_dir(data)

    def finish_interrupted(self) -> bool:
        """Complete a reset a power cut interrupted; True if there was one."""
        if not self.pending.is_dir():
            return False
        try:
            self._complete()
        except OSError as exc:
            raise FactoryResetError(f"{exc.filename or self.data_dir}: {exc.strerror}") from exc
        log.warning("interrupted factory reset finished", extra=kv(data_dir=self.data_dir))
        return True
