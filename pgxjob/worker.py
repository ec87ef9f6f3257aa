"""The worker: registration, the fetch loop and runner threads, and shutdown; it wires the parts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import inspect
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from pgxjob import context, metrics, queries
from pgxjob.durations import Seconds, seconds
from pgxjob.errors import WorkerNotRegisteredError
from pgxjob.eventloop import EventLoopThread
from pgxjob.heartbeat import Heartbeat
from pgxjob.jobs import (
    ErrorWithRetry,
    Job,
    JobCancelled,
    JobGroup,
    JobType,
    Signal,
    _claimed_job,
    failure_text,
    is_async_handler,
    is_final_run,
)
from pgxjob.prefetch import JobQueue
from pgxjob.queries import FetchedJob, JobResult
from pgxjob.results import ResultBuffer
from pgxjob.supervise import supervise

if TYPE_CHECKING:
    from pgxjob._otel import RunSpan
    from pgxjob.scheduler import Scheduler

__all__ = ["NoHandlerError", "ShouldLogJobRun", "Worker"]

logger = logging.getLogger(__name__)

ShouldLogJobRun = Callable[["Worker", Job, dt.datetime, dt.datetime, BaseException | None], bool]
"""Decides per run whether it goes to the run log: (worker, job, started_at, finished_at, err)."""

_worker_numbers = itertools.count(1)


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
        event_loop_block_threshold: Seconds = 0.25,
    ) -> None:
        for name, value in (
            ("max_concurrent_jobs", max_concurrent_jobs),
            ("max_prefetched_jobs", max_prefetched_jobs),
            ("max_buffered_job_results", max_buffered_job_results),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._scheduler = scheduler
        self._connection = scheduler.connection
        self._report = scheduler._report_error
        # None without OpenTelemetry: a run then costs this attribute's read and nothing else.
        self._tracing = scheduler._tracing
        self.group_name = group_name
        self._max_prefetched_jobs = max_prefetched_jobs
        self._poll_interval = seconds(poll_interval, "poll_interval", allow_zero=False)
        max_age = seconds(max_buffered_job_result_age, "max_buffered_job_result_age")
        self._should_log_job_run = should_log_job_run
        self._block_threshold = seconds(
            event_loop_block_threshold, "event_loop_block_threshold", allow_zero=False
        )
        min_delay = seconds(min_heartbeat_delay, "min_heartbeat_delay", allow_zero=False)
        jitter = seconds(heartbeat_delay_jitter, "heartbeat_delay_jitter")
        if worker_dead_without_heartbeat is None:
            self._dead_after = 5 * (min_delay + jitter)
        else:
            self._dead_after = seconds(
                worker_dead_without_heartbeat, "worker_dead_without_heartbeat", allow_zero=False
            )
        if self._dead_after <= min_delay + jitter:
            raise ValueError(
                "worker_dead_without_heartbeat must be longer than min_heartbeat_delay + "
                "heartbeat_delay_jitter, or live workers would be reaped"
            )

        self._name = f"pgxjob-worker-{group_name}-{next(_worker_numbers)}"
        self.startup_complete = threading.Event()
        """Set once the worker is registered in the database and fetching."""
        self.shutdown_requested = Signal()
        """Set when shutdown starts; each job this worker runs sees it as job.shutdown_requested."""
        self._id: int | None = None
        self._group: JobGroup | None = None
        self._wake = threading.Event()
        self._lost = threading.Event()
        self._stopped = threading.Event()
        # Set when the worker gives up waiting (a deadline passed): retry loops stop at once.
        self._abandoned = threading.Event()
        self._fetch_failed = False
        self._cancel_polled_at = 0.0

        self._queue = JobQueue(
            low_water=max_prefetched_jobs // 2,
            on_low_water=self._wake.set,
            limit=max_concurrent_jobs,
            on_async_ready=self._on_async_ready,
        )
        self._results = ResultBuffer(
            connection=self._connection,
            report=self._report,
            on_done=self._queue.forget,
            max_results=max_buffered_job_results,
            max_age=max_age,
            on_room=self._wake.set,
        )
        self._heartbeat = Heartbeat(
            connection=self._connection,
            report=self._report,
            worker_id=lambda: None if self._lost.is_set() else self._id,
            on_lost=self._on_lost,
            min_delay=min_delay,
            jitter=jitter,
        )

        # A crashed loop pauses before its restart until the event is set: the fetch loop
        # stops when shutdown starts; the others must go on until they are done.
        self._fetch_thread = self._thread(
            self._name, "fetch loop", self._fetch_loop, self.shutdown_requested
        )
        self._runners = [
            self._thread(f"{self._name}-run-{n}", "runner", self._run_loop, self._abandoned)
            for n in range(1, max_concurrent_jobs + 1)
        ]
        self._flush_thread = self._thread(
            f"{self._name}-flush", "result flusher", self._results._flush_loop, self._abandoned
        )
        self._heartbeat_thread = self._thread(
            f"{self._name}-heartbeat",
            "heartbeat",
            self._heartbeat._heartbeat_loop,
            self._heartbeat.stopped,
        )
        self._own_threads = {self._fetch_thread, *self._runners, self._flush_thread}
        self._shutdown_thread: threading.Thread | None = None
        self._shutdown_lock = threading.Lock()
        # Made when the first async job arrives: a worker of sync job types never starts one.
        self._event_loop: EventLoopThread | None = None
        self._event_loop_lock = threading.Lock()
        self._async_wake: asyncio.Event | None = None
        self._async_types: dict[JobType, bool] = {}

    def _thread(
        self, name: str, role: str, body: Callable[[], None], backoff: threading.Event
    ) -> threading.Thread:
        def run() -> None:
            supervise(
                f"{self._name} {role}",
                body,
                report=self._report,
                backoff=backoff,
                give_up=lambda exc: self._give_up(role, exc),
            )

        return threading.Thread(target=run, name=name, daemon=True)

    def _start(self) -> None:
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

    @property
    def prefetched(self) -> int:
        """How many claimed jobs wait in this worker for a runner."""
        return len(self._queue)

    @property
    def stopped(self) -> bool:
        """True once the worker has shut down (or given up) and unregistered."""
        return self._stopped.is_set()

    def signal(self) -> None:
        """Wake the worker to look for jobs now. Safe from any thread; never blocks."""
        self._wake.set()

    def __repr__(self) -> str:
        return f"<Worker {self._name} id={self._id}>"

    # -- registration -----------------------------------------------------------------------

    def _register(self) -> bool:
        delay = 0.05
        while not self.shutdown_requested.is_set():
            if not self._scheduler.ready:
                # The scheduler's setup reports its own failures; wait so shutdown can interrupt.
                self.shutdown_requested.wait(0.05)
                continue
            try:
                self._group = self._scheduler.job_group(self.group_name)
                with self._connection() as conn:
                    worker_id = queries.register_worker(
                        conn, self.group_name, dt.timedelta(seconds=self._dead_after)
                    )
            except Exception as exc:
                self._report(exc)
                self.shutdown_requested.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._id = worker_id
            self._lost.clear()
            logger.info("pgxjob worker %s registered with id %s", self._name, worker_id)
            self.startup_complete.set()
            return True
        return False

    def _on_lost(self, worker_id: int) -> None:
        if worker_id == self._id:
            self._lost.set()
            self._wake.set()

    def _handle_lost(self) -> None:
        # The row was reaped while this process lived: the database has already released our
        # prefetched jobs, and other workers may be running them, so we must not start them.
        # Results of jobs still running go out later under the old id, and come back stale.
        dropped, idle = self._queue.drop()
        if idle:
            self._results.flush_soon()
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
            wanted = self._room()
            if wanted <= 0:
                # Full: the runners wake us when the queue falls to low water, the result
                # buffer when a flush has made room. Checked again after the clear, so that a
                # wake-up between the first check and the clear is not lost.
                self._wake.clear()
                if self._room() <= 0:
                    self._wake.wait(self._poll_interval)
                continue
            # Cleared before fetching, so a notification that arrives meanwhile is not lost.
            self._wake.clear()
            try:
                sleep = self._fetch(worker_id, wanted)
            except WorkerNotRegisteredError:
                self._lost.set()
                continue
            except Exception as exc:
                self._report(exc)
                self.shutdown_requested.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            self._poll_cancel_requests(worker_id)
            if sleep is not None:
                self._wake.wait(sleep)

    def _room(self) -> int:
        """How many jobs to claim: bounded by the queue and by the results still to record."""
        return min(self._queue.room(self._max_prefetched_jobs), self._results.room())

    def _poll_cancel_requests(self, worker_id: int) -> None:
        # The fallback for cancel requests whose notification this worker missed (its listener
        # was reconnecting, or it does not listen): at most once per poll interval, and only
        # while jobs run, since queued jobs are checked when they start.
        if not self._queue.running:
            return
        now = time.monotonic()
        if now - self._cancel_polled_at < min(self._poll_interval, 1.0):
            return
        self._cancel_polled_at = now
        try:
            with self._connection() as conn:
                requested = queries.cancel_requests(conn, worker_id)
        except Exception as exc:
            self._report(exc)
            return
        for job_id in requested:
            self._on_cancel(job_id)

    def _on_cancel(self, job_id: int) -> None:
        """A cancel request for a job this worker holds: the job's handler sees it at once."""
        job = self._queue.find(job_id)
        if job is not None and not job.cancel_requested.is_set():
            logger.info(
                "pgxjob worker %s: job %s (%s) is cancelled", self._name, job_id, job.type.name
            )
            job.cancel_requested.set()

    def _fetch(self, worker_id: int, wanted: int) -> float | None:
        """Claim up to ``wanted`` jobs and queue them; return how long to sleep (None: not)."""
        with self._connection() as conn:
            if self._fetch_failed:
                # A failed fetch may have claimed jobs whose rows never arrived.
                queries.release_unknown_jobs(conn, worker_id, self._queue.known_ids())
            # Set until the claimed jobs are queued: whatever fails in between strands them.
            self._fetch_failed = True
            rows = queries.fetch_jobs(conn, worker_id, wanted)
            if rows and not self._queue.put(
                [self._job(row) for row in rows], worker_id, is_async=self._is_async
            ):
                # Shutdown closed the queue meanwhile: hand the jobs back at once.
                queries.release_unknown_jobs(conn, worker_id, self._queue.known_ids())
            self._fetch_failed = False
            if len(rows) == wanted:
                return None
            return self._idle_delay(conn, worker_id)

    def _idle_delay(self, conn: psycopg.Connection[Any], worker_id: int) -> float:
        # Caught up: sleep until signalled, until the group's next timed job is due (on the
        # database's clock), or for poll_interval at most.
        return idle_sleep(queries.next_run_in(conn, worker_id), self._poll_interval)

    def _job(self, row: FetchedJob) -> Job:
        assert self._group is not None
        job_type = None if row.type_name is None else self._scheduler._handler(row.type_name)
        if job_type is None:
            # A type row deleted under its jobs comes back without a name: say its id.
            name = row.type_name or f"<deleted job type id {row.type_id}>"
            job_type = JobType(row.type_id, name, self._group, _no_handler(name))
        cancel_requested = Signal()
        if row.cancel_requested:
            cancel_requested.set()
        return _claimed_job(
            row.id,
            self._group,
            job_type,
            row.params,
            row.inserted_at,
            row.run_at,
            row.last_error,
            row.error_count,
            row.asap,
            self.shutdown_requested,
            row.priority,
            cancel_requested,
            row.trace_context,
        )

    # -- running --------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        # Inside a handler, pgxjob.ctx() is the scheduler whose worker runs the job.
        context.current.set(self._scheduler)
        while True:
            item = self._queue.take()
            if item is None:
                return
            job, worker_id = item
            interrupted = False
            try:
                interrupted = self._run(job, worker_id)
            finally:
                if self._queue.finished(job):
                    self._results.flush_soon()
            if interrupted:
                self._begin_shutdown()

    def _run(self, job: Job, worker_id: int) -> bool:
        """Run one job and buffer its result. True when the handler stopped the worker."""
        started_at = dt.datetime.now(dt.UTC)
        if self._skip_cancelled(job, worker_id, started_at):
            return False
        tracing = self._tracing
        span = None if tracing is None else tracing.run_span(job)
        try:
            try:
                run_job: Callable[[Job], object] = job.type.run_job
                returned = run_job(job)
                if inspect.isawaitable(returned):
                    # A sync callable that returned an awaitable (it wraps an async handler):
                    # the loop awaits it while this runner thread waits.
                    returned = self._loop().run(job, returned)
                output = _output_json(job, returned)
            except BaseException as exc:  # a handler's error of any kind is the job's result
                return self._ended_by(job, worker_id, started_at, exc, span)
            self._finish(job, worker_id, started_at, None, output, span)
            return False
        finally:
            if span is not None:
                span.end(None, None)  # ended already unless recording the result failed

    async def _run_async(self, job: Job, worker_id: int) -> None:
        """:meth:`_run` for an async handler, as a task on the worker's event loop.

        Only the call differs (it is awaited); before and after it the two share every step.
        """
        interrupted = False
        try:
            if self._abandoned.is_set():
                # Taken just before the shutdown deadline: unregistering released it.
                self._queue.forget([job.id])
                return
            started_at = dt.datetime.now(dt.UTC)
            if self._skip_cancelled(job, worker_id, started_at):
                return
            assert self._event_loop is not None
            tracing = self._tracing
            span = None if tracing is None else tracing.run_span(job)
            try:
                with self._event_loop.running(job):
                    try:
                        returned = await job.type.run_job(job)
                        output = _output_json(job, returned)
                    except BaseException as exc:  # CancelledError and SystemExit included
                        interrupted = self._ended_by(job, worker_id, started_at, exc, span)
                    else:
                        self._finish(job, worker_id, started_at, None, output, span)
            finally:
                if span is not None:
                    span.end(None, None)
        finally:
            if self._queue.finished(job):
                self._results.flush_soon()
            if interrupted:
                self._begin_shutdown()

    def _skip_cancelled(self, job: Job, worker_id: int, started_at: dt.datetime) -> bool:
        if not job.cancel_requested.is_set():
            return False
        # Cancelled while it waited in this worker's queue: it does not start.
        finished_at = dt.datetime.now(dt.UTC)
        self._results.add(
            worker_id, self._result(job, started_at, finished_at, None, cancelled=True)
        )
        return True

    def _ended_by(
        self,
        job: Job,
        worker_id: int,
        started_at: dt.datetime,
        exc: BaseException,
        span: RunSpan | None = None,
    ) -> bool:
        """A handler raised exc: record it, or release the job. True when the worker must stop."""
        if isinstance(exc, asyncio.CancelledError | concurrent.futures.CancelledError) and (
            self._abandoned.is_set()
        ):
            # Cancelled at the shutdown deadline: unregistering released the job, which runs
            # again elsewhere; nothing is recorded.
            logger.warning(
                "pgxjob worker %s: job %s (%s) was cancelled at the shutdown deadline and released",
                self._name,
                job.id,
                job.type.name,
            )
            if span is not None:
                span.end(None, exc)
            self._queue.forget([job.id])
            return False
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            # The process is being stopped, not the job failing: hand the job back untouched
            # (no attempt counted) and shut the worker down.
            logger.warning(
                "pgxjob: %s raised %s in job %s (%s); the job is released and worker %s shuts down",
                job.type.name,
                type(exc).__name__,
                job.id,
                job.type.name,
                self._name,
            )
            if span is not None:
                span.end(None, exc)
            self._queue.forget([job.id])
            return True
        self._finish(job, worker_id, started_at, exc, None, span)
        return False

    def _finish(
        self,
        job: Job,
        worker_id: int,
        started_at: dt.datetime,
        err: BaseException | None,
        output: str | None,
        span: RunSpan | None = None,
    ) -> None:
        finished_at = dt.datetime.now(dt.UTC)
        cancelled = (
            isinstance(err, JobCancelled)
            or (isinstance(err, ErrorWithRetry) and isinstance(err.err, JobCancelled))
            or job.cancel_requested.is_set()
        )
        if cancelled:
            logger.info("pgxjob: job %s (%s) stopped: it was cancelled", job.id, job.type.name)
            err = None
        elif err is not None:
            self._log_failure(job, err)
        recorder = metrics.recorder
        outcome = None
        if span is not None or recorder is not None:
            outcome = _outcome(job, err, cancelled)
        if span is not None:
            # Before the result is buffered: once it is recorded, the run's span has ended.
            span.end(outcome, err)
        self._results.add(
            worker_id,
            self._result(job, started_at, finished_at, err, output=output, cancelled=cancelled),
        )
        if recorder is not None:
            assert outcome is not None
            _report_run(recorder, job, outcome, started_at, finished_at)

    async def _dispatch(self) -> None:
        """The loop's side of the queue: start a task per async job while the limit allows."""
        # Inside a handler, pgxjob.ctx() is the scheduler whose worker runs the job; tasks
        # copy this context.
        context.current.set(self._scheduler)
        wake = self._async_wake = asyncio.Event()
        event_loop = self._event_loop
        assert event_loop is not None
        try:
            while True:
                items = self._queue.take_async()
                if items is None:
                    return
                for job, worker_id in items:
                    event_loop.spawn(self._run_async(job, worker_id))
                if not items:
                    await wake.wait()
                    wake.clear()
        except BaseException as exc:  # pragma: no cover - defensive: async jobs would stall
            self._give_up("async dispatcher", exc)
            raise

    def _on_async_ready(self) -> None:
        # From any thread: async jobs wait and may start (queued, a slot freed), or the queue
        # closed. Only jobs being queued start the loop of a worker that has none yet.
        with self._event_loop_lock:
            event_loop = self._event_loop
        if event_loop is None:
            if self._queue.closed:
                return
            event_loop = self._loop()
        event_loop.call_soon(self._wake_dispatcher)

    def _wake_dispatcher(self) -> None:
        if self._async_wake is not None:
            self._async_wake.set()

    def _is_async(self, job: Job) -> bool:
        # Per job type, decided once: which lane of the queue its jobs take.
        found = self._async_types.get(job.type)
        if found is None:
            found = self._async_types[job.type] = is_async_handler(job.type.run_job)
        return found

    def _loop(self) -> EventLoopThread:
        with self._event_loop_lock:
            if self._event_loop is None:
                event_loop = EventLoopThread(
                    f"{self._name}-loop", block_threshold=self._block_threshold
                )
                self._event_loop = event_loop
                # A handler on the loop that calls shutdown() must not wait for itself.
                self._own_threads.add(event_loop.thread)
                event_loop.start()
                event_loop.call_soon(lambda: event_loop.spawn(self._dispatch()))
            return self._event_loop

    def _wait_async_jobs(self) -> None:
        # The runner threads are done: what still runs is async jobs' tasks on the loop.
        self._queue.wait_none_running()

    def _stop_loop(self) -> None:
        with self._event_loop_lock:
            event_loop = self._event_loop
        if event_loop is not None:
            event_loop.stop()

    def _log_failure(self, job: Job, err: BaseException) -> None:
        attempt = job.error_count + 1
        if is_final_run(job, err):
            logger.error(
                "pgxjob: job %s (%s) failed for good on attempt %d",
                job.id,
                job.type.name,
                attempt,
                exc_info=err,
            )
        else:
            logger.warning(
                "pgxjob: job %s (%s) failed on attempt %d and will be retried",
                job.id,
                job.type.name,
                attempt,
                exc_info=err,
            )

    def _result(
        self,
        job: Job,
        started_at: dt.datetime,
        finished_at: dt.datetime,
        err: BaseException | None,
        *,
        output: str | None = None,
        cancelled: bool = False,
    ) -> JobResult:
        log = True
        if self._should_log_job_run is not None:
            try:
                log = bool(self._should_log_job_run(self, job, started_at, finished_at, err))
            except Exception as exc:
                self._report(exc)
        retry_at = max_retries = base_delay = None
        error = None if err is None else failure_text(err)
        if isinstance(err, ErrorWithRetry):
            retry_at, max_retries, base_delay = (
                err.retry_at,
                err.backoff_max_retries,
                err.backoff_base_delay,
            )
        return JobResult(
            job.id,
            job.error_count,
            started_at,
            finished_at,
            error,
            retry_at,
            max_retries,
            base_delay,
            log,
            output,
            cancelled,
        )

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self, timeout: Seconds | None = None) -> bool:
        """Stop the worker and wait up to ``timeout`` seconds (None: for as long as it takes).

        At once: no new job starts, the jobs prefetched but not started are handed back to the
        database (one call), so other workers can take them, and fetching stops. Then running
        jobs finish (they see ``job.shutdown_requested``), every result is recorded, and the
        worker unregisters. Returns True when all of that is done. On timeout it returns False
        and the rest goes on in the background; ``Scheduler.close`` and the interpreter-exit
        hook unregister a worker whose deadline has passed, which releases its jobs.

        Called from inside one of this worker's handlers, it starts the shutdown and returns
        False at once (the handler's own job has yet to finish).
        """
        limit = None if timeout is None else seconds(timeout, "timeout")
        self._begin_shutdown()
        if threading.current_thread() in self._own_threads:
            return self._stopped.is_set()
        return self._stopped.wait(limit)

    def _begin_shutdown(self) -> None:
        with self._shutdown_lock:
            if self._shutdown_thread is not None:
                return
            self.shutdown_requested.set()
            dropped = self._queue.close()
            self._results.flush_eagerly()
            self._wake.set()
            self._shutdown_thread = threading.Thread(
                target=self._shut_down, args=(dropped,), name=f"{self._name}-shutdown", daemon=True
            )
            self._shutdown_thread.start()

    def _shut_down(self, dropped: int) -> None:
        try:
            if dropped:
                self._release_unstarted(dropped)
            self._fetch_thread.join()
            for runner in self._runners:
                runner.join()
            self._wait_async_jobs()
            self._results.close()
            self._stop_loop()
            self._flush_thread.join()
        except BaseException as exc:  # pragma: no cover - defensive: the worker must still stop
            self._report(exc)
        finally:
            self._unregister()
            self._heartbeat.stop()
            self._scheduler._forget_worker(self)
            self._stopped.set()
            logger.info("pgxjob worker %s shut down", self._name)

    def _release_unstarted(self, dropped: int) -> None:
        worker_id = self._id
        if worker_id is None:
            return
        # Every job this worker owns but has neither running nor awaiting its recorded result.
        try:
            with self._connection() as conn:
                released = queries.release_unknown_jobs(conn, worker_id, self._queue.known_ids())
        except Exception as exc:
            # Unregistering at the end releases them too.
            self._report(exc)
            return
        logger.info(
            "pgxjob worker %s: shutdown released %d prefetched jobs that never started",
            self._name,
            released,
        )

    def _unregister(self) -> None:
        delay = 0.05
        while self._id is not None and not self._abandoned.is_set():
            try:
                with self._connection() as conn:
                    queries.unregister_worker(conn, self._id)
                self._id = None
            except Exception as exc:
                self._report(exc)
                self._abandoned.wait(delay)
                delay = min(delay * 2, 5.0)

    def _abandon(self) -> None:
        """Give up waiting: unregister now, releasing every job still owned, running or not.

        Used when a shutdown deadline has passed. Results not recorded yet are dropped (their
        jobs run again elsewhere), and nothing is recorded from now on. No heartbeat follows,
        so if the database cannot be reached the worker is reaped after its dead-after time.
        """
        self._begin_shutdown()
        self._heartbeat.stop()
        self._abandoned.set()
        self._results.abandon()
        with self._event_loop_lock:
            event_loop = self._event_loop
        if event_loop is not None:
            # Unlike threads, coroutines can be stopped: their runners then return at once.
            cancelled = event_loop.cancel_all()
            if cancelled:
                logger.warning(
                    "pgxjob worker %s: cancelled %d running async jobs at the shutdown deadline",
                    self._name,
                    cancelled,
                )
        worker_id = self._id
        if worker_id is None:
            return
        try:
            with self._connection() as conn:
                queries.unregister_worker(conn, worker_id)
            self._id = None
            logger.warning(
                "pgxjob worker %s did not finish in time: unregistered, releasing its jobs",
                self._name,
            )
        except Exception as exc:
            self._report(exc)

    def _give_up(self, role: str, exc: BaseException) -> None:
        # A loop that cannot go on: stop heartbeating at once (so that, whatever else fails,
        # the worker is reaped and its jobs released) and shut down.
        logger.critical(
            "pgxjob worker %s: its %s cannot go on; the worker shuts down and unregisters",
            self._name,
            role,
        )
        self._heartbeat.stop()
        if role == "result flusher":
            # Nothing can be recorded any more: unregistering releases every job instead.
            self._abandon()
        else:
            self._begin_shutdown()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# How long a worker waits before looking again for a due job it could not claim (another worker
# is claiming it).
_DUE_RETRY_DELAY = 0.01


def idle_sleep(next_run_in: dt.timedelta | None, poll_interval: float) -> float:
    """How long a caught-up worker sleeps: until its group's next timed job is due, at most
    poll_interval.

    A job due in 3 ms is waited for 3 ms: a worker woken early (by the notification of another
    timed job) must not oversleep the job that is about to fall due. Only a job already due,
    which this worker could not claim, waits ``_DUE_RETRY_DELAY``.
    """
    if next_run_in is None:
        return poll_interval
    due_in = next_run_in.total_seconds()
    if due_in <= 0:
        return min(poll_interval, _DUE_RETRY_DELAY)
    return min(poll_interval, due_in)


def _outcome(job: Job, err: BaseException | None, cancelled: bool) -> str:
    """How a run ended, as this worker sees it: succeeded, failed, retried or cancelled."""
    if cancelled:
        return "cancelled"
    if err is None:
        return "succeeded"
    return "failed" if is_final_run(job, err) else "retried"


def _report_run(
    recorder: metrics.Recorder,
    job: Job,
    outcome: str,
    started_at: dt.datetime,
    finished_at: dt.datetime,
) -> None:
    # A first attempt was due at run_at (an ASAP job's insertion); a retry's due time is not
    # fetched, so it has no start delay.
    delay = None if job.error_count else max((started_at - job.run_at).total_seconds(), 0.0)
    try:
        recorder.job_finished(
            job.group.name,
            job.type.name,
            outcome,
            (finished_at - started_at).total_seconds(),
            delay,
        )
    except Exception:
        logger.exception("pgxjob: the metrics recorder failed")


def _output_json(job: Job, returned: object) -> str | None:
    """What a handler returned, as the JSON text stored with its run; None stores nothing."""
    if returned is None:
        return None
    try:
        return json.dumps(returned, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"the handler of job type {job.type.name!r} returned a {type(returned).__name__}, "
            f"which cannot be stored as the run's JSON output ({exc}); return JSON-serialisable "
            "values (dict, list, str, number, bool) or None"
        ) from exc


def _no_handler(type_name: str) -> Callable[[Job], None]:
    def run_job(job: Job) -> None:
        raise NoHandlerError(
            f'pgxjob: no handler for job type "{type_name}" in this worker process; '
            "declare it in Scheduler(job_types=...) of the process that runs this group"
        )

    return run_job
