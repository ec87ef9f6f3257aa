"""Baseline: bare psycopg, with no job runner in between.

Enqueue: INSERT plus pg_notify, the floor any job runner's enqueue builds on. Drain (the raw SQL
limit): each worker process claims a batch with ``for update skip locked`` (an UPDATE that
commits the claim), runs the no-op handler on each job, then deletes the batch; one connection,
one claim and one delete per batch, no listener. What the server can do for a queue table.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import common
import psycopg

SINGLE = (
    "with j as (insert into bare_jobs (params) values (%s::json) returning id)"
    " select pg_notify('bare_job_available', 'default') from j"
)
BULK = (
    "with j as (insert into bare_jobs (params) select * from unnest(%s::json[]) returning id)"
    " select pg_notify('bare_job_available', 'default')"
)

CLAIM = (
    "update bare_jobs j set claimed_by = %s"
    " from (select id from bare_jobs where claimed_by is null order by id limit %s"
    " for update skip locked) c"
    " where j.id = c.id returning j.id, j.params"
)
ACK = "delete from bare_jobs where id = any(%s)"


def setup(dsn: str, opts: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table if not exists bare_jobs (id bigserial primary key,"
            " inserted_at timestamptz not null default now(), params json, claimed_by int)"
        )


def enqueue_single(dsn: str, opts: dict[str, Any]) -> None:
    """One INSERT and one pg_notify in one statement, so one transaction and one round trip."""
    threads = opts["threads"]
    parts = common.split(opts["n"], threads)
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def run(conn: psycopg.Connection[Any], n: int, base: int) -> None:
        barrier.wait()
        for k in range(n):
            conn.execute(SINGLE, [json.dumps({"i": base + k})])

    ts = [
        threading.Thread(target=run, args=(conns[k], parts[k], sum(parts[:k])))
        for k in range(threads)
    ]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    secs = time.perf_counter() - t0
    for c in conns:
        c.close()
    common.result({"seconds": secs, "n": opts["n"]})


def _bulk(conn: psycopg.Connection[Any], n: int, batch: int) -> float:
    params = [json.dumps(p) for p in common.params_for(n)]
    t0 = time.perf_counter()
    for chunk in common.chunks(params, batch):
        conn.execute(BULK, [chunk])
    return time.perf_counter() - t0


def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        secs = _bulk(conn, opts["n"], opts["batch"])
    common.result({"seconds": secs, "n": opts["n"]})


def backlog(dsn: str, opts: dict[str, Any]) -> None:
    """ASAP jobs only: the raw drain has no timed jobs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        secs = _bulk(conn, opts["n"], opts["batch"])
    common.result({"seconds": secs})


def consume(dsn: str, opts: dict[str, Any]) -> None:
    """Claim opts['batch_size'] jobs, run them, delete them; poll every 5 ms when none are left."""
    conn = psycopg.connect(dsn, autocommit=True)
    halt = threading.Event()
    me = os.getpid()

    def loop() -> None:
        while not halt.is_set():
            rows = conn.execute(CLAIM, [me, opts["batch_size"]]).fetchall()
            if not rows:
                halt.wait(0.005)
                continue
            for _, params in rows:
                common.COUNTER.hit(params)
            conn.execute(ACK, [[r[0] for r in rows]])

    worker = threading.Thread(target=loop, name="bare-worker")

    def stop() -> None:
        halt.set()
        worker.join(30)
        conn.close()

    common.serve_consumer_sync(worker.start, stop)


def runtime(dsn: str, opts: dict[str, Any]) -> None:
    common.runtime("bare psycopg 3, sync, one connection per process", "psycopg")


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    globals()[mode](dsn, opts)
