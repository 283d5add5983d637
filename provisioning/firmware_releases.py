"""Firmware releases: RAUC bundles, verified with the real ``rauc`` against the server's keyring.

A bundle is received into a private scratch file (streamed, size-capped, SHA-256 on the way),
checked with ``rauc info --keyring`` (the CMS signature over the manifest, and the manifest's
``compatible`` and ``version``) and ``rauc extract --keyring`` (every payload block against the
signed verity root hash: ``rauc info`` alone does not read the payload), and only then renamed
into the firmware directory as ``<sha256>.raucb`` and recorded. A bundle that fails any check is
deleted and never offered: there is no row for it.

The REST API (``POST /api/v1/admin/firmware``), the CLI (``offhook fleet firmware upload``) and
the web UI call ``receive_bundle``/``register_release``; the permission is ``firmware.upload``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from offhook.contract.config import VERSION_RE
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.provisioning import audit
from offhook.provisioning.models import (
    ROLLOUT_PAUSED,
    ROLLOUT_RUNNING,
    DeviceFirmware,
    FirmwareRelease,
    Rollout,
    utcnow,
)
from offhook.provisioning.operations import Actor
from offhook.provisioning.private_files import private_directory
from offhook.provisioning.render import bump_devices
from offhook.provisioning.settings import ServerSettings

log = logging.getLogger(__name__)

RAUC = "rauc"
RAUC_TIMEOUT_S = 600  # extract reads and writes the whole payload
CHUNK = 1024 * 1024
SIGNER_RE = re.compile(r"Verified (?:inline|detached) signature by '([^']*)'")


class FirmwareError(OffhookError, ValueError):
    """A bundle that cannot become a release; ``status``/``code`` are the API's answer."""

    def __init__(self, message: str, status: int = 422, code: str = "invalid") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class BundleInfo:
    """What a verified bundle says about itself (its manifest) and who signed it."""

    compatible: str
    version: str
    description: str
    build: str
    signer: str


@dataclass(frozen=True)
class ReceivedBundle:
    """A bundle received into the scratch directory, not yet verified."""

    path: Path
    sha256: str
    size: int


def incoming_dir(settings: ServerSettings) -> Path:
    path = settings.resolved_firmware_dir / ".incoming"
    private_directory(settings.resolved_firmware_dir)
    private_directory(path)
    return path


def bundle_path(settings: ServerSettings, release: FirmwareRelease) -> Path:
    return settings.resolved_firmware_dir / f"{release.sha256}.raucb"


class BundleReceiver:
    """Writes a bundle's bytes as they arrive to a scratch file (0600) in the firmware
    directory, counting and hashing them; passing ``max_bytes`` raises 413 at once, and
    ``discard`` (or an error) removes the file."""

    def __init__(self, settings: ServerSettings) -> None:
        self.max_bytes = settings.firmware_max_bytes
        fd, name = tempfile.mkstemp(suffix=".raucb", dir=incoming_dir(settings))
        self.path = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.discard()
            raise FirmwareError(
                f"bundle too large: at most {self.max_bytes} bytes (OFFHOOK_FIRMWARE_MAX_BYTES)",
                413,
                "too_large",
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> ReceivedBundle:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.size == 0:
            self.discard()
            raise FirmwareError("empty body: send the .raucb bundle as the request body")
        return ReceivedBundle(self.path, self._hash.hexdigest(), self.size)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def receive_file(settings: ServerSettings, source: Path) -> ReceivedBundle:
    """A bundle from a local file (the CLI): copied like an upload, so the same checks and
    the same atomic move apply and the operator's file is left alone."""
    receiver = BundleReceiver(settings)
    try:
        with source.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                receiver.write(chunk)
    except OSError as exc:
        receiver.discard()
        raise FirmwareError(f"{source}: {exc.strerror or exc}") from None
    except BaseException:
        receiver.discard()
        raise
    return receiver.finish()


def _rauc_message(stderr: str) -> str:
    """RAUC's own reason, without its progress lines."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and "rauc-Message" not in line and "rauc-WARNING" not in line
    ]
    return lines[-1] if lines else stderr.strip()[-300:]


def _run_rauc(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [RAUC, *args], capture_output=True, text=True, timeout=RAUC_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise FirmwareError(
            "rauc is not installed on the server (Debian package rauc)", 503, "unavailable"
        ) from None
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"rauc {args[0]} took longer than {RAUC_TIMEOUT_S} s") from None


def check_keyring(keyring: Path) -> Path:
    if not keyring.is_file():
        raise FirmwareError(
            f"no firmware keyring at {keyring}: put the certificate(s) bundles must be signed "
            "with there, or set OFFHOOK_FIRMWARE_KEYRING",
            503,
            "no_keyring",
        )
    return keyring


def inspect_bundle(bundle: Path, keyring: Path) -> BundleInfo:
    """``rauc info`` with the keyring: the signature and the manifest. A signature that does
    not verify is a 422 ``bad_signature`` with RAUC's reason."""
    check_keyring(keyring)
    done = _run_rauc(["info", f"--keyring={keyring}", "--output-format=json", str(bundle)])
    if done.returncode != 0:
        reason = _rauc_message(done.stderr)
        if "signature" in done.stderr.lower() or "verif" in done.stderr.lower():
            raise FirmwareError(
                f"bundle signature does not verify against the server's keyring: {reason}",
                422,
                "bad_signature",
            )
        raise FirmwareError(f"not a readable RAUC bundle: {reason}", 422, "bad_bundle")
    try:
        manifest: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise FirmwareError("rauc info gave no JSON manifest", 422, "bad_bundle") from None
    compatible = str(manifest.get("compatible") or "")
    version = str(manifest.get("version") or "")
    if not compatible or len(compatible) > 128:
        raise FirmwareError("the bundle's manifest has no usable compatible (1-128 characters)")
    if not VERSION_RE.match(version):
        raise FirmwareError(
            f"the bundle's manifest version {version!r} is not 1-64 of letters, digits"
            " and . + ~ _ - (the phone reports it as its firmware version)"
        )
    signer = SIGNER_RE.search(done.stderr)
    return BundleInfo(
        compatible=compatible,
        version=version,
        description=str(manifest.get("description") or "")[:2000],
        build=str(manifest.get("build") or "")[:128],
        signer=signer.group(1)[:255] if signer else "",
    )


def verify_payload(bundle: Path, keyring: Path, scratch_parent: Path) -> None:
    """``rauc extract`` checks every block of the payload (verity bundles: against the hash
    tree under the signed root hash). The extracted files are thrown away."""
    scratch = Path(tempfile.mkdtemp(dir=scratch_parent, prefix="extract-"))
    try:
        target = scratch / "content"  # rauc wants to create the directory itself
        done = _run_rauc(["extract", f"--keyring={keyring}", str(bundle), str(target)])
        if done.returncode != 0:
            raise FirmwareError(
                f"bundle payload does not verify: {_rauc_message(done.stderr)}",
                422,
                "bad_payload",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def release_snapshot(release: FirmwareRelease) -> dict[str, Any]:
    return {
        "id": release.id,
        "compatible": release.compatible,
        "version": release.version,
        "description": release.description,
        "build": release.build,
        "sha256": release.sha256,
        "size": release.size,
        "signer": release.signer,
        "uploaded_by": release.uploaded_by,
        "created_at": release.created_at.isoformat() if release.created_at else None,
        "withdrawn": release.withdrawn_at is not None,
        "withdrawn_at": release.withdrawn_at.isoformat() if release.withdrawn_at else None,
        "withdrawn_by": release.withdrawn_by,
    }


def _move_into_store(settings: ServerSettings, received: ReceivedBundle) -> Path:
    """Rename into place (same filesystem) and fsync the directory: a power cut leaves either
    no file or the whole verified file, never a partial one under the final name."""
    final = settings.resolved_firmware_dir / f"{received.sha256}.raucb"
    os.chmod(received.path, 0o600)
    os.replace(received.path, final)
    fd = os.open(settings.resolved_firmware_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def register_release(
    db: Session, actor: Actor, settings: ServerSettings, received: ReceivedBundle
) -> FirmwareRelease:
    """Verify a received bundle and make it a release (flushed and audited; the caller
    commits). Any refusal deletes the scratch file and writes nothing."""
    keyring = settings.resolved_firmware_keyring
    try:
        info = inspect_bundle(received.path, keyring)
        same = db.scalar(select(FirmwareRelease).where(FirmwareRelease.sha256 == received.sha256))
        if same is not None:
            raise FirmwareError(
                f"this bundle is already release {same.id} ({same.compatible} {same.version})",
                409,
                "conflict",
            )
        clash = db.scalar(
            select(FirmwareRelease).where(
                FirmwareRelease.compatible == info.compatible,
                FirmwareRelease.version == info.version,
            )
        )
        if clash is not None:
            raise FirmwareError(
                f"{info.compatible} {info.version} is already release {clash.id} with other"
                " content: give the new build its own version",
                409,
                "conflict",
            )
        verify_payload(received.path, keyring, received.path.parent)
        release = FirmwareRelease(
            compatible=info.compatible,
            version=info.version,
            description=info.description,
            build=info.build,
            sha256=received.sha256,
            size=received.size,
            signer=info.signer,
            uploaded_by=actor.name,
        )
        db.add(release)
        try:
            with db.begin_nested():
                db.flush()
        except IntegrityError:
            raise FirmwareError(
                f"{info.compatible} {info.version} was uploaded at the same time", 409, "conflict"
            ) from None
        _move_into_store(settings, received)
    except BaseException:
        received.path.unlink(missing_ok=True)
        raise
    audit.record(
        db,
        actor.name,
        "firmware.upload",
        "firmware_release",
        release.id,
        None,
        release_snapshot(release),
        actor.ip,
    )
    log.info(
        "firmware release stored",
        extra=kv(
            release=release.id,
            compatible=release.compatible,
            version=release.version,
            size=release.size,
            signer=release.signer,
        ),
    )
    return release


def list_releases(db: Session) -> list[FirmwareRelease]:
    return list(
        db.scalars(
            select(FirmwareRelease).order_by(
                FirmwareRelease.compatible, FirmwareRelease.created_at.desc()
            )
        )
    )


def get_release(db: Session, ref: int | str) -> FirmwareRelease:
    """By id, by sha256, or ``version`` / ``compatible:version`` when that is unique."""
    text = str(ref)
    release = None
    if text.isascii() and text.isdigit() and len(text) < 10:
        release = db.get(FirmwareRelease, int(text))
    if release is None and re.fullmatch(r"[0-9a-f]{64}", text):
        release = db.scalar(select(FirmwareRelease).where(FirmwareRelease.sha256 == text))
    if release is None:
        compatible, sep, version = text.rpartition(":")
        query = select(FirmwareRelease).where(FirmwareRelease.version == version)
        if sep:
            query = query.where(FirmwareRelease.compatible == compatible)
        found = list(db.scalars(query.limit(2)))
        if len(found) > 1:
            raise FirmwareError(
                f"version {version!r} exists for several boards: name it compatible:version",
                409,
                "ambiguous",
            )
        release = found[0] if found else None
    if release is None:
        raise FirmwareError(f"firmware release {text!r} not found", 404, "not_found")
    return release


def check_offered(release: FirmwareRelease) -> None:
    """A withdrawn release is never sent to another phone (a new rollout or pin)."""
    if release.withdrawn_at is not None:
        raise FirmwareError(
            f"release {release.id} ({release.compatible} {release.version}) was withdrawn by"
            f" {release.withdrawn_by}: it is no longer offered",
            409,
            "withdrawn",
        )


def withdraw_release(
    db: Session, actor: Actor, ref: int | str
) -> tuple[FirmwareRelease, list[str]]:
    """No longer offered: refused while a running or paused rollout or a pin uses it. Phones
    running it are left alone; phones it was offered to that do not run it (failed or rolled
    back in a finished rollout) lose it as their target. Returns the devices whose config
    changed (the caller commits, then resyncs them)."""
    release = get_release(db, ref)
    if release.withdrawn_at is not None:
        raise FirmwareError(f"release {release.id} is withdrawn already", 409, "conflict")
    active = db.scalar(
        select(Rollout).where(
            Rollout.release_id == release.id,
            Rollout.status.in_((ROLLOUT_RUNNING, ROLLOUT_PAUSED)),
        )
    )
    if active is not None:
        raise FirmwareError(
            f"release {release.id} ({release.version}) is used by rollout {active.id}"
            f" ({active.status}): abort it first",
            409,
            "in_use",
        )
    pinned = db.scalar(
        select(func.count())
        .select_from(DeviceFirmware)
        .where(DeviceFirmware.pinned_release_id == release.id)
    )
    if pinned:
        raise FirmwareError(
            f"release {release.id} ({release.version}) is pinned on {pinned} phone(s): unpin"
            " them first",
            409,
            "in_use",
        )
    before = release_snapshot(release)
    release.withdrawn_at = utcnow()
    release.withdrawn_by = actor.name
    changed = []
    for row in db.scalars(select(DeviceFirmware).where(DeviceFirmware.release_id == release.id)):
        if row.state != "running":  # the phones running it keep it as their target
            row.release_id = None
            changed.append(row.device_id)
    db.flush()
    audit.record(
        db,
        actor.name,
        "firmware.withdraw",
        "firmware_release",
        release.id,
        before,
        release_snapshot(release) | {"targets_dropped": len(changed)},
        actor.ip,
    )
    log.info(
        "firmware release withdrawn",
        extra=kv(release=release.id, version=release.version, targets_dropped=len(changed)),
    )
    return release, bump_devices(db, changed)
