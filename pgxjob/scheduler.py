"""The Scheduler: connections, registration of groups and types, scheduling, context scheduler."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from pgxjob import connections, context, migrations, queries, tracing
from pgxjob.aconnections import LoopConnections
from pgxjob.context import ctx
from pgxjob.durations import Seconds, seconds
from pgxjob.errors import NotReadyError, PgxjobError, SchemaVersionError
from pgxjob.jobs import JobGroup, JobType, JobTypeConfig
from pgxjob.listener import Listener
from pgxjob.periodic import PeriodicJob
from pgxjob.supervise import ErrorReporter, safe_reporter
from pgxjob.worker import ShouldLogJobRun, Worker

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from pgxjob._otel import ScheduleSpan, Tracing

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

T = TypeVar("T")

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


def _readable(conn: psycopg.Connection[Any]) -> bool:
    """Whether the connection's socket has input waiting (or is closed), without blocking."""
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(ready)


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


_pure_python_warned = False


def _warn_if_pure_python() -> None:
    """Say once per process when psycopg runs its pure-Python implementation."""
    global _pure_python_warned
    if _pure_python_warned or psycopg.pq.__impl__ != "python":
        return
    _pure_python_warned = True
    logger.warning(
        "pgxjob: psycopg is running its pure-Python implementation, which roughly halves a "
        "worker's throughput; install psycopg's compiled one: pip install 'psycopg[binary]' "
        "(or psycopg[c] where no wheel fits)"
    )


def _check_priority(priority: int) -> None:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not -(2**31) <= priority < 2**31:
        raise ValueError(f"priority must fit PostgreSQL's int (±2**31), got {priority}")


def _check_unique_key(key: str | None) -> None:
    if key is None:
        return
    if not isinstance(key, str):
        raise TypeError(f"unique_key must be a str or None, got {key!r}")
    if "\x00" in key:
        raise ValueError("unique_key contains a NUL character, which PostgreSQL text cannot store")
    if len(key.encode("utf-8", "surrogatepass")) > 1000:
        raise ValueError(
            "unique_key is longer than 1000 bytes in UTF-8; use a shorter key, for example a "
            "hash of the values that make the job unique"
        )


def _check_run_at(run_at: dt.datetime | None) -> None:
    if run_at is not None and (not isinstance(run_at, dt.datetime) or run_at.tzinfo is None):
        raise ValueError(
            f"run_at must be a timezone-aware datetime, got {run_at!r}; "
            "use datetime.now(timezone.utc) + timedelta(...)"
        )


def _schedule_call(
    job_type: str,
    params: Any,
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int,
    unique_key: str | None,
    trace_context: str | None,
) -> queries.Call[int]:
    params_json = encode_params(params)
    _check_run_at(run_at)
    _check_priority(priority)
    _check_unique_key(unique_key)
    return queries.schedule_call(
        job_type, params_json, group_name, run_at, priority, unique_key, trace_context
    )


def _schedule_many_call(
    job_type: str,
    params_list: Sequence[Any],
    group_name: str | None,
    run_at: dt.datetime | None,
    priority: int,
    unique_keys: Sequence[str | None] | None,
    trace_context: str | None,
) -> queries.Call[list[int]]:
    if isinstance(params_list, str | bytes | dict):
        raise TypeError(
            f"params_list must be a sequence with one params value per job, got a "
            f"{type(params_list).__name__}; to schedule one job use schedule()"
        )
    encoded = [encode_params(params) for params in params_list]
    _check_run_at(run_at)
    _check_priority(priority)
    if unique_keys is not None:
        unique_keys = list(unique_keys)
        if len(unique_keys) != len(encoded):
            raise ValueError(
                f"unique_keys has {len(unique_keys)} keys for {len(encoded)} jobs; pass one "
                "key (or None) per job"
            )
        for key in unique_keys:
            _check_unique_key(key)
    return queries.schedule_many_call(
        job_type, encoded, group_name, run_at, priority, unique_keys, trace_context
    )


def _cancel_call(job_id: int) -> queries.Call[str]:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 < job_id < 2**63:
        raise ValueError(f"job_id must be a job id (a positive int), got {job_id!r}")
    return queries.cancel_job_call(job_id)


async def _close_with_loop(
    pool: LoopConnections, forget: Callable[[], None]
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        forget()
        await pool.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Scheduler:
    """Schedules jobs and starts workers.

    ``conninfo_or_pool`` is a libpq connection string or URL, a ``psycopg_pool.ConnectionPool``,
    or an AcquireConn callable. The constructor does no I/O: groups and job types are registered
    in the background, retrying while the database is unreachable and reporting each failure to
    ``handle_error`` (default: the ``pgxjob`` logger).

    ``schema`` is the schema pgxjob was migrated into: every call reaches the functions of that
    schema, whatever the search_path of the connection it runs on. ``register=False`` makes a
    scheduler that only schedules: it registers nothing and checks nothing at startup, so it
    needs only the privileges ``pgxjob_grant_application`` gives, and it cannot start workers.

    Behind a pooler in transaction mode (PgBouncer, a cloud pooler): ``listen_conninfo`` names a
    direct connection to the same database for the listener, since LISTEN needs a session of
    its own (or start workers with ``listen=False`` to poll only). ``prepare_threshold`` is
    psycopg's, for the connections the scheduler opens itself (its pool, setup, the listener):
    ``None`` (the default) never prepares statements on the server, so that no call relies on a
    server session outlasting its transaction; an integer prepares each statement after that
    many uses on a connection, which only a session-mode pooler, a direct connection, or
    PgBouncer 1.21+ with ``max_prepared_statements`` carries.

    With OpenTelemetry installed (the ``otel`` extra), every schedule call records a span and
    stores its trace context with the jobs, and the span of each run is its child (see
    :mod:`pgxjob.tracing`). ``tracer_provider`` is the provider to use; None (the default) uses
    OpenTelemetry's global one, from whenever the application sets it.
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any] | AcquireConn,
        *,
        job_groups: Iterable[str] = (),
        job_types: Iterable[JobTypeConfig] = (),
        handle_error: HandleError | None = None,
        setup_timeout: Seconds = 30.0,
        schema: str = "public",
        register: bool = True,
        periodic_jobs: Iterable[PeriodicJob] = (),
        listen_conninfo: str | None = None,
        prepare_threshold: int | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._tracing: Tracing | None = tracing.tracing_for(tracer_provider)
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty string, got {schema!r}")
        if prepare_threshold is not None and (
            not isinstance(prepare_threshold, int)
            or isinstance(prepare_threshold, bool)
            or prepare_threshold < 0
        ):
            raise ValueError(
                f"prepare_threshold must be None (never prepare) or an int >= 0, got "
                f"{prepare_threshold!r}"
            )
        self._prepare_threshold = prepare_threshold
        self._listen_conninfo: str | None = None
        self.listen_conninfo = listen_conninfo
        self._schema = schema
        self._register = register
        self._conninfo: str | None = None
        self._own_pool: ConnectionPool[Any] | None = None
        # The pool whose way of connecting (conninfo, kwargs, connection class) the scheduler's
        # connections outside any pool copy: the listener's, setup's, the release at a deadline.
        self._pool: ConnectionPool[Any] | None = None
        # Every connection the scheduler opened itself, so that a forked child can let go of them.
        self._opened: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        if isinstance(conninfo_or_pool, str):
            self._conninfo = conninfo_or_pool
            self._own_pool = self._pool = self._new_pool()
            self._acquire: AcquireConn = acquire_conn_from_pool(self._own_pool)
        elif isinstance(conninfo_or_pool, ConnectionPool):
            self._conninfo = (
                str(conninfo_or_pool.conninfo)
                if isinstance(conninfo_or_pool.conninfo, str)
                else None
            )
            self._pool = conninfo_or_pool
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
        self._setup_wake = threading.Event()
        self._pool_opened = False
        self._groups: dict[str, JobGroup] = {}
        self._types: dict[str, JobType] = {}
        self._workers: list[Worker] = []
        self._listener: Listener | None = None
        self._pool_closed = False
        # schedule_async(None, ...): one async pool per event loop, made at its first use there.
        self._async_pools: dict[asyncio.AbstractEventLoop, LoopConnections] = {}
        self._async_closers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._periodic_jobs: dict[str, PeriodicJob] = {}
        for periodic in periodic_jobs:
            if not isinstance(periodic, PeriodicJob):
                raise TypeError(f"periodic_jobs must hold PeriodicJob values, got {periodic!r}")
            if periodic.name in self._periodic_jobs:
                raise ValueError(f"duplicate periodic job name {periodic.name!r} in periodic_jobs")
            self._periodic_jobs[periodic.name] = periodic
        self._periodic_params = {
            name: encode_params(periodic.params) for name, periodic in self._periodic_jobs.items()
        }
        if not register and self._periodic_jobs:
            raise ValueError(
                "a Scheduler with register=False only schedules; declare periodic_jobs in the "
                "Scheduler of the process that runs the workers"
            )
        if not register and self._type_configs:
            raise ValueError(
                "a Scheduler with register=False only schedules; give job_types to the "
                "Scheduler of the process that runs the workers"
            )
        with _live_lock:
            _live_schedulers.add(self)
        if register:
            self._start_setup()
        else:
            self._ready.set()

    def _start_setup(self) -> None:
        self._setup_thread = threading.Thread(target=self._setup, name="pgxjob-setup", daemon=True)
        self._setup_thread.start()

    # -- connections ------------------------------------------------------------------------

    def _new_pool(self) -> ConnectionPool[Any]:
        assert self._conninfo is not None
        return ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=4,
            open=False,
            timeout=5.0,
            kwargs={"autocommit": True, "prepare_threshold": self._prepare_threshold},
            # Checked before each loan: after a server restart, the stale connections are
            # replaced instead of failing one call each.
            check=self._check_pooled,
            configure=self._opened.add,
            name="pgxjob-pool",
        )

    def _check_pooled(self, conn: psycopg.Connection[Any]) -> None:
        # A round trip only when the server may have spoken since the connection came back to
        # the pool: a server that restarts, terminates the backend or times the session out
        # sends an error and closes the socket, which makes it readable. An idle connection has
        # nothing to read, and a round trip per loan would cost every fetch, flush and enqueue.
        if not conn.closed and not _readable(conn):
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            # One broken connection usually means they all are (the server restarted): replace
            # the idle ones now, rather than one per step of the pool's retry backoff.
            if self._own_pool is not None:
                self._own_pool.check()
            raise

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Lend a connection in autocommit mode: each pgxjob function call is one transaction."""
        if self._own_pool is not None and not self._pool_opened:
            with self._lock:
                if not self._pool_opened:
                    self._own_pool.open(wait=False)
                    self._pool_opened = True
        with self._borrow() as conn, queries.in_schema(conn, self._schema):
            restore = not conn.autocommit
            if restore:
                conn.autocommit = True
            try:
                yield conn
            finally:
                if restore and not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.autocommit = False

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            lent = self._acquire()
            conn = lent.__enter__()
        except psycopg.OperationalError as exc:
            # A pool that cannot connect says only that it timed out: name the real cause.
            raise self._connection_error(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            if not lent.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            lent.__exit__(None, None, None)

    def _connection_error(self, exc: psycopg.OperationalError) -> psycopg.OperationalError:
        if type(exc).__name__ != "PoolTimeout" or self._pool is None:
            return exc
        try:
            self.direct_connection(connect_timeout=5).close()
        except psycopg.OperationalError as cause:
            return cause
        except Exception:
            return exc
        return exc

    def direct_connection(self, **options: Any) -> psycopg.Connection[Any]:
        """Open a new autocommit connection, outside any pool, to the scheduler's database.

        It is made as the scheduler's pool makes its connections (its conninfo, keyword
        arguments and connection class), or, with an acquire_conn callable, with the parameters
        of a connection borrowed once from it. ``options`` are libpq parameters used where
        neither sets them (for example ``connect_timeout``). The caller closes it.
        """
        cls: type[psycopg.Connection[Any]] = (
            psycopg.Connection if self._pool is None else self._pool.connection_class
        )
        conninfo, kwargs = self._connect_params(options)
        conn = cls.connect(conninfo, **kwargs)
        queries.set_schema(conn, self._schema)
        self._opened.add(conn)
        return conn

    def _connect_params(self, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # How the scheduler's own connections connect: the pool's conninfo and kwargs, or the
        # parameters of a connection borrowed from an acquire_conn callable (I/O). ``options``
        # fill in what neither sets; autocommit is always on.
        if self._pool is not None:
            pool = self._pool
            conninfo = pool.conninfo() if callable(pool.conninfo) else (pool.conninfo or "")
            kwargs = dict(pool.kwargs() if callable(pool.kwargs) else (pool.kwargs or {}))
        else:
            conninfo, kwargs = self._borrowed_conninfo(), {}
        given = set(conninfo_to_dict(conninfo)) | set(kwargs)
        for key, value in options.items():
            if key not in given:
                kwargs[key] = value
        kwargs["autocommit"] = True
        # A given pool's own setting stands; otherwise the scheduler's.
        kwargs.setdefault("prepare_threshold", self._prepare_threshold)
        return conninfo, kwargs

    def _listen_connection(self, **options: Any) -> psycopg.Connection[Any]:
        """Open the listener's connection: to ``listen_conninfo`` when set, else as the pool's.

        ``options`` are libpq parameters used where the conninfo does not set them.
        """
        conninfo = self._listen_conninfo
        if conninfo is None:
            return self.direct_connection(**options)
        given = set(conninfo_to_dict(conninfo))
        kwargs = {key: value for key, value in options.items() if key not in given}
        conn = psycopg.Connection.connect(
            conninfo, autocommit=True, prepare_threshold=None, **kwargs
        )
        queries.set_schema(conn, self._schema)
        self._opened.add(conn)
        return conn

    def _borrowed_conninfo(self) -> str:
        # An acquire_conn callable says nothing of how it connects: ask one of its connections
        # (libpq's dsn leaves the password out; the connection still knows it).
        with self._borrow() as conn:
            info = conn.info
            password = info.password
            dsn = info.dsn
        return make_conninfo(dsn, password=password) if password else dsn

    @property
    def schema(self) -> str:
        """The schema whose pgxjob functions this scheduler calls."""
        return self._schema

    @property
    def conninfo(self) -> str | None:
        """The connection string, when the scheduler was given one or a pool."""
        return self._conninfo

    @property
    def listen_conninfo(self) -> str | None:
        """Where the listener connects (None: as the pool does); settable until it starts."""
        return self._listen_conninfo

    @listen_conninfo.setter
    def listen_conninfo(self, conninfo: str | None) -> None:
        if conninfo is not None:
            if not isinstance(conninfo, str) or not conninfo.strip():
                raise ValueError(
                    f"listen_conninfo must be a connection string or URL, got {conninfo!r}"
                )
            try:
                conninfo_to_dict(conninfo)
            except psycopg.ProgrammingError as exc:
                raise ValueError(
                    f"listen_conninfo is not a valid connection string ({exc}); use "
                    "postgresql://user@host:port/dbname, the server itself, not the pooler"
                ) from None
        if getattr(self, "_listener", None) is not None:
            raise RuntimeError(
                "listen_conninfo cannot change once a worker listens; set it before start_worker"
            )
        self._listen_conninfo = conninfo

    def _reserve_connections(self, count: int) -> None:
        if self._own_pool is not None:
            with self._lock:
                size = self._own_pool.max_size + count
                self._own_pool.resize(min_size=self._own_pool.min_size, max_size=size)

    # -- setup ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _setup_connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is None:
            with self.connection() as conn:
                yield conn
            return
        # Not from the pool: a pool that cannot connect reports a timeout, and setup must
        # report why (connection refused, bad password, no such database).
        with self.direct_connection(connect_timeout=5) as conn:
            yield conn

    def _setup(self) -> None:
        delay = 0.05
        not_migrated_reported = False
        while not self._closed.is_set():
            try:
                with self._setup_connection() as conn:
                    migrations.check_version(conn, self._schema)
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
                    self._declare_periodic_jobs(conn)
                self._groups, self._types = groups, types
                self._ready.set()
                return
            except Exception as exc:
                self._last_setup_error = exc
                if isinstance(exc, SchemaVersionError):
                    # Often a race with migrate() in the same program: say it once, at debug
                    # level; migrate() wakes this loop. If it lasts, wait_ready() raises
                    # NotReadyError naming it.
                    if not not_migrated_reported:
                        not_migrated_reported = True
                        self._report_not_migrated(exc)
                else:
                    not_migrated_reported = False
                    self._report_error(exc)
                if self._setup_wake.wait(delay):
                    self._setup_wake.clear()
                    delay = 0.05
                else:
                    delay = min(delay * 2, 5.0)

    def _declare_periodic_jobs(self, conn: psycopg.Connection[Any]) -> None:
        # A schedule the database refuses (a bad cron expression, an unknown job type) is
        # reported and left out; the others, and the scheduler, go on.
        for name, periodic in self._periodic_jobs.items():
            try:
                with conn.transaction():
                    queries.schedule_periodic(
                        conn,
                        name,
                        periodic.cron,
                        periodic.job_type,
                        self._periodic_params[name],
                        periodic.group_name,
                        periodic.time_zone,
                        periodic.priority,
                    )
            except PgxjobError as exc:
                self._report_error(exc)

    def _report_not_migrated(self, exc: SchemaVersionError) -> None:
        if self.handle_error is _log_error:
            logger.debug("pgxjob: %s; setup waits for it", exc)
        else:
            self._report_error(exc)

    def wait_ready(self, timeout: Seconds | None = None) -> None:
        """Wait until groups and job types are registered; raise NotReadyError after timeout.

        The error names the last reason setup failed (connection refused, not migrated, ...)
        and is chained from it.
        """
        limit = self._setup_timeout if timeout is None else seconds(timeout, "timeout")
        if not self._ready.wait(limit):
            cause = self._last_setup_error
            reason = "no attempt finished yet" if cause is None else _describe(cause)
            raise NotReadyError(
                f"pgxjob scheduler setup did not finish within {limit:g}s "
                f"(last error: {reason}); check that the database is "
                "reachable and migrated (`pgxjob migrate`)"
            ) from cause

    @property
    def ready(self) -> bool:
        """True once groups and job types are registered."""
        return self._ready.is_set()

    def migrate(self, *, schema: str | None = None) -> list[int]:
        """Apply pgxjob's migrations to the database; return the versions applied now.

        Into the scheduler's schema unless ``schema`` names another.
        """
        with self.connection() as conn:
            applied = migrations.migrate(conn, schema=schema or self._schema)
        self._setup_wake.set()
        return applied

    def job_group(self, name: str) -> JobGroup:
        """The registered group called name."""
        self.wait_ready()
        return self._groups[name]

    # -- scheduling -----------------------------------------------------------------------------

    def schedule(
        self,
        conn: Any,
        job_type: str,
        params: Any = None,
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_key: str | None = None,
    ) -> int:
        """Schedule one job and return its id.

        With a connection, the job is inserted in the caller's transaction: it exists, and the
        worker is notified, only when that transaction commits. ``conn`` is a
        ``psycopg.Connection``, or a SQLAlchemy ``Session`` or ``Connection`` over psycopg 3
        (whose transaction it joins, beginning it if need be). With ``conn=None`` the
        scheduler's own connection is used and the job is committed at once. ``run_at`` None
        (or not in the future) means as soon as possible; the job type's default group is used
        unless ``group_name`` is given. Among a group's due jobs a higher ``priority`` runs first.
        While a job of this type holds ``unique_key`` (waiting, retrying or running), the
        existing job's id is returned and nothing is scheduled.
        """
        with self._schedule_span(job_type, group_name) as span:
            call = _schedule_call(
                job_type, params, group_name, run_at, priority, unique_key, span.trace_context
            )
            job_id = self._execute(conn, call)
            span.scheduled([job_id])
            return job_id

    async def schedule_async(
        self,
        conn: Any,
        job_type: str,
        params: Any = None,
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_key: str | None = None,
    ) -> int:
        """:meth:`schedule` for asyncio code: the same options, the same result.

        ``conn`` is a ``psycopg.AsyncConnection`` or a SQLAlchemy ``AsyncSession`` or
        ``AsyncConnection`` over psycopg 3: the job commits or rolls back with the caller's
        transaction. With ``conn=None`` the job is committed at once on a connection of the
        scheduler's async pool, which is created on the running event loop at its first use
        and closed when that loop's ``asyncio.run`` ends (or by :meth:`close`).
        """
        with self._schedule_span(job_type, group_name) as span:
            call = _schedule_call(
                job_type, params, group_name, run_at, priority, unique_key, span.trace_context
            )
            job_id = await self._execute_async(conn, call)
            span.scheduled([job_id])
            return job_id

    def schedule_now(
        self,
        conn: Any,
        job_type: str,
        params: Any = None,
        *,
        priority: int = 0,
        unique_key: str | None = None,
    ) -> int:
        """Schedule one job to run as soon as possible; return its id."""
        return self.schedule(conn, job_type, params, priority=priority, unique_key=unique_key)

    async def schedule_now_async(
        self,
        conn: Any,
        job_type: str,
        params: Any = None,
        *,
        priority: int = 0,
        unique_key: str | None = None,
    ) -> int:
        """:meth:`schedule_now` for asyncio code (``conn`` as in :meth:`schedule_async`)."""
        return await self.schedule_async(
            conn, job_type, params, priority=priority, unique_key=unique_key
        )

    def cancel(self, conn: Any, job_id: int) -> str:
        """Cancel a job; return what happened: 'cancelled', 'cancel_requested' or 'not_found'.

        A waiting job (ASAP, scheduled, or waiting to retry) is removed at once: 'cancelled'. A
        job a worker holds gets a request: its handler sees ``job.cancel_requested`` within
        moments, and when it returns or raises the job is finished as cancelled, never retried:
        'cancel_requested'. With a connection, the cancellation is part of the caller's
        transaction.
        """
        return self._execute(conn, _cancel_call(job_id), wait_ready=False)

    async def cancel_async(self, conn: Any, job_id: int) -> str:
        """:meth:`cancel` for asyncio code (``conn`` as in :meth:`schedule_async`)."""
        return await self._execute_async(conn, _cancel_call(job_id), wait_ready=False)

    def schedule_many(
        self,
        conn: Any,
        job_type: str,
        params_list: Sequence[Any],
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Schedule one job per element of params_list in one round trip; return ids in order.

        ``conn`` as in :meth:`schedule`. ``unique_keys``, when given, holds one key (or None)
        per job: a job whose key is held returns the holder's id in its place.
        """
        with self._schedule_span(job_type, group_name) as span:
            call = _schedule_many_call(
                job_type, params_list, group_name, run_at, priority, unique_keys, span.trace_context
            )
            job_ids = self._execute(conn, call)
            span.scheduled(job_ids)
            return job_ids

    async def schedule_many_async(
        self,
        conn: Any,
        job_type: str,
        params_list: Sequence[Any],
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """:meth:`schedule_many` for asyncio code (``conn`` as in :meth:`schedule_async`)."""
        with self._schedule_span(job_type, group_name) as span:
            call = _schedule_many_call(
                job_type, params_list, group_name, run_at, priority, unique_keys, span.trace_context
            )
            job_ids = await self._execute_async(conn, call)
            span.scheduled(job_ids)
            return job_ids

    def _schedule_span(
        self, job_type: str, group_name: str | None
    ) -> ScheduleSpan | tracing.NoSpan:
        # The group a job goes to, where this process knows it: given, or the declared type's.
        traced = self._tracing
        if traced is None:
            return tracing.NO_SPAN
        if group_name is None:
            config = self._type_configs.get(job_type)
            group_name = None if config is None else config.default_group_name
        return traced.schedule_span(job_type, group_name)

    def _execute(self, conn: Any, call: queries.Call[T], *, wait_ready: bool = True) -> T:
        if wait_ready:
            self.wait_ready()
        if conn is None:
            with self.connection() as own:
                return queries.run(own, call)
        driver = connections.sync_connection(conn)
        # The caller's connection: its search_path may not reach the scheduler's schema.
        with queries.in_schema(driver, self._schema):
            return queries.run(driver, call)

    async def _execute_async(
        self, conn: Any, call: queries.Call[T], *, wait_ready: bool = True
    ) -> T:
        if wait_ready and not self._ready.is_set():
            await asyncio.to_thread(self.wait_ready)
        if conn is None:
            async with self._async_connection() as own:
                return await queries.run_async(own, call)
        driver = await connections.async_connection(conn)
        with queries.in_schema(driver, self._schema):
            return await queries.run_async(driver, call)

    # -- the async pool -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _async_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed.is_set():
            raise RuntimeError(
                "this scheduler is closed; schedule with a connection of yours, or a new Scheduler"
            )
        pool = await self._async_pool()
        async with pool.connection() as conn:
            with queries.in_schema(conn, self._schema):
                yield conn

    async def _async_pool(self) -> LoopConnections:
        loop = asyncio.get_running_loop()
        with self._lock:
            pool = self._async_pools.get(loop)
        if pool is not None:
            return pool
        # With an acquire_conn callable this borrows a connection to learn how to connect: I/O.
        conninfo, kwargs = (
            self._connect_params({"connect_timeout": 10})
            if self._pool is not None
            else await asyncio.to_thread(self._connect_params, {"connect_timeout": 10})
        )

        async def connect() -> psycopg.AsyncConnection[Any]:
            return await psycopg.AsyncConnection.connect(conninfo, **kwargs)

        with self._lock:
            pool = self._async_pools.get(loop)
            if pool is not None:
                return pool
            pool = self._async_pools[loop] = LoopConnections(connect, max_size=4)
        # Closed when the loop's asyncio.run ends: it finalizes every async generator still
        # suspended, this one included.
        closer = _close_with_loop(pool, lambda: self._forget_async_pool(loop))
        await closer.__anext__()
        with self._lock:
            self._async_closers[loop] = closer
        return pool

    def _forget_async_pool(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._async_pools.pop(loop, None)
            self._async_closers.pop(loop, None)

    def _close_async_pools(self, timeout: float) -> None:
        with self._lock:
            pools = list(self._async_pools.items())
            self._async_pools.clear()
            self._async_closers.clear()
        for loop, pool in pools:
            if loop.is_closed():
                continue
            if loop.is_running():
                if _running_loop() is loop:
                    # Called from this loop's own thread: it cannot block on its loop.
                    loop.create_task(pool.close())
                    continue
                future = asyncio.run_coroutine_threadsafe(pool.close(), loop)
                with contextlib.suppress(Exception):
                    future.result(timeout)
            else:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(pool.close())

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
        event_loop_block_threshold: Seconds = 0.25,
    ) -> Worker:
        """Start a worker for one group and return it at once; it starts up in the background.

        ``listen=False`` makes the worker poll only (every ``poll_interval``), for connection
        poolers such as PgBouncer in transaction mode that cannot carry LISTEN.

        Sync handlers run on the worker's runner threads; async handlers (coroutine functions)
        run as tasks on the worker's event loop, one thread made when its first async job
        arrives. Up to ``max_concurrent_jobs`` jobs run at once, of both kinds together. An
        async handler that holds the loop for longer than ``event_loop_block_threshold`` seconds
        (a blocking call) is logged as a warning naming its job and type.
        """
        if self._closed.is_set():
            raise RuntimeError("this scheduler is closed; create a new one to start workers")
        _warn_if_pure_python()
        if not self._register:
            raise RuntimeError(
                "this Scheduler was made with register=False and only schedules; start workers "
                "from a Scheduler with job_types (and the worker grants)"
            )
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
            event_loop_block_threshold=event_loop_block_threshold,
        )
        with self._lock:
            self._workers.append(worker)
            if listen and self._listener is None:
                self._listener = Listener(self)
            if listen and self._listener is not None:
                self._listener.add(worker)
        # The fetch loop, the result flusher and the heartbeat may each hold a connection. (The
        # listener opens its own, outside the pool.)
        self._reserve_connections(3)
        worker._start()
        return worker

    def run(
        self,
        *,
        groups: Iterable[str] = ("default",),
        shutdown_timeout: Seconds | None = None,
        stop: threading.Event | None = None,
        **worker_options: Any,
    ) -> bool:
        """Run a worker for each group until SIGINT or SIGTERM, then shut down; block until then.

        What ``pgxjob worker`` does, for programs that embed pgxjob. It must be called from the
        main thread (Python runs signal handlers there; elsewhere it raises RuntimeError), and
        restores the previous handlers when it returns. ``worker_options`` are those of
        :meth:`start_worker`. Setting ``stop`` acts as the first signal.

        On the first signal every worker shuts down as :meth:`Worker.shutdown` describes, all
        within one ``shutdown_timeout`` (None: no limit). A second signal, or the timeout
        running out, unregisters the workers that have not finished, which releases every
        job they still own (unstarted, running or not yet recorded) to other workers. Then the
        scheduler is closed. Returns True when every worker finished in time.
        """
        from pgxjob import runner

        limit = (
            None
            if shutdown_timeout is None
            else seconds(shutdown_timeout, "shutdown_timeout", allow_zero=True)
        )
        return runner.run(
            self, groups=groups, shutdown_timeout=limit, stop=stop, worker_options=worker_options
        )

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
        self._close_async_pools(5.0 if clean else 1.0)
        if close_pool and self._own_pool is not None:
            self._own_pool.close(timeout=5.0 if clean else 1.0)
        with _live_lock:
            _live_schedulers.discard(self)
        return clean

    async def aclose(self, timeout: Seconds | None = None) -> bool:
        """:meth:`close` for asyncio code: the same, off the event loop, which goes on meanwhile."""
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- fork -----------------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # Only the thread that forked lives on in the child: the parent's workers, listener,
        # setup and pool threads are gone, and every open connection shares its socket with the
        # parent. Let go of all of it; the child opens its own connections when it needs them,
        # and starts its own workers.
        inherited = list(self._opened)
        for conn in inherited:
            _detach(conn)
        _abandoned.append((self._own_pool, inherited, self._workers, self._listener))
        for worker in self._workers:
            _disown(worker)
        self._lock = threading.Lock()
        self._workers = []
        self._listener = None
        self._opened = weakref.WeakSet()
        # The parent's event loops do not run here.
        self._async_pools = {}
        self._async_closers = {}
        ready = self._ready.is_set()
        self._ready = threading.Event()
        self._setup_wake = threading.Event()
        if ready:
            self._ready.set()
        if self._own_pool is not None:
            self._own_pool = self._pool = self._new_pool()
            self._acquire = acquire_conn_from_pool(self._own_pool)
            self._pool_opened = False
        if not ready and not self._closed.is_set():
            self._start_setup()

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


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# -- fork ---------------------------------------------------------------------------------------

# What forked children inherited from their parent: kept referenced so that it is never closed
# or collected in the child, where closing would end the parent's sessions.
_abandoned: list[object] = []


def _detach(conn: psycopg.Connection[Any]) -> None:
    """Make an inherited connection's socket harmless in this process, leaving the parent's intact.

    Closing it (libpq sends Terminate) would end the session the parent still uses; pointing
    the descriptor at /dev/null makes any later close or write a no-op for the server.
    """
    try:
        fd = conn.pgconn.socket
    except Exception:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _disown(worker: Worker) -> None:
    # The parent's worker as seen from a forked child: its threads do not exist here, and its
    # row belongs to the parent, so shutting it down in the child must not unregister it.
    worker.shutdown_requested.set()
    worker._id = None
    worker._stopped.set()


def _after_fork_in_child() -> None:
    global _live_lock
    # Another thread of the parent may have held it at the fork; it is never released here.
    _live_lock = threading.Lock()
    for scheduler in list(_live_schedulers):
        scheduler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
