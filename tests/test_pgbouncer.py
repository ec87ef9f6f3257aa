"""pgxjob through a real PgBouncer in transaction pooling mode (tests/pgbouncer.py).

Workers, schedulers, the migrator and the command line talk to the database through PgBouncer,
whose few server sessions are handed out in turn, so consecutive transactions of one client
land on different server sessions. Nothing may rely on session state: no prepared statement,
no session-level SET, no session advisory lock. LISTEN goes over a direct connection
(``listen_conninfo``, ``--listen-database-url``) or is off (``listen=False``, ``--no-listen``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgxjob
from pgxjob.migrations import latest_version, migrate
from tests.dbserver import admin_conninfo, scratch_database
from tests.pgbouncer import PgBouncer, pgbouncer_binary
from tests.test_chaos import GROUPS, check_outcome, pending_ids, prepare, schedule_jobs
from tests.test_faults import Errors, Recorder, query, scalar, wait_for
from tests.worker_process import JOB_TYPE, WorkerProcess

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)

FAST: dict[str, Any] = {
    "max_buffered_job_result_age": 0.02,
    "min_heartbeat_delay": 0.05,
    "heartbeat_delay_jitter": 0.05,
}


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    bouncer = PgBouncer(admin_conninfo()[0])
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def direct(bouncer: PgBouncer) -> Iterator[str]:
    """A scratch database prepared for the chaos worker processes (groups, type, chaos_runs).

    Its PgBouncer pool is filled first, so that transactions are spread over every session.
    """
    with scratch_database("pgxjob_bouncer") as url:
        prepare(url)
        warm(bouncer, url)
        yield url


def bounced(bouncer: PgBouncer, url: str) -> str:
    return bouncer.through(url)


def warm(bouncer: PgBouncer, url: str) -> None:
    """Open every server session of the database's pool (round robin then uses them all)."""
    with held_transactions(bounced(bouncer, url), bouncer.pool_size):
        pass


@contextlib.contextmanager
def held_transactions(url: str, count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """count clients, each in an open transaction: each holds a server session of its own."""
    conns = [psycopg.connect(url, prepare_threshold=None) for _ in range(count)]
    try:
        for conn in conns:
            conn.execute("select 1")
        yield conns
    finally:
        for conn in conns:
            # Ended first: PgBouncer closes a server session whose client left mid-transaction.
            conn.rollback()
            conn.close()


def server_sessions(bouncer: PgBouncer, url: str) -> list[tuple[int, str, int, int]]:
    """(backend pid, search_path, prepared statements, advisory locks) of each pooled session."""
    with held_transactions(url, bouncer.pool_size) as conns:
        return [
            tuple(  # type: ignore[misc]
                conn.execute(
                    "select pg_backend_pid(), current_setting('search_path'),"
                    " (select count(*) from pg_prepared_statements)::int,"
                    " (select count(*) from pg_locks where locktype = 'advisory'"
                    "  and pid = pg_backend_pid())::int"
                ).fetchone()
                or ()
            )
            for conn in conns
        ]


# -- the pooler really pools ---------------------------------------------------------------------


def test_pgbouncer_in_transaction_mode_breaks_a_client_that_relies_on_its_session(
    bouncer: PgBouncer, direct: str
) -> None:
    """The control: what the rest of this module avoids does fail through this PgBouncer."""
    url = bounced(bouncer, direct)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        pids = {conn.execute("select pg_backend_pid()").fetchone() for _ in range(12)}
    assert len(pids) > 1, "one client's transactions should land on several server sessions"
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn,
        pytest.raises(
            (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)
        ),
    ):
        # Prepared in one server session, executed in the next, which does not have it.
        for n in range(12):
            conn.execute("select %s::int", (n,))


# -- migrations -----------------------------------------------------------------------------------


def test_migrate_through_pgbouncer_leaves_no_session_state_behind(bouncer: PgBouncer) -> None:
    with scratch_database("pgxjob_bouncer_mig") as direct_url:
        url = bounced(bouncer, direct_url)
        warm(bouncer, direct_url)
        before = {row[1] for row in server_sessions(bouncer, url)}
        applied = migrate(url)
        assert applied == list(range(1, latest_version() + 1))
        assert migrate(url) == []
        sessions = server_sessions(bouncer, url)
        # Every pooled server session still has the search_path it had (the migrations set one
        # for the session while they run), no prepared statement and no advisory lock.
        assert {row[1] for row in sessions} == before
        assert [row[2:] for row in sessions] == [(0, 0)] * len(sessions)
        with psycopg.connect(direct_url, autocommit=True) as conn:
            (version,) = conn.execute(
                "select max(version) from public.pgxjob_schema_migrations"
            ).fetchone() or (None,)
        assert version == latest_version()


# -- scheduling and running jobs in process ---------------------------------------------------


@contextlib.contextmanager
def bounced_scheduler(
    url: str, handler: Any, errors: Errors, **options: Any
) -> Iterator[pgxjob.Scheduler]:
    scheduler = pgxjob.Scheduler(
        url,
        job_groups=GROUPS,
        job_types=[pgxjob.JobTypeConfig(JOB_TYPE, handler, default_group_name=GROUPS[0])],
        handle_error=errors,
        **options,
    )
    try:
        yield scheduler
    finally:
        scheduler.close(timeout=10)


def test_schedule_in_the_callers_transaction_through_pgbouncer_commits_or_rolls_back_with_it(
    bouncer: PgBouncer, direct: str
) -> None:
    url = bounced(bouncer, direct)
    recorder = Recorder()
    errors = Errors()
    with bounced_scheduler(url, recorder, errors, listen_conninfo=direct) as scheduler:
        # A minute's poll: only the NOTIFY heard on the direct connection wakes the worker.
        worker = scheduler.start_worker(group_name=GROUPS[0], poll_interval=60, **FAST)
        assert worker.startup_complete.wait(10)
        with pytest.raises(RuntimeError, match="before start_worker"):
            scheduler.listen_conninfo = url
        wait_for(
            lambda: scheduler._listener is not None and scheduler._listener.connected.is_set(),
            10,
            "the listener",
        )
        with psycopg.connect(url, prepare_threshold=None) as conn:
            with contextlib.suppress(RuntimeError), conn.transaction():
                scheduler.schedule(conn, JOB_TYPE, {"n": 1})
                raise RuntimeError("the caller's transaction rolls back")
            with conn.transaction():
                conn.execute("create table bouncer_orders (id int)")
                kept = scheduler.schedule(conn, JOB_TYPE, {"n": 2})
                conn.execute("insert into bouncer_orders values (2)")
                # Not visible (nor notified) before the commit.
                assert pending_ids(direct) == set()
            conn.commit()
        wait_for(lambda: recorder.snapshot() == [kept], 10, "the committed job to run")
        wait_for(lambda: not pending_ids(direct), 10, "its result")
        assert worker.shutdown(timeout=10)
    assert errors.snapshot() == []
    assert query(direct, "select job_id, error from pgxjob_job_runs") == [(kept, None)]


def test_timed_jobs_and_retries_through_pgbouncer_with_and_without_listen(
    bouncer: PgBouncer, direct: str
) -> None:
    url = bounced(bouncer, direct)
    ran: dict[int, list[float]] = {}
    lock = threading.Lock()

    def handler(job: pgxjob.Job) -> None:
        with lock:
            ran.setdefault(job.id, []).append(time.time())
        if job.error_count < 2:
            raise pgxjob.ErrorWithRetry(
                "transient", backoff_max_retries=3, backoff_base_delay=dt.timedelta(seconds=0.2)
            )

    errors = Errors()
    with (
        bounced_scheduler(url, handler, errors, listen_conninfo=direct) as listening,
        bounced_scheduler(url, handler, errors) as polling,
    ):
        workers = [
            listening.start_worker(group_name=GROUPS[0], poll_interval=60, **FAST),
            polling.start_worker(group_name=GROUPS[1], poll_interval=0.3, listen=False, **FAST),
        ]
        assert all(worker.startup_complete.wait(10) for worker in workers)
        assert polling._listener is None
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        ids = [
            listening.schedule(None, JOB_TYPE, None, group_name=group, run_at=due)
            for group in GROUPS
        ]
        wait_for(lambda: not pending_ids(direct), 20, "both timed jobs and their retries")
        assert all(worker.shutdown(timeout=10) for worker in workers)
    assert errors.snapshot() == []
    assert sorted(ran) == sorted(ids)
    # Each ran on its due time (never before it, by the database's clock), then twice more.
    for job_id in ids:
        assert len(ran[job_id]) == 3
        assert ran[job_id][0] >= due.timestamp() - 0.05
    runs = query(
        direct,
        "select job_id, run_number, error is null from pgxjob_job_runs order by job_id, run_number",
    )
    assert runs == [(j, n, n == 3) for j in sorted(ids) for n in (1, 2, 3)]


def test_a_listen_conninfo_to_another_database_is_reported_not_silently_deaf(
    bouncer: PgBouncer, direct: str
) -> None:
    url = bounced(bouncer, direct)
    errors = Errors()
    with (
        scratch_database("pgxjob_bouncer_other") as elsewhere,
        bounced_scheduler(url, Recorder(), errors, listen_conninfo=elsewhere) as scheduler,
    ):
        worker = scheduler.start_worker(group_name=GROUPS[0], poll_interval=0.3, **FAST)
        assert worker.startup_complete.wait(10)
        wait_for(lambda: errors.snapshot(), 10, "the listener's report")
        found = errors.snapshot()[0]
        assert isinstance(found, pgxjob.ListenConninfoError)
        assert "not the scheduler's database" in str(found)
        # Polling still runs the jobs.
        job_id = scheduler.schedule(None, JOB_TYPE, None, group_name=GROUPS[0])
        wait_for(lambda: not pending_ids(direct), 10, "the job, found by polling")
        assert worker.shutdown(timeout=10)
    assert scalar(direct, "select count(*) from pgxjob_job_runs where job_id = %s", (job_id,))


def test_bad_listen_conninfo_is_refused_when_the_scheduler_is_made() -> None:
    with pytest.raises(ValueError, match="listen_conninfo"):
        pgxjob.Scheduler("postgresql://x@127.0.0.1/db", listen_conninfo="host=a port")
    with pytest.raises(ValueError, match="listen_conninfo"):
        pgxjob.Scheduler("postgresql://x@127.0.0.1/db", listen_conninfo="  ")
    with pytest.raises(ValueError, match="prepare_threshold"):
        pgxjob.Scheduler("postgresql://x@127.0.0.1/db", prepare_threshold=-1)


# -- worker processes ---------------------------------------------------------------------------


def process_options(*, listen: str | None, dead_after: float = 5.0) -> list[str]:
    options = [
        "--mode=chaos",
        *(f"--group={group}" for group in GROUPS),
        "--max-concurrent-jobs=4",
        "--max-prefetched-jobs=100",
        "--max-buffered-job-results=50",
        "--min-heartbeat-delay=0.05",
        "--heartbeat-delay-jitter=0.05",
        f"--worker-dead-without-heartbeat={dead_after}",
    ]
    if listen is None:
        return [*options, "--no-listen", "--poll-interval=0.2"]
    return [*options, f"--listen-conninfo={listen}", "--poll-interval=60"]


def test_two_worker_processes_through_pgbouncer_drain_every_job_exactly_once(
    bouncer: PgBouncer, direct: str
) -> None:
    url = bounced(bouncer, direct)
    # One process LISTENs on a direct connection, the other polls only.
    with (
        WorkerProcess(url, *process_options(listen=direct)) as listening,
        WorkerProcess(url, *process_options(listen=None)) as polling,
    ):
        for process in (listening, polling):
            process.expect("ready", 30)
        # 5% fail once and are retried; half arrive while the workers run.
        planned = schedule_jobs(url, 1000, random.Random(21))
        planned.update(schedule_jobs(url, 1000, random.Random(22)))
        wait_for(lambda: not pending_ids(direct), 60, "every job")
        counts = [listening.stop(), polling.stop()]
        stderr = listening.stderr + polling.stderr
    assert [listening.proc.returncode, polling.proc.returncode] == [0, 0]
    outcome = check_outcome(direct, planned)
    assert (outcome.lost, outcome.pending, outcome.handler_reruns) == (0, 0, 0)
    assert outcome.succeeded == len(planned) == 2000
    # Both took part, and neither met an error (a prepared statement or lock gone missing).
    assert all(count > 0 for count in counts), counts
    assert [line for line in stderr if "handle_error" in line] == []
    assert scalar(direct, "select count(*) from pgxjob_workers") == 0


def test_a_sigkilled_worker_process_behind_pgbouncer_has_its_jobs_rescued(
    bouncer: PgBouncer, direct: str
) -> None:
    url = bounced(bouncer, direct)
    job_ids = sorted(schedule_jobs(url, 3, random.Random(5)))
    with WorkerProcess(
        url,
        "--mode=block",
        f"--group={GROUPS[0]}",
        "--max-concurrent-jobs=5",
        "--no-listen",
        "--poll-interval=0.2",
        "--worker-dead-without-heartbeat=1",
    ) as victim:
        (victim_id,) = (int(w) for w in victim.expect("ready", 30))
        started = {int(victim.expect("started", 10)[0]) for _ in job_ids}
        assert started == set(job_ids)
        with WorkerProcess(url, *process_options(listen=direct, dead_after=5)) as rescuer:
            rescuer.expect("ready", 30)
            victim.kill()
            wait_for(lambda: not pending_ids(direct), 20, "the victim's jobs to run elsewhere")
            rescuer.stop()
    runs = query(direct, "select job_id, error from pgxjob_job_runs order by job_id")
    assert runs == [(job_id, None) for job_id in job_ids]
    handlers = query(direct, "select job_id, count(*) from chaos_runs group by 1 order by 1")
    assert handlers == [(job_id, 1) for job_id in job_ids]
    assert victim_id not in {w for (w,) in query(direct, "select id from pgxjob_workers")}


# -- the command line ----------------------------------------------------------------------------

APP = """
import os
import pgxjob

@pgxjob.job_type("bouncer_cli")
def run(job):
    import psycopg
    with psycopg.connect(os.environ["BOUNCER_DIRECT"], autocommit=True) as conn:
        conn.execute("insert into bouncer_cli_done (job_id) values (%s)", (job.id,))

# What an application behind PgBouncer writes: DATABASE_URL is the pooler's.
scheduler = pgxjob.Scheduler(os.environ["DATABASE_URL"], job_types=[run])
"""


def cli(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pgxjob", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (args, proc.returncode, proc.stderr[-2000:])
    return proc.stdout


def test_the_command_line_through_pgbouncer(bouncer: PgBouncer, tmp_path: Path) -> None:
    (tmp_path / "bouncerapp.py").write_text(textwrap.dedent(APP))
    with scratch_database("pgxjob_bouncer_cli") as direct_url:
        url = bounced(bouncer, direct_url)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(BOUNCER_DIRECT=direct_url, PYTHONPATH=str(tmp_path))
        cli(["migrate", "--database-url", url], cwd=tmp_path, env=env)
        with psycopg.connect(direct_url, autocommit=True) as conn:
            conn.execute("create table bouncer_cli_done (job_id bigint)")
            conn.execute("select pgxjob_register_job_type('bouncer_cli', 'default')")
        ids = [
            int(
                cli(
                    ["schedule", "bouncer_cli", json.dumps({"n": n}), "--database-url", url],
                    cwd=tmp_path,
                    env=env,
                ).strip()
            )
            for n in range(8)
        ]
        timed = int(
            cli(
                ["schedule", "bouncer_cli", "--run-at", "+1s", "--database-url", url],
                cwd=tmp_path,
                env=env,
            ).strip()
        )
        status = json.loads(cli(["status", "--json", "--database-url", url], cwd=tmp_path, env=env))
        assert status
        worker = [
            "worker",
            "bouncerapp:scheduler",
            "--database-url",
            url,
            "--until-empty",
            "--poll-interval",
            "0.2",
            "--quiet",
        ]
        # LISTEN on a direct connection, then poll only: each drains what is there.
        cli([*worker, "--listen-database-url", direct_url], cwd=tmp_path, env=env, timeout=90)
        extra = int(
            cli(["schedule", "bouncer_cli", "--database-url", url], cwd=tmp_path, env=env).strip()
        )
        cli([*worker, "--no-listen"], cwd=tmp_path, env=env, timeout=90)
        runs = cli(["runs", "--database-url", url, "--limit", "50"], cwd=tmp_path, env=env)
        assert str(timed) in runs
        done = sorted(j for (j,) in query(direct_url, "select job_id from bouncer_cli_done"))
    assert done == sorted([*ids, timed, extra])


def test_worker_command_refuses_a_listen_url_to_another_database(
    bouncer: PgBouncer, tmp_path: Path
) -> None:
    (tmp_path / "bouncerapp.py").write_text(textwrap.dedent(APP))
    with (
        scratch_database("pgxjob_bouncer_cli") as direct_url,
        scratch_database("pgxjob_bouncer_cli_other") as other_url,
    ):
        url = bounced(bouncer, direct_url)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(BOUNCER_DIRECT=direct_url, PYTHONPATH=str(tmp_path))
        cli(["migrate", "--database-url", url], cwd=tmp_path, env=env)
        for listen, code, message in (
            (["--listen-database-url", other_url], 2, "not the worker's database"),
            (["--listen-database-url", direct_url, "--no-listen"], 2, "contradict"),
        ):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pgxjob",
                    "worker",
                    "bouncerapp:scheduler",
                    "--database-url",
                    url,
                    *listen,
                    "--until-empty",
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == code, proc.stderr
            assert message in proc.stderr
