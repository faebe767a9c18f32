"""The jobs table: a job's row, queueing one, reading them, and the writes that keep its state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.jobs.record import JobRecord
from bot.jobs.schema import jobs
from bot.jobs.states import ACTIVE_STATES, INITIAL, Event, Failure, State, move
from bot.jobs.store.database import Database, run_sql

JOB_INSERT_COLUMNS = ("kind", "repo", "installation_id", "issue_number", "pr_number", "branch",
                      "requested_by", "trigger", "feedback", "context", "delivery_id", "result",
                      "created_at", "updated_at")
JOB_JSON_COLUMNS = ("context", "result")
ACTIVE_JOB = sa.text("SELECT id, state FROM jobs WHERE repo = :repo AND issue_number = "
                     f":issue_number AND state IN ({', '.join(repr(s) for s in ACTIVE_STATES)})")
INSERT_JOB = sa.text(
    f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}, state) "
    f"VALUES ({', '.join(':' + c for c in JOB_INSERT_COLUMNS)}, '{INITIAL.value}') "
    "ON CONFLICT DO NOTHING RETURNING id"
).bindparams(*(sa.bindparam(c, type_=sa.JSON) for c in JOB_JSON_COLUMNS))
# An issue edit as kept for its job: GitHub's own limits on a title and a body.
EDIT_TITLE_CHARS, EDIT_BODY_CHARS = 256, 65536


@dataclass
class Job:
    """A row of the jobs table."""

    id: int
    kind: str
    repo: str
    installation_id: int | None
    issue_number: int
    pr_number: int | None
    branch: str | None
    state: State
    stage: str
    requested_by: str
    trigger: str
    feedback: str
    context: dict[str, Any]
    delivery_id: str | None
    attempts: int
    reason: str
    category: str
    result: JobRecord
    cancel_requested: bool
    cancel_by: str | None
    reported: bool
    not_before: float | None
    deferrals: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    lease_token: str | None = None
    report_after: float | None = None
    report_attempts: int = 0
    report_error: str = ""
    unreportable: bool = False
    cancel_reason: str | None = None

    def __post_init__(self) -> None:
        self.state = State(self.state)
        if not isinstance(self.result, JobRecord):  # a stored dict, or one a test made
            self.result = JobRecord.load(self.result)

    @property
    def target(self) -> int:
        """Where the job speaks on GitHub: its agent PR for iterations, else the issue."""
        return self.pr_number if self.kind != "implement" and self.pr_number else \
            self.issue_number

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Job:
        return cls(**row._mapping)


def no_state(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for a plain update, which never changes a state: that is a transition's
    (bot/jobs/states.py)."""
    if "state" in values:
        raise ValueError("a job's state changes only through a transition of the table in "
                         "bot/jobs/states.py")
    return values


class Jobs(Database):
    """A job's row: queueing, reading, and updates that leave its state alone."""

    def insert_job(self, conn: sa.Connection, **values: Any) -> int | None:
        """Queue a job; None when the issue already has an active one."""
        now = time.time()
        params: dict[str, Any] = {name: None for name in JOB_INSERT_COLUMNS}
        params.update(context={}, result={}, trigger="", feedback="", created_at=now,
                      updated_at=now)
        params.update(no_state(values))
        # The unique index on active jobs turns a second trigger into a no-op insert.
        _, rows = run_sql(conn, INSERT_JOB, params, JOB_JSON_COLUMNS)
        return int(rows[0][0]) if rows else None

    def active_job(
        self, conn: sa.Connection, repo: str, issue_number: int
    ) -> tuple[int, str] | None:
        """The id and state of the issue's queued or running job, if any."""
        _, rows = run_sql(conn, ACTIVE_JOB, {"repo": repo, "issue_number": issue_number})
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def agent_pr_origin(
        self, conn: sa.Connection, repo: str, pr_number: int
    ) -> Job | None:
        """The latest job that worked on this PR, if the PR is one of ours."""
        row = conn.execute(jobs.select().where(
            jobs.c.repo == repo, jobs.c.pr_number == pr_number).order_by(jobs.c.id.desc())
            .limit(1)).first()
        return Job.from_row(row) if row else None

    def record_edit(self, conn: sa.Connection, repo: str, issue_number: int,
                    edit: dict[str, str]) -> int | None:
        """Note an edit of the issue on its active job: the latest edit of each editor (cut to
        GitHub's own limits) and how many they made, so an edit flood cannot grow the row.
        Returns the job's id, or None."""
        row = conn.execute(sa.select(jobs.c.id, jobs.c.context).where(
            jobs.c.repo == repo, jobs.c.issue_number == issue_number,
            jobs.c.state.in_(ACTIVE_STATES))).first()
        if row is None:
            return None
        context = dict(row.context or {})
        earlier = [e for e in context.get("edits", []) if e.get("by") == edit["by"]]
        count = sum(int(e.get("count", 1)) for e in earlier) + 1
        # The editor's entry moves to the end: edits apply in order, the latest writer's last.
        context["edits"] = [*(e for e in context.get("edits", []) if e.get("by") != edit["by"]),
                            {"by": edit["by"], "title": edit["title"][:EDIT_TITLE_CHARS],
                             "body": edit["body"][:EDIT_BODY_CHARS], "count": count}]
        conn.execute(jobs.update().where(jobs.c.id == row.id).values(context=context))
        return int(row.id)

    def last_job_digest(self, conn: sa.Connection, repo: str, issue_number: int) -> str | None:
        """The body digest the issue's latest job started from, if it has one."""
        context = conn.execute(sa.select(jobs.c.context).where(
            jobs.c.repo == repo, jobs.c.issue_number == issue_number)
            .order_by(jobs.c.id.desc()).limit(1)).scalar()
        return (context or {}).get("payload_sha256")

    async def get_job(self, job_id: int) -> Job | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(jobs.select().where(jobs.c.id == job_id))).first()
        return Job.from_row(row) if row else None

    async def list_jobs(self, limit: int = 20, repo: str | None = None) -> list[Job]:
        query = jobs.select().order_by(jobs.c.id.desc()).limit(limit)
        if repo:
            query = query.where(jobs.c.repo == repo)
        async with self.engine.connect() as conn:
            return [Job.from_row(r) for r in (await conn.execute(query)).all()]

    async def queued(self, limit: int = 50) -> list[Job]:
        """Queued jobs, oldest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(jobs.select().where(jobs.c.state == State.QUEUED.value)
                                       .order_by(jobs.c.id).limit(limit))).all()
        return [Job.from_row(r) for r in rows]

    async def update_job(self, job_id: int, **values: Any) -> None:
        """Change a job's columns other than its state."""
        stmt = jobs.update().where(jobs.c.id == job_id).values(updated_at=time.time(),
                                                               **no_state(values))
        await self.write(lambda conn: conn.execute(stmt))

    async def update_queued(self, job_id: int, unchanged_since: float | None = None,
                            **values: Any) -> bool:
        """Change a job (not its state) only while it is still queued (and, given
        ``unchanged_since``, nobody changed it since it was read: one worker wins); False
        otherwise."""
        stmt = (jobs.update().where(jobs.c.id == job_id, jobs.c.state == State.QUEUED.value,
                                    *([jobs.c.updated_at == unchanged_since]
                                      if unchanged_since is not None else []))
                .values(updated_at=time.time(), **no_state(values)))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def refuse(self, job_id: int, reason: str) -> bool:
        """End a queued job whose requester may not ask (Event.REFUSE); False if it is no
        longer queued."""
        step = move(Event.REFUSE)
        now = time.time()
        stmt = (jobs.update().where(jobs.c.id == job_id, jobs.c.state.in_(step.source_values))
                .values(state=step.target.value, reason=reason[:4000],
                        category=Failure.NOT_PERMITTED.value, finished_at=now, updated_at=now))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))
