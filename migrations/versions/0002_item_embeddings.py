"""Item embeddings: one vector per item, space (text/image) and encoder version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "item_embeddings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("space", sa.String(32), nullable=False),
        sa.Column("encoder", sa.String(255), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_item_embeddings"),
        sa.UniqueConstraint("item_id", "space", "encoder", name="uq_item_embeddings_item_space_encoder"),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_item_embeddings_item_id_items", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_item_embeddings_encoder", "item_embeddings", ["encoder"])


def downgrade() -> None:
    op.drop_index("ix_item_embeddings_encoder", table_name="item_embeddings")
    op.drop_table("item_embeddings")
