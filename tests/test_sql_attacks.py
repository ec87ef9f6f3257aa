"""No role but pgxjob's owner can make a pgxjob function run its code.

A hostile login role gets the application grants (pgxjob_grant_application) plus CREATE on the
public schema and on the database, which is what an application that keeps its own tables in
public usually has. It then plants, everywhere name resolution could reach:

- in public, a more specific overload of every built-in function, aggregate and operator that
  the bodies of the pgxjob functions call (derived from pg_proc.prosrc of the installed schema, so
  a function added later is covered too): public.cardinality(json[]) beats
  pg_catalog.cardinality(anyarray), public.*(integer, interval) beats
  pg_catalog.*(double precision, interval) reached through an implicit cast;
- a shadow of every pgxjob table, as a view whose rows come from a function and that has an
  INSTEAD OF trigger (a table trigger would miss reads), in pg_temp of its own sessions, in a
  schema of its own first on its search_path, and in a schema named after the role that owns
  pgxjob (what "$user" names inside a security definer function).

Every planted object calls a spy that records current_user and session_user into a table the
attacker owns (INSERT granted to PUBLIC) and raises a warning, which reaches the caller even when
the call is rolled back. Then every public and worker-facing function is called with valid
arguments by the attacker, by a second hostile role with the worker grants, by an honest worker
role whose search_path includes public, and by the owner (a superuser), for both install paths.
No planted code may ever run as anyone but an attacker, and each honest call must succeed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.dbserver import scratch_database
from tests.sqlcore import INSTALLERS, RECORD_SQL, Result, as_role, login_roles, record_params, run

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(microsecond=0)
LONG_AGO = NOW - dt.timedelta(days=2)
SPY_PREFIX = "pgxjob-attack-spy"
GROUP = "atk_group"
JOB_TYPE = "atk_type"

# Built-ins that the brief of this test names even where today's bodies do not call them yet, so
# a rewrite that starts calling them is attacked from its first version.
ALWAYS_SHADOWED = (
    "cardinality",
    "unnest",
    "array_agg",
    "count",
    "min",
    "max",
    "pg_notify",
    "format",
    "length",
    "octet_length",
    "now",
    "array_length",
    "array_position",
    "array_remove",
    "array_append",
    "concat",
    "json_agg",
    "json_build_object",
    "to_json",
    "left",
    "substr",
    "set_config",
    "current_setting",
    "pg_advisory_xact_lock",
    "pg_try_advisory_xact_lock",
    "hashtext",
    "avg",
    "sum",
)
SHADOWED_OPERATORS = ("=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "||")

# Argument types the planted overloads take: every type the bodies use, and the types they reach
# through implicit casts. Three-argument overloads use the short list only, to stay small.
SCALAR_TYPES = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
    "text",
    "character varying",
    "name",
    '"char"',
    "boolean",
    "json",
    "jsonb",
    "interval",
    "timestamp with time zone",
    "timestamp without time zone",
    "date",
    "oid",
    "regclass",
    "regnamespace",
)
ARRAY_TYPES = (
    "smallint[]",
    "integer[]",
    "bigint[]",
    "text[]",
    "name[]",
    "json[]",
    "timestamp with time zone[]",
    "interval[]",
    "boolean[]",
)
SHORT_TYPES = (
    "integer",
    "bigint",
    "text",
    "name",
    "boolean",
    "json",
    "interval",
    "timestamp with time zone",
    "integer[]",
    "bigint[]",
)
ANY_SCALAR = {"anyelement", "anycompatible", '"any"', "anynonarray", "anycompatiblenonarray"}
ANY_ARRAY = {"anyarray", "anycompatiblearray"}


# -- the attacker's spy and shadows -----------------------------------------------------------

SPY_SETUP = """
create schema {evil};
grant usage on schema {evil} to public;
create table {evil}.log (who name not null, sess name not null, what text not null);
grant insert on {evil}.log to public;
create function {evil}.spy(what text) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into {evil}.log (who, sess, what) values (current_user, session_user, what);
  raise warning '{prefix} current_user=% session_user=% what=%',
    current_user, session_user, what;
  return true;
end
$$;
create function {evil}.shadow_write() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform {evil}.spy(tg_op || ' ' || tg_table_schema || '.' || tg_table_name);
  if tg_op = 'DELETE' then
    return old;
  end if;
  return new;
end
$$;
"""


@dataclasses.dataclass(frozen=True)
class Relation:
    name: str
    columns: list[tuple[str, str]]


def pgxjob_relations(conn: psycopg.Connection[Any]) -> list[Relation]:
    """Every table and view named pgxjob_*, in whatever schema the install put it."""
    rows = conn.execute(
        "select c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)"
        " from pg_catalog.pg_class c"
        " join pg_catalog.pg_attribute a on a.attrelid = c.oid"
        " where c.relname like 'pgxjob\\_%%' and c.relkind in ('r', 'p', 'v', 'm')"
        "   and a.attnum > 0 and not a.attisdropped"
        "   and c.relnamespace not in ('pg_catalog'::regnamespace)"
        " order by c.relname, a.attnum"
    ).fetchall()
    relations: dict[str, list[tuple[str, str]]] = {}
    for relname, attname, typ in rows:
        columns = relations.setdefault(relname, [])
        if (attname, typ) not in columns:
            columns.append((attname, typ))
    return [Relation(name, columns) for name, columns in relations.items()]


def shadow_relations_sql(evil: str, schema: str | None, relations: list[Relation]) -> str:
    """Views standing in for pgxjob's relations, in `schema` or (None) in pg_temp.

    Their rows come from a set-returning function, which runs whenever the view is scanned,
    whatever the query's quals; an INSTEAD OF trigger sees every write.
    """
    statements = []
    tag = schema or "pg_temp"
    home = evil if schema else "pg_temp"
    for rel in relations:
        cols = ", ".join(f"{ident(c)} {t}" for c, t in rel.columns)
        data = f"{home}.{ident('data_' + tag + '_' + rel.name)}"
        source = f"{home}.{ident('rows_' + tag + '_' + rel.name)}"
        target = f"{ident(schema)}.{ident(rel.name)}" if schema else ident(rel.name)
        statements += [
            f"create {'temp ' if schema is None else ''}table {data} ({cols})",
            f"create or replace function {source}() returns setof {data}"
            f" language plpgsql volatile set search_path = pg_catalog, pg_temp as $$"
            f" begin perform {evil}.spy('read {tag}.{rel.name}');"
            f" return query select * from {data}; end $$",
            f"create {'temp ' if schema is None else ''}view {target} as select * from {source}()",
            f"create trigger shadow_write instead of insert or update or delete on {target}"
            f" for each row execute function {evil}.shadow_write()",
        ]
    return ";\n".join(statements) + ";"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- overloads derived from the function bodies -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Catalog:
    procs: dict[str, list[tuple[list[str], str, bool, str, bool]]]
    """name -> [(argument types, kind, returns set, variadic element type, variadic)]"""
    operators: dict[str, list[tuple[str, str]]]
    """name -> [(left type, right type)] of binary operators"""
    implicit: set[tuple[str, str]]
    """(source, target) type pairs with an implicit cast"""


def load_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    procs: dict[str, list[tuple[list[str], str, bool, str, bool]]] = {}
    for name, args, kind, retset, variadic in conn.execute(
        "select p.proname::text,"
        " array(select format_type(t, null) from unnest(p.proargtypes::oid[]) t),"
        " p.prokind::text, p.proretset,"
        " case when p.provariadic <> 0 then format_type(p.provariadic, null) else '' end"
        " from pg_catalog.pg_proc p"
        " where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind in ('f', 'a')"
        "   and p.pronargs <= 3"
        "   and not exists (select 1 from pg_catalog.pg_aggregate a"
        "                   where a.aggfnoid = p.oid and a.aggkind <> 'n')"
    ).fetchall():
        procs.setdefault(name, []).append((list(args), kind, retset, variadic, variadic != ""))
    operators: dict[str, list[tuple[str, str]]] = {}
    for name, left, right in conn.execute(
        "select o.oprname::text, format_type(o.oprleft, null), format_type(o.oprright, null)"
        " from pg_catalog.pg_operator o"
        " where o.oprnamespace = 'pg_catalog'::regnamespace and o.oprkind = 'b'"
    ).fetchall():
        operators.setdefault(name, []).append((left, right))
    implicit = {
        (src, dst)
        for src, dst in conn.execute(
            "select format_type(castsource, null), format_type(casttarget, null)"
            " from pg_catalog.pg_cast where castcontext = 'i'"
        ).fetchall()
    }
    return Catalog(procs, operators, implicit)


def accepts(catalog: Catalog, param: str, arg: str) -> bool:
    if param == arg or (arg, param) in catalog.implicit:
        return True
    if param in ANY_SCALAR:
        return not ("nonarray" in param and arg.endswith("[]"))
    return param in ANY_ARRAY and arg.endswith("[]")


def called_names(bodies: list[str]) -> set[str]:
    names: set[str] = set()
    for body in bodies:
        names |= {m.lower() for m in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", body)}
    return names


def function_shadows(catalog: Catalog, names: set[str]) -> list[tuple[str, tuple[str, ...], str]]:
    """(name, argument types, kind) of the overloads to plant: more specific than every
    pg_catalog candidate they compete with, never an exact copy of one."""
    shadows = []
    for name in sorted(names & set(catalog.procs)):
        overloads = catalog.procs[name]
        exact = {tuple(args) for args, *_ in overloads}
        kind = overloads[0][1]
        wanted: set[tuple[str, ...]] = set()
        for args, _, _, variadic_elem, is_variadic in overloads:
            shapes = [args]
            if is_variadic:
                fixed = args[:-1]
                shapes = [fixed + [variadic_elem] * n for n in range(1, 4 - len(fixed))]
            for params in shapes:
                if not params or len(params) > 3:
                    continue
                if kind == "a" and len(params) != 1:
                    continue
                pool = SHORT_TYPES if len(params) == 3 else SCALAR_TYPES + ARRAY_TYPES
                choices = [[t for t in pool if accepts(catalog, p, t)] for p in params]
                for combo in itertools.product(*choices):
                    if combo not in exact and not (kind == "a" and combo[0].endswith("[]")):
                        wanted.add(combo)
        shadows += [(name, combo, kind) for combo in sorted(wanted)]
    return shadows


def operator_shadows(catalog: Catalog) -> list[tuple[str, str, str]]:
    shadows = []
    types = SCALAR_TYPES + ARRAY_TYPES
    for op in SHADOWED_OPERATORS:
        candidates = catalog.operators.get(op, [])
        exact = set(candidates)
        for left, right in itertools.product(types, types):
            if (left, right) in exact:
                continue
            if any(
                accepts(catalog, cl, left) and accepts(catalog, cr, right) for cl, cr in candidates
            ):
                shadows.append((op, left, right))
    return shadows


def probe_type(conn: psycopg.Connection[Any], expression: str) -> str | None:
    """The type the expression has in pg_catalog alone, or None when it does not resolve."""
    try:
        with conn.transaction():
            cur = conn.execute(f"select {expression} as r limit 0")
    except psycopg.Error:
        return None
    assert cur.description is not None
    row = conn.execute(
        "select format_type(%s::oid, null)", (cur.description[0].type_code,)
    ).fetchone()
    return str(row[0]) if row else None


def plant_overloads(conn: psycopg.Connection[Any], evil: str, bodies: list[str]) -> int:
    """Create the overloads in public as the attacker; return how many were planted."""
    catalog = load_catalog(conn)
    names = called_names(bodies) | set(ALWAYS_SHADOWED)
    setofs = {name for name, overloads in catalog.procs.items() if any(o[2] for o in overloads)}
    conn.execute("set search_path = pg_catalog, pg_temp")
    planted = 0
    for n, (name, args, kind) in enumerate(function_shadows(catalog, names)):
        call = ", ".join(f"null::{t}" for t in args)
        returns = probe_type(conn, f"pg_catalog.{ident(name)}({call})")
        if returns is None or returns in ("unknown", "record"):
            continue
        sig = ", ".join(args)
        label = sql.Literal(f"{name}({sig})").as_string(conn)
        if kind == "a":
            acc = f"{evil}.acc_{n}"
            fin = f"{evil}.fin_{n}"
            statements = [
                f"create function {acc}(s {args[0]}[], v {args[0]}) returns {args[0]}[]"
                f" language plpgsql set search_path = pg_catalog, pg_temp as $$"
                f" begin perform {evil}.spy({label}); return array_append(s, v); end $$",
                f"create function {fin}(s {args[0]}[]) returns {returns}"
                f" language sql set search_path = pg_catalog, pg_temp as $$"
                f" select pg_catalog.{ident(name)}(u.x order by u.o)"
                f" from pg_catalog.unnest(s) with ordinality u(x, o) $$",
                f"create aggregate public.{ident(name)}({args[0]})"
                f" (sfunc = {acc}, stype = {args[0]}[], finalfunc = {fin})",
            ]
        else:
            params = ", ".join(f"${i + 1}" for i in range(len(args)))
            original = f"pg_catalog.{ident(name)}({params})"
            if name in setofs:
                rettype, body = f"setof {returns}", f"return query select {original};"
            elif returns == "void":
                rettype, body = "void", f"perform {original}; return;"
            else:
                rettype, body = returns, f"return {original};"
            statements = [
                f"create function public.{ident(name)}({sig}) returns {rettype}"
                f" language plpgsql volatile set search_path = pg_catalog, pg_temp as $$"
                f" begin perform {evil}.spy({label}); {body} end $$"
            ]
        try:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
            planted += 1
        except psycopg.Error:
            continue
    for n, (op, left, right) in enumerate(operator_shadows(catalog)):
        returns = probe_type(conn, f"null::{left} operator(pg_catalog.{op}) null::{right}")
        if returns is None or returns == "unknown":
            continue
        label = sql.Literal(f"{left} {op} {right}").as_string(conn)
        fn = f"{evil}.op_{n}"
        try:
            with conn.transaction():
                conn.execute(
                    f"create function {fn}({left}, {right}) returns {returns}"
                    f" language plpgsql volatile set search_path = pg_catalog, pg_temp as $$"
                    f" begin perform {evil}.spy({label});"
                    f" return $1 operator(pg_catalog.{op}) $2; end $$"
                )
                conn.execute(
                    f"create operator public.{op} (leftarg = {left}, rightarg = {right},"
                    f" function = {fn})"
                )
            planted += 1
        except psycopg.Error:
            continue
    return planted


# -- the database under attack -------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    install: str
    admin: str  # superuser connection, search_path pg_catalog only: it never meets a shadow
    owner: str  # the owner (the superuser that installed pgxjob), default search_path
    worker: str  # an honest worker role, search_path "$user", public
    app_attacker: str
    worker_attacker: str
    attacker_roles: set[str]
    evil: str
    relations: list[Relation]
    planted: int

    def conninfo(self, caller: str) -> str:
        return {
            "app_attacker": self.app_attacker,
            "worker_attacker": self.worker_attacker,
            "worker": self.worker,
            "owner": self.owner,
        }[caller]


@pytest.fixture(scope="module", params=sorted(INSTALLERS))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    install = str(request.param)
    with (
        login_roles("pgxjob_atk_app", "pgxjob_atk_wrk", "pgxjob_atk_honest") as roles,
        scratch_database("pgxjob_attack") as url,
    ):
        app_attacker, worker_attacker, honest = roles
        INSTALLERS[install](url)
        # The superuser of DATABASE_URL installed pgxjob: it is the owner. Checks and setup use
        # it with pg_catalog alone on the path, so they never meet a planted object.
        admin = url
        admin_safe = make_conninfo(url, options="-c search_path=pg_catalog")
        owner_role = run(admin, "select current_user::text")[0][0]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("select pgxjob_register_group(%s::text)", (GROUP,))
            conn.execute("select pgxjob_register_job_type(%s::text, %s::text)", (JOB_TYPE, GROUP))
            conn.execute("select pgxjob_grant_application(%s::name)", (app_attacker,))
            conn.execute("select pgxjob_grant_worker(%s::name)", (worker_attacker,))
            conn.execute("select pgxjob_grant_worker(%s::name)", (honest,))
            db = sql.Identifier(conn.info.dbname)
            for role in (app_attacker, worker_attacker):
                conn.execute(
                    sql.SQL("grant create on schema public to {}").format(sql.Identifier(role))
                )
                conn.execute(
                    sql.SQL("grant create, temporary on database {} to {}").format(
                        db, sql.Identifier(role)
                    )
                )
            relations = pgxjob_relations(conn)
            bodies = [
                str(r[0])
                for r in conn.execute(
                    "select prosrc from pg_catalog.pg_proc where proname like 'pgxjob\\_%%'"
                ).fetchall()
            ]
        evil = ident(f"evil_{app_attacker}")
        with psycopg.connect(as_role(url, app_attacker), autocommit=True) as conn:
            conn.execute(SPY_SETUP.replace("{evil}", evil).replace("{prefix}", SPY_PREFIX))
            conn.execute(shadow_relations_sql(evil, evil.strip('"'), relations))
            # "$user" inside a security definer function names the owner: squat that schema
            # (and the honest worker's) when nobody has created it.
            for squatted in (owner_role, honest):
                if not run(
                    admin_safe, "select 1 from pg_namespace where nspname = %s", (squatted,)
                ):
                    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(squatted)))
                    conn.execute(shadow_relations_sql(evil, squatted, relations))
            planted = plant_overloads(conn, evil, bodies)
        assert planted > 100, f"only {planted} overloads could be planted"
        yield Target(
            install=install,
            admin=admin_safe,
            owner=url,
            worker=as_role(url, honest),
            app_attacker=as_role(url, app_attacker),
            worker_attacker=as_role(url, worker_attacker),
            attacker_roles={app_attacker, worker_attacker},
            evil=evil,
            relations=relations,
            planted=planted,
        )
        with psycopg.connect(admin_safe, autocommit=True) as conn:
            for role in (app_attacker, worker_attacker, honest):
                conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))


# -- setup written straight into the tables, so it never calls a pgxjob function -----------------


def ids(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "select g.id, t.id from pgxjob_public.pgxjob_groups g, pgxjob_public.pgxjob_job_types t"
        " where g.name operator(pg_catalog.=) %s::text"
        "   and t.name operator(pg_catalog.=) %s::text",
        (GROUP, JOB_TYPE),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def add_worker(conn: psycopg.Connection[Any], heartbeat_at: dt.datetime) -> int:
    group_id, _ = ids(conn)
    row = conn.execute(
        "insert into pgxjob_public.pgxjob_workers (group_id, inserted_at, heartbeat_at,"
        " previous_heartbeat_at, dead_after)"
        " values (%s::int, %s::timestamptz, %s::timestamptz, %s::timestamptz, interval '1 minute')"
        " returning id",
        (group_id, heartbeat_at, heartbeat_at, heartbeat_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_asap_job(conn: psycopg.Connection[Any], worker_id: int | None = None) -> int:
    group_id, type_id = ids(conn)
    row = conn.execute(
        "insert into pgxjob_public.pgxjob_asap_jobs"
        " (group_id, type_id, worker_id, params, inserted_at)"
        " values (%s::int, %s::int, %s::int, '{\"n\": 1}'::json, %s::timestamptz) returning id",
        (group_id, type_id, worker_id, NOW - dt.timedelta(minutes=1)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_timed_job(
    conn: psycopg.Connection[Any], run_at: dt.datetime, worker_id: int | None = None
) -> int:
    group_id, type_id = ids(conn)
    row = conn.execute(
        "insert into pgxjob_public.pgxjob_run_at_jobs"
        " (group_id, type_id, worker_id, run_at, next_run_at, params, inserted_at)"
        " values (%s::int, %s::int, %s::int, %s::timestamptz, %s::timestamptz, null,"
        " %s::timestamptz) returning id",
        (group_id, type_id, worker_id, run_at, run_at, NOW - dt.timedelta(minutes=1)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_run(conn: psycopg.Connection[Any], finished_at: dt.datetime, error: str | None) -> None:
    group_id, type_id = ids(conn)
    conn.execute(
        "insert into pgxjob_public.pgxjob_job_runs"
        " (job_id, run_number, group_id, type_id, inserted_at,"
        " run_at, started_at, finished_at, params, error)"
        " values (pg_catalog.nextval('pgxjob_public.pgxjob_job_id_seq'), 1, %s::int, %s::int,"
        " %s::timestamptz, %s::timestamptz, %s::timestamptz, %s::timestamptz, null, %s::text)",
        (group_id, type_id, finished_at, finished_at, finished_at, finished_at, error),
    )


# -- every public and worker-facing function, with valid arguments --------------------------------

Statement = tuple[str, tuple[Any, ...]]
Setup = Callable[[psycopg.Connection[Any]], list[Statement]]


def setup_schedule(_: psycopg.Connection[Any]) -> list[Statement]:
    sql_text = "select pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz)"
    return [
        (sql_text, (JOB_TYPE, '{"a": 1}', None, None)),
        (sql_text, (JOB_TYPE, None, GROUP, NOW + dt.timedelta(days=1))),
        # A priority and a unique key, twice: the second finds the key held.
        (keyed, (JOB_TYPE, "{}", None, None, 3, "atk-key")),
        (keyed, (JOB_TYPE, "{}", None, None, 3, "atk-key")),
    ]


keyed = "select pgxjob_schedule(%s::text, %s::json, %s::text, %s::timestamptz, %s::int, %s::text)"


def setup_cancel_job(conn: psycopg.Connection[Any]) -> list[Statement]:
    """A waiting job (removed at once) and a running one (a request to its worker)."""
    worker = add_worker(conn, NOW)
    waiting = add_asap_job(conn)
    running = add_timed_job(conn, NOW, worker)
    sql_text = "select pgxjob_cancel_job(%s::bigint, %s::timestamptz)"
    return [(sql_text, (waiting, NOW)), (sql_text, (running, NOW)), (sql_text, (-1, NOW))]


def setup_cancel_requests(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    job = add_asap_job(conn, worker)
    return [
        ("select pgxjob_cancel_job(%s::bigint)", (job,)),
        ("select * from pgxjob_cancel_requests(%s::int)", (worker,)),
    ]


def setup_schedule_periodic(_: psycopg.Connection[Any]) -> list[Statement]:
    sql_text = (
        "select pgxjob_schedule_periodic(%s::text, %s::text, %s::text, %s::json, %s::text,"
        " %s::text, %s::int)"
    )
    return [
        (sql_text, ("atk_nightly", "30 2 * * MON-FRI", JOB_TYPE, "{}", GROUP, "Europe/Berlin", 1)),
        (sql_text, ("atk_nightly", "*/10 * * * * *", JOB_TYPE, None, None, "UTC", 0)),
    ]


def setup_unschedule_periodic(conn: psycopg.Connection[Any]) -> list[Statement]:
    name = f"atk_gone_{secrets.token_hex(4)}"
    add_periodic_job(conn, name, NOW + dt.timedelta(hours=1))
    return [("select pgxjob_unschedule_periodic(%s::text)", (name,))]


def setup_periodic_job_status(conn: psycopg.Connection[Any]) -> list[Statement]:
    add_periodic_job(conn, f"atk_listed_{secrets.token_hex(4)}", NOW + dt.timedelta(hours=1))
    return [("select * from pgxjob_periodic_job_status()", ())]


def setup_schedule_many(_: psycopg.Connection[Any]) -> list[Statement]:
    sql_text = "select pgxjob_schedule_many(%s::text, %s::json[], %s::text, %s::timestamptz)"
    return [
        (sql_text, (JOB_TYPE, ['{"a": 1}', None], None, None)),
        (sql_text, (JOB_TYPE, ["[1]", "[2]"], GROUP, NOW + dt.timedelta(days=1))),
        (sql_text, (JOB_TYPE, [], None, None)),
    ]


def setup_register_group(_: psycopg.Connection[Any]) -> list[Statement]:
    return [
        ("select pgxjob_register_group(%s::text)", (GROUP,)),
        ("select pgxjob_register_group(%s::text)", (f"atk_new_{dt.datetime.now().timestamp()}",)),
    ]


def setup_register_job_type(_: psycopg.Connection[Any]) -> list[Statement]:
    sql_text = "select pgxjob_register_job_type(%s::text, %s::text)"
    return [
        (sql_text, (JOB_TYPE, GROUP)),
        (sql_text, (f"atk_new_{dt.datetime.now().timestamp()}", "default")),
    ]


def with_dead_worker(conn: psycopg.Connection[Any]) -> None:
    """A dead worker that owns one job of each kind, so that a reap has work to do."""
    dead = add_worker(conn, LONG_AGO)
    add_asap_job(conn, dead)
    add_timed_job(conn, NOW - dt.timedelta(minutes=5), dead)


def setup_register_worker(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_dead_worker(conn)
    return [
        (
            "select pgxjob_register_worker(%s::text, %s::interval, %s::timestamptz)",
            (GROUP, dt.timedelta(minutes=1), NOW),
        )
    ]


def setup_worker_heartbeat(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    with_dead_worker(conn)
    return [("select pgxjob_worker_heartbeat(%s::int, %s::timestamptz)", (worker, NOW))]


def setup_reap_dead_workers(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_dead_worker(conn)
    return [("select pgxjob_reap_dead_workers(%s::timestamptz)", (NOW,))]


def setup_unregister_worker(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    add_asap_job(conn, worker)
    add_timed_job(conn, NOW, worker)
    return [("select pgxjob_unregister_worker(%s::int)", (worker,))]


def add_periodic_job(conn: psycopg.Connection[Any], name: str, next_fire_at: dt.datetime) -> None:
    group_id, type_id = ids(conn)
    conn.execute(
        "insert into pgxjob_public.pgxjob_periodic_jobs"
        " (name, cron, time_zone, type_id, group_id, params, next_fire_at)"
        " values (%s::text, '*/5 * * * *', 'Europe/Berlin', %s::int, %s::int, '{}'::json,"
        " %s::timestamptz)",
        (name, type_id, group_id, next_fire_at),
    )


def setup_fetch_jobs(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    add_asap_job(conn)
    add_timed_job(conn, NOW - dt.timedelta(seconds=1))
    # A due periodic schedule: the fetch fires it (cron_next included) before it claims.
    add_periodic_job(conn, f"atk_due_{worker}", NOW - dt.timedelta(seconds=1))
    return [
        ("select * from pgxjob_fetch_jobs(%s::int, %s::int, %s::timestamptz)", (worker, 10, NOW))
    ]


def setup_release_unknown_jobs(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    known = add_asap_job(conn, worker)
    add_asap_job(conn, worker)
    add_timed_job(conn, NOW, worker)
    return [("select pgxjob_release_unknown_jobs(%s::int, %s::bigint[])", (worker, [known]))]


def setup_next_run_in(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    add_timed_job(conn, NOW + dt.timedelta(minutes=1))
    add_timed_job(conn, dt.datetime.max.replace(tzinfo=UTC))
    return [("select pgxjob_next_run_in(%s::int, %s::timestamptz)", (worker, NOW))]


def setup_record_job_results(conn: psycopg.Connection[Any]) -> list[Statement]:
    """One result of every kind, so that every branch of the function runs."""
    worker = add_worker(conn, NOW)
    ok_asap, fail_asap, retry_asap, backoff_asap = (add_asap_job(conn, worker) for _ in range(4))
    ok_timed, fail_timed, retry_timed, backoff_timed = (
        add_timed_job(conn, NOW, worker) for _ in range(4)
    )
    later = NOW + dt.timedelta(minutes=1)
    results = [
        Result(ok_asap),
        Result(ok_timed),
        Result(fail_asap, error="boom"),
        Result(fail_timed, error="boom"),
        Result(retry_asap, error="again", retry_at=later),
        Result(retry_timed, error="again", retry_at=later),
        Result(backoff_asap, error="later", max_retries=3, base_delay=dt.timedelta(seconds=5)),
        Result(backoff_timed, error="later", max_retries=3, base_delay=dt.timedelta(seconds=5)),
    ]
    return [(f"select * from ({RECORD_SQL}) r", record_params(worker, results, NOW))]


def setup_linear_backoff(_: psycopg.Connection[Any]) -> list[Statement]:
    sql_text = "select pgxjob_linear_backoff(%s::int, %s::int, %s::interval, %s::timestamptz)"
    return [
        (sql_text, (0, 3, dt.timedelta(seconds=10), NOW)),
        (sql_text, (3, 3, dt.timedelta(seconds=10), NOW)),
    ]


def setup_prune_job_runs(conn: psycopg.Connection[Any]) -> list[Statement]:
    add_run(conn, LONG_AGO, None)
    add_run(conn, NOW, "boom")
    return [("select pgxjob_prune_job_runs(%s::interval)", (dt.timedelta(days=1),))]


def with_some_of_everything(conn: psycopg.Connection[Any]) -> None:
    worker = add_worker(conn, NOW)
    add_asap_job(conn)
    add_asap_job(conn, worker)
    add_timed_job(conn, NOW - dt.timedelta(seconds=1))
    add_timed_job(conn, NOW + dt.timedelta(hours=1))
    add_run(conn, NOW - dt.timedelta(minutes=1), None)
    add_run(conn, NOW - dt.timedelta(minutes=1), "boom")


def setup_job_counts(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_job_counts(%s::timestamptz)", (NOW,))]


def setup_worker_status(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_worker_status(%s::timestamptz)", (NOW,))]


def setup_recent_job_runs(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    sql_text = "select * from pgxjob_recent_job_runs(%s::int, %s::boolean, %s::text, %s::text)"
    return [(sql_text, (5, False, None, None)), (sql_text, (5, True, JOB_TYPE, GROUP))]


def setup_job_run_stats(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_job_run_stats(%s::timestamptz)", (LONG_AGO,))]


def setup_status(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select pgxjob_status(%s::int, %s::timestamptz)", (5, NOW))]


def add_failed_run(conn: psycopg.Connection[Any]) -> int:
    """A run that failed for good (outcome failed); returns its job id."""
    group_id, type_id = ids(conn)
    row = conn.execute(
        "insert into pgxjob_public.pgxjob_job_runs"
        " (job_id, run_number, group_id, type_id, inserted_at, run_at, started_at, finished_at,"
        " params, error, outcome)"
        " values (pg_catalog.nextval('pgxjob_public.pgxjob_job_id_seq'), 1, %s::int, %s::int,"
        " %s::timestamptz, %s::timestamptz, %s::timestamptz, %s::timestamptz, '[1]'::json,"
        " 'boom', 'failed') returning job_id",
        (group_id, type_id, NOW, NOW, NOW, NOW),
    ).fetchone()
    assert row is not None
    return int(row[0])


def setup_describe_worker(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    return [("select pgxjob_describe_worker(%s::int, %s::text, %s::int)", (worker, "h", 1))]


def setup_pause_group(_: psycopg.Connection[Any]) -> list[Statement]:
    return [
        ("select pgxjob_pause_group(%s::text)", (GROUP,)),
        ("select pgxjob_resume_group(%s::text)", (GROUP,)),
    ]


def setup_job_overview(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    sql_text = "select * from pgxjob_job_overview(%s::timestamptz, %s::int)"
    # Exact, and sampled (more than one unclaimed job in a table).
    return [(sql_text, (NOW, 100000)), (sql_text, (NOW, 1))]


def setup_group_overview(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_group_overview(%s::timestamptz)", (NOW,))]


def setup_worker_overview(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_worker_overview(%s::timestamptz)", (NOW,))]


def setup_metrics(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_metrics(%s::timestamptz)", (NOW,))]


def setup_run_history(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    return [("select * from pgxjob_run_history(%s::timestamptz, %s::interval)", (LONG_AGO, "1m"))]


def setup_job_runs_page(conn: psycopg.Connection[Any]) -> list[Statement]:
    with_some_of_everything(conn)
    add_failed_run(conn)
    sql_text = (
        "select * from pgxjob_job_runs_page(%s::int, %s::text, %s::text, %s::text,"
        " %s::timestamptz, %s::timestamptz, %s::timestamptz, %s::bigint, %s::int)"
    )
    return [
        (sql_text, (1, None, None, None, None, None, None, None, None)),
        (sql_text, (5, GROUP, JOB_TYPE, "failed", LONG_AGO, NOW, NOW, 1, 1)),
    ]


def setup_job_detail(conn: psycopg.Connection[Any]) -> list[Statement]:
    worker = add_worker(conn, NOW)
    job = add_timed_job(conn, NOW, worker)
    failed = add_failed_run(conn)
    sql_text = "select pgxjob_job_detail(%s::bigint, %s::timestamptz)"
    return [(sql_text, (job, NOW)), (sql_text, (failed, NOW)), (sql_text, (-1, NOW))]


def setup_retry_job_run(conn: psycopg.Connection[Any]) -> list[Statement]:
    failed = add_failed_run(conn)
    return [("select pgxjob_retry_job_run(%s::bigint, %s::int)", (failed, 1))]


def setup_run_job_now(conn: psycopg.Connection[Any]) -> list[Statement]:
    timed = add_timed_job(conn, NOW + dt.timedelta(hours=1))
    asap = add_asap_job(conn)
    sql_text = "select pgxjob_run_job_now(%s::bigint, %s::timestamptz)"
    return [(sql_text, (timed, NOW)), (sql_text, (asap, NOW)), (sql_text, (-1, NOW))]


def setup_grant_application(_: psycopg.Connection[Any]) -> list[Statement]:
    return [("select * from pgxjob_grant_application(current_user)", ())]


def setup_grant_worker(_: psycopg.Connection[Any]) -> list[Statement]:
    return [("select * from pgxjob_grant_worker(current_user)", ())]


# The owner runs the grant helpers with its own rights: they are attacked through the owner.
CALLS: dict[str, Setup] = {
    "pgxjob_grant_application": setup_grant_application,
    "pgxjob_grant_worker": setup_grant_worker,
    "pgxjob_schedule": setup_schedule,
    "pgxjob_schedule_many": setup_schedule_many,
    "pgxjob_cancel_job": setup_cancel_job,
    "pgxjob_schedule_periodic": setup_schedule_periodic,
    "pgxjob_unschedule_periodic": setup_unschedule_periodic,
    "pgxjob_periodic_job_status": setup_periodic_job_status,
    "pgxjob_cancel_requests": setup_cancel_requests,
    "pgxjob_register_group": setup_register_group,
    "pgxjob_register_job_type": setup_register_job_type,
    "pgxjob_register_worker": setup_register_worker,
    "pgxjob_worker_heartbeat": setup_worker_heartbeat,
    "pgxjob_reap_dead_workers": setup_reap_dead_workers,
    "pgxjob_unregister_worker": setup_unregister_worker,
    "pgxjob_fetch_jobs": setup_fetch_jobs,
    "pgxjob_release_unknown_jobs": setup_release_unknown_jobs,
    "pgxjob_next_run_in": setup_next_run_in,
    "pgxjob_record_job_results": setup_record_job_results,
    "pgxjob_linear_backoff": setup_linear_backoff,
    "pgxjob_prune_job_runs": setup_prune_job_runs,
    "pgxjob_job_counts": setup_job_counts,
    "pgxjob_worker_status": setup_worker_status,
    "pgxjob_recent_job_runs": setup_recent_job_runs,
    "pgxjob_job_run_stats": setup_job_run_stats,
    "pgxjob_status": setup_status,
    "pgxjob_describe_worker": setup_describe_worker,
    "pgxjob_pause_group": setup_pause_group,
    "pgxjob_resume_group": setup_pause_group,
    "pgxjob_job_overview": setup_job_overview,
    "pgxjob_group_overview": setup_group_overview,
    "pgxjob_worker_overview": setup_worker_overview,
    "pgxjob_metrics": setup_metrics,
    "pgxjob_run_history": setup_run_history,
    "pgxjob_job_runs_page": setup_job_runs_page,
    "pgxjob_job_detail": setup_job_detail,
    "pgxjob_retry_job_run": setup_retry_job_run,
    "pgxjob_run_job_now": setup_run_job_now,
}
CALLERS = ("app_attacker", "worker_attacker", "worker", "owner")


@dataclasses.dataclass
class Outcome:
    caller: str
    statement: str
    sqlstate: str | None
    message: str


def call_as(
    target: Target, caller: str, statements: list[Statement], notices: list[str]
) -> list[Outcome]:
    """Run the statements as the caller, collecting the spy's warnings into notices."""
    outcomes = []
    with psycopg.connect(target.conninfo(caller), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        if caller.endswith("attacker"):
            # Its own session: shadows in pg_temp, and its own schema first on its path.
            conn.execute(shadow_relations_sql(target.evil, None, target.relations))
            conn.execute(sql.SQL("set search_path = {}, public").format(sql.SQL(target.evil)))
        for statement, params in statements:
            try:
                conn.execute(statement, params).fetchall()
                outcomes.append(Outcome(caller, statement, None, ""))
            except psycopg.Error as exc:
                outcomes.append(Outcome(caller, statement, exc.sqlstate, str(exc).splitlines()[0]))
    return outcomes


def spied_rows(target: Target, notices: list[str]) -> list[tuple[str, str, str]]:
    rows = [
        (str(who), str(sess), str(what))
        for who, sess, what in run(target.admin, f"select who, sess, what from {target.evil}.log")
    ]
    for message in notices:
        match = re.search(SPY_PREFIX + r" current_user=(\S+) session_user=(\S+) what=(.*)", message)
        if match:
            rows.append((match[1], match[2], match[3]))
    return rows


def may_execute(target: Target, caller: str, function: str) -> bool:
    role = conninfo_to_dict(target.conninfo(caller)).get("user") or "root"
    rows = run(
        target.admin,
        "select pg_catalog.bool_or(pg_catalog.has_function_privilege(%s::text, p.oid, 'execute'))"
        " from pg_catalog.pg_proc p where p.proname operator(pg_catalog.=) %s::name",
        (role, function),
    )
    return bool(rows and rows[0][0])


@pytest.mark.parametrize("function", sorted(CALLS))
def test_no_planted_code_runs_as_anyone_but_the_attacker(target: Target, function: str) -> None:
    breaches: list[str] = []
    failures: list[str] = []
    for caller in CALLERS:
        with psycopg.connect(target.admin, autocommit=True) as admin:
            statements = CALLS[function](admin)
            admin.execute(f"delete from {target.evil}.log")
        notices: list[str] = []
        outcomes = call_as(target, caller, statements, notices)
        for who, sess, what in spied_rows(target, notices):
            if who not in target.attacker_roles:
                breaches.append(f"{caller}: {what} ran as {who} (session {sess})")
        allowed = may_execute(target, caller, function)
        for outcome in outcomes:
            if outcome.sqlstate is None:
                continue
            if not allowed and outcome.sqlstate == "42501":
                continue
            failures.append(f"{caller}: {outcome.sqlstate} {outcome.message}")
    assert not breaches and not failures, (
        f"planted code ran with another role's rights: {sorted(set(breaches))}; "
        f"valid calls failed under attack: {failures}"
    )


def test_every_worker_facing_function_is_attacked(target: Target) -> None:
    """A function added later that a worker or an application may call must get a case above."""
    rows = run(
        target.admin,
        "select distinct p.proname::text from pg_catalog.pg_proc p"
        " where p.proname like 'pgxjob\\_%%'"
        "   and pg_catalog.has_function_privilege(%s::text, p.oid, 'execute')",
        (conninfo_to_dict(target.worker)["user"],),
    )
    assert {r[0] for r in rows} <= set(CALLS)


def test_the_attack_really_reaches_callers_that_resolve_through_public(target: Target) -> None:
    """The planted objects work: a query of the worker's own that names them runs them."""
    with psycopg.connect(target.admin, autocommit=True) as admin:
        admin.execute(f"delete from {target.evil}.log")
    run(target.worker, "select cardinality(array['{}']::json[]), 2::integer * interval '1 s'")
    whats = {what for _, _, what in spied_rows(target, [])}
    assert {"cardinality(json[])", "integer * interval"} <= whats
