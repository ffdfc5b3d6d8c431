"""several receivers on one database: receivers table

Each ``medvision serve`` with a ``node_name`` reports itself, its heartbeat and the studies
it has on their way into the index in ``receivers`` (docs/scaling.md, "Several receivers
on one database").

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 01:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receivers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("busy", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("receivers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receivers_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("receivers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receivers_name"))

    op.drop_table("receivers")
