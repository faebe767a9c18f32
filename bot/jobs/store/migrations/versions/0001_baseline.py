"""The baseline: the schema the hand-written migrations ended at (their version 8).

A new database gets every table; one those migrations made gets what it lacked, with every
row kept, and loses their ``schema_version`` table (see ../baseline.py).

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from bot.jobs.store.migrations import baseline

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    baseline.create(op.get_bind())


def downgrade() -> None:
    baseline.tables.drop_all(op.get_bind())
