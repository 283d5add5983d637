"""call analytics: call_records.sip_call_id (both legs of a fleet call share it) and each
admin's display time zone

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Records of older firmware carry no Call-ID: they stay "" and are never joined.
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(
            sa.Column("sip_call_id", sa.String(length=128), nullable=False, server_default="")
        )
        batch_op.create_index("ix_call_records_sip_call_id", ["sip_call_id"])
    with op.batch_alter_table("admin_users") as batch_op:
        batch_op.add_column(
            sa.Column("time_zone", sa.String(length=64), nullable=False, server_default="UTC")
        )


def downgrade() -> None:
    with op.batch_alter_table("admin_users") as batch_op:
        batch_op.drop_column("time_zone")
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_index("ix_call_records_sip_call_id")
        batch_op.drop_column("sip_call_id")
