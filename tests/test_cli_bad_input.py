"""Bad arguments to the pgxjob command line, generated with hypothesis.

Each invocation either succeeds (exit 0; ``schedule`` prints the id of a job whose params text,
type, group and run_at read back exactly as given) or fails with exit code 2 (usage) or 1 (run
time) and exactly one line on stderr that names the problem, without a traceback, and leaves every
pgxjob table as it was. The CLI runs in-process through ``pgxjob.cli.main`` to keep the module fast;
a few examples run the installed console script to show both paths behave the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgxjob.cli import main, parse_run_at
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.test_bad_input import TRICKY_NAMES, aware_datetimes, json_texts, strictly_json

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TYPE = "cli_bad_input"  # registered, default group "default"
GROUP = "cli_bad_input_group"  # registered
# An empty --database-url falls back to DATABASE_URL: point that nowhere, never at a real database.
UNREACHABLE_URL = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=3"
PGXJOB = Path(sys.executable).with_name("pgxjob")

# -- running the command line -----------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli(*argv: str) -> Result:
    """Run ``pgxjob ARGV`` in this process, as the console script would, and capture its output.

    An exception that escapes main() is printed as the interpreter would print it (a traceback,
    exit code 1), so the assertions below see what a user of the console script sees.
    """
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.dict(os.environ, {"DATABASE_URL": UNREACHABLE_URL}),
    ):
        try:
            code: Any = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        except Exception:
            traceback.print_exc(file=err)
            code = 1
    return Result(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


def console_script(*argv: str | bytes, stdin: str | None = None) -> Result:
    """Run the installed console script (python -m pgxjob when it is not installed)."""
    command = [str(PGXJOB)] if PGXJOB.exists() else [sys.executable, "-m", "pgxjob"]
    env = dict(os.environ, DATABASE_URL=UNREACHABLE_URL, PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [*command, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# -- database ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database("pgxjob_cli_bad_input") as conninfo:
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("select pgxjob_register_group(%s)", (GROUP,))
            conn.execute("select pgxjob_register_job_type(%s)", (TYPE,))
        yield conninfo


@pytest.fixture(scope="module")
def conn(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Row count of every pgxjob table, found in the catalog so later migrations are covered."""
    tables = [
        row[0]
        for row in conn.execute(
            "select c.relname from pg_class c"
            " where c.relnamespace in ('public'::regnamespace, 'pgxjob_public'::regnamespace)"
            " and c.relkind in ('r', 'p') and c.relname like 'pgxjob\\_%' order by 1"
        ).fetchall()
    ]
    query = sql.SQL(" union all ").join(
        sql.SQL("select {}, count(*) from {}").format(sql.Literal(t), sql.Identifier(t))
        for t in tables
    )
    return {name: int(count) for name, count in conn.execute(query).fetchall()}


def registered(conn: psycopg.Connection[Any], table: str, name: str) -> bool:
    query = sql.SQL("select exists (select 1 from {} where name = %s)").format(
        sql.Identifier(table)
    )
    return conn.execute(query, (name,)).fetchone() == (True,)


def stored(conn: psycopg.Connection[Any], job_id: int) -> tuple[str, str, str, str | None]:
    """(hot table, group, type, params text) of a job."""
    rows = conn.execute(
        "select 'asap', g.name, t.name, j.params::text"
        " from pgxjob_asap_jobs j join pgxjob_groups g on g.id = j.group_id"
        " join pgxjob_job_types t on t.id = j.type_id where j.id = %(id)s"
        " union all"
        " select 'run_at', g.name, t.name, j.params::text"
        " from pgxjob_run_at_jobs j join pgxjob_groups g on g.id = j.group_id"
        " join pgxjob_job_types t on t.id = j.type_id where j.id = %(id)s",
        {"id": job_id},
    ).fetchall()
    assert len(rows) == 1, f"job {job_id} should be in exactly one hot table, found {rows}"
    table, group, job_type, params = rows[0]
    return str(table), str(group), str(job_type), params


# -- the property -----------------------------------------------------------------------------


def assert_failed_cleanly(
    result: Result,
    conn: psycopg.Connection[Any],
    before: dict[str, int],
    *words: str,
    codes: Sequence[int] = (1, 2),
) -> None:
    """Exit code 1 or 2, one line on stderr naming the problem (one of words), no row changed."""
    assert result.code in codes, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("pgxjob") and "error: " in lines[0], lines[0]
    assert any(w.lower() in lines[0].lower() for w in words), f"{lines[0]!r} names none of {words}"
    assert result.out == "", result.out
    assert snapshot(conn) == before


def assert_scheduled(
    result: Result,
    conn: psycopg.Connection[Any],
    before: dict[str, int],
    *,
    table: str,
    group: str,
    job_type: str,
    params: str | None,
) -> int:
    """Exit 0, the job id alone on stdout, exactly one new row, read back as asked."""
    assert result.code == 0, result
    assert "Traceback" not in result.err, result.err
    assert result.out.strip().isdigit() and result.out.endswith("\n"), result.out
    job_id = int(result.out)
    assert stored(conn, job_id) == (table, group, job_type, params)
    expected = dict(before)
    expected[f"pgxjob_{table}_jobs"] += 1
    assert snapshot(conn) == expected
    return job_id


# -- strategies -------------------------------------------------------------------------------

# argv holds no NUL, so no name or JSON text here contains one; the rest of Unicode is fair game.
argv_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
argv_names = st.one_of(argv_text, st.sampled_from(TRICKY_NAMES).filter(lambda s: "\x00" not in s))

NAME_WORDS = ("job type", "group")
JSON_WORDS = ("json",)
RUN_AT_WORDS = ("--run-at", "timestamp", "date", "time")
DURATION_WORDS = ("--older-than", "duration", "timestamp", "interval")
LIMIT_WORDS = ("--limit",)
URL_WORDS = ("database", "url", "connect")


def positionals(*values: str | None) -> list[str]:
    """TYPE [PARAMS_JSON] after "--", so a value starting with "-" is not taken for an option."""
    return ["--", *(v for v in values if v is not None)]


# -- job type and group names -----------------------------------------------------------------


@SETTINGS
@given(
    type_name=st.one_of(st.just(TYPE), argv_names),
    group_name=st.one_of(st.none(), st.sampled_from([GROUP, "default"]), argv_names),
    params=st.one_of(st.none(), json_texts().filter(lambda t: "\x00" not in t)),
)
@example(type_name="'; drop table pgxjob_asap_jobs; --", group_name=None, params=None)
@example(type_name=TYPE, group_name='"); delete from pgxjob_groups; --', params="[1]")
@example(type_name="-" + TYPE, group_name="--group", params="-1")
@example(type_name="", group_name=None, params=None)
@example(type_name=TYPE, group_name="", params=None)
@example(type_name="x" * 100_000, group_name=None, params=None)
@example(type_name=TYPE, group_name="y" * 100_000, params=None)
def test_schedule_with_any_type_and_group_name_schedules_or_names_the_unknown_one(
    conn: psycopg.Connection[Any],
    url: str,
    type_name: str,
    group_name: str | None,
    params: str | None,
) -> None:
    type_known = registered(conn, "pgxjob_job_types", type_name)
    group_known = group_name is None or registered(conn, "pgxjob_groups", group_name)
    group_args = [] if group_name is None else [f"--group={group_name}"]
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *group_args, *positionals(type_name, params))
    if type_known and group_known:
        assert_scheduled(
            result,
            conn,
            before,
            table="asap",
            group=group_name or "default",  # only TYPE is registered, in group "default"
            job_type=type_name,
            params=params,
        )
    else:
        assert_failed_cleanly(result, conn, before, *NAME_WORDS, codes=[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["-x", "[1]"],  # TYPE that looks like an option
        [TYPE, "-Infinity"],
        [TYPE, "-1e5"],  # valid JSON, but argparse takes it for an option: "--" is needed
        [TYPE, "[1]", "extra"],
        [TYPE, "--group"],
        [TYPE, "--run-at"],
        [TYPE, "--no-such-option"],
        [],
        [TYPE, "-a\nb"],
    ],
)
def test_schedule_arguments_argparse_refuses_are_one_usage_line(
    conn: psycopg.Connection[Any], url: str, argv: list[str]
) -> None:
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *argv)
    assert_failed_cleanly(
        result, conn, before, "argument", "unrecognized", "required", "expected", codes=[2]
    )


# -- PARAMS_JSON ------------------------------------------------------------------------------

LONG_STRING = st.integers(min_value=1_000, max_value=120_000).map(lambda n: json.dumps("x" * n))
NON_FINITE = st.builds(
    lambda constant, wrap: wrap.format(constant),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    st.sampled_from(["{}", "[{}]", '{{"a": {}}}', "[1, {}, 3]"]),
)


@SETTINGS
@given(
    text=st.one_of(
        json_texts().filter(lambda t: "\x00" not in t),
        LONG_STRING,
        NON_FINITE,
        argv_text,
        st.sampled_from(TRICKY_NAMES).filter(lambda s: "\x00" not in s),
    ),
    timed=st.booleans(),
)
@example(text='{"a": 1, "a": 2}', timed=False)  # json keeps duplicate keys, jsonb would not
@example(text='"\';--\\"$$"', timed=False)
@example(text="1; drop table pgxjob_asap_jobs", timed=False)
@example(text="{'single': 'quotes'}", timed=False)
@example(text="[1,]", timed=False)
@example(text='"\\u0000"', timed=True)  # the escape is JSON text; only a NUL character is not
@example(text='"\\ud800"', timed=False)
@example(text="1e400", timed=True)
@example(text="", timed=False)
@example(text='{"a":' * 400 + "[]" + "}" * 400, timed=False)
@example(text="NaN", timed=False)
@example(text=json.dumps({"k": "x" * 120_000}), timed=True)
def test_params_json_is_stored_byte_for_byte_or_refused_as_not_json(
    conn: psycopg.Connection[Any], url: str, text: str, timed: bool
) -> None:
    assume(text != "-")  # reads stdin: see the console-script test
    run_at = ["--run-at=+1d"] if timed else []
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *run_at, *positionals(TYPE, text))
    if strictly_json(text):
        assert_scheduled(
            result,
            conn,
            before,
            table="run_at" if timed else "asap",
            group="default",
            job_type=TYPE,
            params=text,
        )
    else:
        assert_failed_cleanly(result, conn, before, *JSON_WORDS)


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]"])
def test_nan_and_infinity_params_are_a_usage_error(
    conn: psycopg.Connection[Any], url: str, text: str
) -> None:
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *positionals(TYPE, text))
    assert_failed_cleanly(result, conn, before, "PARAMS_JSON", codes=[2])


@pytest.mark.parametrize("depth", [500, 2_000, 60_000])
def test_deeply_nested_params_json_is_stored_or_refused_as_a_usage_error(
    conn: psycopg.Connection[Any], url: str, depth: int, request: pytest.FixtureRequest
) -> None:
    text = "[" * depth + "]" * depth
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *positionals(TYPE, text))
    with psycopg.connect(url) as check:
        try:
            check.execute("select %s::json", (text,))
            fits_postgresql = True
        except psycopg.Error:
            fits_postgresql = False
    if fits_postgresql:
        assert_scheduled(
            result, conn, before, table="asap", group="default", job_type=TYPE, params=text
        )
    else:
        assert_failed_cleanly(result, conn, before, "PARAMS_JSON", codes=[2])


# -- --run-at ---------------------------------------------------------------------------------

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@st.composite
def run_at_texts(draw: st.DrawFn) -> tuple[str, dt.datetime | dt.timedelta | str | None]:
    """(--run-at text, what it means): an aware time, a delay, None for now, or "?" unknown."""
    kind = draw(st.sampled_from(["aware", "naive", "delay", "now", "extreme", "garbage"]))
    if kind == "aware":
        when = draw(aware_datetimes)
        text = when.isoformat(sep=draw(st.sampled_from(["T", " "])))
        if when.utcoffset() == dt.timedelta(0) and draw(st.booleans()):
            text = text.removesuffix("+00:00") + "Z"
        return text, when
    if kind == "naive":
        # Local time; 0001-01-01 is left out, see test_a_naive_run_at_on_the_first_day_...
        naive = draw(
            st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
        )
        return naive.isoformat(), naive.astimezone()
    if kind == "delay":
        # Up to 10**6 weeks, inside timedelta's range; beyond it see test_a_huge_delay_...
        parts = draw(
            st.lists(
                st.tuples(st.integers(0, 10**6), st.sampled_from(list(UNITS))),
                min_size=1,
                max_size=3,
            )
        )
        body = "".join(f"{n}{unit}" for n, unit in parts)
        prefix = draw(st.sampled_from(["+", "in ", ""]))
        delay = dt.timedelta(seconds=sum(n * UNITS[unit] for n, unit in parts))
        return prefix + body, delay
    if kind == "now":
        return draw(st.sampled_from(["now", "NOW", " now ", "asap"])), None
    if kind == "extreme":
        return draw(
            st.sampled_from(
                [
                    ("infinity", "?"),
                    ("-infinity", "?"),
                    ("9999-12-31T23:59:59.999999+00:00", "?"),
                    ("9999-12-31T23:59:59.999999-23:59", "?"),
                    ("0001-01-01T00:00:00+23:59", "?"),
                    ("0001-01-01T00:00:00Z", "?"),
                    ("10000-01-01T00:00:00Z", "?"),
                    ("+999999w", "?"),  # past PostgreSQL's year 294276
                    ("2030-02-30T00:00:00Z", "?"),
                    ("2030-01-01T24:00:00Z", "?"),
                    ("epoch", "?"),
                    ("", "?"),
                ]
            )
        )
    return draw(st.one_of(argv_text, st.sampled_from(["+", "in", "+-5m", "1h 30", "5 m s"]))), "?"


def assert_run_at(
    conn: psycopg.Connection[Any],
    before: dict[str, int],
    result: Result,
    meaning: dt.datetime | dt.timedelta | None,
    *,
    params: str | None = None,
) -> None:
    now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    if isinstance(meaning, dt.datetime):
        assume(abs(meaning - now) > dt.timedelta(minutes=1))
    future = (
        meaning > now
        if isinstance(meaning, dt.datetime)
        else meaning > dt.timedelta(0)
        if isinstance(meaning, dt.timedelta)
        else False
    )
    table = "run_at" if future else "asap"
    job_id = assert_scheduled(
        result, conn, before, table=table, group="default", job_type=TYPE, params=params
    )
    if table == "run_at":
        # Compared in SQL: a time near year 1 or 9999 may lie outside Python's range in UTC.
        check = (
            "select run_at = %s and next_run_at = %s from pgxjob_run_at_jobs where id = %s"
            if isinstance(meaning, dt.datetime)
            else "select run_at - inserted_at = %s and next_run_at = run_at"
            " from pgxjob_run_at_jobs where id = %s"
        )
        args = (meaning, meaning, job_id) if isinstance(meaning, dt.datetime) else (meaning, job_id)
        assert conn.execute(check, args).fetchone() == (True,), (meaning, job_id)


@SETTINGS
@given(run_at=run_at_texts(), separate=st.booleans())
@example(run_at=("+10m", dt.timedelta(minutes=10)), separate=True)
@example(run_at=("in 2h", dt.timedelta(hours=2)), separate=True)
@example(run_at=("1h30m", dt.timedelta(minutes=90)), separate=False)
@example(run_at=("0s", dt.timedelta(0)), separate=False)
@example(run_at=("2.5h", dt.timedelta(hours=2.5)), separate=False)
@example(run_at=("9999-12-31T23:59:59.999999-23:59", "?"), separate=False)
@example(run_at=("-infinity", "?"), separate=False)
@example(run_at=("infinity", "?"), separate=True)
@example(run_at=("+999999w", "?"), separate=False)
@example(run_at=("'; drop table pgxjob_run_at_jobs; --", "?"), separate=True)
def test_run_at_schedules_at_the_time_asked_or_is_refused_naming_it(
    conn: psycopg.Connection[Any],
    url: str,
    run_at: tuple[str, dt.datetime | dt.timedelta | str | None],
    separate: bool,
) -> None:
    text, meaning = run_at
    # "--run-at VALUE" takes a VALUE starting with "-" for an option; "--run-at=VALUE" never does.
    option = ["--run-at", text] if separate and not text.startswith("-") else [f"--run-at={text}"]
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, *option, *positionals(TYPE))
    if meaning == "?":
        # Garbage and extremes: the documented parser says what an accepted text means.
        if result.code != 0:
            assert_failed_cleanly(result, conn, before, *RUN_AT_WORDS)
            return
        when, delay = parse_run_at(text)
        meaning = when or delay
    assert not isinstance(meaning, str)
    assert_run_at(conn, before, result, meaning)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00",
        "+99999999999w",
        "+" + "9" * 400 + "s",
    ],
)
def test_a_run_at_beyond_pythons_range_is_refused_naming_run_at(
    conn: psycopg.Connection[Any], url: str, text: str
) -> None:
    before = snapshot(conn)
    result = cli("schedule", "--database-url", url, f"--run-at={text}", "--", TYPE)
    assert_failed_cleanly(result, conn, before, "--run-at", codes=[2])


# -- --older-than -----------------------------------------------------------------------------


@st.composite
def durations(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "spaced", "garbage"]))
    if kind == "garbage":
        return draw(st.one_of(argv_text, st.sampled_from(["-5m", "5", "m", "1.m", "1e3s", "5x"])))
    parts = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.integers(0, 10**6).map(str),
                    st.tuples(st.integers(0, 10**4), st.integers(0, 999)).map(
                        lambda p: f"{p[0]}.{p[1]:03d}"
                    ),
                ),
                st.sampled_from([*UNITS, *(u.upper() for u in UNITS)]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    joiner = " " if kind == "spaced" else ""
    return joiner.join(f"{n}{unit}" for n, unit in parts)


@SETTINGS
@given(text=durations())
@example(text="30d")
@example(text="0s")
@example(text="1h30m")
@example(text="999999w")  # a valid timedelta, past PostgreSQL's timestamp range
@example(text="")
@example(text="-1d")
@example(text="'; delete from pgxjob_job_runs; --")
def test_prune_older_than_prunes_or_is_refused_naming_the_duration(
    conn: psycopg.Connection[Any], url: str, text: str
) -> None:
    before = snapshot(conn)
    result = cli("prune", "--database-url", url, f"--older-than={text}")
    if result.code == 0:
        assert "Traceback" not in result.err
        assert result.out.startswith("deleted 0 runs that finished more than "), result.out
        assert snapshot(conn) == before
    else:
        assert_failed_cleanly(result, conn, before, *DURATION_WORDS)


@pytest.mark.parametrize("text", ["99999999999w", "9" * 400 + "s"])
def test_an_older_than_beyond_timedelta_is_refused_naming_it(
    conn: psycopg.Connection[Any], url: str, text: str
) -> None:
    before = snapshot(conn)
    result = cli("prune", "--database-url", url, f"--older-than={text}")
    assert_failed_cleanly(result, conn, before, *DURATION_WORDS, codes=[2])


# -- --limit ----------------------------------------------------------------------------------


@SETTINGS
@given(
    text=st.one_of(
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(str),
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(lambda n: f" {n:_} "),
        st.sampled_from(["", " ", "1.5", "1e3", "0x10", "ten", "٣", "²", "-0", "+7", "9" * 5000]),
        argv_text,
    ),
    form=st.sampled_from(["--limit=", "-n"]),
)
@example(text="0", form="-n")
@example(text="-1", form="-n")
@example(text="2147483647", form="--limit=")
def test_runs_limit_lists_runs_or_is_refused_naming_limit(
    conn: psycopg.Connection[Any], url: str, text: str, form: str
) -> None:
    option = [f"--limit={text}"] if form == "--limit=" or text.startswith("-") else ["-n", text]
    before = snapshot(conn)
    result = cli("runs", "--database-url", url, *option)
    try:
        valid = int(text) >= 1
    except ValueError:
        valid = False
    if valid:
        assert (result.code, result.out) == (0, ""), result  # the scratch database has no runs
        assert "Traceback" not in result.err
        assert snapshot(conn) == before
    else:
        assert_failed_cleanly(result, conn, before, *LIMIT_WORDS, codes=[2])


@pytest.mark.parametrize("text", [str(2**31), str(2**63), "9" * 100])
def test_a_limit_beyond_a_postgresql_integer_is_refused_naming_limit(
    conn: psycopg.Connection[Any], url: str, text: str
) -> None:
    before = snapshot(conn)
    result = cli("runs", "--database-url", url, f"--limit={text}")
    assert_failed_cleanly(result, conn, before, *LIMIT_WORDS, codes=[2])


# -- --database-url ---------------------------------------------------------------------------

# Never a text that libpq completes from its defaults (" ", "host=", "postgresql://"): that
# reaches the shared server's default database.
GARBAGE_URLS = [
    "",  # falls back to DATABASE_URL, unreachable here
    "not a url",
    "a=b",
    "postgresql://[::1",
    "postgresql://root@127.0.0.1:99999/x",
    "postgresql://root@127.0.0.1:notaport/x",
    "postgresql://root@127.0.0.1:1/x?connect_timeout=3",
    "postgresql://root@127.0.0.1:5432/pgxjob_no_such_database",
    "postgresql://root@127.0.0.1:5432/x?sslmode=bogus",
    "postgresql://root@127.0.0.1:5432/x?no_such_option=1",
    "postgresql://%zz@127.0.0.1/x",
    "mysql://root@127.0.0.1/x",
    "'; drop database postgres; --",
    "dbname='unterminated",
]


@SETTINGS
@given(
    database_url=st.one_of(
        st.sampled_from(GARBAGE_URLS),
        # Without "=" or "://" libpq cannot take text for a conninfo: no host to look up.
        argv_text.filter(lambda t: "=" not in t and "://" not in t and t.strip()),
    ),
    command=st.sampled_from(
        [["schedule", "--", TYPE, "{}"], ["status"], ["runs"], ["migrate", "--check"]]
    ),
)
def test_a_garbage_database_url_is_one_line_naming_the_database(
    conn: psycopg.Connection[Any], database_url: str, command: list[str]
) -> None:
    before = snapshot(conn)
    result = cli(f"--database-url={database_url}", *command)
    assert_failed_cleanly(result, conn, before, *URL_WORDS)


# -- the console script ------------------------------------------------------------------------


def test_the_console_script_fails_like_main_on_tricky_names(
    conn: psycopg.Connection[Any], url: str
) -> None:
    argv = ["schedule", "--database-url", url, "--group", "g'; --", "--", TYPE, '{"a": "\\";"}']
    before = snapshot(conn)
    real = console_script(*argv)
    assert_failed_cleanly(real, conn, before, "group", codes=[1])
    assert real == cli(*argv)


def test_the_console_script_schedules_like_main(conn: psycopg.Connection[Any], url: str) -> None:
    text = ' {"quote": "\'", "semicolon": ";", "emoji": "\U0001f4a3", "n": 1e400} '
    argv = ["schedule", "--database-url", url, "--run-at", "in 1h", "--", TYPE]
    before = snapshot(conn)
    real = console_script(*argv, "-", stdin=text)  # "-" reads PARAMS_JSON from stdin
    assert_run_at(conn, before, real, dt.timedelta(hours=1), params=text)
    in_process = cli(*argv, text)
    assert (in_process.code, stored(conn, int(in_process.out))[3]) == (0, text)


def test_argv_bytes_that_are_not_utf8_are_one_line_and_no_row(
    conn: psycopg.Connection[Any], url: str
) -> None:
    """Only a real process gets such argv: Python decodes it to lone surrogates."""
    for argv in (
        [b"\xff\xfe"],
        [TYPE.encode(), b'"\xff"'],
        [TYPE.encode(), b"--group", b"\xc3("],
    ):
        before = snapshot(conn)
        result = console_script("schedule", "--database-url", url, *argv)
        assert_failed_cleanly(result, conn, before, "utf-8", "utf8", "encod", "unicode")


def test_the_console_script_prints_no_traceback_for_a_huge_duration(
    conn: psycopg.Connection[Any], url: str
) -> None:
    before = snapshot(conn)
    result = console_script("prune", "--database-url", url, "--older-than", "99999999999w")
    assert_failed_cleanly(result, conn, before, *DURATION_WORDS, codes=[2])
