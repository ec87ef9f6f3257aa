"""NOTIFY from the SQL functions: sent on commit only, on the right channel, with the group name."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgxjob.queries import PG_NOTIFY_CHANNEL, TIMED_NOTIFY_CHANNEL
from pgxjob.worker import idle_sleep

Notification = tuple[str, str]


@pytest.fixture
def listener(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection listening on both pgxjob channels."""
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute(f"listen {PG_NOTIFY_CHANNEL}")
        conn.execute(f"listen {TIMED_NOTIFY_CHANNEL}")
        yield conn


@pytest.fixture
def producer(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection in transaction mode with groups and types registered."""
    with psycopg.connect(clean_db) as conn:
        conn.execute("select pgxjob_register_group('mail')")
        conn.execute("select pgxjob_register_job_type('send', 'mail')")
        conn.execute("select pgxjob_register_job_type('tidy')")
        conn.commit()
        yield conn


def received(listener: psycopg.Connection[Any], timeout: float = 0.5) -> list[Notification]:
    """Every notification that arrives within the timeout."""
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout)]


def test_asap_job_notifies_its_group_after_commit(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    producer.execute("select pgxjob_schedule('send')")
    assert received(listener, timeout=0.3) == [], "nothing may be delivered before the commit"

    producer.commit()

    assert received(listener) == [(PG_NOTIFY_CHANNEL, "mail")]


def test_asap_job_notifies_the_group_it_was_scheduled_into(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    producer.execute("select pgxjob_schedule('send', group_name => 'default')")
    producer.commit()

    assert received(listener) == [(PG_NOTIFY_CHANNEL, "default")]


def test_rolled_back_schedule_sends_no_notification(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    producer.execute("select pgxjob_schedule('send')")
    producer.execute("select pgxjob_schedule('tidy', run_at => now() + interval '1 hour')")
    producer.rollback()

    assert received(listener, timeout=1.0) == []
    assert producer.execute("select count(*) from pgxjob_asap_jobs").fetchone() == (0,)


def test_identical_notifications_of_one_transaction_fold_into_one(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    for _ in range(3):
        producer.execute("select pgxjob_schedule('send')")
    producer.execute("select pgxjob_schedule_many('tidy', array['{}', '{}']::json[])")
    producer.commit()

    assert sorted(received(listener)) == [
        (PG_NOTIFY_CHANNEL, "default"),
        (PG_NOTIFY_CHANNEL, "mail"),
    ]


def test_timed_job_notifies_the_timed_channel_not_the_asap_one(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    producer.execute("select pgxjob_schedule('send', run_at => now() + interval '1 minute')")
    producer.commit()

    assert received(listener) == [(TIMED_NOTIFY_CHANNEL, "mail")]


def test_timed_schedule_many_notifies_the_timed_channel(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    producer.execute(
        "select pgxjob_schedule_many('tidy', array['{}']::json[],"
        " run_at => now() + interval '1 minute')"
    )
    producer.commit()

    assert received(listener) == [(TIMED_NOTIFY_CHANNEL, "default")]


def test_reaping_a_worker_that_owned_jobs_notifies_its_group(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    worker_id = producer.execute(
        "select pgxjob_register_worker('mail', interval '1 minute')"
    ).fetchone()
    assert worker_id is not None
    producer.execute("select pgxjob_schedule('send')")
    producer.execute("select * from pgxjob_fetch_jobs(%s, 10)", (worker_id[0],))
    producer.commit()
    received(listener)

    producer.execute("select pgxjob_reap_dead_workers(now() + interval '2 minutes')")
    producer.commit()

    assert received(listener) == [(PG_NOTIFY_CHANNEL, "mail")]
    assert producer.execute("select worker_id from pgxjob_asap_jobs").fetchall() == [(None,)]


def test_a_retry_notifies_the_timed_channel(
    listener: psycopg.Connection[Any], producer: psycopg.Connection[Any]
) -> None:
    worker_id = producer.execute(
        "select pgxjob_register_worker('mail', interval '1 minute')"
    ).fetchone()
    assert worker_id is not None
    job = producer.execute("select pgxjob_schedule('send')").fetchone()
    assert job is not None
    producer.execute("select * from pgxjob_fetch_jobs(%s, 10)", (worker_id[0],))
    producer.commit()
    received(listener)

    producer.execute(
        "select * from pgxjob_record_job_results(%s, array[%s::bigint], array[0], array[now()],"
        " array[now()], array['boom'], array[now() + interval '1 minute'], array[null::int],"
        " array[null::interval], array[true])",
        (worker_id[0], job[0]),
    )
    producer.commit()

    assert received(listener) == [(TIMED_NOTIFY_CHANNEL, "mail")]


def test_a_worker_woken_before_a_timed_job_is_due_sleeps_until_it_is_due() -> None:
    # Every timed schedule wakes the group's idle workers. A worker woken 3 ms before its next
    # job is due must sleep those 3 ms, not a fixed retry pause that starts the job late.
    assert idle_sleep(dt.timedelta(milliseconds=3), 5.0) == pytest.approx(0.003)
    assert idle_sleep(dt.timedelta(microseconds=200), 5.0) == pytest.approx(0.0002)
    # Far in the future, or nothing timed: the poll interval bounds the sleep.
    assert idle_sleep(dt.timedelta(hours=1), 5.0) == 5.0
    assert idle_sleep(None, 5.0) == 5.0
    # Due already but not claimed by this worker (another is claiming it): look again soon.
    assert idle_sleep(dt.timedelta(0), 5.0) == pytest.approx(0.01)
    assert idle_sleep(dt.timedelta(seconds=-2), 5.0) == pytest.approx(0.01)
    assert idle_sleep(dt.timedelta(0), 0.005) == 0.005
