"""pgxjob in a schema of its own (Python and CLI, end to end), a scheduling-only Scheduler on a
least-privilege role, the README's hello world on a fresh database, and `pgxjob worker` refusing
an APP that works in another database than --database-url."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgxjob
from pgxjob import queries
from pgxjob.errors import NotReadyError, UnknownJobTypeError
from pgxjob.migrations import migrate
from tests.dbserver import scratch_database
from tests.test_cli_worker import cli_command, cli_env
from tests.test_security import as_role, create_login_role, drop_role, run, unique_role_name

ROOT = Path(__file__).resolve().parent.parent


def scalar(url: str, query: str, params: Any = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# A schema name may hold any character PostgreSQL allows in a quoted identifier: "%" must not be
# taken for a query placeholder, nor braces for a format field.
@pytest.mark.parametrize("schema", ["jobs", "100% {jobs}"])
def test_a_scheduler_and_worker_in_another_schema(empty_db_url: str, schema: str) -> None:
    ran = threading.Event()
    scheduler = pgxjob.Scheduler(
        empty_db_url,
        schema=schema,
        job_types=[pgxjob.JobTypeConfig("t", lambda job: ran.set())],
        setup_timeout=10,
    )
    try:
        assert scheduler.migrate()
        assert scalar(empty_db_url, "select to_regclass('public.pgxjob_asap_jobs')") is None
        worker = scheduler.start_worker(max_buffered_job_result_age=0.02, poll_interval=60)
        assert worker.startup_complete.wait(10)
        # The caller's own connection, whose search_path does not reach the schema.
        with psycopg.connect(empty_db_url) as conn:
            conn.execute("set search_path to public")
            job_id = scheduler.schedule(conn, "t", {"in": "jobs"})
        assert ran.wait(10)
        assert worker.shutdown(10)
        runs = sql.SQL("select count(*) from {}.pgxjob_job_runs where job_id = {}").format(
            sql.Identifier(f"pgxjob_{schema}"), sql.Literal(job_id)
        )
        with psycopg.connect(empty_db_url) as conn:
            assert conn.execute(runs).fetchone() == (1,)
        # Calls without parameters too (the CLI's status reads these).
        with scheduler.connection() as conn:
            counts = queries.job_counts(conn)
            assert [(c.group_name, c.job_type, c.due) for c in counts] == [("default", "t", 0)]
            assert queries.periodic_job_status(conn) == []
    finally:
        scheduler.close(5)


APP = """
import os, pgxjob

@pgxjob.job_type("in_jobs")
def in_jobs(job):
    pass

scheduler = pgxjob.Scheduler(os.environ["DATABASE_URL"], schema="jobs", job_types=[in_jobs])
# Built on a fixed database, whatever --database-url says.
pinned = pgxjob.Scheduler(os.environ["PINNED_URL"], schema="jobs", job_types=[in_jobs])
"""


def cli(
    cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *argv],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_works_in_another_schema(empty_db_url: str, tmp_path: Path) -> None:
    (tmp_path / "schemaapp.py").write_text(textwrap.dedent(APP))
    env = {**cli_env(), "PINNED_URL": empty_db_url}
    url = ("--database-url", empty_db_url)
    migrated = cli(tmp_path, "migrate", "--schema", "jobs", *url)
    assert migrated.returncode == 0, migrated.stderr
    run(empty_db_url, "select jobs.pgxjob_register_job_type('in_jobs', 'default')")
    scheduled = cli(tmp_path, "schedule", "--schema", "jobs", *url, "in_jobs", '{"n": 1}')
    assert scheduled.returncode == 0, scheduled.stderr
    # Without --schema, the CLI looks in public, where pgxjob is not.
    elsewhere = cli(tmp_path, "status", *url)
    assert elsewhere.returncode == 1 and "'public'" in elsewhere.stderr
    # The worker takes the schema of APP's Scheduler, and refuses a --schema that differs.
    wrong = cli(tmp_path, "worker", "schemaapp:scheduler", "--schema", "public", *url, env=env)
    assert wrong.returncode == 2 and "'jobs'" in wrong.stderr, wrong.stderr
    worked = cli(tmp_path, "worker", "schemaapp:scheduler", "--until-empty", *url, env=env)
    assert worked.returncode == 0, worked.stderr
    status = cli(tmp_path, "status", "--schema", "jobs", "--json", *url)
    assert status.returncode == 0, status.stderr
    assert [j["job_type"] for j in json.loads(status.stdout)["jobs"]] == ["in_jobs"]
    runs = cli(tmp_path, "runs", "--schema", "jobs", "--json", *url)
    assert runs.returncode == 0, runs.stderr
    [record] = [json.loads(line) for line in runs.stdout.splitlines()]
    assert record["job_type"] == "in_jobs" and record["error"] is None
    assert record["params"] == {"n": 1}


def test_worker_refuses_an_app_that_works_in_another_database(
    empty_db_url: str, clean_db: str, tmp_path: Path
) -> None:
    (tmp_path / "schemaapp.py").write_text(textwrap.dedent(APP))
    env = {**cli_env(), "PINNED_URL": empty_db_url}
    migrate(empty_db_url, schema="jobs")
    proc = cli(tmp_path, "worker", "schemaapp:pinned", "--database-url", clean_db, env=env)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "works in database" in line and "--database-url" in line
    assert scalar(clean_db, "select count(*) from pgxjob_workers") == 0


@pytest.fixture
def app_role_in_jobs() -> Iterator[tuple[str, str]]:
    """(owner conninfo, application-role conninfo) on a database migrated into schema jobs."""
    owner = create_login_role(unique_role_name("pgxjob_schema_owner"))
    app = create_login_role(unique_role_name("pgxjob_schema_app"))
    try:
        with scratch_database("pgxjob_schema") as admin:
            dbname = psycopg.conninfo.conninfo_to_dict(admin)["dbname"]
            run(
                admin,
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(str(dbname)), sql.Identifier(owner)
                ),
            )
            owner_url = as_role(admin, owner)
            migrate(owner_url, schema="jobs")
            run(owner_url, "select jobs.pgxjob_grant_application(%s)", (app,))
            run(owner_url, "select jobs.pgxjob_register_job_type('t', 'default')")
            yield owner_url, as_role(admin, app)
    finally:
        drop_role(app)
        drop_role(owner)


def test_a_scheduling_only_scheduler_needs_only_the_application_grants(
    app_role_in_jobs: tuple[str, str],
) -> None:
    owner_url, app_url = app_role_in_jobs
    # The full Scheduler cannot even start up as this role: it registers types.
    errors: list[BaseException] = []
    full = pgxjob.Scheduler(
        app_url,
        schema="jobs",
        job_types=[pgxjob.JobTypeConfig("t", lambda job: None)],
        handle_error=errors.append,
        setup_timeout=2,
    )
    with pytest.raises(NotReadyError):
        full.schedule(None, "t")
    full.close(5)
    assert isinstance(errors[0], psycopg.errors.InsufficientPrivilege)

    scheduler = pgxjob.Scheduler(app_url, schema="jobs", register=False)
    try:
        first = scheduler.schedule(None, "t", {"n": 1})
        more = scheduler.schedule_many(None, "t", [{"n": 2}, {"n": 3}])
        with psycopg.connect(app_url) as conn:
            inside = scheduler.schedule(conn, "t", {"n": 4})
            conn.rollback()
        assert len({first, *more, inside}) == 4
        with pytest.raises(RuntimeError, match="register=False"):
            scheduler.start_worker()
        with pytest.raises(UnknownJobTypeError):
            scheduler.schedule(None, "nope")
    finally:
        scheduler.close(5)
    # Three committed, the fourth rolled back with the caller's transaction.
    assert scalar(owner_url, "select count(*) from pgxjob_jobs.pgxjob_asap_jobs") == 3


HELLO = """
import os, threading
import pgxjob

done = threading.Event()

@pgxjob.job_type("greet")
def greet(job: pgxjob.Job) -> None:
    print("hello", job.params, flush=True)
    done.set()

scheduler = pgxjob.Scheduler(os.environ["HELLO_URL"], job_types=[greet])
scheduler.migrate()
scheduler.schedule(None, "greet", {"name": "Ada"})
worker = scheduler.start_worker()
done.wait(20)
worker.shutdown()
"""


def test_the_readme_hello_world_shows_no_traceback_on_a_fresh_database(
    empty_db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "hello.py").write_text(textwrap.dedent(HELLO))
    for _ in range(3):  # setup racing migrate() is a matter of timing: try a few times
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute("drop schema public cascade")
            conn.execute("drop schema if exists pgxjob_public cascade")
            conn.execute("create schema public")
        proc = subprocess.run(
            [sys.executable, "hello.py"],
            cwd=tmp_path,
            env={**cli_env(), "HELLO_URL": empty_db_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert 'hello {"name":"Ada"}' in proc.stdout
        assert proc.stderr == ""
