"""The conformance behaviours of SPEC section 7, end to end against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import create_database, drop_database, scratch_database

FAST = {"max_buffered_job_result_age": 0.02, "poll_interval": 10.0}


@pytest.fixture
def url() -> Iterator[str]:
    """A freshly migrated scratch database of its own for each test."""
    with scratch_database("pgxjob_conf") as conninfo:
        migrate(conninfo)
        yield conninfo


def query(url: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def job_counts(url: str) -> tuple[int, int, int]:
    (row,) = query(
        url,
        "select (select count(*) from pgxjob_asap_jobs), (select count(*) from pgxjob_run_at_jobs),"
        " (select count(*) from pgxjob_job_runs)",
    )
    return row


def owned_jobs(url: str) -> int:
    (row,) = query(
        url,
        "select (select count(*) from pgxjob_asap_jobs where worker_id is not null)"
        " + (select count(*) from pgxjob_run_at_jobs where worker_id is not null)",
    )
    return int(row[0])


class Recorder:
    """A handler that remembers what it ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: list[pgxjob.Job] = []
        self.started: dict[int, dt.datetime] = {}

    def __call__(self, job: pgxjob.Job) -> None:
        with self.lock:
            self.started[job.id] = dt.datetime.now(dt.UTC)
            self.jobs.append(job)

    def count(self) -> int:
        with self.lock:
            return len(self.jobs)


def test_asap_job_runs_once_and_logs_one_run_with_its_fields(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("greet", recorder)])
    try:
        job_id = scheduler.schedule(None, "greet", {"name": "Ada"})
        [(group_id, type_id, params, worker_id)] = query(
            url, "select group_id, type_id, params::text, worker_id from pgxjob_asap_jobs"
        )
        assert (group_id, json.loads(params), worker_id) == (1, {"name": "Ada"}, None)

        worker = scheduler.start_worker(**FAST)
        wait_for(lambda: job_counts(url) == (0, 0, 1), what="the run to be logged")
        assert worker.shutdown(10)

        [job] = recorder.jobs
        assert (job.id, job.type.name, job.group.name, job.error_count, job.asap) == (
            job_id,
            "greet",
            "default",
            0,
            True,
        )
        assert json.loads(job.params or "") == {"name": "Ada"}
        [run] = query(
            url,
            "select job_id, run_number, group_id, type_id, params::text, error,"
            " run_at = inserted_at, started_at <= finished_at from pgxjob_job_runs",
        )
        assert run[:4] == (job_id, 1, group_id, type_id)
        assert json.loads(run[4]) == {"name": "Ada"}
        assert run[5:] == (None, True, True)
    finally:
        scheduler.close()


def test_timed_job_runs_on_time_and_logs_its_run_at(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("later", recorder)])
    try:
        worker = scheduler.start_worker(**FAST)
        assert worker.startup_complete.wait(10)
        time.sleep(0.1)  # the worker is idle, asleep for poll_interval (10 s)
        run_at = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=100)
        job_id = scheduler.schedule(None, "later", None, run_at=run_at)
        assert query(url, "select next_run_at from pgxjob_run_at_jobs") == [(run_at,)]
        wait_for(lambda: recorder.count() == 1, timeout=5, what="the timed job")
        started = recorder.started[job_id]
        assert started >= run_at
        # Far less than the 10 s poll interval: the worker woke for the due time.
        assert started - run_at < dt.timedelta(seconds=2)
        wait_for(lambda: job_counts(url)[2] == 1, what="the run to be logged")
        assert query(url, "select run_at from pgxjob_job_runs") == [(run_at,)]
        assert worker.shutdown(10)
        assert job_counts(url) == (0, 0, 1)
    finally:
        scheduler.close()


def test_jobs_scheduled_before_and_while_a_worker_runs_all_run(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("work", recorder)])
    try:
        before = scheduler.schedule_many(None, "work", [{"n": n} for n in range(100)])
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=200)
        timed = scheduler.schedule_many(None, "work", [{"t": n} for n in range(10)], run_at=soon)
        worker = scheduler.start_worker(**FAST)
        during = [scheduler.schedule(None, "work", {"m": n}) for n in range(100)]
        wait_for(lambda: recorder.count() == 210, what="all 210 jobs")
        assert worker.shutdown(10)
        assert sorted(job.id for job in recorder.jobs) == sorted(before + timed + during)
        assert job_counts(url) == (0, 0, 210)
    finally:
        scheduler.close()


def test_plain_failure_deletes_the_job_and_logs_the_error(url: str) -> None:
    def fail(job: pgxjob.Job) -> None:
        raise RuntimeError("card declined")

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("charge", fail)])
    try:
        job_id = scheduler.schedule(None, "charge", {"amount": 5})
        worker = scheduler.start_worker(**FAST)
        wait_for(lambda: job_counts(url) == (0, 0, 1), what="the failed run")
        assert worker.shutdown(10)
        [(logged_id, run_number, error)] = query(
            url, "select job_id, run_number, error from pgxjob_job_runs"
        )
        assert (logged_id, run_number) == (job_id, 1)
        # The summary line, then the traceback down to the handler's raise.
        summary, _, trace = error.partition("\n\n")
        assert summary == "RuntimeError: card declined"
        assert trace.startswith("Traceback (most recent call last):")
        assert 'raise RuntimeError("card declined")' in trace
    finally:
        scheduler.close()


def test_job_without_a_handler_fails_with_a_clear_error(url: str) -> None:
    query(url, "select pgxjob_register_job_type('elsewhere')")
    scheduler = pgxjob.Scheduler(url)
    try:
        (job_id,) = query(url, "select pgxjob_schedule('elsewhere', '{}')")[0]
        worker = scheduler.start_worker(**FAST)
        wait_for(lambda: job_counts(url) == (0, 0, 1), what="the failed run")
        assert worker.shutdown(10)
        [(logged_id, error)] = query(url, "select job_id, error from pgxjob_job_runs")
        assert logged_id == job_id
        assert 'no handler for job type "elsewhere"' in error
    finally:
        scheduler.close()


def test_error_with_retry_moves_the_job_to_the_timed_table_keeping_its_id(url: str) -> None:
    retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    def flaky(job: pgxjob.Job) -> None:
        raise pgxjob.ErrorWithRetry(ConnectionError("smtp down"), retry_at)

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("mail", flaky)])
    try:
        job_id = scheduler.schedule(None, "mail", {"to": "a@example.com"})
        worker = scheduler.start_worker(**FAST)
        wait_for(lambda: job_counts(url) == (0, 1, 1), what="the retry")
        assert worker.shutdown(10)
        [(moved_id, error_count, last_error, next_run_at, worker_id)] = query(
            url,
            "select id, error_count, last_error, next_run_at, worker_id from pgxjob_run_at_jobs",
        )
        assert (moved_id, error_count, next_run_at, worker_id) == (job_id, 1, retry_at, None)
        assert last_error.startswith("ConnectionError: smtp down\n\nTraceback")
        assert query(url, "select job_id, run_number, error from pgxjob_job_runs") == [
            (job_id, 1, last_error)
        ]
    finally:
        scheduler.close()


def test_a_backlog_of_ten_thousand_jobs_drains(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("bulk", recorder)])
    try:
        for start in range(0, 10_000, 2_500):
            scheduler.schedule_many(None, "bulk", [{"n": n} for n in range(start, start + 2_500)])
        worker = scheduler.start_worker(**FAST)
        wait_for(lambda: recorder.count() == 10_000, timeout=60, what="10,000 jobs")
        assert worker.shutdown(30)
        assert job_counts(url) == (0, 0, 10_000)
        assert len({job.id for job in recorder.jobs}) == 10_000
    finally:
        scheduler.close()


def test_a_worker_never_touches_another_groups_jobs(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=["reports", "email"],
        job_types=[pgxjob.JobTypeConfig("render", recorder, default_group_name="reports")],
    )
    try:
        mine = scheduler.schedule_many(None, "render", [{} for _ in range(50)])
        theirs = scheduler.schedule_many(
            None, "render", [{} for _ in range(50)], group_name="email"
        )
        worker = scheduler.start_worker(group_name="reports", **FAST)
        wait_for(lambda: recorder.count() == 50, what="the reports jobs")
        time.sleep(0.2)
        assert worker.shutdown(10)
        assert sorted(job.id for job in recorder.jobs) == mine
        assert {job.group.name for job in recorder.jobs} == {"reports"}
        remaining = query(url, "select id, worker_id from pgxjob_asap_jobs order by id")
        assert remaining == [(job_id, None) for job_id in theirs]
    finally:
        scheduler.close()


def test_shutdown_midway_loses_no_job_and_leaves_nothing_owned(url: str) -> None:
    recorder = Recorder()

    def slow(job: pgxjob.Job) -> None:
        time.sleep(0.002)
        recorder(job)

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("slow", slow)])
    try:
        scheduler.schedule_many(None, "slow", [{"n": n} for n in range(1_200)])
        worker = scheduler.start_worker(max_concurrent_jobs=4, max_prefetched_jobs=500, **FAST)
        wait_for(lambda: recorder.count() >= 300, what="300 jobs")
        worker_id = worker.id
        assert worker.shutdown(30)
        pending_asap, pending_timed, runs = job_counts(url)
        assert runs == recorder.count()
        assert pending_asap + pending_timed + runs == 1_200
        assert pending_asap > 0
        assert owned_jobs(url) == 0
        assert query(url, "select id from pgxjob_workers where id = %s", (worker_id,)) == []
    finally:
        scheduler.close()


def test_heartbeats_advance_and_a_dead_workers_jobs_run_elsewhere(url: str) -> None:
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("rescue", recorder)])
    try:
        ids = scheduler.schedule_many(None, "rescue", [{"n": n} for n in range(20)])
        # A worker that claims every job and then dies: it never sends another heartbeat.
        (dead_id,) = query(url, "select pgxjob_register_worker('default', interval '300 ms')")[0]
        assert len(query(url, "select * from pgxjob_fetch_jobs(%s, 100)", (dead_id,))) == 20
        assert owned_jobs(url) == 20

        worker = scheduler.start_worker(
            min_heartbeat_delay=0.05,
            heartbeat_delay_jitter=0.05,
            worker_dead_without_heartbeat=1.0,
            poll_interval=0.2,
            max_buffered_job_result_age=0.02,
        )
        assert worker.startup_complete.wait(10)
        (first,) = query(
            url, "select heartbeat_at from pgxjob_workers where id = %s", (worker.id,)
        )[0]
        wait_for(
            lambda: (
                query(url, "select heartbeat_at from pgxjob_workers where id = %s", (worker.id,))[
                    0
                ][0]
                > first
            ),
            what="a heartbeat",
        )
        wait_for(lambda: recorder.count() == 20, what="the dead worker's jobs")
        assert query(url, "select id from pgxjob_workers where id = %s", (dead_id,)) == []
        assert sorted(job.id for job in recorder.jobs) == ids
        assert worker.shutdown(10)
    finally:
        scheduler.close()


def test_log_final_job_runs_logs_only_the_final_run(url: str) -> None:
    def succeed_second_time(job: pgxjob.Job) -> None:
        if job.error_count == 0:
            raise pgxjob.ErrorWithRetry("not yet", dt.datetime.now(dt.UTC))

    scheduler = pgxjob.Scheduler(
        url, job_types=[pgxjob.JobTypeConfig("twice", succeed_second_time)]
    )
    try:
        job_id = scheduler.schedule(None, "twice", None)
        worker = scheduler.start_worker(should_log_job_run=pgxjob.log_final_job_runs, **FAST)
        wait_for(lambda: job_counts(url) == (0, 0, 1), what="the final run")
        assert worker.shutdown(10)
        assert query(url, "select job_id, run_number, error from pgxjob_job_runs") == [
            (job_id, 2, None)
        ]
    finally:
        scheduler.close()


def test_a_worker_started_while_the_database_is_down_starts_when_it_is_back() -> None:
    conninfo = create_database("pgxjob_down")
    drop_database(conninfo)  # the database is unreachable: connections fail
    errors: list[BaseException] = []
    recorder = Recorder()
    scheduler = pgxjob.Scheduler(
        conninfo,
        job_types=[pgxjob.JobTypeConfig("later", recorder)],
        handle_error=errors.append,
    )
    try:
        started = time.monotonic()
        worker = scheduler.start_worker(**FAST)
        assert time.monotonic() - started < 1.0  # returns at once
        wait_for(lambda: len(errors) >= 2, what="failures reported to handle_error")
        assert not worker.startup_complete.is_set()

        recreate(conninfo)
        migrate(conninfo)
        assert worker.startup_complete.wait(20)
        scheduler.schedule(None, "later", {"back": True})
        wait_for(lambda: recorder.count() == 1, what="the job after the outage")
        assert worker.shutdown(10)
    finally:
        scheduler.close()
        drop_database(conninfo)


def recreate(conninfo: str) -> None:
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.sql import SQL, Identifier

    from tests.dbserver import admin_conninfo

    name = str(conninfo_to_dict(conninfo)["dbname"])
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(SQL("create database {}").format(Identifier(name)))


STRESS_JOBS = int(os.environ.get("PGXJOB_STRESS_JOBS", "10000"))


def run_stress(url: str, total: int) -> None:
    rng = random.Random(1234)
    backoff = pgxjob.RetryLinearBackoffErrorFilter(3, dt.timedelta(milliseconds=20))
    succeeded: set[int] = set()
    lock = threading.Lock()

    def handler(job: pgxjob.Job) -> None:
        roll = int((job.params or "0").split(":")[-1].rstrip("}")) % 10
        if roll == 0 and job.error_count == 0:
            raise pgxjob.ErrorWithRetry(
                "retry me", dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=30)
            )
        if roll == 1:
            raise ValueError("gives up")
        with lock:
            succeeded.add(job.id)

    handler_with_backoff = pgxjob.filter_error(handler, backoff)
    groups = ["alpha", "beta", "gamma"]
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=groups,
        job_types=[
            pgxjob.JobTypeConfig("t1", handler, default_group_name="alpha"),
            pgxjob.JobTypeConfig("t2", handler_with_backoff, default_group_name="beta"),
        ],
    )
    try:
        scheduled = 0
        for start in range(0, total, 5_000):
            size = min(5_000, total - start)
            params = [{"r": rng.randrange(1_000_000)} for _ in range(size)]
            scheduler.schedule_many(
                None, rng.choice(["t1", "t2"]), params, group_name=rng.choice(groups)
            )
            scheduled += size
        workers = [
            scheduler.start_worker(group_name=group, max_concurrent_jobs=4, **FAST)
            for group in groups
            for _ in range(2)
        ]
        wait_for(lambda: len(succeeded) >= total // 3, timeout=120, what="a third of the jobs")
        for worker in workers:
            assert worker.shutdown(60)
        pending_asap, pending_timed, _ = job_counts(url)
        [(successful_runs, distinct_jobs)] = query(
            url, "select count(*), count(distinct job_id) from pgxjob_job_runs where error is null"
        )
        [(final_failures,)] = query(
            url,
            "select count(*) from pgxjob_job_runs r where error is not null and not exists"
            " (select 1 from pgxjob_run_at_jobs j where j.id = r.job_id)"
            " and r.run_number = (select max(run_number) from pgxjob_job_runs x"
            " where x.job_id = r.job_id)",
        )
        assert successful_runs == distinct_jobs == len(succeeded)
        assert pending_asap + pending_timed + successful_runs + final_failures == scheduled
        assert owned_jobs(url) == 0
        assert query(url, "select count(*) from pgxjob_workers") == [(0,)]
    finally:
        scheduler.close()


def test_stress_random_jobs_failures_and_retries_shut_down_midway(url: str) -> None:
    run_stress(url, STRESS_JOBS)


@pytest.mark.slow
def test_stress_one_hundred_thousand_jobs(url: str) -> None:
    run_stress(url, 100_000)
