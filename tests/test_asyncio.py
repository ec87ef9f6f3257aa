"""asyncio: schedule_async in the caller's transaction; coroutine handlers on a worker's loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.jobs import Signal


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def jobs(url: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "select id, params::text, priority from pgxjob_asap_jobs"
        " union all select id, params::text, priority from pgxjob_run_at_jobs order by 1",
    )


def runs(url: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "select job_id, run_number, outcome, output::text from pgxjob_job_runs"
        " order by job_id, run_number",
    )


@pytest.fixture
def scheduler_for(clean_db: str) -> Iterator[Callable[..., pgxjob.Scheduler]]:
    made: list[pgxjob.Scheduler] = []

    def make(*job_types: pgxjob.JobTypeConfig[Any], **options: Any) -> pgxjob.Scheduler:
        scheduler = pgxjob.Scheduler(clean_db, job_types=job_types, **options)
        scheduler.wait_ready(10)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close(timeout=5)


async def _noop(job: pgxjob.Job) -> None:
    pass


# -- scheduling -----------------------------------------------------------------------------------


def test_schedule_async_commits_and_rolls_back_with_the_callers_transaction(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    async def main() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            await scheduler.schedule_async(conn, "async_t", {"n": 1})
            await conn.rollback()
            kept = await scheduler.schedule_async(
                conn, "async_t", {"n": 2}, run_at=run_at, priority=7, unique_key="k"
            )
            assert jobs(clean_db) == []  # not before the commit
            await conn.commit()
            # The same unique key returns the holder's id.
            again = await scheduler.schedule_async(conn, "async_t", {"n": 3}, unique_key="k")
            await conn.commit()
            return kept, again

    kept, again = asyncio.run(main())
    assert again == kept
    assert jobs(clean_db) == [(kept, '{"n":2}', 7)]
    assert query(clean_db, "select run_at from pgxjob_run_at_jobs")[0][0] == run_at


def test_schedule_many_async_and_the_own_pool_of_each_event_loop(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))

    async def main() -> list[int]:
        ids = await scheduler.schedule_many_async(
            None, "async_t", [{"i": 0}, {"i": 1}, {"i": 2}], unique_keys=["a", None, "a"]
        )
        ids.append(await scheduler.schedule_now_async(None, "async_t", None, priority=1))
        assert len(scheduler._async_pools) == 1
        return ids

    first = asyncio.run(main())
    assert first[2] == first[0]
    # asyncio.run finalized the loop's pool; the next loop gets one of its own.
    assert scheduler._async_pools == {}
    second = asyncio.run(main())
    assert second[0] == first[0]  # the key is still held
    assert [row[0] for row in jobs(clean_db)] == sorted({*first, *second})
    assert scheduler._async_pools == {}


def test_async_and_sync_fronts_refuse_each_others_connections_and_other_drivers(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    import psycopg2

    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(clean_db) as aconn:
            with pytest.raises(TypeError, match="schedule_async"):
                scheduler.schedule(aconn, "async_t")
        with (
            psycopg.connect(clean_db) as conn,
            pytest.raises(TypeError, match=r"scheduler\.schedule\(conn"),
        ):
            await scheduler.schedule_async(conn, "async_t")
        with pytest.raises(ValueError, match="timezone-aware"):
            await scheduler.schedule_async(None, "async_t", run_at=dt.datetime(2030, 1, 1))
        with pytest.raises(TypeError, match="one params value per job"):
            await scheduler.schedule_many_async(None, "async_t", {"a": 1})  # type: ignore[arg-type]
        with pytest.raises(pgxjob.UnknownJobTypeError, match="no_such"):
            await scheduler.schedule_async(None, "no_such")

    asyncio.run(main())
    legacy = psycopg2.connect(clean_db)
    try:
        with pytest.raises(TypeError, match="pgxjob_schedule"):
            scheduler.schedule(legacy, "async_t")
    finally:
        legacy.close()
    assert jobs(clean_db) == []


def test_schedule_async_after_close_is_refused(
    scheduler_for: Callable[..., pgxjob.Scheduler],
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(scheduler.schedule_async(None, "async_t"))


# -- the typed shortcut ----------------------------------------------------------------------------


@dataclasses.dataclass
class Greeting:
    name: str


greeted: list[tuple[str, str]] = []


@pgxjob.job_type("greet_async")
@pgxjob.unmarshal_params
async def greet(job: pgxjob.Job, params: Greeting) -> dict[str, str]:
    await asyncio.sleep(0)
    greeted.append((params.name, threading.current_thread().name))
    return {"hello": params.name}


def test_a_job_type_schedules_itself_sync_and_async(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    scheduler = scheduler_for(greet)
    with pytest.raises(RuntimeError, match="no scheduler"):
        greet.schedule(None, Greeting("nobody"))
    with psycopg.connect(clean_db) as conn:
        first = greet.schedule(conn, Greeting("Ada"), scheduler=scheduler)
    with scheduler.with_context():
        second = asyncio.run(greet.schedule_async(None, Greeting("Bob"), priority=3))
    assert jobs(clean_db) == [(first, '{"name":"Ada"}', 0), (second, '{"name":"Bob"}', 3)]


# -- async handlers --------------------------------------------------------------------------------


def test_async_handlers_run_at_once_on_one_loop_thread_beside_sync_handlers(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    greeted.clear()
    running = 0
    most = 0
    threads: set[str] = set()
    contexts: list[bool] = []
    sync_threads: list[str] = []
    lock = threading.Lock()

    async def wait_for_all(job: pgxjob.Job) -> None:
        nonlocal running, most
        threads.add(threading.current_thread().name)
        contexts.append(pgxjob.ctx() is scheduler)
        with lock:
            running += 1
            most = max(most, running)
        # Each waits until all five run at once (or gives up): they overlap on one loop.
        for _ in range(500):
            if most >= 5:
                break
            await asyncio.sleep(0.01)
        with lock:
            running -= 1

    def plain(job: pgxjob.Job) -> str:
        sync_threads.append(threading.current_thread().name)
        return "sync"

    scheduler = scheduler_for(
        pgxjob.JobTypeConfig("overlap", wait_for_all),
        pgxjob.JobTypeConfig("plain", plain),
        greet,
    )
    scheduler.schedule_many(None, "overlap", [None] * 5)
    scheduler.schedule(None, "plain")
    greet.schedule(None, Greeting("Cy"), scheduler=scheduler)
    worker = scheduler.start_worker(max_concurrent_jobs=6)
    wait_for(lambda: len(runs(clean_db)) == 7, 20, "seven runs")
    assert worker.shutdown(10)
    assert most == 5
    assert len(threads) == 1 and threads == {f"{worker.name}-loop"}
    assert all(contexts)
    assert greeted == [("Cy", f"{worker.name}-loop")]
    assert len(sync_threads) == 1 and "-run-" in sync_threads[0]
    outcomes = sorted((outcome, output or "") for _, _, outcome, output in runs(clean_db))
    assert outcomes == sorted(
        [("succeeded", "")] * 5 + [("succeeded", '"sync"'), ("succeeded", '{"hello":"Cy"}')]
    )


def test_an_async_handler_retries_through_its_error_filter(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    attempts: list[int] = []

    @pgxjob.unmarshal_params
    async def flaky(job: pgxjob.Job, params: Greeting) -> str:
        attempts.append(job.error_count)
        await asyncio.sleep(0)
        if job.error_count == 0:
            raise ConnectionError(f"gateway down for {params.name}")
        return params.name

    handler = pgxjob.filter_error(flaky, pgxjob.RetryLinearBackoffErrorFilter(2, 0.01))
    scheduler = scheduler_for(pgxjob.JobTypeConfig("flaky_async", handler))
    job_id = scheduler.schedule(None, "flaky_async", {"name": "Di"})
    worker = scheduler.start_worker(max_buffered_job_result_age=0.01)
    wait_for(lambda: len(runs(clean_db)) == 2, 20, "two runs")
    assert worker.shutdown(10)
    assert attempts == [0, 1]
    assert runs(clean_db) == [(job_id, 1, "retried", None), (job_id, 2, "succeeded", '"Di"')]
    error = query(clean_db, "select error from pgxjob_job_runs where run_number = 1")[0][0]
    assert error.startswith("ConnectionError: gateway down for Di")


def test_an_async_handler_with_bad_params_fails_with_a_params_error(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    scheduler = scheduler_for(greet)
    job_id = scheduler.schedule(None, "greet_async", {"nom": "x"})
    worker = scheduler.start_worker()
    wait_for(lambda: len(runs(clean_db)) == 1, 20, "one run")
    assert worker.shutdown(10)
    assert runs(clean_db) == [(job_id, 1, "failed", None)]
    error = query(clean_db, "select error from pgxjob_job_runs")[0][0]
    assert error.startswith("ParamsError:")


def test_async_handlers_see_shutdown_and_cancel_requests_as_asyncio_events(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    started = threading.Event()

    async def until_cancelled(job: pgxjob.Job) -> None:
        started.set()
        await job.cancel_requested.as_asyncio().wait()
        raise pgxjob.JobCancelled

    async def until_shutdown(job: pgxjob.Job) -> str:
        started.set()
        assert await job.shutdown_requested.wait_async(30)
        return "stopped"

    scheduler = scheduler_for(
        pgxjob.JobTypeConfig("until_cancelled", until_cancelled),
        pgxjob.JobTypeConfig("until_shutdown", until_shutdown),
    )
    cancelled = scheduler.schedule(None, "until_cancelled")
    worker = scheduler.start_worker()
    assert started.wait(20)
    started.clear()
    assert asyncio.run(scheduler.cancel_async(None, cancelled)) == "cancel_requested"
    wait_for(lambda: len(runs(clean_db)) == 1, 20, "the cancelled run")
    stopped = scheduler.schedule(None, "until_shutdown")
    assert started.wait(20)
    assert worker.shutdown(20)
    assert runs(clean_db) == [
        (cancelled, 1, "cancelled", None),
        (stopped, 1, "succeeded", '"stopped"'),
    ]
    assert jobs(clean_db) == []


def test_the_close_deadline_cancels_running_coroutines_and_releases_their_jobs(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    started = threading.Event()
    cancelled: list[bool] = []

    async def stubborn(job: pgxjob.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)  # ignores shutdown_requested
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    scheduler = scheduler_for(pgxjob.JobTypeConfig("stubborn", stubborn))
    job_id = scheduler.schedule(None, "stubborn")
    worker = scheduler.start_worker()
    assert started.wait(20)
    begun = time.monotonic()
    assert scheduler.close(timeout=0.5) is False
    assert time.monotonic() - begun < 15
    wait_for(lambda: cancelled == [True], 10, "the coroutine's cancellation")
    assert worker.stopped or worker.id is None
    # Released, not failed: the job waits for another worker, and no run was logged.
    assert query(clean_db, "select id, worker_id from pgxjob_asap_jobs") == [(job_id, None)]
    assert runs(clean_db) == []
    assert query(clean_db, "select count(*) from pgxjob_workers") == [(0,)]


def test_a_handler_that_blocks_the_loop_is_logged_with_its_job_type(
    clean_db: str,
    scheduler_for: Callable[..., pgxjob.Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def blocking(job: pgxjob.Job) -> None:
        time.sleep(0.8)  # the mistake: a sync sleep in an async handler

    scheduler = scheduler_for(pgxjob.JobTypeConfig("blocks_the_loop", blocking))
    job_id = scheduler.schedule(None, "blocks_the_loop")
    with caplog.at_level(logging.WARNING, logger="pgxjob.eventloop"):
        worker = scheduler.start_worker(event_loop_block_threshold=0.1)
        wait_for(lambda: len(runs(clean_db)) == 1, 20, "the run")
        assert worker.shutdown(10)
    warnings = [r.getMessage() for r in caplog.records if r.name == "pgxjob.eventloop"]
    assert len(warnings) == 1
    assert f"job {job_id} (blocks_the_loop) has blocked the event loop" in warnings[0]


def test_an_async_handler_schedules_follow_up_jobs_through_the_context_scheduler(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    async def fan_out(job: pgxjob.Job) -> list[int]:
        current = pgxjob.ctx()
        assert current is not None
        return await current.schedule_many_async(None, "leaf", [{"i": 1}, {"i": 2}])

    scheduler = scheduler_for(
        pgxjob.JobTypeConfig("fan_out", fan_out), pgxjob.JobTypeConfig("leaf", _noop)
    )
    scheduler.schedule(None, "fan_out")
    worker = scheduler.start_worker()
    wait_for(lambda: len(runs(clean_db)) == 3, 20, "three runs")
    assert worker.shutdown(10)
    outcomes = [outcome for _, _, outcome, _ in runs(clean_db)]
    assert outcomes == ["succeeded"] * 3


def test_signal_views_are_set_from_another_thread_and_time_out() -> None:
    signal = Signal()

    async def main() -> tuple[bool, bool, bool]:
        timed_out = await signal.wait_async(0.01)
        view = signal.as_asyncio()
        assert signal.as_asyncio() is view
        threading.Timer(0.05, signal.set).start()
        await asyncio.wait_for(view.wait(), 10)
        return timed_out, await signal.wait_async(0), signal.as_asyncio().is_set()

    assert asyncio.run(main()) == (False, True, True)
    # A loop that asks after the set gets a view that is set already.
    assert asyncio.run(signal.wait_async(0)) is True


def test_concurrent_schedule_async_calls_share_one_pool_of_the_loop(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))

    async def main() -> list[int]:
        ids = await asyncio.gather(
            *(scheduler.schedule_async(None, "async_t", {"i": i}) for i in range(20))
        )
        assert len(scheduler._async_pools) == 1
        return list(ids)

    ids = asyncio.run(main())
    assert sorted(ids) == [row[0] for row in jobs(clean_db)] and len(set(ids)) == 20


def test_a_sync_callable_returning_a_coroutine_has_it_awaited_on_the_loop(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    async def body(job: pgxjob.Job) -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    scheduler = scheduler_for(pgxjob.JobTypeConfig("wrapped", lambda job: body(job)))
    scheduler.schedule(None, "wrapped")
    worker = scheduler.start_worker()
    wait_for(lambda: len(runs(clean_db)) == 1, 20, "the run")
    assert worker.shutdown(10)
    assert [output for _, _, _, output in runs(clean_db)] == [f'"{worker.name}-loop"']


def test_system_exit_in_an_async_handler_releases_its_job_and_stops_the_worker(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    async def exits(job: pgxjob.Job) -> None:
        raise SystemExit(3)

    scheduler = scheduler_for(pgxjob.JobTypeConfig("exits", exits))
    job_id = scheduler.schedule(None, "exits")
    worker = scheduler.start_worker()
    wait_for(lambda: worker.stopped, 20, "the worker to stop")
    # Handed back untouched: no attempt counted, no run logged, owned by nobody.
    assert query(clean_db, "select id, worker_id from pgxjob_asap_jobs") == [(job_id, None)]
    assert runs(clean_db) == []


def test_an_async_handler_can_shut_its_worker_down_without_waiting_for_itself(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    returned: list[bool] = []
    # The job is scheduled first, so the worker may run it before start_worker() has returned:
    # the handler waits until the test holds the worker.
    held = threading.Event()

    async def stop_worker(job: pgxjob.Job) -> None:
        await asyncio.to_thread(held.wait, 10)
        returned.append(worker.shutdown(30))

    scheduler = scheduler_for(pgxjob.JobTypeConfig("stop_worker", stop_worker))
    scheduler.schedule(None, "stop_worker")
    worker = scheduler.start_worker()
    held.set()
    wait_for(lambda: worker.stopped, 20, "the worker to stop")
    assert returned == [False]
    assert [outcome for _, _, outcome, _ in runs(clean_db)] == ["succeeded"]


def test_an_own_async_connection_broken_while_idle_is_replaced(
    clean_db: str,
    scheduler_for: Callable[..., pgxjob.Scheduler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgxjob import aconnections

    monkeypatch.setattr(aconnections, "_CHECK_AFTER", 0.0)
    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_t", _noop))

    async def main() -> None:
        await scheduler.schedule_async(None, "async_t")
        (pool,) = scheduler._async_pools.values()
        (idle, _), *_ = pool._idle
        query(clean_db, "select pg_terminate_backend(%s)", (idle.info.backend_pid,))
        await scheduler.schedule_async(None, "async_t")

    asyncio.run(main())
    assert len(jobs(clean_db)) == 2
