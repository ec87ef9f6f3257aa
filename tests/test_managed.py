"""A managed PostgreSQL (RDS, Cloud SQL, Azure, Supabase): no superuser, no CREATE EXTENSION.

The database is owned by a role with none of the cluster-wide attributes (no SUPERUSER,
CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS) and an event trigger, installed by the test's
superuser as a managed server's own extension gate would be, refuses CREATE EXTENSION to every
role in the database. That owner migrates (from Python and from the command line), grants a
worker role, and runs workers; README's "Managed PostgreSQL" section lists exactly these rights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import pgxjob
from pgxjob.migrations import latest_version, migrate
from tests.dbserver import admin_conninfo, scratch_database
from tests.test_faults import Errors, Recorder, query, wait_for
from tests.test_security import as_role, drop_role, run, unique_role_name

FAST = {
    "poll_interval": 60,
    "max_buffered_job_result_age": 0.02,
    "min_heartbeat_delay": 0.05,
    "heartbeat_delay_jitter": 0.05,
}

# The cluster-wide attributes a managed server's database owner does not have.
LIMITS = "nosuperuser nocreatedb nocreaterole noreplication nobypassrls"

DENY_EXTENSIONS = """
create function deny_create_extension() returns event_trigger
language plpgsql as $$
begin
  raise exception 'CREATE EXTENSION is not allowed on this server'
    using errcode = 'insufficient_privilege';
end
$$;
create event trigger deny_create_extension on ddl_command_start
  when tag in ('CREATE EXTENSION') execute function deny_create_extension();
"""


@dataclass(frozen=True)
class Managed:
    admin: str
    owner: str
    worker: str
    owner_role: str
    worker_role: str


def create_role(name: str, attributes: str) -> None:
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login " + attributes).format(sql.Identifier(name)))


@pytest.fixture
def managed() -> Iterator[Managed]:
    owner = unique_role_name("pgxjob_managed_owner")
    worker = unique_role_name("pgxjob_managed_worker")
    try:
        create_role(owner, LIMITS)
        create_role(worker, LIMITS)
        with scratch_database("pgxjob_managed") as admin:
            dbname = str(conninfo_to_dict(admin)["dbname"])
            run(
                admin,
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                ),
            )
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(DENY_EXTENSIONS.encode())
            yield Managed(admin, as_role(admin, owner), as_role(admin, worker), owner, worker)
    finally:
        drop_role(worker)
        drop_role(owner)


def extensions(url: str) -> list[str]:
    return [name for (name,) in query(url, "select extname from pg_extension order by 1")]


def test_the_owner_has_no_superuser_attribute_and_cannot_create_extensions(
    managed: Managed,
) -> None:
    """The control: the setup really is as restricted as the module says."""
    [row] = run(
        managed.admin,
        "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " from pg_roles where rolname = %s",
        (managed.owner_role,),
    )
    assert row == (False, False, False, False, False)
    for extension in ("pgcrypto", "citext", "hstore"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            run(managed.owner, sql.SQL("create extension {}").format(sql.Identifier(extension)))


def test_a_non_superuser_owner_migrates_grants_and_runs_workers(managed: Managed) -> None:
    before = extensions(managed.admin)
    assert migrate(managed.owner) == list(range(1, latest_version() + 1))
    assert migrate(managed.owner) == []
    # pgxjob needs no extension: only what every database has.
    assert extensions(managed.admin) == before == ["plpgsql"]
    owners = query(
        managed.admin,
        "select distinct pg_get_userbyid(proowner)::text from pg_proc"
        " where proname like 'pgxjob\\_%%'",
    )
    assert owners == [(managed.owner_role,)]
    run(managed.owner, "select pgxjob_grant_worker(%s)", (managed.worker_role,))

    # The owner and the worker role each run a worker; each job runs once.
    ran = Recorder()
    schedulers = [
        pgxjob.Scheduler(
            url,
            job_types=[pgxjob.JobTypeConfig("managed_job", ran)],
            handle_error=Errors(),
        )
        for url in (managed.owner, managed.worker)
    ]
    try:
        workers = [scheduler.start_worker(**FAST) for scheduler in schedulers]
        assert all(worker.startup_complete.wait(10) for worker in workers)
        ids = schedulers[1].schedule_many(None, "managed_job", [{"n": n} for n in range(50)])
        wait_for(lambda: sorted(ran.snapshot()) == sorted(ids), 20, "every job to run")
        wait_for(
            lambda: query(managed.admin, "select count(*) from pgxjob_job_runs") == [(50,)],
            10,
            "the run log",
        )
        assert all(worker.shutdown(timeout=10) for worker in workers)
    finally:
        for scheduler in schedulers:
            scheduler.close(timeout=10)
    for scheduler in schedulers:
        assert scheduler.handle_error.errors == []  # type: ignore[attr-defined]


def test_the_command_line_migrates_as_a_non_superuser_owner(managed: Managed) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "pgxjob", "migrate", "--database-url", managed.owner],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert query(managed.admin, "select max(version) from pgxjob_schema_migrations") == [
        (latest_version(),)
    ]
    assert extensions(managed.admin) == ["plpgsql"]
