"""Jobs and job types as handlers see them, retries, error filters and typed params."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import json
import threading
import traceback
import types
import typing
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, cast, is_typeddict, overload

from typing_extensions import TypeVar

from pgxjob import context
from pgxjob.durations import Seconds, to_timedelta

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler
    from pgxjob.worker import Worker

__all__ = [
    "ErrorFilter",
    "ErrorFilterFunc",
    "ErrorWithRetry",
    "Job",
    "JobCancelled",
    "JobGroup",
    "JobType",
    "JobTypeConfig",
    "ParamsError",
    "ParamsRunJob",
    "RetryLinearBackoffErrorFilter",
    "RunJob",
    "Signal",
    "filter_error",
    "is_async_handler",
    "job_type",
    "log_final_job_runs",
    "unmarshal_params",
]


@dataclasses.dataclass(frozen=True)
class JobGroup:
    """A named lane of work. Each worker serves one group."""

    id: int
    name: str


class Signal(threading.Event):
    """A ``threading.Event`` that asyncio code can wait for too.

    ``job.shutdown_requested`` and ``job.cancel_requested`` are Signals: sync handlers use them
    as Events (``is_set()``, ``wait(timeout)``); async handlers check ``is_set()``, ``await
    signal.wait_async(timeout)``, or take the ``asyncio.Event`` view of :meth:`as_asyncio`.
    """

    # Every job gets a Signal and few are ever waited for, so a Signal makes its condition and
    # its asyncio views on first use, under this one lock shared by all Signals.
    _lazy_lock = threading.Lock()

    def __init__(self) -> None:  # no super().__init__(): its condition is made when needed
        self._flag = False
        self._lazy_cond: threading.Condition | None = None
        # One asyncio.Event per event loop that asked, set through that loop when this is set.
        self._views: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] | None = (
            None
        )

    def _condition(self) -> threading.Condition:
        cond = self._lazy_cond
        if cond is None:
            with self._lazy_lock:
                cond = self._lazy_cond
                if cond is None:
                    cond = self._lazy_cond = threading.Condition(threading.Lock())
        return cond

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        cond = self._condition()
        with cond:
            self._flag = True
            cond.notify_all()
        with self._lazy_lock:
            views = list(self._views.items()) if self._views is not None else []
        for loop, event in views:
            # A closed loop raises RuntimeError: nobody waits on its view any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def clear(self) -> None:
        with self._condition():
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        cond = self._condition()
        with cond:
            signaled = self._flag
            if not signaled:
                signaled = cond.wait(timeout)
            return signaled

    def _at_fork_reinit(self) -> None:
        if self._lazy_cond is not None:
            self._lazy_cond._at_fork_reinit()  # type: ignore[attr-defined]

    def as_asyncio(self) -> asyncio.Event:
        """An ``asyncio.Event`` of the running loop that is set when this Signal is."""
        loop = asyncio.get_running_loop()
        with self._lazy_lock:
            if self._views is None:
                self._views = weakref.WeakKeyDictionary()
            event = self._views.get(loop)
            if event is None:
                event = self._views[loop] = asyncio.Event()
            if self._flag:
                event.set()
        return event

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Wait without blocking the event loop; True once set, False after ``timeout`` seconds."""
        event = self.as_asyncio()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return self.is_set()
        return True


@dataclasses.dataclass(frozen=True)
class Job:
    """One job as its handler receives it.

    ``params`` is the job's JSON text exactly as stored, or None. ``run_at`` is when the job was
    first due (its insert time for an ASAP job). ``shutdown_requested`` is set when the worker
    running the job starts to shut down, and ``cancel_requested`` when the job is cancelled
    (:meth:`Scheduler.cancel`, ``pgxjob_cancel_job``), so long handlers can stop early; a handler
    that stops for a cancellation may raise :class:`JobCancelled`. Either way a cancelled job is
    finished as cancelled, never retried. Both are :class:`Signal` s, which async handlers can
    await (``await job.cancel_requested.wait_async()``, ``.as_asyncio()``).
    ``trace_context`` is the W3C traceparent of the context that scheduled the job (see
    :mod:`pgxjob.tracing`), or None.
    """

    id: int
    group: JobGroup
    type: JobType
    params: str | None
    inserted_at: dt.datetime
    run_at: dt.datetime
    last_error: str | None = None
    error_count: int = 0
    asap: bool = True
    shutdown_requested: Signal = dataclasses.field(
        default_factory=Signal, compare=False, repr=False
    )
    priority: int = 0
    cancel_requested: Signal = dataclasses.field(default_factory=Signal, compare=False, repr=False)
    trace_context: str | None = None


def _claimed_job(
    id: int,
    group: JobGroup,
    type: JobType,
    params: str | None,
    inserted_at: dt.datetime,
    run_at: dt.datetime,
    last_error: str | None,
    error_count: int,
    asap: bool,
    shutdown_requested: Signal,
    priority: int,
    cancel_requested: Signal,
    trace_context: str | None,
) -> Job:
    """``Job(...)`` with every field given, for the worker's fetch: the frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (about 2 µs per job, paid for
    every job fetched); this writes the instance's dict once. tests/test_jobs.py checks that it
    sets every field, so a field added to Job must be added here too."""
    job = object.__new__(Job)
    job.__dict__.update(
        id=id,
        group=group,
        type=type,
        params=params,
        inserted_at=inserted_at,
        run_at=run_at,
        last_error=last_error,
        error_count=error_count,
        asap=asap,
        shutdown_requested=shutdown_requested,
        priority=priority,
        cancel_requested=cancel_requested,
        trace_context=trace_context,
    )
    return job


class JobCancelled(Exception):
    """Raised by a handler that stops because its job was cancelled.

    The job is finished as cancelled (outcome ``cancelled`` in the run log), never retried,
    whatever the error filter says.
    """


RunJob = Callable[[Job], Any]
"""A handler: runs one job and returns on success, raises to fail or retry it.

A coroutine function (``async def``) is a handler too: it runs on the worker's event loop. What
a handler returns (or its coroutine does), if not None, is stored as JSON with the run's log row
(its ``output``)."""

P = TypeVar("P", default=Any)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ParamsRunJob(Protocol[T_co]):
    """A handler that decodes the job's params into ``T_co`` first (:func:`unmarshal_params`).

    Its job type's :meth:`JobTypeConfig.schedule` takes params of that type.
    """

    def __call__(self, job: Job) -> Any: ...

    def __pgxjob_params_type__(self) -> T_co: ...


def is_async_handler(run_job: object) -> bool:
    """Whether a handler is a coroutine function (or an object whose ``__call__`` is one)."""
    call = getattr(type(run_job), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(run_job) or inspect.iscoroutinefunction(call)


@dataclasses.dataclass(frozen=True)
class JobType:
    """A registered kind of work: its database id, default group and handler."""

    id: int
    name: str
    default_group: JobGroup
    run_job: RunJob = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class JobTypeConfig(Generic[P]):
    """Declares a job type for a Scheduler: its name, handler and default group.

    The handler is a function or a coroutine function (``async def``, run on the worker's event
    loop). Calling the config calls its handler, so a function decorated with :func:`job_type`
    can still be called directly in tests. A config schedules jobs of its type with
    :meth:`schedule` and :meth:`schedule_async`; ``P`` is its params type when the handler is
    wrapped by :func:`unmarshal_params`.
    """

    name: str
    run_job: RunJob | ParamsRunJob[P]
    default_group_name: str = "default"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"job type name must be a non-empty string, got {self.name!r}")
        if not callable(self.run_job):
            raise TypeError(f"run_job of job type {self.name!r} must be callable")
        if not isinstance(self.default_group_name, str) or not self.default_group_name:
            raise ValueError(
                f"default_group_name of job type {self.name!r} must be a non-empty string"
            )

    @property
    def is_async(self) -> bool:
        """True when the handler is a coroutine function, run on the worker's event loop."""
        return is_async_handler(self.run_job)

    def __call__(self, job: Job) -> Any:
        return self.run_job(job)

    def _scheduler(self, scheduler: Scheduler | None) -> Scheduler:
        if scheduler is not None:
            return scheduler
        found = context.ctx()
        if found is None:
            raise RuntimeError(
                f"job type {self.name!r} has no scheduler to schedule with: pass scheduler=..., "
                "or enter scheduler.with_context(), or set pgxjob.default_context_scheduler"
            )
        return found

    def schedule(
        self,
        conn: Any,
        params: P | None = None,
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_key: str | None = None,
        scheduler: Scheduler | None = None,
    ) -> int:
        """Schedule a job of this type: :meth:`Scheduler.schedule` with this type's name.

        With the given ``scheduler``, else the context scheduler (:func:`pgxjob.ctx`: the
        scheduler running the current job, or ``with_context()``, or the module default).
        """
        return self._scheduler(scheduler).schedule(
            conn,
            self.name,
            params,
            group_name=group_name,
            run_at=run_at,
            priority=priority,
            unique_key=unique_key,
        )

    async def schedule_async(
        self,
        conn: Any,
        params: P | None = None,
        *,
        group_name: str | None = None,
        run_at: dt.datetime | None = None,
        priority: int = 0,
        unique_key: str | None = None,
        scheduler: Scheduler | None = None,
    ) -> int:
        """:meth:`schedule` for asyncio code: :meth:`Scheduler.schedule_async` with this type."""
        return await self._scheduler(scheduler).schedule_async(
            conn,
            self.name,
            params,
            group_name=group_name,
            run_at=run_at,
            priority=priority,
            unique_key=unique_key,
        )


class _JobTypeDecorator(Protocol):
    @overload
    def __call__(self, run_job: ParamsRunJob[T]) -> JobTypeConfig[T]: ...

    @overload
    def __call__(self, run_job: RunJob) -> JobTypeConfig[Any]: ...


def job_type(name: str, *, default_group_name: str = "default") -> _JobTypeDecorator:
    """Decorator form of :class:`JobTypeConfig`: ``@job_type("send_email")`` over a handler."""

    def decorate(run_job: Any) -> JobTypeConfig[Any]:
        return JobTypeConfig(name, run_job, default_group_name=default_group_name)

    return cast(_JobTypeDecorator, decorate)


MAX_RETRIES_LIMIT = 2**31 - 1
"""The largest max_retries PostgreSQL's int can hold."""


def _check_max_retries(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise ValueError(f"{name} must be between 0 and {MAX_RETRIES_LIMIT}, got {value!r}")
    return value


class ErrorWithRetry(Exception):
    """Raised by a handler (or returned by an error filter) to run the job again later.

    ``retry_at`` is when to run it again: a timezone-aware datetime, or a delay (seconds or a
    timedelta) counted from now on this host's clock. Instead, a linear backoff
    (``backoff_max_retries``, ``backoff_base_delay``) lets the database compute the retry time
    on its own clock when the result is recorded, and fail the job for good once error_count
    reaches max_retries; :class:`RetryLinearBackoffErrorFilter` uses it.
    """

    def __init__(
        self,
        err: BaseException | str,
        retry_at: dt.datetime | Seconds | None = None,
        *,
        backoff_max_retries: int | None = None,
        backoff_base_delay: Seconds | None = None,
    ) -> None:
        if retry_at is None and (backoff_max_retries is None or backoff_base_delay is None):
            raise ValueError(
                "ErrorWithRetry needs retry_at, or a backoff max_retries and base_delay"
            )
        if isinstance(retry_at, dt.datetime):
            if retry_at.tzinfo is None:
                raise ValueError(
                    f"retry_at must be timezone-aware (got {retry_at!r}); "
                    "use datetime.now(timezone.utc) + delay, or pass the delay itself"
                )
        elif retry_at is not None:
            retry_at = dt.datetime.now(dt.UTC) + to_timedelta(retry_at, "retry_at (a delay)")
        self.err = err if isinstance(err, BaseException) else Exception(err)
        self.retry_at: dt.datetime | None = retry_at
        self.backoff_max_retries = (
            None
            if backoff_max_retries is None
            else _check_max_retries(backoff_max_retries, "backoff_max_retries")
        )
        self.backoff_base_delay = (
            None
            if backoff_base_delay is None
            else to_timedelta(backoff_base_delay, "backoff_base_delay")
        )
        super().__init__(error_text(self.err))
        self.__cause__ = self.err

    def __str__(self) -> str:
        return error_text(self.err)

    def is_final(self, error_count: int) -> bool:
        """Whether the database ends the job for good: a backoff whose retries are used up.

        ``error_count`` is the job's error_count when it ran. The rule is pgxjob_linear_backoff's.
        """
        return (
            self.retry_at is None
            and self.backoff_max_retries is not None
            and error_count >= self.backoff_max_retries
        )


class ErrorFilter(Protocol):
    """Decides what a handler's error means: returns an ErrorWithRetry to retry, else the error."""

    def filter_error(self, job: Job, err: BaseException) -> BaseException: ...


@dataclasses.dataclass(frozen=True)
class RetryLinearBackoffErrorFilter:
    """Retries a failed job while its error_count < max_retries.

    ``base_delay`` is seconds (int or float) or a timedelta, at most 100 years.

    The retry time is ``now + (error_count + 1) * base_delay`` on the database's clock, computed
    by pgxjob_linear_backoff when the result is recorded.
    """

    max_retries: int
    base_delay: Seconds
    """Seconds (int or float) or a timedelta when given; a timedelta once constructed."""

    def __post_init__(self) -> None:
        _check_max_retries(self.max_retries, "max_retries")
        object.__setattr__(self, "base_delay", to_timedelta(self.base_delay, "base_delay"))

    def filter_error(self, job: Job, err: BaseException) -> BaseException:
        if isinstance(err, ErrorWithRetry):
            return err
        if job.error_count < self.max_retries:
            return ErrorWithRetry(
                err, backoff_max_retries=self.max_retries, backoff_base_delay=self.base_delay
            )
        return err


ErrorFilterFunc = Callable[[Job, BaseException], BaseException]
"""A plain function used as an error filter: ``(job, err) -> err``."""


def filter_error(run_job: RunJob, error_filter: ErrorFilter | ErrorFilterFunc) -> RunJob:
    """Wrap a handler so that its exceptions pass through the error filter.

    ``error_filter`` is an :class:`ErrorFilter` (an object with a ``filter_error(job, err)``
    method) or a plain function ``(job, err) -> err``. What it returns is raised in place of the
    handler's error: an ErrorWithRetry to retry the job, any other exception to fail it.
    """
    if not callable(run_job):
        raise TypeError(f"run_job must be callable, got {run_job!r}")
    method = getattr(error_filter, "filter_error", None)
    if callable(method):
        apply: ErrorFilterFunc = method
    elif callable(error_filter):
        apply = error_filter
    else:
        raise TypeError(
            "error_filter must have a filter_error(job, err) method or be a function "
            f"(job, err) -> err, got {error_filter!r}"
        )

    def replacement(job: Job, exc: Exception) -> BaseException:
        filtered = apply(job, exc)
        if filtered is not exc and not isinstance(filtered, BaseException):
            raise TypeError(
                f"error filter {error_filter!r} returned {filtered!r}; it must return an "
                "exception (an ErrorWithRetry to retry the job, or the error itself)"
            ) from exc
        return filtered

    # The two wrappers differ only in the await: what an error becomes is decided once, above.
    if is_async_handler(run_job):
        run_async = cast(Callable[[Job], Awaitable[Any]], run_job)

        @functools.wraps(run_job)
        async def run_coroutine(job: Job) -> Any:
            try:
                return await run_async(job)
            except JobCancelled:
                raise
            except Exception as exc:
                filtered = replacement(job, exc)
                if filtered is exc:
                    raise
                raise filtered from exc

        return run_coroutine

    @functools.wraps(run_job)
    def run(job: Job) -> Any:
        try:
            return run_job(job)
        except JobCancelled:
            # A cancelled job ends; no filter may turn that into a retry.
            raise
        except Exception as exc:
            filtered = replacement(job, exc)
            if filtered is exc:
                raise
            raise filtered from exc

    return run


def log_final_job_runs(
    worker: Worker,
    job: Job,
    started_at: dt.datetime,
    finished_at: dt.datetime,
    err: BaseException | None,
) -> bool:
    """A ``should_log_job_run`` logging only a job's final run: a success or a failure for good."""
    return is_final_run(job, err)


def is_final_run(job: Job, err: BaseException | None) -> bool:
    """Whether this run ends the job: a success, a plain failure, or a backoff retry used up."""
    return not isinstance(err, ErrorWithRetry) or err.is_final(job.error_count)


def error_text(err: BaseException) -> str:
    """The one-line summary of an exception: its type and message. Never raises."""
    name = type(err).__name__
    try:
        message = str(err)
    except Exception as exc:  # an exception whose __str__ raises must not take its runner down
        message = f"<unprintable {name}: str() raised {type(exc).__name__}>"
    text = f"{name}: {message}" if message else name
    return _storable(text)


def failure_text(err: BaseException) -> str:
    """The text stored as a failed run's error: the summary line, then the traceback.

    For an ErrorWithRetry the summary is its inner error's. Never raises.
    """
    inner = err.err if isinstance(err, ErrorWithRetry) else err
    summary = error_text(inner)
    try:
        if inner.__traceback__ is not None:
            lines = traceback.format_exception(inner)
        else:
            # An ErrorWithRetry around an error that was never raised: where it was raised.
            lines = traceback.format_exception(err, chain=False)
        trace = "".join(lines).rstrip("\n")
    except Exception:
        return summary
    if not trace or trace == summary:
        return summary
    return _storable(f"{summary}\n\n{trace}")


def _storable(text: str) -> str:
    # PostgreSQL text holds neither NUL nor lone surrogates: escape them, or the batch of
    # results holding this error could never be recorded.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class ParamsError(ValueError):
    """A job's params do not decode into the type its handler declares. The job fails for good."""


@overload
def unmarshal_params(fn: Callable[[Job, T], Any], *, strict: bool = False) -> ParamsRunJob[T]: ...


@overload
def unmarshal_params(
    fn: None = None, *, strict: bool = False
) -> Callable[[Callable[[Job, T], Any]], ParamsRunJob[T]]: ...


def unmarshal_params(
    fn: Callable[[Job, T], Any] | None = None, *, strict: bool = False
) -> ParamsRunJob[T] | Callable[[Callable[[Job, T], Any]], ParamsRunJob[T]]:
    """Wrap ``fn(job, params)`` into a handler that decodes the job's JSON params first.

    The target is the annotation of fn's second parameter: a dataclass (nested dataclasses and
    lists of them too), a TypedDict, a dict or list, or a pydantic model when pydantic is
    installed. Keys a dataclass does not declare are ignored, so producers can add fields
    before consumers know them; ``strict=True`` fails the job on them instead. Params that do
    not fit fail the job with a ParamsError naming the mismatch. Also usable as
    ``@unmarshal_params(strict=True)``. ``fn`` may be a coroutine function: the handler is then
    one too. A job type declared over the result schedules params of the target type
    (:meth:`JobTypeConfig.schedule`).
    """
    if fn is None:
        return lambda f: _unmarshal_params(f, strict=strict)
    return _unmarshal_params(fn, strict=strict)


def _unmarshal_params(fn: Callable[[Job, T], Any], *, strict: bool) -> ParamsRunJob[T]:
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if len(parameters) != 2:
        raise TypeError(f"{fn.__qualname__} must take (job, params), got {signature}")
    hints = typing.get_type_hints(fn)
    target = hints.get(parameters[1].name, Any)

    def decoded(job: Job) -> Any:
        try:
            raw = None if job.params is None else json.loads(job.params)
            return _decode(raw, target, "params", strict)
        except (ValueError, TypeError, KeyError) as exc:
            raise ParamsError(
                f"job {job.id} ({job.type.name}): params {job.params!r} do not fit "
                f"{getattr(target, '__name__', target)}: {exc}"
            ) from exc

    if is_async_handler(fn):
        fn_async = cast(Callable[[Job, Any], Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def run_coroutine(job: Job) -> Any:
            return await fn_async(job, decoded(job))

        return cast("ParamsRunJob[T]", run_coroutine)

    @functools.wraps(fn)
    def run(job: Job) -> Any:
        return fn(job, decoded(job))

    return cast("ParamsRunJob[T]", run)


def _decode(value: Any, target: Any, where: str, strict: bool) -> Any:
    if target is Any or target is object:
        return value
    pydantic_model = _pydantic_base()
    if (
        pydantic_model is not None
        and isinstance(target, type)
        and issubclass(target, pydantic_model)
    ):
        try:
            return target.model_validate(value)  # type: ignore[attr-defined]
        except Exception as exc:  # pydantic.ValidationError
            raise ValueError(str(exc)) from exc
    if dataclasses.is_dataclass(target) and isinstance(target, type):
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be a JSON object, got {type(value).__name__}")
        hints = typing.get_type_hints(target)
        names = {f.name for f in dataclasses.fields(target) if f.init}
        unknown = set(value) - names
        if unknown and strict:
            raise KeyError(f"{where} has unknown keys {sorted(unknown)}")
        kwargs = {
            k: _decode(v, hints.get(k, Any), f"{where}.{k}", strict)
            for k, v in value.items()
            if k in names
        }
        return target(**kwargs)
    if is_typeddict(target):
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be a JSON object, got {type(value).__name__}")
        missing = set(target.__required_keys__) - set(value)
        if missing:
            raise KeyError(f"{where} misses keys {sorted(missing)}")
        return value
    origin = typing.get_origin(target)
    args = typing.get_args(target)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(value, arg, where, strict)
            except (TypeError, ValueError, KeyError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where} fits none of {args}: {errors}")
    if origin is list and isinstance(value, list):
        item = args[0] if args else Any
        return [_decode(v, item, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        item = args[1] if len(args) == 2 else Any
        return {k: _decode(v, item, f"{where}.{k}", strict) for k, v in value.items()}
    check = origin or target
    if check is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(check, type) and not isinstance(value, check):
        raise TypeError(f"{where} must be {check.__name__}, got {type(value).__name__}")
    return value


def _pydantic_base() -> type | None:
    try:
        from pydantic import BaseModel
    except ImportError:
        return None
    return BaseModel
