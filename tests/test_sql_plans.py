"""The hot-path functions cost what their batch costs, whatever the planner's statistics say.

A fetch of N jobs must not read the whole backlog, and recording N results must not compare
every result with every job. Both happened: with statistics taken while the ASAP table was
nearly empty (as autovacuum leaves them before a bulk load), the claim read and sorted every
waiting job on each fetch, so draining a backlog of a million jobs slowed to a crawl; and the
result batch was joined to the jobs it owns by a nested loop, N x N comparisons per call,
because the planner takes an unnested array for ten rows.

Each test runs the function under auto_explain (plans with row counts, no timing) and checks
that no plan node handles more rows than a small multiple of the batch, that no filter tests
each row against a whole array parameter (the ownership test through the worker_id index did),
and that JIT compiles nothing (the fix disables plan types, whose penalty cost would otherwise
trigger JIT on every call). Every call runs more than five times, so that PL/pgSQL's generic
plans, chosen from the sixth call on, are checked too.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.sqlcore import RECORD_SQL, Result, fetch, record_params, register_worker

GROUP = "plans"
JOB_TYPE = "plans_job"
BATCH = 500
BACKLOG = 20_000
# A node may handle the batch a few times over (the claim reads the batch through an index and
# updates it through the primary key); reading the backlog, or batch x batch, is far above.
LIMIT = 4 * BATCH
CALLS = 7
FETCH_SQL = "select id, asap from pgxjob_fetch_jobs(%s::int, %s::int, now())"

_NODE = re.compile(r"actual rows=(\d+) loops=(\d+)")
_REMOVED = re.compile(r"Rows Removed by (?:Join )?Filter: (\d+)")
_ARRAY_FILTER = re.compile(r"^\s*(?:Join )?Filter: .*= ANY \(\$\d+\)")


@pytest.fixture
def db() -> Iterator[psycopg.Connection[Any]]:
    with scratch_database("pgxjob_plans") as conninfo:
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            try:
                conn.execute("load 'auto_explain'")
            except psycopg.Error as exc:
                pytest.skip(f"auto_explain cannot be loaded on this server: {exc}")
            for setting, value in {
                "log_min_duration": "0",
                "log_analyze": "on",
                "log_timing": "off",
                "log_nested_statements": "on",
                "log_level": "notice",
            }.items():
                conn.execute(f"set auto_explain.{setting} = {value}")
            conn.execute("set client_min_messages = warning")
            conn.execute("select pgxjob_register_group(%s::text)", (GROUP,))
            conn.execute("select pgxjob_register_job_type(%s::text, %s::text)", (JOB_TYPE, GROUP))
            yield conn


def explained(
    conn: psycopg.Connection[Any], query: str, params: Sequence[Any]
) -> tuple[list[tuple[Any, ...]], int, str]:
    """Run the query with its plans logged: its rows, the most rows one plan node handled, and
    the plan of that node's statement."""
    plans: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and "plan:" in diag.message_primary:
            plans.append(diag.message_primary)

    conn.execute("set client_min_messages = notice")
    conn.add_notice_handler(keep)
    try:
        rows = conn.execute(query, params).fetchall()
    finally:
        conn.remove_notice_handler(keep)
        conn.execute("set client_min_messages = warning")
    assert plans, "auto_explain logged no plan"
    compiled = [plan for plan in plans if "JIT:" in plan]
    assert not compiled, f"a statement was compiled by JIT on every call:\n{compiled[0]}"
    worst, worst_plan = 0, ""
    for plan in plans:
        for node in plan_nodes(plan):
            handled = node_cost(node)
            if handled > worst:
                worst, worst_plan = handled, plan
    return rows, worst, worst_plan


def plan_nodes(plan: str) -> list[list[str]]:
    """The plan's nodes, each as its first line and the detail lines under it."""
    nodes: list[list[str]] = []
    for line in plan.splitlines():
        if _NODE.search(line) or not nodes:
            nodes.append([line])
        else:
            nodes[-1].append(line)
    return nodes


def node_cost(node: list[str]) -> int:
    """Rows a node handled: produced (times loops) and filtered out. A filter that tests each row
    against a whole array parameter (`= ANY ($n)`, searched element by element) counts once per
    element, taken as a batch."""
    rows = sum(int(r) * int(n) for r, n in _NODE.findall(node[0]))
    rows += sum(int(r) for line in node for r in _REMOVED.findall(line))
    if any(_ARRAY_FILTER.search(line) for line in node):
        rows *= BATCH
    return rows


def schedule_many(
    conn: psycopg.Connection[Any],
    n: int,
    run_at: dt.datetime | None = None,
    *,
    keyed: bool = False,
) -> None:
    """n jobs of the test's type; with keyed, each with a unique key of its own."""
    conn.execute(
        "select count(*) from pgxjob_schedule_many(%s::text,"
        " array(select '{}'::json from generate_series(1, %s)), null::text, %s::timestamptz,"
        " unique_keys => case when %s then"
        "   array(select gen_random_uuid()::text from generate_series(1, %s)) end)",
        (JOB_TYPE, n, run_at, keyed, n),
    )


def statistics_of_a_quiet_queue(conn: psycopg.Connection[Any]) -> None:
    """Statistics of a nearly empty queue, most of its few jobs claimed (before a bulk load)."""
    worker = register_worker(conn, GROUP, dt.timedelta(hours=1))
    schedule_many(conn, 100)
    fetch(conn, worker, limit=96)
    conn.execute("analyze pgxjob_public.pgxjob_asap_jobs, pgxjob_public.pgxjob_run_at_jobs")


def statistics_of_a_busy_queue(conn: psycopg.Connection[Any]) -> None:
    """Statistics of a queue with a large backlog, some of it claimed; the backlog then goes."""
    worker = register_worker(conn, GROUP, dt.timedelta(hours=1))
    schedule_many(conn, BACKLOG)
    fetch(conn, worker, limit=4 * BATCH)
    conn.execute("analyze pgxjob_public.pgxjob_asap_jobs, pgxjob_public.pgxjob_run_at_jobs")
    conn.execute("delete from pgxjob_public.pgxjob_asap_jobs where worker_id is null")


STATISTICS = pytest.mark.parametrize(
    "statistics",
    [statistics_of_a_quiet_queue, statistics_of_a_busy_queue],
    ids=["quiet-queue statistics", "busy-queue statistics"],
)


@STATISTICS
def test_fetch_reads_the_batch_not_the_backlog(
    db: psycopg.Connection[Any], statistics: Callable[[psycopg.Connection[Any]], None]
) -> None:
    statistics(db)
    schedule_many(db, BACKLOG)
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        claimed, worst, plan = explained(db, FETCH_SQL, (worker, BATCH))
        assert len(claimed) == BATCH
        assert worst <= LIMIT, f"fetch {k + 1} handled {worst} rows in one node:\n{plan}"


@STATISTICS
def test_timed_fetch_reads_the_batch_not_the_backlog(
    db: psycopg.Connection[Any], statistics: Callable[[psycopg.Connection[Any]], None]
) -> None:
    statistics(db)
    due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    schedule_many(db, BACKLOG, run_at=due)
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        claimed, worst, plan = explained(db, FETCH_SQL, (worker, BATCH))
        assert len(claimed) == BATCH
        assert worst <= LIMIT, f"fetch {k + 1} handled {worst} rows in one node:\n{plan}"


@pytest.mark.parametrize(
    ("kind", "result"),
    [
        ("ASAP successes", lambda job_id: Result(job_id)),
        (
            "ASAP failures retried",
            lambda job_id: Result(job_id, error="boom", max_retries=5, base_delay=dt.timedelta(1)),
        ),
        ("ASAP final failures", lambda job_id: Result(job_id, error="boom")),
    ],
)
@STATISTICS
def test_recording_results_handles_the_batch_once(
    db: psycopg.Connection[Any],
    statistics: Callable[[psycopg.Connection[Any]], None],
    kind: str,
    result: Callable[[int], Result],
) -> None:
    statistics(db)
    schedule_many(db, BATCH * CALLS)
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        ids = [job_id for job_id, _ in fetch(db, worker, limit=BATCH)]
        params = record_params(worker, [result(job_id) for job_id in ids])
        rows, worst, plan = explained(db, RECORD_SQL, params)
        assert rows[0][0] == BATCH, f"{kind}: {rows[0][0]} of {BATCH} results applied"
        assert worst <= LIMIT, f"{kind}, call {k + 1}: {worst} rows in one node:\n{plan}"


@STATISTICS
def test_recording_timed_retries_handles_the_batch_once(
    db: psycopg.Connection[Any], statistics: Callable[[psycopg.Connection[Any]], None]
) -> None:
    statistics(db)
    due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    schedule_many(db, BATCH * CALLS, run_at=due)
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        ids = [job_id for job_id, _ in fetch(db, worker, limit=BATCH)]
        results = [Result(i, error="boom", max_retries=5, base_delay=dt.timedelta(1)) for i in ids]
        params = record_params(worker, results)
        rows, worst, plan = explained(db, RECORD_SQL, params)
        assert rows[0][0] == BATCH
        assert worst <= LIMIT, f"call {k + 1}: {worst} rows in one node:\n{plan}"


@STATISTICS
def test_recording_keyed_jobs_reads_their_keys_only(
    db: psycopg.Connection[Any], statistics: Callable[[psycopg.Connection[Any]], None]
) -> None:
    """Finishing a keyed job frees its key by a probe, not a scan of every job's key."""
    statistics(db)
    schedule_many(db, BACKLOG, keyed=True)
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        ids = [job_id for job_id, _ in fetch(db, worker, limit=BATCH)]
        params = record_params(worker, [Result(job_id) for job_id in ids])
        rows, worst, plan = explained(db, RECORD_SQL, params)
        assert rows[0][0] == BATCH
        assert worst <= LIMIT, f"call {k + 1}: {worst} rows in one node:\n{plan}"
    leaked = db.execute(
        "select count(*) from pgxjob_public.pgxjob_unique_keys k"
        " where not exists (select from pgxjob_public.pgxjob_asap_jobs j where j.id = k.job_id)"
    ).fetchone()
    assert leaked == (0,), "a finished job kept its key"


@STATISTICS
def test_an_idle_worker_finds_its_next_due_time_in_one_probe(
    db: psycopg.Connection[Any], statistics: Callable[[psycopg.Connection[Any]], None]
) -> None:
    """pgxjob_next_run_in, called on every idle poll, reads one index entry per table."""
    statistics(db)
    db.execute("delete from pgxjob_public.pgxjob_asap_jobs")
    schedule_many(db, BACKLOG, run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    worker = register_worker(db, GROUP)
    for k in range(CALLS):
        rows, worst, plan = explained(db, "select pgxjob_next_run_in(%s::int)", (worker,))
        assert rows[0][0] > dt.timedelta(minutes=59)
        assert worst <= 10, f"call {k + 1}: {worst} rows in one node:\n{plan}"
