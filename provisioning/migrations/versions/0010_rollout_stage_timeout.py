"""firmware: a rollout stage's time limit (rollouts.stage_timeout_s, stage_started_at) and
withdrawn releases (firmware_releases.withdrawn_at, withdrawn_by)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import offhook.provisioning.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC_TIME = offhook.provisioning.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("rollouts") as batch_op:
        batch_op.add_column(
            sa.Column("stage_timeout_s", sa.Integer(), nullable=False, server_default="0")
        )
        # existing rollouts: their stage's clock starts with the migration
        batch_op.add_column(
            sa.Column("stage_started_at", UTC_TIME, nullable=False, server_default=sa.func.now())
        )
    with op.batch_alter_table("firmware_releases") as batch_op:
        batch_op.add_column(sa.Column("withdrawn_at", UTC_TIME, nullable=True))
        batch_op.add_column(
            sa.Column("withdrawn_by", sa.String(length=128), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("firmware_releases") as batch_op:
        batch_op.drop_column("withdrawn_by")
        batch_op.drop_column("withdrawn_at")
    with op.batch_alter_table("rollouts") as batch_op:
        batch_op.drop_column("stage_started_at")
        batch_op.drop_column("stage_timeout_s")
