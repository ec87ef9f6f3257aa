"""No background thread dies silently: a failing handle_error, an unprintable error, a loop that
cannot go on."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from pgxjob.queries import JobResult
from tests.dbserver import scratch_database
from tests.test_faults import pending_jobs, query, scalar, successful_runs, wait_for


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_supervision") as conninfo:
        migrate(conninfo)
        yield conninfo


def terminate_other_backends(url: str) -> None:
    """Drop every other connection to the test's own database, as a server restart would."""
    query(
        url,
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid()",
    )


def poison_result(job_id: int) -> JobResult:
    """A result PostgreSQL refuses whatever the batch: its error text holds a NUL character."""
    now = dt.datetime.now(dt.UTC)
    return JobResult(job_id, 0, now, now, "nul \x00 byte", None, None, None, True)


def role_of(thread_name: str) -> str:
    for suffix in ("flush", "heartbeat"):
        if thread_name.endswith(f"-{suffix}"):
            return suffix
    if "-run-" in thread_name:
        return "runner"
    if thread_name == "pgxjob-listener":
        return "listener"
    if thread_name.startswith("pgxjob-worker-"):
        return "fetch"
    return thread_name


def test_a_handle_error_that_raises_stops_no_loop(url: str) -> None:
    """Each loop reports an error to a handle_error that raises, and still goes on."""
    reported: set[str] = set()
    lock = threading.Lock()

    def handle_error(err: BaseException) -> None:
        with lock:
            reported.add(role_of(threading.current_thread().name))
        raise RuntimeError("the error reporter is down too")

    def should_log(*args: object) -> bool:
        raise ValueError("should_log_job_run is broken")

    ran: list[int] = []
    scheduler = pgxjob.Scheduler(
        url,
        job_types=[pgxjob.JobTypeConfig("t", lambda job: ran.append(job.id))],
        handle_error=handle_error,
    )
    try:
        worker = scheduler.start_worker(
            poll_interval=60,  # jobs are only found through notifications: the listener
            max_concurrent_jobs=2,
            max_buffered_job_result_age=0.01,
            should_log_job_run=should_log,
            min_heartbeat_delay=0.05,
            heartbeat_delay_jitter=0.01,
            worker_dead_without_heartbeat=60,
        )
        assert worker.startup_complete.wait(10)
        wanted = {"fetch", "runner", "flush", "heartbeat", "listener"}
        # Dropped connections may spare the flusher, which works in short bursts: a result the
        # database rejects is reported from it for sure.
        worker._results.add(worker.id or 0, poison_result(job_id=-1))
        # The pool replaces a dropped connection before lending it, so the fetch loop may never
        # meet a dropped one: it meets a fetch function that is gone for a while instead.
        # (The implementation in the private schema: pgxjob calls it directly.)
        fetch_fn = "pgxjob_public.pgxjob_fetch_jobs(int, int, timestamptz)"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"alter function {fetch_fn} rename to pgxjob_fetch_off")
        try:
            deadline = time.monotonic() + 30
            while "fetch" not in reported and time.monotonic() < deadline:
                query(url, "select pgxjob_schedule('t')")
                time.sleep(0.3)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "alter function pgxjob_public.pgxjob_fetch_off(int, int, timestamptz)"
                    " rename to pgxjob_fetch_jobs"
                )
        deadline = time.monotonic() + 60
        while not wanted <= reported and time.monotonic() < deadline:
            terminate_other_backends(url)
            # On a connection of its own: the scheduler's pooled ones were just dropped.
            query(url, "select pgxjob_schedule('t')")
            time.sleep(0.3)
        assert wanted <= reported, f"only these loops met an error: {reported}"

        # Every loop is still at work: notified jobs run and are recorded, heartbeats go on.
        with lock:
            reported.clear()
        wait_for(lambda: pending_jobs(url) == 0, 20, "the jobs scheduled during the faults")
        before = scalar(url, "select heartbeat_at from pgxjob_workers where id = %s", (worker.id,))
        ids = [
            row[0] for row in query(url, "select pgxjob_schedule('t') from generate_series(1, 5)")
        ]
        wait_for(lambda: set(ids) <= set(successful_runs(url)), 10, "jobs after the faults")
        wait_for(
            lambda: (
                scalar(url, "select heartbeat_at from pgxjob_workers where id = %s", (worker.id,))
                > before
            ),
            10,
            "a heartbeat after the faults",
        )
        names = {role_of(thread.name) for thread in threading.enumerate()}
        assert wanted <= names, f"threads alive: {names}"
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_exception_that_cannot_be_printed_fails_its_job_and_keeps_the_runner(url: str) -> None:
    def handler(job: pgxjob.Job) -> None:
        if job.params is not None:
            raise Unprintable()

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        worker = scheduler.start_worker(
            poll_interval=0.1, max_concurrent_jobs=2, max_buffered_job_result_age=60
        )
        assert worker.startup_complete.wait(10)
        bad = scheduler.schedule_many(None, "t", [{"bad": 1}, {"bad": 2}])
        # Recorded at once although results may wait a minute: the worker knows it is idle.
        wait_for(lambda: pending_jobs(url) == 0, 10, "the two failed runs")
        good = scheduler.schedule(None, "t")
        wait_for(lambda: good in successful_runs(url), 10, "a job after the two failures")
        errors = dict(
            query(url, "select job_id, error from pgxjob_job_runs where error is not null")
        )
        assert set(errors) == set(bad)
        for error in errors.values():
            assert error.startswith(
                "Unprintable: <unprintable Unprintable: str() raised RuntimeError>"
            )
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)


def test_a_loop_that_cannot_go_on_makes_the_worker_release_its_jobs_and_unregister(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    started: list[int] = []

    def handler(job: pgxjob.Job) -> None:
        started.append(job.id)
        release.wait(30)

    scheduler = pgxjob.Scheduler(
        url, job_types=[pgxjob.JobTypeConfig("t", handler)], handle_error=lambda err: None
    )
    try:
        worker = scheduler.start_worker(poll_interval=60, max_concurrent_jobs=1)
        assert worker.startup_complete.wait(10)
        ids = scheduler.schedule_many(None, "t", [None] * 20)
        wait_for(lambda: len(started) == 1, 10, "the first job to start")
        wait_for(
            lambda: (
                scalar(url, "select count(*) from pgxjob_asap_jobs where worker_id is not null")
                == 20
            ),
            10,
            "every job to be prefetched",
        )

        # A defect in the fetch loop, outside any error handling of its own.
        def broken(capacity: int) -> int:
            raise RuntimeError("a bug in the fetch loop")

        worker._queue.room = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="pgxjob"):
            worker.signal()
            # It gives up, stops heartbeating and shuts down: the 19 jobs that never started
            # are handed back at once although the running one still hangs.
            wait_for(lambda: worker.shutdown_requested.is_set(), 20, "the worker to give up")
            wait_for(
                lambda: (
                    scalar(url, "select count(*) from pgxjob_asap_jobs where worker_id is not null")
                    == 1
                ),
                10,
                "the unstarted jobs to be released",
            )
            release.set()
            assert worker.shutdown(10)
        assert scalar(url, "select count(*) from pgxjob_workers") == 0
        assert set(successful_runs(url)) == {started[0]}
        assert scalar(url, "select count(*) from pgxjob_asap_jobs where worker_id is null") == 19
        assert len(started) == 1 and started[0] in ids
        assert any("cannot go on" in record.getMessage() for record in caplog.records)
    finally:
        release.set()
        scheduler.close(5)


def test_a_heartbeat_reaps_a_dead_worker_in_a_call_of_its_own(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, handle_error=lambda err: None)
    try:
        worker = scheduler.start_worker(
            poll_interval=60,
            min_heartbeat_delay=0.05,
            heartbeat_delay_jitter=0.01,
            worker_dead_without_heartbeat=60,
        )
        assert worker.startup_complete.wait(10)
        # Registered after the live worker, whose registration reaps too.
        with psycopg.connect(url, autocommit=True) as conn:
            (dead,) = conn.execute(
                "select pgxjob_register_worker('default', interval '1 second')"
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "update pgxjob_workers set heartbeat_at = now() - interval '1 hour' where id = %s",
                (dead,),
            )
        wait_for(
            lambda: scalar(url, "select count(*) from pgxjob_workers where id = %s", (dead,)) == 0,
            10,
            "the dead worker to be reaped",
        )
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)
