"""Worker behaviours beyond the conformance list: flushing when idle, prefetch limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_worker") as conninfo:
        migrate(conninfo)
        yield conninfo


def run_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from pgxjob_job_runs").fetchone()
    assert row is not None
    return int(row[0])


def test_an_idle_worker_records_its_last_results_without_waiting_for_their_age(url: str) -> None:
    ran = threading.Event()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: ran.set())])
    try:
        # Results would wait up to a minute, or for 1,000 of them, were the worker not idle.
        worker = scheduler.start_worker(
            max_buffered_job_results=1_000, max_buffered_job_result_age=60
        )
        assert worker.startup_complete.wait(10)
        scheduler.schedule_many(None, "t", [{"n": n} for n in range(3)])
        assert ran.wait(10)
        deadline = time.monotonic() + 5
        while run_count(url) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run_count(url) == 3
        assert worker.shutdown(10)
    finally:
        scheduler.close()


def test_a_busy_worker_buffers_results_until_the_batch_is_full(url: str) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def handler(job: pgxjob.Job) -> None:
        started.release()
        if job.params == '{"slow":true}':
            release.wait(10)

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        worker = scheduler.start_worker(
            max_concurrent_jobs=2, max_buffered_job_results=1_000, max_buffered_job_result_age=60
        )
        assert worker.startup_complete.wait(10)
        scheduler.schedule(None, "t", {"slow": True})
        assert started.acquire(timeout=10)
        scheduler.schedule_many(None, "t", [{"n": n} for n in range(5)])
        for _ in range(5):
            assert started.acquire(timeout=10)
        time.sleep(0.5)
        # One job still runs, so the worker is not idle: the five results stay buffered.
        assert run_count(url) == 0
        release.set()
        deadline = time.monotonic() + 5
        while run_count(url) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run_count(url) == 6
        assert worker.shutdown(10)
    finally:
        scheduler.close()
