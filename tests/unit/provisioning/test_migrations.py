"""The Alembic migrations build exactly the schema of provisioning.models (no drift)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from offhook.provisioning.db import Database
from offhook.provisioning.models import Base, FleetDefaults


def test_migrations_match_models_and_are_idempotent(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        database.migrate()
        database.migrate()  # a second start is a no-op
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            assert "alembic_version" in inspect(conn).get_table_names()
        with database.session() as db:
            fleet = db.scalar(select(FleetDefaults))
            assert fleet is not None and fleet.id == 1 and fleet.settings == {}
            journal = db.connection().exec_driver_sql("PRAGMA journal_mode").scalar()
            assert journal == "wal"
    finally:
        database.dispose()


def test_enroll_nonces_stored_before_0004_become_digests(tmp_path: Path) -> None:
    from offhook.provisioning.api.device import nonce_digest
    from offhook.provisioning.db import run_migrations

    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        run_migrations(database.engine, "0003")
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO devices (id, mac, serial, model, name, status, pre_registered,"
                " settings, revision, secret_hash, enroll_nonce, firmware_version, last_ip,"
                " sip_contact, created_at, updated_at) VALUES ('d1', 'b8:27:eb:00:00:01', 's',"
                " '', '', 'approved', 0, '{}', 1, 'h', 'plain-nonce-0123456789', '', '', '',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        database.migrate()
        with database.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT enroll_nonce FROM devices").scalar()
        assert stored == nonce_digest("plain-nonce-0123456789")
    finally:
        database.dispose()
