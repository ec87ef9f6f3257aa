"""Applies pgxjob's numbered SQL migrations, each in its own transaction under an advisory lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgxjob.errors import SchemaVersionError

__all__ = ["Migration", "current_version", "latest_version", "load_migrations", "migrate"]

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Serialises migrators across sessions (any schema): pg_advisory_xact_lock(class, key).
_LOCK_CLASS = 0x70677862  # "pgxb"
_LOCK_KEY = 1


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def _migrations_dir() -> Path:
    # In an installed wheel the files ship as pgxjob/sql; in a source checkout they sit beside
    # the package, at the top of the repository.
    packaged = Path(str(resources.files("pgxjob"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def load_migrations() -> list[Migration]:
    """Return every migration shipped with this version of pgxjob, in version order."""
    migrations = []
    for path in sorted(_migrations_dir().iterdir()):
        match = _FILE_NAME.match(path.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if not migrations or versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"pgxjob migrations are not numbered 1..n: {versions}")
    return migrations


def latest_version() -> int:
    """The newest schema version this version of pgxjob knows."""
    return load_migrations()[-1].version


def _use_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    # Only when missing: "create schema if not exists" needs CREATE on the database even when
    # the schema exists, which a least-privilege owner does not have.
    if conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone() is None:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    # Functions pin this search_path ("set search_path from current"); pg_temp last so a
    # temporary table cannot shadow pgxjob's tables.
    conn.execute(sql.SQL("set local search_path to {}, pg_temp").format(sql.Identifier(schema)))
    conn.execute(
        "create table if not exists pgxjob_schema_migrations ("
        " version int primary key,"
        " name text not null,"
        " applied_at timestamptz not null default now())"
    )


def current_version(conn: psycopg.Connection[Any], schema: str = "public") -> int | None:
    """The schema version of the database, or None when pgxjob was never migrated there."""
    row = conn.execute(
        "select to_regclass(format('%%I.pgxjob_schema_migrations', %s::text))", (schema,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    query = sql.SQL("select max(version) from {}.pgxjob_schema_migrations").format(
        sql.Identifier(schema)
    )
    version = conn.execute(query).fetchone()
    return None if version is None or version[0] is None else int(version[0])


def check_version(conn: psycopg.Connection[Any], schema: str = "public") -> int:
    """Raise SchemaVersionError unless the database has exactly this pgxjob's schema version."""
    version = current_version(conn, schema)
    latest = latest_version()
    if version is None:
        raise SchemaVersionError(
            f"pgxjob is not installed in schema {schema!r} of this database; "
            "run `pgxjob migrate` (or Scheduler.migrate()) first"
        )
    if version > latest:
        raise SchemaVersionError(
            f"the database has pgxjob schema version {version}, newer than this pgxjob "
            f"(version {latest}); upgrade the pgxjob package"
        )
    if version < latest:
        raise SchemaVersionError(
            f"the database has pgxjob schema version {version}, older than this pgxjob "
            f"(version {latest}); run `pgxjob migrate`"
        )
    return version


def migrate(
    conninfo_or_conn: str | psycopg.Connection[Any], *, schema: str = "public"
) -> list[int]:
    """Bring the database's pgxjob schema up to date; return the versions applied now.

    Each file runs in its own transaction holding a transaction-level advisory lock, so two
    migrators at once are safe: the second waits, then finds the work done. A database migrated
    by a newer pgxjob is refused with SchemaVersionError and left untouched.
    """
    if isinstance(conninfo_or_conn, str):
        with psycopg.connect(conninfo_or_conn, autocommit=True) as conn:
            return _migrate(conn, schema)
    return _migrate(conninfo_or_conn, schema)


def _migrate(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    # Nothing here lasts beyond a transaction, so that the migrator works through a pooler in
    # transaction mode (PgBouncer) as well as on a session of its own: no prepared statement,
    # only transaction-level advisory locks, and the search_path a migration sets for the
    # session (so that plain psql runs every statement of the file with pgxjob's private schema
    # on it) is put back before that migration's commit.
    previous = conn.prepare_threshold
    conn.prepare_threshold = None
    try:
        return _apply(conn, schema)
    finally:
        if not conn.closed:
            conn.prepare_threshold = previous


def _apply(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    migrations = load_migrations()
    latest = migrations[-1].version
    applied_now = []
    for migration in migrations:
        with conn.transaction():
            row = conn.execute("select current_setting('search_path')").fetchone()
            saved_search_path = "" if row is None else str(row[0])
            conn.execute("select pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _LOCK_KEY))
            _use_schema(conn, schema)
            row = conn.execute("select max(version) from pgxjob_schema_migrations").fetchone()
            applied = 0 if row is None or row[0] is None else int(row[0])
            if applied > latest:
                raise SchemaVersionError(
                    f"the database has pgxjob schema version {applied}, newer than this "
                    f"pgxjob (version {latest}); upgrade the pgxjob package instead of migrating"
                )
            if migration.version <= applied:
                continue
            logger.info("applying pgxjob migration %04d_%s", migration.version, migration.name)
            # No parameters: psycopg sends the file with the simple query protocol, which runs
            # every statement of the file in this transaction.
            conn.execute(migration.sql.encode())
            # From 0004 on a migration records itself too, so that a plain `psql -f` install
            # has the same version table; the row it wrote stands.
            conn.execute(
                "insert into pgxjob_schema_migrations (version, name) values (%s, %s)"
                " on conflict (version) do nothing",
                (migration.version, migration.name),
            )
            # Session-level, in this transaction: the server session, whichever client it
            # serves next, keeps the search_path it had.
            conn.execute("select set_config('search_path', %s, false)", (saved_search_path,))
            applied_now.append(migration.version)
    return applied_now
