"""SQLAlchemy 2 over psycopg 3: schedule(session) and schedule_async(async_session) join the
session's transaction; other drivers get the SQL recipe."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgxjob

sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import URL, create_engine, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402


def url_for(conninfo: str, driver: str) -> URL:
    params = conninfo_to_dict(conninfo)
    return URL.create(
        f"postgresql+{driver}",
        username=str(params["user"]) if params.get("user") else None,
        password=str(params["password"]) if params.get("password") else None,
        host=str(params["host"]) if params.get("host") else None,
        port=int(params["port"]) if params.get("port") else None,
        database=str(params["dbname"]),
    )


def job_ids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select id from pgxjob_asap_jobs union all select id from pgxjob_run_at_jobs order by 1"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def scheduler(clean_db: str) -> Iterator[pgxjob.Scheduler]:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("drop table if exists sa_orders")
        conn.execute("create table sa_orders (id serial primary key, item text not null)")
    scheduler = pgxjob.Scheduler(clean_db, register=False)
    yield scheduler
    scheduler.close()
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("drop table sa_orders")


def orders(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("select item from sa_orders order by id")]


def test_a_session_commits_the_job_with_its_rows_and_a_rollback_leaves_neither(
    clean_db: str, scheduler: pgxjob.Scheduler
) -> None:
    engine = create_engine(url_for(clean_db, "psycopg"))
    try:
        with Session(engine) as session:
            session.execute(text("insert into sa_orders (item) values ('tea')"))
            kept = scheduler.schedule(session, "default_type_for_sa", {"item": "tea"})
            assert job_ids(clean_db) == []  # not before the commit
            session.commit()
        with Session(engine) as session:
            # The job is the session's first statement: the session's transaction begins here.
            scheduler.schedule_many(session, "default_type_for_sa", [{"n": 1}, {"n": 2}])
            session.execute(text("insert into sa_orders (item) values ('coffee')"))
            session.rollback()
        with engine.begin() as connection:
            on_connection = scheduler.schedule(connection, "default_type_for_sa", priority=2)
        with pytest.raises(TypeError, match=r"engine\.begin"):
            scheduler.schedule(engine, "default_type_for_sa")
    finally:
        engine.dispose()
    assert job_ids(clean_db) == [kept, on_connection]
    assert orders(clean_db) == ["tea"]


def test_an_async_session_commits_the_job_with_its_rows_and_a_rollback_leaves_neither(
    clean_db: str, scheduler: pgxjob.Scheduler
) -> None:
    async def main() -> list[int]:
        engine = create_async_engine(url_for(clean_db, "psycopg"))
        try:
            async with AsyncSession(engine) as session:
                await session.execute(text("insert into sa_orders (item) values ('tea')"))
                kept = await scheduler.schedule_async(session, "default_type_for_sa", {"a": 1})
                await session.commit()
            async with AsyncSession(engine) as session:
                await scheduler.schedule_async(session, "default_type_for_sa", {"a": 2})
                await session.execute(text("insert into sa_orders (item) values ('coffee')"))
                await session.rollback()
            async with engine.begin() as connection:
                on_connection = await scheduler.schedule_many_async(
                    connection, "default_type_for_sa", [None, None]
                )
            async with AsyncSession(engine) as session:
                with pytest.raises(TypeError, match="schedule_async"):
                    scheduler.schedule(session, "default_type_for_sa")
        finally:
            await engine.dispose()
        return [kept, *on_connection]

    expected = asyncio.run(main())
    assert job_ids(clean_db) == expected
    assert orders(clean_db) == ["tea"]


def test_a_session_over_another_driver_gets_the_sql_recipe_which_works(
    clean_db: str, scheduler: pgxjob.Scheduler
) -> None:
    engine = create_engine(url_for(clean_db, "psycopg2"))
    try:
        with Session(engine) as session:
            with pytest.raises(TypeError, match="pgxjob_schedule"):
                scheduler.schedule(session, "default_type_for_sa")
            session.rollback()
            # The recipe the error gives, as the README shows it.
            job_id: Any = session.execute(
                text("select pgxjob_schedule(job_type => :t, params => cast(:p as json))"),
                {"t": "default_type_for_sa", "p": '{"via": "psycopg2"}'},
            ).scalar_one()
            session.commit()
    finally:
        engine.dispose()
    assert job_ids(clean_db) == [job_id]


@pytest.fixture(autouse=True)
def _job_type(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("select pgxjob_register_job_type('default_type_for_sa', 'default')")
