"""devices.enroll_nonce holds the nonce's SHA-256 (provisioning.api.device.nonce_digest), not the
nonce: it lets a phone fetch its secret again, so a copy of the database must not reveal it

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

devices = sa.table("devices", sa.column("id", sa.String), sa.column("enroll_nonce", sa.String))


def _digest(nonce: str) -> str:
    # The same as provisioning.api.device.nonce_digest at the time of this migration.
    return hashlib.sha256(("enroll-nonce:" + nonce).encode()).hexdigest()


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(devices.c.id, devices.c.enroll_nonce).where(devices.c.enroll_nonce.is_not(None))
    ).all()
    for device_id, nonce in rows:
        conn.execute(
            devices.update().where(devices.c.id == device_id).values(enroll_nonce=_digest(nonce))
        )


def downgrade() -> None:
    # A digest cannot be turned back into the nonce: a lost enrolment response then needs an
    # admin reset instead of a retry.
    op.get_bind().execute(devices.update().values(enroll_nonce=None))
