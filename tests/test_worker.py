"""Worker behaviours beyond the conformance list: flushing when idle, prefetch limits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import ROOT, scratch_database


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


def test_a_scheduler_on_the_applications_pool_runs_jobs_and_returns_connections_as_lent(
    url: str,
) -> None:
    from psycopg_pool import ConnectionPool

    ran = threading.Event()
    with ConnectionPool(url, min_size=1, max_size=8, open=True) as pool:
        scheduler = pgxjob.Scheduler(
            pool, job_types=[pgxjob.JobTypeConfig("t", lambda j: ran.set())]
        )
        try:
            worker = scheduler.start_worker(max_buffered_job_result_age=0.02)
            with pool.connection() as conn:
                scheduler.schedule(conn, "t", {"via": "pool"})  # commits with the pool's block
            assert ran.wait(10)
            assert worker.shutdown(10)
        finally:
            scheduler.close()
        with pool.connection() as conn:
            # The scheduler switched its borrowed connections to autocommit and back.
            assert conn.autocommit is False
            assert conn.execute("select count(*) from pgxjob_job_runs").fetchone() == (1,)


def test_an_acquire_conn_scheduler_listens_on_a_connection_of_its_own(url: str) -> None:
    import contextlib

    lent: list[int] = []

    @contextlib.contextmanager
    def acquire() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(url) as conn:
            lent.append(1)
            yield conn

    ran = threading.Event()
    scheduler = pgxjob.Scheduler(
        acquire, job_types=[pgxjob.JobTypeConfig("t", lambda j: ran.set())]
    )
    try:
        # poll_interval 60: the job can only start promptly through the listener's NOTIFY.
        worker = scheduler.start_worker(poll_interval=60, max_buffered_job_result_age=0.02)
        assert worker.startup_complete.wait(10)
        time.sleep(0.3)
        scheduler.schedule(None, "t", None)
        assert ran.wait(5)
        assert worker.shutdown(10)
        assert lent
    finally:
        scheduler.close()


def test_a_worker_on_psycopgs_pure_python_implementation_warns_once(url: str) -> None:
    script = (
        "import logging, sys, pgxjob\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "s = pgxjob.Scheduler(sys.argv[1], job_types=[pgxjob.JobTypeConfig('t', print)])\n"
        "for _ in range(2):\n"
        "    s.start_worker()\n"
        "s.close(10)\n"
    )
    env = {**os.environ, "PSYCOPG_IMPL": "python", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, url], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("pure-Python implementation") == 1
    assert "pip install 'psycopg[binary]'" in proc.stderr
