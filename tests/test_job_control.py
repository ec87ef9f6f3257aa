"""Priorities, unique keys, cancellation and job output, as a worker and the CLI see them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import ROOT, scratch_database


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_database("pgxjob_control") as conninfo:
        migrate(conninfo)
        yield conninfo


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def runs(url: str, job_id: int) -> list[tuple[Any, ...]]:
    return query(
        url,
        "select run_number, outcome, error, output::text from pgxjob_job_runs"
        " where job_id = %s order by run_number",
        (job_id,),
    )


def pending(url: str) -> int:
    return int(
        query(
            url,
            "select (select count(*) from pgxjob_asap_jobs)"
            " + (select count(*) from pgxjob_run_at_jobs)",
        )[0][0]
    )


def started_scheduler(url: str, handler: Callable[[pgxjob.Job], Any]) -> pgxjob.Scheduler:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", handler)])
    scheduler.wait_ready(10)
    return scheduler


@pytest.mark.parametrize("listen", [True, False], ids=["notified", "polled"])
def test_cancelling_a_running_job_sets_its_event_and_finishes_it_as_cancelled(
    url: str, listen: bool
) -> None:
    started = threading.Event()
    seen = threading.Event()

    def handler(job: pgxjob.Job) -> None:
        started.set()
        if job.cancel_requested.wait(20):
            seen.set()
        # Raising anything, even an error the filter would retry, ends a cancelled job.
        raise pgxjob.ErrorWithRetry(RuntimeError("interrupted"), 1)

    scheduler = started_scheduler(url, handler)
    try:
        worker = scheduler.start_worker(poll_interval=0.2, listen=listen)
        job_id = scheduler.schedule(None, "t")
        assert started.wait(10)
        assert scheduler.cancel(None, job_id) == "cancel_requested"
        assert seen.wait(10), "the handler never saw job.cancel_requested"
        wait_for(lambda: pending(url) == 0, 10, "the cancelled job to be finished")
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)
    assert runs(url, job_id) == [(1, "cancelled", None, None)]


def test_a_handler_raising_job_cancelled_is_not_retried(url: str) -> None:
    def handler(job: pgxjob.Job) -> None:
        raise pgxjob.JobCancelled("the order was withdrawn")

    retrying = pgxjob.filter_error(handler, pgxjob.RetryLinearBackoffErrorFilter(5, 0.01))
    scheduler = started_scheduler(url, retrying)
    try:
        scheduler.start_worker(poll_interval=0.2)
        job_id = scheduler.schedule(None, "t")
        wait_for(lambda: pending(url) == 0, 10, "the job to be finished")
    finally:
        scheduler.close(5)
    assert runs(url, job_id) == [(1, "cancelled", None, None)]


def test_a_prefetched_job_cancelled_before_it_starts_never_runs(url: str) -> None:
    release = threading.Event()
    ran: list[int] = []

    def handler(job: pgxjob.Job) -> None:
        ran.append(job.id)
        release.wait(20)

    scheduler = started_scheduler(url, handler)
    try:
        worker = scheduler.start_worker(max_concurrent_jobs=1, poll_interval=0.2)
        first, second = scheduler.schedule_many(None, "t", [1, 2])
        wait_for(lambda: ran == [first], 10, "the first job to start")
        wait_for(
            lambda: (
                query(url, "select worker_id from pgxjob_asap_jobs where id = %s", (second,))
                == [(worker.id,)]
            ),
            10,
            "the second job to be prefetched",
        )
        assert scheduler.cancel(None, second) == "cancel_requested"
        wait_for(lambda: worker._queue.find(second) is not None, 5, "the job to be queued")
        wait_for(
            lambda: worker._queue.find(second).cancel_requested.is_set(),  # type: ignore[union-attr]
            10,
            "the worker to hear of it",
        )
        release.set()
        wait_for(lambda: pending(url) == 0, 10, "both jobs to finish")
    finally:
        release.set()
        scheduler.close(5)
    assert ran == [first]
    assert runs(url, second) == [(1, "cancelled", None, None)]


def test_cancelling_a_waiting_job_removes_it_and_a_finished_one_is_not_found(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: None)])
    try:
        job_id = scheduler.schedule(None, "t", run_at=None)
        with psycopg.connect(url) as conn:
            assert scheduler.cancel(conn, job_id) == "cancelled"
            conn.rollback()  # the caller's transaction: rolled back, nothing happened
        assert pending(url) == 1
        assert scheduler.cancel(None, job_id) == "cancelled"
        assert pending(url) == 0
        assert scheduler.cancel(None, job_id) == "not_found"
        with pytest.raises(ValueError, match="job_id"):
            scheduler.cancel(None, 0)
    finally:
        scheduler.close(5)


def test_a_worker_runs_higher_priorities_first_and_keeps_them_on_retry(url: str) -> None:
    order: list[tuple[str, int]] = []

    def handler(job: pgxjob.Job) -> None:
        order.append((json.loads(job.params or "null"), job.priority))
        if job.params == '"flaky"' and job.error_count == 0:
            raise pgxjob.ErrorWithRetry(RuntimeError("once more"), 0)

    scheduler = started_scheduler(url, handler)
    try:
        # A str is taken as JSON text: these are JSON strings.
        scheduler.schedule(None, "t", '"low"', priority=-5)
        scheduler.schedule(None, "t", '"normal"')
        scheduler.schedule(None, "t", '"flaky"', priority=7)
        scheduler.schedule(None, "t", '"urgent"', priority=9)
        worker = scheduler.start_worker(max_concurrent_jobs=1, max_prefetched_jobs=1)
        wait_for(lambda: pending(url) == 0, 15, "every job to finish")
        assert worker.shutdown(10)
    finally:
        scheduler.close(5)
    # One job runs while one more is prefetched: the retry of "flaky" may come after the job
    # prefetched meanwhile ("normal"), the inversion max_prefetched_jobs bounds.
    names = [name for name, _ in order]
    assert order[:2] == [("urgent", 9), ("flaky", 7)]
    assert order.count(("flaky", 7)) == 2, "the retry keeps its priority"
    assert names.index("normal") < names.index("low")
    assert len(order) == 5


def test_a_unique_key_schedules_one_job_until_it_finishes(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("t", lambda job: None)])
    try:
        first = scheduler.schedule(None, "t", {"v": 1}, unique_key="account:7")
        assert scheduler.schedule(None, "t", {"v": 2}, unique_key="account:7") == first
        assert scheduler.schedule_many(None, "t", [1, 2], unique_keys=["account:7", None])[0] == (
            first
        )
        with pytest.raises(ValueError, match="one key"):
            scheduler.schedule_many(None, "t", [1, 2], unique_keys=["only one"])
        with pytest.raises(ValueError, match="1000 bytes"):
            scheduler.schedule(None, "t", unique_key="k" * 1001)
        with pytest.raises(TypeError, match="priority"):
            scheduler.schedule(None, "t", priority=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="priority"):
            scheduler.schedule(None, "t", priority=2**31)
        scheduler.start_worker(poll_interval=0.2)
        wait_for(lambda: pending(url) == 0, 10, "the jobs to finish")
        assert scheduler.schedule(None, "t", unique_key="account:7") != first
    finally:
        scheduler.close(5)


def test_a_handlers_return_value_is_stored_as_its_runs_output(url: str) -> None:
    def handler(job: pgxjob.Job) -> Any:
        if job.params == '"bad"':
            return {"when": time}  # a module: not JSON
        if job.params == '"none"':
            return None
        return {"sent": 3, "to": ["a@example.com"]}

    scheduler = started_scheduler(url, handler)
    try:
        good, none, bad = (scheduler.schedule(None, "t", f'"{p}"') for p in ("good", "none", "bad"))
        scheduler.start_worker(poll_interval=0.2)
        wait_for(lambda: pending(url) == 0, 10, "the jobs to finish")
    finally:
        scheduler.close(5)
    assert runs(url, good) == [(1, "succeeded", None, '{"sent":3,"to":["a@example.com"]}')]
    assert runs(url, none) == [(1, "succeeded", None, None)]
    [(number, outcome, error, output)] = runs(url, bad)
    assert (number, outcome, output) == (1, "failed", None)
    assert "cannot be stored as the run's JSON output" in error


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pgxjob", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def test_the_cli_schedules_with_priority_and_key_cancels_and_shows_a_jobs_runs(url: str) -> None:
    query(url, "select pgxjob_register_job_type('cli_t')")
    first = cli(url, "schedule", "cli_t", '{"n": 1}', "--priority", "4", "--unique-key", "k")
    assert first.returncode == 0, first.stderr
    job_id = int(first.stdout)
    again = cli(url, "schedule", "cli_t", "--unique-key", "k")
    assert int(again.stdout) == job_id
    assert query(url, "select priority from pgxjob_asap_jobs where id = %s", (job_id,)) == [(4,)]

    cancelled = cli(url, "cancel", str(job_id), "999999")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.splitlines() == [f"{job_id}\tcancelled", "999999\tnot_found"]

    shown = cli(url, "runs", "--job", str(job_id), "--json")
    assert shown.returncode == 0, shown.stderr
    [record] = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (record["job_id"], record["outcome"], record["output"]) == (job_id, "cancelled", None)

    bad = cli(url, "cancel", "zero")
    assert bad.returncode == 2 and "not a job id" in bad.stderr


def test_a_job_whose_type_row_was_deleted_fails_naming_the_type_id_and_stalls_nothing(
    url: str,
) -> None:
    scheduler = started_scheduler(url, lambda job: None)
    try:
        query(url, "select pgxjob_register_job_type('doomed')")
        doomed = scheduler.schedule(None, "doomed")
        later = scheduler.schedule(None, "t")
        type_id = query(url, "select id from pgxjob_job_types where name = 'doomed'")[0][0]
        with psycopg.connect(url, autocommit=True) as conn:
            # The delete trigger refuses while jobs refer to the type; a replica-mode session
            # (triggers off) is how such a job could still lose its type.
            conn.execute("set session_replication_role = replica")
            conn.execute("delete from pgxjob_job_types where name = 'doomed'")
        scheduler.start_worker(poll_interval=0.2)
        wait_for(lambda: pending(url) == 0, 10, "both jobs to finish")
    finally:
        scheduler.close(5)
    [(_, outcome, error, _)] = runs(url, doomed)
    assert outcome == "failed"
    assert f"deleted job type id {type_id}" in error
    assert runs(url, later)[0][1] == "succeeded"
