"""An index for an issue's latest job (``jobs_issue``): every delivery's replay check looks it
up, and without the index the lookup read every row of the repository, newest first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Run again after a pre-Alembic PostgreSQL backup is restored (see 0002): the index may
    # be there already.
    if "jobs_issue" in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("jobs")}:
        return
    op.create_index("jobs_issue", "jobs", ["repo", "issue_number", "id"])


def downgrade() -> None:
    op.drop_index("jobs_issue", table_name="jobs")
