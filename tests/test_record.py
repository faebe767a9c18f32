"""The job record: typed, versioned, and nothing stored is lost when it is read back."""

from __future__ import annotations

import pytest

from bot.jobs.record import VERSION, JobRecord
from bot.jobs.store import Store


def test_a_row_written_before_records_had_a_version_reads_back_typed() -> None:
    old = {"summary": "Fixed it", "pr_url": "https://example/pull/3", "status_comment_id": "41",
           "spend": {"steps": 2}, "head_sha": None, "some_later_key": [1, 2]}
    record = JobRecord.load(old)
    assert record.version == VERSION
    assert (record.summary, record.status_comment_id, record.head_sha) == ("Fixed it", 41, "")
    assert record.dump()["some_later_key"] == [1, 2]  # unknown keys are kept


def test_a_record_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        JobRecord.load({"review_threads": "not a list"})


async def test_the_store_keeps_the_record_typed(tmp_path: object) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    try:
        job_id = await store.write(lambda conn: store.insert_job(
            conn, kind="implement", repo="o/r", installation_id=1, requested_by="maya",
            issue_number=1))
        assert job_id is not None
        record = JobRecord(summary="done", timings={"agent": 1.5})
        await store.update_job(job_id, result=record)
        job = await store.get_job(job_id)
        assert job is not None and job.result == record
    finally:
        await store.close()
