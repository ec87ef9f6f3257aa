"""The prefetch queue: jobs a worker has claimed, from the fetch until their result is recorded."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

from pgxjob.jobs import Job

__all__ = ["JobQueue"]


class JobQueue:
    """Claimed jobs waiting for a runner, and the ids of every job the worker still owns.

    One lock guards the queue, the count of running jobs and the closed flag, so that "no job
    is queued or running" (the worker is idle) and "no job starts after close" are exact.
    Each job is queued with the worker id it was claimed under: its result must carry that id.
    """

    def __init__(self, *, low_water: int, on_low_water: collections.abc.Callable[[], None]) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[Job, int]] = collections.deque()
        # Running jobs by the identity of their Job object: a retried job may be fetched and run
        # again before the runner of its first attempt has counted itself done.
        self._running: dict[int, Job] = {}
        self._closed = False
        self._low_water = low_water
        self._on_low_water = on_low_water
        # Ids of every job from its fetch until its result is recorded: what this worker knows
        # it owns. A count per id, since a retried job can be fetched again before the flush
        # that released it has taken its first run off.
        self._held: collections.Counter[int] = collections.Counter()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def put(self, jobs: list[Job], worker_id: int) -> bool:
        """Queue jobs claimed under worker_id; False (nothing queued) once the queue is closed."""
        with self._cond:
            if self._closed:
                return False
            self._held.update(job.id for job in jobs)
            self._queue.extend((job, worker_id) for job in jobs)
            self._cond.notify(len(jobs))
            return True

    def take(self) -> tuple[Job, int] | None:
        """The next job for a runner, blocking while there is none; None once closed."""
        low = False
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item = self._queue.popleft()
            self._running[id(item[0])] = item[0]
            low = len(self._queue) == self._low_water
        if low:
            self._on_low_water()
        return item

    def finished(self, job: Job) -> bool:
        """A runner is done with its job (its result is buffered). True when the worker is idle."""
        with self._cond:
            self._running.pop(id(job), None)
            return not self._running and not self._queue

    def find(self, job_id: int) -> Job | None:
        """The job with this id if it is queued or running here, else None."""
        with self._cond:
            running = (job for job in self._running.values() if job.id == job_id)
            queued = (job for job, _ in self._queue if job.id == job_id)
            return next(running, None) or next(queued, None)

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        with self._cond:
            return len(self._running)

    def drop(self) -> tuple[int, bool]:
        """Drop the queued jobs (their ownership is gone); return how many and whether idle."""
        with self._cond:
            dropped = [job.id for job, _ in self._queue]
            self._queue.clear()
            self._forget(dropped)
            return len(dropped), not self._running

    def close(self) -> int:
        """Start no job from now on; drop the queued ones. Returns how many were dropped."""
        with self._cond:
            self._closed = True
            dropped = [job.id for job, _ in self._queue]
            self._queue.clear()
            self._forget(dropped)
            self._cond.notify_all()
            return len(dropped)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def room(self, capacity: int) -> int:
        """How many more jobs fit below capacity."""
        with self._cond:
            return capacity - len(self._queue)

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
