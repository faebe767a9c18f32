"""The durable job store, split by what it stores.

``database`` holds the engines and the one write path; ``deliveries`` the webhooks seen;
``jobs`` a job's row; ``leases`` a worker's hold on a job and the transitions that end it;
``cancels`` the cancel of a job; ``reports`` the posting of final jobs; ``requests`` the
conversation around jobs under way; ``migrations`` the schema's Alembic revisions, run
when a store is opened. Each part works on its own over the same engines (e.g.
``Leases.open(url)``); ``Store`` is all of them, for the processes that need every part.
Every change of a job's state follows the table in bot/jobs/states.py.
"""

from __future__ import annotations

from bot.jobs.store.cancels import Cancels
from bot.jobs.store.database import (
    STORE_ERRORS,
    Database,
    StoreBusy,
    checkpoint,
    is_busy,
    is_full,
    run_sql,
)
from bot.jobs.store.deliveries import Deliveries, DuplicateDelivery
from bot.jobs.store.jobs import Job, Jobs
from bot.jobs.store.leases import LeaseLost, Leases
from bot.jobs.store.reports import Reports
from bot.jobs.store.requests import Requests


class Store(Deliveries, Leases, Cancels, Reports, Requests):
    """Every part of the store over one pair of engines."""


__all__ = ["STORE_ERRORS", "Cancels", "Database", "Deliveries", "DuplicateDelivery", "Job", "Jobs",
           "LeaseLost", "Leases", "Reports", "Requests", "Store", "StoreBusy", "checkpoint",
           "is_busy", "is_full", "run_sql"]
