"""A result changes a job only while the worker that reports it still owns the job.

Worker 1 claims a job, is reaped while it is alive (a pause longer than its dead_after), and
worker 2 claims the job again. Then worker 1's late result arrives. Whatever it says (success,
retry at a given time, linear backoff, final failure), the job must stay exactly as it is, owned
by worker 2, so worker 3 cannot claim it (no second concurrent run); the late job id comes back in
stale_job_ids; and worker 2's own result then applies as usual. The clock is moved with p_now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.sqlcore import (
    Result,
    fetch,
    heartbeat,
    job_state,
    reap,
    record,
    register_worker,
    run_log,
    schedule,
)

GROUP = "fencing"
JOB_TYPE = "fencing_job"
MINUTE = dt.timedelta(minutes=1)


def outcome(kind: str, when: dt.datetime) -> dict[str, Any]:
    """The fields of a Result for each kind of outcome a handler can have."""
    return {
        "success": {},
        "retry_at": {"error": "try again", "retry_at": when + 10 * MINUTE},
        "backoff": {"error": "later", "max_retries": 5, "base_delay": MINUTE},
        "final_failure": {"error": "broken for good"},
    }[kind]


class Cluster:
    """Three workers of one group, each in a session of its own, on a clock the test moves."""

    def __init__(self, conninfo: str) -> None:
        self.conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(4)]
        self.admin = self.conns[0]
        self.admin.execute("select pgxjob_register_group(%s::text)", (GROUP,))
        self.admin.execute("select pgxjob_register_job_type(%s::text, %s::text)", (JOB_TYPE, GROUP))
        row = self.admin.execute("select now()").fetchone()
        assert row is not None
        self.t0: dt.datetime = row[0]
        self.ids = [
            register_worker(conn, GROUP, dead_after=MINUTE, now=self.t0) for conn in self.conns[1:]
        ]

    def at(self, minutes: float) -> dt.datetime:
        return self.t0 + dt.timedelta(minutes=minutes)

    def conn(self, worker: int) -> psycopg.Connection[Any]:
        return self.conns[worker]

    def id(self, worker: int) -> int:
        return self.ids[worker - 1]

    def reap_worker_1_while_alive(self) -> None:
        """Workers 2 and 3 keep heartbeating while worker 1 is silent; worker 2 reaps it."""
        for minutes in (5, 10, 15):
            for worker in (2, 3):
                assert heartbeat(self.conn(worker), self.id(worker), self.at(minutes))
        assert reap(self.conn(2), self.at(15), reaper_id=self.id(2)) == 1
        alive = self.admin.execute(
            "select w.worker_id from pgxjob_worker_status(%s::timestamptz) w order by 1",
            (self.at(15),),
        ).fetchall()
        assert [r[0] for r in alive] == [self.id(2), self.id(3)]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


@pytest.fixture
def cluster(clean_db: str) -> Iterator[Cluster]:
    c = Cluster(clean_db)
    try:
        yield c
    finally:
        c.close()


def schedule_job(cluster: Cluster, table: str) -> int:
    run_at = None if table == "asap" else cluster.at(1)
    return schedule(cluster.admin, JOB_TYPE, '{"n": 1}', run_at=run_at)


@pytest.mark.parametrize("table", ["asap", "run_at"])
@pytest.mark.parametrize("kind", ["success", "retry_at", "backoff", "final_failure"])
def test_a_late_result_from_a_reaped_worker_changes_nothing(
    cluster: Cluster, table: str, kind: str
) -> None:
    job = schedule_job(cluster, table)
    assert fetch(cluster.conn(1), cluster.id(1), 10, cluster.at(2)) == [(job, table == "asap")]

    cluster.reap_worker_1_while_alive()
    assert fetch(cluster.conn(2), cluster.id(2), 10, cluster.at(15)) == [(job, table == "asap")]
    before = job_state(cluster.admin, job)
    assert before == (table, cluster.id(2), 0)

    late = Result(job, **outcome(kind, cluster.at(16)))
    assert record(cluster.conn(1), cluster.id(1), [late], cluster.at(16)) == (0, [job])

    assert job_state(cluster.admin, job) == before
    # No second concurrent run: worker 3 finds nothing to claim, now or long after any retry time.
    assert fetch(cluster.conn(3), cluster.id(3), 10, cluster.at(16)) == []
    assert fetch(cluster.conn(3), cluster.id(3), 10, cluster.at(16 + 60 * 24)) == []

    own = Result(job, **outcome(kind, cluster.at(17)))
    assert record(cluster.conn(2), cluster.id(2), [own], cluster.at(17)) == (1, [])
    after = job_state(cluster.admin, job)
    assert after == (None if kind in ("success", "final_failure") else ("run_at", None, 1))
    # A stale run may be logged (marked as such), but it must not take the real run's place.
    assert (1, own.error) in run_log(cluster.admin, job)


def test_a_mixed_batch_applies_only_the_rows_the_worker_still_owns(cluster: Cluster) -> None:
    taken_over, released, kept = (schedule_job(cluster, "asap") for _ in range(3))
    assert len(fetch(cluster.conn(1), cluster.id(1), 2, cluster.at(2))) == 2
    cluster.reap_worker_1_while_alive()
    # Worker 2 takes over both of worker 1's old jobs and the third, then retries one of them,
    # which leaves it unowned.
    claimed = [row[0] for row in fetch(cluster.conn(2), cluster.id(2), 3, cluster.at(15))]
    assert sorted(claimed) == [taken_over, released, kept]
    assert record(
        cluster.conn(2), cluster.id(2), [Result(released, error="x", retry_at=cluster.at(30))]
    ) == (1, [])
    assert job_state(cluster.admin, released) == ("run_at", None, 1)

    # Worker 1, reaped, reports both of its old jobs: one owned by worker 2, one by nobody.
    late = [Result(taken_over), Result(released, error="late", retry_at=cluster.at(20))]
    assert record(cluster.conn(1), cluster.id(1), late, cluster.at(16)) == (
        0,
        sorted([taken_over, released]),
    )
    assert job_state(cluster.admin, taken_over) == ("asap", cluster.id(2), 0)
    assert job_state(cluster.admin, released) == ("run_at", None, 1)

    # Worker 2's batch is judged row by row: its own job applies, the unowned one is stale.
    mixed = [Result(kept), Result(released, error="not mine", retry_at=cluster.at(40))]
    assert record(cluster.conn(2), cluster.id(2), mixed, cluster.at(17)) == (1, [released])
    assert job_state(cluster.admin, kept) is None
    assert job_state(cluster.admin, released) == ("run_at", None, 1)


def test_a_result_for_a_job_that_is_already_gone_is_stale(cluster: Cluster) -> None:
    job = schedule_job(cluster, "asap")
    assert fetch(cluster.conn(1), cluster.id(1), 10, cluster.at(2)) == [(job, True)]
    assert record(cluster.conn(1), cluster.id(1), [Result(job)], cluster.at(3)) == (1, [])
    assert record(cluster.conn(1), cluster.id(1), [Result(job)], cluster.at(4)) == (0, [job])
