"""The inbox: every message the bot takes on, written before it is answered, unique per platform message.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

A message is stored as `received` when it arrives (a re-delivery of the same platform message is refused by
the unique key), then marked `answered` (with the ids of the replies posted), `failed` or `expired`. Rows
still `received` at start-up are answered then. `processed_events` stays for the events recorded before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("platform_id", sa.String(255), nullable=False),
        sa.Column("channel_key", sa.String(255), nullable=False),
        sa.Column("author_id", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reply_ids", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("platform", "platform_id", name="uq_inbox_platform_id"),
    )
    op.create_index("ix_inbox_state_id", "inbox", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_inbox_state_id", table_name="inbox")
    op.drop_table("inbox")
