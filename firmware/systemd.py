"""systemd service notifications (sd_notify) and the watchdog period, without libsystemd.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named in ``NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). Outside systemd every call is a silent no-op.
"""

from __future__ import annotations

import logging
import os
import socket

from offhook.contract.logs import kv

log = logging.getLogger("offhook.systemd")


class Notifier:
    """Sends READY=1, WATCHDOG=1, STATUS=..., STOPPING=1 to systemd when run as a notify service."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines (keys upper-cased); False outside systemd or on failure."""
        if self._sock is None or self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:
            log.warning("sd_notify failed", extra=kv(error=exc, socket=self.address))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(ready="1", **({"status": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def stopping(self) -> bool:
        return self.notify(stopping="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET ignored: not a unix socket path", extra=kv(value=value))
    return None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of WATCHDOG_USEC (as systemd recommends), or None when the watchdog is off for us."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2
