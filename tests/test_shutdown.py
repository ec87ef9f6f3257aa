"""Shutdown keeps its promise: one deadline, unstarted jobs handed back at once, no job started
after it begins, callable from a handler, and at interpreter exit."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.faultproxy import fault_proxy
from tests.test_faults import pending_jobs, query, scalar, successful_runs, wait_for

OWNED = (
    "select (select count(*) from pgxjob_asap_jobs where worker_id is not null)"
    " + (select count(*) from pgxjob_run_at_jobs where worker_id is not null)"
)


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_shutdown") as conninfo:
        migrate(conninfo)
        yield conninfo


class Gate:
    """A handler that records each job it starts and waits until the gate opens."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.started: list[int] = []

    def __call__(self, job: pgxjob.Job) -> None:
        with self.lock:
            self.started.append(job.id)
        self.open.wait(60)

    def count(self) -> int:
        with self.lock:
            return len(self.started)


def test_close_has_one_deadline_for_all_workers_and_releases_what_was_not_recorded(
    url: str,
) -> None:
    gate = Gate()
    groups = ["a", "b", "c"]
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=groups,
        job_types=[pgxjob.JobTypeConfig(f"t_{g}", gate, default_group_name=g) for g in groups],
        handle_error=lambda err: None,
    )
    try:
        workers = [
            scheduler.start_worker(group_name=g, poll_interval=0.05, max_concurrent_jobs=1)
            for g in groups
        ]
        for worker in workers:
            assert worker.startup_complete.wait(10)
        for group in groups:
            scheduler.schedule_many(None, f"t_{group}", [None] * 3)
        wait_for(lambda: gate.count() == 3, 10, "one hung job per worker")

        started = time.monotonic()
        assert scheduler.close(timeout=1) is False
        elapsed = time.monotonic() - started
        # One deadline for the three, not one each; the unregistering calls take little more.
        assert elapsed < 2.5, f"close took {elapsed:.1f}s"
        # Nothing stays owned by the workers that are gone: the hung jobs run again elsewhere.
        assert scalar(url, OWNED) == 0
        assert scalar(url, "select count(*) from pgxjob_workers") == 0
        assert pending_jobs(url) == 9
    finally:
        gate.open.set()
        scheduler.close(1)


def test_close_waits_for_every_worker_to_record_its_results_before_closing_the_pool(
    url: str,
) -> None:
    running: list[int] = []

    def slow(job: pgxjob.Job) -> None:
        running.append(job.id)
        time.sleep(0.3)

    groups = ["a", "b", "c"]
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=groups,
        job_types=[pgxjob.JobTypeConfig(f"t_{g}", slow, default_group_name=g) for g in groups],
    )
    workers = [
        scheduler.start_worker(group_name=g, poll_interval=0.05, max_buffered_job_result_age=60)
        for g in groups
    ]
    for worker in workers:
        assert worker.startup_complete.wait(10)
    ids = [scheduler.schedule(None, f"t_{g}") for g in groups]
    # Started, not only claimed: a job still waiting in a worker's queue at shutdown is handed
    # back to the queue unrun.
    wait_for(lambda: len(running) == 3, 10, "every job to start")
    started = time.monotonic()
    assert scheduler.close(timeout=10) is True
    # Concurrently: about one handler's time, not three.
    assert time.monotonic() - started < 0.9 * 3
    assert successful_runs(url) == {job_id: 1 for job_id in ids}
    assert scalar(url, "select count(*) from pgxjob_workers") == 0


def test_a_hung_handler_keeps_only_its_own_job_and_no_job_starts_after_shutdown(url: str) -> None:
    gate = Gate()
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", gate)])
    other = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: None)])
    try:
        worker = scheduler.start_worker(poll_interval=60, max_concurrent_jobs=1)
        assert worker.startup_complete.wait(10)
        ids = scheduler.schedule_many(None, "t", [None] * 50)
        wait_for(lambda: gate.count() == 1, 10, "the first job to hang")
        wait_for(lambda: scalar(url, OWNED) == 50, 10, "every job to be prefetched")

        assert worker.shutdown(timeout=0) is False
        # At once, the 49 jobs that never started are handed back (one call) for others.
        wait_for(lambda: scalar(url, OWNED) == 1, 2, "the unstarted jobs to be released")
        helper = other.start_worker(poll_interval=0.05)
        wait_for(lambda: len(successful_runs(url)) == 49, 20, "another worker to run them")

        gate.open.set()
        assert worker.shutdown(timeout=10)
        assert gate.count() == 1, "a job started after shutdown began"
        assert successful_runs(url) == {job_id: 1 for job_id in ids}
        assert helper.shutdown(10)
    finally:
        gate.open.set()
        scheduler.close(5)
        other.close(5)


def test_shutdown_called_from_inside_a_handler_returns_and_the_worker_stops(url: str) -> None:
    returned = threading.Event()
    results: list[bool] = []

    def handler(job: pgxjob.Job) -> None:
        worker = workers[0]
        results.append(worker.shutdown())  # no timeout: it must not wait for this very job
        returned.set()

    workers: list[pgxjob.Worker] = []
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        workers.append(scheduler.start_worker(poll_interval=0.05))
        assert workers[0].startup_complete.wait(10)
        job_id = scheduler.schedule(None, "t")
        assert returned.wait(5), "shutdown() from a handler did not return"
        assert results == [False]
        assert workers[0].shutdown(10)
        assert workers[0].stopped
        assert successful_runs(url) == {job_id: 1}
        assert scalar(url, "select count(*) from pgxjob_workers") == 0
    finally:
        scheduler.close(5)


def test_two_shutdowns_and_a_close_at_once_all_finish(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda j: None)])
    worker = scheduler.start_worker(poll_interval=0.05)
    assert worker.startup_complete.wait(10)
    scheduler.schedule_many(None, "t", [None] * 20)
    outcomes: list[bool] = []
    callers = [
        threading.Thread(target=lambda: outcomes.append(worker.shutdown(10))),
        threading.Thread(target=lambda: outcomes.append(worker.shutdown(10))),
        threading.Thread(target=lambda: outcomes.append(scheduler.close(10))),
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(15)
    assert outcomes == [True, True, True]
    assert scalar(url, OWNED) == 0
    assert scalar(url, "select count(*) from pgxjob_workers") == 0


@pytest.mark.parametrize("exception", ["SystemExit", "KeyboardInterrupt"])
def test_a_handler_stopping_the_process_releases_its_job_uncounted_and_stops_the_worker(
    url: str, exception: str
) -> None:
    def handler(job: pgxjob.Job) -> None:
        raise {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt()}[exception]

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    try:
        worker = scheduler.start_worker(poll_interval=60, max_concurrent_jobs=1)
        assert worker.startup_complete.wait(10)
        ids = scheduler.schedule_many(None, "t", [None] * 5)
        wait_for(
            lambda: scalar(url, "select count(*) from pgxjob_workers") == 0,
            10,
            "the worker to stop",
        )
        assert worker.stopped
        # Not a failure: every job is back, unowned, with no attempt counted and no run logged.
        assert sorted(r[0] for r in query(url, "select id from pgxjob_asap_jobs")) == sorted(ids)
        assert scalar(url, OWNED) == 0
        assert scalar(url, "select count(*) from pgxjob_job_runs") == 0
        assert scalar(url, "select count(*) from pgxjob_workers") == 0
    finally:
        scheduler.close(5)


def test_the_end_of_the_program_without_close_releases_jobs_and_unregisters(url: str) -> None:
    script = textwrap.dedent(
        """
        import sys, threading, pgxjob
        started = threading.Event()

        def handler(job):
            started.set()
            try:
                job.shutdown_requested.wait(60)
            finally:
                print("finally ran", flush=True)

        scheduler = pgxjob.Scheduler(sys.argv[1], job_types=[pgxjob.JobTypeConfig("t", handler)])
        worker = scheduler.start_worker(poll_interval=60, max_concurrent_jobs=1)
        worker.startup_complete.wait(10)
        scheduler.schedule_many(None, "t", [None] * 30)
        started.wait(10)
        print("exiting", flush=True)
        sys.exit(0)  # no close, no `with`
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script, url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["exiting", "finally ran"], proc.stderr
    assert elapsed < 20
    # The job that ran finished within the exit deadline and was recorded; the rest are free.
    assert scalar(url, "select count(*) from pgxjob_job_runs") == 1
    assert pending_jobs(url) == 29
    assert scalar(url, OWNED) == 0
    assert scalar(url, "select count(*) from pgxjob_workers") == 0


def test_close_returns_on_time_with_the_database_down_and_the_workers_are_reaped_later(
    url: str,
) -> None:
    gate = Gate()
    groups = ["a", "b", "c"]
    types = [pgxjob.JobTypeConfig(f"t_{g}", gate, default_group_name=g) for g in groups]
    with fault_proxy(url) as proxy:
        scheduler = pgxjob.Scheduler(
            proxy.conninfo, job_groups=groups, job_types=types, handle_error=lambda err: None
        )
        try:
            workers = [
                scheduler.start_worker(
                    group_name=g,
                    poll_interval=60,
                    max_concurrent_jobs=1,
                    min_heartbeat_delay=0.1,
                    heartbeat_delay_jitter=0.05,
                    worker_dead_without_heartbeat=1.5,
                )
                for g in groups
            ]
            for worker in workers:
                assert worker.startup_complete.wait(10)
            for group in groups:
                scheduler.schedule_many(None, f"t_{group}", [None] * 2)
            wait_for(lambda: gate.count() == 3, 10, "a job to hang in each worker")
            wait_for(lambda: scalar(url, OWNED) == 6, 10, "every job to be prefetched")
            proxy.outage()
            started = time.monotonic()
            assert scheduler.close(timeout=1) is False
            # The deadline, then one unregistering attempt for all three workers together,
            # bounded by the pool's 5 s timeout (not 5 s per worker).
            assert time.monotonic() - started < 9
        finally:
            gate.open.set()
            proxy.resume()
            scheduler.close(1)
    # They send no heartbeat any more, so any live worker reaps them and takes their jobs.
    other = pgxjob.Scheduler(
        url, job_groups=groups, job_types=[dataclasses.replace(t, run_job=noop) for t in types]
    )
    try:
        helpers = [
            other.start_worker(
                group_name=g,
                poll_interval=0.1,
                min_heartbeat_delay=0.1,
                heartbeat_delay_jitter=0.05,
            )
            for g in groups
        ]
        wait_for(lambda: pending_jobs(url) == 0, 20, "the jobs to run elsewhere")
        for helper in helpers:
            assert helper.shutdown(10)
    finally:
        other.close(5)
    assert scalar(url, "select count(*) from pgxjob_workers") == 0


def noop(job: pgxjob.Job) -> None:
    pass


def test_a_worker_waiting_for_an_unreachable_database_shuts_down_at_once() -> None:
    scheduler = pgxjob.Scheduler(
        "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1", handle_error=lambda err: None
    )
    try:
        worker = scheduler.start_worker(poll_interval=60)
        time.sleep(0.3)  # registration is waiting for the scheduler's setup
        started = time.monotonic()
        assert worker.shutdown(timeout=5)
        assert time.monotonic() - started < 1
    finally:
        scheduler.close(1)


def test_close_called_from_inside_a_handler_returns_and_the_workers_stop(url: str) -> None:
    returned = threading.Event()
    results: list[bool] = []

    def handler(job: pgxjob.Job) -> None:
        results.append(scheduler.close())
        returned.set()

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    worker = scheduler.start_worker(poll_interval=0.05)
    assert worker.startup_complete.wait(10)
    job_id = scheduler.schedule(None, "t")
    assert returned.wait(5), "close() from a handler did not return"
    assert results == [False]
    assert worker.shutdown(10)
    assert scheduler.close(5)
    assert successful_runs(url) == {job_id: 1}
    assert scalar(url, "select count(*) from pgxjob_workers") == 0
