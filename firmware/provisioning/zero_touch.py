"""Zero-touch enrollment of a phone that has no provisioning server yet (trust on first use).

``ZeroTouch`` runs on a thread of its own in the phone process while ``provisioning.url`` is
empty: it discovers a server (firmware/provisioning/discovery.py), reads the certificate chain
the server presents without trusting it, and posts ``ServerDiscovered`` with the SHA-256
fingerprint of the chain's CA. The Phone shows it and waits for the admin
(firmware/features/trust.py); nothing goes further without that key press. On ``TrustServer``
accepted, the URL, the fingerprint (now pinned, as if a seed had brought it) and any enrollment
token discovery found are written into the phone's own config file atomically, and
``on_trusted`` restarts the phone process, which then enrolls like any seeded phone. A rejected
server is not offered again by this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from offhook.contract.config import PhoneConfig, save_config
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.features.events import ProvisioningStatus, ServerDiscovered, TrustServer
from offhook.firmware.provisioning.discovery import Found
from offhook.firmware.provisioning.pinning import fetch_presented_chain, sha256_fingerprint

log = logging.getLogger(__name__)

Discover = Callable[[], Found | None]
Post = Callable[[ServerDiscovered | ProvisioningStatus], None]


class TrustError(OffhookError, ConnectionError):
    """The discovered server's CA could not be read (unreachable, no CA in its chain)."""


def _is_ca(der: bytes) -> bool:
    cert = x509.load_der_x509_certificate(der)
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def presented_ca_fingerprint(url: str, timeout_s: float = 10.0) -> str:
    """The SHA-256 fingerprint of the topmost CA certificate in the chain ``url``'s server
    presents (read without trusting it: this is what the admin is asked to trust)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise TrustError(f"{url}: trust on first use needs an https:// URL")
    try:
        chain = fetch_presented_chain(parts.hostname, parts.port or 443, timeout_s)
    except (OSError, OffhookError) as exc:
        raise TrustError(f"{url}: {exc}") from exc
    cas = [der for der in chain if _is_ca(der)]
    if not cas:
        raise TrustError(f"{url}: the server's chain holds no CA certificate to pin")
    return sha256_fingerprint(cas[-1])


class ZeroTouch:
    def __init__(
        self,
        config_path: Path,
        local_config: PhoneConfig,
        mac: str,
        discover: Discover,
        post: Post,
        on_trusted: Callable[[], None],
        *,
        interval_s: float = 60.0,
        fingerprint: Callable[[str], str] = presented_ca_fingerprint,
    ) -> None:
        self.config_path = config_path
        self.local_config = local_config
        self.mac = mac
        self._discover = discover
        self._post = post
        self._on_trusted = on_trusted
        self._fingerprint = fingerprint
        self.interval_s = interval_s
        self._answer: TrustServer | None = None
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._rejected: set[tuple[str, str]] = set()
        self._offered: tuple[Found, str] | None = None
        self._thread = threading.Thread(target=self._run, name="zero-touch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._answered:
            self._answered.notify_all()
        self._thread.join(5)

    def trust(self, answer: TrustServer) -> None:
        """The Phone's TrustServer command (the runtime's thread): wakes the discovery thread."""
        with self._answered:
            self._answer = answer
            self._answered.notify_all()

    def _status(self, state: str, url: str = "", detail: str = "") -> None:
        self._post(ProvisioningStatus(state, url, self.mac, detail))

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.round():
                return
            self._stop.wait(self.interval_s)

    def round(self) -> bool:
        """One discovery and, if a server was found, one wait for the admin; True once the
        server was trusted and the config written."""
        self._status("discovering")
        try:
            found = self._discover()
        except OSError as exc:
            log.warning("discovery failed", extra=kv(error=exc))
            found = None
        if found is None:
            self._status("discovering", detail="no server found yet")
            return False
        try:
            fingerprint = self._fingerprint(found.url)
        except TrustError as exc:
            log.warning("discovered server unusable", extra=kv(url=found.url, error=exc))
            self._status("error", found.url, str(exc))
            return False
        if (found.url, fingerprint) in self._rejected:
            self._status("refused", found.url, "rejected on this phone")
            return False
        self._offered = (found, fingerprint)
        self._post(ServerDiscovered(found.url, fingerprint, found.source))
        self._status("trust", found.url, found.source)
        log.warning(
            "provisioning server found, waiting for the admin to trust it",
            extra=kv(url=found.url, source=found.source, fingerprint=fingerprint),
        )
        answer = self._wait_answer()
        if answer is None or (answer.url, answer.fingerprint) != (found.url, fingerprint):
            return False  # nobody answered yet (or about another server): discover again
        if not answer.accepted:
            self._rejected.add((found.url, fingerprint))
            self._status("refused", found.url, "rejected on this phone")
            log.warning("discovered server rejected", extra=kv(url=found.url))
            return False
        self._write_config(found, fingerprint)
        self._status("pending", found.url, "trusted on first use")
        self._on_trusted()
        return True

    def _wait_answer(self) -> TrustServer | None:
        with self._answered:
            if self._answer is None and not self._stop.is_set():
                self._answered.wait(self.interval_s)
            answer, self._answer = self._answer, None
        return answer

    def _write_config(self, found: Found, fingerprint: str) -> None:
        data = self.local_config.model_dump(mode="json")
        data["provisioning"]["url"] = found.url
        data["provisioning"]["ca_fingerprint"] = fingerprint
        if found.enrollment_token and not data["provisioning"]["enrollment_token"]:
            data["provisioning"]["enrollment_token"] = found.enrollment_token
        config = PhoneConfig.model_validate(data)
        save_config(config, self.config_path)
        log.warning(
            "provisioning server trusted on first use",
            extra=kv(url=found.url, fingerprint=fingerprint, config=self.config_path),
        )
