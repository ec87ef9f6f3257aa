"""The result buffer: finished runs, recorded in batches, fenced by worker id, poison set aside."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from pgxjob import metrics, queries
from pgxjob.errors import PgxjobError
from pgxjob.queries import JobResult

__all__ = ["ConnectionFactory", "ResultBuffer", "UnrecordableResultError"]

logger = logging.getLogger(__name__)

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
"""Lends an autocommit connection for the duration of a ``with`` block."""

# Results are sent in chunks of at most this many, so a backlog built up during an outage does
# not become one enormous statement.
_MAX_FLUSH_CHUNK = 5000
# The most results waiting to be recorded (buffered or being sent) before the worker stops
# claiming jobs: a flush slower than the handlers must not let memory grow without bound.
_MIN_MAX_PENDING = 5000


class UnrecordableResultError(PgxjobError):
    """The database refused one job's result even on its own; it was set aside, not recorded.

    The job stays owned by the worker until the worker unregisters, and then runs again.
    """


def _report_flush(seconds: float) -> None:
    recorder = metrics.recorder
    if recorder is not None:
        try:
            recorder.results_flushed(seconds)
        except Exception:
            logger.exception("pgxjob: the metrics recorder failed")


def is_curable(exc: BaseException) -> bool:
    """Whether retrying the same statement later may succeed.

    Connection errors, pool timeouts, serialization failures (40001) and deadlocks (40P01) are
    all ``psycopg.OperationalError``s; data errors and bugs are not, and never go away.
    """
    return isinstance(exc, psycopg.OperationalError)


class ResultBuffer:
    """Buffers finished runs and records them, from its own thread, in one call per batch.

    A batch goes out when it holds ``max_results``, when its oldest result is ``max_age`` seconds
    old, at once after :meth:`flush_soon` (the worker went idle), and continuously after
    :meth:`close` until it is empty. Each result carries the worker id its job was claimed
    under; the database ignores it where that worker no longer owns the job, and such stale
    results are logged in one warning per flush. A batch failing with an error a retry can cure
    is kept and retried; any other error splits the batch in halves until only the rows that
    fail on their own are left: each is set aside and reported, the rest are recorded.

    The worker claims no more jobs while :meth:`room` is not positive (the results waiting,
    buffered or being sent, reached ``max_pending``); ``on_room`` is called when a flush makes
    room again, so that memory stays bounded when recording is slower than running.
    """

    def __init__(
        self,
        *,
        connection: ConnectionFactory,
        report: Callable[[BaseException], None],
        on_done: Callable[[list[int]], None],
        max_results: int,
        max_age: float,
        on_room: Callable[[], None] = lambda: None,
    ) -> None:
        self._connection = connection
        self._report = report
        self._on_done = on_done
        self._on_room = on_room
        self._max_results = max_results
        self._max_age = max_age
        self.max_pending = max(_MIN_MAX_PENDING, 10 * max_results)
        self._in_flight = 0
        self._throttled = False
        self._cond = threading.Condition()
        self._results: list[tuple[int, JobResult]] = []
        self._oldest_at = 0.0
        self._flush_now = False
        self._closing = False
        self._closed = False
        self._unrecorded: list[tuple[int, JobResult]] = []
        self.abandoned = threading.Event()
        """Set when the worker gives up recording (deadline passed): the loop ends at once."""

    def add(self, worker_id: int, result: JobResult) -> None:
        """Buffer one run's result; ``worker_id`` is the id its job was claimed under."""
        with self._cond:
            self._results.append((worker_id, result))
            count = len(self._results)
            if count == 1:
                self._oldest_at = time.monotonic()
                self._cond.notify()
            elif count >= self._max_results:
                self._cond.notify()

    def flush_soon(self) -> None:
        """Record what is buffered now, without waiting for its age (the worker is idle)."""
        with self._cond:
            self._flush_now = True
            self._cond.notify()

    def flush_eagerly(self) -> None:
        """Record every result as soon as it arrives (shutdown has started)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def close(self) -> None:
        """No more results will come: record what is left; the loop then ends."""
        with self._cond:
            self._closing = self._closed = True
            self._cond.notify()

    def abandon(self) -> None:
        """Stop recording: the loop ends without sending what is left."""
        self.abandoned.set()
        with self._cond:
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._results)

    def room(self) -> int:
        """How many more results may wait before the worker must stop claiming jobs."""
        with self._cond:
            room = self.max_pending - len(self._results) - self._in_flight
            self._throttled = room <= 0
            return room

    def _next_batch(self) -> list[tuple[int, JobResult]] | None:
        with self._cond:
            while True:
                if self.abandoned.is_set():
                    return None
                count = len(self._results)
                if count == 0:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                if count >= self._max_results or self._closing or self._flush_now:
                    break
                wait = self._max_age - (time.monotonic() - self._oldest_at)
                if wait <= 0:
                    break
                self._cond.wait(wait)
            batch = self._results[:_MAX_FLUSH_CHUNK]
            del self._results[:_MAX_FLUSH_CHUNK]
            self._in_flight = len(batch)
            self._oldest_at = time.monotonic()
            # An idle flush covers what is still buffered after a capped chunk too.
            if not self._results:
                self._flush_now = False
            return batch

    def _put_back(self, batch: list[tuple[int, JobResult]]) -> None:
        with self._cond:
            self._results[:0] = batch
            self._in_flight = 0
            if batch:
                self._oldest_at = time.monotonic()
            made_room = self._throttled and len(self._results) < self.max_pending
            if made_room:
                self._throttled = False
        if made_room:
            self._on_room()

    def _flush_loop(self) -> None:
        """The flusher thread's loop: returns once closed and empty, or abandoned."""
        delay = 0.05
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # Whatever happens, what was not recorded goes back in front: never dropped.
            self._unrecorded = batch
            try:
                self._record(batch)
                delay = 0.05
            except Exception as exc:
                # Only errors a retry can cure get here: a lost connection, a pool timeout, a
                # serialization failure or a deadlock. Retry after a pause.
                self._report(exc)
                self.abandoned.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._put_back(self._unrecorded)
                self._unrecorded = []

    def _record(self, batch: list[tuple[int, JobResult]]) -> None:
        # One call per fencing token: results of jobs claimed under an earlier id of this worker
        # (it was reaped and registered again) go out with that id, and come back stale.
        by_worker: dict[int, list[tuple[int, JobResult]]] = {}
        for item in batch:
            by_worker.setdefault(item[0], []).append(item)
        parts = list(by_worker.values())
        stale: list[int] = []
        try:
            while parts:
                part = parts[0]
                try:
                    began = time.perf_counter()
                    with self._connection() as conn:
                        outcome = queries.record_job_results(
                            conn, part[0][0], [result for _, result in part]
                        )
                    elapsed = time.perf_counter() - began
                except Exception as exc:
                    if is_curable(exc):
                        raise
                    # A data error would fail the same way again: split the batch so that
                    # only the row that fails on its own is set aside.
                    if len(part) > 1:
                        half = len(part) // 2
                        parts[0:1] = [part[:half], part[half:]]
                    else:
                        parts.pop(0)
                        self._set_aside(part[0][1], exc)
                    self._unrecorded = [item for p in parts for item in p]
                    continue
                parts.pop(0)
                self._unrecorded = [item for p in parts for item in p]
                _report_flush(elapsed)
                stale.extend(outcome.stale_job_ids)
                self._on_done([result.job_id for _, result in part])
        finally:
            self._warn_stale(stale)

    def _set_aside(self, result: JobResult, exc: Exception) -> None:
        self._on_done([result.job_id])
        error = UnrecordableResultError(
            f"pgxjob: the result of job {result.job_id} cannot be recorded and was set aside "
            f"({type(exc).__name__}: {exc}); the job runs again once this worker unregisters"
        )
        error.__cause__ = exc
        self._report(error)

    def _warn_stale(self, stale: list[int]) -> None:
        if stale:
            logger.warning(
                "pgxjob: %d results were stale and changed nothing: this worker no longer owned "
                "jobs %s (it was reaped while they ran)",
                len(stale),
                sorted(stale),
            )
