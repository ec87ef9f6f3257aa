"""The scheduler's own async connections on one event loop, for ``schedule_async(None, ...)``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["LoopConnections"]

# A connection idle for longer than this is checked with a round trip before it is lent, so
# that one a server restart broke is replaced rather than failing a call.
_CHECK_AFTER = 5.0


class LoopConnections:
    """Autocommit connections opened on demand on one event loop and kept for reuse.

    At most ``max_size`` are lent at once (others wait) and as many are kept idle. Unlike
    ``psycopg_pool.AsyncConnectionPool`` it runs no background task: ``asyncio.run`` cancels
    every task left when its coroutine returns, before it finalizes async generators (where
    these connections are closed), and a pool's maintenance tasks do not always survive that.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]], *, max_size: int
    ) -> None:
        self._connect = connect
        self._max_size = max_size
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Lend a connection for the block; it goes back when the block ends without error."""
        async with self._slots:
            conn = await self._take()
            reusable = False
            try:
                yield conn
                reusable = True
            finally:
                if (
                    reusable
                    and not self._closed
                    and not conn.closed
                    and conn.info.transaction_status == TransactionStatus.IDLE
                ):
                    self._idle.append((conn, time.monotonic()))
                else:
                    await conn.close()

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn, since = self._idle.pop()
            if conn.closed:
                continue
            if time.monotonic() - since < _CHECK_AFTER:
                return conn
            try:
                await conn.execute("select 1")
            except psycopg.Error:
                await conn.close()
                continue
            return conn
        return await self._connect()

    async def close(self) -> None:
        """Close the idle connections; the lent ones close when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()
