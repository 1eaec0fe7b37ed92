"""Jobs remember when their last task message was sent (``dispatched_at``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:10:00

Why: a running worker periodically re-sends a message for an active job that nobody
holds and whose last message is old (lost by the broker, or never sent because the
broker was down at a segment hand-off). Existing rows start with NULL, which the sweep
reads as "sent when last updated".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
