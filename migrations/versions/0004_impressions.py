"""Impressions (served lists and their positions) and experiments created from the CLI.

Revision ID: 0004_impressions
Revises: 0003
Create Date: 2026-11-30

The tables here do not depend on 0003 (per-user event keys); they follow it in the chain.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_impressions"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "impressions",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("experiment", sa.String(64), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("index_version", sa.String(128), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_impressions"),
    )
    op.create_index("ix_impressions_experiment", "impressions", ["experiment"])
    op.create_index("ix_impressions_ts_ms", "impressions", ["ts_ms"])
    op.create_table(
        "impression_items",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("team", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "position", name="pk_impression_items"),
        sa.ForeignKeyConstraint(["request_id"], ["impressions.request_id"],
                                name="fk_impression_items_request_id_impressions", ondelete="CASCADE"),
    )
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_experiments"),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_table("impression_items")
    op.drop_index("ix_impressions_ts_ms", table_name="impressions")
    op.drop_index("ix_impressions_experiment", table_name="impressions")
    op.drop_table("impressions")
