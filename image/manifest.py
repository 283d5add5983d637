"""The build manifest: what went into an image and checksums of everything that came out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from offhook.contract.atomic import atomic_write_text
from offhook.contract.errors import OffhookError

MANIFEST_VERSION = 1


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path, *, outputs: list[Path], **fields: Any) -> dict[str, Any]:
    """JSON manifest with sorted keys; ``outputs`` are listed with size and SHA-256."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **fields,
        "outputs": {
            out.name: {"sha256": sha256_file(out), "bytes": out.stat().st_size}
            for out in sorted(outputs)
        },
    }
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", mode=0o644)
    return manifest


class ManifestError(OffhookError, ValueError):
    """An output does not match the checksum its manifest recorded."""


def verify_manifest(path: Path) -> dict[str, Any]:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for name, info in manifest["outputs"].items():
        out = path.parent / name
        if not out.exists():
            raise ManifestError(f"{out}: listed in {path.name} but missing")
        if sha256_file(out) != info["sha256"]:
            raise ManifestError(f"{out}: checksum differs from {path.name}")
    return manifest
