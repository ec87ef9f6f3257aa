"""How the Scheduler connects: fork safety, stale pooled connections, the listener's connection
(with an application pool or an acquire_conn callable) and the error when the database is down."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

import pgxjob
from pgxjob.errors import NotReadyError
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_conn") as conninfo:
        migrate(conninfo)
        yield conninfo


def scalar(url: str, query: str, params: Any = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


class Recorder:
    """A handler that counts the jobs it ran, and an error reporter that keeps what it hears."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: list[int] = []
        self.errors: list[BaseException] = []

    def run_job(self, job: pgxjob.Job) -> None:
        with self.lock:
            self.ran.append(job.id)

    def handle_error(self, err: BaseException) -> None:
        with self.lock:
            self.errors.append(err)

    def count(self) -> int:
        with self.lock:
            return len(self.ran)


FAST = {"max_buffered_job_result_age": 0.02, "poll_interval": 60}


# -- fork -----------------------------------------------------------------------------------------


def test_a_forked_child_starts_clean_and_the_parent_keeps_working(url: str) -> None:
    record = Recorder()
    child_ran = threading.Event()
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=["child"],
        job_types=[
            pgxjob.JobTypeConfig("t", record.run_job),
            pgxjob.JobTypeConfig(
                "in_child", lambda job: child_ran.set(), default_group_name="child"
            ),
        ],
        handle_error=record.handle_error,
    )
    try:
        worker = scheduler.start_worker(**FAST)
        assert worker.startup_complete.wait(10)
        scheduler.schedule_many(None, "t", [{"n": n} for n in range(100)])
        wait_for(lambda: record.count() == 100)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                # Nothing of the parent's: no worker, and fresh connections for each call.
                clean = scheduler.workers == []
                for n in range(150):
                    scheduler.schedule(None, "t", {"child": n})
                child_worker = scheduler.start_worker(group_name="child", **FAST)
                scheduler.schedule(None, "in_child")
                ran = child_ran.wait(20)
                stopped = child_worker.shutdown(10)
                scheduler.close(5)
                code = 0 if clean and ran and stopped else 1
            finally:
                os._exit(code)
        # Meanwhile the parent schedules on its own pool.
        for n in range(151):
            scheduler.schedule(None, "t", {"parent": n})
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        scheduler.schedule(None, "t", {"after": "fork"})
        wait_for(lambda: record.count() == 402, what="402 runs in the parent")
        assert record.errors == []
        assert scalar(url, "select count(*) from pgxjob_job_runs where error is null") == 403
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)


_mp_scheduler: pgxjob.Scheduler | None = None


def _schedule_in_child(count: int) -> None:
    assert _mp_scheduler is not None
    for n in range(count):
        _mp_scheduler.schedule(None, "t", {"mp": n})


def test_multiprocessing_fork_children_schedule_on_their_own_connections(url: str) -> None:
    global _mp_scheduler
    record = Recorder()
    scheduler = pgxjob.Scheduler(
        url, job_types=[pgxjob.JobTypeConfig("t", record.run_job)], handle_error=record.handle_error
    )
    _mp_scheduler = scheduler
    try:
        worker = scheduler.start_worker(**FAST)
        assert worker.startup_complete.wait(10)
        scheduler.schedule(None, "t")
        wait_for(lambda: record.count() == 1)
        context = multiprocessing.get_context("fork")
        children = [context.Process(target=_schedule_in_child, args=(100,)) for _ in range(2)]
        for child in children:
            child.start()
        for n in range(100):
            scheduler.schedule(None, "t", {"parent": n})
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        wait_for(lambda: record.count() == 301, what="301 runs")
        assert record.errors == []
        assert worker.shutdown(10)
    finally:
        _mp_scheduler = None
        scheduler.close(5)


# -- stale connections ----------------------------------------------------------------------------


def test_connections_the_server_closed_are_replaced_before_use(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: None)])
    try:
        # Fill the pool with a few connections, as a busy application would.
        threads = [threading.Thread(target=scheduler.schedule, args=(None, "t")) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        # What a server restart does to every pooled connection.
        terminated = scalar(
            url,
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()",
        )
        assert terminated >= 1
        time.sleep(0.2)
        for _ in range(4):
            assert scheduler.schedule(None, "t") > 0
    finally:
        scheduler.close(5)


# -- the listener's connection --------------------------------------------------------------------


def listening_in(url: str) -> int:
    return int(
        scalar(
            url,
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and query ilike 'listen%%'",
        )
    )


def test_the_listener_connects_as_the_application_pool_does(url: str) -> None:
    options = conninfo_to_dict(url)
    dbname = str(options.pop("dbname"))
    # The conninfo names another database; the pool's kwargs choose the right one.
    elsewhere = make_conninfo("", **{**options, "dbname": "postgres"})
    ran = threading.Event()
    with ConnectionPool(elsewhere, kwargs={"dbname": dbname}, min_size=1, max_size=8) as pool:
        scheduler = pgxjob.Scheduler(
            pool, job_types=[pgxjob.JobTypeConfig("t", lambda j: ran.set())]
        )
        try:
            worker = scheduler.start_worker(**FAST)
            assert worker.startup_complete.wait(10)
            wait_for(lambda: listening_in(url) == 1, what="a listener in the pool's database")
            scheduler.schedule(None, "t")
            # poll_interval is 60 s: only the notification can start the job this soon.
            assert ran.wait(5)
            assert worker.shutdown(10)
        finally:
            scheduler.close(5)


def test_acquire_conn_over_a_one_connection_pool_runs_jobs(url: str) -> None:
    ran = threading.Event()
    with ConnectionPool(url, min_size=1, max_size=1, timeout=5) as pool:

        @contextlib.contextmanager
        def acquire() -> Iterator[psycopg.Connection[Any]]:
            with pool.connection() as conn:
                yield conn

        scheduler = pgxjob.Scheduler(
            acquire, job_types=[pgxjob.JobTypeConfig("t", lambda j: ran.set())]
        )
        try:
            worker = scheduler.start_worker(**FAST)
            assert worker.startup_complete.wait(10)
            wait_for(lambda: listening_in(url) == 1, what="a listener")
            scheduler.schedule(None, "t")
            assert ran.wait(5)
            assert worker.shutdown(10)
            # The listener never kept the pool's only connection.
            assert pool.get_stats()["pool_max"] == 1
        finally:
            scheduler.close(5)


# -- the database is down -------------------------------------------------------------------------


def test_schedule_with_the_database_down_names_the_connection_error() -> None:
    record = Recorder()
    # Port 1: nothing listens there, so every connection is refused at once.
    scheduler = pgxjob.Scheduler(
        "postgresql://nobody@127.0.0.1:1/none",
        job_types=[pgxjob.JobTypeConfig("t", lambda job: None)],
        handle_error=record.handle_error,
        setup_timeout=3,
    )
    try:
        started = time.monotonic()
        with pytest.raises(NotReadyError) as raised:
            scheduler.schedule(None, "t")
        assert time.monotonic() - started < 6
        assert "refused" in str(raised.value).lower()
        cause = raised.value.__cause__
        assert isinstance(cause, psycopg.OperationalError)
        assert type(cause).__name__ != "PoolTimeout"
        assert "refused" in str(cause).lower()
    finally:
        scheduler.close(5)
