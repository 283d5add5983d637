"""The remote phonebook: an LDAP directory (ldap3) asked off the Phone's thread, with a timeout.

``LdapDirectory`` does the two queries a desk phone needs: people whose name starts with what was
typed on the keypad, and the name that belongs to an incoming call's number. ``DirectoryService``
carries out the Phone's SearchDirectory and LookupCaller commands on a thread of its own and posts
the answers back as events, so a slow or dead directory never holds up a key press or a call.

TLS (``ldaps://``, or ``ldap://`` with ``directory.start_tls``) verifies the directory's
certificate by default: its chain must lead to ``directory.tls_ca_file`` (the system's CAs when
empty) and it must name the url's host. ldap3 turns Python's hostname check off and does its
own after the handshake, so both are left to it with ``validate=CERT_REQUIRED``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import queue
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from offhook.contract.config import DirectorySettings
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.features.events import (
    CERTIFICATE_REFUSED,
    CallerNameFound,
    DirectoryEntry,
    DirectoryResults,
    LookupCaller,
    SearchDirectory,
)

if TYPE_CHECKING:
    import ldap3

log = logging.getLogger(__name__)


def _ldap3() -> ModuleType:
    """ldap3, imported at the first query: with pyasn1 it holds about 4 MB of the phone
    process's memory, and most phones never search a directory."""
    import ldap3
    import ldap3.core.exceptions
    import ldap3.utils.conv

    return ldap3


class DirectoryError(OffhookError, ConnectionError):
    """The directory could not be asked: unreachable, refused the bind, or timed out."""


class DirectoryCertificateError(DirectoryError):
    """The directory's TLS certificate was not accepted (unknown CA, wrong name, expired...).
    The message starts with CERTIFICATE_REFUSED, which the phone's screen shows."""


# How OpenSSL (through ssl) and ldap3's own name check word a refused certificate
_CERTIFICATE_WORDS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "doesn't match")
_VERIFY_REASON = re.compile(r"certificate verify failed: ([^'\"()]+?)\s*(?:\(_ssl\.c:\d+\))?['\")]")


def _tls(ldap: ModuleType, settings: DirectorySettings, host: str) -> ldap3.Tls | None:
    if not (settings.url.startswith("ldaps://") or settings.start_tls):
        return None
    ca_file = settings.tls_ca_file
    if ca_file and not Path(ca_file).is_file():
        raise DirectoryError(f"directory.tls_ca_file {ca_file}: no such file")
    try:
        ipaddress.ip_address(host)
        sni = None  # RFC 6066: no server name indication for an address
    except ValueError:
        sni = host
    tls: ldap3.Tls = ldap.Tls(
        validate=ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
        ca_certs_file=ca_file or None,
        sni=sni,
    )
    return tls


def _failure(settings: DirectorySettings, exc: Exception) -> DirectoryError:
    text = str(exc)
    if any(word in text for word in _CERTIFICATE_WORDS):
        where = settings.tls_ca_file or "the system's CAs"
        # ldap3 nests the ssl error's repr in its own: "...failed: self-signed ... (_ssl.c:1006)',)"
        found = _VERIFY_REASON.search(text)
        reason = f"certificate verify failed: {found.group(1)}" if found else text
        if "doesn't match" in text:
            reason = f"it does not name {urlsplit(settings.url).hostname}"
        return DirectoryCertificateError(
            f"{CERTIFICATE_REFUSED}: {settings.url}: {reason} (checked against {where})"
        )
    return DirectoryError(f"{settings.url}: {type(exc).__name__}: {exc}")


class LdapDirectory:
    def __init__(self, settings: DirectorySettings) -> None:
        if not settings.url:
            raise DirectoryError("directory.url is not set")
        parts = urlsplit(settings.url)
        self.settings = settings
        self._ldap = ldap = _ldap3()
        host = parts.hostname or ""
        self._server = ldap.Server(
            host,
            port=parts.port,
            use_ssl=parts.scheme == "ldaps",
            tls=_tls(ldap, settings, host),
            connect_timeout=settings.timeout_s,
            get_info=ldap.NONE,  # no schema read: one round trip less per query
        )

    def _connection(self) -> ldap3.Connection:
        s = self.settings
        try:
            conn = self._ldap.Connection(
                self._server,
                user=s.bind_dn or None,
                password=s.bind_password or None,
                # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float raises struct.error
                receive_timeout=max(1, math.ceil(s.timeout_s)),
                raise_exceptions=True,
                read_only=True,
            )
            if s.start_tls:
                conn.open()
                self._start_tls(conn)  # before the bind: the password never goes in clear
            conn.bind()
        except self._ldap.core.exceptions.LDAPException as exc:
            raise _failure(s, exc) from exc
        return conn

    def _start_tls(self, conn: ldap3.Connection) -> None:
        try:
            conn.start_tls()
        except self._ldap.core.exceptions.LDAPException as exc:
            failure = _failure(self.settings, exc)
            if isinstance(failure, DirectoryCertificateError):
                raise failure from exc
            # slapd without a certificate answers "unsupported extended operation"
            message = f"{self.settings.url}: the directory refused StartTLS ({exc})"
            raise DirectoryError(message) from exc

    def _search(self, ldap_filter: str, limit: int) -> list[DirectoryEntry]:
        s = self.settings
        attributes = sorted({s.display_attribute, *s.number_attributes})
        conn = self._connection()
        try:
            conn.search(
                s.base_dn,
                ldap_filter,
                attributes=attributes,
                size_limit=limit,
                time_limit=max(1, int(s.timeout_s)),
            )
            entries = []
            for entry in conn.response or ():
                if entry.get("type") != "searchResEntry":
                    continue  # referrals
                entries += _entry_numbers(entry["attributes"], s)
            return entries
        except self._ldap.core.exceptions.LDAPException as exc:
            if type(exc).__name__ == "LDAPSizeLimitExceededResult":
                return []
            raise DirectoryError(f"{s.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.unbind()

    def search(self, text: str) -> list[DirectoryEntry]:
        """People whose name (any of ``name_attributes``) starts with ``text``, by name."""
        s = self.settings
        prefix = self._ldap.utils.conv.escape_filter_chars(text.strip())
        if not prefix:
            return []
        terms = "".join(f"({attr}={prefix}*)" for attr in s.name_attributes)
        # A full name typed with its space matches a word inside cn too ("ali an" -> Alice Anders)
        terms += f"({s.display_attribute}=*{prefix}*)" if " " in prefix else ""
        found = self._search(f"(|{terms})", s.max_results)
        return sorted(set(found), key=lambda e: (e.name.lower(), e.number))[: s.max_results]

    def lookup(self, number: str) -> str:
        """The name the directory has for ``number`` ("" when none). telephoneNumber's matching
        rule ignores spaces and dashes, so "+1 555 0100" in the directory matches +15550100."""
        s = self.settings
        value = self._ldap.utils.conv.escape_filter_chars(number.strip())
        if not value:
            return ""
        terms = "".join(f"({attr}={value})" for attr in s.number_attributes)
        found = self._search(f"(|{terms})", 1)
        return found[0].name if found else ""


def _first(value: object) -> str:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value) if value else ""


def _entry_numbers(attributes: dict, settings: DirectorySettings) -> list[DirectoryEntry]:
    """One DirectoryEntry per number of a person (office, mobile...)."""
    name = _first(attributes.get(settings.display_attribute))
    out = []
    for attr in settings.number_attributes:
        values = attributes.get(attr) or []
        for value in values if isinstance(values, list | tuple) else [values]:
            number = str(value).replace(" ", "").replace("-", "")
            if name and number:
                out.append(DirectoryEntry(name, number))
    return out


Post = Callable[[DirectoryResults | CallerNameFound], None]


class DirectoryService:
    """Runs directory queries on one thread; answers go back to the Phone through ``post``.

    Only the newest search matters (the user typed on), so an older one still queued is dropped;
    caller lookups are answered in order. A failed lookup posts nothing: the call rings with
    its number, as it would without a directory.
    """

    def __init__(self, settings: Callable[[], DirectorySettings], post: Post) -> None:
        """``settings``: the directory settings in force (a provisioned config may change them;
        each query reads them anew)."""
        self.settings = settings
        self._post = post
        self._queue: queue.Queue[SearchDirectory | LookupCaller | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="directory", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(self.settings().timeout_s * 2 + 1)

    def submit(self, command: SearchDirectory | LookupCaller) -> None:
        self._queue.put(command)

    def _next(self) -> SearchDirectory | LookupCaller | None:
        item = self._queue.get()
        if not isinstance(item, SearchDirectory):
            return item
        while True:  # newer searches make this one moot; keep the lookups behind them
            try:
                later = self._queue.get_nowait()
            except queue.Empty:
                return item
            if isinstance(later, SearchDirectory):
                item = later
            else:
                self._queue.put(later)  # a lookup (or stop) goes back, after this search
                return item

    def _run(self) -> None:
        while (item := self._next()) is not None:
            if isinstance(item, SearchDirectory):
                self._post(self._answer_search(item))
            else:
                found = self._answer_lookup(item)
                if found is not None:
                    self._post(found)

    def _answer_search(self, command: SearchDirectory) -> DirectoryResults:
        try:
            entries = LdapDirectory(self.settings()).search(command.text)
        except DirectoryError as exc:
            log.warning("directory search failed", extra=kv(error=exc))
            return DirectoryResults(command.request, (), str(exc))
        log.info("directory searched", extra=kv(text=command.text, found=len(entries)))
        return DirectoryResults(command.request, tuple(entries))

    def _answer_lookup(self, command: LookupCaller) -> CallerNameFound | None:
        try:
            name = LdapDirectory(self.settings()).lookup(command.number)
        except DirectoryError as exc:
            log.warning("caller lookup failed", extra=kv(number=command.number, error=exc))
            return None
        if not name:
            return None
        return CallerNameFound(command.call_id, command.number, name)
