"""The only module that holds SQL text: every call to a pgxjob_* function goes through here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import socket
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, NamedTuple, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from pgxjob.errors import translate

PG_NOTIFY_CHANNEL = "pgxjob_job_available"
"""The channel pgxjob_schedule notifies, with the group name as payload, for each ASAP job."""

TIMED_NOTIFY_CHANNEL = "pgxjob_timed_job_scheduled"
"""The channel notified, with the group name as payload, when a timed job or retry is scheduled."""

CANCEL_NOTIFY_CHANNEL = "pgxjob_job_cancel"
"""The channel pgxjob_cancel_job notifies for a job a worker holds; payload "<worker> <job>"."""


_HOST = socket.gethostname()


class FetchedJob(NamedTuple):
    """One row of pgxjob_fetch_jobs."""

    id: int
    group_id: int
    type_id: int
    type_name: str
    params: str | None
    inserted_at: dt.datetime
    run_at: dt.datetime
    error_count: int
    last_error: str | None
    asap: bool
    priority: int
    cancel_requested: bool
    trace_context: str | None


class JobResult(NamedTuple):
    """The outcome of one run, as pgxjob_record_job_results takes it."""

    job_id: int
    error_count: int
    started_at: dt.datetime
    finished_at: dt.datetime
    error: str | None
    retry_at: dt.datetime | None
    backoff_max_retries: int | None
    backoff_base_delay: dt.timedelta | None
    log: bool
    output: str | None = None
    """What the handler returned, as JSON text; None for nothing."""
    cancelled: bool = False
    """The handler stopped because the job was cancelled: finish it, never retry it."""


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise errors of the pgxjob SQL functions as pgxjob exceptions, by SQLSTATE."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


# The schema whose pgxjob functions each connection (sync or async) calls; a connection without
# one calls them by their bare names, through its search_path.
_schemas: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def set_schema(conn: AnyConnection, schema: str) -> None:
    """Make every call below on conn reach the pgxjob functions of schema."""
    _schemas[conn] = schema


@contextmanager
def in_schema(conn: AnyConnection, schema: str) -> Iterator[None]:
    """Within the block, calls on conn reach the pgxjob functions of schema."""
    previous = _schemas.get(conn)
    _schemas[conn] = schema
    try:
        yield
    finally:
        if previous is None:
            _schemas.pop(conn, None)
        else:
            _schemas[conn] = previous


@functools.lru_cache(maxsize=512)
def _qualified(schema: str | None, query: str) -> str:
    # In query, {} stands before the pgxjob function's name: the schema and a dot, or nothing.
    # With a schema, the call goes to the implementation in its private schema (pgxjob_<schema>,
    # where every role granted a function may execute it too) rather than to the public wrapper:
    # pgxjob sends unprepared statements (poolers), so a wrapper, inlined when the statement is
    # planned, would have its body parsed again on every call, about 30 us per call.
    # The text is built once per schema and query: psycopg would compose a sql.Composed again on
    # every execute, and caches the parsing of a plain string. Every statement is executed with
    # parameters (an empty sequence at least), so a "%" in the schema's name is written "%%".
    if schema is None:
        return query.format("")
    private = sql.Identifier(f"pgxjob_{schema}").as_string(None).replace("%", "%%")
    return query.format(private + ".")


def _sql(conn: AnyConnection, query: str) -> str:
    return _qualified(_schemas.get(conn), query)


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One statement, its arguments and how its rows become the result.

    What the sync and the async fronts share: they differ only in the I/O of :func:`run` and
    :func:`run_async`, so validation, SQL text and decoding exist once.
    """

    query: str
    """The SQL, with ``{}`` where the schema prefix of the pgxjob function goes."""
    params: Sequence[Any]
    decode: Callable[[list[Any]], T]


def run(conn: psycopg.Connection[Any], call: Call[T]) -> T:
    """Execute a Call on a psycopg connection, inside whatever transaction it has open."""
    # A plain server-binding cursor of tuples, whatever the caller's connection makes by default
    # (Django installs a client-side binding cursor, which cannot send binary %b parameters;
    # an application may set a dict row factory).
    with translated_errors(), psycopg.Cursor(conn, row_factory=tuple_row) as cur:
        rows = cur.execute(_sql(conn, call.query), call.params).fetchall()
    return call.decode(rows)


async def run_async(conn: psycopg.AsyncConnection[Any], call: Call[T]) -> T:
    """Execute a Call on a psycopg async connection, inside whatever transaction it has open."""
    with translated_errors():
        async with psycopg.AsyncCursor(conn, row_factory=tuple_row) as cur:
            await cur.execute(_sql(conn, call.query), call.params)
            rows = await cur.fetchall()
    return call.decode(rows)


def _first_int(rows: list[Any]) -> int:
    return int(rows[0][0])


def _ints(rows: list[Any]) -> list[int]:
    return [int(row[0]) for row in rows]


def _first_str(rows: list[Any]) -> str:
    return str(rows[0][0])


def _scalar(conn: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> Any:
    with translated_errors():
        row = conn.execute(_sql(conn, query), params).fetchone()
    assert row is not None
    return row[0]


# Every parameter is cast to the type the function declares: a call whose arguments all match
# one signature exactly resolves to it, whatever overloads another role adds in a schema on the
# caller's search_path.


def register_group(conn: psycopg.Connection[Any], name: str) -> int:
    return int(_scalar(conn, "select {}pgxjob_register_group(%s::text)", (name,)))


def register_job_type(conn: psycopg.Connection[Any], name: str, default_group_name: str) -> int:
    return int(
        _scalar(
            conn,
            "select {}pgxjob_register_job_type(%s::text, %s::text)",
            (name, default_group_name),
        )
    )


SCHEDULE_SQL = (
    "select {}pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz, %s::int, %s::text)"
)
# With a trace context: the untraced call keeps the six arguments every schema since 0005 takes.
SCHEDULE_TRACED_SQL = (
    "select {}pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz, %s::int, %s::text,"
    " %s::text)"
)


def schedule_call(
    job_type: str,
    params_json: str | None,
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int = 0,
    unique_key: str | None = None,
    trace_context: str | None = None,
) -> Call[int]:
    """pgxjob_schedule: the new job's id (or the id of the job holding unique_key)."""
    if trace_context is None:
        return Call(
            SCHEDULE_SQL,
            (job_type, params_json, group_name, run_at, priority, unique_key),
            _first_int,
        )
    return Call(
        SCHEDULE_TRACED_SQL,
        (job_type, params_json, group_name, run_at, priority, unique_key, trace_context),
        _first_int,
    )


def schedule(
    conn: psycopg.Connection[Any],
    job_type: str,
    params_json: str | None,
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int = 0,
    unique_key: str | None = None,
) -> int:
    return run(conn, schedule_call(job_type, params_json, group_name, run_at, priority, unique_key))


def schedule_many_call(
    job_type: str,
    params_json: Sequence[str | None],
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int = 0,
    unique_keys: Sequence[str | None] | None = None,
    trace_context: str | None = None,
) -> Call[list[int]]:
    """pgxjob_schedule_many: one id per params element, in order."""
    keys = None if unique_keys is None else list(unique_keys)
    if trace_context is None:
        return Call(
            "select {}pgxjob_schedule_many(%s::text, %b::json[], %s::text, %s::timestamptz,"
            " %s::int, %s::text[])",
            (job_type, list(params_json), group_name, run_at, priority, keys),
            _ints,
        )
    return Call(
        "select {}pgxjob_schedule_many(%s::text, %b::json[], %s::text, %s::timestamptz,"
        " %s::int, %s::text[], %s::text)",
        (job_type, list(params_json), group_name, run_at, priority, keys, trace_context),
        _ints,
    )


def schedule_many(
    conn: psycopg.Connection[Any],
    job_type: str,
    params_json: Sequence[str | None],
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int = 0,
    unique_keys: Sequence[str | None] | None = None,
) -> list[int]:
    return run(
        conn,
        schedule_many_call(job_type, params_json, group_name, run_at, priority, unique_keys),
    )


def schedule_periodic(
    conn: psycopg.Connection[Any],
    name: str,
    cron: str,
    job_type: str,
    params_json: str | None,
    group_name: str | None,
    time_zone: str,
    priority: int,
) -> int:
    return int(
        _scalar(
            conn,
            "select {}pgxjob_schedule_periodic(%s::text, %s::text, %s::text, %s::json, %s::text,"
            " %s::text, %s::int)",
            (name, cron, job_type, params_json, group_name, time_zone, priority),
        )
    )


def unschedule_periodic(conn: psycopg.Connection[Any], name: str) -> bool:
    return bool(_scalar(conn, "select {}pgxjob_unschedule_periodic(%s::text)", (name,)))


class PeriodicJobStatus(NamedTuple):
    """One row of pgxjob_periodic_job_status."""

    name: str
    cron: str
    time_zone: str
    job_type: str | None
    group_name: str
    priority: int
    next_fire_at: dt.datetime
    last_fired_at: dt.datetime | None
    last_job_id: int | None


def periodic_job_status(conn: psycopg.Connection[Any]) -> list[PeriodicJobStatus]:
    with translated_errors():
        rows = conn.execute(
            _sql(
                conn,
                "select name, cron, time_zone, job_type, group_name, priority, next_fire_at,"
                " last_fired_at, last_job_id from {}pgxjob_periodic_job_status()",
            ),
            (),
        ).fetchall()
    return [PeriodicJobStatus(*row) for row in rows]


def cancel_job_call(job_id: int) -> Call[str]:
    """pgxjob_cancel_job: 'cancelled', 'cancel_requested' or 'not_found'."""
    return Call("select {}pgxjob_cancel_job(%s::bigint)", (job_id,), _first_str)


def cancel_job(conn: psycopg.Connection[Any], job_id: int) -> str:
    """'cancelled', 'cancel_requested' or 'not_found'."""
    return run(conn, cancel_job_call(job_id))


def cancel_requests(conn: psycopg.Connection[Any], worker_id: int) -> list[int]:
    """Ids of the jobs the worker holds that have a cancel request."""
    with translated_errors():
        rows = conn.execute(
            _sql(conn, "select * from {}pgxjob_cancel_requests(%s::int)"), (worker_id,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def register_worker(
    conn: psycopg.Connection[Any], group_name: str, dead_after: dt.timedelta
) -> int:
    """Register a worker and record its host and process id, in one statement."""
    query = (
        "select {0}pgxjob_describe_worker({0}pgxjob_register_worker(%s::text, %s::interval),"
        " %s::text, %s::int)"
    )
    return int(_scalar(conn, query, (group_name, dead_after, _HOST, os.getpid())))


def worker_heartbeat(conn: psycopg.Connection[Any], worker_id: int) -> bool:
    return bool(_scalar(conn, "select {}pgxjob_worker_heartbeat(%s::int)", (worker_id,)))


def reap_dead_workers(conn: psycopg.Connection[Any], reaper_id: int) -> int:
    """Reap workers that stopped heartbeating, in a transaction of its own."""
    return int(
        _scalar(conn, "select {}pgxjob_reap_dead_workers(p_reaper_id => %s::int)", (reaper_id,))
    )


def unregister_worker(conn: psycopg.Connection[Any], worker_id: int) -> bool:
    return bool(_scalar(conn, "select {}pgxjob_unregister_worker(%s::int)", (worker_id,)))


def fetch_jobs(conn: psycopg.Connection[Any], worker_id: int, limit: int) -> list[FetchedJob]:
    with translated_errors():
        rows = conn.execute(
            _sql(
                conn,
                "select id, group_id, type_id, type_name, params::text, inserted_at, run_at,"
                " error_count, last_error, asap, priority, cancel_requested, trace_context"
                " from {}pgxjob_fetch_jobs(%s::int, %s::int)",
            ),
            (worker_id, limit),
            # Rows in binary: a timestamp or an int is read without parsing text, about 1 us
            # less per job fetched.
            binary=True,
        ).fetchall()
    return [FetchedJob(*row) for row in rows]


def release_unknown_jobs(conn: psycopg.Connection[Any], worker_id: int, known: list[int]) -> int:
    query = "select {}pgxjob_release_unknown_jobs(%s::int, %b::bigint[])"
    return int(_scalar(conn, query, (worker_id, known)))


def next_run_in(conn: psycopg.Connection[Any], worker_id: int) -> dt.timedelta | None:
    value = _scalar(conn, "select {}pgxjob_next_run_in(%s::int)", (worker_id,))
    assert value is None or isinstance(value, dt.timedelta)
    return value


class RecordOutcome(NamedTuple):
    """What pgxjob_record_job_results did with a batch."""

    changed: int
    """Jobs deleted, retried or moved."""
    stale_job_ids: list[int]
    """Results that changed nothing: the job is no longer owned by the reporting worker."""


def _ints_literal(values: Sequence[int | None]) -> str:
    """An int[] or bigint[] literal: joined in C, where psycopg would dump a list element by
    element in Python (about 0.5 us per element, and a batch of results sends several)."""
    return "{" + ",".join(["NULL" if v is None else str(int(v)) for v in values]) + "}"


def _bools_literal(values: Sequence[bool]) -> str:
    return "{" + ",".join(["t" if v else "f" for v in values]) + "}"


def _or_nulls_literal(values: list[Any]) -> list[Any] | str:
    """values, or an array literal of nulls when every value is None (the usual errors, retry
    times and backoff delays of a batch), which costs nothing to dump."""
    if any(value is not None for value in values):
        return values
    return "{" + ",".join(["NULL"] * len(values)) + "}"


def record_job_results(
    conn: psycopg.Connection[Any], worker_id: int, results: Sequence[JobResult]
) -> RecordOutcome:
    # One array per field (transposed in C: a worker sends every job's result through here).
    (
        job_ids,
        error_counts,
        started_at,
        finished_at,
        errors,
        retry_at,
        max_retries,
        base_delays,
        log,
        outputs,
        cancelled,
    ) = [list(column) for column in zip(*results, strict=True)] or [[] for _ in JobResult._fields]
    with translated_errors():
        row = conn.execute(
            _sql(
                conn,
                # Integers and flags go as array literals (see _ints_literal), and so does a
                # column of nulls; the other arrays as binary parameters (%b), which psycopg
                # dumps several times faster than as quoted text. Outputs and cancel flags are
                # null (none, none set) in most batches, which the function fills in.
                "select changed, stale_job_ids from {}pgxjob_record_job_results(%s::int,"
                " %s::bigint[], %s::int[], %b::timestamptz[], %b::timestamptz[], %b::text[],"
                " %b::timestamptz[], %s::int[], %b::interval[], %s::boolean[],"
                " %b::text[]::json[], %s::boolean[])",
            ),
            [
                worker_id,
                _ints_literal(job_ids),
                _ints_literal(error_counts),
                started_at,
                finished_at,
                _or_nulls_literal(errors),
                _or_nulls_literal(retry_at),
                _ints_literal(max_retries),
                _or_nulls_literal(base_delays),
                _bools_literal(log),
                outputs if any(output is not None for output in outputs) else None,
                _bools_literal(cancelled) if any(cancelled) else None,
            ],
        ).fetchone()
    assert row is not None
    return RecordOutcome(int(row[0]), [int(job_id) for job_id in row[1]])


def prune_job_runs(conn: psycopg.Connection[Any], older_than: dt.timedelta) -> int:
    return int(_scalar(conn, "select {}pgxjob_prune_job_runs(%s)", (older_than,)))


def ping(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select 1")


def listen(conn: psycopg.Connection[Any]) -> None:
    for channel in (PG_NOTIFY_CHANNEL, TIMED_NOTIFY_CHANNEL, CANCEL_NOTIFY_CHANNEL):
        conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))


# --------------------------------------------------------------------------------------------
# Command line and monitoring (pgxjob.cli): the read-only functions of sql/0002_cli_functions.sql
# and a schedule call that can take its run time relative to the database clock.
# --------------------------------------------------------------------------------------------


class JobCount(NamedTuple):
    """One row of pgxjob_job_counts: a group and type's jobs in four disjoint states."""

    group_name: str
    job_type: str
    due: int
    scheduled: int
    retrying: int
    locked: int
    oldest_due_at: dt.datetime | None


class JobRun(NamedTuple):
    """One row of pgxjob_recent_job_runs: an attempt recorded in the run log."""

    job_id: int
    run_number: int
    group_name: str
    job_type: str
    inserted_at: dt.datetime
    run_at: dt.datetime
    started_at: dt.datetime
    finished_at: dt.datetime
    params: str | None
    error: str | None
    outcome: str | None
    """succeeded, failed, retried, cancelled or stale; None for runs logged before outcomes."""
    output: str | None
    """What the handler returned, as JSON text."""


class JobRunStats(NamedTuple):
    """One row of pgxjob_job_run_stats: a group and type's run outcomes since a time."""

    group_name: str
    job_type: str
    runs: int
    succeeded: int
    retried: int
    failed: int
    avg_duration: dt.timedelta | None
    p95_duration: dt.timedelta | None
    avg_wait: dt.timedelta | None


def schedule_relative(
    conn: psycopg.Connection[Any],
    job_type: str,
    params_json: str | None,
    group_name: str | None,
    run_at: dt.datetime | None,
    run_in: dt.timedelta | None,
    *,
    priority: int = 0,
    unique_key: str | None = None,
) -> int:
    """pgxjob_schedule with run_at, or with now() + run_in on the database clock."""
    return int(
        _scalar(
            conn,
            "select {}pgxjob_schedule(%s::text, %s::json, %s::text,"
            " coalesce(%s::timestamptz, now() + %s::interval), %s::int, %s::text)",
            (job_type, params_json, group_name, run_at, run_in, priority, unique_key),
        )
    )


def database_identity(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What tells two connections' databases apart: name, server port and server start time."""
    row = conn.execute(
        "select current_database(), current_setting('port'), pg_postmaster_start_time()"
    ).fetchone()
    assert row is not None
    return tuple(row)


def status(conn: psycopg.Connection[Any], recent_failures: int) -> dict[str, Any]:
    """The json document of pgxjob_status, decoded."""
    value = _scalar(conn, "select {}pgxjob_status(%s)", (recent_failures,))
    assert isinstance(value, dict)
    return value


def job_counts(conn: psycopg.Connection[Any]) -> list[JobCount]:
    with translated_errors():
        rows = conn.execute(
            _sql(
                conn,
                "select group_name, job_type, due, scheduled, retrying, locked, oldest_due_at"
                " from {}pgxjob_job_counts()",
            ),
            (),
        ).fetchall()
    return [JobCount(*row) for row in rows]


def recent_job_runs(
    conn: psycopg.Connection[Any],
    max_rows: int,
    *,
    failed_only: bool = False,
    job_type: str | None = None,
    group_name: str | None = None,
    job_id: int | None = None,
) -> list[JobRun]:
    with translated_errors():
        rows = conn.execute(
            _sql(
                conn,
                "select job_id, run_number, group_name, job_type, inserted_at, run_at,"
                " started_at, finished_at, params::text, error, outcome, output::text"
                " from {}pgxjob_recent_job_runs(max_rows => %s::int, failed_only => %s,"
                " of_type => %s::text, in_group => %s::text, of_job => %s::bigint)",
            ),
            (max_rows, failed_only, job_type, group_name, job_id),
        ).fetchall()
    return [JobRun(*row) for row in rows]


def job_run_stats(conn: psycopg.Connection[Any], since: dt.datetime) -> list[JobRunStats]:
    with translated_errors():
        rows = conn.execute(
            _sql(
                conn,
                "select group_name, job_type, runs, succeeded, retried, failed, avg_duration,"
                " p95_duration, avg_wait from {}pgxjob_job_run_stats(%s)",
            ),
            (since,),
        ).fetchall()
    return [JobRunStats(*row) for row in rows]


# -- the dashboard and metrics ---------------------------------------------------------------------


def _dicts(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> list[Row]:
    with translated_errors(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_sql(conn, query), params).fetchall()


Row = dict[str, Any]
"""One row of a dashboard query, by column name."""


def pause_group(conn: psycopg.Connection[Any], group_name: str) -> bool:
    """Pause a group; False when it was paused already."""
    return bool(_scalar(conn, "select {}pgxjob_pause_group(%s::text)", (group_name,)))


def resume_group(conn: psycopg.Connection[Any], group_name: str) -> bool:
    """Resume a group; False when it was not paused."""
    return bool(_scalar(conn, "select {}pgxjob_resume_group(%s::text)", (group_name,)))


def job_overview(conn: psycopg.Connection[Any]) -> list[Row]:
    return _dicts(
        conn,
        "select group_name, job_type, waiting, due, scheduled, running, estimated"
        " from {}pgxjob_job_overview()",
    )


def group_overview(conn: psycopg.Connection[Any]) -> list[Row]:
    return _dicts(
        conn,
        "select group_name, paused_at, oldest_due_at, now() - oldest_due_at as oldest_age,"
        " workers_alive, workers_stale, workers_dead from {}pgxjob_group_overview()",
    )


def worker_overview(conn: psycopg.Connection[Any]) -> list[Row]:
    return _dicts(
        conn,
        "select worker_id, group_name, host, pid, inserted_at, heartbeat_at, heartbeat_age,"
        " dead_after, state, jobs_held from {}pgxjob_worker_overview()",
    )


def metrics(conn: psycopg.Connection[Any]) -> list[Row]:
    return _dicts(conn, "select metric, group_name, job_type, state, value from {}pgxjob_metrics()")


def run_history(
    conn: psycopg.Connection[Any], since: dt.timedelta, bucket: dt.timedelta
) -> list[Row]:
    return _dicts(
        conn,
        "select group_name, job_type, bucket_at, succeeded, failed, retried, cancelled,"
        " now() as now from {}pgxjob_run_history(now() - %s::interval, %s::interval)",
        (since, bucket),
    )


def job_runs_page(
    conn: psycopg.Connection[Any],
    max_rows: int,
    *,
    group_name: str | None = None,
    job_type: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    after: tuple[dt.datetime, int, int] | None = None,
) -> list[Row]:
    after_at, after_job, after_run = after if after is not None else (None, None, None)
    return _dicts(
        conn,
        "select job_id, run_number, group_name, job_type, inserted_at, run_at, started_at,"
        " finished_at, params::text as params, error, outcome, output::text as output"
        " from {}pgxjob_job_runs_page(max_rows => %s::int, in_group => %s::text,"
        " of_type => %s::text, with_outcome => %s::text, since => %s::timestamptz,"
        " until => %s::timestamptz, after_finished_at => %s::timestamptz,"
        " after_job_id => %s::bigint, after_run_number => %s::int)",
        (max_rows, group_name, job_type, outcome, since, until, after_at, after_job, after_run),
    )


def job_detail(conn: psycopg.Connection[Any], job_id: int) -> Row | None:
    """The job (or None once finished) and its runs; None when there is neither."""
    value = _scalar(conn, "select {}pgxjob_job_detail(%s::bigint)", (job_id,))
    assert value is None or isinstance(value, dict)
    return value


def retry_job_run(conn: psycopg.Connection[Any], job_id: int, run_number: int | None) -> int:
    """Schedule a new job from a failed run; its id."""
    query = "select {}pgxjob_retry_job_run(%s::bigint, %s::int)"
    return int(_scalar(conn, query, (job_id, run_number)))


def run_job_now(conn: psycopg.Connection[Any], job_id: int) -> str:
    """'due', 'already_due', 'running' or 'not_found'."""
    return str(_scalar(conn, "select {}pgxjob_run_job_now(%s::bigint)", (job_id,)))
