# ruff: noqa: E501
"""Benchmark driver for procrastinate (asyncio over psycopg 3). Run in .bench/procrastinate's venv."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import common
import procrastinate
from procrastinate import worker as pworker


def make_app(dsn: str, size: int) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=size, max_size=size)
    )

    @app.task(name="noop", queue="default")
    async def noop(i: int) -> None:
        common.COUNTER.hit({"i": i})

    return app


async def setup(dsn: str, opts: dict[str, Any]) -> None:
    app = make_app(dsn, 1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue_single(dsn: str, opts: dict[str, Any]) -> None:
    """One job per transaction from `threads` concurrent tasks over a pool of that size."""
    tasks = opts["threads"]
    parts = common.split(opts["n"], tasks)
    app = make_app(dsn, tasks)
    async with app.open_async():
        noop = app.tasks["noop"]

        async def run(n: int, base: int) -> None:
            for k in range(n):
                await noop.defer_async(i=base + k)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(parts[k], sum(parts[:k])) for k in range(tasks)))
        secs = time.perf_counter() - t0
    common.result({"seconds": secs, "n": opts["n"]})


async def _bulk(app: procrastinate.App, n: int, batch: int, delay: float | None = None,
                base: int = 0) -> float:  # fmt: skip
    noop = app.tasks["noop"]
    deferrer = noop.configure(schedule_in={"seconds": delay}) if delay else noop.configure()
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        k = min(batch, n - start)
        await deferrer.batch_defer_async(*({"i": base + start + j} for j in range(k)))
    return time.perf_counter() - t0


async def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    app = make_app(dsn, 1)
    async with app.open_async():
        secs = await _bulk(app, opts["n"], opts["batch"])
    common.result({"seconds": secs, "n": opts["n"]})


async def backlog(dsn: str, opts: dict[str, Any]) -> None:
    app = make_app(dsn, 1)
    async with app.open_async():
        secs = await _bulk(app, opts["n"], opts["batch"])
        if opts.get("timed"):
            await _bulk(app, opts["timed"], opts["batch"], opts["timed_delay"], base=opts["n"])
    common.result({"seconds": secs})


async def latency_produce(dsn: str, opts: dict[str, Any]) -> None:
    app = make_app(dsn, 1)
    refs = []
    delay = opts.get("timed_delay")
    async with app.open_async():
        noop = app.tasks["noop"]
        for i in range(opts["offset"], opts["offset"] + opts["n"]):
            if delay:
                due = time.time() + delay
                at = dt.datetime.fromtimestamp(due, dt.UTC)
                await noop.configure(schedule_at=at).defer_async(i=i)
                refs.append((i, due))
            else:
                await noop.defer_async(i=i)
                refs.append((i, time.time()))
            await asyncio.sleep(opts["gap"])
    common.result({"refs": refs})


async def steady_produce(dsn: str, opts: dict[str, Any]) -> None:
    app = make_app(dsn, 1)
    gate = common.SteadyBacklog(opts["cap"])
    produced = 0
    async with app.open_async():
        end = time.time() + opts["duration"]
        while time.time() < end:
            if gate.due():
                while True:
                    rows = await app.connector.execute_query_all_async(opts["count_sql"])
                    if next(iter(rows[0].values())) <= opts["cap"]:
                        break
                    await asyncio.sleep(0.005)
            await _bulk(app, opts["batch"], opts["batch"], base=produced)
            produced += opts["batch"]
    common.result({"produced": produced})


def consume(dsn: str, opts: dict[str, Any]) -> None:
    state: dict[str, Any] = {}

    async def prepare() -> None:
        app = make_app(dsn, opts.get("pool", 10))
        state["ctx"] = app.open_async()
        await state["ctx"].__aenter__()
        state["worker"] = pworker.Worker(
            app,
            queues=["default"],
            concurrency=opts["concurrency"],
            fetch_job_polling_interval=opts["polling"],
            delete_jobs=opts["delete_jobs"],
            install_signal_handlers=False,
            listen_notify=True,
        )

    async def start() -> None:
        state["task"] = asyncio.create_task(state["worker"].run())

    async def stop() -> None:
        state["worker"].stop()
        await asyncio.wait_for(state["task"], 30)
        await state["ctx"].__aexit__(None, None, None)

    common.serve_consumer_async(start, stop, prepare)


def runtime(dsn: str, opts: dict[str, Any]) -> None:
    common.runtime("procrastinate: PsycopgConnector (psycopg 3 async pool), asyncio", "psycopg")


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    fn = globals()[mode]
    if asyncio.iscoroutinefunction(fn):
        asyncio.run(fn(dsn, opts))
    else:
        fn(dsn, opts)
