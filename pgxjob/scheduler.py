"""The Scheduler: connections, registration of groups and types, scheduling, context scheduler."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgxjob import context, migrations, queries
from pgxjob.context import ctx
from pgxjob.durations import Seconds, seconds
from pgxjob.errors import NotReadyError
from pgxjob.jobs import JobGroup, JobType, JobTypeConfig
from pgxjob.listener import Listener
from pgxjob.supervise import ErrorReporter, safe_reporter
from pgxjob.worker import ShouldLogJobRun, Worker

__all__ = [
    "AcquireConn",
    "Scheduler",
    "Seconds",
    "acquire_conn_from_pool",
    "ctx",
    "seconds",
]

logger = logging.getLogger(__name__)

AcquireConn = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
"""Returns a context manager that lends a connection for exclusive use and takes it back."""

HandleError = Callable[[BaseException], None]

# How long the interpreter-exit hook lets running jobs finish before it unregisters the workers
# of a scheduler that was never closed, releasing what they still own.
EXIT_TIMEOUT = 5.0

# How long close() waits for the workers still busy at its deadline to unregister.
_ABANDON_TIMEOUT = 10.0

_live_schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()
_live_lock = threading.Lock()


def acquire_conn_from_pool(pool: ConnectionPool[Any]) -> AcquireConn:
    """An AcquireConn that borrows connections from a psycopg_pool.ConnectionPool."""

    def acquire() -> AbstractContextManager[psycopg.Connection[Any]]:
        return pool.connection()

    return acquire


def encode_params(params: Any) -> str | None:
    """Encode a job's params as JSON text; str and bytes are taken as JSON text and checked."""
    if params is None:
        return None
    if isinstance(params, bytes | bytearray | memoryview):
        try:
            params = bytes(params).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TypeError(f"params bytes are not UTF-8 JSON text: {exc}") from exc
    if isinstance(params, str):
        try:
            json.loads(params, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise TypeError(
                f"params string is not valid JSON ({exc}); pass a JSON text such as "
                "'{\"id\": 1}', or a dict to have it encoded"
            ) from exc
        # A NUL character itself cannot be stored; the escape \u0000 inside JSON text can.
        if "\x00" in params:
            raise TypeError("params contain a NUL character, which PostgreSQL text cannot store")
        return params
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    try:
        text = json.dumps(params, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"params of type {type(params).__name__} cannot be encoded as JSON: {exc}; "
            "pass JSON-serialisable values (dict, list, str, number, bool, None, dataclass)"
        ) from exc
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (PostgreSQL's json type rejects it)")


def _check_run_at(run_at: dt.datetime | None) -> None:
    if run_at is not None and (not isinstance(run_at, dt.datetime) or run_at.tzinfo is None):
        raise ValueError(
            f"run_at must be a timezone-aware datetime, got {run_at!r}; "
            "use datetime.now(timezone.utc) + timedelta(...)"
        )


class Scheduler:
    """Schedules jobs and starts workers.

    ``conninfo_or_pool`` is a libpq connection string or URL, a ``psycopg_pool.ConnectionPool``,
    or an AcquireConn callable. The constructor does no I/O: groups and job types are registered
    in the background, retrying while the database is unreachable and reporting each failure to
    ``handle_error`` (default: the ``pgxjob`` logger).
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any] | AcquireConn,
        *,
        job_groups: Iterable[str] = (),
        job_types: Iterable[JobTypeConfig] = (),
        handle_error: HandleError | None = None,
        setup_timeout: Seconds = 30.0,
    ) -> None:
        self._conninfo: str | None = None
        self._own_pool: ConnectionPool[Any] | None = None
        if isinstance(conninfo_or_pool, str):
            self._conninfo = conninfo_or_pool
            self._own_pool = ConnectionPool(
                conninfo_or_pool,
                min_size=1,
                max_size=4,
                open=False,
                timeout=5.0,
                kwargs={"autocommit": True},
                name="pgxjob-pool",
            )
            self._acquire: AcquireConn = acquire_conn_from_pool(self._own_pool)
        elif isinstance(conninfo_or_pool, ConnectionPool):
            self._conninfo = (
                str(conninfo_or_pool.conninfo)
                if isinstance(conninfo_or_pool.conninfo, str)
                else None
            )
            self._acquire = acquire_conn_from_pool(conninfo_or_pool)
        elif callable(conninfo_or_pool):
            self._acquire = conninfo_or_pool
        else:
            raise TypeError(
                "conninfo_or_pool must be a connection string, a psycopg_pool.ConnectionPool "
                f"or an acquire_conn callable, got {type(conninfo_or_pool).__name__}"
            )

        self._group_names = ["default"]
        for name in job_groups:
            if not isinstance(name, str) or not name:
                raise ValueError(f"job group names must be non-empty strings, got {name!r}")
            if name not in self._group_names:
                self._group_names.append(name)
        self._type_configs: dict[str, JobTypeConfig] = {}
        for config in job_types:
            if not isinstance(config, JobTypeConfig):
                raise TypeError(f"job_types must hold JobTypeConfig values, got {config!r}")
            if config.name in self._type_configs:
                raise ValueError(f"duplicate job type name {config.name!r} in job_types")
            if config.default_group_name not in self._group_names:
                raise ValueError(
                    f"job type {config.name!r} has default group {config.default_group_name!r},"
                    " which is not in job_groups; add it there"
                )
            self._type_configs[config.name] = config

        self.handle_error: HandleError = handle_error or _log_error
        """Receives every error a background thread survives; its own errors are logged."""
        self._report_error: ErrorReporter = safe_reporter(lambda: self.handle_error)
        self._setup_timeout = seconds(setup_timeout, "setup_timeout", allow_zero=False)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._last_setup_error: BaseException | None = None
        self._pool_opened = False
        self._groups: dict[str, JobGroup] = {}
        self._types: dict[str, JobType] = {}
        self._workers: list[Worker] = []
        self._listener: Listener | None = None
        self._pool_closed = False
        self._setup_thread = threading.Thread(target=self._setup, name="pgxjob-setup", daemon=True)
        self._setup_thread.start()
        with _live_lock:
            _live_schedulers.add(self)

    # -- connections ------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection in autocommit mode: each pgxjob function call is one transaction."""
        if self._own_pool is not None and not self._pool_opened:
            with self._lock:
                if not self._pool_opened:
                    self._own_pool.open(wait=False)
                    self._pool_opened = True
        with self._acquire() as conn:
            restore = not conn.autocommit
            if restore:
                conn.autocommit = True
            try:
                yield conn
            finally:
                if restore and not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.autocommit = False

    @property
    def conninfo(self) -> str | None:
        """The connection string, when the scheduler was given one or a pool."""
        return self._conninfo

    def _reserve_connections(self, count: int) -> None:
        if self._own_pool is not None:
            with self._lock:
                size = self._own_pool.max_size + count
                self._own_pool.resize(min_size=self._own_pool.min_size, max_size=size)

    # -- setup ----------------------------------------------------------------------------------

    def _setup(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            try:
                with self.connection() as conn:
                    migrations.check_version(conn)
                    groups = {
                        name: JobGroup(queries.register_group(conn, name), name)
                        for name in self._group_names
                    }
                    types = {}
                    for config in self._type_configs.values():
                        type_id = queries.register_job_type(
                            conn, config.name, config.default_group_name
                        )
                        types[config.name] = JobType(
                            type_id, config.name, groups[config.default_group_name], config.run_job
                        )
                self._groups, self._types = groups, types
                self._ready.set()
                return
            except Exception as exc:
                self._last_setup_error = exc
                self._report_error(exc)
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)

    def wait_ready(self, timeout: Seconds | None = None) -> None:
        """Wait until groups and job types are registered; raise NotReadyError after timeout."""
        limit = self._setup_timeout if timeout is None else seconds(timeout, "timeout")
        if not self._ready.wait(limit):
            raise NotReadyError(
                f"pgxjob scheduler setup did not finish within {limit:g}s "
                f"(last error: {self._last_setup_error!r}); check that the database is "
                "reachable and migrated (`pgxjob migrate`)"
            )

    @property
    def ready(self) -> bool:
        """True once groups and job types are registered."""
        return self._ready.is_set()

    def migrate(self, *, schema: str = "public") -> list[int]:
        """Apply pgxjob's migrations to the database; return the versions applied now."""
        with self.connection() as conn:
            return migrations.migrate(conn, schema=schema)

    def job_group(self, name: str) -> JobGroup:
        """The registered group called name."""
        self.wait_ready()
        return self._groups[name]

    # -- scheduling -----------------------------------------------------------------------------

    def schedule(
        self,
        conn: psycopg.Connection[Any] | None,
        job_type: str,
        params: Any = None,
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
    ) -> int:
        """Schedule one job and return its id.

        With a connection, the job is inserted in the caller's transaction: it exists, and the
        worker is notified, only when that transaction commits. With ``conn=None`` the
        scheduler's own connection is used and the job is committed at once. ``run_at`` None
        (or not in the future) means as soon as possible; the job type's default group is used
        unless ``group_name`` is given.
        """
        params_json = encode_params(params)
        _check_run_at(run_at)
        self.wait_ready()
        if conn is None:
            with self.connection() as own:
                return queries.schedule(own, job_type, params_json, group_name, run_at)
        return queries.schedule(conn, job_type, params_json, group_name, run_at)

    def schedule_now(
        self, conn: psycopg.Connection[Any] | None, job_type: str, params: Any = None
    ) -> int:
        """Schedule one job to run as soon as possible; return its id."""
        return self.schedule(conn, job_type, params)

    def schedule_many(
        self,
        conn: psycopg.Connection[Any] | None,
        job_type: str,
        params_list: Sequence[Any],
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
    ) -> list[int]:
        """Schedule one job per element of params_list in one round trip; return ids in order."""
        encoded = [encode_params(params) for params in params_list]
        _check_run_at(run_at)
        self.wait_ready()
        if conn is None:
            with self.connection() as own:
                return queries.schedule_many(own, job_type, encoded, group_name, run_at)
        return queries.schedule_many(conn, job_type, encoded, group_name, run_at)

    # -- workers --------------------------------------------------------------------------------

    def start_worker(
        self,
        *,
        group_name: str = "default",
        max_concurrent_jobs: int = 10,
        max_prefetched_jobs: int = 1000,
        poll_interval: Seconds = 10.0,
        max_buffered_job_results: int = 100,
        max_buffered_job_result_age: Seconds = 1.0,
        should_log_job_run: ShouldLogJobRun | None = None,
        min_heartbeat_delay: Seconds = 45.0,
        heartbeat_delay_jitter: Seconds = 30.0,
        worker_dead_without_heartbeat: Seconds | None = None,
        listen: bool = True,
    ) -> Worker:
        """Start a worker for one group and return it at once; it starts up in the background.

        ``listen=False`` makes the worker poll only (every ``poll_interval``), for connection
        poolers such as PgBouncer in transaction mode that cannot carry LISTEN.
        """
        if self._closed.is_set():
            raise RuntimeError("this scheduler is closed; create a new one to start workers")
        if group_name not in self._group_names:
            raise ValueError(
                f"group {group_name!r} is not one of this scheduler's job_groups "
                f"{self._group_names}; add it to Scheduler(job_groups=...)"
            )
        worker = Worker(
            self,
            group_name=group_name,
            max_concurrent_jobs=max_concurrent_jobs,
            max_prefetched_jobs=max_prefetched_jobs,
            poll_interval=poll_interval,
            max_buffered_job_results=max_buffered_job_results,
            max_buffered_job_result_age=max_buffered_job_result_age,
            should_log_job_run=should_log_job_run,
            min_heartbeat_delay=min_heartbeat_delay,
            heartbeat_delay_jitter=heartbeat_delay_jitter,
            worker_dead_without_heartbeat=worker_dead_without_heartbeat,
        )
        with self._lock:
            self._workers.append(worker)
            if listen and self._listener is None:
                self._listener = Listener(self)
            if listen and self._listener is not None:
                self._listener.add(worker)
        # The fetch loop, the result flusher and the heartbeat may each hold a connection. (The
        # listener opens its own from the conninfo.)
        self._reserve_connections(3)
        worker._start()
        return worker

    def _forget_worker(self, worker: Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if self._listener is not None:
                self._listener.remove(worker)

    @property
    def workers(self) -> list[Worker]:
        """The workers started by this scheduler that have not shut down."""
        with self._lock:
            return list(self._workers)

    def close(self, timeout: Seconds | None = None) -> bool:
        """Shut down every worker, stop the listener and close the scheduler's own pool.

        The workers shut down together, under one deadline ``timeout`` seconds away (None: no
        deadline). A worker still busy at the deadline is unregistered, which releases every
        job it owns for another worker to run; the pool closes only after that. Returns True
        when every worker recorded its results and unregistered in time.

        Called from inside a handler, it starts the shutdown of every worker and returns False
        at once; the pool stays open (the interpreter-exit hook closes it).
        """
        limit = None if timeout is None else seconds(timeout, "timeout")
        deadline = None if limit is None else time.monotonic() + limit
        self._closed.set()
        workers = self.workers
        for worker in workers:
            worker._begin_shutdown()
        current = threading.current_thread()
        if any(current in worker._own_threads for worker in workers):
            return False
        clean = True
        for worker in workers:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            clean = worker.shutdown(remaining) and clean
        # Unregistered together, each in one call: with the database down, each call may take
        # the pool's timeout, and the caller should wait for that once, not once per worker.
        stragglers = [
            threading.Thread(target=worker._abandon, name=f"{worker.name}-abandon", daemon=True)
            for worker in workers
            if not worker.stopped
        ]
        for thread in stragglers:
            thread.start()
        abandon_deadline = time.monotonic() + _ABANDON_TIMEOUT
        for thread in stragglers:
            thread.join(max(0.0, abandon_deadline - time.monotonic()))
        with self._lock:
            listener, self._listener = self._listener, None
            close_pool = self._own_pool is not None and self._pool_opened and not self._pool_closed
            self._pool_closed = True
        if listener is not None:
            listener.stop()
        if close_pool and self._own_pool is not None:
            self._own_pool.close(timeout=5.0 if clean else 1.0)
        with _live_lock:
            _live_schedulers.discard(self)
        return clean

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- context --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def with_context(self) -> Iterator[Scheduler]:
        """Make this the scheduler :func:`ctx` returns inside the ``with`` block."""
        token = context.current.set(self)
        try:
            yield self
        finally:
            context.current.reset(token)

    def _handler(self, type_name: str) -> JobType | None:
        return self._types.get(type_name)


def _log_error(err: BaseException) -> None:
    logger.error("pgxjob: %s", err, exc_info=err)


@atexit.register
def _close_at_exit() -> None:
    # A program that ends (or is interrupted) without closing its scheduler must not leave jobs
    # owned by workers that are gone until they are reaped: stop them with a short deadline.
    with _live_lock:
        schedulers = list(_live_schedulers)
    for scheduler in schedulers:
        if scheduler.workers:
            logger.info("pgxjob: the interpreter is exiting; closing %r", scheduler)
        try:
            scheduler.close(timeout=EXIT_TIMEOUT)
        except Exception:
            logger.exception("pgxjob: closing a scheduler at exit failed")
