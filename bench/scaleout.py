"""The scale-out workload: where one PostgreSQL, not the workers, becomes the limit.

pgxjob only. Drains a ready backlog with 1, 2, 4 and 8 worker processes (one group), then with 1, 4
and 16 groups (4 processes; with G >= 4 groups process i serves the groups g with g % 4 == i,
with 1 group every process serves it), each point on a fresh database, and reports per point:

- ``rate``: jobs per second until the database acknowledged the last one;
- ``db_cpu_us_per_job`` and ``db_cores``: CPU time of the PostgreSQL server (the postmaster and
  every backend, live or exited, read from /proc) per job, and in cores over the drain;
- ``worker_cpu_us_per_job`` and ``worker_cores``: the same for the worker processes;
- ``wal_bytes_per_job``: WAL written by the drain;
- ``xacts_per_job``: committed transactions in the database per job, which with pgxjob's
  autocommit calls is the round trips per job (the runner's own polls are subtracted);
- ``enqueue_wal_bytes_per_job`` and ``enqueue_db_cpu_us_per_job``: the same for filling the
  backlog with ``schedule_many`` in batches of 5,000, and ``enqueue_rate`` its jobs per second.

CPU figures need the private cluster (the default); with --dsn they are left out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, *, children: bool) -> float:
    """utime + stime of a process (and of its exited, reaped children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" field 3 (state) is index 0: utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def _child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            children.append(int(entry.name))
    return children


def server_cpu(pgdata: Path | None) -> float | None:
    """CPU seconds the server has used: the postmaster, exited backends, live backends."""
    if pgdata is None or not (pgdata / "postmaster.pid").exists():
        return None
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    while True:
        # A backend reaped during the scan would be counted twice or not at all: scan again.
        reaped = _cpu_seconds(postmaster, children=True)
        total = reaped + sum(
            _cpu_seconds(child, children=False) for child in _child_pids(postmaster)
        )
        if _cpu_seconds(postmaster, children=True) == reaped:
            return total


def _commits(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select xact_commit from pg_stat_database where datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def point(
    *,
    server: Any,
    n: int,
    procs: int,
    groups: int,
    consume: dict[str, Any],
    pgdata: Path | None,
    run_driver: Callable[..., dict[str, Any]],
    consumers: Callable[..., list[Any]],
    wait_count: Callable[[list[Any], int, float], bool],
    remaining_sql: str,
    timeout: float,
    prepare: Callable[[str], None] | None = None,
    before_drain: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One drain of n jobs over `groups` groups by `procs` worker processes; its figures.

    prepare(dsn), if given, runs after the schema is installed and the groups registered, before
    the backlog is filled, and before_drain(dsn) after it is filled (bench/partitioning.py
    changes the layout in the first and analyzes the tables in the second).
    """
    names = ["default"] if groups == 1 else [f"g{k}" for k in range(groups)]
    db = server.fresh(f"pgxjob_scaleout_{procs}_{groups}")
    dsn = server.dsn(db)
    run_driver("pgxjob", "setup", dsn, {"groups": names})
    if prepare is not None:
        prepare(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        lsn_enqueue = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
        cpu_enqueue = server_cpu(pgdata)
        enqueue_seconds = run_driver(
            "pgxjob", "backlog", dsn, {"n": n, "batch": 5000, "groups": names}
        )["seconds"]
        wal_enqueue = int(
            conn.execute(
                "select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn_enqueue]
            ).fetchone()[0]
        )
        cpu_enqueued = server_cpu(pgdata)
    if before_drain is not None:
        before_drain(dsn)
    if groups >= procs:
        served = [[g for k, g in enumerate(names) if k % procs == i] for i in range(procs)]
    else:
        served = [names] * procs
    cs: list[Any] = []
    try:
        for own in served:
            cs += consumers("pgxjob", dsn, 1, opts={**consume, "groups": own})
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("checkpoint")
            time.sleep(1.2)  # let the statistics of the setup reach pg_stat_database
            commits0 = _commits(conn)
            lsn0 = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
            cpu0 = server_cpu(pgdata)
            wcpu0 = sum(_cpu_seconds(c.proc.pid, children=True) for c in cs)
            t0 = time.time()
            for c in cs:
                c.send("GO")
            if not wait_count(cs, n, timeout):
                return {"error": f"timeout, {sum(c.count for c in cs)}/{n} handled"}
            polls = 0
            while conn.execute(remaining_sql).fetchone()[0] > 0:
                polls += 1
                time.sleep(0.005)
            wall = time.time() - t0
            cpu1 = server_cpu(pgdata)
            wcpu1 = sum(_cpu_seconds(c.proc.pid, children=True) for c in cs)
            wal = int(
                conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn0]).fetchone()[
                    0
                ]
            )
            for c in cs:
                c.stop()
            time.sleep(1.2)
            # Our own statements: the polls, the remaining count, the WAL reading, this one.
            commits = _commits(conn) - commits0 - (polls + 3)
    finally:
        for c in cs:
            c.kill()
    server.drop(db)
    out: dict[str, Any] = {
        "procs": procs,
        "groups": groups,
        "n": n,
        "rate": n / wall,
        "wal_bytes_per_job": wal / n,
        "enqueue_wal_bytes_per_job": wal_enqueue / n,
        "enqueue_rate": n / enqueue_seconds,
        "xacts_per_job": commits / n,
        "worker_cpu_us_per_job": (wcpu1 - wcpu0) / n * 1e6,
        "worker_cores": (wcpu1 - wcpu0) / wall,
    }
    if cpu0 is not None and cpu1 is not None:
        out["db_cpu_us_per_job"] = (cpu1 - cpu0) / n * 1e6
        out["db_cores"] = (cpu1 - cpu0) / wall
    if cpu_enqueue is not None and cpu_enqueued is not None:
        # schedule_many in batches of 5,000 (the backlog): the server's share of enqueueing.
        out["enqueue_db_cpu_us_per_job"] = (cpu_enqueued - cpu_enqueue) / n * 1e6
    return out


PROCS = (1, 2, 4, 8)
GROUPS = (1, 4, 16)
GROUP_PROCS = 4


def run(sz: dict[str, Any], **helpers: Any) -> dict[str, Any]:
    """Every point of the workload; the list goes to results.json as scaleout_points."""
    n = sz["scaleout_n"]
    plan = [(p, 1) for p in PROCS] + [(GROUP_PROCS, g) for g in GROUPS if g != 1]
    points = []
    for procs, groups in plan:
        result = point(n=n, procs=procs, groups=groups, **helpers)
        result.setdefault("procs", procs)
        result.setdefault("groups", groups)
        points.append(result)
    best = max((p for p in points if "rate" in p), key=lambda p: p["rate"], default=None)
    out: dict[str, Any] = {"scaleout_points": points, "scaleout_n": n}
    if best is not None:
        out["scaleout_best"] = best["rate"]
    return out
