"""NOTIFY targets: device secrets decrypted once per process and never stale."""

from __future__ import annotations

from pathlib import Path

from offhook.provisioning.crypto import KeyRing, load_key_ring
from offhook.provisioning.db import Database
from offhook.provisioning.models import Device
from offhook.provisioning.resync import SecretCache, notify_targets


class CountingKeyRing(KeyRing):
    decrypted = 0

    def decrypt(self, ciphertext: str, purpose: str) -> str:
        type(self).decrypted += 1
        return super().decrypt(ciphertext, purpose)


def test_secrets_are_decrypted_once_and_follow_a_new_ciphertext(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path / "secret.key", create=True)
    keys = CountingKeyRing(ring.keys, ring.current)
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    cache = SecretCache()
    with database.session() as db:
        devices = [
            Device(
                mac=f"02:00:00:00:00:{i:02x}",
                status="approved",
                sip_contact=f"127.0.0.1:{5060 + i}",
                secret_enc=keys.encrypt(f"secret-{i}", "devices.secret"),
            )
            for i in range(3)
        ]
        db.add_all(devices)
        db.flush()
        ids = [d.id for d in devices]

        first = notify_targets(db, keys, ids, cache)
        assert sorted(t.secret for t in first) == ["secret-0", "secret-1", "secret-2"]
        assert CountingKeyRing.decrypted == 3
        assert sorted(t.secret for t in notify_targets(db, keys, ids, cache)) == sorted(
            t.secret for t in first
        )
        assert CountingKeyRing.decrypted == 3  # the second change decrypts nothing

        devices[0].secret_enc = keys.encrypt("re-enrolled", "devices.secret")
        db.flush()
        again = {t.device_id: t.secret for t in notify_targets(db, keys, ids, cache)}
        assert again[devices[0].id] == "re-enrolled" and CountingKeyRing.decrypted == 4
    database.dispose()
