"""`pgxjob worker APP` in a subprocess: loading APP, running jobs, --until-empty, poll-only mode,
graceful shutdown on SIGTERM with nothing lost, a second signal, and bad APPs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

PGXJOB = Path(sys.executable).with_name("pgxjob")

# A tiny app: handlers record each run in cli_worker_done, so the test can see them.
APP = """
import os, time
import pgxjob

def _record(job):
    import psycopg
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("insert into cli_worker_done (job_id) values (%s)", (job.id,))

@pgxjob.job_type("cli_w_quick")
def quick(job):
    _record(job)

@pgxjob.job_type("cli_w_slow")
def slow(job):
    time.sleep(float(job.params or "0.02"))
    _record(job)

@pgxjob.job_type("cli_w_other", default_group_name="cli_w_other")
def other(job):
    _record(job)

TYPES = [quick, slow, other]

# Built at import from DATABASE_URL, which `pgxjob worker` sets before importing.
scheduler = pgxjob.Scheduler(
    os.environ["DATABASE_URL"], job_groups=["cli_w_other"], job_types=TYPES
)

def make_scheduler(conninfo):
    return pgxjob.Scheduler(conninfo, job_groups=["cli_w_other"], job_types=TYPES)

not_a_scheduler = 42
"""


def cli_command() -> list[str]:
    return [str(PGXJOB)] if PGXJOB.exists() else [sys.executable, "-m", "pgxjob"]


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


@pytest.fixture
def app_dir(tmp_path: Path, clean_db: str) -> Path:
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "brokenapp.py").write_text("raise RuntimeError('config missing')\n")
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("drop table if exists cli_worker_done")
        conn.execute("create table cli_worker_done (job_id bigint, at timestamptz default now())")
        conn.execute("select pgxjob_register_group('cli_w_other')")
        for name, group in (
            ("cli_w_quick", "default"),
            ("cli_w_slow", "default"),
            ("cli_w_other", "cli_w_other"),
        ):
            conn.execute("select pgxjob_register_job_type(%s, %s)", (name, group))
    return tmp_path


def run_worker(
    app_dir: Path, conninfo: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), "worker", *args, "--database-url", conninfo],
        cwd=app_dir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def start_worker(app_dir: Path, clean_db: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*cli_command(), "worker", *args, "--database-url", clean_db],
            cwd=app_dir,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def query(conninfo: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def schedule(conninfo: str, job_type: str, count: int, params: str | None = None) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "select pgxjob_schedule_many(%s, array_fill(%s::json, array[%s]))",
            (job_type, params, count),
        )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def queued(conninfo: str) -> int:
    return int(
        query(
            conninfo,
            "select (select count(*) from pgxjob_asap_jobs)"
            " + (select count(*) from pgxjob_run_at_jobs)",
        )
    )


def test_worker_runs_every_job_until_empty_and_exits_0(app_dir: Path, clean_db: str) -> None:
    schedule(clean_db, "cli_w_quick", 200)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("select pgxjob_schedule('cli_w_quick', run_at => now() + interval '1 second')")
    proc = run_worker(app_dir, clean_db, "cliapp:scheduler", "--until-empty", "--progress")
    assert proc.returncode == 0, proc.stderr
    assert query(clean_db, "select count(distinct job_id) from cli_worker_done") == 201
    assert queued(clean_db) == 0
    assert query(clean_db, "select count(*) from pgxjob_job_runs where error is null") == 201
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
    # The summary table counts this run's jobs.
    summary = next(line.split() for line in proc.stdout.splitlines() if "cli_w_quick" in line)
    assert summary[:4] == ["default", "cli_w_quick", "201", "201"]


def test_app_may_be_a_factory_that_receives_the_conninfo(app_dir: Path, clean_db: str) -> None:
    schedule(clean_db, "cli_w_other", 5)
    proc = run_worker(
        app_dir, clean_db, "cliapp:make_scheduler", "--group", "cli_w_other", "--until-empty"
    )
    assert proc.returncode == 0, proc.stderr
    assert query(clean_db, "select count(*) from cli_worker_done") == 5


def test_several_groups_in_one_process(app_dir: Path, clean_db: str) -> None:
    schedule(clean_db, "cli_w_quick", 10)
    schedule(clean_db, "cli_w_other", 10)
    only_default = run_worker(app_dir, clean_db, "cliapp:scheduler", "--until-empty")
    assert only_default.returncode == 0, only_default.stderr
    # A worker never touches another group's jobs.
    assert query(clean_db, "select count(*) from pgxjob_asap_jobs") == 10

    both = run_worker(
        app_dir, clean_db, "cliapp:scheduler", "-g", "default", "-g", "cli_w_other", "--until-empty"
    )
    assert both.returncode == 0, both.stderr
    assert queued(clean_db) == 0
    assert query(clean_db, "select count(*) from cli_worker_done") == 20


def test_sigterm_midway_shuts_down_cleanly_and_loses_nothing(
    clean_db: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    total = 600
    schedule(clean_db, "cli_w_slow", total, "0.02")
    proc = start_worker("cliapp:scheduler", "--concurrency", "4", "--prefetch", "50")
    wait_for(lambda: query(clean_db, "select count(*) from cli_worker_done") >= 20)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stderr

    done = query(clean_db, "select count(*) from pgxjob_job_runs where error is null")
    assert 20 <= done < total, "the worker should stop midway"
    # Every job either ran (and its run was recorded) or is still queued, unowned.
    assert done + queued(clean_db) == total
    assert query(clean_db, "select count(distinct job_id) from cli_worker_done") == done
    assert (
        query(
            clean_db,
            "select count(*) from pgxjob_asap_jobs where worker_id is not null",
        )
        == 0
    )
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0


def test_second_signal_stops_at_once_and_releases_the_jobs(
    clean_db: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    schedule(clean_db, "cli_w_slow", 2, "30")
    proc = start_worker("cliapp:scheduler", "--concurrency", "2")
    wait_for(
        lambda: (
            query(clean_db, "select count(*) from pgxjob_asap_jobs where worker_id is not null")
            == 2
        )
    )
    # Owned is not yet started, and shutdown hands unstarted jobs back at once: give the two
    # handler threads time to take them.
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None, "the first signal waits for running jobs"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 1, stderr
    assert "stopping now" in stderr
    # The worker was unregistered, so its unfinished jobs are free for another worker.
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
    assert query(clean_db, "select count(*) from pgxjob_asap_jobs where worker_id is null") == 2


def test_shutdown_timeout_expiry_releases_every_job_and_unregisters(
    clean_db: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    schedule(clean_db, "cli_w_slow", 52, "30")
    proc = start_worker(
        "cliapp:scheduler", "--concurrency", "2", "--prefetch", "50", "--shutdown-timeout", "1"
    )
    # Two jobs run (and hang for 30 s), the other fifty wait in the worker's prefetch.
    wait_for(
        lambda: (
            query(clean_db, "select count(*) from pgxjob_asap_jobs where worker_id is not null")
            == 52
        )
    )
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 1, stderr
    assert "did not finish" in stderr
    # Nothing stays owned by the exited process: another worker may take every job at once.
    assert query(clean_db, "select count(*) from pgxjob_workers") == 0
    assert query(clean_db, "select count(*) from pgxjob_asap_jobs where worker_id is null") == 52


def test_no_listen_polls_for_new_jobs(
    clean_db: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    proc = start_worker("cliapp:scheduler", "--no-listen", "--poll-interval", "0.3")
    wait_for(lambda: query(clean_db, "select count(*) from pgxjob_workers") == 1)
    assert (
        query(
            clean_db,
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and query ilike 'listen%%'",
        )
        == 0
    )
    schedule(clean_db, "cli_w_quick", 3)
    wait_for(lambda: query(clean_db, "select count(*) from cli_worker_done") == 3, timeout=10)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("app", "code", "words"),
    [
        ("cliapp", 2, ["module:attribute"]),
        ("no_such_module:scheduler", 2, ["cannot import APP module", "no_such_module"]),
        ("cliapp:missing", 2, ["has no attribute 'missing'"]),
        ("cliapp:not_a_scheduler", 2, ["not a pgxjob.Scheduler"]),
        ("brokenapp:scheduler", 1, ["importing APP module 'brokenapp' failed", "config missing"]),
    ],
)
def test_bad_app_is_one_line_on_stderr(
    app_dir: Path, clean_db: str, app: str, code: int, words: list[str]
) -> None:
    proc = run_worker(app_dir, clean_db, app, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


def test_group_the_app_does_not_declare_is_a_usage_error(app_dir: Path, clean_db: str) -> None:
    proc = run_worker(app_dir, clean_db, "cliapp:scheduler", "--group", "nope", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "'nope'" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_worker_refuses_a_database_without_pgxjob(app_dir: Path, empty_db_url: str) -> None:
    proc = run_worker(app_dir, empty_db_url, "cliapp:scheduler", timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pgxjob migrate" in lines[0]


def test_worker_migrate_flag_migrates_first(app_dir: Path, empty_db_url: str) -> None:
    proc = run_worker(app_dir, empty_db_url, "cliapp:scheduler", "--migrate", "--until-empty")
    assert proc.returncode == 0, proc.stderr
    assert query(empty_db_url, "select count(*) from pgxjob_schema_migrations") > 0
