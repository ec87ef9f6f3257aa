"""Benchmark driver for PgQueuer (asyncio over asyncpg). Run in .bench/pgqueuer's venv."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import asyncpg
import common
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job


def dsn_url(dsn: str) -> str:
    """asyncpg takes a URL; the runner passes libpq key=value DSNs."""
    kv = dict(part.split("=", 1) for part in dsn.split())
    return (
        f"postgresql://{kv.get('user', 'postgres')}@{kv.get('host', '127.0.0.1')}:"
        f"{kv.get('port', '5432')}/{kv['dbname']}"
    )


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn_url(dsn))


def payload(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


async def setup(dsn: str, opts: dict[str, Any]) -> None:
    conn = await connect(dsn)
    await Queries(AsyncpgDriver(conn)).install()
    await conn.close()


async def enqueue_single(dsn: str, opts: dict[str, Any]) -> None:
    """One job per transaction from `threads` concurrent tasks, each with its own connection."""
    tasks = opts["threads"]
    parts = common.split(opts["n"], tasks)
    conns = [await connect(dsn) for _ in range(tasks)]

    async def run(conn: asyncpg.Connection, n: int, base: int) -> None:
        q = Queries(AsyncpgDriver(conn))
        for k in range(n):
            await q.enqueue("noop", payload(base + k))

    t0 = time.perf_counter()
    await asyncio.gather(*(run(conns[k], parts[k], sum(parts[:k])) for k in range(tasks)))
    secs = time.perf_counter() - t0
    for c in conns:
        await c.close()
    common.result({"seconds": secs, "n": opts["n"]})


async def _bulk(q: Queries, n: int, batch: int, delay: float | None = None, base: int = 0) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        k = min(batch, n - start)
        await q.enqueue(
            ["noop"] * k,
            [payload(base + start + j) for j in range(k)],
            [0] * k,
            [timedelta(seconds=delay)] * k if delay else None,
        )
    return time.perf_counter() - t0


async def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    conn = await connect(dsn)
    secs = await _bulk(Queries(AsyncpgDriver(conn)), opts["n"], opts["batch"])
    await conn.close()
    common.result({"seconds": secs, "n": opts["n"]})


async def backlog(dsn: str, opts: dict[str, Any]) -> None:
    conn = await connect(dsn)
    q = Queries(AsyncpgDriver(conn))
    secs = await _bulk(q, opts["n"], opts["batch"])
    if opts.get("timed"):
        await _bulk(q, opts["timed"], opts["batch"], opts["timed_delay"], base=opts["n"])
    await conn.close()
    common.result({"seconds": secs})


async def latency_produce(dsn: str, opts: dict[str, Any]) -> None:
    conn = await connect(dsn)
    q = Queries(AsyncpgDriver(conn))
    refs = []
    delay = opts.get("timed_delay")
    for i in range(opts["offset"], opts["offset"] + opts["n"]):
        if delay:
            due = time.time() + delay
            await q.enqueue("noop", payload(i), execute_after=timedelta(seconds=delay))
            refs.append((i, due))
        else:
            await q.enqueue("noop", payload(i))
            refs.append((i, time.time()))
        await asyncio.sleep(opts["gap"])
    await conn.close()
    common.result({"refs": refs})


async def steady_produce(dsn: str, opts: dict[str, Any]) -> None:
    conn = await connect(dsn)
    q = Queries(AsyncpgDriver(conn))
    gate = common.SteadyBacklog(opts["cap"])
    produced = 0
    end = time.time() + opts["duration"]
    while time.time() < end:
        if gate.due():
            while await conn.fetchval(opts["count_sql"]) > opts["cap"]:
                await asyncio.sleep(0.005)
        await _bulk(q, opts["batch"], opts["batch"], base=produced)
        produced += opts["batch"]
    await conn.close()
    common.result({"produced": produced})


def consume(dsn: str, opts: dict[str, Any]) -> None:
    state: dict[str, Any] = {}

    async def prepare() -> None:
        conn = await connect(dsn)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            common.COUNTER.hit(job.payload)

        state["conn"], state["qm"] = conn, qm

    async def start() -> None:
        qm = state["qm"]
        state["task"] = asyncio.create_task(
            qm.run(
                batch_size=opts["batch_size"],
                max_concurrent_tasks=opts["max_concurrent_tasks"] or None,
                dequeue_timeout=timedelta(seconds=opts.get("dequeue_timeout", 30)),
            )
        )

    async def stop() -> None:
        state["qm"].shutdown.set()
        await asyncio.wait_for(state["task"], 30)
        await state["conn"].close()

    common.serve_consumer_async(start, stop, prepare)


def runtime(dsn: str, opts: dict[str, Any]) -> None:
    common.runtime("PgQueuer: AsyncpgDriver, asyncio (stdlib event loop)", "asyncpg")


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    fn = globals()[mode]
    if asyncio.iscoroutinefunction(fn):
        asyncio.run(fn(dsn, opts))
    else:
        fn(dsn, opts)
