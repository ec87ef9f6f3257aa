"""Heartbeat, reaper, fetch and result recording share one lock order and reap no live worker.

Many sessions heartbeat, reap, fetch and record at once with a tiny dead_after: no deadlock
(SQLSTATE 40P01) may ever come out, and no worker whose heartbeats kept coming within dead_after
may be found reaped (pgxjob_worker_heartbeat returns false for a reaped worker). After an outage,
when every worker was silent for longer than dead_after, the first one back must not reap the
others: a reaper only reaps workers that were already dead when it was itself last known alive.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from tests.sqlcore import Result, fetch, heartbeat, reap, record, register_worker

GROUP = "locking"
JOB_TYPE = "locking_job"
DEAD_AFTER = dt.timedelta(milliseconds=200)
HEARTBEAT_EVERY = 0.05
RUN_FOR = 8.0
WORKERS = 5


@pytest.fixture
def url(clean_db: str) -> str:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("select pgxjob_register_group(%s::text)", (GROUP,))
        conn.execute("select pgxjob_register_job_type(%s::text, %s::text)", (JOB_TYPE, GROUP))
    return clean_db


@dataclass
class Observed:
    lock = threading.Lock()
    errors: list[str] = field(default_factory=list)
    unjust_reaps: list[str] = field(default_factory=list)
    reaped: int = 0

    def error(self, where: str, exc: psycopg.Error) -> None:
        with self.lock:
            self.errors.append(f"{where}: {exc.sqlstate} {str(exc).splitlines()[0]}")


def heartbeat_loop(url: str, worker_id: int, seen: Observed, stop: threading.Event) -> None:
    """Heartbeat every 50 ms until stopped or reaped; judge a reap by the gaps actually seen."""
    with psycopg.connect(url, autocommit=True) as conn:
        last_sent = time.monotonic()
        while not stop.is_set():
            sent = time.monotonic()
            try:
                alive = heartbeat(conn, worker_id)
            except psycopg.Error as exc:
                seen.error(f"heartbeat {worker_id}", exc)
                return
            returned = time.monotonic()
            if not alive:
                # The reap happened after the previous heartbeat was stamped (at or after
                # last_sent) and before this one returned: if that window is shorter than
                # dead_after, the worker was never dead.
                if returned - last_sent < DEAD_AFTER.total_seconds():
                    with seen.lock:
                        seen.unjust_reaps.append(
                            f"worker {worker_id} reaped {returned - last_sent:.3f}s after its"
                            " previous heartbeat"
                        )
                with seen.lock:
                    seen.reaped += 1
                return
            last_sent = sent
            stop.wait(HEARTBEAT_EVERY)


def work_loop(url: str, worker_id: int, seen: Observed, stop: threading.Event) -> None:
    """Reap, fetch and record results as fast as possible, with every kind of result."""
    rng = random.Random(worker_id)
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            try:
                reap(conn, reaper_id=worker_id)
                jobs = fetch(conn, worker_id, 5)
                results = []
                for job_id, _ in jobs:
                    kind = rng.choice(["ok", "fail", "retry", "backoff"])
                    results.append(
                        {
                            "ok": Result(job_id),
                            "fail": Result(job_id, error="boom"),
                            "retry": Result(
                                job_id,
                                error="again",
                                retry_at=dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=20),
                            ),
                            "backoff": Result(
                                job_id,
                                error="later",
                                max_retries=3,
                                base_delay=dt.timedelta(milliseconds=10),
                            ),
                        }[kind]
                    )
                rng.shuffle(results)
                if results:
                    record(conn, worker_id, results)
            except psycopg.Error as exc:
                if exc.sqlstate == "PJ004":  # this worker was reaped: judged by its heartbeats
                    return
                seen.error(f"work {worker_id}", exc)
                return


def producer_loop(url: str, seen: Observed, stop: threading.Event) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            try:
                conn.execute(
                    "select pgxjob_schedule_many(%s::text, %s::json[])", (JOB_TYPE, [None] * 20)
                )
            except psycopg.Error as exc:
                seen.error("producer", exc)
                return
            stop.wait(0.02)


def run_threads(targets: list[tuple[Any, tuple[Any, ...]]], seconds: float) -> None:
    """Run each target(*args, stop) on a thread for `seconds`; any exception fails the test."""
    stop = threading.Event()
    crashed: list[BaseException] = []

    def supervised(fn: Any, args: tuple[Any, ...]) -> None:
        try:
            fn(*args, stop)
        except BaseException as exc:
            crashed.append(exc)

    threads = [
        threading.Thread(target=supervised, args=(fn, args), name=f"locking-{i}", daemon=True)
        for i, (fn, args) in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{thread.name} did not stop"
    assert crashed == []


def test_no_deadlock_and_no_live_worker_reaped_under_load(url: str) -> None:
    seen = Observed()
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [register_worker(conn, GROUP, DEAD_AFTER) for _ in range(WORKERS)]
    targets: list[tuple[Any, tuple[Any, ...]]] = [(producer_loop, (url, seen))]
    for worker_id in ids:
        targets.append((heartbeat_loop, (url, worker_id, seen)))
        targets.append((work_loop, (url, worker_id, seen)))
    run_threads(targets, RUN_FOR)

    assert not [e for e in seen.errors if "40P01" in e], seen.errors
    assert seen.errors == []
    assert seen.unjust_reaps == []


@dataclass
class Outage:
    conns: list[psycopg.Connection[Any]]
    ids: list[int]
    start: dt.datetime


@pytest.fixture
def outage(url: str) -> Iterator[Outage]:
    """Four workers registered now with dead_after one minute, each in its own session."""
    conns = [psycopg.connect(url, autocommit=True) for _ in range(4)]
    try:
        row = conns[0].execute("select now()").fetchone()
        assert row is not None
        ids = [register_worker(c, GROUP, dt.timedelta(minutes=1), row[0]) for c in conns]
        yield Outage(conns, ids, row[0])
    finally:
        for conn in conns:
            conn.close()


def test_two_stale_workers_heartbeating_at_once_both_survive(outage: Outage) -> None:
    back = outage.start + dt.timedelta(minutes=5)
    barrier = threading.Barrier(2)
    outcomes: dict[int, Any] = {}

    def beat(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            outcomes[i] = heartbeat(outage.conns[i], outage.ids[i], back)
        except psycopg.Error as exc:
            outcomes[i] = exc.sqlstate

    threads = [threading.Thread(target=beat, args=(i,), name=f"stale-{i}") for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {0: True, 1: True}


def test_the_first_worker_back_after_an_outage_reaps_none_of_the_others(outage: Outage) -> None:
    back = outage.start + dt.timedelta(minutes=5)
    assert heartbeat(outage.conns[0], outage.ids[0], back)
    # Its previous heartbeat (at registration) is older than the others' deaths: it cannot
    # tell that they were dead while it was alive, so it reaps nobody.
    assert reap(outage.conns[0], back, reaper_id=outage.ids[0]) == 0
    for conn, worker_id in zip(outage.conns[1:], outage.ids[1:], strict=True):
        assert heartbeat(conn, worker_id, back + dt.timedelta(seconds=1))


def test_a_worker_that_stays_silent_after_the_outage_is_reaped(outage: Outage) -> None:
    back = outage.start + dt.timedelta(minutes=5)
    for conn, worker_id in zip(outage.conns[:3], outage.ids[:3], strict=True):
        assert heartbeat(conn, worker_id, back)
    later = back + dt.timedelta(minutes=2)
    assert heartbeat(outage.conns[0], outage.ids[0], later)
    # Worker 4 was already dead (silent for over a minute) at the reaper's previous heartbeat;
    # workers 2 and 3 died only after it, so they may have been cut off with the reaper.
    assert reap(outage.conns[0], later, reaper_id=outage.ids[0]) == 1
    assert not heartbeat(outage.conns[3], outage.ids[3], later)
    for conn, worker_id in zip(outage.conns[1:3], outage.ids[1:3], strict=True):
        assert heartbeat(conn, worker_id, later)
