"""API: users, api_tokens, feedback

Each table is created only if missing: a development database made by create_all between
d176e21 (users, api_tokens) and the feedback table has some of them already and is
stamped 0001 by medvision.db._migrate.detect_legacy_revision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 02:42:25.226393
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "api_tokens" not in existing:
        op.create_table(
            "api_tokens",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("api_tokens", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_api_tokens_token_hash"), ["token_hash"], unique=True
            )
            batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    if "feedback" not in existing:
        op.create_table(
            "feedback",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
            sa.Column("job_id", sa.Integer(), nullable=True),
            sa.Column("finding_number", sa.Integer(), nullable=True),
            sa.Column("decision", sa.String(length=16), nullable=False),
            sa.Column("comment", sa.Text(), nullable=False),
            sa.Column("location", sa.JSON(), nullable=False),
            sa.Column("user", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("feedback", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_feedback_job_id"), ["job_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_feedback_kind"), ["kind"], unique=False)
            batch_op.create_index(
                batch_op.f("ix_feedback_study_instance_uid"), ["study_instance_uid"], unique=False
            )

    if "users" not in existing:
        op.create_table(
            "users",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("password_hash", sa.Text(), nullable=False),
            sa.Column("roles", sa.JSON(), nullable=False),
            sa.Column("disabled", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("users", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_users_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_name"))

    op.drop_table("users")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_feedback_kind"))
        batch_op.drop_index(batch_op.f("ix_feedback_job_id"))

    op.drop_table("feedback")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))
        batch_op.drop_index(batch_op.f("ix_api_tokens_token_hash"))

    op.drop_table("api_tokens")
