"""Migrations: from zero, idempotent, safe to run twice at once, refusing a newer database."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pgxjob.errors import SchemaVersionError
from pgxjob.migrations import current_version, latest_version, load_migrations, migrate


def query(conninfo: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def recorded_versions(conninfo: str, schema: str = "public") -> list[tuple[int, str]]:
    return [
        (int(v), str(n))
        for v, n in query(
            conninfo,
            f'select version, name from "{schema}".pgxjob_schema_migrations order by version',
        )
    ]


def all_versions() -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in load_migrations()]


def pgxjob_objects(conninfo: str) -> list[tuple[str, str]]:
    """Every pgxjob relation and function, with the schema it lives in."""
    return [
        (str(s), str(n))
        for s, n in query(
            conninfo,
            "select c.relnamespace::regnamespace::text, c.relname::text from pg_class c"
            " where c.relname like 'pgxjob%%'"
            " union all"
            " select p.pronamespace::regnamespace::text, p.oid::regprocedure::text from pg_proc p"
            " where p.proname like 'pgxjob%%'"
            " order by 1, 2",
        )
    ]


def test_migrate_from_zero_applies_every_version_once(empty_db_url: str) -> None:
    applied = migrate(empty_db_url)

    assert applied == [v for v, _ in all_versions()]
    assert recorded_versions(empty_db_url) == all_versions()
    with psycopg.connect(empty_db_url) as conn:
        assert current_version(conn) == latest_version()
    assert query(empty_db_url, "select id, name from pgxjob_groups") == [(1, "default")]
    job_id = query(
        empty_db_url,
        "select pgxjob_register_job_type('t'), pgxjob_schedule('t', '{\"a\": 1}')",
    )[0][1]
    assert query(
        empty_db_url, "select params::text from pgxjob_asap_jobs where id = %s", (job_id,)
    ) == [('{"a": 1}',)]


def test_migrating_again_is_a_no_op(empty_db_url: str) -> None:
    migrate(empty_db_url)
    before = query(empty_db_url, "select version, name, applied_at from pgxjob_schema_migrations")
    objects_before = pgxjob_objects(empty_db_url)

    assert migrate(empty_db_url) == []

    assert (
        query(empty_db_url, "select version, name, applied_at from pgxjob_schema_migrations")
        == before
    )
    assert pgxjob_objects(empty_db_url) == objects_before
    assert query(empty_db_url, "select id, name from pgxjob_groups") == [(1, "default")]


def test_two_concurrent_migrators_both_succeed_and_record_each_version_once(
    empty_db_url: str,
) -> None:
    start = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=10)
            results.append(migrate(empty_db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"migrator-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(results) == 2
    # Between them they applied every version exactly once.
    assert sorted(results[0] + results[1]) == [v for v, _ in all_versions()]
    assert recorded_versions(empty_db_url) == all_versions()
    assert query(empty_db_url, "select id, name from pgxjob_groups") == [(1, "default")]


def test_a_database_newer_than_the_code_is_refused_and_left_untouched(empty_db_url: str) -> None:
    newer = latest_version() + 1
    query(
        empty_db_url,
        "create table pgxjob_schema_migrations ("
        " version int primary key, name text not null,"
        " applied_at timestamptz not null default now())",
    )
    query(
        empty_db_url,
        "insert into pgxjob_schema_migrations (version, name) values (%s, 'from_the_future')",
        (newer,),
    )
    before = query(empty_db_url, "select * from pgxjob_schema_migrations")

    with pytest.raises(SchemaVersionError, match=rf"version {newer}, newer than this pgxjob"):
        migrate(empty_db_url)

    assert query(empty_db_url, "select * from pgxjob_schema_migrations") == before
    assert pgxjob_objects(empty_db_url) == [
        ("public", "pgxjob_schema_migrations"),
        ("public", "pgxjob_schema_migrations_pkey"),
    ]


def test_a_migrated_database_newer_than_the_code_is_refused(empty_db_url: str) -> None:
    migrate(empty_db_url)
    query(
        empty_db_url,
        "insert into pgxjob_schema_migrations (version, name) values (%s, 'from_the_future')",
        (latest_version() + 1,),
    )
    objects_before = pgxjob_objects(empty_db_url)

    with pytest.raises(SchemaVersionError, match="upgrade the pgxjob package"):
        migrate(empty_db_url)

    assert pgxjob_objects(empty_db_url) == objects_before
    with psycopg.connect(empty_db_url) as conn:
        assert current_version(conn) == latest_version() + 1


@pytest.mark.parametrize("schema", ["jobs", "Job Queue"])
def test_migrating_into_another_schema_keeps_public_clean_and_works_by_qualified_name(
    empty_db_url: str, schema: str
) -> None:
    assert migrate(empty_db_url, schema=schema) == [v for v, _ in all_versions()]

    objects = pgxjob_objects(empty_db_url)
    assert objects
    quoted = f'"{schema}"' if schema != schema.lower() or " " in schema else schema
    private = f'"pgxjob_{schema}"' if quoted != schema else f"pgxjob_{schema}"
    assert {s for s, _ in objects} == {quoted, private}
    assert recorded_versions(empty_db_url, schema) == all_versions()
    with psycopg.connect(empty_db_url) as conn:
        assert current_version(conn, schema) == latest_version()
        assert current_version(conn) is None

    # The functions pin their search_path, so a caller whose search_path is public can call
    # them by qualified name and the job lands in the schema's tables.
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(f"select {quoted}.pgxjob_register_job_type('t')")
        job_id = conn.execute(f"select {quoted}.pgxjob_schedule('t')").fetchone()
        rows = conn.execute(f"select id from {private}.pgxjob_asap_jobs").fetchall()
        timed = conn.execute(
            f"select {quoted}.pgxjob_schedule('t', run_at => now() + interval '1 hour')"
        ).fetchone()
        timed_rows = conn.execute(f"select id from {private}.pgxjob_run_at_jobs").fetchall()
    assert job_id is not None and rows == [(job_id[0],)]
    assert timed is not None and timed_rows == [(timed[0],)]


def test_migrating_a_second_schema_leaves_the_first_alone(empty_db_url: str) -> None:
    migrate(empty_db_url)
    public_before = recorded_versions(empty_db_url)

    assert migrate(empty_db_url, schema="other") == [v for v, _ in all_versions()]

    assert recorded_versions(empty_db_url) == public_before
    assert recorded_versions(empty_db_url, "other") == all_versions()
