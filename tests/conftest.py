"""Shared pytest fixtures: scratch databases on the server tests/dbserver.py finds.

- ``db_url``: one migrated scratch database for the whole session (shared, so clean it).
- ``clean_db``: ``db_url`` with every pgxjob job, worker and run row removed before the test;
  groups, job types and the version table stay.
- ``empty_db_url``: a fresh, unmigrated scratch database of the test's own, dropped afterwards.
- ``conn``: an autocommit connection to ``clean_db``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgxjob.migrations import migrate
from tests.dbserver import scratch_database

# Lookup rows and the migration record survive cleaning: registration is idempotent, and the
# default group must keep id 1.
_KEPT_TABLES = ("pgxjob_groups", "pgxjob_job_types", "pgxjob_schema_migrations")


@pytest.fixture(scope="session")
def db_url() -> Iterator[str]:
    """Conninfo of a scratch database migrated to the latest schema, shared by the session.

    Tests that need an empty queue should use ``clean_db`` instead; tests that change the schema
    or need a database of their own should use ``empty_db_url``.
    """
    with scratch_database("pgxjob_test") as conninfo:
        migrate(conninfo)
        yield conninfo


def truncate_pgxjob_tables(conninfo: str) -> None:
    """Empty every pgxjob table of the public schema except groups, job types and versions.

    The tables are found in the catalog, so tables added by later migrations are emptied too.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "select c.relname from pg_class c"
            " where c.relnamespace = 'pgxjob_public'::regnamespace and c.relkind in ('r', 'p')"
            "   and c.relname like 'pgxjob\\_%%' and not (c.relname = any (%s))",
            (list(_KEPT_TABLES),),
        ).fetchall()
        if not rows:
            return
        # A worker a previous test leaked would hold locks; fail loudly instead of hanging.
        conn.execute("set lock_timeout = '10s'")
        conn.execute(
            sql.SQL("truncate {}").format(
                sql.SQL(", ").join(sql.Identifier("pgxjob_public", r[0]) for r in rows)
            )
        )


@pytest.fixture
def clean_db(db_url: str) -> str:
    """Conninfo of the session's migrated database, emptied of jobs, workers and runs."""
    truncate_pgxjob_tables(db_url)
    return db_url


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """Conninfo of a fresh database without pgxjob, dropped after the test."""
    with scratch_database("pgxjob_empty") as conninfo:
        yield conninfo


@pytest.fixture
def conn(clean_db: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``clean_db``, closed after the test."""
    with psycopg.connect(clean_db, autocommit=True) as connection:
        yield connection
