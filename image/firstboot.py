"""First boot, on the phone: turn the seed on the boot partition into state on the data partition.

Run by /usr/local/sbin/offhook-firstboot as ``python -m offhook.image.firstboot --seed F --data D``.
Everything is written with atomic writes before the seed is deleted, so a power cut at any point
leaves either the seed (applied again on the next boot) or the finished state.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from offhook.contract.atomic import atomic_write_text
from offhook.contract.config import ConfigError, PhoneConfig, load_config, save_config
from offhook.contract.logs import kv
from offhook.image.seed import Seed, SeedError, load_seed

log = logging.getLogger("offhook.firstboot")


def wpa_supplicant_conf(seed: Seed) -> str:
    assert seed.wifi is not None
    return (
        "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\n"
        f"country={seed.wifi.country}\n"
        "network={\n"
        f'    ssid="{seed.wifi.ssid}"\n'
        f'    psk="{seed.wifi.psk}"\n'
        "}\n"
    )


def apply_seed(seed: Seed, data: Path) -> Path:
    """Write phone config, hostname, Wi-Fi and SSH keys under ``data``; return the config path."""
    state = data / "offhook"
    system = state / "system"
    config_path = state / "phone.toml"
    base: PhoneConfig | None = None
    if config_path.exists():
        try:
            base = load_config(config_path)  # a re-seed keeps what was configured since
        except ConfigError as exc:
            log.warning("existing config unreadable, replaced by seed", extra=kv(error=exc))
    save_config(seed.phone_config(base), config_path)
    atomic_write_text(system / "hostname", seed.hostname + "\n", mode=0o644)
    if seed.wifi is not None:
        atomic_write_text(system / "wpa_supplicant-wlan0.conf", wpa_supplicant_conf(seed))
    if seed.ssh.authorized_keys:
        keys = "".join(k + "\n" for k in seed.ssh.authorized_keys)
        atomic_write_text(system / "authorized_keys", keys, mode=0o600)
    return config_path


def remove_seed(path: Path) -> None:
    """Overwrite, then delete the seed: it carries tokens and passwords."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m offhook.image.firstboot")
    parser.add_argument("--seed", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("/data"))
    parser.add_argument("--keep-seed", action="store_true", help="do not delete the seed")
    args = parser.parse_args(argv)
    try:
        seed = load_seed(args.seed)
    except SeedError as exc:
        # A bad seed stays where it is so it can be read and fixed from a PC.
        log.error("seed rejected, not applied", extra=kv(error=exc))
        return 1
    config = apply_seed(seed, args.data)
    log.info("seed applied", extra=kv(hostname=seed.hostname, config=config))
    if not args.keep_seed:
        remove_seed(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
