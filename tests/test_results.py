"""Every job's outcome is recorded and visible: the idle flush, poison rows, stale results,
failure logs."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import pgxjob
from pgxjob import queries
from pgxjob.migrations import migrate
from pgxjob.queries import JobResult
from tests.dbserver import scratch_database
from tests.test_faults import pending_jobs, query, scalar, successful_runs, wait_for


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_results") as conninfo:
        migrate(conninfo)
        yield conninfo


def test_every_small_drain_records_its_last_results_as_soon_as_the_worker_is_idle(
    url: str,
) -> None:
    runners = 4
    barrier = threading.Barrier(runners)

    def handler(job: pgxjob.Job) -> None:
        # The runners finish together: the moment where one of them sees the worker idle while
        # another has yet to buffer its result.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(5)

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        # Results wait 30 s or for 1,000 of them unless the idle flush sends them: a missed
        # idle flush cannot hide.
        worker = scheduler.start_worker(
            poll_interval=60,
            max_concurrent_jobs=runners,
            max_buffered_job_results=1_000,
            max_buffered_job_result_age=30,
        )
        assert worker.startup_complete.wait(10)
        # Threads switch as often as the interpreter allows, so that any interleaving of the
        # runners and the flusher that can happen does happen within a few drains.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            drains(url, runners)
        finally:
            sys.setswitchinterval(switch_interval)
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)


def drains(url: str, runners: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for drain in range(400):
            conn.execute("select pgxjob_schedule('t') from generate_series(1, %s)", (runners,))
            deadline = time.monotonic() + 3
            while pending_jobs(url) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert pending_jobs(url) == 0, f"drain {drain}: the last results were not sent"


def poison_result(job_id: int, kind: str) -> JobResult:
    """A result the database cannot apply: an error text with a NUL character (refused
    whatever the SQL does), or a backoff whose retry time overflows timestamptz."""
    now = dt.datetime.now(dt.UTC)
    if kind == "nul":
        return JobResult(job_id, 0, now, now, "nul \x00 byte", None, None, None, True)
    return JobResult(job_id, 0, now, now, "boom", None, 5, dt.timedelta(days=10**8), True)


@pytest.mark.parametrize("kind", ["nul", "overflow"])
def test_a_result_the_database_rejects_is_set_aside_and_the_rest_of_its_batch_recorded(
    url: str, kind: str
) -> None:
    errors = Errors()
    release = threading.Event()
    started = threading.Semaphore(0)

    def handler(job: pgxjob.Job) -> None:
        started.release()
        release.wait(30)

    scheduler = pgxjob.Scheduler(
        url, job_types=[pgxjob.JobTypeConfig("t", handler)], handle_error=errors
    )
    try:
        worker = scheduler.start_worker(
            poll_interval=60,
            max_concurrent_jobs=10,
            max_buffered_job_results=1_000,
            max_buffered_job_result_age=30,
        )
        assert worker.startup_complete.wait(10)
        ids = scheduler.schedule_many(None, "t", [None] * 10)
        for _ in ids:
            assert started.acquire(timeout=10)
        # Buffered first, so that it travels in one batch with the ten results to come.
        poison = -1
        worker._results.add(worker.id or 0, poison_result(poison, kind))
        release.set()
        wait_for(lambda: pending_jobs(url) == 0, 10, "the rest of the batch to be recorded")
        assert successful_runs(url) == {job_id: 1 for job_id in ids}
        assert worker.shutdown(10), "the poison row blocked the shutdown"
        assert scalar(url, "select count(*) from pgxjob_workers") == 0
    finally:
        release.set()
        scheduler.close(5)
    set_aside = [e for e in errors.snapshot() if isinstance(e, pgxjob.UnrecordableResultError)]
    if kind == "nul":
        # A NUL is refused before any SQL runs: only the one row is set aside and reported.
        assert len(set_aside) == 1
        assert f"job {poison}" in str(set_aside[0])
        assert isinstance(set_aside[0].__cause__, psycopg.DataError)
    # Data errors are never retried.
    assert not [e for e in errors.snapshot() if isinstance(e, psycopg.DataError)]


class Errors:
    """A handle_error that keeps what it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def __call__(self, err: BaseException) -> None:
        with self.lock:
            self.errors.append(err)

    def snapshot(self) -> list[BaseException]:
        with self.lock:
            return list(self.errors)


def test_failed_runs_are_logged_with_job_type_attempt_and_traceback(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(job: pgxjob.Job) -> None:
        if job.error_count == 0:
            raise pgxjob.ErrorWithRetry(ConnectionError("smtp down"), 0)
        raise KeyError("email")

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("mail", handler)])
    try:
        with caplog.at_level(logging.WARNING, logger="pgxjob"):
            worker = scheduler.start_worker(poll_interval=0.05, max_buffered_job_result_age=0.01)
            job_id = scheduler.schedule(None, "mail")
            wait_for(lambda: scalar(url, "select count(*) from pgxjob_job_runs") == 2, 10, "runs")
            assert worker.shutdown(10)
    finally:
        scheduler.close(5)
    failures = [r for r in caplog.records if r.name == "pgxjob.worker" and r.exc_info]
    assert [(r.levelno, r.getMessage()) for r in failures] == [
        (logging.WARNING, f"pgxjob: job {job_id} (mail) failed on attempt 1 and will be retried"),
        (logging.ERROR, f"pgxjob: job {job_id} (mail) failed for good on attempt 2"),
    ]
    assert "raise KeyError" in caplog.text  # the traceback
    (error,) = query(url, "select error from pgxjob_job_runs where run_number = 2")[0]
    assert error.startswith("KeyError: 'email'\n\nTraceback (most recent call last):")


def test_log_final_job_runs_logs_the_final_failure_of_a_backoff_retry(url: str) -> None:
    def handler(job: pgxjob.Job) -> None:
        # Always the backoff form: the database decides when the retries are used up.
        raise pgxjob.ErrorWithRetry(
            OSError("disk full"), backoff_max_retries=1, backoff_base_delay=dt.timedelta(0)
        )

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        worker = scheduler.start_worker(
            poll_interval=0.05,
            max_buffered_job_result_age=0.01,
            should_log_job_run=pgxjob.log_final_job_runs,
        )
        job_id = scheduler.schedule(None, "t")
        wait_for(lambda: pending_jobs(url) == 0, 10, "the job to fail for good")
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)
    [(logged_id, run_number, error)] = query(
        url, "select job_id, run_number, error from pgxjob_job_runs"
    )
    assert (logged_id, run_number) == (job_id, 2)
    assert error.startswith("OSError: disk full")


def test_a_result_from_before_the_worker_was_reaped_is_stale_and_logged_once(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    runs: list[int] = []

    def handler(job: pgxjob.Job) -> None:
        runs.append(job.id)
        if len(runs) == 1:
            release.wait(30)

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        worker = scheduler.start_worker(
            poll_interval=0.05,
            max_buffered_job_result_age=0.01,
            min_heartbeat_delay=0.05,
            heartbeat_delay_jitter=0.01,
            worker_dead_without_heartbeat=60,
        )
        assert worker.startup_complete.wait(10)
        old_id = worker.id
        job_id = scheduler.schedule(None, "t")
        wait_for(lambda: len(runs) == 1, 10, "the first run")
        # Reaped while alive (a long pause): its job is released and runs again.
        query(url, "select pgxjob_reap_dead_workers(now() + interval '1 day')")
        wait_for(lambda: worker.id not in (None, old_id), 10, "the worker to register again")
        wait_for(lambda: len(runs) == 2, 10, "the second run")
        with caplog.at_level(logging.WARNING, logger="pgxjob"):
            release.set()
            wait_for(lambda: "stale" in caplog.text, 10, "the stale result to be reported")
        assert worker.shutdown(10)
    finally:
        release.set()
        scheduler.close(5)
    stale = [r for r in caplog.records if "stale" in r.getMessage()]
    assert len(stale) == 1 and str(job_id) in stale[0].getMessage()
    assert pending_jobs(url) == 0


def test_a_worker_claims_no_more_jobs_while_its_results_cannot_be_recorded(url: str) -> None:
    jobs = 12_000
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type('t')")
        conn.execute("select pgxjob_schedule('t') from generate_series(1, %s)", (jobs,))
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: None)])
    claimed_sql = "select count(*) from pgxjob_asap_jobs where worker_id is not null"
    try:
        with psycopg.connect(url) as blocker:
            # Every flush waits on the run log: the handlers run on, their results pile up.
            blocker.execute("lock table pgxjob_job_runs in access exclusive mode")
            worker = scheduler.start_worker(
                poll_interval=60,
                max_concurrent_jobs=4,
                max_prefetched_jobs=100,
                max_buffered_job_results=10,
                max_buffered_job_result_age=0.01,
            )
            assert worker.startup_complete.wait(10)
            # Claims go on until the results waiting reach the bound, then stop.
            settled: list[int] = []

            def claims_stopped() -> bool:
                settled.append(int(scalar(url, claimed_sql)))
                return len(settled) > 25 and settled[-1] == settled[-25] > 0

            wait_for(claims_stopped, 30, "the claims to stop")
            # Waiting results (at most 5,000 with these settings), plus the queue, the running
            # jobs and one fetch's worth.
            bound = 5_000 + 100 + 4 + 100
            assert settled[-1] <= bound < jobs, (settled[-1], bound)
            blocker.rollback()
        # Once results are recorded again, the worker claims the rest and drains them all.
        wait_for(lambda: pending_jobs(url) == 0, 60, "the drain to end")
        assert len(successful_runs(url)) == jobs
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)


def test_a_batch_mixing_every_kind_of_result_is_recorded_field_by_field(url: str) -> None:
    # The record call sends integers, flags and all-null columns as array literals and the rest
    # as binary arrays: a batch where one result sets every optional field and the others none
    # must come out exactly as sent.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type('mix')")
        ids = [
            scalar(url, "select pgxjob_schedule('mix', %s::json)", (f'{{"n": {n}}}',))
            for n in range(3)
        ]
        worker = scalar(url, "select pgxjob_register_worker('default', interval '1 hour')")
        assert len(queries.fetch_jobs(conn, worker, 10)) == 3
        now = dt.datetime.now(dt.UTC)
        error = 'it said "no" {at} \\ the end, naïvement'
        results = [
            JobResult(ids[0], 0, now, now, None, None, None, None, True, None, False),
            JobResult(
                ids[1],
                0,
                now,
                now,
                error,
                None,
                5,
                dt.timedelta(seconds=30),
                True,
                '{"partial": [1, 2]}',
                False,
            ),
            JobResult(ids[2], 0, now, now, None, None, None, None, False, None, True),
        ]
        outcome = queries.record_job_results(conn, worker, results)
    assert outcome == queries.RecordOutcome(3, [])
    runs = query(
        url,
        "select job_id, outcome, error, output::text from pgxjob_job_runs order by job_id",
    )
    assert runs == [
        (ids[0], "succeeded", None, None),
        (ids[1], "retried", error, '{"partial": [1, 2]}'),
    ]
    retried = query(
        url,
        "select id, error_count, last_error, next_run_at > now() + interval '20 seconds'"
        " from pgxjob_run_at_jobs",
    )
    assert retried == [(ids[1], 1, error, True)]
    assert pending_jobs(url) == 1
