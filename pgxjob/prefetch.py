"""The prefetch queue: jobs a worker has claimed, from the fetch until their result is recorded."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable

from pgxjob.jobs import Job

__all__ = ["JobQueue"]


class JobQueue:
    """Claimed jobs waiting to run, and the ids of every job the worker still owns.

    Two lanes: jobs of sync handlers, taken by runner threads (:meth:`take`), and jobs of async
    handlers, taken by the worker's event loop (:meth:`take_async`). At most ``limit`` jobs of
    either kind run at once. One lock guards both lanes, the running jobs and the closed flag,
    so that "no job is queued or running" (the worker is idle) and "no job starts after close"
    are exact. Each job is queued with the worker id it was claimed under: its result must
    carry that id.
    """

    def __init__(
        self,
        *,
        low_water: int,
        on_low_water: Callable[[], None],
        limit: int | None = None,
        on_async_ready: Callable[[], None] | None = None,
    ) -> None:
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        # Waited on by shutdown only, so that runner threads are not woken each time.
        self._idle = threading.Condition(lock)
        self._queue: collections.deque[tuple[Job, int]] = collections.deque()
        self._async_queue: collections.deque[tuple[Job, int]] = collections.deque()
        # Running jobs by the identity of their Job object: a retried job may be fetched and run
        # again before the runner of its first attempt has counted itself done.
        self._running: dict[int, Job] = {}
        self._closed = False
        self._low_water = low_water
        self._on_low_water = on_low_water
        self._limit = limit
        self._on_async_ready = on_async_ready
        # Ids of every job from its fetch until its result is recorded: what this worker knows
        # it owns. A count per id, since a retried job can be fetched again before the flush
        # that released it has taken its first run off.
        self._held: collections.Counter[int] = collections.Counter()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._async_queue)

    def put(self, jobs: list[Job], worker_id: int, *, is_async: Callable[[Job], bool]) -> bool:
        """Queue jobs claimed under worker_id; False (nothing queued) once the queue is closed.

        ``is_async(job)`` says which lane a job goes to.
        """
        added_async = False
        with self._cond:
            if self._closed:
                return False
            self._held.update(job.id for job in jobs)
            added = 0
            for job in jobs:
                if is_async(job):
                    self._async_queue.append((job, worker_id))
                    added_async = True
                else:
                    self._queue.append((job, worker_id))
                    added += 1
            if added:
                self._cond.notify(added)
        if added_async and self._on_async_ready is not None:
            self._on_async_ready()
        return True

    def _full(self) -> bool:
        return self._limit is not None and len(self._running) >= self._limit

    def take(self) -> tuple[Job, int] | None:
        """The next sync job for a runner, blocking while there is none; None once closed."""
        with self._cond:
            while not self._closed and (not self._queue or self._full()):
                self._cond.wait()
            if self._closed:
                return None
            before = len(self._queue) + len(self._async_queue)
            item = self._queue.popleft()
            self._running[id(item[0])] = item[0]
        if before - 1 == self._low_water:
            self._on_low_water()
        return item

    def take_async(self) -> list[tuple[Job, int]] | None:
        """Async jobs to start now, as many as the limit allows (maybe none); None once closed."""
        with self._cond:
            if self._closed:
                return None
            room = len(self._async_queue)
            if self._limit is not None:
                room = min(room, self._limit - len(self._running))
            if room <= 0:
                return []
            before = len(self._queue) + len(self._async_queue)
            items = [self._async_queue.popleft() for _ in range(room)]
            for job, _ in items:
                self._running[id(job)] = job
        if before > self._low_water >= before - len(items):
            self._on_low_water()
        return items

    def finished(self, job: Job) -> bool:
        """A job's run is over (its result is buffered). True when the worker is idle."""
        with self._cond:
            self._running.pop(id(job), None)
            idle = not self._running and not self._queue and not self._async_queue
            if self._queue:
                self._cond.notify()
            if not self._running:
                self._idle.notify_all()
            wake_async = bool(self._async_queue)
        if wake_async and self._on_async_ready is not None:
            self._on_async_ready()
        return idle

    def find(self, job_id: int) -> Job | None:
        """The job with this id if it is queued or running here, else None."""
        with self._cond:
            running = (job for job in self._running.values() if job.id == job_id)
            queued = (job for job, _ in (*self._queue, *self._async_queue) if job.id == job_id)
            return next(running, None) or next(queued, None)

    def wait_none_running(self, timeout: float | None = None) -> bool:
        """Wait until no job runs (after close: until every started job has finished)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        with self._cond:
            return len(self._running)

    def _clear(self) -> list[int]:
        dropped = [job.id for job, _ in (*self._queue, *self._async_queue)]
        self._queue.clear()
        self._async_queue.clear()
        self._forget(dropped)
        return dropped

    def drop(self) -> tuple[int, bool]:
        """Drop the queued jobs (their ownership is gone); return how many and whether idle."""
        with self._cond:
            dropped = self._clear()
            return len(dropped), not self._running

    def close(self) -> int:
        """Start no job from now on; drop the queued ones. Returns how many were dropped."""
        with self._cond:
            self._closed = True
            dropped = self._clear()
            self._cond.notify_all()
        if self._on_async_ready is not None:
            self._on_async_ready()
        return len(dropped)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def room(self, capacity: int) -> int:
        """How many more jobs fit below capacity."""
        with self._cond:
            return capacity - len(self._queue) - len(self._async_queue)

    def forget(self, job_ids: Iterable[int]) -> None:
        """The worker no longer owns these jobs: their results are recorded or set aside."""
        with self._cond:
            self._forget(job_ids)

    def known_ids(self) -> list[int]:
        """Ids of the jobs the worker owns: queued, running, or with a result not yet recorded."""
        with self._cond:
            return list(self._held)

    def _forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            count = self._held[job_id] - 1
            if count > 0:
                self._held[job_id] = count
            else:
                self._held.pop(job_id, None)
