"""Least privilege (sql/0003_security.sql) against real PostgreSQL and real login roles.

The database is owned by a non-superuser role that runs the migrations, as docs/operations.md
tells operators to do; an application role and a worker role get their privileges from
pgxjob_grant_application and pgxjob_grant_worker and connect as themselves. Roles are cluster-wide
and the server is shared, so every role name carries a random token and is dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

import pgxjob
from pgxjob import queries
from pgxjob.migrations import migrate
from tests.dbserver import admin_conninfo, scratch_database

FAST: dict[str, Any] = {
    "max_buffered_job_result_age": 0.02,
    "poll_interval": 10.0,
    "min_heartbeat_delay": 0.05,
    "heartbeat_delay_jitter": 0.05,
}


@dataclass(frozen=True)
class Db:
    """A migrated database and a conninfo per role; admin is the superuser, for checking."""

    admin: str
    owner: str
    app: str
    worker: str
    owner_role: str
    app_role: str
    worker_role: str


def unique_role_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def create_login_role(name: str) -> str:
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))
    return name


def drop_role(name: str) -> None:
    # Run after the scratch database is gone, so the role owns nothing and holds no privilege
    # anywhere but, at most, in the admin database.
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        role = sql.Identifier(name)
        if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("drop owned by {}").format(role))
            conn.execute(sql.SQL("drop role {}").format(role))


def as_role(conninfo: str, role: str) -> str:
    return make_conninfo(conninfo, user=role)


def run(conninfo: str, query: Any, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def db() -> Iterator[Db]:
    roles: list[str] = []
    try:
        owner = create_login_role(unique_role_name("pgxjob_sec_owner"))
        roles.append(owner)
        app = create_login_role(unique_role_name("pgxjob_sec_app"))
        roles.append(app)
        worker = create_login_role(unique_role_name("pgxjob_sec_worker"))
        roles.append(worker)
        with scratch_database("pgxjob_sec") as admin:
            run(
                admin,
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(str(psycopg.conninfo.conninfo_to_dict(admin)["dbname"])),
                    sql.Identifier(owner),
                ),
            )
            owner_url = as_role(admin, owner)
            migrate(owner_url)
            run(owner_url, "select pgxjob_grant_application(%s)", (app,))
            run(owner_url, "select pgxjob_grant_worker(%s)", (worker,))
            yield Db(
                admin, owner_url, as_role(admin, app), as_role(admin, worker), owner, app, worker
            )
    finally:
        for name in reversed(roles):
            drop_role(name)


def register(db: Db, job_type: str, group: str = "default") -> None:
    run(db.owner, "select pgxjob_register_group(%s)", (group,))
    run(db.owner, "select pgxjob_register_job_type(%s, %s)", (job_type, group))


def job_row(db: Db, job_id: int) -> tuple[Any, ...] | None:
    rows = run(
        db.admin,
        "select 'asap', g.name, t.name, j.params::text from pgxjob_asap_jobs j"
        " join pgxjob_groups g on g.id = j.group_id join pgxjob_job_types t on t.id = j.type_id"
        " where j.id = %(id)s"
        " union all"
        " select 'run_at', g.name, t.name, j.params::text from pgxjob_run_at_jobs j"
        " join pgxjob_groups g on g.id = j.group_id join pgxjob_job_types t on t.id = j.type_id"
        " where j.id = %(id)s",
        {"id": job_id},
    )
    assert len(rows) <= 1
    return rows[0] if rows else None


# -- the roles --------------------------------------------------------------------------------


def test_migrations_and_security_definer_functions_need_no_superuser(db: Db) -> None:
    [(superuser,)] = run(
        db.admin, "select rolsuper from pg_roles where rolname = %s", (db.owner_role,)
    )
    assert superuser is False
    owners = run(
        db.admin,
        "select distinct pg_get_userbyid(proowner)::text from pg_proc"
        " where proname like 'pgxjob\\_%%'",
    )
    assert owners == [(db.owner_role,)]
    # Neither caller role owns anything or is a superuser.
    rows = run(
        db.admin,
        "select r.rolname, r.rolsuper, exists (select 1 from pg_class c where c.relowner = r.oid)"
        " from pg_roles r where r.rolname in (%s, %s) order by 1",
        (db.app_role, db.worker_role),
    )
    assert [row[1:] for row in rows] == [(False, False), (False, False)]


def test_application_role_schedules_asap_timed_and_many_jobs(db: Db) -> None:
    register(db, "sec_app_type", "sec_app_group")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with psycopg.connect(db.app, autocommit=True) as conn:
        asap = queries.schedule(conn, "sec_app_type", '{"n": 1}', None, None)
        timed = queries.schedule(conn, "sec_app_type", '{"n": 2}', None, later)
        many = queries.schedule_many(conn, "sec_app_type", ['{"n": 3}', None], None, None)
    assert job_row(db, asap) == ("asap", "sec_app_group", "sec_app_type", '{"n": 1}')
    assert job_row(db, timed) == ("run_at", "sec_app_group", "sec_app_type", '{"n": 2}')
    assert [job_row(db, job_id) for job_id in many] == [
        ("asap", "sec_app_group", "sec_app_type", '{"n": 3}'),
        ("asap", "sec_app_group", "sec_app_type", None),
    ]


def test_application_role_schedules_from_a_trigger_on_its_own_table(db: Db) -> None:
    register(db, "sec_order_placed")
    schema = unique_role_name("sec_app_schema")
    run(
        db.admin,
        sql.SQL("create schema {} authorization {}").format(
            sql.Identifier(schema), sql.Identifier(db.app_role)
        ),
    )
    with psycopg.connect(db.app, autocommit=True) as conn:
        conn.execute(sql.SQL("set search_path to {}, public").format(sql.Identifier(schema)))
        conn.execute("create table orders (id int primary key, total numeric not null)")
        conn.execute(
            "create function orders_enqueue() returns trigger language plpgsql as $$"
            " begin"
            "   perform pgxjob_schedule('sec_order_placed', json_build_object('order_id', new.id));"
            "   return new;"
            " end $$"
        )
        conn.execute(
            "create trigger orders_enqueue after insert on orders"
            " for each row execute function orders_enqueue()"
        )
        conn.execute("insert into orders values (1, 10), (2, 20)")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("insert into orders values (3, 30)")
            conn.execute("insert into orders values (1, 99)")  # rolls back order 3 and its job
    rows = run(
        db.admin,
        "select j.params::text from pgxjob_asap_jobs j join pgxjob_job_types t on t.id = j.type_id"
        " where t.name = 'sec_order_placed' order by j.id",
    )
    assert rows == [('{"order_id" : 1}',), ('{"order_id" : 2}',)]


def pgxjob_tables(db: Db) -> list[tuple[str, str, str, str]]:
    """(name, kind, first column, schema) of every pgxjob table and sequence, in both schemas."""
    return run(
        db.admin,
        "select c.relname::text, c.relkind::text, coalesce(("
        "   select a.attname::text from pg_attribute a"
        "   where a.attrelid = c.oid and a.attnum = 1), ''), n.nspname::text"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('public', 'pgxjob_public') and c.relname like 'pgxjob\\_%%'"
        "   and c.relkind in ('r', 'S')"
        " order by 1",
    )


def denied_table_statements(db: Db, *, except_select: set[str] = frozenset()) -> list[sql.Composed]:
    statements = []
    for name, kind, column, schema in pgxjob_tables(db):
        table = sql.Identifier(schema, name)
        if kind == "S":
            statements.append(sql.SQL("select nextval({})").format(sql.Literal(f"{schema}.{name}")))
            statements.append(sql.SQL("select last_value from {}").format(table))
            continue
        if name not in except_select:
            statements.append(sql.SQL("select * from {} limit 1").format(table))
        statements += [
            sql.SQL("insert into {} default values").format(table),
            sql.SQL("update {} set {} = {}").format(
                table, sql.Identifier(column), sql.Identifier(column)
            ),
            sql.SQL("delete from {}").format(table),
            sql.SQL("truncate {}").format(table),
        ]
    return statements


def assert_all_denied(conninfo: str, statements: list[Any]) -> None:
    assert statements
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_application_role_reads_and_writes_no_pgxjob_table(db: Db) -> None:
    names = {name for name, _, _, _ in pgxjob_tables(db)}
    assert {"pgxjob_asap_jobs", "pgxjob_run_at_jobs", "pgxjob_job_runs", "pgxjob_workers"} <= names
    assert_all_denied(db.app, denied_table_statements(db))


def test_application_role_may_execute_only_the_schedule_and_cancel_functions(db: Db) -> None:
    rows = run(
        db.admin,
        "select distinct p.proname::text from pg_proc p where p.proname like 'pgxjob\\_%%'"
        " and has_function_privilege(%s, p.oid, 'execute') order by 1",
        (db.app_role,),
    )
    assert rows == [("pgxjob_cancel_job",), ("pgxjob_schedule",), ("pgxjob_schedule_many",)]
    now = dt.datetime.now(dt.UTC)
    result = queries.JobResult(1, 0, now, now, None, None, None, None, True)
    calls: list[Callable[[psycopg.Connection[Any]], Any]] = [
        lambda c: queries.register_group(c, "sec_nope"),
        lambda c: queries.register_job_type(c, "sec_nope", "default"),
        lambda c: queries.register_worker(c, "default", dt.timedelta(minutes=1)),
        lambda c: queries.worker_heartbeat(c, 1),
        lambda c: queries.unregister_worker(c, 1),
        lambda c: queries.fetch_jobs(c, 1, 10),
        lambda c: queries.next_run_in(c, 1),
        lambda c: queries.record_job_results(c, 1, [result]),
        lambda c: queries.prune_job_runs(c, dt.timedelta(0)),
        lambda c: queries.status(c, 5),
        lambda c: queries.job_counts(c),
        lambda c: queries.recent_job_runs(c, 10),
        lambda c: queries.job_run_stats(c, now),
        lambda c: c.execute("select pgxjob_reap_dead_workers()"),
        lambda c: c.execute("select * from pgxjob_worker_status()"),
        lambda c: c.execute("select * from pgxjob_resolve_job_target('sec_app_type', null)"),
        lambda c: c.execute("select pgxjob_linear_backoff(0, 1, interval '1 second')"),
        lambda c: c.execute("select pgxjob_grant_worker(current_user)"),
        lambda c: c.execute("select pgxjob_grant_application(current_user)"),
        lambda c: c.execute("select max(version) from pgxjob_schema_migrations"),
    ]
    with psycopg.connect(db.app, autocommit=True) as conn:
        for call in calls:
            with pytest.raises(errors.InsufficientPrivilege):
                call(conn)


def test_worker_role_reads_and_writes_no_job_table(db: Db) -> None:
    statements = denied_table_statements(db, except_select={"pgxjob_schema_migrations"})
    assert_all_denied(db.worker, statements)
    # The one table it may read is the version table the client checks at startup.
    assert run(db.worker, "select max(version) >= 3 from pgxjob_schema_migrations") == [(True,)]


def test_worker_role_runs_a_scheduler_and_worker_end_to_end(db: Db) -> None:
    lock = threading.Lock()
    ran: list[tuple[int, int]] = []
    retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=200)

    def work(job: pgxjob.Job) -> None:
        with lock:
            ran.append((job.id, job.error_count))

    def flaky(job: pgxjob.Job) -> None:
        work(job)
        if job.error_count == 0:
            raise pgxjob.ErrorWithRetry(RuntimeError("try again"), retry_at)

    scheduler = pgxjob.Scheduler(
        db.worker,
        job_groups=["sec_workers"],
        job_types=[
            pgxjob.JobTypeConfig("sec_work", work, default_group_name="sec_workers"),
            pgxjob.JobTypeConfig("sec_flaky", flaky, default_group_name="sec_workers"),
        ],
    )
    try:
        ids = scheduler.schedule_many(None, "sec_work", [{"n": n} for n in range(20)])
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=150)
        ids.append(scheduler.schedule(None, "sec_work", {"timed": True}, run_at=soon))
        flaky_id = scheduler.schedule(None, "sec_flaky", None)
        worker = scheduler.start_worker(group_name="sec_workers", **FAST)
        assert worker.startup_complete.wait(10)
        ids.append(scheduler.schedule(None, "sec_work", {"while": "running"}))

        def logged() -> int:
            return int(
                run(
                    db.admin,
                    "select count(*) from pgxjob_job_runs where job_id = any(%s)",
                    ([*ids, flaky_id],),
                )[0][0]
            )

        wait_for(lambda: logged() == len(ids) + 2, what="every run to be logged")
        time.sleep(0.2)  # a few heartbeats, each of which also reaps
        with scheduler.connection() as conn:
            status = queries.status(conn, 5)
            assert status["schema_version"] >= 3
            assert any(w["worker_id"] == worker.id for w in status["workers"])
            assert queries.recent_job_runs(conn, 5, group_name="sec_workers")
            assert queries.job_run_stats(conn, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
            queries.job_counts(conn)
            queries.prune_job_runs(conn, dt.timedelta(days=30))
        worker_id = worker.id
        assert worker.shutdown(10)
        with lock:
            assert sorted(ran) == sorted([(i, 0) for i in ids] + [(flaky_id, 0), (flaky_id, 1)])
        assert job_row(db, flaky_id) is None
        assert run(db.admin, "select count(*) from pgxjob_workers where id = %s", (worker_id,)) == [
            (0,)
        ]
    finally:
        scheduler.close()


def test_role_names_are_quoted_as_identifiers_by_the_grant_helpers(db: Db) -> None:
    name = create_login_role(unique_role_name('pgxjob_sec x"; drop table pgxjob_groups; --'))
    try:
        granted = run(db.owner, "select * from pgxjob_grant_worker(%s)", (name,))
        assert (
            "execute on function pgxjob_fetch_jobs(p_worker_id integer, p_limit integer,"
            " p_now timestamp with time zone)",
        ) in granted
        # The role connects and works; nothing in its name ran as SQL.
        assert run(
            as_role(db.admin, name), "select (pgxjob_status(1)->>'schema_version')::int >= 3"
        )[0][0]
        assert run(db.admin, "select to_regclass('pgxjob_groups') is not null") == [(True,)]
    finally:
        drop_role_in(db, name)


def drop_role_in(db: Db, name: str) -> None:
    run(db.admin, sql.SQL("drop owned by {}").format(sql.Identifier(name)))
    drop_role(name)


def test_a_login_role_inherits_the_rights_granted_to_its_group_role(db: Db) -> None:
    # docs/operations.md: grant a nologin group role, rotate the login roles that are its members.
    group = unique_role_name("pgxjob_sec_group")
    member = unique_role_name("pgxjob_sec_member")
    try:
        run(db.admin, sql.SQL("create role {} nologin").format(sql.Identifier(group)))
        run(
            db.admin,
            sql.SQL("create role {} login in role {}").format(
                sql.Identifier(member), sql.Identifier(group)
            ),
        )
        run(db.owner, "select pgxjob_grant_worker(%s)", (group,))
        with psycopg.connect(as_role(db.admin, member), autocommit=True) as conn:
            worker_id = queries.register_worker(conn, "default", dt.timedelta(minutes=1))
            assert isinstance(queries.fetch_jobs(conn, worker_id, 1), list)
            assert queries.unregister_worker(conn, worker_id)
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("select count(*) from pgxjob_workers")
    finally:
        for name in (member, group):
            run(db.admin, sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            drop_role(name)


def test_grant_helpers_refuse_unknown_roles_and_public(db: Db) -> None:
    with psycopg.connect(db.owner, autocommit=True) as conn:
        for name in ("public", unique_role_name("pgxjob_sec_missing"), None):
            with pytest.raises(psycopg.Error) as info:
                conn.execute("select pgxjob_grant_application(%s)", (name,))
            assert info.value.sqlstate == "PJ005"


# -- a hostile search_path ----------------------------------------------------------------------

HOSTILE_SETUP = """
create table {evil}.spied (who text not null, what text not null);
grant all on {evil}.spied to public;
create function {evil}.spy(what text) returns void language sql
  as $$ insert into {evil}.spied values (current_user, what) $$;
grant execute on function {evil}.spy(text) to public;

-- Shadows of pgxjob's tables, saying that the job type belongs to a group of the attacker's.
create table {evil}.pgxjob_groups (id int, name text);
insert into {evil}.pgxjob_groups values (1, 'hijacked'), (2, 'hijacked');
create table {evil}.pgxjob_job_types (id int, name text, default_group_id int);
insert into {evil}.pgxjob_job_types values (999, 'sec_hostile', 2);
create table {evil}.pgxjob_asap_jobs (
  id bigint, inserted_at timestamptz, group_id int, type_id int, worker_id int, params json);
create table {evil}.pgxjob_run_at_jobs (
  id bigint, inserted_at timestamptz, run_at timestamptz, next_run_at timestamptz, group_id int,
  type_id int, worker_id int, error_count int, last_error text, params json);

-- Shadows of built-in functions and operators the pgxjob functions call.
create function {evil}.now() returns timestamptz language plpgsql
  as $$ begin perform {evil}.spy('now'); return timestamptz '2000-01-01'; end $$;
create function {evil}.pg_notify(text, text) returns void language plpgsql
  as $$ begin perform {evil}.spy('pg_notify'); end $$;
create function {evil}.cardinality(anyarray) returns int language plpgsql
  as $$ begin perform {evil}.spy('cardinality'); return 0; end $$;
create function {evil}.pgxjob_resolve_job_target(
  job_type text, group_name text, out type_id int, out group_id int, out resolved_group_name text)
  language plpgsql
  as $$ begin perform {evil}.spy('resolve'); type_id := 999; group_id := 2;
        resolved_group_name := 'hijacked'; end $$;
create function {evil}.int_eq(int, int) returns boolean language plpgsql
  as $$ begin perform {evil}.spy('='); return true; end $$;
create operator {evil}.= (leftarg = int, rightarg = int, function = {evil}.int_eq);
create function {evil}.text_eq(text, text) returns boolean language plpgsql
  as $$ begin perform {evil}.spy('text ='); return true; end $$;
create operator {evil}.= (leftarg = text, rightarg = text, function = {evil}.text_eq);

-- Temporary shadows too: pg_temp is searched first for tables unless a path names it later.
create temp table pgxjob_job_types (id int, name text, default_group_id int);
insert into pgxjob_job_types values (999, 'sec_hostile', 2);
create temp table pgxjob_asap_jobs (
  id bigint, inserted_at timestamptz, group_id int, type_id int, worker_id int, params json);
create temp table pgxjob_groups (id int, name text);
insert into pgxjob_groups values (2, 'hijacked');
create function pg_temp.pg_notify(text, text) returns void language plpgsql
  as $$ begin perform {evil}.spy('pg_temp.pg_notify'); end $$;
"""


def test_hostile_search_path_cannot_hijack_the_security_definer_functions(db: Db) -> None:
    register(db, "sec_hostile", "sec_hostile_group")
    evil = unique_role_name("sec_evil")
    run(
        db.admin,
        sql.SQL("create schema {} authorization {}").format(
            sql.Identifier(evil), sql.Identifier(db.app_role)
        ),
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with (
        psycopg.connect(db.admin, autocommit=True) as listener,
        psycopg.connect(db.app, autocommit=True) as conn,
    ):
        listener.execute("listen pgxjob_job_available")
        conn.execute(HOSTILE_SETUP.replace("{evil}", sql.Identifier(evil).as_string(conn)).encode())
        # The attacker's objects come first, then pg_catalog; pgxjob's schema comes last.
        conn.execute(
            sql.SQL("set search_path to pg_temp, {}, pg_catalog, public").format(
                sql.Identifier(evil)
            )
        )
        # The caller's own queries really do see the shadows.
        assert conn.execute("select count(*) from pgxjob_job_types").fetchone() == (1,)
        assert conn.execute("select 1 = 2").fetchone() == (True,)
        conn.execute(f"delete from {sql.Identifier(evil).as_string(conn)}.spied")

        asap = conn.execute("select pgxjob_schedule('sec_hostile', '{\"a\": 1}')").fetchone()
        timed = conn.execute(
            "select pgxjob_schedule('sec_hostile', null, run_at => %s)", (later,)
        ).fetchone()
        many = conn.execute(
            "select pgxjob_schedule_many('sec_hostile', array['[1]', '[2]']::json[])"
        ).fetchall()
        with pytest.raises(psycopg.Error) as unknown:
            conn.execute("select pgxjob_schedule('sec_hostile_unknown')")
        assert unknown.value.sqlstate == "PJ001"

        spied = conn.execute(
            sql.SQL("select who, what from {}.spied").format(sql.Identifier(evil))
        ).fetchall()
        shadow_rows = conn.execute(
            sql.SQL(
                "select (select count(*) from {evil}.pgxjob_asap_jobs)"
                " + (select count(*) from {evil}.pgxjob_run_at_jobs)"
                " + (select count(*) from pg_temp.pgxjob_asap_jobs)"
            ).format(evil=sql.Identifier(evil))
        ).fetchone()
        payloads = {n.payload for n in listener.notifies(timeout=1.0, stop_after=1)}

    assert spied == []
    assert shadow_rows == (0,)
    assert asap is not None and timed is not None
    assert job_row(db, asap[0]) == ("asap", "sec_hostile_group", "sec_hostile", '{"a": 1}')
    assert job_row(db, timed[0]) == ("run_at", "sec_hostile_group", "sec_hostile", None)
    assert [job_row(db, row[0]) for row in many] == [
        ("asap", "sec_hostile_group", "sec_hostile", "[1]"),
        ("asap", "sec_hostile_group", "sec_hostile", "[2]"),
    ]
    assert payloads == {"sec_hostile_group"}
