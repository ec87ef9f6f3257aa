"""OpenTelemetry traces: schedule and run spans with the SDK's in-memory exporter, on PostgreSQL.

Each test gives its Scheduler a TracerProvider of its own (``tracer_provider=``): the global
provider can be set once per process, so the tests of the global provider, and of a process
without OpenTelemetry, run in subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgxjob
from pgxjob import tracing
from pgxjob.errors import InvalidArgumentError
from tests.test_faults import query, wait_for

ROOT = Path(__file__).resolve().parent.parent
# A traceparent of 55 characters, the largest pgxjob_schedule accepts.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def outcomes(url: str) -> list[tuple[Any, ...]]:
    return query(url, "select job_id, run_number, outcome from pgxjob_job_runs order by 1, 2")


def run_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    return sorted(spans, key=lambda s: (s.attributes or {}).get("pgxjob.job.attempt", 0))


def schedule_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]


def ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def traceparent(span: ReadableSpan) -> str:
    """The W3C traceparent of a span, as pgxjob stores it for the jobs it schedules."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent_ids(span: ReadableSpan) -> tuple[int, int] | None:
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def scheduler_for(
    clean_db: str, provider: TracerProvider
) -> Iterator[Callable[..., pgxjob.Scheduler]]:
    made: list[pgxjob.Scheduler] = []

    def make(*job_types: pgxjob.JobTypeConfig[Any], **options: Any) -> pgxjob.Scheduler:
        options.setdefault("tracer_provider", provider)
        scheduler = pgxjob.Scheduler(
            clean_db, job_types=job_types, job_groups=["traced"], **options
        )
        scheduler.wait_ready(10)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close(timeout=5)


def start(scheduler: pgxjob.Scheduler, group: str = "default") -> pgxjob.Worker:
    return scheduler.start_worker(
        group_name=group, max_buffered_job_result_age=0.01, poll_interval=0.2
    )


def test_a_run_span_is_the_child_of_the_schedule_span_and_carries_the_job(
    clean_db: str,
    scheduler_for: Callable[..., pgxjob.Scheduler],
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    seen: list[tuple[str | None, int]] = []

    def handle(job: pgxjob.Job) -> None:
        # The run's span is current in the handler: spans made here are its children.
        with provider.get_tracer("app").start_as_current_span("charge card"):
            pass
        seen.append((job.trace_context, trace.get_current_span().get_span_context().span_id))

    scheduler = scheduler_for(
        pgxjob.JobTypeConfig("send_receipt", handle, default_group_name="traced")
    )
    job_id = scheduler.schedule(None, "send_receipt", {"order": 7})
    [stored] = query(clean_db, "select trace_context from pgxjob_asap_jobs where id = %s", [job_id])
    worker = start(scheduler, "traced")
    wait_for(lambda: outcomes(clean_db) == [(job_id, 1, "succeeded")], 20, "the run")
    assert worker.shutdown(10)

    [produced] = schedule_spans(exporter)
    [run] = run_spans(exporter)
    assert produced.name == "pgxjob schedule send_receipt"
    assert attributes(produced) == {
        "messaging.system": "pgxjob",
        "messaging.operation.type": "send",
        "messaging.operation.name": "schedule",
        "messaging.destination.name": "traced",
        "messaging.message.id": str(job_id),
        "pgxjob.job.type": "send_receipt",
        "pgxjob.job.id": job_id,
    }
    trace_id, span_id = ids(produced)
    assert stored[0] == traceparent(produced)
    assert stored[0].startswith(f"00-{trace_id:032x}-{span_id:016x}-")

    assert run.name == "pgxjob run send_receipt"
    assert parent_ids(run) == (trace_id, span_id)
    assert ids(run)[0] == trace_id
    assert attributes(run) == {
        "messaging.system": "pgxjob",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.destination.name": "traced",
        "messaging.message.id": str(job_id),
        "pgxjob.job.id": job_id,
        "pgxjob.job.type": "send_receipt",
        "pgxjob.job.attempt": 1,
        "pgxjob.job.outcome": "succeeded",
    }
    assert run.status.status_code is StatusCode.UNSET
    [(trace_context, current_span_id)] = seen
    assert trace_context == stored[0]
    assert current_span_id == ids(run)[1]
    [child] = [s for s in exporter.get_finished_spans() if s.name == "charge card"]
    assert parent_ids(child) == ids(run)
    # The run log keeps the trace context after the job is gone.
    assert query(clean_db, "select trace_context from pgxjob_job_runs") == [stored]


def test_a_job_scheduled_from_sql_starts_a_trace_of_its_own(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("from_sql", lambda job: None))
    [(job_id,)] = query(clean_db, "select pgxjob_schedule('from_sql', '{}')")
    [(other_id,)] = query(clean_db, "select pgxjob_schedule('from_sql', '{}')")
    worker = start(scheduler)
    wait_for(lambda: len(outcomes(clean_db)) == 2, 20, "two runs")
    assert worker.shutdown(10)
    assert schedule_spans(exporter) == []
    first, second = sorted(run_spans(exporter), key=lambda s: attributes(s)["pgxjob.job.id"])
    assert [attributes(s)["pgxjob.job.id"] for s in (first, second)] == [job_id, other_id]
    assert first.parent is None and second.parent is None
    assert ids(first)[0] != ids(second)[0], "each job starts a trace of its own"


def test_each_attempt_of_a_retried_job_is_a_child_of_the_schedule_span(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    def flaky(job: pgxjob.Job) -> None:
        raise ConnectionError(f"gateway down on attempt {job.error_count + 1}")

    handler = pgxjob.filter_error(flaky, pgxjob.RetryLinearBackoffErrorFilter(1, 0.01))
    scheduler = scheduler_for(pgxjob.JobTypeConfig("flaky", handler))
    job_id = scheduler.schedule(None, "flaky")
    worker = start(scheduler)
    wait_for(lambda: len(outcomes(clean_db)) == 2, 20, "two runs")
    assert worker.shutdown(10)
    assert outcomes(clean_db) == [(job_id, 1, "retried"), (job_id, 2, "failed")]

    [produced] = schedule_spans(exporter)
    first, second = run_spans(exporter)
    for attempt, span, outcome in ((1, first, "retried"), (2, second, "failed")):
        assert parent_ids(span) == ids(produced)
        assert attributes(span)["pgxjob.job.attempt"] == attempt
        assert attributes(span)["pgxjob.job.outcome"] == outcome
        assert attributes(span)["error.type"] == "ConnectionError"
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == (f"ConnectionError: gateway down on attempt {attempt}")
        [event] = span.events
        assert event.name == "exception"
        event_attributes = dict(event.attributes or {})
        assert event_attributes["exception.type"] == "ConnectionError"
        assert event_attributes["exception.message"] == f"gateway down on attempt {attempt}"
        assert "in flaky" in str(event_attributes["exception.stacktrace"])
    # The retry waited in the timed table with the trace context it was scheduled with.
    assert query(clean_db, "select distinct trace_context from pgxjob_job_runs") == [
        (traceparent(produced),)
    ]


def test_async_handlers_and_schedule_async_make_the_same_spans(
    clean_db: str,
    scheduler_for: Callable[..., pgxjob.Scheduler],
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
) -> None:
    async def handle(job: pgxjob.Job) -> None:
        await asyncio.sleep(0)
        with provider.get_tracer("app").start_as_current_span("call api"):
            await asyncio.sleep(0)
        if json.loads(job.params or "{}")["fail"]:
            raise ValueError("bad input")

    scheduler = scheduler_for(pgxjob.JobTypeConfig("async_job", handle))

    async def produce() -> list[int]:
        ok = await scheduler.schedule_async(None, "async_job", {"fail": False})
        bad = await scheduler.schedule_async(None, "async_job", {"fail": True})
        return [ok, bad]

    ok_id, bad_id = asyncio.run(produce())
    worker = start(scheduler)
    wait_for(lambda: len(outcomes(clean_db)) == 2, 20, "two runs")
    assert worker.shutdown(10)
    assert outcomes(clean_db) == [(ok_id, 1, "succeeded"), (bad_id, 1, "failed")]

    producers = {attributes(s)["pgxjob.job.id"]: s for s in schedule_spans(exporter)}
    runs = {attributes(s)["pgxjob.job.id"]: s for s in run_spans(exporter)}
    assert set(producers) == set(runs) == {ok_id, bad_id}
    for job_id in (ok_id, bad_id):
        assert parent_ids(runs[job_id]) == ids(producers[job_id])
    assert attributes(runs[ok_id])["pgxjob.job.outcome"] == "succeeded"
    assert attributes(runs[bad_id])["pgxjob.job.outcome"] == "failed"
    assert runs[bad_id].status.description == "ValueError: bad input"
    children = [s for s in exporter.get_finished_spans() if s.name == "call api"]
    assert sorted(parent_ids(s) for s in children) == sorted(ids(runs[j]) for j in runs)


def test_schedule_many_makes_one_span_whose_context_every_run_continues(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("bulk", lambda job: None))
    job_ids = scheduler.schedule_many(None, "bulk", [{"n": n} for n in range(5)])
    worker = start(scheduler)
    wait_for(lambda: len(outcomes(clean_db)) == 5, 20, "five runs")
    assert worker.shutdown(10)
    [produced] = schedule_spans(exporter)
    assert attributes(produced)["messaging.batch.message_count"] == 5
    assert "pgxjob.job.id" not in attributes(produced)
    runs = run_spans(exporter)
    assert sorted(attributes(s)["pgxjob.job.id"] for s in runs) == job_ids
    assert {parent_ids(s) for s in runs} == {ids(produced)}


def test_a_failed_schedule_call_is_an_error_span_and_stores_nothing(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("known", lambda job: None))
    with pytest.raises(pgxjob.UnknownJobTypeError):
        scheduler.schedule(None, "unknown_type", {})
    with pytest.raises(TypeError):
        scheduler.schedule(None, "known", object())
    first, second = schedule_spans(exporter)
    assert first.status.status_code is StatusCode.ERROR
    assert attributes(first)["error.type"] == "pgxjob.errors.UnknownJobTypeError"
    assert str(first.status.description).startswith(
        'UnknownJobTypeError: pgxjob: unknown job type "unknown_type"'
    )
    assert attributes(second)["error.type"] == "TypeError"
    assert query(clean_db, "select count(*) from pgxjob_asap_jobs") == [(0,)]
    # The span is no longer current: the next call starts a trace of its own.
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize(
    "stored",
    [
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "-x" * 5000,
        "",
    ],
    ids=["garbage", "version-ff", "zero-trace-id", "long", "empty"],
)
def test_a_malformed_trace_context_in_the_table_runs_the_job_in_a_new_trace(
    clean_db: str,
    scheduler_for: Callable[..., pgxjob.Scheduler],
    exporter: InMemorySpanExporter,
    stored: str,
) -> None:
    # pgxjob_schedule refuses such values; this one was written to the table behind its back.
    scheduler = scheduler_for(pgxjob.JobTypeConfig("hostile", lambda job: job.trace_context))
    [(job_id,)] = query(clean_db, "select pgxjob_schedule('hostile')")
    query(
        clean_db,
        "update pgxjob_public.pgxjob_asap_jobs set trace_context = %s where id = %s returning id",
        [stored, job_id],
    )
    worker = start(scheduler)
    wait_for(lambda: outcomes(clean_db) == [(job_id, 1, "succeeded")], 20, "the run")
    assert worker.shutdown(10)
    [run] = run_spans(exporter)
    assert run.parent is None
    assert attributes(run)["pgxjob.job.outcome"] == "succeeded"
    [(output,)] = query(clean_db, "select output::text from pgxjob_job_runs")
    assert json.loads(output) == stored


def test_sql_takes_a_traceparent_of_55_characters_and_refuses_one_more(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    scheduler = scheduler_for(pgxjob.JobTypeConfig("edge", lambda job: None))
    [(job_id,)] = query(
        clean_db, "select pgxjob_schedule('edge', trace_context => %s)", [TRACEPARENT]
    )
    with (
        psycopg.connect(clean_db, autocommit=True) as conn,
        pytest.raises(psycopg.Error) as refused,
    ):
        conn.execute("select pgxjob_schedule('edge', trace_context => %s)", [TRACEPARENT + "0"])
    assert refused.value.sqlstate == "PJ005"
    huge = pgxjob.queries.schedule_call("edge", None, None, None, 0, None, "x" * 10**6)
    with (
        psycopg.connect(clean_db, autocommit=True) as conn,
        pytest.raises(InvalidArgumentError, match=r"'x{60}'\.\.\. \(1000000 bytes\) is not a W3C"),
    ):
        pgxjob.queries.run(conn, huge)
    worker = start(scheduler)
    wait_for(lambda: outcomes(clean_db) == [(job_id, 1, "succeeded")], 20, "the run")
    assert worker.shutdown(10)
    [run] = run_spans(exporter)
    # A remote parent: the span that scheduled it lives in another process.
    assert parent_ids(run) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    assert run.parent is not None and run.parent.is_remote


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception raises")


def test_a_handler_exception_whose_str_raises_is_recorded_on_its_span(
    clean_db: str, scheduler_for: Callable[..., pgxjob.Scheduler], exporter: InMemorySpanExporter
) -> None:
    def handle(job: pgxjob.Job) -> None:
        raise _Unprintable()

    scheduler = scheduler_for(pgxjob.JobTypeConfig("unprintable", handle))
    job_id = scheduler.schedule(None, "unprintable")
    worker = start(scheduler)
    wait_for(lambda: outcomes(clean_db) == [(job_id, 1, "failed")], 20, "the run")
    assert worker.shutdown(10)
    [run] = run_spans(exporter)
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == (
        "_Unprintable: <unprintable _Unprintable: str() raised RuntimeError>"
    )
    assert attributes(run)["error.type"] == "tests.test_tracing._Unprintable"


class _Raising(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.name.endswith("explode_on_start"):
            raise RuntimeError("span processor fails on start")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("span processor fails on end")


def test_a_span_processor_that_raises_neither_loses_nor_stops_jobs(
    clean_db: str, exporter: InMemorySpanExporter, scheduler_for: Callable[..., pgxjob.Scheduler]
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(_Raising())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scheduler = scheduler_for(
        pgxjob.JobTypeConfig("explode_on_start", lambda job: None),
        pgxjob.JobTypeConfig("explode_on_end", lambda job: None),
        tracer_provider=provider,
    )
    first = scheduler.schedule(None, "explode_on_start")
    second = scheduler.schedule(None, "explode_on_end")
    worker = start(scheduler)
    wait_for(lambda: len(outcomes(clean_db)) == 2, 20, "two runs")
    assert worker.shutdown(10)
    assert outcomes(clean_db) == [(first, 1, "succeeded"), (second, 1, "succeeded")]
    provider.shutdown()


def test_without_an_sdk_no_span_is_made_and_no_trace_context_stored(clean_db: str) -> None:
    # This process never sets a global provider: OpenTelemetry's default makes no spans.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    seen: list[str | None] = []
    scheduler = pgxjob.Scheduler(
        clean_db,
        job_types=[pgxjob.JobTypeConfig("plain", lambda job: seen.append(job.trace_context))],
    )
    try:
        assert scheduler._tracing is not None and scheduler._tracing.tracer() is None
        job_id = scheduler.schedule(None, "plain")
        assert query(clean_db, "select trace_context from pgxjob_asap_jobs") == [(None,)]
        worker = start(scheduler)
        wait_for(lambda: outcomes(clean_db) == [(job_id, 1, "succeeded")], 20, "the run")
        assert worker.shutdown(10)
        assert seen == [None]
    finally:
        scheduler.close(timeout=5)


def test_tracer_provider_must_be_one() -> None:
    with pytest.raises(TypeError, match="tracer_provider must be an opentelemetry"):
        pgxjob.Scheduler("postgresql://", tracer_provider=object())  # type: ignore[arg-type]


def run_script(script: str, url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_without_opentelemetry_the_hooks_are_none_and_jobs_run(clean_db: str) -> None:
    result = run_script(
        """
        import importlib.abc, json, sys, time

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"{name} is blocked")
                return None

        sys.meta_path.insert(0, Block())
        import pgxjob
        from pgxjob import tracing

        seen = []
        scheduler = pgxjob.Scheduler(sys.argv[1], job_types=[
            pgxjob.JobTypeConfig("untraced", lambda job: seen.append(job.trace_context))])
        scheduler.wait_ready(10)
        job_ids = [scheduler.schedule(None, "untraced"),
                   *scheduler.schedule_many(None, "untraced", [1, 2])]
        worker = scheduler.start_worker(max_buffered_job_result_age=0.01)
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.close(timeout=10)
        print(json.dumps({
            "available": tracing.available(),
            "hooks": [scheduler._tracing, worker._tracing],
            "seen": seen,
            "imported": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
            "otel_module_loaded": "pgxjob._otel" in sys.modules,
        }))
        """,
        clean_db,
    )
    assert result == {
        "available": False,
        "hooks": [None, None],
        "seen": [None, None, None],
        "imported": [],
        "otel_module_loaded": False,
    }
    assert [row[2] for row in outcomes(clean_db)] == ["succeeded"] * 3


def test_the_global_provider_is_used_from_when_the_application_sets_it(clean_db: str) -> None:
    result = run_script(
        """
        import json, sys, time
        import pgxjob
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        done = []
        scheduler = pgxjob.Scheduler(sys.argv[1], job_types=[
            pgxjob.JobTypeConfig("late", lambda job: done.append(job.id))])
        scheduler.wait_ready(10)
        before = scheduler.schedule(None, "late")
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        after = scheduler.schedule(None, "late")
        scheduler.start_worker(max_buffered_job_result_age=0.01)
        deadline = time.monotonic() + 20
        while len(done) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.close(timeout=10)
        spans = {s.name + " " + str(s.attributes["pgxjob.job.id"]):
                 None if s.parent is None else s.parent.span_id
                 for s in exporter.get_finished_spans()}
        ids = {s.name + " " + str(s.attributes["pgxjob.job.id"]): s.context.span_id
               for s in exporter.get_finished_spans()}
        print(json.dumps({"before": before, "after": after, "parents": spans, "ids": ids}))
        """,
        clean_db,
    )
    before, after = result["before"], result["after"]
    parents, span_ids = result["parents"], result["ids"]
    assert set(parents) == {
        f"pgxjob schedule late {after}",
        f"pgxjob run late {before}",
        f"pgxjob run late {after}",
    }
    assert parents[f"pgxjob run late {before}"] is None, "scheduled before the SDK: no parent"
    assert parents[f"pgxjob run late {after}"] == span_ids[f"pgxjob schedule late {after}"]


def test_tracing_is_available_here() -> None:
    # The dev extra installs the SDK: the tests above ran with OpenTelemetry, not without.
    assert tracing.available()


@pytest.mark.parametrize(
    "traceparent",
    [
        TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-00000000000000000000000000000001-0000000000000001-03",
        "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff",
    ],
)
def test_a_stored_traceparent_is_read_as_the_standard_propagator_reads_it(
    traceparent: str,
) -> None:
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from pgxjob._otel import _remote_parent

    ours = trace.get_current_span(_remote_parent(traceparent, Context())).get_span_context()
    standard = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": traceparent}, Context())
    ).get_span_context()
    assert ours.is_valid and ours.is_remote
    assert (ours.trace_id, ours.span_id, ours.trace_flags) == (
        standard.trace_id,
        standard.span_id,
        standard.trace_flags,
    )


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "garbage",
        TRACEPARENT.upper(),
        "ff" + TRACEPARENT[2:],
        TRACEPARENT + "-extra",
        " " + TRACEPARENT[1:],
        TRACEPARENT[:-1] + "\n",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_an_unreadable_stored_traceparent_is_no_parent(traceparent: str) -> None:
    from opentelemetry.context import Context

    from pgxjob._otel import _remote_parent

    empty = Context()
    assert _remote_parent(traceparent, empty) is empty
