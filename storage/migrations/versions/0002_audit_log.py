"""The audit log of destructive actions, and indexes for deleting a user's turns and old turns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

`reset`, `purge`, `forget me` and the retention limit each write one `audit_log` row (who, when, what) in the
same transaction as the deletion. `forget me`/`purge` look turns up by author and the retention limit by age,
hence the two indexes on `messages`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_messages_author_id", "messages", ["author_id"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at", table_name="messages")
    op.drop_index("ix_messages_author_id", table_name="messages")
    op.drop_table("audit_log")
