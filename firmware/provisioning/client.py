"""ProvisioningClient: the phone side of fleet provisioning, run as one background thread.

Each cycle: enroll if there is no credential (honouring Retry-After while pending), else pull the
config with If-None-Match, validate, write, apply through the runtime's callback (rolling back to
the last known good config on failure), queue a status snapshot and upload the outbox. Server
trouble never touches the running config: the phone keeps its cached config and retries with
exponential backoff and full jitter. ``resync_now`` (also the check-sync NOTIFY) runs a cycle at
once.

Threading: ``apply`` and ``status`` are called from the client's thread; ``enqueue`` and
``resync_now`` may be called from any thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from offhook.contract.config import (
    ConfigError,
    PhoneConfig,
    ProvisioningSettings,
    provisioned_local_keys,
    with_local_settings,
)
from offhook.contract.logs import kv
from offhook.firmware.provisioning.backoff import Backoff, PollSchedule
from offhook.firmware.provisioning.checksync import CheckSyncListener
from offhook.firmware.provisioning.enroll import Credential, EnrollmentStore, enroll_request
from offhook.firmware.provisioning.identity import DeviceIdentity
from offhook.firmware.provisioning.outbox import KINDS, Outbox
from offhook.firmware.provisioning.pinning import PinnedCA
from offhook.firmware.provisioning.server_api import (
    ConfigReply,
    ProtocolError,
    Refused,
    ServerApi,
    ServerError,
    ServerUnavailable,
    basic_auth,
)
from offhook.firmware.provisioning.store import MAX_APPLY_ATTEMPTS, ConfigStore, StoredConfig

log = logging.getLogger(__name__)

BATCH_SIZE = 100
MAX_PENDING_WAIT_S = 600.0
MAX_RETRY_AFTER_S = 3600.0  # a broken or hostile Retry-After must not silence a phone for days
MAX_DETAIL_CHARS = 4000  # the server's limit for an event's detail


def effective_config(
    local: PhoneConfig, provisioned: PhoneConfig | None, simulated: bool = False
) -> PhoneConfig:
    """The provisioned settings with the phone's own local sections and keys
    (firmware.config.PHONE_LOCAL_KEYS; on a simulator also the SIP port). None: the local config."""
    if provisioned is None:
        return local
    config, ignored = with_local_settings(local, provisioned, simulated)
    if ignored:
        log.warning("provisioned phone-local settings ignored", extra=kv(keys=",".join(ignored)))
    return config


def ignored_local_settings(provisioned: PhoneConfig) -> str:
    """The event detail naming phone-local keys a provisioned config tried to set ("" if none)."""
    keys = provisioned_local_keys(provisioned)
    return f"ignored phone-local settings: {', '.join(keys)}" if keys else ""


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def system_uptime_s() -> int:
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return int(time.monotonic())


def local_address_towards(url: str) -> str:
    """The phone's address on the route to the server (a UDP connect sends no packet)."""
    parts = urlsplit(url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((parts.hostname or "127.0.0.1", parts.port or 443))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class ProvisioningClient:
    def __init__(
        self,
        settings: ProvisioningSettings,
        state_dir: Path,
        identity: DeviceIdentity,
        apply: Callable[[PhoneConfig | None], str | None],
        status: Callable[[], dict],
        *,
        notify_host: str = "0.0.0.0",
        backoff: Backoff | None = None,
        previous_exit: str = "",
    ) -> None:
        if not settings.url:
            raise ValueError("provisioning.url is empty: nothing to provision from")
        if settings.url.startswith("https://") and not settings.ca_fingerprint:
            raise ValueError("provisioning.ca_fingerprint is required for an https:// server")
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the device secret
        self.identity = identity
        self._apply = apply
        self._status = status
        self.store = ConfigStore(self.state_dir / "config")
        self.outbox = Outbox(self.state_dir / "outbox")
        self.enrollment = EnrollmentStore(self.state_dir)
        self._pinned = (
            PinnedCA(settings.ca_fingerprint, self.state_dir / "pinned-ca.der")
            if settings.ca_fingerprint
            else None
        )
        self.backoff = backoff or Backoff()
        credential = self.enrollment.credential()
        self._poll = PollSchedule(
            settings.poll_interval_s, credential.device_id if credential else identity.mac
        )
        self._notify_host = notify_host
        self._previous_exit = previous_exit  # how the last phone process ended, if known
        self.listener: CheckSyncListener | None = None
        self.state = "enrolled" if credential else "unenrolled"
        self.last_error = ""
        self.config_revision = 0
        self.cycles = 0  # completed cycles, for tests and the control API
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._force = threading.Event()
        self._flush = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_poll_at = 0.0

    # --- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("provisioning client already started")
        self.listener = CheckSyncListener(
            self.settings.notify_port, self._secret, self.resync_now, host=self._notify_host
        )
        self.listener.start()
        self._thread = threading.Thread(target=self._run, name="provisioning", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.listener is not None:
            self.listener.stop()

    def resync_now(self) -> None:
        self._force.set()
        self._wake.set()

    def enqueue(self, kind: str, record: dict) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.outbox.put(kind, record)
        self._flush.set()
        self._wake.set()

    def cached_config(self) -> PhoneConfig | None:
        """The last known good provisioned config (None before the first successful apply)."""
        lkg = self.store.last_known_good()
        return lkg.config if lkg else None

    @property
    def pinned_ca(self) -> PinnedCA | None:
        """The server's pinned CA (also what firmware bundle downloads are checked against)."""
        return self._pinned

    @property
    def next_cycle_in_s(self) -> float:
        """Seconds until the next scheduled enroll/poll (0 when one is due or forced)."""
        if self._force.is_set():
            return 0.0
        return max(0.0, self._next_poll_at - time.monotonic())

    @property
    def sip_contact(self) -> str:
        if self.listener is None:
            return ""
        host = self.listener.host
        if host in ("0.0.0.0", ""):
            host = local_address_towards(self.settings.url)
        return f"{host}:{self.listener.port}"

    # --- the thread ----------------------------------------------------------------------------

    def _secret(self) -> str | None:
        credential = self.enrollment.credential()
        return credential.secret if credential else None

    def _run(self) -> None:
        try:
            self._boot_from_cache()
        except Exception:
            log.exception("applying the cached config failed")
        while not self._stop.is_set():
            now = time.monotonic()
            due = now >= self._next_poll_at or self._force.is_set()
            try:
                if due:
                    forced = self._force.is_set()
                    self._force.clear()
                    self._flush.clear()
                    self._next_poll_at = now + self._cycle(forced)
                    self.cycles += 1
                elif self._flush.is_set() and self.backoff.failures == 0:
                    self._flush.clear()
                    self._flush_only()
            except Exception as exc:  # a bug must not end provisioning for the phone's lifetime
                log.exception("provisioning cycle crashed")
                self.last_error = f"internal error: {exc!r}"
                self._next_poll_at = time.monotonic() + self.backoff.failed()
            self._wake.wait(max(0.0, self._next_poll_at - time.monotonic()))
            self._wake.clear()

    def _boot_from_cache(self) -> None:
        interrupted = self.store.interrupted_apply()
        if interrupted and interrupted.attempts >= MAX_APPLY_ATTEMPTS:
            self.store.reject(interrupted.etag)
            detail = f"apply interrupted {interrupted.attempts} times (phone restarted meanwhile)"
            if self._previous_exit:
                detail += f"; the last phone process {self._previous_exit}"
            self._event("config_rolled_back", interrupted.revision, detail)
        lkg = self.store.last_known_good()
        if lkg is None:
            log.info("no cached provisioned config yet")
            return
        error = self._safe_apply(lkg.config)
        self.config_revision = lkg.revision
        log.info("cached config applied", extra=kv(revision=lkg.revision, error=error or ""))

    def _cycle(self, forced: bool = False) -> float:
        """One enroll/poll/upload round; return seconds until the next one.

        ``forced`` (resync_now, check-sync NOTIFY) also re-fetches a config refused earlier: an
        operator who fixed what made it fail (say, the registrar) asks the phone to try again.
        """
        try:
            with ServerApi(self.settings.url, self._pinned, self._user_agent()) as api:
                credential = self.enrollment.credential()
                if credential is None:
                    return self._enroll(api)
                api.auth = basic_auth(credential.device_id, credential.secret)
                self._pull_config(api, retry_rejected=forced)
                self._queue_status()
                self._upload_outbox(api)
        except ServerUnavailable as exc:
            return self._failed(str(exc), exc.retry_after_s)
        except Refused as exc:
            return self._refused(exc)
        except ProtocolError as exc:
            return self._failed(f"protocol error: {exc}")
        self.backoff.succeeded()
        self.last_error = ""
        self.state = "enrolled"
        return self._poll.next_delay()

    def _flush_only(self) -> None:
        credential = self.enrollment.credential()
        if credential is None:
            return
        try:
            with ServerApi(self.settings.url, self._pinned, self._user_agent()) as api:
                api.auth = basic_auth(credential.device_id, credential.secret)
                self._upload_outbox(api)
        except ServerError as exc:
            # handled fully at the next poll, which comes after the backoff delay
            self._next_poll_at = time.monotonic() + self._failed(str(exc))

    def _failed(self, reason: str, retry_after_s: float | None = None) -> float:
        delay = self.backoff.failed()
        if retry_after_s is not None:  # the server's word wins, within reason
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        self.last_error = reason
        log.warning(
            "provisioning server unavailable, keeping cached config",
            extra=kv(failures=self.backoff.failures, retry_in_s=round(delay, 1), reason=reason),
        )
        return delay

    def _refused(self, exc: Refused) -> float:
        if exc.status == 401 or exc.code == "revoked":
            # the credential is dead: never send it again; enrollment starts afresh
            self.enrollment.discard_credential()
            self.state = "revoked" if exc.code == "revoked" else "unenrolled"
            log.error(
                "device credential refused, discarded", extra=kv(code=exc.code, detail=str(exc))
            )
        elif exc.code in ("bad_token", "rejected", "already_enrolled"):
            self.state = "refused"
        elif exc.code == "not_approved":
            self.state = "pending"
        self.last_error = str(exc)
        delay = self.backoff.failed()
        log.warning(
            "provisioning refused",
            extra=kv(code=exc.code or exc.status, retry_in_s=round(delay, 1)),
        )
        return delay

    # --- enrollment ----------------------------------------------------------------------------

    def _enroll(self, api: ServerApi) -> float:
        token = self.settings.enrollment_token
        reply = api.enroll(enroll_request(self.identity, token, self.enrollment.nonce()))
        if reply.status == "pending":
            self.state = "pending"
            self.backoff.succeeded()
            wait = reply.retry_after_s if reply.retry_after_s is not None else 30.0
            log.info("enrollment pending approval", extra=kv(retry_after_s=wait))
            return min(max(wait, 1.0), MAX_PENDING_WAIT_S)
        self.enrollment.save_credential(Credential(reply.device_id, reply.secret))
        self._poll = PollSchedule(self.settings.poll_interval_s, reply.device_id)
        self.state = "enrolled"
        self.backoff.succeeded()
        log.info("enrolled", extra=kv(device_id=reply.device_id))
        self._force.set()  # fetch the config right away
        return 0.0

    # --- configuration -------------------------------------------------------------------------

    def _pull_config(self, api: ServerApi, retry_rejected: bool) -> None:
        reply = api.get_config(self.store.if_none_match(retry_rejected))
        if reply.not_modified:
            log.debug("config not modified", extra=kv(etag=reply.etag))
            return
        self.handle_config(reply)

    def handle_config(self, reply: ConfigReply) -> None:
        """Validate, store and apply a config the server sent; reject or roll back on failure."""
        if not isinstance(reply.body, dict):
            self.store.reject(reply.etag)
            self._event("config_rejected", reply.revision, "config body is not a JSON object")
            return
        self.store.write_candidate(reply.etag, reply.revision, reply.body)
        try:
            stored = self.store.validate_candidate()
        except ConfigError as exc:
            self.store.reject(reply.etag)
            log.error("config rejected", extra=kv(revision=reply.revision, error=str(exc)))
            self._event("config_rejected", reply.revision, str(exc))
            return
        self._apply_with_rollback(stored)

    def _apply_with_rollback(self, stored: StoredConfig) -> None:
        self.store.begin_apply(stored)
        error = self._safe_apply(stored.config)
        if error is None:
            self.store.finish_apply(stored)
            self.config_revision = stored.revision
            log.info("config applied", extra=kv(revision=stored.revision))
            self._event("config_applied", stored.revision, ignored_local_settings(stored.config))
            return
        self.store.reject(stored.etag)
        lkg = self.store.last_known_good()
        # Apply what ran before, so nothing of the refused config (its SIP sockets, say) stays:
        # the last good provisioned config, or before the first one the phone's own config.
        again = self._safe_apply(lkg.config if lkg is not None else None)
        restored = f"restored revision {lkg.revision}" if lkg else "restored the phone's own config"
        if again:
            restored += f" (which also failed: {again})"
        log.error(
            "config apply failed, rolled back", extra=kv(revision=stored.revision, error=error)
        )
        self._event("config_rolled_back", stored.revision, f"apply failed: {error}; {restored}")

    def _safe_apply(self, config: PhoneConfig | None) -> str | None:
        try:
            return self._apply(config)
        except Exception as exc:  # the runtime's failure is a failed apply, not our crash
            log.exception("apply callback raised")
            return f"apply raised {exc!r}"

    # --- reports -------------------------------------------------------------------------------

    def _event(self, kind: str, revision: int, detail: str) -> None:
        self.outbox.put(
            "events",
            {
                "time": now_rfc3339(),
                "type": kind,
                "config_revision": revision,
                "detail": detail[:MAX_DETAIL_CHARS],
            },
        )

    def _queue_status(self) -> None:
        body: dict[str, Any] = {
            "ip": local_address_towards(self.settings.url),
            "uptime_s": system_uptime_s(),
            "lines": [],
        }
        try:
            body.update(self._status())
        except Exception:
            log.exception("status callback raised; sending a status without lines")
        body.update(
            time=now_rfc3339(),
            firmware_version=self.identity.firmware_version,
            config_revision=self.config_revision,
            sip_contact=self.sip_contact,
            # lets the server judge this phone's liveness by its own schedule
            poll_interval_s=self.settings.poll_interval_s,
        )
        body.pop("id", None)
        self.outbox.drop_all("status")  # a snapshot supersedes any older unsent one
        self.outbox.put("status", body)

    def _upload_outbox(self, api: ServerApi) -> None:
        for kind in ("events", "cdrs", "quality", "status"):
            while batch := self.outbox.pending(kind, BATCH_SIZE):
                refused = 0
                try:
                    accepted = self._send(api, kind, batch)
                except Refused as exc:
                    if exc.status != 422:
                        raise
                    accepted, refused = self._send_one_by_one(api, kind, batch)
                removed = self.outbox.delete(kind, accepted)
                log.info("uploaded", extra=kv(kind=kind, sent=len(batch), accepted=removed))
                if removed + refused == 0:
                    raise ProtocolError(f"server accepted none of {len(batch)} {kind} records")

    @staticmethod
    def _send(api: ServerApi, kind: str, batch: list[dict[str, Any]]) -> set[str]:
        if kind != "status":
            return set(api.post(kind, {"records": batch}))
        accepted: set[str] = set()
        for record in batch:  # status reports go one per request
            accepted.update(api.post("status", record))
        return accepted

    def _send_one_by_one(
        self, api: ServerApi, kind: str, batch: list[dict]
    ) -> tuple[set[str], int]:
        """Find the record(s) the server cannot take (422) so they stop blocking the queue."""
        accepted: set[str] = set()
        refused = 0
        for record in batch:
            try:
                accepted |= self._send(api, kind, [record])
            except Refused as exc:
                if exc.status != 422:
                    raise
                log.error(
                    "server refuses record, set aside",
                    extra=kv(kind=kind, id=record["id"], error=str(exc)),
                )
                self.outbox.set_aside(kind, record["id"])
                refused += 1
        return accepted, refused

    def _user_agent(self) -> str:
        return f"offhook/{self.identity.firmware_version} ({self.identity.model})"


__all__ = ["ProvisioningClient", "effective_config"]
