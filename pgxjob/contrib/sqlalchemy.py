"""SQLAlchemy 2: the psycopg connection under a Session or Connection, sync or async.

``scheduler.schedule(session, ...)`` and ``await scheduler.schedule_async(async_session, ...)``
come here to run pgxjob's SQL on the same database connection, inside the session's
transaction: the job commits or rolls back with it. Needs the psycopg 3 dialect
(``postgresql+psycopg://``); install ``pgxjob[sqlalchemy]``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

__all__ = ["async_driver_connection", "sync_driver_connection"]


def _other_driver(driver: object) -> TypeError:
    name = f"{type(driver).__module__}.{type(driver).__qualname__}"
    return TypeError(
        f"this SQLAlchemy engine's driver connection is a {name}; pgxjob joins SQLAlchemy "
        "transactions over psycopg 3 (URL postgresql+psycopg://...). With another driver, "
        'schedule in SQL: session.execute(text("select pgxjob_schedule(job_type => :t, '
        'params => cast(:p as json))"), {"t": ..., "p": json.dumps(...)})'
    )


def sync_driver_connection(obj: object) -> psycopg.Connection[Any]:
    """The psycopg.Connection of a Session's transaction (begun if need be) or a Connection's."""
    if isinstance(obj, scoped_session):
        obj = obj()
    if isinstance(obj, AsyncSession | AsyncConnection | async_scoped_session):
        raise TypeError(
            f"conn is a SQLAlchemy {type(obj).__name__}; from async code use "
            "`await scheduler.schedule_async(conn, ...)`"
        )
    if isinstance(obj, Session):
        obj = obj.connection()
    if not isinstance(obj, Connection):
        raise TypeError(
            f"conn is a SQLAlchemy {type(obj).__name__}; pass a Session or a Connection "
            "(an Engine has no transaction to join: use `with engine.begin() as conn`)"
        )
    driver = obj.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise _other_driver(driver)
    return driver


async def async_driver_connection(obj: object) -> psycopg.AsyncConnection[Any]:
    """The psycopg.AsyncConnection of an AsyncSession's or AsyncConnection's transaction."""
    if isinstance(obj, async_scoped_session):
        obj = obj()
    if isinstance(obj, Session | Connection | scoped_session):
        raise TypeError(
            f"conn is a sync SQLAlchemy {type(obj).__name__}; use scheduler.schedule(conn, ...)"
        )
    if isinstance(obj, AsyncSession):
        obj = await obj.connection()
    if not isinstance(obj, AsyncConnection):
        raise TypeError(
            f"conn is a SQLAlchemy {type(obj).__name__}; pass an AsyncSession or an "
            "AsyncConnection (an AsyncEngine has no transaction to join: use "
            "`async with engine.begin() as conn`)"
        )
    raw = await obj.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise _other_driver(driver)
    return driver
