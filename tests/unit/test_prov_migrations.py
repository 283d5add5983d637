"""The Alembic migrations build exactly the schema of provisioning.models (no drift)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from provisioning.db import Database
from provisioning.models import Base, FleetDefaults


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
