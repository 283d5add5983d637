"""The provisioning server for the demo: ``offhook server`` as a subprocess on loopback (SQLite).

The database, the admin user and its API token come from ``offhook fleet init --admin NAME
--api-token`` (only ``init`` may create a fleet); readiness
is polled on ``/healthz``. Everything then goes through the admin HTTP API, as an operator's
tooling would. Plain HTTP by default (loopback only); ``tls=True`` serves HTTPS with the
server's own generated CA, which the admin client then trusts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.processes import stop_process

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_TOKEN_LINE = re.compile(r"^api token: (\S+)$", re.MULTILINE)
_PASSWORD_ENV = "DEMO_ADMIN_PASSWORD"


class ServerStartError(OffhookError, RuntimeError):
    """The server (or the admin set-up before it) did not come up."""


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ProvisioningServerProcess:
    """``offhook server`` on a free loopback port with its data (SQLite, key, TLS) in one dir."""

    #: a new session keeps Ctrl-C in the demo's terminal away from the server
    own_session = True

    def __init__(
        self,
        directory: Path,
        *,
        admin_user: str = "demo-admin",
        tls: bool = False,
        db_url: str = "",
        workers: int = 1,
        env: dict[str, str] | None = None,
    ):
        self.directory = directory
        self.data_dir = directory / "server-data"
        self.db_url = db_url or f"sqlite:///{self.data_dir / 'provisioning.db'}"
        self.tls = tls
        self.workers = workers
        self.extra_env = dict(env or {})
        self.admin_user = admin_user
        self.admin_password = secrets.token_urlsafe(12)
        self.port = 0  # chosen at the first start, kept for later ones
        self.log_path = directory / "server.log"
        self.admin_token = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: httpx.Client | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """False for HTTP; for HTTPS a context trusting only the server's generated CA."""
        if not self.tls:
            return False
        return ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))

    def _cli(self, *args: str) -> list[str]:
        db = ["--db", self.db_url, "--data-dir", str(self.data_dir)]
        return [sys.executable, "-m", "offhook.firmware.cli", args[0], *db, *args[1:]]

    def _env(self) -> dict[str, str]:
        # A developer's own OFFHOOK_* settings must not leak into the demo's server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFFHOOK_")}
        env.update({"OFFHOOK_PURGE_INTERVAL_S": "0", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self._process is not None:
            raise ServerStartError("provisioning server already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = self._create_admin()
        self._spawn()

    def _spawn(self) -> None:
        """Run the server process (admin and data already in place) and wait until it answers."""
        if not self.port:
            self.port = free_tcp_port()
        command = self._cli(
            "server", "--listen", f"{HOST}:{self.port}", "--workers", str(self.workers)
        )
        if not self.tls:
            command.append("--insecure-http")
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=self.own_session,
            )
        try:
            self._wait_ready()
        except ServerStartError:
            self.stop()
            raise
        log.info("provisioning server ready", extra=kv(url=self.base_url))

    def _create_admin(self) -> str:
        env = {**self._env(), _PASSWORD_ENV: self.admin_password}
        command = self._cli(
            "fleet",
            "init",
            "--admin",
            self.admin_user,
            "--password-env",
            _PASSWORD_ENV,
            "--api-token",
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=env, check=False
        )
        match = _TOKEN_LINE.search(result.stdout)
        if result.returncode != 0 or match is None:
            raise ServerStartError(
                f"offhook fleet init failed rc={result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-1000:]}"
            )
        return match.group(1)

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"server exited rc={self._process.returncode}:\n{self.log_text()[-2000:]}"
                )
            # OSError: the generated CA is not written yet
            with contextlib.suppress(httpx.HTTPError, OSError):
                reply = httpx.get(f"{self.base_url}/healthz", timeout=2, verify=self.verify)
                if reply.is_success:
                    return
            time.sleep(0.2)
        raise ServerStartError(
            f"server not ready in {START_TIMEOUT_S:.0f} s:\n{self.log_text()[-2000:]}"
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, grace_s=STOP_TIMEOUT_S)

    def __enter__(self) -> ProvisioningServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the admin API ------------------------------------------------------------------------

    @property
    def admin(self) -> httpx.Client:
        """An httpx client on /api/v1/admin with the admin's bearer token."""
        if self._admin is None:
            self._admin = httpx.Client(
                base_url=f"{self.base_url}/api/v1/admin",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=30,
                verify=self.verify,
            )
        return self._admin

    def enrollment_token(self, max_uses: int = 1, ttl_hours: float = 1) -> str:
        reply = self.admin.post(
            "/enrollment-tokens", json={"max_uses": max_uses, "ttl_hours": ttl_hours}
        )
        reply.raise_for_status()
        return reply.json()["token"]

    def add_device(self, mac: str, **fields: Any) -> dict[str, Any]:
        reply = self.admin.post("/devices", json={"mac": mac, **fields})
        reply.raise_for_status()
        return reply.json()

    def add_line(self, mac: str, **line: Any) -> dict[str, Any]:
        reply = self.admin.post(f"/devices/{mac}/lines", json=line)
        reply.raise_for_status()
        return reply.json()
