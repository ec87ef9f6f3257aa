"""Job control in SQL across sessions: unique keys under concurrency, and the fetch plan."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import truncate_pgxjob_tables


@pytest.fixture
def db(db_url: str) -> Iterator[str]:
    truncate_pgxjob_tables(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("select pgxjob_register_group('jc')")
        conn.execute("select pgxjob_register_job_type('jc_type', 'jc')")
    yield db_url
    truncate_pgxjob_tables(db_url)


def scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def job_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(
            scalar(
                conn,
                "select (select count(*) from pgxjob_asap_jobs)"
                " + (select count(*) from pgxjob_run_at_jobs)",
            )
        )


def schedule_in_background(url: str, key: str, results: list[int]) -> threading.Thread:
    def run() -> None:
        with psycopg.connect(url) as conn:
            results.append(
                int(scalar(conn, "select pgxjob_schedule('jc_type', unique_key => %s)", (key,)))
            )
            conn.commit()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until_blocked(url: str, thread: threading.Thread) -> None:
    """Wait until another session waits on a lock (the second producer behind the first)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(500):
            waiting = scalar(
                conn,
                "select count(*) from pg_stat_activity"
                " where datname = current_database() and wait_event_type = 'Lock'",
            )
            if waiting or not thread.is_alive():
                return
            threading.Event().wait(0.01)
    raise AssertionError("the second producer never waited for the first")


def test_two_sessions_scheduling_one_key_make_one_job_when_the_first_commits(db: str) -> None:
    with psycopg.connect(db) as first:
        first_id = int(scalar(first, "select pgxjob_schedule('jc_type', unique_key => 'k')"))
        results: list[int] = []
        thread = schedule_in_background(db, "k", results)
        wait_until_blocked(db, thread)
        first.commit()
        thread.join(10)
    assert results == [first_id]
    assert job_count(db) == 1


def test_the_second_session_creates_its_own_job_when_the_first_rolls_back(db: str) -> None:
    with psycopg.connect(db) as first:
        first_id = int(scalar(first, "select pgxjob_schedule('jc_type', unique_key => 'k')"))
        results: list[int] = []
        thread = schedule_in_background(db, "k", results)
        wait_until_blocked(db, thread)
        first.rollback()
        thread.join(10)
    assert len(results) == 1 and results[0] != first_id
    assert job_count(db) == 1


def test_a_duplicate_key_sends_no_notification(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as listener, psycopg.connect(db) as producer:
        listener.execute("listen pgxjob_job_available")
        producer.execute("select pgxjob_schedule('jc_type', unique_key => 'n')")
        producer.commit()
        assert len(list(listener.notifies(timeout=1, stop_after=1))) == 1
        producer.execute("select pgxjob_schedule('jc_type', unique_key => 'n')")
        producer.commit()
        assert list(listener.notifies(timeout=0.5)) == []


def nested_plans(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    """The plans of every statement the query runs, nested ones included, via auto_explain."""
    plans: list[dict[str, Any]] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        start = message.find("{")
        if "duration:" in message and start >= 0:
            plans.append(json.loads(message[start:]))

    conn.add_notice_handler(on_notice)
    for setting in (
        "load 'auto_explain'",
        "set auto_explain.log_min_duration = 0",
        "set auto_explain.log_nested_statements = on",
        "set auto_explain.log_analyze = on",
        "set auto_explain.log_buffers = on",
        "set auto_explain.log_format = json",
        "set client_min_messages = log",
    ):
        conn.execute(setting)
    conn.execute(query).fetchall()
    conn.execute("set client_min_messages = notice")
    return plans


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def test_fetch_reads_index_entries_of_due_jobs_only_whatever_is_claimed_or_in_the_future(
    db: str,
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        other = int(scalar(conn, "select pgxjob_register_worker('jc', interval '1 hour')"))
        worker = int(scalar(conn, "select pgxjob_register_worker('jc', interval '1 hour')"))
        # 50,000 claimed ASAP jobs (of every priority), 50,000 timed jobs in the future, and
        # 50,000 unclaimed ASAP jobs of a lower priority than the 20 the fetch must take.
        conn.execute(
            "select count(*) from pgxjob_schedule_many('jc_type',"
            " array_fill('{}'::json, array[50000]), priority => 3)"
        )
        conn.execute("select count(*) from pgxjob_fetch_jobs(%s, 50000)", (other,))
        conn.execute(
            "select count(*) from pgxjob_schedule_many('jc_type', array_fill('{}'::json,"
            " array[50000]), run_at => now() + interval '1 day', priority => 9)"
        )
        conn.execute(
            "select count(*) from pgxjob_schedule_many('jc_type',"
            " array_fill('{}'::json, array[50000]), priority => -1)"
        )
        conn.execute(
            "select count(*) from pgxjob_schedule_many('jc_type',"
            " array_fill('{}'::json, array[20]), priority => 1)"
        )
        conn.execute("vacuum analyze pgxjob_public.pgxjob_asap_jobs")
        conn.execute("vacuum analyze pgxjob_public.pgxjob_run_at_jobs")

        plans = nested_plans(conn, f"select priority from pgxjob_fetch_jobs({worker}, 20)")
        rows = conn.execute(
            "select priority, count(*) from pgxjob_asap_jobs where worker_id = %s group by 1",
            (worker,),
        ).fetchall()

    assert rows == [(1, 20)]
    scans = [
        node
        for plan in plans
        for node in walk(plan["Plan"])
        if node.get("Relation Name") in ("pgxjob_asap_jobs", "pgxjob_run_at_jobs")
        and node["Node Type"] != "ModifyTable"
    ]
    assert scans, "auto_explain reported no scan of the job tables"
    for node in scans:
        assert node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), node
        # Each scan reads about the rows it returns: never the 50,000 claimed, future or
        # lower-priority ones.
        assert node.get("Rows Removed by Filter", 0) < 100, node
        assert node["Shared Hit Blocks"] + node.get("Shared Read Blocks", 0) < 500, node
