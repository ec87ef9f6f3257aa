"""HOT claims: what a claim costs with the ASAP table's current indexes, and with layouts where it
touches no indexed column.

A claim sets ``worker_id``. With the current layout that column is in the predicate of both
partial indexes of ``pgxjob_asap_jobs`` (the fetch index ``where worker_id is null`` and the
worker index ``where worker_id is not null``), so a claim is never a HOT update: it writes a new
heap tuple and new index entries. This script builds one database per layout from the migrations,
changes the indexes or the fillfactor of the ASAP table there (sql/ and the functions are not
changed), and drains the same backlog through the same ``pgxjob_fetch_jobs`` and
``pgxjob_record_job_results`` calls. Layouts:

- ``current``: as migrated (fillfactor 90);
- ``current-ff70``: fillfactor 70, same indexes (a HOT update is still impossible);
- ``full-ff90``: the fetch index over all rows, ``(group_id, priority desc, id)``, no worker
  index, and a partial index ``(id) where cancel_requested`` so that the cancel poll does not
  read the table; fillfactor 90;
- ``full-ff50``: the same with fillfactor 50, which leaves room on each page for a new version
  of every row.

Per drain (``--jobs`` ASAP jobs, one process claiming ``--batch`` at a time and recording their
results, run log on and off; the layouts interleaved and their order reversed every other
round): HOT share of the claims (``n_tup_hot_upd`` / ``n_tup_upd`` of the table), CPU of the
driving backend in fetch and in record (``/proc/<pid>/schedstat``, ns resolution), CPU of the
whole server (utime + stime of the postmaster's children, live ones and exited ones, from /proc;
autovacuum included), WAL bytes (``pg_current_wal_lsn``), shared buffers touched per job
(pg_stat_statements, top-level calls) and the drain rate. A CHECKPOINT precedes each enqueue,
so the enqueue carries the full-page images and the drain does not.

Then the fetch with claimed rows ahead of it: 0, 2,000 and 20,000 jobs claimed by the fetching
worker, and 20,000 claimed by a second worker, in front of 2,000 unclaimed ones; for each,
the shared buffers (EXPLAIN (ANALYZE, BUFFERS)) and the backend CPU of the fetch's ASAP candidate
query alone, and the backend CPU of a whole ``pgxjob_fetch_jobs`` call of 1,000; each rolled back,
the median of 11 after one left out (the session's first call compiles the functions). And in
each case the cost of ``pgxjob_cancel_requests`` for the claiming worker (polled at most once a
second by a worker with running jobs), which the worker index answers in the current layout.

Needs a private PostgreSQL whose data directory this process can read in /proc (for the CPU
figures), with pg_stat_statements loaded, and a superuser DSN; creates and drops databases
``hot_<layout>``. Example::

    .venv/bin/python bench/hot_claims.py --dsn postgresql://root@127.0.0.1:55477/postgres \\
        --pgdata /work/hotpg/data --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
import scaleout  # bench/, the script's directory, is on sys.path
from psycopg.conninfo import make_conninfo

from pgxjob import migrations

TABLE = "pgxjob_public.pgxjob_asap_jobs"

_FULL_INDEXES = [
    "drop index pgxjob_public.pgxjob_asap_jobs_fetch_idx",
    "drop index pgxjob_public.pgxjob_asap_jobs_worker_id_idx",
    f"create index pgxjob_asap_jobs_fetch_idx on {TABLE} (group_id, priority desc, id)",
    f"create index pgxjob_asap_jobs_cancel_idx on {TABLE} (id) where cancel_requested",
]

LAYOUTS: dict[str, list[str]] = {
    "current": [],
    "current-ff70": [f"alter table {TABLE} set (fillfactor = 70)"],
    "full-ff90": _FULL_INDEXES,
    "full-ff50": [*_FULL_INDEXES, f"alter table {TABLE} set (fillfactor = 50)"],
}

FETCH = "select id from pgxjob_public.pgxjob_fetch_jobs(%s::int, %s::int)"
RECORD = (
    "select changed from pgxjob_public.pgxjob_record_job_results(%s::int, %b::bigint[],"
    " %b::int[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::timestamptz[],"
    " %b::int[], %b::interval[], %b::boolean[], %b::json[], %b::boolean[])"
)
CANDIDATES = (
    f"select d.id from {TABLE} d where d.group_id = %s and d.worker_id is null"
    " order by d.priority desc, d.id limit 1000 for update skip locked"
)


# --- CPU from /proc ------------------------------------------------------------------------


def server_cpu(pgdata: Path) -> float:
    """CPU seconds of the server: the postmaster and its reaped and live children (scaleout.py)."""
    cpu = scaleout.server_cpu(pgdata)
    if cpu is None:
        raise SystemExit(
            f"no running server in {pgdata}: --pgdata must be the server's data directory"
        )
    return cpu


def backend_ns(pid: int) -> int:
    """Time the backend has run on a CPU, in ns (exact while it waits for the next command)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


# --- databases -----------------------------------------------------------------------------


def layout_dsn(admin: str, layout: str) -> str:
    return make_conninfo(admin, dbname="hot_" + layout.replace("-", "_"))


def create_layout(admin: str, layout: str) -> None:
    dbname = "hot_" + layout.replace("-", "_")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {dbname}")
        conn.execute(f"create database {dbname}")
    dsn = layout_dsn(admin, layout)
    migrations.migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_stat_statements")
        for statement in LAYOUTS[layout]:
            conn.execute(statement)
        conn.execute("select pgxjob_public.pgxjob_register_job_type('noop')")


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "truncate pgxjob_public.pgxjob_asap_jobs, pgxjob_public.pgxjob_run_at_jobs,"
        " pgxjob_public.pgxjob_job_runs, pgxjob_public.pgxjob_unique_keys"
    )
    conn.execute("delete from pgxjob_public.pgxjob_workers")


def enqueue(conn: psycopg.Connection[Any], count: int) -> None:
    done = 0
    while done < count:
        n = min(5000, count - done)
        params = [f'{{"n": {done + i}}}' for i in range(n)]
        conn.execute(
            "select count(*) from pgxjob_public.pgxjob_schedule_many('noop', %b::text[]::json[])",
            [params],
        )
        done += n


def register(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select pgxjob_public.pgxjob_register_worker('default', '1 hour'::interval)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_since(conn: psycopg.Connection[Any], start: str) -> int:
    row = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [start]).fetchone()
    assert row is not None
    return int(row[0])


def table_updates(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where relid = %s::regclass",
        [TABLE],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --- the drain -----------------------------------------------------------------------------


def drain(dsn: str, pgdata: Path, jobs: int, batch: int, log: bool) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        reset(admin)
        admin.execute("checkpoint")
        start = lsn(admin)
        cpu0 = server_cpu(pgdata)
        enqueue(admin, jobs)
        enqueue_wal = wal_since(admin, start)
        enqueue_cpu = server_cpu(pgdata) - cpu0
        upd0, hot0 = table_updates(admin)
        admin.execute("select pg_stat_statements_reset()")

        fetch_ns = record_ns = fetch_wal = record_wal = 0
        drained = 0
        start = lsn(admin)
        cpu0 = server_cpu(pgdata)
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            pid = int(conn.info.backend_pid)
            worker_id = register(conn)
            held: list[int] = []
            while True:
                l0 = lsn(conn)
                c0 = backend_ns(pid)
                ids = [r[0] for r in conn.execute(FETCH, (worker_id, batch)).fetchall()]
                fetch_ns += backend_ns(pid) - c0
                fetch_wal += wal_since(conn, l0)
                if not ids and not held:
                    break
                # Like a worker with a prefetch queue: the batch just claimed waits while the
                # previous one is recorded, so each fetch walks past one claimed batch.
                ids, held = held, ids
                if not ids:
                    continue
                now = [dt.datetime.now(dt.UTC)] * len(ids)
                nulls: list[Any] = [None] * len(ids)
                l0 = lsn(conn)
                c0 = backend_ns(pid)
                conn.execute(
                    RECORD,
                    [worker_id, ids, [0] * len(ids), now, now, nulls, nulls, nulls, nulls,
                     [log] * len(ids), nulls, [False] * len(ids)],
                )  # fmt: skip
                record_ns += backend_ns(pid) - c0
                record_wal += wal_since(conn, l0)
                drained += len(ids)
        elapsed = time.perf_counter() - t0
        total_cpu = server_cpu(pgdata) - cpu0
        total_wal = wal_since(admin, start)
        assert drained == jobs, (drained, jobs)
        time.sleep(0.2)
        upd1, hot1 = table_updates(admin)
        buffers = statement_buffers(admin)
    return {
        "rate": jobs / elapsed,
        "hot_share": (hot1 - hot0) / max(upd1 - upd0, 1),
        "updates_per_job": (upd1 - upd0) / jobs,
        "fetch_cpu_us": fetch_ns / 1000 / jobs,
        "record_cpu_us": record_ns / 1000 / jobs,
        "server_cpu_us": total_cpu * 1e6 / jobs,
        "wal_bytes": total_wal / jobs,
        "fetch_wal_bytes": fetch_wal / jobs,
        "record_wal_bytes": record_wal / jobs,
        "fetch_buffers": buffers["fetch"] / jobs,
        "record_buffers": buffers["record"] / jobs,
        "enqueue_wal_bytes": enqueue_wal / jobs,
        "enqueue_server_cpu_us": enqueue_cpu * 1e6 / jobs,
    }


def statement_buffers(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Shared buffers hit, read and dirtied by the top-level fetch and record calls."""
    out = {"fetch": 0, "record": 0}
    for query, blocks in conn.execute(
        "select query, shared_blks_hit + shared_blks_read + shared_blks_dirtied"
        " from pg_stat_statements where toplevel and dbid = (select oid from pg_database"
        " where datname = current_database())"
    ):
        if "pgxjob_fetch_jobs" in query:
            out["fetch"] += int(blocks)
        elif "pgxjob_record_job_results" in query:
            out["record"] += int(blocks)
    return out


# --- claimed rows ahead of a fetch -----------------------------------------------------------


def explain_buffers(conn: psycopg.Connection[Any], group_id: int) -> int:
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "explain (analyze, buffers, format json) " + CANDIDATES, [group_id]
        ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def timed_call(conn: psycopg.Connection[Any], pid: int, query: str, args: list[Any]) -> float:
    with conn.transaction(force_rollback=True):
        c0 = backend_ns(pid)
        conn.execute(query, args).fetchall()
        return (backend_ns(pid) - c0) / 1000


def ahead(dsn: str, claimed: int, other_worker: bool) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        enqueue(conn, claimed + 2000)
        fetcher = register(conn)
        claimer = register(conn) if other_worker else fetcher
        held = 0
        while held < claimed:
            got = len(conn.execute(FETCH, (claimer, min(1000, claimed - held))).fetchall())
            assert got, "the backlog ran out"
            held += got
        row = conn.execute(
            "select group_id from pgxjob_public.pgxjob_workers where id = %s", [fetcher]
        ).fetchone()
        assert row is not None
        group_id = row[0]
        pid = int(conn.info.backend_pid)
        # The first call of a session compiles the functions; it is left out.
        samples = 12
        buffers = [explain_buffers(conn, group_id) for _ in range(samples)][1:]
        walk = [timed_call(conn, pid, CANDIDATES, [group_id]) for _ in range(samples)][1:]
        cpu = [timed_call(conn, pid, FETCH, [fetcher, 1000]) for _ in range(samples)][1:]
        cancel = [
            timed_call(
                conn, pid, "select * from pgxjob_public.pgxjob_cancel_requests(%s)", [claimer]
            )
            for _ in range(samples)
        ][1:]
    return {
        "candidate_buffers": statistics.median(buffers),
        "candidates_cpu_us": statistics.median(walk),
        "fetch_cpu_us": statistics.median(cpu),
        "fetch_cpu_us_min": min(cpu),
        "fetch_cpu_us_max": max(cpu),
        "cancel_poll_cpu_us": statistics.median(cancel),
    }


# --- report --------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    digits = 0 if med >= 100 else 1 if med >= 1 else 3
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://root@127.0.0.1:55477/postgres")
    parser.add_argument("--pgdata", type=Path, default=Path("/work/hotpg/data"))
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--out", type=Path, default=Path(".bench/hot_claims.json"))
    args = parser.parse_args()
    layouts = args.layouts.split(",")

    for layout in layouts:
        create_layout(args.dsn, layout)

    drains: dict[str, dict[str, list[dict[str, float]]]] = {
        layout: {"off": [], "on": []} for layout in layouts
    }
    for r in range(args.rounds):
        order = layouts if r % 2 == 0 else layouts[::-1]
        for log in (False, True):
            for layout in order:
                result = drain(
                    layout_dsn(args.dsn, layout), args.pgdata, args.jobs, args.batch, log
                )
                drains[layout]["on" if log else "off"].append(result)
                print(f"round {r + 1} log {'on' if log else 'off'} {layout}: {result}", flush=True)

    cases = [(0, False), (2000, False), (20000, False), (20000, True)]
    fetch_ahead: dict[str, dict[str, dict[str, float]]] = {}
    for layout in layouts:
        fetch_ahead[layout] = {}
        for claimed, other in cases:
            key = f"{claimed} {'other worker' if other else 'own'}"
            fetch_ahead[layout][key] = ahead(layout_dsn(args.dsn, layout), claimed, other)
            print(f"ahead {layout} {key}: {fetch_ahead[layout][key]}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"drains": drains, "ahead": fetch_ahead}, indent=2))

    metrics = list(drains[layouts[0]]["off"][0])
    for log in ("off", "on"):
        print(f"\nDrain of {args.jobs:,} by {args.batch:,}, run log {log}: median (min-max)")
        for metric in metrics:
            cells = [spread([d[metric] for d in drains[layout][log]]) for layout in layouts]
            print(
                f"  {metric:24} "
                + " | ".join(f"{layout}: {c}" for layout, c in zip(layouts, cells, strict=True))
            )
    print("\nFetch of 1,000 with claimed rows ahead")
    for layout in layouts:
        for key, row in fetch_ahead[layout].items():
            print(f"  {layout:13} {key:20} " + ", ".join(f"{k} {v:,.0f}" for k, v in row.items()))

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for layout in layouts:
            conn.execute("drop database if exists hot_" + layout.replace("-", "_"))


if __name__ == "__main__":
    main()
