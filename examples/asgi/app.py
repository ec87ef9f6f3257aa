"""A signup endpoint whose welcome email is a job scheduled in the request's transaction.

POST /signups inserts the signup and schedules ``send_welcome_email`` in one transaction: a
duplicate email makes the insert fail, which rolls the job back too, so nobody is welcomed twice
and no job refers to a signup that does not exist. The handler is a coroutine: the worker runs it
on its event loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pgxjob

SCHEMA = """
create table if not exists signups (
  id bigserial primary key,
  email text not null unique,
  welcomed_at timestamptz
)
"""


@dataclass(frozen=True)
class Welcome:
    """Params of send_welcome_email."""

    email: str


@pgxjob.job_type("send_welcome_email")
@pgxjob.unmarshal_params
async def send_welcome_email(job: pgxjob.Job, params: Welcome) -> dict[str, str]:
    # The mail is simulated; recording it is real, on an async connection of its own.
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"]) as conn:
        await conn.execute(
            "update signups set welcomed_at = now() where email = %s", (params.email,)
        )
    return {"sent_to": params.email}


def make_scheduler(conninfo: str) -> pgxjob.Scheduler:
    """The Scheduler with the job types, for ``pgxjob worker examples.asgi.app:make_scheduler``."""
    os.environ["DATABASE_URL"] = conninfo
    return pgxjob.Scheduler(conninfo, job_types=[send_welcome_email])


async def create_signup(request: Request) -> JSONResponse:
    body = await request.json()
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or "@" not in email:
        return JSONResponse({"error": "give an email"}, status_code=422)
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    scheduler: pgxjob.Scheduler = request.app.state.scheduler
    try:
        # One transaction: committed when the block ends, rolled back if anything in it raises.
        async with pool.connection() as conn, conn.transaction():
            job_id = await send_welcome_email.schedule_async(
                conn, Welcome(email), scheduler=scheduler
            )
            cursor = await conn.execute(
                "insert into signups (email) values (%s) returning id", (email,)
            )
            row = await cursor.fetchone()
    except psycopg.errors.UniqueViolation:
        return JSONResponse({"error": f"{email} has signed up already"}, status_code=409)
    assert row is not None
    return JSONResponse({"signup_id": row[0], "job_id": job_id}, status_code=201)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app(database_url: str | None = None) -> Starlette:
    """The ASGI app (``uvicorn --factory examples.asgi.app:create_app``)."""
    conninfo = database_url or os.environ["DATABASE_URL"]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The web process starts no worker; its Scheduler registers the job types (in the
        # background), so the endpoint can schedule before any worker has run.
        app.state.scheduler = make_scheduler(conninfo)
        app.state.pool = AsyncConnectionPool(conninfo, min_size=1, max_size=4, open=False)
        await app.state.pool.open()
        async with app.state.pool.connection() as conn:
            await conn.execute(SCHEMA)
        try:
            yield
        finally:
            await app.state.pool.close()
            await app.state.scheduler.aclose()

    return Starlette(
        routes=[
            Route("/signups", create_signup, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )
