"""Baseline: bare psycopg INSERT plus pg_notify, the floor any job runner's enqueue builds on."""

from __future__ import annotations

import json
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


def setup(dsn: str, opts: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table if not exists bare_jobs (id bigserial primary key,"
            " inserted_at timestamptz not null default now(), params json)"
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


def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    params = [json.dumps(p) for p in common.params_for(opts["n"])]
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for chunk in common.chunks(params, opts["batch"]):
            conn.execute(BULK, [chunk])
        secs = time.perf_counter() - t0
    common.result({"seconds": secs, "n": opts["n"]})


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    globals()[mode](dsn, opts)
