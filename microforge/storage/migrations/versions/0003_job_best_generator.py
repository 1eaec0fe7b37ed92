"""Training jobs name the generator of their best fidelity check as well as the final one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:20:00

Why: the trainer keeps the weights that scored best in its fidelity checks, and training
often drifts after that point (mode collapse); the service now keeps those weights as a
second generator instead of dropping them. Existing jobs have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("result_best_generator_id", sa.String(length=40), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_best_generator_id")
