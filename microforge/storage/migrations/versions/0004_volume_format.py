"""Volumes record their file format: a TIFF stack or an OME-Zarr store.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 15:30:00

Why: generate jobs can now write OME-Zarr (a directory blob of chunk files) instead of a
TIFF; the API serves the two differently (one file vs a store's files and a zip). Every
volume made before this is a TIFF, hence the server default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("format", sa.String(length=16), nullable=False, server_default="tiff")
        )


def downgrade() -> None:
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_column("format")
