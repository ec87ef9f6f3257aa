"""Upgrading a database in use from schema version 3: its jobs, workers, runs and grants survive."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgxjob
from pgxjob.migrations import load_migrations, migrate
from tests.dbserver import scratch_database
from tests.test_security import as_role, create_login_role, drop_role, run, unique_role_name


def install_version_3(url: str) -> None:
    """What the Python migrator of schema version 3 did: files 1-3, each recorded."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create table pgxjob_schema_migrations (version int primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        for migration in load_migrations()[:3]:
            with conn.transaction():
                conn.execute("set local search_path to public, pg_temp")
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into pgxjob_schema_migrations (version, name) values (%s, %s)",
                    (migration.version, migration.name),
                )


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    app = create_login_role(unique_role_name("pgxjob_up_app"))
    worker = create_login_role(unique_role_name("pgxjob_up_worker"))
    try:
        yield app, worker
    finally:
        drop_role(app)
        drop_role(worker)


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    return run(url, query, params)[0][0]


def test_a_version_3_database_in_use_upgrades_with_its_jobs_workers_runs_and_grants(
    roles: tuple[str, str],
) -> None:
    app, worker_role = roles
    with scratch_database("pgxjob_upgrade") as url:
        install_version_3(url)
        run(url, "select pgxjob_grant_application(%s)", (app,))
        run(url, "select pgxjob_grant_worker(%s)", (worker_role,))
        run(url, "select pgxjob_register_group('up')")
        run(url, "select pgxjob_register_job_type('up_t', 'up')")
        asap = [
            scalar(url, "select pgxjob_schedule('up_t', %s::json)", (f'{{"n": {n}}}',))
            for n in range(3)
        ]
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        timed = scalar(url, "select pgxjob_schedule('up_t', null, null, %s)", (later,))
        old_worker = scalar(url, "select pgxjob_register_worker('up', interval '1 hour')")
        [(claimed,)] = run(url, "select id from pgxjob_fetch_jobs(%s, 1)", (old_worker,))
        done = scalar(url, "select pgxjob_schedule('up_t')")
        run(
            url,
            "select pgxjob_record_job_results(array[%s]::bigint[], array[0], array[now()],"
            " array[now()], array[null::text], array[null::timestamptz], array[null::int],"
            " array[null::interval], array[true])",
            (done,),
        )

        assert migrate(url) == [m.version for m in load_migrations()[3:]]

        # The data moved into the private schema as it was.
        assert run(url, "select id from pgxjob_public.pgxjob_asap_jobs order by id") == [
            (job_id,) for job_id in asap
        ]
        assert run(url, "select id, next_run_at from pgxjob_public.pgxjob_run_at_jobs") == [
            (timed, later)
        ]
        assert (
            scalar(
                url,
                "select worker_id from pgxjob_public.pgxjob_asap_jobs where id = %s",
                (claimed,),
            )
            == old_worker
        )
        assert run(
            url,
            "select previous_heartbeat_at = heartbeat_at from pgxjob_public.pgxjob_workers",
        ) == [(True,)]
        # A run logged before outcomes existed keeps a null outcome.
        assert run(url, "select job_id, outcome from pgxjob_public.pgxjob_job_runs") == [
            (done, None)
        ]

        # The roles granted before the upgrade keep working through the new signatures.
        app_url, worker_url = as_role(url, app), as_role(url, worker_role)
        keyed = scalar(app_url, "select pgxjob_schedule('up_t', priority => 3, unique_key => 'k')")
        assert scalar(app_url, "select pgxjob_schedule('up_t', unique_key => 'k')") == keyed
        assert scalar(app_url, "select pgxjob_cancel_job(%s)", (keyed,)) == "cancelled"
        with (
            psycopg.connect(worker_url, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("select count(*) from pgxjob_public.pgxjob_asap_jobs")
        # The worker registered before the upgrade still owns its job; unregistering hands it back.
        assert scalar(worker_url, "select pgxjob_unregister_worker(%s)", (old_worker,)) is True

        # A worker of this version, logged in as the worker role, drains everything.
        ran: list[int] = []
        scheduler = pgxjob.Scheduler(
            worker_url,
            job_groups=["up"],
            job_types=[
                pgxjob.JobTypeConfig(
                    "up_t", lambda job: ran.append(job.id), default_group_name="up"
                )
            ],
        )
        try:
            scheduler.start_worker(group_name="up", poll_interval=0.2)
            deadline = time.monotonic() + 20
            while len(ran) < len(asap) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            scheduler.close(10)
        assert sorted(ran) == asap
        run(
            url,
            sql.SQL("drop owned by {}, {}").format(
                sql.Identifier(app), sql.Identifier(worker_role)
            ),
        )


def install_version_8(url: str) -> None:
    """Files 1-8 as the Python migrator of schema version 8 applied them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create table pgxjob_schema_migrations (version int primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        for migration in load_migrations()[:8]:
            with conn.transaction():
                conn.execute("set local search_path to public, pg_temp")
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into pgxjob_schema_migrations (version, name) values (%s, %s)"
                    " on conflict (version) do nothing",
                    (migration.version, migration.name),
                )


CHANGED_IN_9 = ("pgxjob_schedule", "pgxjob_schedule_many", "pgxjob_fetch_jobs")


def executors(url: str) -> set[tuple[str, str, str]]:
    """(schema, function, role) for every EXECUTE grant on the functions 0009 re-creates."""
    rows = run(
        url,
        "select n.nspname::text, p.proname::text, pg_get_userbyid(a.grantee)::text"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " cross join lateral aclexplode(p.proacl) a"
        " where p.proname = any (%s) and a.privilege_type = 'EXECUTE' and a.grantee <> 0"
        "   and pg_get_userbyid(a.grantee) <> current_user",
        (list(CHANGED_IN_9),),
    )
    return {(str(s), str(f), str(r)) for s, f, r in rows}


def test_migration_9_recreates_the_changed_functions_with_exactly_their_grants(
    roles: tuple[str, str],
) -> None:
    app, worker_role = roles
    direct = create_login_role(unique_role_name("pgxjob_up_direct"))
    try:
        with scratch_database("pgxjob_upgrade9") as url:
            install_version_8(url)
            run(url, "select pgxjob_grant_application(%s)", (app,))
            run(url, "select pgxjob_grant_worker(%s)", (worker_role,))
            # A role a DBA granted one function by hand, without the helpers.
            run(
                url,
                sql.SQL(
                    "grant usage on schema public, pgxjob_public to {0};"
                    " grant execute on function"
                    " public.pgxjob_schedule(text, json, text, timestamptz, int, text),"
                    " pgxjob_public.pgxjob_schedule(text, json, text, timestamptz, int, text)"
                    " to {0}"
                ).format(sql.Identifier(direct)),
            )
            run(url, "select pgxjob_register_job_type('up9', 'default')")
            waiting = scalar(url, "select pgxjob_schedule('up9', '{\"n\": 1}')")
            before = executors(url)
            assert {r for _, _, r in before} == {app, worker_role, direct}

            # Through every later migration: 0011 replaces pgxjob_schedule in place.
            assert migrate(url) == [m.version for m in load_migrations()[8:]]

            assert executors(url) == before
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            direct_url = as_role(url, direct)
            traced = scalar(
                direct_url, "select pgxjob_schedule('up9', trace_context => %s)", (traceparent,)
            )
            with (
                psycopg.connect(direct_url, autocommit=True) as conn,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                conn.execute("select pgxjob_schedule_many('up9', array['{}']::json[])")
            assert scalar(as_role(url, app), "select pgxjob_schedule('up9')") > traced
            worker_url = as_role(url, worker_role)
            worker = scalar(worker_url, "select pgxjob_register_worker('default', interval '1h')")
            fetched = run(
                worker_url,
                "select id, trace_context from pgxjob_fetch_jobs(%s, 2) order by id",
                (worker,),
            )
            assert fetched == [(waiting, None), (traced, traceparent)]
            run(
                url,
                sql.SQL("drop owned by {}, {}, {}").format(
                    sql.Identifier(app), sql.Identifier(worker_role), sql.Identifier(direct)
                ),
            )
    finally:
        drop_role(direct)
