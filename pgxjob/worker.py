"""The worker: its fetch loop, handler threads, result flusher and heartbeat, and its shutdown."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg

from pgxjob import queries
from pgxjob.errors import WorkerNotRegisteredError
from pgxjob.jobs import ErrorWithRetry, Job, JobGroup, JobType, error_text
from pgxjob.queries import FetchedJob, JobResult
from pgxjob.scheduler import Seconds, seconds

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler

__all__ = ["ShouldLogJobRun", "Worker"]

logger = logging.getLogger(__name__)

ShouldLogJobRun = Callable[["Worker", Job, dt.datetime, dt.datetime, BaseException | None], bool]
"""Decides per run whether it goes to the run log: (worker, job, started_at, finished_at, err)."""

_worker_numbers = itertools.count(1)

# Results are sent in chunks of at most this many, so a backlog built up during an outage does
# not become one enormous statement.
_MAX_FLUSH_CHUNK = 5000


class NoHandlerError(LookupError):
    """The worker's process has no handler for the job's type."""


class Worker:
    """Runs the jobs of one group. Create it with :meth:`Scheduler.start_worker`.

    The worker registers itself in the database in the background: ``startup_complete`` is set
    once it has, and ``id`` is its id from then on.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        group_name: str,
        max_concurrent_jobs: int,
        max_prefetched_jobs: int,
        poll_interval: Seconds,
        max_buffered_job_results: int,
        max_buffered_job_result_age: Seconds,
        should_log_job_run: ShouldLogJobRun | None,
        min_heartbeat_delay: Seconds,
        heartbeat_delay_jitter: Seconds,
        worker_dead_without_heartbeat: Seconds | None,
    ) -> None:
        for name, value in (
            ("max_concurrent_jobs", max_concurrent_jobs),
            ("max_prefetched_jobs", max_prefetched_jobs),
            ("max_buffered_job_results", max_buffered_job_results),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._scheduler = scheduler
        self.group_name = group_name
        self._max_concurrent_jobs = max_concurrent_jobs
        self._max_prefetched_jobs = max_prefetched_jobs
        self._poll_interval = seconds(poll_interval, "poll_interval")
        self._max_buffered_job_results = max_buffered_job_results
        self._max_buffered_job_result_age = seconds(
            max_buffered_job_result_age, "max_buffered_job_result_age", allow_zero=True
        )
        self._should_log_job_run = should_log_job_run
        self._min_heartbeat_delay = seconds(min_heartbeat_delay, "min_heartbeat_delay")
        self._heartbeat_delay_jitter = seconds(
            heartbeat_delay_jitter, "heartbeat_delay_jitter", allow_zero=True
        )
        if worker_dead_without_heartbeat is None:
            self._dead_after = 5 * (self._min_heartbeat_delay + self._heartbeat_delay_jitter)
        else:
            self._dead_after = seconds(
                worker_dead_without_heartbeat, "worker_dead_without_heartbeat"
            )
        if self._dead_after <= self._min_heartbeat_delay + self._heartbeat_delay_jitter:
            raise ValueError(
                "worker_dead_without_heartbeat must be longer than min_heartbeat_delay + "
                "heartbeat_delay_jitter, or live workers would be reaped"
            )

        self._name = f"pgxjob-worker-{group_name}-{next(_worker_numbers)}"
        self.startup_complete = threading.Event()
        """Set once the worker is registered in the database and fetching."""
        self.shutdown_requested = threading.Event()
        """Set when shutdown starts; each job this worker runs sees it as job.shutdown_requested."""
        self._id: int | None = None
        self._group: JobGroup | None = None
        self._wake = threading.Event()
        self._lost = threading.Event()
        self._stopped = threading.Event()
        self._heartbeat_stop = threading.Event()

        # Prefetched jobs not yet started. The fetch loop is woken when it falls to low_water.
        self._queue: collections.deque[Job] = collections.deque()
        self._queue_cond = threading.Condition()
        self._low_water = max_prefetched_jobs // 2
        self._runners_stop = False
        # Ids of every job from its fetch until its result is recorded: what this worker knows
        # it owns. After a fetch whose reply was lost, owned jobs outside it are released. A
        # count per id, since a retried job can be fetched again before the flush that released
        # it has taken its first run off.
        self._held: collections.Counter[int] = collections.Counter()
        self._held_lock = threading.Lock()
        self._fetch_failed = False

        self._results: list[JobResult] = []
        self._results_cond = threading.Condition()
        self._oldest_result_at = 0.0
        self._flush_all = False
        # Jobs taken by a runner whose result is not buffered yet. When it falls to zero with
        # nothing queued, the worker is idle and flushes at once instead of letting the last
        # results wait for max_buffered_job_result_age.
        self._running = 0
        self._flush_now = False

        self._fetch_thread = threading.Thread(target=self._fetch_loop, name=self._name, daemon=True)
        self._runners = [
            threading.Thread(target=self._run_loop, name=f"{self._name}-run-{n}", daemon=True)
            for n in range(1, max_concurrent_jobs + 1)
        ]
        self._flush_thread = threading.Thread(
            target=self._flush_loop, name=f"{self._name}-flush", daemon=True
        )
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name=f"{self._name}-heartbeat", daemon=True
        )
        self._shutdown_thread: threading.Thread | None = None
        self._shutdown_lock = threading.Lock()

    def start(self) -> None:
        """Start the worker's threads (called by Scheduler.start_worker)."""
        self._fetch_thread.start()
        for runner in self._runners:
            runner.start()
        self._flush_thread.start()
        self._heartbeat_thread.start()

    @property
    def id(self) -> int | None:
        """The worker's id in the database; None until startup is complete."""
        return self._id

    @property
    def name(self) -> str:
        """The worker's name, also the prefix of its threads' names."""
        return self._name

    def signal(self) -> None:
        """Wake the worker to look for jobs now. Safe from any thread; never blocks."""
        self._wake.set()

    def __repr__(self) -> str:
        return f"<Worker {self._name} id={self._id}>"

    # -- registration -----------------------------------------------------------------------

    def _register(self) -> bool:
        delay = 0.05
        while not self.shutdown_requested.is_set():
            try:
                self._scheduler.wait_ready(timeout=min(5.0, self._poll_interval))
                self._group = self._scheduler.job_group(self.group_name)
                with self._scheduler.connection() as conn:
                    worker_id = queries.register_worker(
                        conn, self.group_name, dt.timedelta(seconds=self._dead_after)
                    )
            except Exception as exc:
                self._scheduler.handle_error(exc)
                self.shutdown_requested.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._id = worker_id
            self._lost.clear()
            logger.info("pgxjob worker %s registered with id %s", self._name, worker_id)
            self.startup_complete.set()
            return True
        return False

    def _handle_lost(self) -> None:
        # The row was reaped while this process lived: the database has already released our
        # prefetched jobs, and other workers may be running them, so we must not start them.
        with self._queue_cond:
            dropped = len(self._queue)
            self._forget_held(job.id for job in self._queue)
            self._queue.clear()
        logger.warning(
            "pgxjob worker %s (id %s) was reaped while alive; dropped %d prefetched jobs, "
            "registering again",
            self._name,
            self._id,
            dropped,
        )
        self._id = None

    # -- fetching -------------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        delay = 0.05
        while not self.shutdown_requested.is_set():
            if self._lost.is_set():
                self._handle_lost()
            if self._id is None and not self._register():
                break
            worker_id = self._id
            assert worker_id is not None
            with self._queue_cond:
                wanted = self._max_prefetched_jobs - len(self._queue)
            if wanted <= 0:
                # Full: the runners wake us when the queue falls to low water.
                self._wake.clear()
                self._wake.wait(self._poll_interval)
                continue
            # Cleared before fetching, so a notification that arrives meanwhile is not lost.
            self._wake.clear()
            try:
                with self._scheduler.connection() as conn:
                    if self._fetch_failed:
                        # The failed fetch may have claimed jobs whose rows never arrived.
                        with self._held_lock:
                            known = list(self._held)
                        queries.release_unknown_jobs(conn, worker_id, known)
                        self._fetch_failed = False
                    rows = queries.fetch_jobs(conn, worker_id, wanted)
                    # Queued at once: claimed jobs must not be stranded by a later error.
                    if rows:
                        self._enqueue([self._job(row) for row in rows])
                    sleep = None if len(rows) == wanted else self._idle_delay(conn, worker_id)
            except WorkerNotRegisteredError:
                self._lost.set()
                continue
            except Exception as exc:
                self._fetch_failed = True
                self._scheduler.handle_error(exc)
                self.shutdown_requested.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            if sleep is not None:
                self._wake.wait(sleep)

    def _idle_delay(self, conn: psycopg.Connection[Any], worker_id: int) -> float:
        # Caught up: sleep until signalled, until the group's next timed job is due (on the
        # database's clock), or for poll_interval at most.
        next_run_in = queries.next_run_in(conn, worker_id)
        if next_run_in is None:
            return self._poll_interval
        # A due job we could not claim is being claimed by another worker: look again soon.
        return min(self._poll_interval, max(next_run_in.total_seconds(), 0.01))

    def _job(self, row: FetchedJob) -> Job:
        assert self._group is not None
        job_type = self._scheduler._handler(row.type_name)
        if job_type is None:
            job_type = JobType(row.type_id, row.type_name, self._group, _no_handler(row.type_name))
        return Job(
            id=row.id,
            group=self._group,
            type=job_type,
            params=row.params,
            inserted_at=row.inserted_at,
            run_at=row.run_at,
            last_error=row.last_error,
            error_count=row.error_count,
            asap=row.asap,
            shutdown_requested=self.shutdown_requested,
        )

    def _forget_held(self, job_ids: Iterable[int]) -> None:
        with self._held_lock:
            for job_id in job_ids:
                count = self._held[job_id] - 1
                if count > 0:
                    self._held[job_id] = count
                else:
                    self._held.pop(job_id, None)

    def _enqueue(self, jobs: list[Job]) -> None:
        with self._held_lock:
            self._held.update(job.id for job in jobs)
        with self._queue_cond:
            self._queue.extend(jobs)
            self._queue_cond.notify(len(jobs))

    # -- running --------------------------------------------------------------------------------

    def _take(self) -> Job | None:
        with self._queue_cond:
            while not self._queue and not self._runners_stop:
                self._queue_cond.wait()
            if self._runners_stop:
                return None
            job = self._queue.popleft()
            self._running += 1
            if len(self._queue) == self._low_water:
                self._wake.set()
            return job

    def _run_loop(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            started_at = dt.datetime.now(dt.UTC)
            err: BaseException | None = None
            try:
                job.type.run_job(job)
            except BaseException as exc:  # a handler's error of any kind is the job's result
                err = exc
            finished_at = dt.datetime.now(dt.UTC)
            self._add_result(job, started_at, finished_at, err)

    def _add_result(
        self, job: Job, started_at: dt.datetime, finished_at: dt.datetime, err: BaseException | None
    ) -> None:
        log = True
        if self._should_log_job_run is not None:
            try:
                log = bool(self._should_log_job_run(self, job, started_at, finished_at, err))
            except Exception as exc:
                self._scheduler.handle_error(exc)
        retry_at = max_retries = base_delay = None
        error = None
        if isinstance(err, ErrorWithRetry):
            error = error_text(err.err)
            retry_at, max_retries, base_delay = (
                err.retry_at,
                err.backoff_max_retries,
                err.backoff_base_delay,
            )
        elif err is not None:
            error = error_text(err)
        result = JobResult(
            job.id,
            job.error_count,
            started_at,
            finished_at,
            error,
            retry_at,
            max_retries,
            base_delay,
            log,
        )
        with self._queue_cond:
            self._running -= 1
            idle = self._running == 0 and not self._queue
        with self._results_cond:
            self._results.append(result)
            count = len(self._results)
            if count == 1:
                self._oldest_result_at = time.monotonic()
            if idle:
                self._flush_now = True
            if count == 1 or idle or count >= self._max_buffered_job_results:
                self._results_cond.notify()

    # -- recording results ---------------------------------------------------------------------

    def _flush_loop(self) -> None:
        delay = 0.05
        while True:
            with self._results_cond:
                while True:
                    count = len(self._results)
                    if self._flush_all and count == 0:
                        return
                    if count and (
                        count >= self._max_buffered_job_results
                        or self._flush_all
                        or self._flush_now
                    ):
                        break
                    if count:
                        age = time.monotonic() - self._oldest_result_at
                        wait = self._max_buffered_job_result_age - age
                        if wait <= 0:
                            break
                        self._results_cond.wait(wait)
                    else:
                        self._results_cond.wait()
                batch = self._results[:_MAX_FLUSH_CHUNK]
                del self._results[:_MAX_FLUSH_CHUNK]
                self._oldest_result_at = time.monotonic()
                self._flush_now = False
            try:
                with self._scheduler.connection() as conn:
                    queries.record_job_results(conn, self._id or 0, batch)
                self._forget_held(result.job_id for result in batch)
                delay = 0.05
            except Exception as exc:
                # Never dropped: put the batch back in front and try again after a pause.
                self._scheduler.handle_error(exc)
                with self._results_cond:
                    self._results[:0] = batch
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- heartbeat ------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(
            self._min_heartbeat_delay + random.random() * self._heartbeat_delay_jitter
        ):
            worker_id = self._id
            if worker_id is None or self._lost.is_set():
                continue
            try:
                with self._scheduler.connection() as conn:
                    alive = queries.worker_heartbeat(conn, worker_id)
                    if alive:
                        queries.reap_dead_workers(conn, worker_id)
            except Exception as exc:
                self._scheduler.handle_error(exc)
                continue
            if not alive and worker_id == self._id:
                self._lost.set()
                self._wake.set()

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self, timeout: Seconds | None = None) -> bool:
        """Stop the worker and wait up to ``timeout`` seconds (None: for as long as it takes).

        The worker stops fetching; running jobs finish (they see ``job.shutdown_requested``);
        every result is recorded; then the worker unregisters, which releases the prefetched
        jobs that never started. Returns True when all of that is done. On timeout it returns
        False and the rest goes on in the background: the database stays consistent, and if
        the process exits first, the worker is reaped and its jobs run elsewhere.
        """
        with self._shutdown_lock:
            if self._shutdown_thread is None:
                self.shutdown_requested.set()
                self._wake.set()
                self._shutdown_thread = threading.Thread(
                    target=self._shut_down, name=f"{self._name}-shutdown", daemon=True
                )
                self._shutdown_thread.start()
        limit = None if timeout is None else seconds(timeout, "timeout", allow_zero=True)
        return self._stopped.wait(limit)

    def _shut_down(self) -> None:
        self._fetch_thread.join()
        with self._queue_cond:
            self._runners_stop = True
            self._queue_cond.notify_all()
        for runner in self._runners:
            runner.join()
        with self._results_cond:
            self._flush_all = True
            self._results_cond.notify()
        self._flush_thread.join()
        self._unregister()
        self._heartbeat_stop.set()
        self._scheduler._forget_worker(self)
        self._stopped.set()
        logger.info("pgxjob worker %s shut down", self._name)

    def _unregister(self) -> None:
        delay = 0.05
        while self._id is not None:
            try:
                with self._scheduler.connection() as conn:
                    queries.unregister_worker(conn, self._id)
                self._id = None
            except Exception as exc:
                self._scheduler.handle_error(exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _no_handler(type_name: str) -> Callable[[Job], None]:
    def run_job(job: Job) -> None:
        raise NoHandlerError(
            f'pgxjob: no handler for job type "{type_name}" in this worker process; '
            "declare it in Scheduler(job_types=...) of the process that runs this group"
        )

    return run_job
