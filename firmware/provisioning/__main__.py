"""The provisioning client alone: ``python -m offhook.firmware.provisioning --state-dir DIR ...``.

For bring-up and field debugging (does this phone enroll, pin, fetch and report?) without the SIP
engine: applied configs are logged, not applied. Records to queue may be fed on stdin, one JSON
object per line: ``{"kind": "cdrs", "record": {...}}``. Runs until SIGTERM/SIGINT or stdin EOF
with ``--exit-on-eof``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from offhook.contract.config import PhoneConfig, ProvisioningSettings
from offhook.contract.logs import kv, setup_logging
from offhook.firmware.provisioning.client import ProvisioningClient
from offhook.firmware.provisioning.identity import DeviceIdentity

log = logging.getLogger("offhook.firmware.provisioning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m offhook.firmware.provisioning", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca-fingerprint", default="")
    p.add_argument("--token", default="", help="enrollment token")
    p.add_argument("--poll-interval", type=int, default=3600)
    p.add_argument("--notify-port", type=int, default=0)
    p.add_argument("--notify-host", default="0.0.0.0")
    p.add_argument("--mac", help="default: read from this Raspberry Pi")
    p.add_argument("--serial", help="default: read from this Raspberry Pi")
    p.add_argument("--model", default="offhook-pi")
    p.add_argument("--exit-on-eof", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("info", identifier="offhook-provisioning")
    settings = ProvisioningSettings(
        url=args.url,
        ca_fingerprint=args.ca_fingerprint,
        enrollment_token=args.token,
        poll_interval_s=args.poll_interval,
        notify_port=args.notify_port,
    )
    if args.mac and args.serial:
        identity = DeviceIdentity(mac=args.mac, serial=args.serial, model=args.model)
    else:
        identity = DeviceIdentity.from_pi()

    def apply(config: PhoneConfig | None) -> None:
        if config is None:
            log.info("config to apply: the phone's own (rollback before any provisioned config)")
            return
        # the log is no place for SIP passwords (journald keeps it, bug reports carry it)
        log.info("config to apply", extra=kv(config=config.redacted_json()))

    client = ProvisioningClient(
        settings, args.state_dir, identity, apply, dict, notify_host=args.notify_host
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    client.start()
    print(f"ready sip_contact={client.sip_contact}", flush=True)
    reader = threading.Thread(target=_feed, args=(client, done, args.exit_on_eof), daemon=True)
    reader.start()
    done.wait()
    client.stop()
    return 0


def _feed(client: ProvisioningClient, done: threading.Event, exit_on_eof: bool) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            client.enqueue(item["kind"], item["record"])
            print(f"queued {item['record'].get('id', '')}", flush=True)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"error {exc}", flush=True)
    if exit_on_eof:
        done.set()


if __name__ == "__main__":
    sys.exit(main())
