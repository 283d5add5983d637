"""Whole-database encryption with SQLCipher against the real server (``offhook server``): with
``OFFHOOK_DB_KEY_FILE`` the fleet's SQLite file is encrypted (phones enrol and poll through the
inline fast path's own reader too); without the key, or with another, it does not open; ``offhook
fleet`` needs the key as well, and ``fleet encrypt-db`` turns a plain database into one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.provisioning.admin_auth import create_admin, create_api_token
from offhook.provisioning.crypto import load_key_ring
from offhook.provisioning.db import Database
from tests.fixtures.provisioning_server import ADMIN_PASSWORD, ProvisioningServer

sqlcipher3 = pytest.importorskip("sqlcipher3.dbapi2")
pytestmark = pytest.mark.integration

PASSPHRASE = "correct horse battery staple 42"
MAC = "b8:27:eb:c1:9e:01"


class EncryptedServer(ProvisioningServer):
    """The fixture server with its database key: the in-process set-up opens it with the key."""

    def __init__(self, directory: Path, key_file: Path) -> None:
        super().__init__(directory, env={"OFFHOOK_DB_KEY_FILE": str(key_file)})
        self.db_key = key_file.read_text().strip()
        self.port = 18850

    def _create_admin(self) -> str:
        database = Database(self.db_url, self.db_key)
        try:
            database.migrate()
            load_key_ring(self.key_file, create=True)
            with database.session() as db:
                user = create_admin(db, self.admin_user, ADMIN_PASSWORD, "admin")
                return create_api_token(db, user, "fixture")[0]
        finally:
            database.dispose()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "db.key"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(tmp_path: Path, key_file: Path) -> Iterator[EncryptedServer]:
    with EncryptedServer(tmp_path, key_file) as running:
        yield running


def _db_file(server: ProvisioningServer) -> Path:
    return server.data_dir / "provisioning.db"


def test_the_database_is_encrypted_and_does_not_open_without_its_key(
    server: EncryptedServer, key_file: Path
) -> None:
    cred = server.enroll(MAC, name="Encrypted desk")
    with cred.client() as phone:
        first = phone.get("/api/v1/device/config")  # the inline poll path's reader
        assert first.status_code == 200, first.text
        again = phone.get("/api/v1/device/config", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
    assert server.admin.get(f"/devices/{MAC}").json()["name"] == "Encrypted desk"
    fleet = server.fleet("devices")
    assert fleet.returncode == 0 and "1 device(s)" in fleet.stdout, fleet.stderr
    server.stop()

    path = _db_file(server)
    raw = path.read_bytes()
    assert not raw.startswith(b"SQLite format 3") and MAC.encode() not in raw
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        sqlite3.connect(path).execute("SELECT * FROM devices").fetchall()
    for key in (None, "a different passphrase"):
        conn = sqlcipher3.connect(str(path))
        if key:
            conn.execute(f"PRAGMA key = '{key}'")
        with pytest.raises(sqlcipher3.DatabaseError, match="file is not a database"):
            conn.execute("SELECT * FROM devices").fetchall()
        conn.close()
    conn = sqlcipher3.connect(str(path))
    conn.execute(f"PRAGMA key = '{PASSPHRASE}'")
    assert conn.execute("SELECT mac FROM devices").fetchall() == [(MAC,)]
    assert conn.execute("PRAGMA cipher_version").fetchone()[0].startswith("4.")
    conn.close()

    # The CLI without the key says what is wrong instead of reading garbage.
    plain_env = {"OFFHOOK_DB_KEY_FILE": ""}
    refused = server.fleet("devices", env=plain_env)
    assert refused.returncode != 0
    assert "file is not a database" in refused.stderr or "encrypted" in refused.stderr
    wrong = key_file.parent / "wrong.key"
    wrong.write_text("not the passphrase at all\n")
    refused = server.fleet("devices", env={"OFFHOOK_DB_KEY_FILE": str(wrong)})
    assert refused.returncode != 0 and "does not open with this key" in refused.stderr


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[ProvisioningServer]:
    running = ProvisioningServer(tmp_path / "plain")
    running.port = 18851
    with running:
        yield running


def test_fleet_encrypt_db_makes_an_encrypted_copy(
    plain_server: ProvisioningServer, key_file: Path, tmp_path: Path
) -> None:
    server = plain_server
    server.add_device(MAC, name="Plain desk")
    out = tmp_path / "encrypted.db"
    made = server.fleet("encrypt-db", "--out", str(out), "--db-key-file", str(key_file))
    assert made.returncode == 0, made.stderr
    assert MAC.encode() not in out.read_bytes()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    conn = sqlcipher3.connect(str(out))
    conn.execute(f"PRAGMA key = '{PASSPHRASE}'")
    assert conn.execute("SELECT name FROM devices WHERE mac = ?", (MAC,)).fetchone() == (
        "Plain desk",
    )
    conn.close()
    twice = server.fleet("encrypt-db", "--out", str(out), "--db-key-file", str(key_file))
    assert twice.returncode != 0 and "exists" in twice.stderr
