"""Alembic's environment: the store's models are the target; the connection is the one
``upgrade`` passes, or (``alembic`` run by hand) one to HANDOFF_DATABASE_URL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from bot.jobs.schema import make_engine, metadata


def run(connection: sa.Connection) -> None:
    # Batch mode: SQLite alters a table by copying it, so revisions render ALTERs as batches.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_by_hand() -> None:
    from bot.config import Settings

    engine = make_engine(Settings().db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Handoff's revisions read the database they upgrade: no --sql mode")
if (given := context.config.attributes.get("connection")) is not None:
    run(given)
else:
    asyncio.run(run_by_hand())
