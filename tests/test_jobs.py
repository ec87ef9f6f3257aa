"""Typed params, error filters, linear backoff edges, the context scheduler and bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any, TypedDict

import psycopg
import pydantic
import pytest

import pgxjob
from pgxjob.errors import UnknownGroupError, UnknownJobTypeError
from pgxjob.jobs import ParamsError, Signal, _claimed_job
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def make_job(params: str | None, error_count: int = 0) -> pgxjob.Job:
    group = pgxjob.JobGroup(1, "default")
    job_type = pgxjob.JobType(1, "t", group, lambda job: None)
    return pgxjob.Job(7, group, job_type, params, NOW, NOW, None, error_count, True)


@dataclasses.dataclass
class Item:
    sku: str
    quantity: int


@dataclasses.dataclass
class Order:
    order_id: int
    items: list[Item]
    note: str | None = None


class Greeting(TypedDict):
    name: str


class Invoice(pydantic.BaseModel):
    number: int
    total: float


def test_unmarshal_params_decodes_into_a_nested_dataclass() -> None:
    seen: list[Order] = []

    @pgxjob.unmarshal_params
    def handle(job: pgxjob.Job, params: Order) -> None:
        seen.append(params)

    handle(make_job('{"order_id": 3, "items": [{"sku": "A", "quantity": 2}]}'))
    assert seen == [Order(3, [Item("A", 2)])]


def test_unmarshal_params_decodes_typed_dicts_dicts_and_pydantic_models() -> None:
    seen: list[object] = []

    @pgxjob.unmarshal_params
    def greet(job: pgxjob.Job, params: Greeting) -> None:
        seen.append(params)

    @pgxjob.unmarshal_params
    def raw(job: pgxjob.Job, params: dict[str, int]) -> None:
        seen.append(params)

    @pgxjob.unmarshal_params
    def bill(job: pgxjob.Job, params: Invoice) -> None:
        seen.append(params)

    greet(make_job('{"name": "Ada"}'))
    raw(make_job('{"a": 1}'))
    bill(make_job('{"number": 9, "total": 12.5}'))
    assert seen == [{"name": "Ada"}, {"a": 1}, Invoice(number=9, total=12.5)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"order_id": "x", "items": []}', "params.order_id must be int"),
        ('{"items": []}', "order_id"),
        ("[1, 2]", "must be a JSON object"),
        (None, "must be a JSON object"),
    ],
)
def test_unmarshal_params_fails_the_job_when_params_do_not_fit(
    params: str | None, message: str
) -> None:
    @pgxjob.unmarshal_params
    def handle(job: pgxjob.Job, params: Order) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(ParamsError, match=message):
        handle(make_job(params))


def test_unmarshal_params_ignores_unknown_keys_unless_strict() -> None:
    seen: list[Order] = []

    @pgxjob.unmarshal_params
    def handle(job: pgxjob.Job, params: Order) -> None:
        seen.append(params)

    # A producer that adds fields (at any depth) must not break its consumers.
    handle(make_job('{"order_id": 1, "items": [{"sku": "a", "quantity": 2, "new": 1}], "x": 1}'))
    assert seen == [Order(1, [Item("a", 2)])]

    @pgxjob.unmarshal_params(strict=True)
    def strict(job: pgxjob.Job, params: Order) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(ParamsError, match=r"unknown keys \['extra'\]"):
        strict(make_job('{"order_id": 1, "items": [], "extra": 1}'))
    with pytest.raises(ParamsError, match=r"params.items\[0\] has unknown keys"):
        strict(make_job('{"order_id": 1, "items": [{"sku": "a", "quantity": 2, "new": 1}]}'))


def test_unmarshal_params_rejects_a_pydantic_mismatch() -> None:
    @pgxjob.unmarshal_params
    def bill(job: pgxjob.Job, params: Invoice) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(ParamsError, match="total"):
        bill(make_job('{"number": 1, "total": "lots"}'))


def test_filter_error_turns_errors_into_retries_until_max_retries() -> None:
    backoff = pgxjob.RetryLinearBackoffErrorFilter(3, dt.timedelta(seconds=10))

    def fail(job: pgxjob.Job) -> None:
        raise OSError("disk full")

    run = pgxjob.filter_error(fail, backoff)
    for error_count in (0, 1, 2):  # 0, 1 and max-1 are retried
        with pytest.raises(pgxjob.ErrorWithRetry) as retry:
            run(make_job(None, error_count))
        assert isinstance(retry.value.err, OSError)
        assert (retry.value.backoff_max_retries, retry.value.backoff_base_delay) == (
            3,
            dt.timedelta(seconds=10),
        )
    with pytest.raises(OSError, match="disk full"):  # max: given up
        run(make_job(None, 3))


def test_filter_error_passes_an_explicit_retry_through_unchanged() -> None:
    explicit = pgxjob.ErrorWithRetry("later", NOW)

    def fail(job: pgxjob.Job) -> None:
        raise explicit

    run = pgxjob.filter_error(fail, pgxjob.RetryLinearBackoffErrorFilter(0, dt.timedelta(0)))
    with pytest.raises(pgxjob.ErrorWithRetry) as raised:
        run(make_job(None, 5))
    assert raised.value is explicit


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database("pgxjob_jobs") as conninfo:
        migrate(conninfo)
        yield conninfo


@pytest.mark.parametrize(
    ("error_count", "expected"),
    [
        (0, dt.timedelta(seconds=10)),
        (1, dt.timedelta(seconds=20)),
        (2, dt.timedelta(seconds=30)),
        (3, None),
    ],
)
def test_linear_backoff_is_computed_on_the_database_clock(
    url: str, error_count: int, expected: dt.timedelta | None
) -> None:
    # max_retries 3: error counts 0, 1 and max-1 get (n + 1) * base_delay; max gives up (null).
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select pgxjob_linear_backoff(%s, 3, interval '10 seconds', %s)", (error_count, NOW)
        ).fetchone()
    assert row == (None if expected is None else NOW + expected,)


def test_retry_through_the_worker_uses_the_sql_backoff(url: str) -> None:
    calls = threading.Event()

    def fail(job: pgxjob.Job) -> None:
        calls.set()
        raise RuntimeError("try later")

    handler = pgxjob.filter_error(
        fail, pgxjob.RetryLinearBackoffErrorFilter(2, dt.timedelta(hours=1))
    )
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("backoff", handler)])
    try:
        job_id = scheduler.schedule(None, "backoff", None)
        worker = scheduler.start_worker(max_buffered_job_result_age=0.01)
        assert calls.wait(10)
        assert worker.shutdown(10)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "select error_count, next_run_at - now() between interval '59 minutes'"
                " and interval '61 minutes' from pgxjob_run_at_jobs where id = %s",
                (job_id,),
            ).fetchone()
        assert row == (1, True)
    finally:
        scheduler.close()


def test_ctx_returns_the_context_scheduler_then_the_default() -> None:
    first = pgxjob.Scheduler("dbname=unused")
    second = pgxjob.Scheduler("dbname=unused")
    try:
        assert pgxjob.ctx() is None  # none set: nothing, as in the seed, not an error
        pgxjob.default_context_scheduler = first
        assert pgxjob.ctx() is first
        with second.with_context():
            assert pgxjob.ctx() is second
            seen: list[pgxjob.Scheduler] = []
            thread = threading.Thread(target=lambda: seen.append(pgxjob.ctx()))
            thread.start()
            thread.join()
            assert seen == [first]  # a new thread starts from the default
        assert pgxjob.ctx() is first
    finally:
        pgxjob.default_context_scheduler = None
        first.close()
        second.close()


def test_scheduler_rejects_duplicate_type_names_and_undeclared_groups() -> None:
    noop = pgxjob.JobTypeConfig("noop", lambda job: None)
    with pytest.raises(ValueError, match="duplicate job type name 'noop'"):
        pgxjob.Scheduler("dbname=unused", job_types=[noop, noop])
    with pytest.raises(ValueError, match="default group 'mail'"):
        pgxjob.Scheduler(
            "dbname=unused",
            job_types=[pgxjob.JobTypeConfig("x", lambda job: None, default_group_name="mail")],
        )


@pytest.mark.parametrize(
    "params",
    [object(), {"when": dt.datetime.now()}, float("nan"), "not json", b"\xff", '"a\x00"', "NaN"],
)
def test_params_that_are_not_json_raise_type_error_before_the_database(params: object) -> None:
    # The database does not exist: nothing is sent before the check.
    scheduler = pgxjob.Scheduler("dbname=pgxjob_does_not_exist", handle_error=lambda e: None)
    try:
        with pytest.raises(TypeError):
            scheduler.schedule(None, "t", params)
    finally:
        scheduler.close()


def test_unknown_job_type_and_group_raise_errors_naming_them(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("known", lambda j: None)])
    try:
        with psycopg.connect(url) as conn:
            with pytest.raises(UnknownJobTypeError, match='"nope"'):
                scheduler.schedule(conn, "nope", None)
            conn.rollback()
            with pytest.raises(UnknownGroupError, match='"nowhere"'):
                scheduler.schedule(conn, "known", None, group_name="nowhere")
    finally:
        scheduler.close()


def test_schedule_in_a_rolled_back_transaction_leaves_no_job(url: str) -> None:
    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("tx", lambda j: None)])
    try:
        with psycopg.connect(url) as conn:
            job_id = scheduler.schedule(conn, "tx", {"a": 1})
            conn.rollback()
            assert conn.execute(
                "select count(*) from pgxjob_asap_jobs where id = %s", (job_id,)
            ).fetchone() == (0,)
    finally:
        scheduler.close()


def test_ctx_inside_a_handler_is_the_scheduler_running_it(url: str) -> None:
    seen: list[pgxjob.Scheduler | None] = []
    done = threading.Event()

    def handler(job: pgxjob.Job) -> None:
        seen.append(pgxjob.ctx())
        done.set()

    scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig("ctx_probe", handler)])
    try:
        worker = scheduler.start_worker(poll_interval=0.05)
        scheduler.schedule(None, "ctx_probe")
        assert done.wait(10)
        assert seen == [scheduler]
        assert worker.shutdown(10)
    finally:
        scheduler.close()


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "must not be negative"),
        (dt.timedelta(seconds=-1), ValueError, "must not be negative"),
        (float("nan"), ValueError, "finite"),
        (float("inf"), ValueError, "finite"),
        (True, ValueError, "got True"),
        (dt.timedelta(days=36526), ValueError, "at most 100 years"),
        ("5", TypeError, "int or float"),
    ],
)
def test_every_duration_of_the_api_rejects_bad_values_the_same_way(
    value: object, error: type[Exception], message: str
) -> None:
    scheduler = pgxjob.Scheduler("dbname=unused", handle_error=lambda exc: None)
    try:
        checks = [
            lambda: pgxjob.RetryLinearBackoffErrorFilter(3, value),  # type: ignore[arg-type]
            lambda: pgxjob.ErrorWithRetry("x", value),  # type: ignore[arg-type]
            lambda: pgxjob.ErrorWithRetry(
                "x",
                backoff_max_retries=1,
                backoff_base_delay=value,  # type: ignore[arg-type]
            ),
            lambda: scheduler.start_worker(poll_interval=value),  # type: ignore[arg-type]
            lambda: scheduler.start_worker(max_buffered_job_result_age=value),  # type: ignore[arg-type]
            lambda: scheduler.wait_ready(value),  # type: ignore[arg-type]
            lambda: scheduler.close(value),  # type: ignore[arg-type]
        ]
        for check in checks:
            with pytest.raises(error, match=message):
                check()
    finally:
        scheduler.close()


def test_durations_take_seconds_as_well_as_timedeltas() -> None:
    backoff = pgxjob.RetryLinearBackoffErrorFilter(max_retries=3, base_delay=0.5)
    assert backoff.base_delay == dt.timedelta(seconds=0.5)
    assert pgxjob.RetryLinearBackoffErrorFilter(3, 2).base_delay == dt.timedelta(seconds=2)

    def fail(job: pgxjob.Job) -> None:
        raise OSError("disk full")

    with pytest.raises(pgxjob.ErrorWithRetry) as retry:
        pgxjob.filter_error(fail, backoff)(make_job(None, 0))
    assert retry.value.backoff_base_delay == dt.timedelta(seconds=0.5)

    before = dt.datetime.now(dt.UTC)
    delayed = pgxjob.ErrorWithRetry(OSError("busy"), dt.timedelta(seconds=5))
    after = dt.datetime.now(dt.UTC)
    assert delayed.retry_at is not None
    assert before + dt.timedelta(seconds=5) <= delayed.retry_at <= after + dt.timedelta(seconds=5)
    in_seconds = pgxjob.ErrorWithRetry(OSError("busy"), 5)
    assert in_seconds.retry_at is not None and in_seconds.retry_at.tzinfo is not None


@pytest.mark.parametrize("max_retries", [-1, 2**31, 1.5, True, "3"])
def test_max_retries_out_of_postgresql_range_is_rejected_when_constructed(
    max_retries: object,
) -> None:
    with pytest.raises((ValueError, TypeError), match="max_retries"):
        pgxjob.RetryLinearBackoffErrorFilter(max_retries, 1)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match="max_retries"):
        pgxjob.ErrorWithRetry(
            "x",
            backoff_max_retries=max_retries,  # type: ignore[arg-type]
            backoff_base_delay=1,
        )
    assert pgxjob.RetryLinearBackoffErrorFilter(2**31 - 1, 0).max_retries == 2**31 - 1


def test_filter_error_accepts_a_plain_function_and_checks_the_filter_when_wrapping() -> None:
    def fail(job: pgxjob.Job) -> None:
        raise KeyError("email")

    def retry_key_errors(job: pgxjob.Job, err: BaseException) -> BaseException:
        if isinstance(err, KeyError):
            return pgxjob.ErrorWithRetry(err, dt.timedelta(minutes=1))
        return err

    with pytest.raises(pgxjob.ErrorWithRetry) as retry:
        pgxjob.filter_error(fail, retry_key_errors)(make_job(None))
    assert isinstance(retry.value.err, KeyError)

    with pytest.raises(TypeError, match="filter_error"):
        pgxjob.filter_error(fail, "not a filter")  # type: ignore[arg-type]

    def broken(job: pgxjob.Job, err: BaseException) -> BaseException:
        return "retry please"  # type: ignore[return-value]

    with pytest.raises(TypeError, match="must return an exception"):
        pgxjob.filter_error(fail, broken)(make_job(None))


def test_coroutine_handlers_are_declared_as_async_and_wrappers_keep_them_async() -> None:
    import asyncio

    async def send(job: pgxjob.Job) -> str:
        return "sent"

    class AsyncHandler:
        async def __call__(self, job: pgxjob.Job) -> str:
            return "called"

    def plain(job: pgxjob.Job) -> None:
        pass

    for handler in (send, AsyncHandler()):
        assert pgxjob.JobTypeConfig("async_send", handler).is_async
        assert pgxjob.job_type("async_send")(handler).is_async
    assert not pgxjob.JobTypeConfig("plain", plain).is_async
    filtered = pgxjob.filter_error(send, pgxjob.RetryLinearBackoffErrorFilter(1, 1))
    assert pgxjob.JobTypeConfig("filtered", filtered).is_async
    assert asyncio.run(filtered(make_job(None))) == "sent"

    @pgxjob.unmarshal_params
    async def typed(job: pgxjob.Job, params: Greeting) -> str:
        return params["name"]

    assert pgxjob.JobTypeConfig("typed", typed).is_async
    assert asyncio.run(typed(make_job('{"name": "Ada"}'))) == "Ada"
    with pytest.raises(ParamsError):
        asyncio.run(typed(make_job('{"nom": "Ada"}')))


def test_an_async_error_filter_retries_as_the_sync_one_does() -> None:
    import asyncio

    async def fail(job: pgxjob.Job) -> None:
        raise OSError("down")

    async def cancelled(job: pgxjob.Job) -> None:
        raise pgxjob.JobCancelled

    backoff = pgxjob.RetryLinearBackoffErrorFilter(2, 1)
    with pytest.raises(pgxjob.ErrorWithRetry, match="down"):
        asyncio.run(pgxjob.filter_error(fail, backoff)(make_job(None, error_count=1)))
    with pytest.raises(OSError, match="down"):
        asyncio.run(pgxjob.filter_error(fail, backoff)(make_job(None, error_count=2)))
    with pytest.raises(pgxjob.JobCancelled):
        asyncio.run(pgxjob.filter_error(cancelled, backoff)(make_job(None)))

    def broken(job: pgxjob.Job, err: BaseException) -> BaseException:
        return "retry please"  # type: ignore[return-value]

    with pytest.raises(TypeError, match="must return an exception"):
        asyncio.run(pgxjob.filter_error(fail, broken)(make_job(None)))


def test_error_classes_are_exported_from_the_package() -> None:
    from pgxjob import errors

    for name in errors.__all__:
        assert getattr(pgxjob, name) is getattr(errors, name)
        assert name in pgxjob.__all__
    assert pgxjob.ParamsError is ParamsError


def test_log_final_job_runs_decides_as_the_database_does_for_backoff_retries() -> None:
    backoff = pgxjob.ErrorWithRetry("x", backoff_max_retries=2, backoff_base_delay=1)
    worker: Any = None
    for error_count, final in ((0, False), (1, False), (2, True), (3, True)):
        job = make_job(None, error_count)
        assert pgxjob.log_final_job_runs(worker, job, NOW, NOW, backoff) is final
    explicit = pgxjob.ErrorWithRetry("x", NOW)
    assert pgxjob.log_final_job_runs(worker, make_job(None, 99), NOW, NOW, explicit) is False
    assert pgxjob.log_final_job_runs(worker, make_job(None), NOW, NOW, None) is True
    assert pgxjob.log_final_job_runs(worker, make_job(None), NOW, NOW, OSError()) is True


def test_the_fetch_builds_the_same_job_as_the_dataclass_with_every_field() -> None:
    group = pgxjob.JobGroup(3, "mail")
    job_type = pgxjob.JobType(7, "send", group, lambda job: None)
    now = dt.datetime.now(dt.UTC)
    # A distinct value per field, in the dataclass's order.
    values: dict[str, Any] = {
        "id": 11,
        "group": group,
        "type": job_type,
        "params": '{"to": "a"}',
        "inserted_at": now,
        "run_at": now + dt.timedelta(seconds=1),
        "last_error": "boom",
        "error_count": 2,
        "asap": False,
        "shutdown_requested": Signal(),
        "priority": -4,
        "cancel_requested": Signal(),
        "trace_context": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    assert list(values) == [f.name for f in dataclasses.fields(pgxjob.Job)]
    fast = _claimed_job(*values.values())
    slow = pgxjob.Job(**values)
    for name, value in values.items():
        assert getattr(fast, name) is value, name
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.priority = 1  # type: ignore[misc]
