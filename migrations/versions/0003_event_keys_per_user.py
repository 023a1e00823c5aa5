"""Event ids are unique per user; idempotency keys of API batches.

Until now an event's explicit id was one key across all users (``id:<event id>``), so user B's event
reusing user A's id was dropped as a duplicate. The key becomes ``e:<internal user id>:<event id>``
(``eh:<user>:<blake2b>`` when that would not fit in 255 characters); existing keys are rewritten, so
re-ingesting a file already loaded still adds nothing. Content-derived keys (``h:...``) are unchanged.

``idempotency_keys`` keeps the outcome of each ``POST /v1/events`` sent with an ``Idempotency-Key``
header, replayed to its retries for ``service.idempotency_window_s``.

Downgrade rewrites ``e:`` keys back to ``id:`` keys (it fails if two users share an event id, which the
old schema cannot hold); hashed ``eh:`` keys are left as they are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_USER = "CAST(user_id AS VARCHAR(20))"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
        sa.UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    conn = op.get_bind()
    # 'id:<event id>' -> 'e:<user>:<event id>' in one statement where it fits ...
    conn.execute(sa.text(
        f"UPDATE events SET event_key = 'e:' || {_USER} || ':' || substr(event_key, 4) "
        f"WHERE event_key LIKE 'id:%' AND length(event_key) + length({_USER}) <= 255"
    ))
    # ... and the (rare) rest hashed, as recsys.ingest.events.event_key does.
    long = conn.execute(sa.text("SELECT id, user_id, event_key FROM events WHERE event_key LIKE 'id:%'")).all()
    for row_id, user_id, key in long:
        digest = hashlib.blake2b(key[3:].encode("utf-8"), digest_size=20).hexdigest()
        conn.execute(sa.text("UPDATE events SET event_key = :k WHERE id = :i"), {"k": f"eh:{user_id}:{digest}", "i": row_id})


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text(
        f"UPDATE events SET event_key = 'id:' || substr(event_key, length({_USER}) + 4) WHERE event_key LIKE 'e:%'"
    ))
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
