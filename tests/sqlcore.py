"""Helpers shared by the tests of the SQL core (tests/test_sql_*.py).

They call the pgxjob_* functions directly with explicit casts, so that each test states exactly
which signature it exercises, and they install pgxjob either with the Python migrator or with
plain psql, the two install paths a user has.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgxjob.migrations import migrate
from tests.dbserver import ROOT, admin_conninfo

SQL_DIR = ROOT / "sql"
UTC = dt.UTC


def sql_files() -> list[str]:
    """The migration files in the order psql must apply them."""
    return sorted(str(p) for p in SQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def install_with_psql(conninfo: str) -> None:
    """Apply sql/NNNN_*.sql in order with plain psql, as a user without Python would."""
    psql = shutil.which("psql")
    assert psql is not None, "psql is not on PATH"
    for path in sql_files():
        proc = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"psql -f {path} failed: {proc.stderr.strip()}"


INSTALLERS = {"migrator": migrate, "psql": install_with_psql}


def run(conninfo: str, query: Any, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def as_role(conninfo: str, role: str, **options: str) -> str:
    return make_conninfo(conninfo, user=role, **options)


def dbname(conninfo: str) -> str:
    return str(conninfo_to_dict(conninfo)["dbname"])


def create_login_role(prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))
    return name


def drop_role(name: str) -> None:
    """Drop a role made by create_login_role, once the databases it had objects in are gone."""
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        role = sql.Identifier(name)
        if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("drop owned by {}").format(role))
            conn.execute(sql.SQL("drop role {}").format(role))


@contextmanager
def login_roles(*prefixes: str) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        for prefix in prefixes:
            names.append(create_login_role(prefix))
        yield names
    finally:
        for name in reversed(names):
            drop_role(name)


def sqlstate_of(call: Any) -> str | None:
    """Run call(); return None when it succeeds, else the SQLSTATE it raised."""
    try:
        call()
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


# -- the pgxjob functions, with the signatures the SQL core keeps ------------------------------


def register_worker(
    conn: psycopg.Connection[Any],
    group: str = "default",
    dead_after: dt.timedelta = dt.timedelta(minutes=1),
    now: dt.datetime | None = None,
) -> int:
    row = conn.execute(
        "select pgxjob_register_worker(%s::text, %s::interval, coalesce(%s::timestamptz, now()))",
        (group, dead_after, now),
    ).fetchone()
    assert row is not None
    return int(row[0])


def heartbeat(
    conn: psycopg.Connection[Any], worker_id: int, now: dt.datetime | None = None
) -> bool:
    row = conn.execute(
        "select pgxjob_worker_heartbeat(%s::int, coalesce(%s::timestamptz, now()))",
        (worker_id, now),
    ).fetchone()
    assert row is not None
    return bool(row[0])


def reap(
    conn: psycopg.Connection[Any], now: dt.datetime | None = None, reaper_id: int | None = None
) -> int:
    row = conn.execute(
        "select pgxjob_reap_dead_workers(p_now => coalesce(%s::timestamptz, now()),"
        " p_reaper_id => %s::int)",
        (now, reaper_id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def schedule(
    conn: psycopg.Connection[Any],
    job_type: str,
    params: str | None = None,
    group: str | None = None,
    run_at: dt.datetime | None = None,
) -> int:
    row = conn.execute(
        "select pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz)",
        (job_type, params, group, run_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


def fetch(
    conn: psycopg.Connection[Any], worker_id: int, limit: int = 100, now: dt.datetime | None = None
) -> list[tuple[Any, ...]]:
    """(id, asap) of the jobs the worker claimed, in the order the function returned them."""
    return conn.execute(
        "select id, asap from pgxjob_fetch_jobs(%s::int, %s::int,"
        " coalesce(%s::timestamptz, now()))",
        (worker_id, limit, now),
    ).fetchall()


@dataclass(frozen=True)
class Result:
    """One row of a pgxjob_record_job_results batch."""

    job_id: int
    error_count: int = 0
    error: str | None = None
    retry_at: dt.datetime | None = None
    max_retries: int | None = None
    base_delay: dt.timedelta | None = None
    log: bool = True
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


RECORD_SQL = (
    "select changed, stale_job_ids from pgxjob_record_job_results("
    "p_worker_id => %s::int, p_job_ids => %s::bigint[], p_error_counts => %s::int[],"
    " p_started_at => %s::timestamptz[], p_finished_at => %s::timestamptz[],"
    " p_errors => %s::text[], p_retry_at => %s::timestamptz[],"
    " p_backoff_max_retries => %s::int[], p_backoff_base_delays => %s::interval[],"
    " p_log => %s::boolean[], p_now => coalesce(%s::timestamptz, now()))"
)


def record_params(
    worker_id: int | None, results: Sequence[Result], now: dt.datetime | None = None
) -> tuple[Any, ...]:
    moment = now or dt.datetime.now(UTC)
    return (
        worker_id,
        [r.job_id for r in results],
        [r.error_count for r in results],
        [r.started_at or moment for r in results],
        [r.finished_at or moment for r in results],
        [r.error for r in results],
        [r.retry_at for r in results],
        [r.max_retries for r in results],
        [r.base_delay for r in results],
        [r.log for r in results],
        now,
    )


def record(
    conn: psycopg.Connection[Any],
    worker_id: int,
    results: Sequence[Result],
    now: dt.datetime | None = None,
) -> tuple[int, list[int]]:
    """(changed, stale_job_ids) of one pgxjob_record_job_results call."""
    rows = conn.execute(RECORD_SQL, record_params(worker_id, results, now)).fetchall()
    assert len(rows) == 1, f"pgxjob_record_job_results returned {len(rows)} rows, not one"
    changed, stale = rows[0]
    return int(changed), sorted(stale or [])


def job_state(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...] | None:
    """(table, worker_id, error_count) of a job, or None when it is gone."""
    rows = conn.execute(
        "select 'asap', worker_id, 0 from pgxjob_asap_jobs where id = %(id)s"
        " union all"
        " select 'run_at', worker_id, error_count from pgxjob_run_at_jobs where id = %(id)s",
        {"id": job_id},
    ).fetchall()
    assert len(rows) <= 1
    return rows[0] if rows else None


def run_log(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[Any, ...]]:
    """(run_number, error) of the job's run-log rows."""
    return conn.execute(
        "select run_number, error from pgxjob_job_runs where job_id = %s order by run_number",
        (job_id,),
    ).fetchall()
