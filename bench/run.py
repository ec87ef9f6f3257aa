# ruff: noqa: E501, RUF028
"""Benchmark runner: pgxjob side by side with procrastinate, PgQueuer and oban-py.

Runs in the bench virtualenv (.bench/bench). Each system runs in its own virtualenv under .bench/,
through a driver script in bench/drivers/, against a fresh scratch database per workload and
round. By default a private PostgreSQL 15 cluster is started under .bench/pgdata (so that WAL
counts and CPU are not shared with other users of the host's server); --dsn uses another server.

    python bench/run.py                 # full run (about 25 minutes on 2 cores)
    python bench/run.py --quick         # small sizes, one round: a smoke test
    python bench/run.py --only pgxjob,pgqueuer --workloads drain1,latency

The first workload, ``sweep``, drains the same backlog with each system's configurations (one
knob and one or two worker processes, one round) and keeps the fastest for every later workload:
each system is measured in the best configuration its sweep found. Without ``sweep`` (or for a
system given a ``--config``) the configuration in SYSTEMS below is used as written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = ROOT / ".bench"
DRIVERS = BENCH / "drivers"

# -- sizes ------------------------------------------------------------------------------------

FULL = {
    "rounds": 3,
    "single1_n": 2000,  # one client thread, one job per transaction
    "single10_n": 5000,  # ten client threads (tasks for asyncio peers)
    "n": 20000,  # bulk enqueue, drain with one and with two worker processes
    "steady_s": 10,  # produce and consume at once
    "latency_n": 500,
    "latency_gap": 0.01,
    "timed_delay": 0.5,
    "scaling": [10000, 50000],  # one process, one round; drain1 adds the n point
    "mixed_n": 20000,  # half ASAP, half timed, all due before the worker starts
    "big_n": 1000000,  # pgxjob only: rate and RSS over a long drain
    "keyed_levels": 5,  # keyed drain: priority levels, shuffled over the backlog of n
    "keyed_share": 0.5,  # keyed drain: share of jobs with a (distinct) unique key
    "periodic_s": 60,  # pgxjob only: seconds of a per-second periodic job on an idle worker
    "claimed_ahead": 20000,  # pgxjob only, adverse drain: jobs claimed by another worker ahead
    "scaleout_n": 20000,  # pgxjob only: each point of 1-8 processes and 1-16 groups
}
QUICK = {
    "rounds": 1,
    "single1_n": 300,
    "single10_n": 1000,
    "n": 3000,
    "steady_s": 3,
    "latency_n": 60,
    "latency_gap": 0.01,
    "timed_delay": 0.5,
    "scaling": [2000, 5000],
    "mixed_n": 3000,
    "big_n": 10000,
    "keyed_levels": 5,
    "keyed_share": 0.5,
    "periodic_s": 10,
    "claimed_ahead": 3000,
    "scaleout_n": 3000,
}

# -- systems and their configurations ---------------------------------------------------------
# "consume" is the configuration used when no sweep runs. "sweep" names one consume knob (a dotted
# path), the values tried and the worker process counts tried; the sweep workload keeps the
# fastest pair (bench/RESULTS.md lists every rate). "sweep_from" takes another system's choice.
# "sweep_max_n" caps the sweep's backlog for a slow system.

# pgxjob's tuned worker: the sweep (below) chooses max_concurrent_jobs; every pgxjob variant
# starts from this configuration.
PGXJOB_WORKER = {
    "max_concurrent_jobs": 2,
    "max_prefetched_jobs": 1000,
    "max_buffered_job_results": 1000,
    "max_buffered_job_result_age": 1.0,
}


def pgxjob_system(venv: str = "pgxjob", **spec: Any) -> dict[str, Any]:
    """A pgxjob variant: its virtualenv, driver and queue tables, and what spec sets or changes
    (consume defaults to the tuned worker with the run log on)."""
    return {
        "venv": venv,
        "driver": "pgxjob_driver.py",
        "bulk_batch": 5000,
        "consume": {"log": True, "worker": dict(PGXJOB_WORKER)},
        "remaining_sql": "select (select count(*) from pgxjob_public.pgxjob_asap_jobs)"
        " + (select count(*) from pgxjob_public.pgxjob_run_at_jobs)",
        **spec,
    }


SYSTEMS: dict[str, dict[str, Any]] = {
    "pgxjob": pgxjob_system(
        sweep={"knob": "worker.max_concurrent_jobs", "values": [2, 10], "procs": [1, 2]},
    ),
    "pgxjob-nolog": pgxjob_system(
        same_enqueue_as="pgxjob",
        consume={"log": False, "worker": dict(PGXJOB_WORKER)},
        sweep_from="pgxjob",
    ),
    # pgxjob's start_worker defaults, run log on: shows what the tuning above is worth.
    "pgxjob-defaults": pgxjob_system(
        same_enqueue_as="pgxjob",
        only=["drain1", "drain2", "steady"],
        consume={"log": True, "worker": {}},
    ),
    # Async no-op handlers on the worker's event loop, with pgxjob's swept configuration: the
    # asyncio path beside the thread path and PgQueuer (asyncio).
    "pgxjob-async": pgxjob_system(
        same_enqueue_as="pgxjob",
        only=["drain1", "drain2", "latency"],
        consume={"log": True, "handler": "async", "worker": dict(PGXJOB_WORKER)},
        sweep_from="pgxjob",
    ),
    # OpenTelemetry installed (the otel extra and the SDK, in a virtualenv of their own) and
    # configured in every driver process: an SDK TracerProvider whose batch processor hands each
    # span to an exporter that drops it. The backlog is scheduled in spans, so every job carries
    # a traceparent and every run is a child span: the cost of traces against "pgxjob", whose
    # virtualenv has no OpenTelemetry at all.
    "pgxjob-otel": pgxjob_system(
        "pgxjob-otel",
        env={"PGXJOB_BENCH_OTEL": "sdk"},
        only=["drain1", "drain2"],
        sweep_from="pgxjob",
    ),
    # The same virtualenv with no SDK configured: OpenTelemetry importable, no span made.
    "pgxjob-otel-api": pgxjob_system(
        "pgxjob-otel",
        only=["drain1", "drain2"],
        sweep_from="pgxjob",
    ),
    "pgqueuer": {
        "venv": "pgqueuer",
        "driver": "pgqueuer_driver.py",
        "bulk_batch": 5000,
        "consume": {"batch_size": 100, "max_concurrent_tasks": 0},
        "sweep": {"knob": "batch_size", "values": [10, 50, 100, 200, 500], "procs": [1, 2]},
        "remaining_sql": "select count(*) from pgqueuer",
    },
    "oban": {
        "venv": "oban",
        "python": ["python3.13", "python3.12", "python3.14"],
        "driver": "oban_driver.py",
        "bulk_batch": 5000,
        "consume": {"limit": 100, "pool_max": 10, "stage_interval": 0.1},
        "sweep": {"knob": "limit", "values": [10, 100, 500], "procs": [1, 2]},
        "remaining_sql": "select count(*) from oban_jobs"
        " where state in ('available', 'scheduled', 'executing', 'retryable')",
    },
    "procrastinate": {
        "venv": "procrastinate",
        "driver": "procrastinate_driver.py",
        "bulk_batch": 5000,
        "max_n": 5000,  # about 200 jobs/s here: larger backlogs do not fit the time budget
        "consume": {"concurrency": 10, "polling": 0.1, "delete_jobs": "successful"},
        "sweep": {"knob": "concurrency", "values": [10, 50], "procs": [1, 2]},
        "sweep_max_n": 2000,
        "remaining_sql": "select count(*) from procrastinate_jobs where status in ('todo', 'doing')",
    },
    # Bare psycopg: the enqueue floor, and the raw SQL limit of a drain (claim a batch with
    # `for update skip locked`, delete it), swept over batch sizes with 2 processes.
    "bare": {
        "venv": "pgxjob",
        "driver": "bare_driver.py",
        "only": ["single", "sweep", "drain1", "drain2"],
        "bulk_batch": 5000,
        "consume": {"batch_size": 200},
        "sweep": {"knob": "batch_size", "values": [10, 50, 100, 200, 500, 1000], "procs": [2]},
        "remaining_sql": "select count(*) from bare_jobs",
    },
}

ALL_WORKLOADS = ["sweep", "single", "drain1", "drain2", "keyed", "steady", "latency", "scaling",
                 "mixed", "big", "periodic", "adverse", "scaleout"]  # fmt: skip
# Workloads run in the first round only.
ONCE = ("sweep", "big", "scaling", "periodic", "scaleout")
# Consumer options given with --config: the sweep measures these systems but keeps their options.
PINNED: set[str] = set()
# The private cluster's data directory, whose processes the scaleout workload reads CPU time of.
PRIVATE_PGDATA: list[Path | None] = [None]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- virtualenvs -------------------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return WORK / name / "bin" / "python"


def find_python(names: list[str]) -> str:
    """The first interpreter among `names` (or pyenv's installs of them) that really runs."""
    cands: list[str] = []
    for name in names:
        if shutil.which(name):
            cands.append(shutil.which(name) or name)
        ver = name.removeprefix("python")
        cands += sorted(str(p) for p in Path("/root/.pyenv/versions").glob(f"{ver}*/bin/python"))
        cands += [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    for c in cands:
        ok = subprocess.run([c, "-c", "import venv"], capture_output=True, check=False)
        if Path(c).exists() and ok.returncode == 0:
            return c
    raise SystemExit(f"none of {names} found: oban-py needs Python 3.12 or newer")


def ensure_venv(system: str) -> None:
    spec = SYSTEMS[system]
    name = spec["venv"]
    req = BENCH / "requirements" / f"{name}.txt"
    stamp = WORK / name / ".bench-installed"
    editable = name.startswith("pgxjob")
    want = req.read_text() + ("editable:" + str(ROOT) if editable else "")
    if stamp.exists() and stamp.read_text() == want and venv_python(name).exists():
        return
    base = sys.executable
    if "python" in spec:
        base = find_python(spec["python"])
    log(f"installing {name} into .bench/{name} with {base}")
    subprocess.run([base, "-m", "venv", str(WORK / name)], check=True)
    pip = [str(venv_python(name)), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(req)], check=True)
    if editable:
        subprocess.run([*pip, "-e", str(ROOT)], check=True)
    stamp.write_text(want)


def versions(system: str) -> dict[str, str]:
    out = subprocess.run(
        [str(venv_python(SYSTEMS[system]["venv"])), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keep = {"pgxjob", "procrastinate", "pgqueuer", "oban", "psycopg", "psycopg-binary",
            "psycopg-pool", "asyncpg", "opentelemetry-api", "opentelemetry-sdk"}  # fmt: skip
    vers = {p["name"].lower(): p["version"] for p in json.loads(out)}
    py = subprocess.run(
        [
            str(venv_python(SYSTEMS[system]["venv"])),
            "-c",
            "import sys; print(sys.version.split()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"python": py, **{k: v for k, v in sorted(vers.items()) if k in keep}}


def runtime(system: str) -> dict[str, Any]:
    """What the system's driver runs on (drivers/common.py runtime), plus its package versions."""
    info = run_driver(system, "runtime", "", {}, timeout=60)
    return {**info, "versions": versions(system)}


# -- PostgreSQL ---------------------------------------------------------------------------------


class PrivateCluster:
    """A throwaway PostgreSQL cluster under .bench/pgdata, owned by the postgres OS user."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.data = WORK / "pgdata"
        self.bindir = self._bindir()

    @staticmethod
    def _bindir() -> Path:
        for v in ("17", "16", "15", "14"):
            p = Path(f"/usr/lib/postgresql/{v}/bin")
            if (p / "initdb").exists():
                return p
        raise SystemExit("no PostgreSQL server binaries found; pass --dsn")

    def _as_pg(self, *cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def start(self) -> str:
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.data, "postgres", "postgres")
            subprocess.run(
                self._as_pg(
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ),  # fmt: skip
                check=True,
                capture_output=True,
            )
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(
                    "\n# pgxjob bench: same defaults as a stock server, plus room for the runs\n"
                    f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.data}'\n"
                    "max_connections = 200\nshared_buffers = 256MB\n"
                    "max_wal_size = 4GB\ncheckpoint_timeout = 30min\n"
                    "shared_preload_libraries = 'pg_stat_statements'\n"
                    "pg_stat_statements.track = 'none'\n"
                )
        subprocess.run(
            self._as_pg(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.data / "server.log"),
                "start",
            ),  # fmt: skip
            check=False,
            capture_output=True,
        )
        return f"host=127.0.0.1 port={self.port} user=postgres"

    def stop(self) -> None:
        subprocess.run(
            self._as_pg(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"
            ),
            check=False,
            capture_output=True,
        )


class Server:
    def __init__(self, base_dsn: str) -> None:
        self.base = base_dsn
        self.counter = 0

    def dsn(self, db: str) -> str:
        return f"{self.base} dbname={db}"

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn("postgres"), autocommit=True)

    def fresh(self, tag: str) -> str:
        self.counter += 1
        db = f"bench_{tag.replace('-', '_')}"
        with self.admin() as c:
            c.execute(f"drop database if exists {db} with (force)")
            c.execute(f"create database {db}")
        return db

    def drop(self, db: str) -> None:
        with self.admin() as c:
            c.execute(f"drop database if exists {db} with (force)")

    def version(self) -> str:
        with self.admin() as c:
            return c.execute("select version()").fetchone()[0]

    def settings(self) -> dict[str, str]:
        names = ["shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size",
                 "checkpoint_timeout", "autovacuum"]  # fmt: skip
        with self.admin() as c:
            return {n: c.execute(f"show {n}").fetchone()[0] for n in names}


def lsn(conn: psycopg.Connection[Any]) -> str:
    return conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]


def wal_since(conn: psycopg.Connection[Any], start: str) -> int:
    return int(
        conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [start]).fetchone()[0]
    )


def table_stats(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "select coalesce(sum(n_dead_tup), 0), coalesce(sum(n_tup_upd), 0),"
        " coalesce(sum(n_tup_hot_upd), 0), coalesce(sum(n_tup_del), 0),"
        " coalesce(sum(autovacuum_count), 0), coalesce(sum(n_live_tup), 0)"
        " from pg_stat_user_tables"
    ).fetchone()
    return dict(
        zip(["dead", "upd", "hot_upd", "del", "autovacuums", "live"], map(int, row), strict=True)
    )


# -- drivers --------------------------------------------------------------------------------------


def driver_cmd(system: str, mode: str, dsn: str, opts: dict[str, Any]) -> list[str]:
    spec = SYSTEMS[system]
    return [
        str(venv_python(spec["venv"])),
        str(DRIVERS / spec["driver"]),
        mode,
        dsn,
        json.dumps(opts),
    ]


def driver_env(system: str) -> dict[str, str]:
    """The environment of a system's driver processes: ours, the drivers' path, the system's own."""
    return {**os.environ, "PYTHONPATH": str(DRIVERS), **SYSTEMS[system].get("env", {})}


def run_driver(
    system: str, mode: str, dsn: str, opts: dict[str, Any], timeout: float = 600
) -> dict[str, Any]:
    proc = subprocess.run(
        driver_cmd(system, mode, dsn, opts),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=driver_env(system),
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    if proc.returncode != 0 or mode != "setup":
        raise RuntimeError(f"{system} {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {}


class Consumer:
    """One worker process of a system, driven over the consumer protocol of drivers/common.py."""

    def __init__(self, system: str, dsn: str, opts: dict[str, Any], record: bool = False) -> None:
        env = driver_env(system)
        if record:
            env["BENCH_RECORD"] = "1"
        self.errfile = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            driver_cmd(system, "consume", dsn, opts),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            text=True,
            bufsize=1,
            env=env,
        )
        self.count = 0
        self.t_last = 0.0
        self.ready = threading.Event()
        self.done: dict[str, Any] | None = None
        self.finished = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            if line.startswith("C "):
                _, c, t = line.split()
                self.count, self.t_last = int(c), float(t)
            elif line.startswith("READY"):
                self.ready.set()
            elif line.startswith("DONE "):
                self.done = json.loads(line[5:])
        self.finished.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"consumer not ready: {self.stderr()}")

    def send(self, word: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        with contextlib.suppress(BrokenPipeError):
            self.send("STOP")
        if not self.finished.wait(timeout):
            self.proc.kill()
        self.proc.wait(10)
        if self.done is None:
            raise RuntimeError(f"consumer gave no result: {self.stderr()}")
        return self.done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read()[-3000:]


def consumers(
    system: str, dsn: str, procs: int, record: bool = False, opts: dict[str, Any] | None = None
) -> list[Consumer]:
    opts = SYSTEMS[system]["consume"] if opts is None else opts
    cs = [Consumer(system, dsn, opts, record) for _ in range(procs)]
    for c in cs:
        c.wait_ready()
    return cs


def wait_count(cs: list[Consumer], n: int, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if sum(c.count for c in cs) >= n:
            return True
        if any(c.proc.poll() is not None for c in cs):
            raise RuntimeError("consumer died: " + " | ".join(c.stderr() for c in cs))
        time.sleep(0.002)
    return False


def drain(
    system: str,
    server: Server,
    db: str,
    n: int,
    procs: int,
    *,
    timeout: float,
    opts: dict[str, Any] | None = None,
    held: int = 0,
) -> dict[str, Any]:
    """Start `procs` worker processes on a ready backlog of n jobs; time until handled and acked.

    held: jobs that stay in the tables throughout (claimed by a worker that is not draining).
    """
    dsn = server.dsn(db)
    remaining_sql = SYSTEMS[system]["remaining_sql"]
    cs = consumers(system, dsn, procs, opts=opts)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.time()
            for c in cs:
                c.send("GO")
            if not wait_count(cs, n, timeout):
                return {
                    "error": f"timeout after {timeout:.0f}s, {sum(c.count for c in cs)}/{n} handled"
                }
            t_handled = max(c.t_last for c in cs)
            while conn.execute(remaining_sql).fetchone()[0] > held:
                if time.time() - t0 > timeout + 30:
                    return {"error": "handled but never acknowledged"}
                time.sleep(0.005)
            t_acked = time.time()
        dones = [c.stop() for c in cs]
    finally:
        for c in cs:
            c.kill()
    return {
        "handled_s": t_handled - t0,
        "acked_s": t_acked - t0,
        "rate_handled": n / (t_handled - t0),
        "rate": n / (t_acked - t0),
        "peak_rss_kb": max(d["peak_rss_kb"] for d in dones),
        "rss_trace": dones[0]["rss_trace"],
        "count": sum(d["count"] for d in dones),
    }


def drain_timeout(n: int) -> float:
    return max(60.0, n / 300.0)


# -- workloads ----------------------------------------------------------------------------------


def w_single(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    out = {}
    for threads, n in ((1, sz["single1_n"]), (10, sz["single10_n"])):
        r = run_driver(system, "enqueue_single", dsn, {"n": n, "threads": threads})
        out[f"single{threads}"] = n / r["seconds"]
    server.drop(db)
    return out


def cap(system: str, n: int) -> int:
    return min(n, SYSTEMS[system].get("max_n", n))


def w_drain1(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """Bulk enqueue n jobs (timed), then drain them with one worker process; WAL and dead tuples."""
    spec = SYSTEMS[system]
    n = cap(system, sz["n"])
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    out: dict[str, Any] = {"drain_n": n}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("checkpoint")
        start = lsn(conn)
        r = run_driver(system, "enqueue_bulk", dsn, {"n": n, "batch": spec["bulk_batch"]})
        out["bulk"] = n / r["seconds"]
        out["wal_enqueue_per_job"] = wal_since(conn, start) / n
        if not spec.get("enqueue_only"):
            mid = lsn(conn)
            d = drain(system, server, db, n, 1, timeout=drain_timeout(n))
            if "error" in d:
                out["drain1_error"] = d["error"]
            else:
                out["wal_drain_per_job"] = wal_since(conn, mid) / n
                out["wal_per_job"] = out["wal_enqueue_per_job"] + out["wal_drain_per_job"]
                out["drain1"] = d["rate"]
                out["drain1_handled"] = d["rate_handled"]
                out["peak_rss_mb"] = d["peak_rss_kb"] / 1024
                time.sleep(1.2)
                st = table_stats(conn)
                out["dead_left_per_100k"] = st["dead"] / n * 100000
                out["dead_made_per_100k"] = (st["upd"] + st["del"]) / n * 100000
                out["autovacuums"] = st["autovacuums"]
    server.drop(db)
    return out


def backlog(
    system: str, dsn: str, n: int, timed: int = 0, timed_delay: float = 0, **extra: Any
) -> float:
    """Fill a backlog through the driver; returns the seconds its ASAP part took to enqueue."""
    r = run_driver(
        system,
        "backlog",
        dsn,
        {
            "n": n,
            "batch": SYSTEMS[system]["bulk_batch"],
            "timed": timed,
            "timed_delay": timed_delay,
            **extra,
        },
    )
    return float(r["seconds"])


def w_drain2(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    n = cap(system, sz["n"])
    backlog(system, dsn, n)
    d = drain(system, server, db, n, 2, timeout=drain_timeout(n))
    server.drop(db)
    if "error" in d:
        return {"drain2_error": d["error"]}
    return {"drain2": d["rate"], "drain2_handled": d["rate_handled"]}


def with_option(opts: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of consume options with the dotted `path` set to `value`."""
    out = json.loads(json.dumps(opts))
    parts = path.split(".")
    target = out
    for p in parts[:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = value
    return out


def choose(system: str, value: Any, procs: int) -> None:
    """Use a sweep's choice for every later workload of `system` and of the systems copying it."""
    knob = SYSTEMS[system]["sweep"]["knob"]
    for s, spec in SYSTEMS.items():
        if (s == system or spec.get("sweep_from") == system) and s not in PINNED:
            spec["consume"] = with_option(spec["consume"], knob, value)
            spec["chosen"] = {"knob": knob, "value": value, "procs": procs, "by": system}


# Each sweep point is drained this many times, in passes of alternating order, and keeps its
# fastest drain: with one drain per point the choice fell within this machine's noise.
SWEEP_PASSES = 2


def w_sweep(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """Drain the same backlog with each value of the system's knob and each process count.

    SWEEP_PASSES passes over the points, the second in reverse order; each point's rate is its
    fastest drain. The fastest (value, processes) pair is kept (choose) unless --config pinned
    the system's options; the rates of all pairs are reported.
    """
    spec = SYSTEMS[system]["sweep"]
    n = min(cap(system, sz["n"]), SYSTEMS[system].get("sweep_max_n", sz["n"]))
    pairs = [(value, procs) for value in spec["values"] for procs in spec["procs"]]
    drained: dict[tuple[Any, int], list[dict[str, Any]]] = {pair: [] for pair in pairs}
    for sweep_pass in range(SWEEP_PASSES):
        for value, procs in pairs if sweep_pass % 2 == 0 else pairs[::-1]:
            opts = with_option(SYSTEMS[system]["consume"], spec["knob"], value)
            db = server.fresh(system)
            dsn = server.dsn(db)
            run_driver(system, "setup", dsn, {})
            backlog(system, dsn, n)
            d = drain(system, server, db, n, procs, timeout=drain_timeout(n), opts=opts)
            server.drop(db)
            drained[(value, procs)].append(d)
            log(f"  sweep {spec['knob']}={value} procs={procs}: {d.get('rate') or d.get('error')}")
    points = []
    for (value, procs), runs in drained.items():
        rates = [d["rate"] for d in runs if d.get("rate")]
        errors = [d["error"] for d in runs if d.get("error")]
        points.append({"value": value, "procs": procs, "rate": max(rates) if rates else None,
                       "rates": rates, "error": errors[0] if errors else None})  # fmt: skip
    ok = [p for p in points if p["rate"]]
    out: dict[str, Any] = {"sweep_n": n, "sweep_points": points}
    if ok:
        best = max(ok, key=lambda p: p["rate"])
        choose(system, best["value"], best["procs"])
        out.update(sweep_best=best["rate"], sweep_value=best["value"], sweep_procs=best["procs"])
    return out


KEYED_ROUND = [0]
ADVERSE_ROUND = [0]


def w_keyed(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """pgxjob's drain with priorities and unique keys, paired with the plain drain.

    Both drain the same backlog size with one worker process on fresh databases, twice each in
    the order keyed, plain, plain, keyed (mirrored in every other round), so that a drift of the
    host's load during the round weighs on both alike. The keyed backlog has sz['keyed_levels']
    priority levels and sz['keyed_share'] of its jobs hold distinct unique keys, both shuffled
    over the insertion order. Reports the mean rate of each kind and their ratio (keyed / plain),
    and checks that the drains released every unique key.
    """
    n = sz["n"]
    kinds = ["keyed", "plain", "plain", "keyed"]
    if KEYED_ROUND[0] % 2:
        kinds.reverse()
    KEYED_ROUND[0] += 1
    rates: dict[str, list[float]] = {"keyed": [], "keyed_plain": []}
    enqueue: dict[str, list[float]] = {"keyed": [], "keyed_plain": []}
    out: dict[str, Any] = {"keyed_keys_left": 0}
    for kind in kinds:
        extra = {}
        if kind == "keyed":
            extra = {"priorities": sz["keyed_levels"], "keyed_share": sz["keyed_share"]}
        db = server.fresh(system)
        dsn = server.dsn(db)
        run_driver(system, "setup", dsn, {})
        secs = backlog(system, dsn, n, **extra)
        d = drain(system, server, db, n, 1, timeout=drain_timeout(n))
        if kind == "keyed":
            with psycopg.connect(dsn, autocommit=True) as conn:
                left = conn.execute("select count(*) from pgxjob_public.pgxjob_unique_keys")
                out["keyed_keys_left"] += left.fetchone()[0]
        server.drop(db)
        name = "keyed" if kind == "keyed" else "keyed_plain"
        if "error" in d:
            out[f"{name}_error"] = d["error"]
            continue
        rates[name].append(d["rate"])
        enqueue[name].append(n / secs)
    for name in rates:
        if rates[name]:
            out[name] = statistics.mean(rates[name])
            out[f"{name}_enqueue"] = statistics.mean(enqueue[name])
    if out.get("keyed") and out.get("keyed_plain"):
        out["keyed_ratio"] = out["keyed"] / out["keyed_plain"]
    return out


def w_adverse(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """pgxjob's drain under two adverse conditions, each paired with the plain drain.

    claimed: sz['claimed_ahead'] jobs older than the backlog are claimed by another worker (as
    several workers with large prefetches do) and stay claimed through the drain. snapshot: a
    repeatable-read transaction that read the job table stays open through the drain (a long
    report, a stuck session), so no dead row or index entry can be cleaned while it runs. Each
    kind drains the same n jobs with one worker process on a fresh database, in the order plain,
    claimed, snapshot, plain (reversed every other round); ratios are kind / mean plain rate.
    """
    n, ahead = sz["n"], sz["claimed_ahead"]
    kinds = ["plain", "claimed", "snapshot", "plain"]
    if ADVERSE_ROUND[0] % 2:
        kinds.reverse()
    ADVERSE_ROUND[0] += 1
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    out: dict[str, Any] = {}
    for kind in kinds:
        db = server.fresh(system)
        dsn = server.dsn(db)
        run_driver(system, "setup", dsn, {})
        held = 0
        if kind == "claimed":
            backlog(system, dsn, ahead)
            with psycopg.connect(dsn, autocommit=True) as conn:
                hog = conn.execute(
                    "select pgxjob_register_worker('default', interval '1 day')"
                ).fetchone()[0]
                held = conn.execute(
                    "select count(*) from pgxjob_fetch_jobs(%s, %s)", (hog, ahead)
                ).fetchone()[0]
        backlog(system, dsn, n)
        with psycopg.connect(dsn) as holder:
            if kind == "snapshot":
                holder.execute("set transaction isolation level repeatable read")
                holder.execute("select count(*) from pgxjob_public.pgxjob_asap_jobs")
            d = drain(system, server, db, n, 1, timeout=drain_timeout(n) * 3, held=held)
            holder.rollback()
        server.drop(db)
        if "error" in d:
            out[f"adverse_{kind}_error"] = d["error"]
            continue
        rates[kind].append(d["rate"])
    for kind, values in rates.items():
        if values:
            out[f"adverse_{kind}"] = statistics.mean(values)
    for kind in ("claimed", "snapshot"):
        if out.get(f"adverse_{kind}") and out.get("adverse_plain"):
            out[f"adverse_{kind}_ratio"] = out[f"adverse_{kind}"] / out["adverse_plain"]
    return out


def w_scaling(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for n in sz["scaling"]:
        if n > cap(system, n):
            continue
        db = server.fresh(system)
        dsn = server.dsn(db)
        run_driver(system, "setup", dsn, {})
        backlog(system, dsn, n)
        d = drain(system, server, db, n, 1, timeout=drain_timeout(n))
        server.drop(db)
        out[f"drain_{n}"] = d.get("rate")
    return out


def w_mixed(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """Half ASAP, half timed jobs that have all fallen due before the worker starts."""
    n = cap(system, sz["mixed_n"])
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    delay = 3.0
    t = time.time()
    backlog(system, dsn, n // 2, timed=n - n // 2, timed_delay=delay)
    time.sleep(max(0.0, t + delay + 0.2 - time.time()))
    d = drain(system, server, db, n, 1, timeout=drain_timeout(n))
    server.drop(db)
    return {"mixed": d.get("rate"), "mixed_error": d.get("error")}


def w_steady(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """One producer process (batches of 100, backlog capped at 2,000) and one worker process."""
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    cs = consumers(system, dsn, 1)
    try:
        cs[0].send("GO")
        time.sleep(0.5)
        c0 = cs[0].count
        t0 = time.time()
        r = run_driver(
            system,
            "steady_produce",
            dsn,
            {
                "duration": sz["steady_s"],
                "batch": 100,
                "cap": 2000,
                "count_sql": SYSTEMS[system]["remaining_sql"],
            },  # fmt: skip
        )
        c1 = cs[0].count
        t1 = time.time()
        cs[0].stop()
    finally:
        for c in cs:
            c.kill()
    server.drop(db)
    return {"steady": (c1 - c0) / (t1 - t0), "steady_produced": r["produced"] / sz["steady_s"]}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


OFFSET = {"asap": 0, "timed": 1_000_000}


def w_latency(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """ASAP: commit to handler start, idle worker. Timed: due time to handler start."""
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    n = sz["latency_n"]
    out: dict[str, Any] = {}
    cs = consumers(system, dsn, 1, record=True)
    try:
        cs[0].send("GO")
        time.sleep(1.0)
        refs = {}
        for kind, delay in (("asap", None), ("timed", sz["timed_delay"])):
            before = cs[0].count
            r = run_driver(system, "latency_produce", dsn, {"n": n, "gap": sz["latency_gap"],
                                                            "timed_delay": delay,
                                                            "offset": OFFSET[kind]})  # fmt: skip
            refs[kind] = dict((int(i), t) for i, t in r["refs"])
            if not wait_count(cs, before + n, 30):
                out[f"{kind}_error"] = "not all jobs ran within 30 s"
            time.sleep(0.3)
        done = cs[0].stop()
    finally:
        for c in cs:
            c.kill()
    server.drop(db)
    starts = [(int(i), t) for i, t in done["records"]]
    asap_starts = [(i, t) for i, t in starts if i < OFFSET["timed"]]
    timed_starts = [(i, t) for i, t in starts if i >= OFFSET["timed"]]
    for kind, st in (("asap", asap_starts), ("timed", timed_starts)):
        lat = [(t - refs[kind][i]) * 1000 for i, t in st if i in refs[kind]]
        if lat:
            out[f"{kind}_p50"] = pct(lat, 50)
            out[f"{kind}_p99"] = pct(lat, 99)
            out[f"{kind}_max"] = max(lat)
            out[f"{kind}_all"] = lat
    return out


def w_periodic(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """pgxjob only: a per-second periodic job on an idle worker, fire time to handler start."""
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    r = run_driver(system, "periodic", dsn, {"seconds": sz["periodic_s"]})
    server.drop(db)
    lat = r["latencies_ms"]
    out: dict[str, Any] = {"periodic_fires": r["fires"], "periodic_missed": r["missed"],
                           "periodic_doubled": r["fires"] - r["distinct_seconds"]}  # fmt: skip
    if lat:
        out.update(periodic_p50=pct(lat, 50), periodic_p99=pct(lat, 99), periodic_max=max(lat))
    return out


def w_big(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    n = sz["big_n"]
    db = server.fresh(system)
    dsn = server.dsn(db)
    run_driver(system, "setup", dsn, {})
    backlog(system, dsn, n)
    d = drain(system, server, db, n, 1, timeout=drain_timeout(n) * 2)
    server.drop(db)
    return {"big_rate": d.get("rate"), "big_rss_trace": d.get("rss_trace"),
            "big_peak_rss_mb": (d.get("peak_rss_kb") or 0) / 1024}  # fmt: skip


def w_scaleout(system: str, server: Server, sz: dict[str, Any]) -> dict[str, Any]:
    """pgxjob with 1-8 worker processes and 1-16 groups: bench/scaleout.py, docs/scaling.md."""
    import scaleout

    return scaleout.run(
        sz,
        server=server,
        consume=SYSTEMS[system]["consume"],
        pgdata=PRIVATE_PGDATA[0],
        run_driver=run_driver,
        consumers=consumers,
        wait_count=wait_count,
        remaining_sql=SYSTEMS[system]["remaining_sql"],
        timeout=drain_timeout(sz["scaleout_n"]),
    )


WORKLOADS = {
    "sweep": w_sweep,
    "single": w_single,
    "drain1": w_drain1,
    "drain2": w_drain2,
    "keyed": w_keyed,
    "steady": w_steady,
    "latency": w_latency,
    "scaling": w_scaling,
    "mixed": w_mixed,
    "big": w_big,
    "periodic": w_periodic,
    "adverse": w_adverse,
    "scaleout": w_scaleout,
}


def applies(system: str, workload: str) -> bool:
    spec = SYSTEMS[system]
    if spec.get("same_enqueue_as") and workload == "single":
        return False
    if workload == "sweep":
        return "sweep" in spec
    if "only" in spec:
        return workload in spec["only"]
    if workload in ("keyed", "scaleout"):
        return system == "pgxjob"
    if workload == "big":
        return system.startswith("pgxjob")
    if workload in ("periodic", "adverse"):
        return system == "pgxjob"
    return True


# -- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"cpu": model, "cores": os.cpu_count(), "mem_mb": mem, "kernel": platform.release(),
            "runner_python": platform.python_version()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes and one round")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", help="comma-separated systems")
    ap.add_argument("--workloads", help="comma-separated: " + ",".join(ALL_WORKLOADS))
    ap.add_argument("--dsn", default=os.environ.get("BENCH_DSN"),
                    help="base libpq DSN (no dbname) of a server to use instead of a private cluster")  # fmt: skip
    ap.add_argument("--port", type=int, default=55432)
    ap.add_argument("--out", default=str(BENCH / "results.json"))
    ap.add_argument("--no-report", action="store_true", help="write the JSON only")
    ap.add_argument("--set", action="append", default=[], help="override a size, e.g. n=50000")
    ap.add_argument("--config", action="append", default=[],
                    help="override a consumer option, e.g. pgqueuer.batch_size=10 or pgxjob.worker.max_concurrent_jobs=1")  # fmt: skip
    args = ap.parse_args()
    for kv in args.config:
        path, v = kv.split("=", 1)
        system, _, knob = path.partition(".")
        SYSTEMS[system]["consume"] = with_option(SYSTEMS[system]["consume"], knob, json.loads(v))
        PINNED.add(system)

    sz = dict(QUICK if args.quick else FULL)
    if os.environ.get("BENCH_QUICK") == "1":
        sz = dict(QUICK)
    for kv in args.set:
        k, v = kv.split("=", 1)
        sz[k] = json.loads(v)
    if args.rounds:
        sz["rounds"] = args.rounds
    systems = args.only.split(",") if args.only else list(SYSTEMS)
    workloads = args.workloads.split(",") if args.workloads else ALL_WORKLOADS

    (WORK / "scratch").mkdir(parents=True, exist_ok=True)
    for s in systems:
        ensure_venv(s)
    cluster = None
    if args.dsn:
        base = args.dsn
    else:
        cluster = PrivateCluster(args.port)
        base = cluster.start()
        PRIVATE_PGDATA[0] = cluster.data
    server = Server(base)
    started = time.time()
    raw: dict[str, dict[str, list[Any]]] = {s: {} for s in systems}
    loads: list[float] = []
    try:
        for rnd in range(sz["rounds"]):
            order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
            for wl in workloads:
                for s in order:
                    if not applies(s, wl) or (wl in ONCE and rnd > 0):
                        continue
                    loads.append(os.getloadavg()[0])
                    log(f"round {rnd + 1}/{sz['rounds']} {wl} {s} (load {loads[-1]:.1f})")
                    try:
                        res = WORKLOADS[wl](s, server, sz)
                    except Exception as e:  # a peer failing must not stop the others
                        log(f"  FAILED: {e}")
                        res = {f"{wl}_error": str(e)[:500]}
                    short = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()
                             if not isinstance(v, list)}  # fmt: skip
                    log(f"  {short}")
                    for k, v in res.items():
                        raw[s].setdefault(k, []).append(v)
    finally:
        if cluster:
            cluster.stop()

    summary: dict[str, dict[str, Any]] = {}
    for s, metrics in raw.items():
        summary[s] = {}
        for k, vals in metrics.items():
            nums = [v for v in vals if isinstance(v, (int, float)) and v is not None]
            if k.endswith("_all") or k.endswith("_trace"):
                summary[s][k] = vals[0] if len(vals) == 1 else max(vals, key=lambda x: len(x or []))
            elif nums and len(nums) == len([v for v in vals if v is not None]):
                summary[s][k] = statistics.median(nums)
                summary[s][k + "__runs"] = nums
            else:
                summary[s][k] = vals[-1]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "elapsed_s": round(time.time() - started),
        "sizes": sz,
        "machine": machine(),
        "postgres": server.version() if not cluster else None,
        "configs": {
            s: {k: v for k, v in SYSTEMS[s].items() if k not in ("remaining_sql",)} for s in systems
        },
        "pinned": sorted(PINNED & set(systems)),
        "sweep_passes": SWEEP_PASSES,
        "versions": {s: versions(s) for s in systems},
        "runtime": {s: runtime(s) for s in systems},
        "private_cluster": cluster is not None,
        "load": {"median": statistics.median(loads), "max": max(loads)} if loads else None,
    }
    if cluster:
        base = cluster.start()
        server = Server(base)
        meta["postgres"] = server.version()
        meta["pg_settings"] = server.settings()
        cluster.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": summary}, indent=1))
    log(f"wrote {args.out} in {meta['elapsed_s']} s")
    if not args.no_report:
        dest = str(Path(args.out).resolve().parent)
        subprocess.run([sys.executable, str(BENCH / "report.py"), args.out, "--dest", dest],
                       check=False)  # fmt: skip


if __name__ == "__main__":
    main()
