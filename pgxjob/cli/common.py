"""What every command shares: exit codes, the two error kinds, and how to reach the database."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgxjob import embedded, migrations, queries
from pgxjob.errors import PgxjobError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "pgxjob"


class UsageError(Exception):
    """The command line is wrong: exit code 2."""


class CommandError(Exception):
    """The command failed at run time: exit code 1."""


def resolve(args: argparse.Namespace) -> embedded.Database:
    try:
        return embedded.resolve_database(args.database_url)
    except embedded.EmbeddedUnavailableError as exc:
        raise CommandError(str(exc)) from exc


@contextlib.contextmanager
def connect(db: embedded.Database, schema: str) -> Iterator[psycopg.Connection[Any]]:
    try:
        options = conninfo_to_dict(db.conninfo)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"invalid database URL from {db.source}: {first_line(exc)}; use "
            "postgresql://user:password@host:port/dbname"
        ) from exc
    extra: dict[str, Any] = {}
    if "connect_timeout" not in options:
        extra["connect_timeout"] = 10
    if "application_name" not in options:
        extra["application_name"] = "pgxjob-cli"
    try:
        # No server-side prepared statements: each command works through a pooler in
        # transaction mode (PgBouncer) as on a direct connection.
        conn = psycopg.connect(db.conninfo, autocommit=True, prepare_threshold=None, **extra)
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot connect to the database {db.describe()}: {first_line(exc)}; check "
            "--database-url or DATABASE_URL and that the server is running"
        ) from exc
    # Every pgxjob function is called in the schema of --schema, whatever the search_path.
    queries.set_schema(conn, schema)
    with conn:
        yield conn


@contextlib.contextmanager
def migrated(db: embedded.Database, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(db, schema) as conn:
        try:
            migrations.check_version(conn, schema)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc
        yield conn


def note(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr)


def schema_of(args: argparse.Namespace) -> str:
    """The schema of --schema; public when it is not given."""
    return str(args.schema or "public")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
