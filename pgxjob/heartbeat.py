"""The heartbeat: proves a worker alive at jittered intervals, then reaps dead workers."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from pgxjob import queries
from pgxjob.results import ConnectionFactory

__all__ = ["Heartbeat"]


class Heartbeat:
    """Sends a worker's heartbeats and reaps workers that stopped sending theirs.

    Every ``min_delay`` plus up to ``jitter`` seconds: one call records the heartbeat, and a
    second call, in its own transaction, reaps dead workers (a heartbeat never waits on, nor
    rolls back with, a reap). When the worker's row is gone, ``on_lost`` gets the lost id.
    """

    def __init__(
        self,
        *,
        connection: ConnectionFactory,
        report: Callable[[BaseException], None],
        worker_id: Callable[[], int | None],
        on_lost: Callable[[int], None],
        min_delay: float,
        jitter: float,
    ) -> None:
        self._connection = connection
        self._report = report
        self._worker_id = worker_id
        self._on_lost = on_lost
        self._min_delay = min_delay
        self._jitter = jitter
        self.stopped = threading.Event()
        """Set by :meth:`stop`: no heartbeat is sent after it."""

    def stop(self) -> None:
        """Send no more heartbeats, so that the worker's row is reaped if it is not deleted."""
        self.stopped.set()

    def _heartbeat_loop(self) -> None:
        while not self.stopped.wait(self._min_delay + random.random() * self._jitter):
            worker_id = self._worker_id()
            if worker_id is None:
                continue
            try:
                with self._connection() as conn:
                    alive = queries.worker_heartbeat(conn, worker_id)
            except Exception as exc:
                self._report(exc)
                continue
            if not alive:
                self._on_lost(worker_id)
                continue
            try:
                with self._connection() as conn:
                    queries.reap_dead_workers(conn, worker_id)
            except Exception as exc:
                self._report(exc)
