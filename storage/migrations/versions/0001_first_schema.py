"""The first released schema (dialobot 0.1.0): chat turns and answered platform event ids.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Written out column by column, not from the models, so that it stays the 0.1.0 schema whatever the models
become. Databases created by 0.1.0 (with `create_all`, no alembic_version table) already have exactly these
tables; `dialobot db upgrade` stamps them at this revision instead of running it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("channel_key", sa.String(255), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("author_id", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_messages_channel_id", "messages", ["channel_key", "id"])
    op.create_table(
        "processed_events",
        sa.Column("event_key", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_index("ix_messages_channel_id", table_name="messages")
    op.drop_table("messages")
