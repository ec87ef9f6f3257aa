"""Typed params, error filters, linear backoff edges, the context scheduler and bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from typing import TypedDict

import psycopg
import pydantic
import pytest

import pgxjob
from pgxjob.errors import UnknownGroupError, UnknownJobTypeError
from pgxjob.jobs import ParamsError
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
        ('{"order_id": 1, "items": [], "extra": 1}', "unknown keys"),
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
        with pytest.raises(LookupError, match="no pgxjob scheduler"):
            pgxjob.ctx()
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
