"""What a caller may pass as ``conn``: resolved to the psycopg connection of its transaction."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["async_connection", "sync_connection"]

_RECIPE = (
    "With another driver, schedule in SQL inside your transaction: "
    "select pgxjob_schedule(job_type => 'name', params => '{...}'::json) "
    "(README, 'Other drivers')"
)


def _module(conn: object) -> str:
    return type(conn).__module__ or ""


def _unsupported(conn: object, front: str) -> TypeError:
    module = _module(conn)
    name = f"{module}.{type(conn).__qualname__}"
    if module.startswith("django."):
        return TypeError(
            f"conn is a Django {name}; schedule with pgxjob.contrib.django.schedule(...), "
            "which uses Django's connection and joins its transaction.atomic()"
        )
    return TypeError(
        f"conn must be {front}, or None for the scheduler's own connection; got {name}. {_RECIPE}"
    )


def sync_connection(conn: object) -> psycopg.Connection[Any]:
    """The psycopg connection behind conn: itself, or a SQLAlchemy Session's or Connection's.

    A SQLAlchemy session begins its transaction here if it has none, so the job commits or
    rolls back with it.
    """
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            "conn is a psycopg.AsyncConnection; from async code use "
            "`await scheduler.schedule_async(conn, ...)` (or schedule_many_async, cancel_async)"
        )
    if _module(conn).startswith("sqlalchemy."):
        from pgxjob.contrib import sqlalchemy

        return sqlalchemy.sync_driver_connection(conn)
    raise _unsupported(
        conn, "a psycopg.Connection or a SQLAlchemy Session or Connection over psycopg 3"
    )


async def async_connection(conn: object) -> psycopg.AsyncConnection[Any]:
    """The psycopg async connection behind conn: itself, or a SQLAlchemy AsyncSession's or
    AsyncConnection's (whose transaction begins here if it has none)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection):
        raise TypeError(
            "conn is a sync psycopg.Connection; use scheduler.schedule(conn, ...), or pass a "
            "psycopg.AsyncConnection to schedule_async"
        )
    if _module(conn).startswith("sqlalchemy."):
        from pgxjob.contrib import sqlalchemy

        return await sqlalchemy.async_driver_connection(conn)
    raise _unsupported(
        conn,
        "a psycopg.AsyncConnection or a SQLAlchemy AsyncSession or AsyncConnection over psycopg 3",
    )
