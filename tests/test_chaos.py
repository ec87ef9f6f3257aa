"""Chaos: the faults of issue 6, against real PostgreSQL and real worker processes.

Every run is seeded and bounded in time. Sizes come from the environment, so ``make test`` runs
this module at a reduced size and ``make chaos`` (``CHAOS_FULL=1``) at the full one:

- ``CHAOS_SEED``: the seed of every random choice (which process to kill, when, which jobs
  retry); default 6.
- ``CHAOS_FULL=1``: the full sizes below instead of the reduced ones.
- ``CHAOS_JOBS`` (reduced 4,000, full 50,000): jobs of the SIGKILL run;
  ``CHAOS_KILLS`` (6, 60): the most processes it kills.
- ``CHAOS_FAULT_JOBS`` (1,500, 15,000): jobs of each restart and termination run.
- ``CHAOS_OUTAGE`` (3, 30): seconds the database is unreachable.
- ``CHAOS_REPORT``: a file to write the run's figures to, as JSON (docs/reliability.md quotes
  them).

The shared server at DATABASE_URL is never restarted: each test uses a scratch database of its
own and terminates only that database's backends; the restart test starts a private PostgreSQL 15
cluster and restarts that one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.faultproxy import fault_proxy
from tests.test_faults import Errors, Recorder, execute, query, scalar, wait_for
from tests.worker_process import JOB_TYPE, WorkerProcess

FULL = os.environ.get("CHAOS_FULL", "") not in ("", "0")


def _size(name: str, reduced: float, full: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else (full if FULL else reduced)


SEED = int(os.environ.get("CHAOS_SEED", "6"))
KILL_JOBS = int(_size("CHAOS_JOBS", 4_000, 50_000))
MAX_KILLS = int(_size("CHAOS_KILLS", 6, 60))
FAULT_JOBS = int(_size("CHAOS_FAULT_JOBS", 1_500, 15_000))
OUTAGE = _size("CHAOS_OUTAGE", 3.0, 30.0)

GROUPS = ("chaos_a", "chaos_b")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RETRY_SHARE = 0.05  # of the jobs fail once and are retried, so retries meet the faults too

# Per worker: how many handlers run at once and how many results may wait to be flushed. A killed
# process loses at most these, so they bound the re-runs a kill can cause (see below).
MAX_CONCURRENT = 4
MAX_BUFFERED = 50

FIGURES: dict[str, Any] = {"seed": SEED, "size": "full" if FULL else "reduced"}


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    """Write the figures of this run where CHAOS_REPORT says, and print them."""
    yield
    text = json.dumps(FIGURES, indent=2, sort_keys=True)
    print(f"\nchaos figures:\n{text}")
    path = os.environ.get("CHAOS_REPORT")
    if path:
        Path(path).write_text(text + "\n")


# -- the database under test -----------------------------------------------------------------


def prepare(url: str) -> None:
    """Migrate, register the groups and job type, and create the handlers' side-effect table."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for group in GROUPS:
            conn.execute("select pgxjob_register_group(%s)", (group,))
        conn.execute("select pgxjob_register_job_type(%s, %s)", (JOB_TYPE, GROUPS[0]))
        # No unique constraint: a handler that runs twice leaves two tokens.
        conn.execute(
            "create table chaos_runs ("
            " job_id bigint not null, pid int not null, token uuid not null,"
            " ran_at timestamptz not null)"
        )


@contextlib.contextmanager
def chaos_database() -> Iterator[str]:
    with scratch_database("pgxjob_chaos") as url:
        prepare(url)
        yield url


def schedule_jobs(url: str, count: int, rng: random.Random) -> dict[int, int]:
    """Schedule count ASAP jobs over both groups; return {job id: planned retries}."""
    planned: dict[int, int] = {}
    chunk = 1000
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            retries = [1 if rng.random() < RETRY_SHARE else 0 for _ in range(size)]
            params = [json.dumps({"retry": r}) if r else None for r in retries]
            group = GROUPS[(start // chunk) % len(GROUPS)]
            rows = conn.execute(
                "select pgxjob_schedule_many(%s, %s::json[], %s)", (JOB_TYPE, params, group)
            ).fetchall()
            planned.update((int(job_id), r) for (job_id,), r in zip(rows, retries, strict=True))
    return planned


def pending_ids(url: str) -> set[int]:
    rows = query(url, "select id from pgxjob_asap_jobs union all select id from pgxjob_run_at_jobs")
    return {int(job_id) for (job_id,) in rows}


def succeeded_count(url: str) -> int:
    return int(scalar(url, "select count(*) from pgxjob_job_runs where error is null"))


@dataclasses.dataclass
class Outcome:
    scheduled: int
    succeeded: int
    pending: int
    lost: int
    handler_reruns: int
    """Handler runs beyond one per succeeded job: the at-least-once re-runs."""


def check_outcome(url: str, planned: dict[int, int]) -> Outcome:
    """Every job has exactly one successful run, or none and is still pending; nothing lost.

    The run log of each finished job is exactly its planned failures (run numbers 1..n) then one
    success: no missing attempt, no second success, no foreign key. The side-effect table shows
    how often handlers really ran, which at-least-once allows to exceed one.
    """
    runs: dict[int, list[tuple[int, bool]]] = {}
    for job_id, run_number, ok in query(
        url,
        "select job_id, run_number, error is null from pgxjob_job_runs order by job_id, run_number",
    ):
        runs.setdefault(int(job_id), []).append((int(run_number), bool(ok)))
    unknown = set(runs) - set(planned)
    assert not unknown, f"run-log rows for jobs never scheduled: {sorted(unknown)[:10]}"

    pending = pending_ids(url)
    assert pending <= set(planned)
    wrong: dict[int, list[tuple[int, bool]]] = {}
    succeeded = 0
    for job_id, retries in planned.items():
        log = runs.get(job_id, [])
        successes = sum(ok for _, ok in log)
        if job_id in pending:
            if successes:
                wrong[job_id] = log
            continue
        expected = [(n, False) for n in range(1, retries + 1)] + [(retries + 1, True)]
        if log != expected:
            wrong[job_id] = log
        succeeded += successes == 1
    assert not wrong, f"{len(wrong)} jobs with a wrong run log, e.g. {list(wrong.items())[:5]}"
    lost = len(planned) - succeeded - len(pending)

    handler_runs = dict(
        query(url, "select job_id, count(distinct token) from chaos_runs group by job_id")
    )
    never = [j for j in planned if j not in pending and not handler_runs.get(j)]
    assert not never, f"jobs logged as successful whose handler never ran: {never[:10]}"
    reruns = sum(
        int(n) - 1 for job_id, n in handler_runs.items() if int(job_id) not in pending
    ) + sum(int(n) for job_id, n in handler_runs.items() if int(job_id) in pending)
    return Outcome(len(planned), succeeded, len(pending), lost, reruns)


# -- worker processes ------------------------------------------------------------------------


def chaos_options(*, dead_after: float, job_delay: float = 0.0) -> list[str]:
    options = [
        "--mode=chaos",
        *(f"--group={group}" for group in GROUPS),
        f"--max-concurrent-jobs={MAX_CONCURRENT}",
        "--max-prefetched-jobs=100",
        f"--max-buffered-job-results={MAX_BUFFERED}",
        "--max-buffered-job-result-age=0.05",
        # Only NOTIFY, the listener's reconnection and timed wake-ups can wake an idle worker.
        "--poll-interval=60",
        "--min-heartbeat-delay=0.05",
        "--heartbeat-delay-jitter=0.05",
        f"--worker-dead-without-heartbeat={dead_after}",
        "--close-timeout=30",
    ]
    if job_delay:
        options.append(f"--job-delay={job_delay}")
    return options


class Fleet:
    """A fixed number of worker process slots; a killed process is replaced in its slot."""

    def __init__(self, url: str, slots: int, options: list[str]) -> None:
        self.url = url
        self.options = options
        self.processes: list[WorkerProcess] = []
        self.every: list[WorkerProcess] = []
        self.ids: dict[int, list[int]] = {}
        for _ in range(slots):
            self.processes.append(self._spawn())

    def _spawn(self) -> WorkerProcess:
        process = WorkerProcess(self.url, *self.options)
        self.every.append(process)
        return process

    def worker_ids(self, process: WorkerProcess, timeout: float = 30) -> list[int]:
        if process.pid not in self.ids:
            self.ids[process.pid] = [int(w) for w in process.expect("ready", timeout)]
        return self.ids[process.pid]

    def live_worker_ids(self) -> set[int]:
        return {w for process in self.processes for w in self.worker_ids(process)}

    def kill_and_replace(self, slot: int) -> None:
        self.processes[slot].kill()
        self.processes[slot] = self._spawn()

    def stop(self) -> list[int]:
        """SIGTERM every live process; each must shut down cleanly (exit code 0)."""
        counts = [process.stop(timeout=60) for process in self.processes]
        codes = [process.proc.returncode for process in self.processes]
        assert codes == [0] * len(codes), f"unclean shutdowns: {codes}"
        return counts

    def close(self) -> None:
        for process in self.every:
            process.kill()

    def stderr_lines(self, needle: str) -> list[str]:
        return [line for p in self.every for line in p.stderr if needle in line]

    def reaped_while_alive(self) -> int:
        return len(self.stderr_lines("was reaped while alive"))


@contextlib.contextmanager
def fleet(url: str, slots: int, options: list[str]) -> Iterator[Fleet]:
    workers = Fleet(url, slots, options)
    try:
        yield workers
    finally:
        workers.close()


def assert_no_run_log_conflicts(workers: Fleet) -> None:
    # record_job_results skips a run recorded twice (on conflict do nothing); a key conflict
    # that escaped it would reach handle_error as a UniqueViolation.
    conflicts = workers.stderr_lines("UniqueViolation") + workers.stderr_lines("duplicate key")
    assert not conflicts, conflicts[:5]


def owned_by_others(url: str, live: set[int]) -> int:
    return int(
        scalar(
            url,
            "select count(*) from (select worker_id from pgxjob_asap_jobs"
            " union all select worker_id from pgxjob_run_at_jobs) j"
            " where worker_id is not null and worker_id <> all (%s)",
            (list(live),),
        )
    )


def registered_workers(url: str) -> set[int]:
    return {int(w) for (w,) in query(url, "select id from pgxjob_workers")}


# -- 1. SIGKILL ------------------------------------------------------------------------------


def test_sigkilled_worker_processes_lose_no_job_and_run_none_successfully_twice() -> None:
    """Four processes, two groups, KILL_JOBS jobs, processes SIGKILLed at random moments."""
    rng = random.Random(SEED)
    late_rng = random.Random(SEED + 1)
    dead_after = 1.0
    began = time.monotonic()
    with chaos_database() as url, fleet(url, 4, chaos_options(dead_after=dead_after)) as workers:
        for process in workers.processes:
            workers.worker_ids(process)
        planned = schedule_jobs(url, KILL_JOBS // 2, rng)
        # The other half arrives while processes die, and reaches the workers through NOTIFY.
        late: dict[int, int] = {}
        producer = threading.Thread(
            target=lambda: late.update(schedule_jobs(url, KILL_JOBS - KILL_JOBS // 2, late_rng)),
            daemon=True,
        )
        producer.start()

        kills = 0
        budget = time.monotonic() + (600 if FULL else 40)
        while kills < MAX_KILLS and time.monotonic() < budget:
            time.sleep(rng.uniform(0.1, 1.2))
            if not producer.is_alive() and len(pending_ids(url)) < KILL_JOBS // 20:
                break
            workers.kill_and_replace(rng.randrange(len(workers.processes)))
            kills += 1
        producer.join(60)
        planned.update(late)
        assert len(planned) == KILL_JOBS

        # Survivors and replacements reap the dead: only live workers stay registered, and
        # nothing is owned by anyone else.
        live = workers.live_worker_ids()
        wait_for(lambda: registered_workers(url) == live, 20, "the dead to be reaped")
        assert owned_by_others(url, live) == 0
        wait_for(lambda: not pending_ids(url), 300 if FULL else 60, "every job to finish")
        workers.stop()
        assert registered_workers(url) == set()
        assert_no_run_log_conflicts(workers)
        reaped_alive = workers.reaped_while_alive()
        outcome = check_outcome(url, planned)

    assert kills > 0
    assert (outcome.lost, outcome.pending) == (0, 0)
    # At-least-once: a process killed after a handler ran but before its result was recorded
    # re-runs that job elsewhere. Per worker, at most MAX_CONCURRENT handlers were running and
    # fewer than 2 * MAX_BUFFERED results were unrecorded (a batch being flushed and the next one
    # filling), and each process has one worker per group. A worker reaped while alive (a stall
    # longer than dead_after) can re-run as many.
    bound = (kills + reaped_alive) * len(GROUPS) * (MAX_CONCURRENT + 2 * MAX_BUFFERED)
    assert outcome.handler_reruns <= bound
    FIGURES["sigkill"] = {
        "jobs": outcome.scheduled,
        "processes": 4,
        "groups": len(GROUPS),
        "kills": kills,
        "processes_started": len(workers.every),
        "reaped_while_alive": reaped_alive,
        "succeeded": outcome.succeeded,
        "jobs_lost": outcome.lost,
        "handler_reruns": outcome.handler_reruns,
        "rerun_bound": bound,
        "seconds": round(time.monotonic() - began, 1),
    }


# -- 2 and 3. Restarts and terminated backends -------------------------------------------------


def run_through_faults(
    url: str, fault: Callable[[], None], *, faults: int, label: str
) -> dict[str, Any]:
    """FAULT_JOBS jobs in chunks over two processes; fault() strikes mid-chunk, faults times.

    Each chunk is scheduled after the previous fault, so that the last one can only be picked up
    through a listener that came back (the workers poll once a minute). The workers' dead_after
    (10 s) outlasts each fault, so no live worker is reaped and no handler should run twice.
    """
    rng = random.Random(SEED)
    began = time.monotonic()
    chunks = faults + 1
    planned: dict[int, int] = {}
    options = chaos_options(dead_after=10.0, job_delay=0.002)
    with fleet(url, 2, options) as workers:
        before = {w for process in workers.processes for w in workers.worker_ids(process)}
        for n in range(chunks):
            planned.update(schedule_jobs(url, FAULT_JOBS // chunks, rng))
            if n == faults:
                break
            # Strike while the chunk is running: handlers in flight, results buffered.
            target = len(planned) - FAULT_JOBS // chunks // 2
            wait_for(lambda t=target: succeeded_count(url) >= t, 60, "the chunk to be half done")
            fault()
        last_scheduled = time.monotonic()
        wait_for(lambda: not pending_ids(url), 120 if FULL else 45, "every job to finish")
        drained_in = time.monotonic() - last_scheduled
        # The workers reconnected by themselves and kept their registrations.
        assert registered_workers(url) == before
        workers.stop()
        assert registered_workers(url) == set()
        assert_no_run_log_conflicts(workers)
        reaped_alive = workers.reaped_while_alive()
        reported = len(workers.stderr_lines("handle_error"))
        # Each loop saw the fault and recovered from it by itself.
        flush_failures = len(workers.stderr_lines("-flush]"))
        listener_failures = len(workers.stderr_lines("[pgxjob-listener]"))
        outcome = check_outcome(url, planned)

    assert (outcome.lost, outcome.pending) == (0, 0)
    assert reaped_alive == 0
    # Buffered results were retried, not dropped, and no job was fetched twice: every handler
    # ran once.
    assert outcome.handler_reruns == 0
    # Well under the one-minute poll: the listener (or its reconnection) woke the workers.
    assert drained_in < 30
    assert reported > 0, "the faults reached no handle_error: the test proved nothing"
    # Both processes' listeners lost their connection at each fault and came back.
    assert listener_failures >= 2 * faults
    # A flush that met the fault either failed and was retried, or waited in the pool's check
    # for a good connection; the jobs were recorded either way (above). Count what happened.
    figures = {
        "jobs": outcome.scheduled,
        label: faults,
        "succeeded": outcome.succeeded,
        "jobs_lost": outcome.lost,
        "handler_reruns": outcome.handler_reruns,
        "errors_reported": reported,
        "flush_failures_retried": flush_failures,
        "listener_reconnections": listener_failures,
        "seconds": round(time.monotonic() - began, 1),
    }
    return figures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A throwaway PostgreSQL 15 cluster of this test's own, which it may restart at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        # initdb refuses to run as root; the cluster then belongs to the postgres user.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, *command: str) -> None:
        subprocess.run([*self.as_owner, *command], check=True, capture_output=True, timeout=120)

    def pg_ctl(self, *args: str) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def start(self) -> None:
        if self.as_owner:
            shutil.chown(self.root, "postgres", "postgres")
        self.run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=100"
        )
        self.pg_ctl("-l", str(self.root / "log"), "-o", options, "start")

    def restart(self) -> None:
        """pg_ctl restart -m fast: sessions are terminated and the server comes back."""
        # -l again: without it the new postmaster would write to our pipe and hold it open.
        self.pg_ctl("-l", str(self.root / "log"), "-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.pg_ctl("-m", "immediate", "stop")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    missing = [name for name in ("initdb", "pg_ctl") if not (PG_BIN / name).exists()]
    if missing:
        pytest.skip(f"PostgreSQL 15 binaries missing ({', '.join(missing)} in {PG_BIN})")
    root = Path(tempfile.mkdtemp(prefix="pgxjob-chaos-"))
    cluster = PrivateCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_restarted_twice_mid_run_loses_and_doubles_nothing(
    private_cluster: PrivateCluster,
) -> None:
    execute(private_cluster.conninfo(), "create database chaos")
    # As on every scratch database: sessions find pgxjob's private tables by name.
    execute(
        private_cluster.conninfo(),
        'alter database chaos set search_path = "$user", public, pgxjob_public',
    )
    url = private_cluster.conninfo("chaos")
    prepare(url)
    restarts: list[float] = []

    def restart() -> None:
        began = time.monotonic()
        private_cluster.restart()
        restarts.append(round(time.monotonic() - began, 2))

    figures = run_through_faults(url, restart, faults=2, label="restarts")
    assert len(restarts) == 2
    FIGURES["restart"] = {**figures, "restart_seconds": restarts}


def test_every_backend_terminated_mid_run_loses_and_doubles_nothing() -> None:
    terminated: list[int] = []

    with chaos_database() as url:

        def terminate_all() -> None:
            # Only this test's scratch database: the server is shared.
            (count,) = query(
                url,
                "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                " where datname = current_database() and pid <> pg_backend_pid()",
            )[0]
            terminated.append(int(count))

        figures = run_through_faults(url, terminate_all, faults=3, label="terminations")
    # Both processes' fetch, flush, heartbeat and listener connections, and the handlers' own.
    assert all(count >= 4 for count in terminated), terminated
    FIGURES["terminate"] = {**figures, "backends_terminated": terminated}


# -- 4. An outage ------------------------------------------------------------------------------


class TimedErrors(Errors):
    """A handle_error that also notes when, and on which thread, each error came."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[tuple[float, str]] = []

    def __call__(self, err: BaseException) -> None:
        with self.lock:
            self.errors.append(err)
            self.at.append((time.monotonic(), threading.current_thread().name))

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, name) for t, name in self.at if start <= t <= end]


def test_database_unreachable_workers_keep_state_report_with_backoff_and_resume() -> None:
    count = 400
    recorder = Recorder(delay=0.005)
    errors = TimedErrors()
    with chaos_database() as url, fault_proxy(url) as proxy:
        scheduler = pgxjob.Scheduler(
            proxy.conninfo,
            job_groups=GROUPS,
            job_types=[pgxjob.JobTypeConfig(JOB_TYPE, recorder, default_group_name=GROUPS[0])],
            handle_error=errors,
        )
        try:
            workers = [
                scheduler.start_worker(
                    group_name=group,
                    poll_interval=60,
                    max_concurrent_jobs=2,
                    max_prefetched_jobs=1000,
                    max_buffered_job_results=20,
                    max_buffered_job_result_age=0.05,
                    # Millisecond heartbeats, but a dead_after that outlasts the outage: the
                    # workers must come back as themselves.
                    min_heartbeat_delay=0.05,
                    heartbeat_delay_jitter=0.05,
                    worker_dead_without_heartbeat=OUTAGE + 30,
                )
                for group in GROUPS
            ]
            assert all(worker.startup_complete.wait(10) for worker in workers)
            ids = [worker.id for worker in workers]
            threads = {t.name for t in threading.enumerate() if t.name.startswith("pgxjob")}
            planned = schedule_jobs(url, 2 * count, random.Random(SEED))
            wait_for(lambda: succeeded_count(url) >= 50, 10, "some results to be recorded")

            began = time.monotonic()
            assert proxy.outage() > 0
            # Scheduled straight on the server during the outage: they run once it is over.
            planned.update(schedule_jobs(url, 100, random.Random(SEED + 1)))
            ran_before = len(recorder.snapshot())
            time.sleep(OUTAGE)
            ended = time.monotonic()
            ran_during = len(recorder.snapshot()) - ran_before
            recorded_during = succeeded_count(url)
            during = errors.between(began, ended)
            proxy.resume()

            wait_for(lambda: not pending_ids(url), 60, "every job to finish after the outage")
            resumed_in = time.monotonic() - ended
            assert [worker.id for worker in workers] == ids, "a worker registered again"
            assert all(worker.shutdown(timeout=10) for worker in workers)
        finally:
            scheduler.close(timeout=10)
        outcome_runs = dict(
            query(
                url, "select job_id, count(*) from pgxjob_job_runs where error is null group by 1"
            )
        )
        assert registered_workers(url) == set()

    # The workers kept their state: prefetched jobs went on running during the outage, and
    # their buffered results were recorded afterwards, once each.
    assert ran_during > 0
    assert recorded_during < len(planned)
    assert outcome_runs == {job_id: 1 for job_id in planned}
    assert Counter(recorder.snapshot()) == Counter(dict.fromkeys(planned, 1))
    # Reported, but not flooded: well under one report per 100 ms for each thread that talks to
    # the database (fetch, flush and heartbeat of each worker, the listener).
    reporting = 3 * len(workers) + 1
    limit = reporting * OUTAGE / 0.1 / 4
    assert 0 < len(during) < limit, (len(during), Counter(name for _, name in during))
    per_thread = Counter(name for _, name in during)
    # Each loop backs off, from 50 ms doubling to 5 s (or waits out the pool's 5 s timeout).
    most = 2 + math.log2(OUTAGE / 0.05) + OUTAGE / 5
    assert max(per_thread.values()) <= most, per_thread
    listener = [t for t, name in during if name == "pgxjob-listener"]
    gaps = [b - a for a, b in itertools.pairwise(listener)]
    assert len(gaps) >= 2
    assert all(later >= 0.9 * earlier for earlier, later in itertools.pairwise(gaps)), gaps
    FIGURES["outage"] = {
        "outage_seconds": OUTAGE,
        "jobs": len(planned),
        "reports_during_outage": len(during),
        "report_limit": int(limit),
        "reports_per_thread": dict(per_thread),
        "threads": sorted(threads),
        "jobs_run_during_outage": ran_during,
        "resumed_and_drained_in_seconds": round(resumed_in, 2),
        "jobs_lost": 0,
    }


# -- 5. Handlers that hang or misbehave ---------------------------------------------------------


def test_hung_handler_shutdown_times_out_process_exits_and_job_runs_elsewhere() -> None:
    with chaos_database() as url:
        job_ids = sorted(schedule_jobs(url, 3, random.Random(SEED)))
        with WorkerProcess(
            url,
            "--mode=hang",
            f"--group={GROUPS[0]}",
            "--max-concurrent-jobs=1",
            "--close-timeout=1",
            "--min-heartbeat-delay=0.05",
            "--heartbeat-delay-jitter=0.05",
            "--worker-dead-without-heartbeat=0.5",
        ) as hung:
            (hung_id,) = (int(w) for w in hung.expect("ready", 30))
            (stuck,) = (int(w) for w in hung.expect("started", 10))
            began = time.monotonic()
            hung.stop(timeout=10)  # SIGTERM: close(timeout=1) returns, the process exits
            exited_in = time.monotonic() - began
            assert hung.proc.returncode == 2, "close() should report the unclean shutdown"
        assert exited_in < 5
        # The jobs it owned (the hung one and two prefetched) are released once it is reaped.
        recorder = Recorder()
        scheduler = pgxjob.Scheduler(
            url,
            job_groups=GROUPS,
            job_types=[pgxjob.JobTypeConfig(JOB_TYPE, recorder, default_group_name=GROUPS[0])],
            handle_error=Errors(),
        )
        try:
            # Its heartbeats reap the hung process's worker within dead_after (0.5 s).
            worker = scheduler.start_worker(
                group_name=GROUPS[0],
                poll_interval=60,
                max_buffered_job_result_age=0.02,
                min_heartbeat_delay=0.05,
                heartbeat_delay_jitter=0.05,
                worker_dead_without_heartbeat=5,
            )
            wait_for(lambda: sorted(recorder.snapshot()) == job_ids, 10, "the jobs to run again")
            wait_for(lambda: not pending_ids(url), 10, "their results to be recorded")
            assert worker.shutdown(timeout=10)
        finally:
            scheduler.close(timeout=10)
        assert stuck in job_ids
        assert hung_id not in registered_workers(url)
        runs = query(url, "select job_id, error from pgxjob_job_runs order by job_id")
        assert runs == [(job_id, None) for job_id in job_ids]


def test_hung_handler_in_process_shutdown_returns_false_on_time() -> None:
    release = threading.Event()

    def hang(job: pgxjob.Job) -> None:
        release.wait()  # ignores job.shutdown_requested

    with chaos_database() as url:
        scheduler = pgxjob.Scheduler(url, job_types=[pgxjob.JobTypeConfig(JOB_TYPE, hang)])
        try:
            worker = scheduler.start_worker(poll_interval=60)
            assert worker.startup_complete.wait(10)
            execute(url, "select pgxjob_schedule(%s, null, 'default')", (JOB_TYPE,))
            wait_for(lambda: owned_by_others(url, set()) == 1, 10, "the job to be claimed")
            time.sleep(0.1)
            began = time.monotonic()
            assert worker.shutdown(timeout=0.5) is False
            assert time.monotonic() - began < 1.0
            # The database is consistent: the job is still owned by the (still registered)
            # worker, not lost and not run elsewhere.
            assert len(pending_ids(url)) == 1
            assert registered_workers(url) == {worker.id}
            release.set()
            assert worker.shutdown(timeout=10)
        finally:
            release.set()
            scheduler.close(timeout=10)
        assert not pending_ids(url)
        assert scalar(url, "select count(*) from pgxjob_job_runs where error is null") == 1


def test_handler_raising_base_exceptions_or_returning_garbage_is_recorded_worker_goes_on() -> None:
    # SystemExit and KeyboardInterrupt stop the worker instead (tests/test_shutdown.py).
    behaviours: dict[str, Callable[[], object]] = {
        "generator_exit": lambda: (_ for _ in ()).throw(GeneratorExit()),
        "garbage": lambda: {"not": "None"},
        "fine": lambda: None,
    }

    def handler(job: pgxjob.Job) -> None:
        assert job.params is not None
        behaviours[json.loads(job.params)["do"]]()

    with chaos_database() as url:
        scheduler = pgxjob.Scheduler(
            url, job_types=[pgxjob.JobTypeConfig(JOB_TYPE, handler)], handle_error=Errors()
        )
        try:
            # One handler thread: each job runs on the thread the previous one raised on.
            worker = scheduler.start_worker(
                poll_interval=60, max_concurrent_jobs=1, max_buffered_job_result_age=0.02
            )
            assert worker.startup_complete.wait(10)
            ids = {
                do: scheduler.schedule(None, JOB_TYPE, {"do": do}, group_name="default")
                for do in behaviours
            }
            wait_for(lambda: not pending_ids(url), 10, "every job to be recorded")
            runner = f"{worker.name}-run-1"
            assert any(t.name == runner for t in threading.enumerate())
            # And it still takes work.
            last = scheduler.schedule(None, JOB_TYPE, {"do": "fine"}, group_name="default")
            wait_for(lambda: not pending_ids(url), 10, "a job after the misbehaving ones")
            assert worker.shutdown(timeout=10)
        finally:
            scheduler.close(timeout=10)
        errors = dict(query(url, "select job_id, error from pgxjob_job_runs"))
    assert errors.pop(last) is None
    # The summary line; the traceback follows it.
    summaries = {
        do: None if errors[job_id] is None else errors[job_id].partition("\n\n")[0]
        for do, job_id in ids.items()
    }
    assert summaries == {
        "generator_exit": "GeneratorExit",
        # A handler's return value carries no meaning: returning means success.
        "garbage": None,
        "fine": None,
    }


# -- 6. Clock skew ---------------------------------------------------------------------------


def test_due_times_are_compared_on_the_database_clock_passed_as_now() -> None:
    with chaos_database() as url, psycopg.connect(url, autocommit=True) as conn:
        (worker_id,) = conn.execute(
            "select pgxjob_register_worker('default', interval '1 day')"
        ).fetchone() or (None,)
        (db_now,) = conn.execute("select now()").fetchone() or (None,)
        conn.execute(
            "select pgxjob_schedule(%s, null, 'default', %s::timestamptz + interval '1 hour')",
            (JOB_TYPE, db_now),
        )

        def fetch(now_offset: str) -> int:
            rows = conn.execute(
                "select id from pgxjob_fetch_jobs(%s, 10, %s::timestamptz + %s::interval)",
                (worker_id, db_now, now_offset),
            ).fetchall()
            return len(rows)

        def next_run_in(now_offset: str) -> Any:
            return conn.execute(
                "select pgxjob_next_run_in(%s, %s::timestamptz + %s::interval)",
                (worker_id, db_now, now_offset),
            ).fetchone()

        # An hour early or a minute early: not due, and the wake-up is computed from "now".
        assert fetch("0") == 0
        assert fetch("59 minutes") == 0
        assert next_run_in("0") == (dt.timedelta(hours=1),)
        assert next_run_in("59 minutes") == (dt.timedelta(minutes=1),)
        assert next_run_in("2 hours") == (dt.timedelta(hours=-1),)
        # On time: due.
        assert fetch("1 hour") == 1


@pytest.mark.parametrize("offset_hours", [1, -1])
def test_worker_on_a_host_with_a_skewed_clock_runs_a_timed_job_on_database_time(
    offset_hours: int,
) -> None:
    offset = offset_hours * 3600.0
    with chaos_database() as url:
        with WorkerProcess(
            url,
            "--mode=chaos",
            f"--group={GROUPS[0]}",
            "--poll-interval=60",
            f"--clock-offset={offset}",
        ) as skewed:
            (clock,) = skewed.expect("clock", 30)
            # The test would prove nothing if the process's clock were right.
            assert abs(float(clock) - (time.time() + offset)) < 60
            skewed.expect("ready", 30)
            (job_id,) = query(
                url,
                "select pgxjob_schedule(%s, null, %s, now() + interval '1.5 seconds')",
                (JOB_TYPE, GROUPS[0]),
            )[0]
            wait_for(lambda: not pending_ids(url), 10, "the timed job to run")
            skewed.stop()
        ((late,),) = query(
            url,
            "select r.ran_at - j.run_at from chaos_runs r join pgxjob_job_runs j using (job_id)"
            " where job_id = %s",
            (job_id,),
        )
    # Not an hour early (clock ahead) nor an hour late (clock behind): on time, by the database.
    assert dt.timedelta(0) <= late < dt.timedelta(seconds=1), late
    FIGURES.setdefault("clock_skew", {})[f"{offset_hours:+d}h"] = {
        "late_seconds": round(late.total_seconds(), 3)
    }


# -- A lost reply --------------------------------------------------------------------------------


def test_jobs_claimed_by_a_fetch_whose_reply_was_lost_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops after the server committed the claim but before the rows arrive.

    A restart, a terminated backend or a network cut can land in that window; here the window
    is forced by failing the call after the real fetch returned.
    """
    from pgxjob import queries

    real_fetch = queries.fetch_jobs
    lost: list[int] = []

    def fetch_then_lose_reply(conn: psycopg.Connection[Any], worker_id: int, limit: int) -> Any:
        rows = real_fetch(conn, worker_id, limit)
        if rows and not lost:
            lost.extend(row.id for row in rows)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return rows

    monkeypatch.setattr(queries, "fetch_jobs", fetch_then_lose_reply)
    recorder = Recorder()
    with chaos_database() as url:
        scheduler = pgxjob.Scheduler(
            url, job_types=[pgxjob.JobTypeConfig(JOB_TYPE, recorder)], handle_error=Errors()
        )
        try:
            worker = scheduler.start_worker(
                poll_interval=0.5,
                max_buffered_job_result_age=0.02,
                min_heartbeat_delay=0.05,
                heartbeat_delay_jitter=0.05,
                worker_dead_without_heartbeat=2,
            )
            assert worker.startup_complete.wait(10)
            (job_id,) = query(url, "select pgxjob_schedule(%s)", (JOB_TYPE,))[0]
            wait_for(lambda: lost == [job_id], 5, "the claim whose reply is lost")
            # The worker lives on and polls twice a second: the job must not wait for it to die.
            wait_for(lambda: recorder.snapshot() == [job_id], 5, "the stranded job to run")
        finally:
            scheduler.close(timeout=10)
