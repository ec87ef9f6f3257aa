"""Faults, end to end against real PostgreSQL: killed processes, dropped connections, outages.

The server is shared, so outages are simulated by tests/faultproxy.py between the workers and
the server, and only the backends of each test's own scratch database are ever terminated.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.errors import NotReadyError
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.faultproxy import fault_proxy
from tests.worker_process import JOB_TYPE, WorkerProcess

# Millisecond heartbeats. A worker is reaped when silent for its own dead_after; the workers
# meant to survive get a margin, so a busy shared server does not reap them by accident.
FAST_HEARTBEAT = {"min_heartbeat_delay": 0.05, "heartbeat_delay_jitter": 0.05}
VICTIM_DEAD_AFTER = 0.5


@pytest.fixture
def url() -> Iterator[str]:
    """A freshly migrated scratch database of its own for each test."""
    with scratch_database("pgxjob_fault") as conninfo:
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("select pgxjob_register_job_type(%s)", (JOB_TYPE,))
            # Filled by tests/worker_process.py: one row per run, so a double run shows up.
            conn.execute("create table fault_runs (job_id bigint not null, pid int not null)")
        yield conninfo


def query(url: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def execute(url: str, sql: str, params: Any = ()) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql, params)


def scalar(url: str, sql: str, params: Any = ()) -> Any:
    ((value,),) = query(url, sql, params)
    return value


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def schedule_via_sql(url: str, count: int) -> list[int]:
    rows = query(
        url,
        "select pgxjob_schedule_many(%s, array_fill(null::json, array[%s]))",
        (JOB_TYPE, count),
    )
    return [int(row[0]) for row in rows]


def pending_jobs(url: str) -> int:
    return int(
        scalar(
            url,
            "select (select count(*) from pgxjob_asap_jobs)"
            " + (select count(*) from pgxjob_run_at_jobs)",
        )
    )


def successful_runs(url: str) -> dict[int, int]:
    """Run-log rows without an error, counted per job id."""
    rows = query(url, "select job_id, count(*) from pgxjob_job_runs where error is null group by 1")
    return {int(job_id): int(count) for job_id, count in rows}


class Recorder:
    """A handler that remembers every job id it ran, duplicates included."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.ids: list[int] = []

    def __call__(self, job: pgxjob.Job) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.ids.append(job.id)

    def snapshot(self) -> list[int]:
        with self.lock:
            return list(self.ids)


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


def raised_in(err: BaseException, function_name: str) -> bool:
    """Whether the error's traceback passes through a function of that name."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function_name:
            return True
        tb = tb.tb_next
    return False


def scheduler_for(
    conninfo: str, handler: Callable[[pgxjob.Job], None], errors: Errors
) -> pgxjob.Scheduler:
    return pgxjob.Scheduler(
        conninfo,
        job_types=[pgxjob.JobTypeConfig(JOB_TYPE, handler)],
        handle_error=errors,
    )


def test_jobs_of_a_worker_process_killed_mid_job_run_elsewhere_once_it_is_reaped(
    url: str,
) -> None:
    job_ids = schedule_via_sql(url, 3)
    with WorkerProcess(
        url,
        "--mode=block",
        "--max-concurrent-jobs=5",
        "--min-heartbeat-delay=0.05",
        "--heartbeat-delay-jitter=0.05",
        f"--worker-dead-without-heartbeat={VICTIM_DEAD_AFTER}",
    ) as victim:
        (victim_id,) = (int(word) for word in victim.expect("ready", timeout=20))
        started = {int(victim.expect("started", timeout=10)[0]) for _ in job_ids}
        assert started == set(job_ids)

        # A second worker, in this process, that finishes what it is given.
        recorder = Recorder()
        errors = Errors()
        scheduler = scheduler_for(url, recorder, errors)
        try:
            survivor = scheduler.start_worker(
                poll_interval=60, worker_dead_without_heartbeat=3, **FAST_HEARTBEAT
            )
            assert survivor.startup_complete.wait(10)
            # Longer than the victim's dead_after: while it heartbeats, it is not reaped.
            time.sleep(2 * VICTIM_DEAD_AFTER)
            assert recorder.snapshot() == [], "the survivor ran jobs the live victim owned"
            assert scalar(url, "select count(*) from pgxjob_workers where id = %s", (victim_id,))

            victim.kill()
            killed_at = time.monotonic()
            wait_for(lambda: len(recorder.snapshot()) == len(job_ids), 10, "jobs to run again")
            elapsed = time.monotonic() - killed_at
            wait_for(lambda: pending_jobs(url) == 0, 10, "results to be recorded")
            assert survivor.shutdown(timeout=10)
        finally:
            scheduler.close(timeout=10)

    assert sorted(recorder.snapshot()) == sorted(job_ids)
    # Reaped after dead_after without a heartbeat, not after a poll interval (60 s).
    assert elapsed < 5
    assert successful_runs(url) == {job_id: 1 for job_id in job_ids}
    assert not scalar(url, "select count(*) from pgxjob_workers where id = %s", (victim_id,))


def listener_backends(url: str) -> list[int]:
    return [
        int(pid)
        for (pid,) in query(
            url,
            "select pid from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and query ilike 'listen %%'",
        )
    ]


def test_listener_survives_termination_of_its_connection(url: str) -> None:
    recorder = Recorder()
    errors = Errors()
    scheduler = scheduler_for(url, recorder, errors)
    try:
        worker = scheduler.start_worker(poll_interval=60, max_buffered_job_result_age=0.02)
        assert worker.startup_complete.wait(10)
        wait_for(lambda: len(listener_backends(url)) == 1, 10, "the listener to connect")

        for round_number in range(1, 3):
            (old_pid,) = listener_backends(url)
            assert scalar(url, "select pg_terminate_backend(%s)", (old_pid,))
            wait_for(
                lambda old_pid=old_pid: listener_backends(url) not in ([], [old_pid]),
                10,
                "the listener to reconnect",
            )
            assert len(listener_backends(url)) == 1
            # Let the wake-up that follows a reconnection pass, so only a NOTIFY can wake the
            # worker now; the next poll is a minute away.
            time.sleep(0.3)
            (job_id,) = schedule_via_sql(url, 1)
            scheduled_at = time.monotonic()
            wait_for(lambda job_id=job_id: job_id in recorder.snapshot(), 5, "the job to run")
            assert time.monotonic() - scheduled_at < 2
            assert len(errors.snapshot()) >= round_number, "the dropped connection went unreported"
        assert all(isinstance(err, psycopg.OperationalError) for err in errors.snapshot())
        assert worker.shutdown(timeout=10)
    finally:
        scheduler.close(timeout=10)
    assert len(successful_runs(url)) == 2
    assert pending_jobs(url) == 0


def test_result_flush_failing_while_the_database_restarts_is_retried_and_loses_nothing(
    url: str,
) -> None:
    count = 600
    recorder = Recorder(delay=0.01)
    errors = Errors()
    with fault_proxy(url) as proxy:
        scheduler = scheduler_for(proxy.conninfo, recorder, errors)
        try:
            worker = scheduler.start_worker(
                poll_interval=60,
                max_concurrent_jobs=4,
                max_prefetched_jobs=1000,
                max_buffered_job_results=50,
                max_buffered_job_result_age=0.05,
            )
            assert worker.startup_complete.wait(10)
            job_ids = schedule_via_sql(url, count)
            wait_for(lambda: len(successful_runs(url)) >= 50, 10, "some results to be flushed")

            # The "restart": every connection is dropped and the server is unreachable for 6.5 s
            # while the handlers go on finishing prefetched jobs. Longer than the scheduler's
            # pool timeout (5 s): a shorter outage only makes the flush wait for a checked
            # connection, and no flush would fail.
            assert proxy.outage() > 0
            ran_before = len(recorder.snapshot())
            time.sleep(6.5)
            ran_during = len(recorder.snapshot()) - ran_before
            recorded_during = len(successful_runs(url))
            proxy.resume()

            wait_for(lambda: pending_jobs(url) == 0, 20, "every job to be recorded")
            assert worker.shutdown(timeout=10)
        finally:
            scheduler.close(timeout=10)

    assert ran_during > 0, "no job finished during the outage: the test proved nothing"
    flush_failures = [err for err in errors.snapshot() if raised_in(err, "_flush_loop")]
    assert flush_failures, f"no flush failed during the outage; errors: {errors.snapshot()!r}"
    assert recorded_during < count
    # Each job ran once and has exactly one successful run-log row.
    assert sorted(recorder.snapshot()) == sorted(job_ids)
    assert successful_runs(url) == {job_id: 1 for job_id in job_ids}
    assert scalar(url, "select count(*) from pgxjob_job_runs") == count
    assert pending_jobs(url) == 0


@pytest.mark.parametrize("message", ["nul \x00 byte", "lone \ud800 surrogate"])
def test_handler_error_text_postgresql_cannot_store_is_recorded_and_blocks_no_other_result(
    url: str, message: str
) -> None:
    def handler(job: pgxjob.Job) -> None:
        if job.params is not None and json.loads(job.params)["poison"]:
            raise ValueError(message)

    errors = Errors()
    scheduler = scheduler_for(url, handler, errors)
    try:
        worker = scheduler.start_worker(poll_interval=60, max_buffered_job_result_age=0.02)
        assert worker.startup_complete.wait(10)
        (poison, *fine) = scheduler.schedule_many(
            None, JOB_TYPE, [{"poison": p} for p in (True, False, False)]
        )
        wait_for(lambda: pending_jobs(url) == 0, 3, "every result to be recorded")
        assert worker.shutdown(timeout=5)
    finally:
        scheduler.close(timeout=1)
    assert successful_runs(url) == {job_id: 1 for job_id in fine}
    (error,) = query(url, "select error from pgxjob_job_runs where job_id = %s", (poison,))[0]
    assert error.startswith("ValueError: ")


def test_two_processes_of_two_workers_share_twenty_thousand_jobs_each_run_once(url: str) -> None:
    count = 20_000
    options = ("--workers=2", "--poll-interval=60", "--worker-dead-without-heartbeat=5")
    with WorkerProcess(url, *options) as first, WorkerProcess(url, *options) as second:
        first.expect("ready", timeout=20)
        second.expect("ready", timeout=20)
        job_ids = schedule_via_sql(url, count)
        wait_for(lambda: pending_jobs(url) == 0, 30, "the 20,000 jobs to drain")
        ran = {first.pid: first.stop(), second.pid: second.stop()}

    assert sum(ran.values()) == count
    assert all(ran.values()), f"one process ran no job: {ran}"
    per_process = dict(query(url, "select pid, count(*) from fault_runs group by pid"))
    assert per_process == ran
    (total, distinct, lowest, highest) = query(
        url, "select count(*), count(distinct job_id), min(job_id), max(job_id) from fault_runs"
    )[0]
    assert (total, distinct) == (count, count), "some job ran twice"
    assert (lowest, highest) == (min(job_ids), max(job_ids))
    assert scalar(url, "select count(*) from pgxjob_job_runs where error is null") == count
    assert scalar(url, "select count(*) from pgxjob_job_runs") == count
    assert scalar(url, "select count(*) from pgxjob_workers") == 0
    assert pending_jobs(url) == 0


def test_worker_reaped_while_alive_registers_again_and_keeps_running_jobs(url: str) -> None:
    recorder = Recorder()
    errors = Errors()
    scheduler = scheduler_for(url, recorder, errors)
    try:
        worker = scheduler.start_worker(
            poll_interval=60,
            max_buffered_job_result_age=0.02,
            worker_dead_without_heartbeat=5,
            **FAST_HEARTBEAT,
        )
        assert worker.startup_complete.wait(10)
        (first_job,) = schedule_via_sql(url, 1)
        wait_for(lambda: recorder.snapshot() == [first_job], 5, "the first job to run")
        old_id = worker.id
        assert old_id is not None

        # As a live worker with a skewed clock, or an operator, would: reap everyone.
        assert scalar(url, "select pgxjob_reap_dead_workers(now() + interval '1 day')") == 1
        wait_for(
            lambda: worker.id is not None and worker.id != old_id, 5, "the worker to register again"
        )
        new_id = worker.id
        assert scalar(url, "select array_agg(id) from pgxjob_workers") == [new_id]

        (second_job,) = schedule_via_sql(url, 1)
        wait_for(lambda: second_job in recorder.snapshot(), 5, "a job after re-registering")
        wait_for(lambda: pending_jobs(url) == 0, 5, "its result to be recorded")

        # Reaped again, this time by deleting its row: it still recovers.
        execute(url, "delete from pgxjob_workers where id = %s", (new_id,))
        wait_for(lambda: worker.id not in (None, new_id), 5, "the worker to register a third time")
        (third_job,) = schedule_via_sql(url, 1)
        wait_for(lambda: third_job in recorder.snapshot(), 5, "a job after the second reaping")
        assert worker.shutdown(timeout=10)
    finally:
        scheduler.close(timeout=10)

    assert recorder.snapshot() == [first_job, second_job, third_job]
    assert successful_runs(url) == {first_job: 1, second_job: 1, third_job: 1}
    assert scalar(url, "select count(*) from pgxjob_workers") == 0
    assert pending_jobs(url) == 0


def test_startup_while_the_database_is_down_returns_at_once_and_starts_when_it_is_back(
    url: str,
) -> None:
    recorder = Recorder()
    errors = Errors()
    with fault_proxy(url) as proxy:
        proxy.refuse()
        began = time.monotonic()
        scheduler = pgxjob.Scheduler(
            proxy.conninfo,
            job_types=[pgxjob.JobTypeConfig(JOB_TYPE, recorder)],
            handle_error=errors,
        )
        try:
            worker = scheduler.start_worker(poll_interval=60, max_buffered_job_result_age=0.02)
            assert time.monotonic() - began < 0.5, "Scheduler() or start_worker() waited"

            wait_for(lambda: len(errors.snapshot()) >= 2, 10, "failures to reach handle_error")
            assert all(isinstance(err, psycopg.OperationalError) for err in errors.snapshot())
            assert proxy.refused > 0
            assert not worker.startup_complete.is_set()
            assert worker.id is None
            with pytest.raises(NotReadyError, match="did not finish"):
                scheduler.wait_ready(timeout=0.1)

            # Scheduled straight on the server, bypassing the proxy, while the worker waits.
            (job_id,) = schedule_via_sql(url, 1)
            time.sleep(0.3)
            assert recorder.snapshot() == []

            proxy.resume()
            assert worker.startup_complete.wait(15), "the worker did not start after the outage"
            assert worker.id is not None
            wait_for(lambda: recorder.snapshot() == [job_id], 10, "the job to run")
            wait_for(lambda: pending_jobs(url) == 0, 10, "its result to be recorded")
            assert worker.shutdown(timeout=10)
        finally:
            scheduler.close(timeout=10)

    assert successful_runs(url) == {job_id: 1}
    assert scalar(url, "select count(*) from pgxjob_workers") == 0


def test_fault_proxy_drops_and_refuses_connections_until_resumed(url: str) -> None:
    with fault_proxy(url) as proxy:
        conn = psycopg.connect(proxy.conninfo, autocommit=True, connect_timeout=5)
        try:
            assert conn.execute("select 1").fetchone() == (1,)
            assert proxy.outage() == 1
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
        finally:
            conn.close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.conninfo, connect_timeout=5).close()
        proxy.resume()
        with psycopg.connect(proxy.conninfo, autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("select %s::int", (os.getpid(),)).fetchone() == (os.getpid(),)
