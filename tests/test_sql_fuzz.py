"""Fuzzing every public and worker-facing SQL function: only documented errors come out.

Each call runs in a transaction of its own with arguments drawn from edge values: nulls, empty and
huge strings, 700-character names of 4-byte characters, JSON with \\u0000, int and bigint edges,
negative and huge intervals, timestamps at +-infinity and at the ends of PostgreSQL's range,
arrays of mismatched lengths and with null elements. A call either succeeds or raises one of the
documented SQLSTATEs (PJ001-PJ005, 22P02 for malformed JSON, 22023), never an internal one such
as 22008, 22003, 54000, 23503, 23505 or XX000; and after an error every pgxjob table holds as many
rows as before. Raw NUL bytes are left out of text arguments: no driver can send them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.types.string import TextLoader

from tests.dbserver import scratch_database
from tests.sqlcore import INSTALLERS, RECORD_SQL, register_worker, schedule

DOCUMENTED = {"PJ001", "PJ002", "PJ003", "PJ004", "PJ005", "22P02", "22023"}
GROUP = "fuzz_group"
JOB_TYPE = "fuzz_type"
WIDE_NAME = "\U0001d538" * 700  # 700 characters, 2800 bytes: more than a btree entry may hold

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# -- value strategies ---------------------------------------------------------------------------

# No NUL (a driver cannot send it in text) and no lone surrogates (not encodable as UTF-8).
plain_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40
)
names = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "default", GROUP, JOB_TYPE, WIDE_NAME, "x" * 1001, "y" * 100_000]),
    plain_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | plain_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_text, inner, max_size=3),
    max_leaves=8,
)
json_texts = st.one_of(
    st.none(),
    json_values.map(json.dumps),
    st.sampled_from(['"\\u0000"', '{"a": "\\u0000"}', "{", "nope", "", '{"a": 1}' + " " * 50_000]),
)
INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**31 - 2]
BIGINT_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**31]
ints = st.one_of(st.none(), st.sampled_from(INT_EDGES), st.integers(-(2**31), 2**31 - 1))
bigints = st.one_of(st.none(), st.sampled_from(BIGINT_EDGES), st.integers(-(2**63), 2**63 - 1))
timestamps = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "infinity",
            "-infinity",
            "294276-12-31 23:59:59.999999+00",
            "4713-01-01 00:00:00+00 BC",
            "epoch",
            "now",
        ]
    ),
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat()),
)
intervals = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "0",
            "1 microsecond",
            "-1 microsecond",
            "1 second",
            "-1 day",
            "178000000 years",
            "-178000000 years",
            "2147483647 days",
            "-2147483648 days",
            "2147483647 months",
            "9223372036854775807 microseconds",
        ]
    ),
    st.timedeltas(min_value=-dt.timedelta(days=10**6), max_value=dt.timedelta(days=10**6)).map(
        lambda d: f"{d.total_seconds()} seconds"
    ),
)
booleans = st.one_of(st.none(), st.booleans())


def arrays(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any] | None]:
    return st.one_of(st.none(), st.lists(elements, max_size=4))


# -- the database -------------------------------------------------------------------------------


@dataclass
class Fuzzed:
    conn: psycopg.Connection[Any]
    worker_id: int
    job_ids: list[int]
    tables: list[str]

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.conn.execute(f"select count(*) from {table}").fetchone()[0])  # type: ignore[index]
            for table in self.tables
        }


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    with scratch_database("pgxjob_fuzz") as url:
        INSTALLERS["migrator"](url)
        with psycopg.connect(url, autocommit=True) as conn:
            # Results are read as text: Python's datetime cannot hold 'infinity' or year 294276.
            for type_name in ("timestamptz", "timestamp", "date", "interval", "json", "jsonb"):
                conn.adapters.register_loader(type_name, TextLoader)
            conn.execute("select pgxjob_register_group(%s::text)", (GROUP,))
            conn.execute("select pgxjob_register_job_type(%s::text, %s::text)", (JOB_TYPE, GROUP))
            worker_id = register_worker(conn, GROUP)
            job_ids = [schedule(conn, JOB_TYPE) for _ in range(3)]
            job_ids.append(
                schedule(conn, JOB_TYPE, run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
            )
            conn.execute(
                "select * from pgxjob_fetch_jobs(%s::int, 2, now() + interval '2 hours')",
                (worker_id,),
            )
            tables = [
                f"{schema}.{name}"
                for schema, name in conn.execute(
                    "select quote_ident(n.nspname), quote_ident(c.relname) from pg_class c"
                    " join pg_namespace n on n.oid = c.relnamespace"
                    " where c.relname like 'pgxjob\\_%%' and c.relkind in ('r', 'p')"
                    " order by 1, 2"
                ).fetchall()
            ]
            yield Fuzzed(conn, worker_id, job_ids, tables)


def check_call(fuzzed: Fuzzed, query: str, params: tuple[Any, ...]) -> None:
    """Run one call in its own transaction; only documented errors, and no half-written rows."""
    before = fuzzed.counts()
    try:
        fuzzed.conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        assert exc.sqlstate in DOCUMENTED, (
            f"{exc.sqlstate} is not a documented error: {str(exc).splitlines()[0][:300]}"
        )
        assert fuzzed.counts() == before


worker_ids = st.one_of(ints, st.just(-999))  # replaced by the real id when drawn as -999


def real(fuzzed: Fuzzed, worker_id: int | None) -> int | None:
    return fuzzed.worker_id if worker_id == -999 else worker_id


# -- one test per function ----------------------------------------------------------------------


@SETTINGS
@given(job_type=names, params=json_texts, group=names, run_at=timestamps)
def test_schedule(fuzzed: Fuzzed, job_type: Any, params: Any, group: Any, run_at: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz)",
        (job_type, params, group, run_at),
    )


@SETTINGS
@given(job_type=names, params=arrays(json_texts), group=names, run_at=timestamps)
def test_schedule_many(fuzzed: Fuzzed, job_type: Any, params: Any, group: Any, run_at: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_schedule_many(%s::text, %s::json[], %s::text, %s::timestamptz)",
        (job_type, params, group, run_at),
    )


@SETTINGS
@given(name=names)
def test_register_group(fuzzed: Fuzzed, name: Any) -> None:
    check_call(fuzzed, "select pgxjob_register_group(%s::text)", (name,))


@SETTINGS
@given(name=names, group=names)
def test_register_job_type(fuzzed: Fuzzed, name: Any, group: Any) -> None:
    check_call(fuzzed, "select pgxjob_register_job_type(%s::text, %s::text)", (name, group))


@SETTINGS
@given(group=names, dead_after=intervals, now=timestamps)
def test_register_worker(fuzzed: Fuzzed, group: Any, dead_after: Any, now: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_register_worker(%s::text, %s::interval, %s::timestamptz)",
        (group, dead_after, now),
    )


@SETTINGS
@given(worker_id=worker_ids, now=timestamps)
def test_worker_heartbeat(fuzzed: Fuzzed, worker_id: Any, now: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_worker_heartbeat(%s::int, %s::timestamptz)",
        (real(fuzzed, worker_id), now),
    )


@SETTINGS
@given(now=timestamps, reaper_id=worker_ids)
def test_reap_dead_workers(fuzzed: Fuzzed, now: Any, reaper_id: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_reap_dead_workers(p_now => %s::timestamptz, p_reaper_id => %s::int)",
        (now, real(fuzzed, reaper_id)),
    )


@SETTINGS
@given(worker_id=ints)
def test_unregister_worker(fuzzed: Fuzzed, worker_id: Any) -> None:
    check_call(fuzzed, "select pgxjob_unregister_worker(%s::int)", (worker_id,))


@SETTINGS
@given(worker_id=worker_ids, limit=ints, now=timestamps)
def test_fetch_jobs(fuzzed: Fuzzed, worker_id: Any, limit: Any, now: Any) -> None:
    check_call(
        fuzzed,
        "select * from pgxjob_fetch_jobs(%s::int, %s::int, %s::timestamptz)",
        (real(fuzzed, worker_id), limit, now),
    )


@SETTINGS
@given(worker_id=worker_ids, known=arrays(bigints))
def test_release_unknown_jobs(fuzzed: Fuzzed, worker_id: Any, known: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_release_unknown_jobs(%s::int, %s::bigint[])",
        (real(fuzzed, worker_id), known),
    )


@SETTINGS
@given(worker_id=worker_ids, now=timestamps)
def test_next_run_in(fuzzed: Fuzzed, worker_id: Any, now: Any) -> None:
    check_call(
        fuzzed,
        "select pgxjob_next_run_in(%s::int, %s::timestamptz)",
        (real(fuzzed, worker_id), now),
    )


@SETTINGS
@given(error_count=ints, max_retries=ints, base_delay=intervals, now=timestamps)
@example(error_count=2**31 - 2, max_retries=2**31 - 1, base_delay="178000000 years", now=None)
@example(error_count=0, max_retries=1, base_delay="1 day", now="294276-12-31 23:59:59+00")
@example(error_count=2**31 - 1, max_retries=None, base_delay="1 second", now=None)
def test_linear_backoff(
    fuzzed: Fuzzed, error_count: Any, max_retries: Any, base_delay: Any, now: Any
) -> None:
    check_call(
        fuzzed,
        "select pgxjob_linear_backoff(%s::int, %s::int, %s::interval, %s::timestamptz)",
        (error_count, max_retries, base_delay, now),
    )


@SETTINGS
@given(older_than=intervals)
def test_prune_job_runs(fuzzed: Fuzzed, older_than: Any) -> None:
    check_call(fuzzed, "select pgxjob_prune_job_runs(%s::interval)", (older_than,))


@st.composite
def result_batches(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(0, 4))

    def column(elements: st.SearchStrategy[Any]) -> list[Any] | None:
        # Mostly one element per job; sometimes a length that does not match, or no array.
        shape = draw(st.sampled_from(["match"] * 6 + ["short", "long", "null"]))
        if shape == "null":
            return None
        n = {"match": size, "short": max(size - 1, 0), "long": size + 1}[shape]
        return [draw(elements) for _ in range(n)]

    return {
        "job_ids": column(st.one_of(bigints, st.just(-999))),
        "error_counts": column(ints),
        "started_at": column(timestamps),
        "finished_at": column(timestamps),
        "errors": column(st.one_of(st.none(), plain_text, st.just("e" * 100_000))),
        "retry_at": column(timestamps),
        "max_retries": column(ints),
        "base_delays": column(intervals),
        "log": column(booleans),
    }


@SETTINGS
@given(worker_id=worker_ids, batch=result_batches(), now=timestamps)
def test_record_job_results(fuzzed: Fuzzed, worker_id: Any, batch: Any, now: Any) -> None:
    job_ids = batch["job_ids"]
    if job_ids is not None:
        # -999 stands for one of the jobs the worker may really own.
        job_ids = [
            fuzzed.job_ids[i % len(fuzzed.job_ids)] if j == -999 else j
            for i, j in enumerate(job_ids)
        ]
    check_call(
        fuzzed,
        RECORD_SQL.replace("coalesce(%s::timestamptz, now())", "%s::timestamptz"),
        (
            real(fuzzed, worker_id),
            job_ids,
            batch["error_counts"],
            batch["started_at"],
            batch["finished_at"],
            batch["errors"],
            batch["retry_at"],
            batch["max_retries"],
            batch["base_delays"],
            batch["log"],
            now,
        ),
    )


@SETTINGS
@given(now=timestamps)
def test_job_counts(fuzzed: Fuzzed, now: Any) -> None:
    check_call(fuzzed, "select * from pgxjob_job_counts(%s::timestamptz)", (now,))


@SETTINGS
@given(now=timestamps)
def test_worker_status(fuzzed: Fuzzed, now: Any) -> None:
    check_call(fuzzed, "select * from pgxjob_worker_status(%s::timestamptz)", (now,))


@SETTINGS
@given(max_rows=ints, failed_only=booleans, of_type=names, in_group=names)
def test_recent_job_runs(
    fuzzed: Fuzzed, max_rows: Any, failed_only: Any, of_type: Any, in_group: Any
) -> None:
    check_call(
        fuzzed,
        "select * from pgxjob_recent_job_runs(%s::int, %s::boolean, %s::text, %s::text)",
        (max_rows, failed_only, of_type, in_group),
    )


@SETTINGS
@given(since=timestamps)
def test_job_run_stats(fuzzed: Fuzzed, since: Any) -> None:
    check_call(fuzzed, "select * from pgxjob_job_run_stats(%s::timestamptz)", (since,))


@SETTINGS
@given(recent_failures=ints, now=timestamps)
def test_status(fuzzed: Fuzzed, recent_failures: Any, now: Any) -> None:
    check_call(fuzzed, "select pgxjob_status(%s::int, %s::timestamptz)", (recent_failures, now))


# -- names are limited in bytes ------------------------------------------------------------------

NAME_CALLS = {
    "register_group": ("select pgxjob_register_group(%s::text)", lambda n: (n,)),
    "register_job_type": ("select pgxjob_register_job_type(%s::text, 'default')", lambda n: (n,)),
    "schedule": ("select pgxjob_schedule(%s::text)", lambda n: (n,)),
    "schedule_to_group": (
        "select pgxjob_schedule(%s::text, null, %s::text)",
        lambda n: (JOB_TYPE, n),
    ),
    "register_worker": (
        "select pgxjob_register_worker(%s::text, interval '1 minute')",
        lambda n: (n,),
    ),
}


@pytest.mark.parametrize("call", sorted(NAME_CALLS))
def test_a_name_too_long_in_bytes_is_refused_with_pj003(fuzzed: Fuzzed, call: str) -> None:
    query, args = NAME_CALLS[call]
    with pytest.raises(psycopg.Error) as info:
        fuzzed.conn.execute(query, args(WIDE_NAME))
    assert info.value.sqlstate == "PJ003", str(info.value)
    assert "byte" in (info.value.diag.message_primary or "")
