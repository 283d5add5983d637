"""admin security keys: WebAuthn credentials as a second factor and their outstanding
challenges

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 20:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import offhook.provisioning.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_security_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("credential_id", sa.String(length=1400), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at", offhook.provisioning.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_used_at", offhook.provisioning.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["admin_users.id"],
            name=op.f("fk_admin_security_keys_user_id_admin_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_security_keys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_admin_security_keys_credential_id")),
    )
    with op.batch_alter_table("admin_security_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_admin_security_keys_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "admin_webauthn_challenges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("session_digest", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("challenge", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at", offhook.provisioning.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["admin_users.id"],
            name=op.f("fk_admin_webauthn_challenges_user_id_admin_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_webauthn_challenges")),
        sa.UniqueConstraint(
            "session_digest", "purpose", name=op.f("uq_admin_webauthn_challenges_session_digest")
        ),
    )
    with op.batch_alter_table("admin_webauthn_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_admin_webauthn_challenges_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_admin_webauthn_challenges_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("admin_webauthn_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_webauthn_challenges_created_at"))
        batch_op.drop_index(batch_op.f("ix_admin_webauthn_challenges_user_id"))

    op.drop_table("admin_webauthn_challenges")
    with op.batch_alter_table("admin_security_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_security_keys_user_id"))

    op.drop_table("admin_security_keys")
