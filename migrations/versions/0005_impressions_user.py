"""An index of impressions by user and time: the learned reranker reads a user's earlier feed lists per
request (the "skipped" features).

Revision ID: 0005_impressions_user
Revises: 0004_impressions
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005_impressions_user"
down_revision = "0004_impressions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_impressions_user_ts", "impressions", ["user_id", "ts_ms"])


def downgrade() -> None:
    op.drop_index("ix_impressions_user_ts", table_name="impressions")
