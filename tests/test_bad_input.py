"""Bad input to the Python and SQL scheduling API, generated with hypothesis.

Every call either schedules a job whose params text, type, group and run_at read back exactly, or
raises the documented error (TypeError or ValueError in Python before the database; SQLSTATE
PJ001/PJ002/PJ003 from SQL, as UnknownJobTypeError/UnknownGroupError/InvalidNameError in Python),
and a failed call leaves no row. Example counts are modest so the module stays well under a minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import string
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import pgxjob
from pgxjob import queries
from pgxjob.errors import InvalidNameError, UnknownGroupError, UnknownJobTypeError
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TYPE = "bad_input"  # registered, default group "default"

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database("pgxjob_bad_input") as conninfo:
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("select pgxjob_register_job_type(%s)", (TYPE,))
        yield conninfo


@pytest.fixture(scope="module")
def conn(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def scheduler(url: str) -> Iterator[pgxjob.Scheduler]:
    with pgxjob.Scheduler(url) as sched:
        sched.wait_ready(10)
        yield sched


def snapshot(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    """Row counts of every table a scheduling or registration call may write."""
    row = conn.execute(
        "select (select count(*) from pgxjob_asap_jobs), (select count(*) from pgxjob_run_at_jobs),"
        " (select count(*) from pgxjob_groups), (select count(*) from pgxjob_job_types)"
    ).fetchone()
    assert row is not None
    return tuple(int(n) for n in row)


def stored(conn: psycopg.Connection[Any], job_id: int) -> tuple[str, str, str, str | None, bool]:
    """(table, group, type, params text, run_at = next_run_at) of a job from the hot tables."""
    rows = conn.execute(
        "select 'asap', g.name, t.name, j.params::text, true"
        " from pgxjob_asap_jobs j join pgxjob_groups g on g.id = j.group_id"
        " join pgxjob_job_types t on t.id = j.type_id where j.id = %(id)s"
        " union all"
        " select 'run_at', g.name, t.name, j.params::text, j.run_at = j.next_run_at"
        " from pgxjob_run_at_jobs j join pgxjob_groups g on g.id = j.group_id"
        " join pgxjob_job_types t on t.id = j.type_id where j.id = %(id)s",
        {"id": job_id},
    ).fetchall()
    assert len(rows) == 1, f"job {job_id} should be in exactly one hot table, found {rows}"
    return rows[0]


# -- strategies -------------------------------------------------------------------------------

TRICKY_NAMES = [
    "'",
    '"',
    ";",
    "'; drop table pgxjob_groups; --",
    '"); delete from pgxjob_asap_jobs; --',
    "%s",
    "%I",
    "%L",
    "$$",
    "\\",
    "\\x00",
    "null",
    "NULL",
    " default",
    "default ",
    "Default",
    " ",
    "\t",
    "\n",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "\U0001f4a3",
    "é" * 200,
]

# Any Unicode scalar value: PostgreSQL text holds every one but NUL (U+0000), which is included.
any_text = st.text(st.characters(codec="utf-8"), max_size=40)
names = st.one_of(any_text, st.sampled_from(TRICKY_NAMES))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
    st.sampled_from(TRICKY_NAMES),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(any_text, st.sampled_from(TRICKY_NAMES)), children, max_size=5),
    ),
    max_leaves=25,
)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """A JSON text of a generated value, in a generated layout, with JSON whitespace around it."""
    value = draw(json_values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
        sort_keys=draw(st.booleans()),
    )
    whitespace = st.text(st.sampled_from(" \t\n\r"), max_size=3)
    return draw(whitespace) + text + draw(whitespace)


def contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    return False


def strictly_json(text: str) -> bool:
    """Whether text is JSON by RFC 8259 (Python's json also takes NaN and Infinity)."""

    def reject(constant: str) -> None:
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError):
        return False
    return True


aware_datetimes = st.builds(
    lambda naive, offset: naive.replace(tzinfo=dt.timezone(offset)),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)).map(
        lambda d: dt.timedelta(minutes=d // dt.timedelta(minutes=1))
    ),
)


def expected_name_error(name: str, *, unknown: type[Exception]) -> type[Exception] | None:
    if "\x00" in name:
        # psycopg refuses to send text with NUL before anything reaches the database.
        return psycopg.DataError
    if name == "" or len(name.encode()) > 1000:
        # Names are checked (in UTF-8 bytes) before they are looked up.
        return InvalidNameError
    return unknown


# -- names ------------------------------------------------------------------------------------


@SETTINGS
@given(group_name=names, type_name=names)
@example(group_name="'; drop table pgxjob_groups; --", type_name='x"); select pg_sleep(10); --')
@example(group_name="g\x00", type_name="t")
@example(group_name="", type_name="t")
@example(group_name="g", type_name="")
def test_registered_group_and_type_names_round_trip_exactly(
    conn: psycopg.Connection[Any],
    scheduler: pgxjob.Scheduler,
    group_name: str,
    type_name: str,
) -> None:
    before = snapshot(conn)
    if "\x00" in group_name or group_name == "":
        error = psycopg.DataError if "\x00" in group_name else InvalidNameError
        with pytest.raises(error):
            queries.register_group(conn, group_name)
        assert snapshot(conn) == before
        return
    group_id = queries.register_group(conn, group_name)
    assert conn.execute("select name from pgxjob_groups where id = %s", (group_id,)).fetchone() == (
        group_name,
    )
    assert queries.register_group(conn, group_name) == group_id, "registration is idempotent"

    before = snapshot(conn)
    if "\x00" in type_name or type_name == "":
        error = psycopg.DataError if "\x00" in type_name else InvalidNameError
        with pytest.raises(error):
            queries.register_job_type(conn, type_name, group_name)
        assert snapshot(conn) == before
        return
    type_id = queries.register_job_type(conn, type_name, group_name)
    assert conn.execute(
        "select t.name, g.name from pgxjob_job_types t join pgxjob_groups g"
        " on g.id = t.default_group_id where t.id = %s",
        (type_id,),
    ).fetchone() == (type_name, group_name)

    job_id = scheduler.schedule(conn, type_name, {"n": 1})
    assert stored(conn, job_id)[:4] == ("asap", group_name, type_name, '{"n":1}')
    job_id = scheduler.schedule(conn, type_name, None, group_name="default")
    assert stored(conn, job_id)[:4] == ("asap", "default", type_name, None)


def registered(conn: psycopg.Connection[Any], table: str, name: str) -> bool:
    query = f"select exists (select 1 from {table} where name = %s)"
    return bool(conn.execute(query, (name,)).fetchone() == (True,))


@SETTINGS
@given(type_name=names)
@example(type_name="x" * 100_000)
@example(type_name="'; delete from pgxjob_asap_jobs; --")
def test_an_unknown_job_type_raises_pj001_naming_it_and_leaves_no_row(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, type_name: str
) -> None:
    assume("\x00" in type_name or not registered(conn, "pgxjob_job_types", type_name))
    error = expected_name_error(type_name, unknown=UnknownJobTypeError)
    assert error is not None
    before = snapshot(conn)
    with pytest.raises(error) as raised:
        scheduler.schedule(conn, type_name, {"a": 1})
    if error is UnknownJobTypeError:
        assert f'unknown job type "{type_name}"' in str(raised.value)
        assert raised.value.__cause__.sqlstate == "PJ001"  # type: ignore[union-attr]
    with pytest.raises(error):
        scheduler.schedule_many(conn, type_name, [{"a": 1}, {"a": 2}])
    assert snapshot(conn) == before


@SETTINGS
@given(group_name=names)
@example(group_name="")
@example(group_name="default")
@example(group_name="y" * 100_000)
def test_an_unknown_group_raises_pj002_naming_it_and_leaves_no_row(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, group_name: str
) -> None:
    before = snapshot(conn)
    if "\x00" not in group_name and registered(conn, "pgxjob_groups", group_name):
        job_id = scheduler.schedule(conn, TYPE, [1], group_name=group_name)
        assert stored(conn, job_id)[:4] == ("asap", group_name, TYPE, "[1]")
        return
    error = expected_name_error(group_name, unknown=UnknownGroupError)
    assert error is not None
    with pytest.raises(error) as raised:
        scheduler.schedule(conn, TYPE, [1], group_name=group_name)
    if error is UnknownGroupError:
        assert f'unknown group "{group_name}"' in str(raised.value)
        assert raised.value.__cause__.sqlstate == "PJ002"  # type: ignore[union-attr]
    with pytest.raises(error):
        scheduler.schedule_many(conn, TYPE, [[1]], group_name=group_name)
    assert snapshot(conn) == before


def test_a_null_job_type_from_sql_raises_pj003(conn: psycopg.Connection[Any]) -> None:
    before = snapshot(conn)
    for query in (
        "select pgxjob_schedule(null)",
        "select pgxjob_schedule('')",
        "select pgxjob_schedule_many(null, array['{}']::json[])",
        "select pgxjob_register_group(null)",
        "select pgxjob_register_job_type('', 'default')",
    ):
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(query)
        assert raised.value.sqlstate == "PJ003", query
    assert snapshot(conn) == before


# -- params -----------------------------------------------------------------------------------


@SETTINGS
@given(text=json_texts(), timed=st.booleans())
@example(text='"\\ud800"', timed=False)  # a lone surrogate escape is JSON text to both sides
@example(text='{"a": 1, "a": 2}', timed=False)  # json keeps duplicate keys, jsonb would not
@example(text="1e400", timed=True)
@example(text='"\';--\\"$$"', timed=False)
def test_params_json_text_is_stored_byte_for_byte(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, text: str, timed: bool
) -> None:
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=1) if timed else None
    before = snapshot(conn)
    if "\x00" in text:  # the escape \u0000 is stored; a NUL character cannot be
        with pytest.raises(TypeError):
            scheduler.schedule(conn, TYPE, text, run_at=run_at)
        assert snapshot(conn) == before
        return
    job_id = scheduler.schedule(conn, TYPE, text, run_at=run_at)
    row = stored(conn, job_id)
    assert row[0] == ("run_at" if timed else "asap")
    assert row[3:] == (text, True)
    if run_at is not None:
        assert conn.execute(
            "select run_at = %s from pgxjob_run_at_jobs where id = %s", (run_at, job_id)
        ).fetchone() == (True,)
    # Bytes are JSON text too, and schedule_many keeps each element's text.
    ids = scheduler.schedule_many(conn, TYPE, [text.encode(), None, text], run_at=run_at)
    assert [stored(conn, i)[3] for i in ids] == [text, None, text]


@SETTINGS
@given(value=json_values.filter(lambda v: not isinstance(v, str)))
@example(value={"quote": "'\"", "semicolon": ";", "dollar": "$$", "backslash": "\\"})
@example(value=[0.1, -0.0, 1e308, 5e-324, 2**80])
@example(value={"nul": "a\x00b"})
def test_params_values_are_encoded_as_json_that_decodes_to_them(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, value: Any
) -> None:
    # A str is taken as JSON text (see the text tests), so only other values are encoded here.
    before = snapshot(conn)
    if value is None:
        assert stored(conn, scheduler.schedule(conn, TYPE, value))[3] is None
        return
    # Strings holding NUL are encoded as the JSON escape \u0000, which json stores.
    assert before is not None
    job_id = scheduler.schedule(conn, TYPE, value)
    assert json.loads(stored(conn, job_id)[3] or "") == value


@SETTINGS
@given(raw=st.one_of(any_text, st.binary(max_size=40)))
@example(raw="{'single': 'quotes'}")
@example(raw="[1,]")
@example(raw="1; drop table pgxjob_asap_jobs")
@example(raw=b"\xff\xfe")
@example(raw=b'{"a": "\x00"}')
@example(raw="")
def test_arbitrary_params_text_is_stored_exactly_or_refused_with_type_error(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, raw: str | bytes
) -> None:
    before = snapshot(conn)
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(TypeError):
                scheduler.schedule(conn, TYPE, raw)
            assert snapshot(conn) == before
            return
    else:
        text = raw
    try:
        job_id = scheduler.schedule(conn, TYPE, raw)
    except TypeError:
        assert snapshot(conn) == before
        assert not strictly_json(text) or "\x00" in text
        return
    assert stored(conn, job_id)[3] == text


def _python_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


@pytest.mark.parametrize(
    "params",
    [
        float("nan"),
        {"a": float("nan")},
        [float("inf")],
        {"a": float("-inf")},
        object(),
        {1, 2},
        {"when": dt.datetime(2030, 1, 1)},
        {("tuple", "key"): 1},
        "\x00",
        "{bad",
        "",
        b"\xc3\x28",
        '"a\x00b"',
        "NaN",
        "[Infinity]",
    ],
    ids=repr,
)
def test_params_that_are_not_json_raise_type_error_before_the_database(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, params: Any
) -> None:
    before = snapshot(conn)
    with pytest.raises(TypeError):
        scheduler.schedule(conn, TYPE, params)
    with pytest.raises(TypeError):
        scheduler.schedule_many(conn, TYPE, [[1], params, [2]])
    assert snapshot(conn) == before


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_nan_and_infinity_in_params_text_raise_type_error(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, text: str
) -> None:
    with pytest.raises(TypeError):
        scheduler.schedule(conn, TYPE, text)


@pytest.mark.parametrize("params", ['"\\\\u0000"', {"path": "C:\\u0000"}])
def test_a_backslash_before_u0000_is_not_a_nul(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, params: Any
) -> None:
    job_id = scheduler.schedule(conn, TYPE, params)
    assert json.loads(stored(conn, job_id)[3] or "") == json.loads(
        params if isinstance(params, str) else json.dumps(params)
    )


def test_deeply_nested_json_round_trips(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler
) -> None:
    text = '{"a":' * 400 + "[]" + "}" * 400
    assert stored(conn, scheduler.schedule(conn, TYPE, text))[3] == text
    value: Any = []
    for _ in range(400):
        value = {"a": value}
    assert json.loads(stored(conn, scheduler.schedule(conn, TYPE, value))[3] or "") == value


@pytest.mark.parametrize("as_text", [True, False])
def test_json_nested_too_deep_to_encode_raises_type_error(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, as_text: bool
) -> None:
    depth = 100_000
    value: Any = "[" * depth + "]" * depth
    if not as_text:
        value = []
        for _ in range(depth):
            value = [value]
    before = snapshot(conn)
    with pytest.raises(TypeError):
        scheduler.schedule(conn, TYPE, value)
    assert snapshot(conn) == before


def test_a_20_mb_json_document_round_trips_through_the_table_and_fetch(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler
) -> None:
    row = {"id": 0, "name": "x" * 180, "tags": ["a;b", "c'd", 'e"f'], "ok": True, "score": 0.5}
    rows = [dict(row, id=n) for n in range(20 * 1024 * 1024 // 250)]
    text = json.dumps({"rows": rows}, indent=1)
    assert len(text) > 20_000_000
    queries.register_group(conn, "bad_input_big")
    queries.register_job_type(conn, "bad_input_big", "bad_input_big")
    job_id = scheduler.schedule(conn, "bad_input_big", text)
    digest = conn.execute(
        "select md5(params::text), octet_length(params::text) from pgxjob_asap_jobs where id = %s",
        (job_id,),
    ).fetchone()
    assert digest == (hashlib.md5(text.encode()).hexdigest(), len(text.encode()))
    worker_id = queries.register_worker(conn, "bad_input_big", dt.timedelta(minutes=1))
    [fetched] = queries.fetch_jobs(conn, worker_id, 10)
    assert (fetched.id, fetched.params == text) == (job_id, True)
    queries.unregister_worker(conn, worker_id)


# -- run_at -----------------------------------------------------------------------------------


@SETTINGS
@given(run_at=aware_datetimes)
@example(run_at=dt.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=dt.UTC))
@example(run_at=dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=23))))
@example(run_at=dt.datetime(9999, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-23))))
def test_aware_run_at_makes_an_asap_or_timed_job_with_that_exact_time(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, run_at: dt.datetime
) -> None:
    now = dt.datetime.now(dt.UTC)
    assume(abs(run_at - now) > dt.timedelta(minutes=1))
    job_id = scheduler.schedule(conn, TYPE, None, run_at=run_at)
    table = "run_at" if run_at > now else "asap"
    assert stored(conn, job_id)[0] == table
    if table == "run_at":
        # Compared in SQL: a run_at near year 1 or 9999 in UTC may lie outside Python's range.
        assert conn.execute(
            "select run_at = %s, next_run_at = %s from pgxjob_run_at_jobs where id = %s",
            (run_at, run_at, job_id),
        ).fetchone() == (True, True)


@pytest.mark.parametrize(
    "run_at", [dt.datetime(2030, 1, 1), "2030-01-01T00:00:00Z", 1893456000, dt.date(2030, 1, 1)]
)
def test_run_at_that_is_not_an_aware_datetime_raises_value_error(
    conn: psycopg.Connection[Any], scheduler: pgxjob.Scheduler, run_at: Any
) -> None:
    before = snapshot(conn)
    with pytest.raises(ValueError, match="timezone-aware datetime"):
        scheduler.schedule(conn, TYPE, None, run_at=run_at)
    with pytest.raises(ValueError, match="timezone-aware datetime"):
        scheduler.schedule_many(conn, TYPE, [None], run_at=run_at)
    assert snapshot(conn) == before


SQL_RUN_ATS = [
    ("-infinity", "asap"),
    ("epoch", "asap"),
    ("4713-01-01 00:00:00+00 BC", "asap"),
    ("infinity", "run_at"),
    ("9999-12-31 23:59:59.999999+00", "run_at"),
    ("294276-12-31 23:59:59.999999+00", "run_at"),
]


@SETTINGS
@given(
    type_name=names,
    group_name=st.one_of(st.none(), names),
    params=st.one_of(st.none(), json_texts()),
    run_at=st.sampled_from(SQL_RUN_ATS),
    many=st.booleans(),
)
def test_sql_api_round_trips_or_raises_a_pgxjob_sqlstate(
    conn: psycopg.Connection[Any],
    type_name: str,
    group_name: str | None,
    params: str | None,
    run_at: tuple[str, str],
    many: bool,
) -> None:
    """pgxjob_schedule and pgxjob_schedule_many called from SQL, as triggers and psql do."""
    assume("\x00" not in type_name and "\x00" not in (group_name or ""))
    assume(params is None or not contains_nul(json.loads(params)))
    type_known = registered(conn, "pgxjob_job_types", type_name)
    group_known = group_name is None or registered(conn, "pgxjob_groups", group_name)

    def bad(name: str | None) -> bool:
        return name is not None and (name == "" or len(name.encode()) > 1000)

    expected = (
        "PJ003"
        if bad(type_name) or bad(group_name)
        else "PJ001"
        if not type_known
        else "PJ002"
        if not group_known
        else None
    )
    before = snapshot(conn)
    call = (
        "select pgxjob_schedule_many(%(t)s, array[%(p)s, %(p)s]::json[], %(g)s, %(r)s::timestamptz)"
        if many
        else "select pgxjob_schedule(job_type => %(t)s, params => %(p)s::json,"
        " group_name => %(g)s, run_at => %(r)s::timestamptz)"
    )
    args = {"t": type_name, "p": params, "g": group_name, "r": run_at[0]}
    if expected is not None:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(call, args)
        assert raised.value.sqlstate == expected
        assert snapshot(conn) == before
        return
    ids = [row[0] for row in conn.execute(call, args).fetchall()]
    assert len(ids) == (2 if many else 1)
    for job_id in ids:
        table, group, job_type, text, _ = stored(conn, job_id)
        assert (table, job_type, text) == (run_at[1], type_name, params)
        if group_name is not None:
            assert group == group_name
        if table == "run_at":
            assert conn.execute(
                "select run_at = %s::timestamptz from pgxjob_run_at_jobs where id = %s",
                (run_at[0], job_id),
            ).fetchone() == (True,)


def test_run_at_outside_postgresql_range_is_refused_by_the_cast(
    conn: psycopg.Connection[Any],
) -> None:
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
        conn.execute("select pgxjob_schedule(%s, run_at => '294277-01-01'::timestamptz)", (TYPE,))
    assert snapshot(conn) == before


def test_an_invalid_element_fails_the_whole_schedule_many(conn: psycopg.Connection[Any]) -> None:
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute(
            "select pgxjob_schedule_many(%s, %s::json[])", (TYPE, ["[1]", "[2]", "{bad", "[4]"])
        )
    assert snapshot(conn) == before


def test_a_job_at_infinity_does_not_break_next_run_in(conn: psycopg.Connection[Any]) -> None:
    queries.register_group(conn, "bad_input_infinity")
    queries.register_job_type(conn, "bad_input_infinity", "bad_input_infinity")
    conn.execute("select pgxjob_schedule('bad_input_infinity', run_at => 'infinity')")
    worker_id = queries.register_worker(conn, "bad_input_infinity", dt.timedelta(minutes=1))
    try:
        queries.next_run_in(conn, worker_id)
    finally:
        queries.unregister_worker(conn, worker_id)


def test_a_job_at_infinity_does_not_stop_the_groups_other_jobs(url: str) -> None:
    ran: list[int] = []
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=["bad_input_inf_worker"],
        job_types=[
            pgxjob.JobTypeConfig(
                "bad_input_inf_worker", lambda job: ran.append(job.id), "bad_input_inf_worker"
            )
        ],
        handle_error=lambda exc: None,
    )
    try:
        scheduler.wait_ready(10)
        with scheduler.connection() as conn:
            conn.execute("select pgxjob_schedule('bad_input_inf_worker', run_at => 'infinity')")
        job_id = scheduler.schedule(None, "bad_input_inf_worker", None)
        worker = scheduler.start_worker(group_name="bad_input_inf_worker", poll_interval=0.2)
        deadline = time.monotonic() + 5
        while job_id not in ran and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job_id in ran
        worker.shutdown(5)
    finally:
        scheduler.close(5)


def test_a_name_too_long_to_index_raises_a_pgxjob_error(conn: psycopg.Connection[Any]) -> None:
    # Hex of random bytes does not compress, so it cannot fit a btree entry.
    name = "".join(string.hexdigits[b % 16] for b in hashlib.shake_256(b"pgxjob").digest(8_000))
    before = snapshot(conn)
    try:
        with pytest.raises(pgxjob.errors.PgxjobError):
            queries.register_group(conn, name)
    finally:
        assert snapshot(conn) == before
