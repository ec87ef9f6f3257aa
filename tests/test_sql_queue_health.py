"""No queue stalls: ASAP jobs are not starved by due timed jobs, and a job whose type is gone
neither blocks its group nor makes pgxjob_next_run_in negative for ever.

An ASAP job is due at its inserted_at, a timed job at its next_run_at; a fetch claims both kinds
in due-time order (or interleaves them), never every due timed job first.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.sqlcore import fetch, job_state, register_worker, schedule

GROUP = "health"
JOB_TYPE = "health_job"
DOOMED_TYPE = "health_doomed"


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("select pgxjob_register_group(%s::text)", (GROUP,))
        for name in (JOB_TYPE, DOOMED_TYPE):
            conn.execute("select pgxjob_register_job_type(%s::text, %s::text)", (name, GROUP))
        yield conn


def db_now(conn: psycopg.Connection[Any]) -> dt.datetime:
    row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def schedule_many(
    conn: psycopg.Connection[Any], count: int, run_at: dt.datetime | None
) -> list[int]:
    rows = conn.execute(
        "select pgxjob_schedule_many(%s::text, %s::json[], null::text, %s::timestamptz)",
        (JOB_TYPE, [None] * count, run_at),
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_a_flood_of_due_timed_jobs_does_not_starve_asap_jobs(
    db: psycopg.Connection[Any],
) -> None:
    start = db_now(db)
    flood_due_at = start + dt.timedelta(minutes=1)
    schedule_many(db, 500, flood_due_at)
    asap = set(schedule_many(db, 20, None))
    worker = register_worker(db, GROUP)
    later = start + dt.timedelta(minutes=10)

    claimed_asap: set[int] = set()
    for _ in range(4):
        batch = fetch(db, worker, 10, later)
        claimed_asap |= {job_id for job_id, is_asap in batch if is_asap}
        # The flood never dries up: every timed job claimed is replaced by another one, due too.
        timed = sum(1 for _, is_asap in batch if not is_asap)
        if timed:
            schedule_many(db, timed, flood_due_at)
    # In due-time order the ASAP jobs (due at their insert) come first; even an even
    # interleaving of the two kinds starts all 20 within four fetches of 10.
    assert claimed_asap == asap


def test_fetch_claims_timed_and_asap_jobs_in_due_time_order(db: psycopg.Connection[Any]) -> None:
    step = dt.timedelta(milliseconds=300)
    first = schedule(db, JOB_TYPE, run_at=db_now(db) + step)
    time.sleep(3 * step.total_seconds())
    second = schedule(db, JOB_TYPE)  # ASAP: due now, after `first` fell due
    third = schedule(db, JOB_TYPE, run_at=db_now(db) + step)
    time.sleep(3 * step.total_seconds())
    worker = register_worker(db, GROUP)

    claimed = fetch(db, worker, 2, db_now(db))

    assert sorted(job_id for job_id, _ in claimed) == sorted([first, second])
    assert job_state(db, third) == ("run_at", None, 0)


def delete_doomed_type(conn: psycopg.Connection[Any]) -> tuple[bool, int]:
    """Delete the doomed type as a superuser would; (whether it was deleted, its id)."""
    row = conn.execute("select id from pgxjob_job_types where name = %s", (DOOMED_TYPE,)).fetchone()
    assert row is not None
    try:
        with conn.transaction():
            conn.execute("delete from pgxjob_job_types where name = %s", (DOOMED_TYPE,))
    except psycopg.errors.IntegrityError:
        return False, int(row[0])
    return True, int(row[0])


def test_jobs_of_a_deleted_type_never_stall_their_group(db: psycopg.Connection[Any]) -> None:
    start = db_now(db)
    doomed_asap = schedule(db, DOOMED_TYPE)
    doomed_timed = schedule(db, DOOMED_TYPE, run_at=start + dt.timedelta(minutes=1))
    later_jobs = [schedule(db, JOB_TYPE) for _ in range(3)]
    deleted, type_id = delete_doomed_type(db)
    worker = register_worker(db, GROUP)
    later = start + dt.timedelta(minutes=5)

    claimed: list[int] = []
    for _ in range(6):
        claimed += [job_id for job_id, _ in fetch(db, worker, 1, later)]
    # One job per fetch: the doomed jobs, with the lowest ids, must not block the rest.
    assert set(later_jobs) <= set(claimed)

    next_run_in = db.execute(
        "select pgxjob_next_run_in(%s::int, %s::timestamptz)", (worker, later)
    ).fetchone()
    assert next_run_in is not None
    assert next_run_in[0] is None or next_run_in[0] >= dt.timedelta(0)

    if deleted:
        # Each doomed job was failed into the run log with an error that names its type.
        for job_id in (doomed_asap, doomed_timed):
            assert job_state(db, job_id) is None
            errors = [
                r[0]
                for r in db.execute(
                    "select error from pgxjob_job_runs where job_id = %s", (job_id,)
                ).fetchall()
            ]
            assert len(errors) == 1 and errors[0] is not None
            assert DOOMED_TYPE in errors[0] or str(type_id) in errors[0]
    else:
        # The delete was refused: the doomed jobs are ordinary jobs and were claimed too.
        assert {doomed_asap, doomed_timed} <= set(claimed)
