"""Benchmark driver for pgxjob (thread workers over psycopg 3). Run in .bench/pgxjob's venv."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import common
import psycopg

import pgxjob


def configure_otel() -> None:
    """PGXJOB_BENCH_OTEL=sdk (the pgxjob-otel system): an SDK TracerProvider, set globally, whose
    batch processor hands every span to an exporter that drops it: what traces cost pgxjob's
    process, without the network and the collector an application would add."""
    if os.environ.get("PGXJOB_BENCH_OTEL") != "sdk":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # A queue that holds a whole backlog's spans: the default (2048) drops spans whenever the
    # exporting thread falls behind, which would measure less work than tracing every run.
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1_000_000))
    trace.set_tracer_provider(provider)


def noop(job: pgxjob.Job) -> None:
    common.COUNTER.hit(job.params)


async def noop_async(job: pgxjob.Job) -> None:
    common.COUNTER.hit(job.params)


NOOP = pgxjob.JobTypeConfig("noop", run_job=noop)
# The same job type with a coroutine handler, run on the worker's event loop (consume option
# "handler": "async"): the asyncio path of the same queue.
NOOP_ASYNC = pgxjob.JobTypeConfig("noop", run_job=noop_async)


def scheduler(
    dsn: str, groups: list[str] | None = None, *, async_handler: bool = False
) -> pgxjob.Scheduler:
    sched = pgxjob.Scheduler(
        dsn, job_types=[NOOP_ASYNC if async_handler else NOOP], job_groups=groups or ()
    )
    sched.wait_ready(timeout=30)
    return sched


def setup(dsn: str, opts: dict[str, Any]) -> None:
    """Migrate; opts['groups'] (the scaleout workload) registers those groups too."""
    pgxjob.Scheduler(dsn).migrate()
    scheduler(dsn, opts.get("groups")).close()


def enqueue_single(dsn: str, opts: dict[str, Any]) -> None:
    """One job per transaction; an autocommit connection per thread, so one round trip per job."""
    sched = scheduler(dsn)
    threads = opts["threads"]
    parts = common.split(opts["n"], threads)
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def run(conn: psycopg.Connection[Any], n: int, base: int) -> None:
        barrier.wait()
        for k in range(n):
            sched.schedule(conn, "noop", {"i": base + k})

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
    sched.close()
    common.result({"seconds": secs, "n": opts["n"]})


def _bulk(sched: pgxjob.Scheduler, conn: psycopg.Connection[Any], opts: dict[str, Any]) -> float:
    params = common.params_for(opts["n"])
    run_at = None
    if opts.get("timed_delay"):
        run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=opts["timed_delay"])
    t0 = time.perf_counter()
    for chunk in common.chunks(params, opts["batch"]):
        with conn.transaction():
            sched.schedule_many(conn, "noop", chunk, run_at=run_at)
    return time.perf_counter() - t0


def enqueue_bulk(dsn: str, opts: dict[str, Any]) -> None:
    """schedule_many in chunks of opts['batch'], one transaction each."""
    sched = scheduler(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        secs = _bulk(sched, conn, opts)
    sched.close()
    common.result({"seconds": secs, "n": opts["n"]})


def _keyed_bulk(
    sched: pgxjob.Scheduler, conn: psycopg.Connection[Any], opts: dict[str, Any]
) -> float:
    """ASAP jobs over opts['priorities'] levels, opts['keyed_share'] of them with distinct unique
    keys (common.keyed_plan). Each chunk of opts['batch'] is one transaction with one
    schedule_many per priority level, as a user holding mixed jobs would send them."""
    plan = common.keyed_plan(opts["n"], opts["priorities"], opts["keyed_share"])
    t0 = time.perf_counter()
    for chunk in common.chunks(plan, opts["batch"]):
        with conn.transaction():
            for prio, jobs in common.by_priority(chunk).items():
                params = [{"i": i} for i, _ in jobs]
                keys = [key for _, key in jobs]
                sched.schedule_many(conn, "noop", params, priority=prio, unique_keys=keys)
    return time.perf_counter() - t0


def _grouped_bulk(
    sched: pgxjob.Scheduler, conn: psycopg.Connection[Any], opts: dict[str, Any]
) -> float:
    """ASAP jobs dealt round-robin over opts['groups'], in chunks of opts['batch'] per group."""
    groups = opts["groups"]
    params = common.params_for(opts["n"])
    t0 = time.perf_counter()
    for k, group in enumerate(groups):
        for chunk in common.chunks(params[k :: len(groups)], opts["batch"]):
            with conn.transaction():
                sched.schedule_many(conn, "noop", chunk, group_name=group)
    return time.perf_counter() - t0


def backlog(dsn: str, opts: dict[str, Any]) -> None:
    """Fill a backlog: opts['n'] ASAP jobs plus opts['timed'] jobs due in opts['timed_delay'] s.

    With opts['priorities'] the ASAP jobs get priorities and unique keys (_keyed_bulk).
    """
    sched = scheduler(dsn, opts.get("groups"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        if opts.get("groups"):
            secs = _grouped_bulk(sched, conn, opts)
        elif opts.get("priorities"):
            secs = _keyed_bulk(sched, conn, opts)
        else:
            secs = _bulk(sched, conn, {"n": opts["n"], "batch": opts["batch"]})
        if opts.get("timed"):
            _bulk(
                sched,
                conn,
                {"n": opts["timed"], "batch": opts["batch"], "timed_delay": opts["timed_delay"]},
            )
    sched.close()
    common.result({"seconds": secs})


def latency_produce(dsn: str, opts: dict[str, Any]) -> None:
    """One job at a time, opts['gap'] s apart; reports the commit time (ASAP) or due time."""
    sched = scheduler(dsn)
    refs = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(opts["offset"], opts["offset"] + opts["n"]):
            if opts.get("timed_delay"):
                due = time.time() + opts["timed_delay"]
                run_at = dt.datetime.fromtimestamp(due, dt.UTC)
                sched.schedule(conn, "noop", {"i": i}, run_at=run_at)
                refs.append((i, due))
            else:
                sched.schedule(conn, "noop", {"i": i})
                refs.append((i, time.time()))
            time.sleep(opts["gap"])
    sched.close()
    common.result({"refs": refs})


def steady_produce(dsn: str, opts: dict[str, Any]) -> None:
    """Enqueue batches for opts['duration'] s, pausing while the backlog is above opts['cap']."""
    sched = scheduler(dsn)
    gate = common.SteadyBacklog(opts["cap"])
    produced = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        end = time.time() + opts["duration"]
        while time.time() < end:
            if gate.due():
                while conn.execute(opts["count_sql"]).fetchone()[0] > opts["cap"]:
                    time.sleep(0.005)
            sched.schedule_many(conn, "noop", common.params_for(opts["batch"], produced))
            produced += opts["batch"]
    sched.close()
    common.result({"produced": produced})


def consume(dsn: str, opts: dict[str, Any]) -> None:
    cfg = dict(opts.get("worker", {}))
    if not opts.get("log", True):
        cfg["should_log_job_run"] = lambda *a: False
    groups = opts.get("groups")
    sched = scheduler(dsn, groups, async_handler=opts.get("handler") == "async")
    holder: dict[str, Any] = {}

    def start() -> None:
        # opts['groups'] (the scaleout workload): one worker per group, in this process.
        holder["w"] = [sched.start_worker(group_name=g, **cfg) for g in groups or ["default"]]

    def stop() -> None:
        for worker in holder["w"]:
            worker.shutdown(timeout=30)
        sched.close()

    common.serve_consumer_sync(start, stop)


def periodic(dsn: str, opts: dict[str, Any]) -> None:
    """An idle worker and a per-second schedule for opts['seconds']: fire time to handler start.

    The schedule fires on whole seconds of the database's clock, which is this host's clock, so
    a start at wall time t belongs to the fire at floor(t) as long as it is under a second late;
    a later start shows as a second with no start, which is counted as missed.
    """
    starts: list[float] = []

    def tick(job: pgxjob.Job) -> None:
        starts.append(time.time())

    sched = pgxjob.Scheduler(
        dsn,
        job_types=[pgxjob.JobTypeConfig("tick", run_job=tick)],
        periodic_jobs=[pgxjob.PeriodicJob("bench_tick", "* * * * * *", "tick")],
    )
    sched.wait_ready(timeout=30)
    worker = sched.start_worker()
    time.sleep(opts["seconds"] + 0.9)
    worker.shutdown(timeout=30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pgxjob_unschedule_periodic('bench_tick')")
    sched.close()
    # The first start may be the catch-up of a fire time before the worker started.
    fires = sorted({int(t) for t in starts[1:]})
    expected = fires[-1] - fires[0] + 1 if fires else 0
    common.result({
        "latencies_ms": [(t - int(t)) * 1000 for t in starts[1:]],
        "fires": len(starts) - 1,
        "distinct_seconds": len(fires),
        "missed": expected - len(fires),
    })  # fmt: skip


def runtime(dsn: str, opts: dict[str, Any]) -> None:
    common.runtime("pgxjob: psycopg 3, sync, worker threads", "psycopg")


if __name__ == "__main__":
    mode, dsn, opts = common.parse_args()
    configure_otel()
    globals()[mode](dsn, opts)
