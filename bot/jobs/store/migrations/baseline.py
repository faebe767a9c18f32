"""The schema as Handoff's hand-written migrations left it (their version 8), frozen.

Alembic's baseline revision (versions/0001_baseline.py) creates these tables on a new
database, and brings a database the hand-written migrations made up to them: the columns
their steps 2-7 added to ``jobs`` where missing, the tables of steps 5-8 where missing, and
their ``schema_version`` table dropped. Nothing here may change with the models in
bot/jobs/schema.py: a later change of the schema is a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

# The last version of the hand-written migrations; a database past it was made by code that
# this one does not know.
LAST_HAND_VERSION = 8
HAND_VERSION_TABLE = "schema_version"

tables = sa.MetaData()
_ACTIVE = sa.column("state").in_(("queued", "running"))

sa.Table(
    "deliveries", tables,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, server_default=""),
    sa.Column("repo", sa.String(255), nullable=False, server_default=""),
    sa.Column("outcome", sa.Text, nullable=False, server_default=""),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
)
sa.Table(
    "installations", tables,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("account", sa.String(255), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("repositories", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
_jobs = sa.Table(
    "jobs", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("installation_id", sa.BigInteger, nullable=True),
    sa.Column("issue_number", sa.Integer, nullable=False),
    sa.Column("pr_number", sa.Integer, nullable=True),
    sa.Column("branch", sa.String(255), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False, server_default=""),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False, server_default=""),
    sa.Column("feedback", sa.Text, nullable=False, server_default=""),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("delivery_id", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("category", sa.String(32), nullable=False, server_default=""),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cancel_by", sa.String(255), nullable=True),
    sa.Column("cancel_reason", sa.Text, nullable=True),
    sa.Column("reported", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("report_after", sa.Float, nullable=True),
    sa.Column("report_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("report_error", sa.Text, nullable=False, server_default=""),
    sa.Column("unreportable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("deferrals", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
)
sa.Index("one_active_job_per_issue", _jobs.c.repo, _jobs.c.issue_number, unique=True,
         sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
sa.Index("jobs_claimable", _jobs.c.state, _jobs.c.id)
sa.Index("jobs_pr", _jobs.c.repo, _jobs.c.pr_number)
_requests = sa.Table(
    "requests", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("comment_id", sa.BigInteger, nullable=True),
    sa.Column("answered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("requests_unanswered", _requests.c.answered, _requests.c.id)
sa.Table(
    "budgets", tables,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("dollars", sa.Float, nullable=True),
    sa.Column("jobs", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Table(
    "replies", tables,
    sa.Column("scope", sa.String(320), primary_key=True),
    sa.Column("login", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(
    "payloads", tables,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("delivery_id", sa.String(64), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)
sa.Table(
    "secrets", tables,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("target", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# The columns the hand-written steps 2, 3, 4 and 7 added to ``jobs`` (their version 1 created
# the tables as the models stood then; the steps after it added what a database lacked).
HAND_ADDED_JOB_COLUMNS = {
    "not_before": "FLOAT", "deferrals": "INTEGER NOT NULL DEFAULT 0",
    "cancel_by": "VARCHAR(255)",
    "lease_token": "VARCHAR(32)", "report_after": "FLOAT",
    "report_attempts": "INTEGER NOT NULL DEFAULT 0", "report_error": "TEXT NOT NULL DEFAULT ''",
    "unreportable": "BOOLEAN NOT NULL DEFAULT FALSE",
    "cancel_reason": "TEXT",
}


def hand_version(conn: sa.Connection) -> int | None:
    """The version the hand-written migrations recorded; None on a database they never saw."""
    if not sa.inspect(conn).has_table(HAND_VERSION_TABLE):
        return None
    found = conn.execute(sa.text(f"SELECT max(version) FROM {HAND_VERSION_TABLE}")).scalar()
    return int(found or 0)


def create(conn: sa.Connection) -> None:
    """The baseline schema: on a new database all of it; on one the hand-written migrations
    made, what their later steps would have added, keeping every row."""
    if hand_version(conn) is not None:
        inspector = sa.inspect(conn)
        # No jobs table: their first step never ran (create_all below makes every table).
        have = {c["name"] for c in inspector.get_columns("jobs")} \
            if inspector.has_table("jobs") else set(HAND_ADDED_JOB_COLUMNS)
        for name, ddl in HAND_ADDED_JOB_COLUMNS.items():
            if name not in have:
                conn.execute(sa.text(f"ALTER TABLE jobs ADD COLUMN {name} {ddl}"))
        conn.execute(sa.text(f"DROP TABLE {HAND_VERSION_TABLE}"))
    tables.create_all(conn, checkfirst=True)
