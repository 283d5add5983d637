"""BundleFetcher over HTTP(S): the device credential, the pinned CA, and resuming with Range.

The partial file stays on /data across reboots; its ETag sits beside it so a resumed request
carries ``If-Range`` and a changed file on the server is fetched afresh (200) instead of being
spliced onto the old one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from offhook.firmware.provisioning.pinning import PinnedCA
from offhook.firmware.update.ports import Downloaded, DownloadError

CHUNK = 256 * 1024
TIMEOUT_S = 30.0
PROGRESS_EVERY = 4 * 1024 * 1024


def bundle_url(url: str, base: str) -> str:
    """A path from the config (``/api/v1/device/firmware/...``) is taken relative to the
    provisioning server's URL."""
    return urljoin(base, url) if url.startswith("/") else url


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class HttpBundleFetcher:
    def __init__(
        self, base_url: str, authorization: Callable[[], str | None], pinned: PinnedCA | None
    ) -> None:
        self.base_url = base_url
        self.authorization = authorization
        self.pinned = pinned

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            if self.pinned is None:
                raise DownloadError("https bundle URL but no pinned CA", kept=0)
            port = parts.port or 443
            context = self.pinned.ssl_context(host, port)
            return http.client.HTTPSConnection(host, port, timeout=TIMEOUT_S,
                                               context=context), path  # fmt: skip
        if parts.scheme == "http":
            return http.client.HTTPConnection(host, parts.port or 80, timeout=TIMEOUT_S), path
        raise DownloadError(f"unsupported bundle URL {url!r}", kept=0)

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        resume_from: int,
        max_size: int,
        progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> Downloaded:
        url = bundle_url(url, self.base_url)
        etag_file = dest.with_name(dest.name + ".etag")
        have = dest.stat().st_size if dest.exists() else 0
        if resume_from <= 0 or have < resume_from:
            have = 0  # the agent's record and the file disagree: start again
        try:
            connection, path = self._connection(url)
        except (OSError, ConnectionError) as exc:
            raise DownloadError(f"cannot connect for {url}: {exc}", kept=have) from None
        headers = {"User-Agent": "offhook-update"}
        auth = self.authorization()
        if auth:
            headers["Authorization"] = auth
        etag = etag_file.read_text().strip() if etag_file.exists() else ""
        if have and etag:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = etag
        else:
            have = 0
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status == 416:
                raise DownloadError("server refused the resume range (416)", kept=0)
            if response.status == 200:
                have = 0
            elif response.status == 206:
                content_range = response.getheader("Content-Range", "")
                if not content_range.startswith(f"bytes {have}-"):
                    raise DownloadError(f"unexpected Content-Range {content_range!r}", kept=0)
            else:
                raise DownloadError(
                    f"GET {url}: HTTP {response.status} {response.reason}", kept=have
                )
            new_etag = response.getheader("ETag", "")
            if new_etag:
                etag_file.write_text(new_etag)
            written = self._receive(response, dest, have, max_size, progress, cancel)
            length = response.getheader("Content-Length")
            # http.client returns a short body at EOF without an error: check the length
            if (
                length is not None
                and written - have < int(length)
                and not (max_size and written > max_size)
            ):
                raise DownloadError(
                    f"GET {url}: connection closed after {written - have} of {length} bytes",
                    kept=written,
                )
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            kept = dest.stat().st_size if dest.exists() else 0
            raise DownloadError(f"GET {url}: {exc!r}", kept=kept) from None
        finally:
            connection.close()
        return Downloaded(size=written, sha256=file_sha256(dest))

    @staticmethod
    def _receive(response, dest, have, max_size, progress, cancel) -> int:
        mode = "r+b" if have and dest.exists() else "wb"
        with open(dest, mode) as fh:
            fh.seek(have)
            fh.truncate()
            written = have
            reported = written
            while chunk := response.read(CHUNK):
                if cancel.is_set():
                    raise DownloadError("download cancelled", kept=written)
                fh.write(chunk)
                written += len(chunk)
                if max_size and written > max_size:
                    break  # longer than announced: the size check refuses it
                if written - reported >= PROGRESS_EVERY:
                    fh.flush()
                    progress(written)
                    reported = written
            fh.flush()
            os.fsync(fh.fileno())
        return written
