# ruff: noqa: E501
"""Profile pgxjob where the benchmarks show it trailing: server time per SQL call
(pg_stat_statements), plans of the hot functions (auto_explain), and where the worker's and the
client's Python time goes (py-spy). Writes .bench/profile/*.txt; bench/NOTES.md summarises them.

    python bench/profile.py            # uses the private cluster of run.py (start it if needed)
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

OUT = run.WORK / "profile"
PYSPY = run.WORK / "bench" / "bin" / "py-spy"


def statements(server: run.Server, db: str, title: str, fn: Any) -> str:
    """Run fn with pg_stat_statements tracking nested statements in db; return the top calls."""
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        c.execute("create extension if not exists pg_stat_statements")
        c.execute(f"alter database {db} set pg_stat_statements.track = 'all'")
        c.execute("select pg_stat_statements_reset()")
    fn()
    time.sleep(0.5)
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        rows = c.execute(
            "select calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 4),"
            " rows, shared_blks_hit + shared_blks_read, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 140)"
            " from pg_stat_statements s join pg_database d on d.oid = s.dbid"
            " where d.datname = current_database() order by total_exec_time desc limit 25"
        ).fetchall()
    lines = [f"== {title}", "calls | total ms | mean ms | rows | blocks | wal bytes | query"]
    lines += [" | ".join(str(x) for x in r) for r in rows]
    return "\n".join(lines) + "\n"


def plans(server: run.Server, db: str) -> str:
    """auto_explain (analyze, buffers, nested) of one fetch of 1,000 and one result flush."""
    out: list[str] = []
    with psycopg.connect(server.dsn(db), autocommit=True) as c:
        c.add_notice_handler(lambda d: out.append(d.message_primary or ""))
        for s in ("load 'auto_explain'", "set auto_explain.log_min_duration = 0",
                  "set auto_explain.log_analyze = on", "set auto_explain.log_buffers = on",
                  "set auto_explain.log_nested_statements = on", "set auto_explain.log_timing = on",
                  "set client_min_messages = log"):  # fmt: skip
            c.execute(s)
        wid = c.execute(
            "select pgxjob_register_worker('default', interval '5 minutes')"
        ).fetchone()[0]
        t0 = time.perf_counter()
        rows = c.execute(
            "select id, error_count from pgxjob_fetch_jobs(%s, 1000)", [wid]
        ).fetchall()
        t1 = time.perf_counter()
        out.append(f"-- fetch of {len(rows)} jobs: {(t1 - t0) * 1000:.1f} ms wall")
        ids = [r[0] for r in rows]
        k = len(ids)
        t0 = time.perf_counter()
        c.execute(
            "select * from pgxjob_record_job_results(%s, %s::bigint[], %s::int[],"
            " array_fill(now(), array[%s]), array_fill(now(), array[%s]),"
            " array_fill(null::text, array[%s]), array_fill(null::timestamptz, array[%s]),"
            " array_fill(null::int, array[%s]), array_fill(null::interval, array[%s]),"
            " array_fill(true, array[%s]))",
            [wid, ids, [r[1] for r in rows], k, k, k, k, k, k, k],
        )
        t1 = time.perf_counter()
        out.append(f"-- record_job_results of {k}: {(t1 - t0) * 1000:.1f} ms wall")
    return "\n".join(out) + "\n"


def pyspy_consumer(server: run.Server, db: str, system: str, n: int, tag: str,
                   config: dict[str, Any] | None = None) -> str:  # fmt: skip
    dsn = server.dsn(db)
    run.run_driver(system, "setup", dsn, {})
    run.backlog(system, dsn, n)
    old = run.SYSTEMS[system]["consume"]
    if config:
        run.SYSTEMS[system]["consume"] = json.loads(json.dumps(old))
        run.SYSTEMS[system]["consume"]["worker"].update(config)
    c = run.Consumer(system, dsn, run.SYSTEMS[system]["consume"])
    run.SYSTEMS[system]["consume"] = old
    c.wait_ready()
    raw = OUT / f"pyspy-{tag}.txt"
    spy = subprocess.Popen([str(PYSPY), "record", "--pid", str(c.proc.pid), "--rate", "250",
                            "--format", "raw", "--threads", "-o", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)
    t0 = time.time()
    c.send("GO")
    run.wait_count([c], n, 300)
    rate = n / (max(c.t_last, t0 + 1e-6) - t0)
    time.sleep(0.3)
    c.stop()
    spy.wait(30)
    return f"== py-spy {tag}: {n} jobs, handled at {rate:,.0f} jobs/s\n" + summarise(raw)


def summarise(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    selfc: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    if not raw.exists():
        return "(py-spy wrote nothing)\n"
    for line in raw.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not cnt.isdigit():
            continue
        k = int(cnt)
        frames = stack.split(";")
        total += k
        threads[frames[0].split(" ")[0] if frames else "?"] += k
        leaf = frames[-1]
        selfc[leaf] += k
        for f in set(frames[1:]):
            incl[f] += k
    lines = [f"samples: {total}", "-- by thread:"]
    lines += [f"{v:6d} {v / total:6.1%}  {k}" for k, v in threads.most_common(12)]
    lines.append("-- self:")
    lines += [f"{v:6d} {v / total:6.1%}  {k}" for k, v in selfc.most_common(top)]
    lines.append("-- inclusive:")
    lines += [f"{v:6d} {v / total:6.1%}  {k}" for k, v in incl.most_common(top)]
    return "\n".join(lines) + "\n"


def pyspy_driver(system: str, dsn: str, mode: str, opts: dict[str, Any], tag: str) -> str:
    raw = OUT / f"pyspy-{tag}.txt"
    cmd = [str(PYSPY), "record", "--rate", "250", "--format", "raw", "-o", str(raw), "--",
           *run.driver_cmd(system, mode, dsn, opts)]  # fmt: skip
    p = subprocess.run(
        cmd, capture_output=True, text=True, env={**run.os.environ, "PYTHONPATH": str(run.DRIVERS)}
    )
    res = next(
        (json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")), {}
    )
    return f"== py-spy {tag}: {res}\n" + summarise(raw)


class Report(list):  # type: ignore[type-arg]
    """Appends are also written to .bench/profile/summary.txt at once, so a crash keeps them."""

    def append(self, text: str) -> None:
        super().append(text)
        (OUT / "summary.txt").write_text("\n".join(self))
        print(text, flush=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cluster = run.PrivateCluster(55432)
    server = run.Server(cluster.start())
    report = Report()
    try:
        db = server.fresh("prof_pgx")
        dsn = server.dsn(db)
        run.run_driver("pgxjob", "setup", dsn, {})
        report.append(statements(server, db, "pgxjob: 3,000 single enqueues, 1 client",
                                 lambda: run.run_driver("pgxjob", "enqueue_single", dsn, {"n": 3000, "threads": 1})))  # fmt: skip
        report.append(statements(server, db, "pgxjob: drain of those 3,000 + 20,000 bulk (run log on)",
                                 lambda: (run.run_driver("pgxjob", "enqueue_bulk", dsn, {"n": 20000, "batch": 5000}),
                                          run.drain("pgxjob", server, db, 23000, 1, timeout=120))))  # fmt: skip
        run.backlog("pgxjob", dsn, 5000)
        report.append(plans(server, db))
        server.drop(db)

        db = server.fresh("prof_bare")
        dsn = server.dsn(db)
        run.run_driver("bare", "setup", dsn, {})
        report.append(statements(server, db, "bare: 3,000 single INSERT + pg_notify, 1 client",
                                 lambda: run.run_driver("bare", "enqueue_single", dsn, {"n": 3000, "threads": 1})))  # fmt: skip
        server.drop(db)

        for tag, cfg in (("consumer-c10-b100", {"max_concurrent_jobs": 10, "max_buffered_job_results": 100}),
                         ("consumer-c2-b1000", None)):  # fmt: skip
            db = server.fresh("prof_spy")
            report.append(pyspy_consumer(server, db, "pgxjob", 50000, tag, cfg))
            server.drop(db)

        db = server.fresh("prof_spy")
        dsn = server.dsn(db)
        run.run_driver("pgxjob", "setup", dsn, {})
        report.append(
            pyspy_driver(
                "pgxjob", dsn, "enqueue_single", {"n": 5000, "threads": 1}, "enqueue-single"
            )
        )
        server.drop(db)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
