"""acceptor processes: acceptors table

Each DICOM acceptor process of a receiver reports itself and its counters in
``acceptors`` (``medvision status``, ``GET /workers``, ``/metrics``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acceptors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("associations", sa.Integer(), nullable=False),
        sa.Column("active_associations", sa.Integer(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("bytes_received", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("acceptors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_acceptors_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("acceptors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_acceptors_name"))

    op.drop_table("acceptors")
