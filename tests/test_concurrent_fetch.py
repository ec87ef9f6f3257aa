"""pgxjob_fetch_jobs across sessions: concurrent fetchers claim disjoint jobs and never wait."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

JOBS = 10_000
FETCHERS = 4
BATCH = 50


def register_workers(conn: psycopg.Connection[Any], group: str, n: int) -> list[int]:
    rows = [
        conn.execute("select pgxjob_register_worker(%s, interval '5 minutes')", (group,)).fetchone()
        for _ in range(n)
    ]
    return [int(row[0]) for row in rows if row is not None]


def test_four_concurrent_fetchers_claim_every_job_exactly_once(
    conn: psycopg.Connection[Any], clean_db: str
) -> None:
    conn.execute("select pgxjob_register_job_type('fetch_race')")
    scheduled = {
        int(row[0])
        for row in conn.execute(
            "select pgxjob_schedule_many('fetch_race',"
            " array(select json_build_object('n', n) from generate_series(1, %s) n))",
            (JOBS,),
        ).fetchall()
    }
    assert len(scheduled) == JOBS
    worker_ids = register_workers(conn, "default", FETCHERS)

    start = threading.Barrier(FETCHERS)
    claimed: dict[int, list[int]] = {w: [] for w in worker_ids}
    errors: list[BaseException] = []

    def fetch_until_empty(worker_id: int) -> None:
        try:
            with psycopg.connect(clean_db, autocommit=True) as own:
                start.wait(timeout=10)
                while True:
                    rows = own.execute(
                        "select id from pgxjob_fetch_jobs(%s, %s)", (worker_id, BATCH)
                    ).fetchall()
                    if not rows:
                        return
                    claimed[worker_id].extend(int(r[0]) for r in rows)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=fetch_until_empty, args=(w,), name=f"fetcher-{w}")
        for w in worker_ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    all_claims = [job_id for ids in claimed.values() for job_id in ids]
    assert len(all_claims) == JOBS, "a job was claimed twice or not at all"
    assert set(all_claims) == scheduled
    owners = {
        int(job_id): worker_id
        for job_id, worker_id in conn.execute("select id, worker_id from pgxjob_asap_jobs")
    }
    assert all(owners[job_id] == w for w, ids in claimed.items() for job_id in ids), (
        "every job is owned by the worker that fetched it"
    )


def test_fetch_skips_jobs_locked_by_an_uncommitted_fetch_instead_of_waiting(
    conn: psycopg.Connection[Any], clean_db: str
) -> None:
    conn.execute("select pgxjob_register_job_type('skip_locked')")
    conn.execute("select pgxjob_schedule_many('skip_locked', array['{}', '{}', '{}']::json[])")
    first, second = register_workers(conn, "default", 2)

    with psycopg.connect(clean_db) as holder, psycopg.connect(clean_db) as other:
        held = holder.execute("select id from pgxjob_fetch_jobs(%s, 2)", (first,)).fetchall()
        # The holder's transaction is still open: its rows are locked and not yet owned.
        other.execute("set lock_timeout = '2s'")
        taken = other.execute("select id from pgxjob_fetch_jobs(%s, 10)", (second,)).fetchall()
        other.commit()
        holder.rollback()

    assert len(held) == 2
    assert len(taken) == 1
    assert not set(held) & set(taken)
    # The rolled-back claim leaves those jobs free for the next fetch.
    again = conn.execute("select id from pgxjob_fetch_jobs(%s, 10)", (second,)).fetchall()
    assert sorted(again) == sorted(held)
