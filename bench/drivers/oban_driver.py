"""Benchmark driver for oban-py (asyncio over psycopg 3 pools). Run in .bench/oban's venv."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import common
from oban import Job, Oban, worker
from oban.schema import install
from psycopg_pool import AsyncConnectionPool


@worker(queue="default")
class Noop:
    async def process(self, job: Job) -> None:
        common.COUNTER.hit(job.args)


async def pool(dsn: str, size: int) -> AsyncConnectionPool:
    p = AsyncConnectionPool(dsn, min_size=size, max_size=size, open=False)
    await p.open(wait=True)
    return p


async def setup(dsn: str, opts: dict[str, Any]) -> None:
    p = await pool(dsn, 1)
    await install(p)
    await p.close()


async def enqueue_single(dsn: str, opts: dict[str, Any]) -> None:
    """One job per transaction from `threads` concurrent tasks over a pool of that size."""
    tasks = opts["threads"]
    parts = common.split(opts["n"], tasks)
    p = await pool(dsn, tasks)
    async with Oban(pool=p) as oban:

        async def run(n: int, base: int) -> None:
            for k in range(n):
                await oban.enqueue(Noop.new({"i": base + k}))

        t0 = time.perf_counter()
        await asyncio.gather(*(run(parts[k], sum(parts[:k])) for k in range(tasks)))
        secs = time.perf_counter() - t0
    await p.close()
    common.result({"seconds": secs, "n": opts["n"]})


async def _bulk(oban: Oban, n: int, batch: int, delay: float | None = None, base: int = 0) -> float:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay) if delay else None
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        k = min(batch, n - start)
        extra = {"scheduled_at": at} if at else {}
        await oban.enqueue_many([Noop.new({"i": base + start + j}, **extra) for j in range(k)])
    return time.perf_counter() - t0


async def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    p = await pool(dsn, 1)
    async with Oban(pool=p) as oban:
        secs = await _bulk(oban, opts["n"], opts["batch"])
    await p.close()
    common.result({"seconds": secs, "n": opts["n"]})


async def backlog(dsn: str, opts: dict[str, Any]) -> None:
    p = await pool(dsn, 1)
    async with Oban(pool=p) as oban:
        secs = await _bulk(oban, opts["n"], opts["batch"])
        if opts.get("timed"):
            await _bulk(oban, opts["timed"], opts["batch"], opts["timed_delay"], base=opts["n"])
    await p.close()
    common.result({"seconds": secs})


async def latency_produce(dsn: str, opts: dict[str, Any]) -> None:
    p = await pool(dsn, 1)
    refs = []
    delay = opts.get("timed_delay")
    async with Oban(pool=p) as oban:
        for i in range(opts["offset"], opts["offset"] + opts["n"]):
            if delay:
                due = time.time() + delay
                at = dt.datetime.fromtimestamp(due, dt.UTC)
                await oban.enqueue(Noop.new({"i": i}, scheduled_at=at))
                refs.append((i, due))
            else:
                await oban.enqueue(Noop.new({"i": i}))
                refs.append((i, time.time()))
            await asyncio.sleep(opts["gap"])
    await p.close()
    common.result({"refs": refs})


async def steady_produce(dsn: str, opts: dict[str, Any]) -> None:
    p = await pool(dsn, 1)
    gate = common.SteadyBacklog(opts["cap"])
    produced = 0
    async with Oban(pool=p) as oban:
        end = time.time() + opts["duration"]
        while time.time() < end:
            if gate.due():
                while True:
                    async with p.connection() as conn:
                        cur = await conn.execute(opts["count_sql"])
                        backlog_now = (await cur.fetchone())[0]
                    if backlog_now <= opts["cap"]:
                        break
                    await asyncio.sleep(0.005)
            await _bulk(oban, opts["batch"], opts["batch"], base=produced)
            produced += opts["batch"]
    await p.close()
    common.result({"produced": produced})


def consume(dsn: str, opts: dict[str, Any]) -> None:
    state: dict[str, Any] = {}

    async def prepare() -> None:
        state["pool"] = await pool(dsn, opts["pool_max"])
        state["oban"] = Oban(
            pool=state["pool"],
            queues={"default": opts["limit"]},
            stager={"interval": opts["stage_interval"]},
        )

    async def start() -> None:
        await state["oban"].start()

    async def stop() -> None:
        await state["oban"].stop()
        await state["pool"].close()

    common.serve_consumer_async(start, stop, prepare)


def runtime(dsn: str, opts: dict[str, Any]) -> None:
    common.runtime("oban-py: psycopg 3 AsyncConnectionPool, asyncio", "psycopg")


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    fn = globals()[mode]
    if asyncio.iscoroutinefunction(fn):
        asyncio.run(fn(dsn, opts))
    else:
        fn(dsn, opts)
