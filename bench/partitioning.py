"""What LIST-partitioning the hot tables by group costs: the plain layout and partitioned ones.

Measurement only: pgxjob ships the plain layout, and this script builds partitioned variants in
scratch databases to measure them (docs/scaling.md, "What partitioning costs"). Run it in the
bench virtualenv (`make bench` creates it), about 16 minutes on 2 cores:

    .bench/bench/bin/python bench/partitioning.py               # 5 rounds, 1 and 4 groups
    .bench/bench/bin/python bench/partitioning.py --rounds 3 --groups 1,4,16
    .bench/bench/bin/python bench/partitioning.py --layouts plain,unpruned,id_first+custom
    .bench/bench/bin/python bench/partitioning.py --parts lookup --rounds 1 --groups 4 \
        --layouts plain,partitioned,id_first --out bench/partitioning-lookup.json

It starts its own private PostgreSQL cluster (.bench/pgdata-partitioning, port 55433, the
settings of run.py's cluster, autovacuum on, pg_stat_statements tracking top-level statements),
so that server CPU can be read from /proc and no other database's work is counted; --dsn uses
another server, without the CPU figures. For every measurement it creates a fresh database,
installs pgxjob's schema through the bench driver (`Scheduler.migrate()`, then the groups) and,
for a partitioned layout, replaces the two hot tables while they are empty (convert below).

A layout is a base with an optional modifier:

- plain: the schema as the migrations build it;
- partitioned: pgxjob_asap_jobs and pgxjob_run_at_jobs LIST-partitioned by group_id, primary key
  (group_id, id), the other indexes, columns, defaults and CHECKs copied from the installed
  tables, one partition per group plus a default partition; the functions of the worker's path
  changed so that every look-up by job id also names the group (PRUNE_EDITS), which lets the
  planner go to one partition;
- id_first: the same with the primary key (id, group_id), whose index still serves a look-up by
  job id alone (cancel, run now, job detail) in every partition;
- unpruned: partitioned, primary key (group_id, id), functions unchanged;
- +nonest: pgxjob_apply_job_results (the body of the record call) runs with enable_nestloop
  off; +custom: fetch and record plan every call (plan_cache_mode force_custom_plan).

The default layouts are plain, plain+nonest, partitioned and id_first+nonest. Each is measured
with fresh tables (no planner statistics: a new database, or a new group's partition) and with
the hot tables analyzed once the backlog is filled (statistics that say every job is unclaimed,
as autovacuum takes them on a busy queue). Each round runs every group count, measurement,
statistics state and layout, the layouts in an order mirrored every other round:

- drain: scaleout.point (the scaleout workload of run.py): bulk enqueue of n jobs with
  schedule_many in batches of 5,000 (rate, server CPU and WAL per job), then a drain by worker
  processes with the bench's pgxjob configuration (1 group: 2 processes; G groups: one process
  per group, up to 4): rate, server and worker CPU per job (from /proc), WAL per job, and from
  pg_stat_statements the jobs per record call and the server time of fetch and record;
- calls: one session fetches 1,000 jobs and records their results (run log on) until its
  group's share of a backlog of n is gone: server time and shared buffers per job of
  pgxjob_fetch_jobs and pgxjob_record_job_results (pg_stat_statements);
- single (fresh tables only): 2,000 pgxjob_schedule calls, one per transaction from one client
  (rate, server CPU per job), then 5,000 in one transaction (server time per call);
- lookup (not run unless named in --parts; its figures do not vary between rounds): a look-up
  of an ASAP job by its id alone, as pgxjob_cancel_job and the dashboard make, on a backlog of n
  spread over the groups and analyzed: shared buffers and time from EXPLAIN ANALYZE.

Writes bench/partitioning.json (every round; per cell the median, min and max, and the median
and range of the ratio to plain taken within each round) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import run  # bench/, the script's directory, is on sys.path
import scaleout

HOT = ("pgxjob_asap_jobs", "pgxjob_run_at_jobs")
# A layout is a base, optionally with a modifier ("id_first+nonest").
BASES = ("plain", "partitioned", "id_first", "unpruned")
MODIFIERS = ("nonest", "custom")
DEFAULT_LAYOUTS = ("plain", "plain+nonest", "partitioned", "id_first+nonest")

# Every look-up of the hot tables by job id on the worker's path also names the group, so that
# it reaches one partition through its primary key. Each edit must match the installed function
# exactly as often as given: a change of the function fails here instead of measuring a variant
# that no longer matches it.
BY_ID = (r"where (\w+)\.id = any \(", r"where \1.group_id = v_group_id and \1.id = any (")
PRUNE_EDITS: dict[str, list[tuple[str, str, int]]] = {
    # The worker's group is known (v_group_id): the claims and the timed candidates name it.
    "pgxjob_fetch_jobs": [(*BY_ID, 3)],
    # The group of the reporting worker; if the worker is gone, the group of its jobs.
    "pgxjob_apply_job_results": [
        (*BY_ID, 10),
        (
            r"declare\n  v_notified bigint;\n",
            "declare\n  v_notified bigint;\n  v_group_id int;\n",
            1,
        ),
        (
            r"\nbegin\n",
            "\nbegin\n"
            "  select w.group_id into v_group_id from pgxjob_workers w where w.id = p_worker_id;\n"
            "  if v_group_id is null then\n"
            "    select x.group_id into v_group_id\n"
            "    from (\n"
            "      select a.group_id from pgxjob_asap_jobs a where a.id = any (p_job_ids)\n"
            "      union all\n"
            "      select b.group_id from pgxjob_run_at_jobs b where b.id = any (p_job_ids)\n"
            "    ) x\n"
            "    limit 1;\n"
            "  end if;\n",
            1,
        ),
    ],
    # Releasing a worker's jobs joins the claimed rows back by (group, id).
    "pgxjob_release_jobs_of": [
        (r"select a\.id, a\.cancel_requested", "select a.id, a.group_id, a.cancel_requested", 2),
        (r"where j\.id = l\.id", "where j.group_id = l.group_id and j.id = l.id", 2),
    ],
}


def convert(conn: psycopg.Connection[Any], layout: str) -> None:
    """Apply a layout to a freshly installed schema whose hot tables are still empty.

    The modifier's function setting first; then, for a partitioned base, the hot tables replaced
    by LIST-partitioned ones and (except unpruned) the functions edited (PRUNE_EDITS).
    """
    base, _, modifier = layout.partition("+")
    if modifier == "nonest":
        # Without statistics (a new table or partition) the planner expects 10 jobs per batch
        # and may join a batch to the rows it owns with a nested loop: quadratic in the batch.
        conn.execute(
            "alter function pgxjob_public.pgxjob_apply_job_results set enable_nestloop = off"
        )
    elif modifier == "custom":
        for name in ("pgxjob_fetch_jobs", "pgxjob_apply_job_results"):
            conn.execute(
                f"alter function pgxjob_public.{name} set plan_cache_mode = force_custom_plan"
            )
    if base == "plain":
        return
    key = "id, group_id" if base == "id_first" else "group_id, id"
    with conn.transaction():
        indexes = conn.execute(
            "select indexdef from pg_indexes where schemaname = 'pgxjob_public'"
            " and tablename = any (%s) and indexname not like '%%\\_pkey'",
            [list(HOT)],
        ).fetchall()
        options = dict(
            conn.execute(
                "select relname, coalesce(array_to_string(reloptions, ', '), '') from pg_class"
                " where relnamespace = 'pgxjob_public'::regnamespace and relname = any (%s)",
                [list(HOT)],
            ).fetchall()
        )
        for table in HOT:
            rows = conn.execute(f"select count(*) from pgxjob_public.{table}").fetchone()
            assert rows is not None and rows[0] == 0, f"{table} is not empty"
            conn.execute(
                f"create table pgxjob_public.{table}_new (like pgxjob_public.{table}"
                " including defaults including constraints) partition by list (group_id)"
            )
        # The job id sequence belongs to the ASAP table's id column: detach it before the drop.
        conn.execute("alter sequence pgxjob_public.pgxjob_job_id_seq owned by none")
        for table in HOT:
            conn.execute(f"drop table pgxjob_public.{table}")
            conn.execute(f"alter table pgxjob_public.{table}_new rename to {table}")
            conn.execute(
                f"alter table pgxjob_public.{table} add constraint {table}_pkey primary key ({key})"
            )
        for (indexdef,) in indexes:
            conn.execute(indexdef)
        conn.execute(
            "alter sequence pgxjob_public.pgxjob_job_id_seq"
            " owned by pgxjob_public.pgxjob_asap_jobs.id"
        )
        groups = [
            r[0] for r in conn.execute("select id from pgxjob_public.pgxjob_groups order by id")
        ]
        for table in HOT:
            storage = f" with ({options[table]})" if options[table] else ""
            for g in groups:
                conn.execute(
                    f"create table pgxjob_public.{table}_g{g} partition of pgxjob_public.{table}"
                    f" for values in ({g}){storage}"
                )
            conn.execute(
                f"create table pgxjob_public.{table}_default partition of pgxjob_public.{table}"
                f" default{storage}"
            )
        if base != "unpruned":
            for name, edits in PRUNE_EDITS.items():
                edit_function(conn, name, edits)


def edit_function(
    conn: psycopg.Connection[Any], name: str, edits: list[tuple[str, str, int]]
) -> None:
    rows = conn.execute(
        "select pg_get_functiondef(p.oid) from pg_proc p"
        " where p.pronamespace = 'pgxjob_public'::regnamespace and p.proname = %s",
        [name],
    ).fetchall()
    assert len(rows) == 1, f"{name}: {len(rows)} functions"
    text = rows[0][0]
    for pattern, replacement, count in edits:
        found = len(re.findall(pattern, text))
        assert found == count, f"{name}: {pattern!r} matched {found} times, expected {count}"
        text = re.sub(pattern, replacement, text)
    conn.execute(text)


def prepare_for(layout: str) -> Callable[[str], None]:
    def prepare(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            convert(conn, layout)

    return prepare


def database_of(dsn: str) -> str:
    return dsn.rsplit("dbname=", 1)[1]


def fresh(server: run.Server, layout: str, groups: list[str], tag: str) -> str:
    """A fresh database with pgxjob, the groups, the noop job type, the layout; its dsn."""
    db = server.fresh(f"pgxjob_part_{tag}".replace("+", "_"))
    dsn = server.dsn(db)
    run.run_driver("pgxjob", "setup", dsn, {"groups": groups})
    with psycopg.connect(dsn, autocommit=True) as conn:
        convert(conn, layout)
    return dsn


def names(groups: int) -> list[str]:
    return ["default"] if groups == 1 else [f"g{k}" for k in range(groups)]


def fill(conn: psycopg.Connection[Any], groups: list[str], n: int) -> None:
    """n ASAP jobs dealt round-robin over the groups, schedule_many in batches of 5,000."""
    per = n // len(groups)
    for group in groups:
        for start in range(0, per, 5000):
            size = min(5000, per - start)
            conn.execute(
                "select count(*) from pgxjob_schedule_many('noop',"
                " array(select json_build_object('i', k) from generate_series(1, %s) k),"
                " group_name => %s)",
                [size, group],
            )


def analyze(conn: psycopg.Connection[Any]) -> None:
    """Statistics of the hot tables (on a partitioned table: the parent and every partition)."""
    conn.execute("analyze pgxjob_public.pgxjob_asap_jobs, pgxjob_public.pgxjob_run_at_jobs")


def statements(admin: psycopg.Connection[Any], dbid: int, like: str) -> tuple[int, float, int]:
    """calls, total exec ms and shared blocks touched of a database's statements matching like.

    pg_stat_statements tracks top-level statements (main sets pg_stat_statements.track = top),
    so a function's nested statements count in its call.
    """
    row = admin.execute(
        "select coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0),"
        " coalesce(sum(shared_blks_hit + shared_blks_read + shared_blks_dirtied), 0)"
        " from pg_stat_statements where dbid = %s and query like %s",
        [dbid, like],
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1]), int(row[2])


def reset_statements(server: run.Server, dbid: int) -> None:
    with server.admin() as admin:
        admin.execute("select pg_stat_statements_reset(0, %s, 0)", [dbid])


def call_figures(admin: psycopg.Connection[Any], dbid: int, jobs: int) -> dict[str, Any]:
    fetch = statements(admin, dbid, "%pgxjob_fetch_jobs%")
    record = statements(admin, dbid, "%pgxjob_record_job_results%")
    return {
        "fetch_calls": fetch[0],
        "fetch_us_per_job": fetch[1] * 1000 / jobs,
        "fetch_blocks_per_job": fetch[2] / jobs,
        "record_calls": record[0],
        "record_batch": jobs / max(record[0], 1),
        "record_us_per_job": record[1] * 1000 / jobs,
        "record_blocks_per_job": record[2] / jobs,
    }


def drain(
    server: run.Server, layout: str, groups: int, n: int, stats: str, pgdata: Path | None
) -> dict[str, Any]:
    """scaleout.point on the layout; with stats "analyzed" the tables are analyzed before it."""
    procs = 2 if groups == 1 else min(groups, 4)
    dbid: list[int] = []

    def before_drain(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if stats == "analyzed":
                analyze(conn)
            dbid.append(
                conn.execute(
                    "select oid from pg_database where datname = current_database()"
                ).fetchone()[0]
            )
        reset_statements(server, dbid[0])

    out = scaleout.point(
        server=server,
        n=n,
        procs=procs,
        groups=groups,
        consume=run.SYSTEMS["pgxjob"]["consume"],
        pgdata=pgdata,
        run_driver=run.run_driver,
        consumers=run.consumers,
        wait_count=run.wait_count,
        remaining_sql=run.SYSTEMS["pgxjob"]["remaining_sql"],
        timeout=run.drain_timeout(n),
        prepare=prepare_for(layout),
        before_drain=before_drain,
    )
    # The database is gone; its statements' figures stay in pg_stat_statements until reset.
    with server.admin() as admin:
        out.update({f"drain_{k}": v for k, v in call_figures(admin, dbid[0], n).items()})
    return out


def calls(server: run.Server, layout: str, groups: int, n: int, stats: str) -> dict[str, Any]:
    """One session fetches 1,000 and records 1,000 until its group (the first) is empty."""
    gs = names(groups)
    dsn = fresh(server, layout, gs, f"calls_{layout}_{groups}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        fill(conn, gs, n)
        if stats == "analyzed":
            analyze(conn)
        worker = conn.execute(
            "select pgxjob_register_worker(%s, interval '10 minutes')", [gs[0]]
        ).fetchone()[0]
        dbid = conn.execute(
            "select oid from pg_database where datname = current_database()"
        ).fetchone()[0]
        reset_statements(server, dbid)
        jobs = 0
        while True:
            ids = [
                r[0] for r in conn.execute("select id from pgxjob_fetch_jobs(%s, 1000)", [worker])
            ]
            if not ids:
                break
            # Every job succeeded, run log on; the arrays other than the ids are made on the
            # server, so the call's time is the function's.
            conn.execute(
                "select * from pgxjob_record_job_results(%(w)s, %(ids)s::bigint[],"
                " array_fill(0, array[%(k)s]), array_fill(now(), array[%(k)s]),"
                " array_fill(now(), array[%(k)s]), array_fill(null::text, array[%(k)s]),"
                " array_fill(null::timestamptz, array[%(k)s]), array_fill(null::int, array[%(k)s]),"
                " array_fill(null::interval, array[%(k)s]), array_fill(true, array[%(k)s]))",
                {"w": worker, "ids": ids, "k": len(ids)},
            )
            jobs += len(ids)
    with server.admin() as admin:
        out = call_figures(admin, dbid, jobs)
    server.drop(database_of(dsn))
    return out


def single(server: run.Server, layout: str, groups: int, pgdata: Path | None) -> dict[str, Any]:
    """pgxjob_schedule one job per transaction, then 5,000 calls in one transaction."""
    gs = names(groups)
    dsn = fresh(server, layout, gs, f"single_{layout}_{groups}")
    n_commit, n_txn = 2000, 5000
    with psycopg.connect(dsn, autocommit=True) as conn:
        cpu0 = scaleout.server_cpu(pgdata)
        t0 = time.perf_counter()
        for k in range(n_commit):
            conn.execute(
                "select pgxjob_schedule('noop', json_build_object('i', %s::int), %s)",
                [k, gs[k % len(gs)]],
            )
        secs = time.perf_counter() - t0
        cpu1 = scaleout.server_cpu(pgdata)
        dbid = conn.execute(
            "select oid from pg_database where datname = current_database()"
        ).fetchone()[0]
        reset_statements(server, dbid)
        with conn.transaction():
            for k in range(n_txn):
                conn.execute(
                    "select pgxjob_schedule('noop', json_build_object('i', %s::int), %s)",
                    [k, gs[k % len(gs)]],
                )
    with server.admin() as admin:
        in_txn = statements(admin, dbid, "%pgxjob_schedule(%")
    server.drop(database_of(dsn))
    out: dict[str, Any] = {
        "single_rate": n_commit / secs,
        "single_in_txn_us": in_txn[1] * 1000 / max(in_txn[0], 1),
    }
    if cpu0 is not None and cpu1 is not None:
        out["single_db_cpu_us_per_job"] = (cpu1 - cpu0) / n_commit * 1e6
    return out


def lookup(server: run.Server, layout: str, groups: int, n: int) -> dict[str, Any]:
    """A look-up by job id alone (as pgxjob_cancel_job does): buffers and time, EXPLAIN ANALYZE."""
    gs = names(groups)
    dsn = fresh(server, layout, gs, f"lookup_{layout}_{groups}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        fill(conn, gs, n)
        analyze(conn)
        job = conn.execute(
            "select min(id) + %s from pgxjob_public.pgxjob_asap_jobs", [n // 4]
        ).fetchone()[0]
        plan = conn.execute(
            "explain (analyze, buffers, format json)"
            " select 1 from pgxjob_public.pgxjob_asap_jobs where id = %s for update",
            [job],
        ).fetchone()[0][0]
    server.drop(database_of(dsn))
    return {
        "lookup_buffers": plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"],
        "lookup_ms": plan["Execution Time"],
    }


# What the summary shows, in order: key, label, decimals. Ratios are layout / plain.
SHOWN = (
    ("enqueue_rate", "bulk enqueue, jobs/s", 0),
    ("enqueue_db_cpu_us_per_job", "  server CPU, us/job", 1),
    ("enqueue_wal_bytes_per_job", "  WAL, B/job", 0),
    ("rate", "drain, jobs/s", 0),
    ("db_cpu_us_per_job", "  server CPU, us/job", 1),
    ("worker_cpu_us_per_job", "  worker CPU, us/job", 1),
    ("wal_bytes_per_job", "  WAL, B/job", 0),
    ("drain_record_batch", "  jobs per record call", 0),
    ("drain_fetch_us_per_job", "  fetch, server us/job", 1),
    ("drain_record_us_per_job", "  record, server us/job", 1),
    ("fetch_us_per_job", "one session, fetch 1,000: us/job", 1),
    ("fetch_blocks_per_job", "  buffers/job", 1),
    ("record_us_per_job", "one session, record 1,000: us/job", 1),
    ("record_blocks_per_job", "  buffers/job", 1),
    ("single_rate", "single enqueue, 1 job/txn, jobs/s", 0),
    ("single_db_cpu_us_per_job", "  server CPU, us/job", 1),
    ("single_in_txn_us", "pgxjob_schedule in one txn, us/call", 1),
    ("lookup_buffers", "look-up by job id alone, buffers", 0),
    ("lookup_ms", "  ms", 3),
)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell (layout/groups/stats): median, min and max, and the ratio to plain per round."""
    out: dict[str, Any] = {}
    for cell in rounds[0]:
        layout, rest = cell.split("/", 1)
        figures: dict[str, Any] = {}
        for key, _, _ in SHOWN:
            vals = [r[cell][key] for r in rounds if isinstance(r[cell].get(key), (int, float))]
            if not vals:
                continue
            figures[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
            ratios = [
                r[cell][key] / r[f"plain/{rest}"][key]
                for r in rounds
                if layout != "plain" and r[cell].get(key) and r[f"plain/{rest}"].get(key)
            ]
            if ratios:
                figures[key]["ratio"] = {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                }
        out[cell] = figures
    return out


def report(summary: dict[str, Any], layouts: list[str]) -> str:
    """A text table per group count and statistics: median (min-max) and median ratio to plain."""
    lines = []
    tables = sorted(
        {cell.split("/", 1)[1] for cell in summary}, key=lambda c: (int(c.split("/")[0]), c)
    )
    for rest in tables:
        g, stats = rest.split("/")
        lines.append(
            f"\n{g} group(s), tables {stats:<24}" + "".join(f"{lay:>34}" for lay in layouts)
        )
        for key, label, digits in SHOWN:
            row = f"{label:<40}"
            shown = False
            for layout in layouts:
                m = summary.get(f"{layout}/{rest}", {}).get(key)
                if not m:
                    row += f"{'-':>34}"
                    continue
                shown = True
                text = f"{m['median']:,.{digits}f} ({m['min']:,.{digits}f}-{m['max']:,.{digits}f})"
                if "ratio" in m:
                    text += f" {m['ratio']['median']:.2f}x"
                row += f"{text:>34}"
            if shown:
                lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--groups", default="1,4", help="comma-separated group counts")
    ap.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS), help="plain first; see above")
    ap.add_argument("--stats", default="fresh,analyzed", help="table statistics: fresh, analyzed")
    ap.add_argument("--n", type=int, default=50000, help="backlog per drain and per calls run")
    ap.add_argument("--parts", default="drain,calls,single", help="which measurements")
    ap.add_argument("--dsn", help="base libpq DSN (no dbname) instead of a private cluster")
    ap.add_argument("--port", type=int, default=55433)
    ap.add_argument("--out", default=str(run.BENCH / "partitioning.json"))
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    for layout in layouts:
        base, _, modifier = layout.partition("+")
        assert base in BASES and modifier in ("", *MODIFIERS), f"unknown layout {layout}"
    assert layouts[0] == "plain", "plain first: the others are compared with it"
    groups = [int(g) for g in args.groups.split(",")]
    stats_states = args.stats.split(",")
    parts = args.parts.split(",")

    run.ensure_venv("pgxjob")
    cluster = None
    pgdata: Path | None = None
    if args.dsn:
        base_dsn = args.dsn
    else:
        cluster = run.PrivateCluster(args.port)
        cluster.data = run.WORK / "pgdata-partitioning"
        base_dsn = cluster.start()
        pgdata = cluster.data
    server = run.Server(base_dsn)
    with server.admin() as c:
        where = c.execute("show data_directory").fetchone()[0]
        if pgdata is not None and Path(where) != pgdata:
            raise SystemExit(f"port {args.port} is another server's ({where}); pass --port")
        c.execute("create extension if not exists pg_stat_statements")
        if cluster is not None:
            c.execute("alter system set pg_stat_statements.track = 'top'")
            c.execute("select pg_reload_conf()")
        version = c.execute("select version()").fetchone()[0]
        names_ = (
            "autovacuum",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "pg_stat_statements.track",
        )
        settings = {k: c.execute(f"show {k}").fetchone()[0] for k in names_}

    rounds: list[dict[str, Any]] = []
    loads: list[float] = []
    started = time.time()
    try:
        for rnd in range(args.rounds):
            order = layouts if rnd % 2 == 0 else layouts[::-1]
            results: dict[str, Any] = {
                f"{lay}/{g}/{st}": {} for lay in layouts for g in groups for st in stats_states
            }
            for g in groups:
                for part in parts:
                    per_state = part in ("drain", "calls")
                    for st in stats_states if per_state else stats_states[:1]:
                        for layout in order:
                            loads.append(os.getloadavg()[0])
                            state = st if per_state else ""
                            run.log(
                                f"round {rnd + 1}/{args.rounds} {g} groups {part} {layout}"
                                f" {state} (load {loads[-1]:.1f})"
                            )
                            if part == "drain":
                                res = drain(server, layout, g, args.n, st, pgdata)
                            elif part == "calls":
                                res = calls(server, layout, g, args.n, st)
                            elif part == "lookup":
                                res = lookup(server, layout, g, args.n)
                            else:
                                res = single(server, layout, g, pgdata)
                            run.log("  " + ", ".join(f"{k}={v:,.1f}" for k, v in res.items()
                                                     if isinstance(v, float)))  # fmt: skip
                            results[f"{layout}/{g}/{st}"].update(res)
            rounds.append(results)
    finally:
        if cluster:
            cluster.stop()
    summary = summarize(rounds)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "elapsed_s": round(time.time() - started),
        "args": vars(args),
        "machine": run.machine(),
        "postgres": version,
        "settings": settings,
        "private_cluster": cluster is not None,
        "load": {"median": statistics.median(loads), "max": max(loads)} if loads else None,
    }
    out = {"meta": meta, "summary": summary, "rounds": rounds}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(report(summary, layouts))
    if meta["load"]:
        print(f"\nhost load average (1 min): median {meta['load']['median']:.1f},"
              f" max {meta['load']['max']:.1f}")  # fmt: skip
    run.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
