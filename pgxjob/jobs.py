"""Jobs and job types as handlers see them, retries, error filters and typed params."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import json
import threading
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, is_typeddict

if TYPE_CHECKING:
    from pgxjob.worker import Worker

__all__ = [
    "ErrorFilter",
    "ErrorWithRetry",
    "Job",
    "JobGroup",
    "JobType",
    "JobTypeConfig",
    "ParamsError",
    "RetryLinearBackoffErrorFilter",
    "RunJob",
    "filter_error",
    "job_type",
    "log_final_job_runs",
    "unmarshal_params",
]


@dataclasses.dataclass(frozen=True)
class JobGroup:
    """A named lane of work. Each worker serves one group."""

    id: int
    name: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One job as its handler receives it.

    ``params`` is the job's JSON text exactly as stored, or None. ``run_at`` is when the job was
    first due (its insert time for an ASAP job). ``shutdown_requested`` is set when the worker
    running the job starts to shut down, so long handlers can stop early.
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
    shutdown_requested: threading.Event = dataclasses.field(
        default_factory=threading.Event, compare=False, repr=False
    )


RunJob = Callable[[Job], None]
"""A handler: runs one job, returns None on success, raises to fail or retry it."""


@dataclasses.dataclass(frozen=True)
class JobType:
    """A registered kind of work: its database id, default group and handler."""

    id: int
    name: str
    default_group: JobGroup
    run_job: RunJob = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class JobTypeConfig:
    """Declares a job type for a Scheduler: its name, handler and default group.

    Calling the config calls its handler, so a function decorated with :func:`job_type` can still
    be called directly in tests.
    """

    name: str
    run_job: RunJob
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

    def __call__(self, job: Job) -> None:
        self.run_job(job)


def job_type(
    name: str, *, default_group_name: str = "default"
) -> Callable[[RunJob], JobTypeConfig]:
    """Decorator form of :class:`JobTypeConfig`: ``@job_type("send_email")`` over a handler."""

    def decorate(run_job: RunJob) -> JobTypeConfig:
        return JobTypeConfig(name, run_job, default_group_name=default_group_name)

    return decorate


class ErrorWithRetry(Exception):
    """Raised by a handler (or returned by an error filter) to run the job again later.

    ``retry_at`` is when to run it again. Instead of a time, a linear backoff
    (``backoff_max_retries``, ``backoff_base_delay``) lets the database compute the retry time
    on its own clock when the result is recorded; :class:`RetryLinearBackoffErrorFilter` uses it.
    """

    def __init__(
        self,
        err: BaseException | str,
        retry_at: dt.datetime | None = None,
        *,
        backoff_max_retries: int | None = None,
        backoff_base_delay: dt.timedelta | None = None,
    ) -> None:
        if retry_at is None and (backoff_max_retries is None or backoff_base_delay is None):
            raise ValueError(
                "ErrorWithRetry needs retry_at, or a backoff max_retries and base_delay"
            )
        if retry_at is not None and retry_at.tzinfo is None:
            raise ValueError(
                f"retry_at must be timezone-aware (got {retry_at!r}); "
                "use datetime.now(timezone.utc) + delay"
            )
        self.err = err if isinstance(err, BaseException) else Exception(err)
        self.retry_at = retry_at
        self.backoff_max_retries = backoff_max_retries
        self.backoff_base_delay = backoff_base_delay
        super().__init__(str(err))
        self.__cause__ = self.err

    def __str__(self) -> str:
        return error_text(self.err)


class ErrorFilter(Protocol):
    """Decides what a handler's error means: returns an ErrorWithRetry to retry, else the error."""

    def filter_error(self, job: Job, err: BaseException) -> BaseException: ...


@dataclasses.dataclass(frozen=True)
class RetryLinearBackoffErrorFilter:
    """Retries a failed job while its error_count < max_retries.

    The retry time is ``now + (error_count + 1) * base_delay`` on the database's clock, computed
    by pgxjob_linear_backoff when the result is recorded.
    """

    max_retries: int
    base_delay: dt.timedelta

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay < dt.timedelta(0):
            raise ValueError(f"base_delay must not be negative, got {self.base_delay}")

    def filter_error(self, job: Job, err: BaseException) -> BaseException:
        if isinstance(err, ErrorWithRetry):
            return err
        if job.error_count < self.max_retries:
            return ErrorWithRetry(
                err, backoff_max_retries=self.max_retries, backoff_base_delay=self.base_delay
            )
        return err


def filter_error(run_job: RunJob, error_filter: ErrorFilter) -> RunJob:
    """Wrap a handler so that its exceptions pass through ``error_filter.filter_error``."""

    @functools.wraps(run_job)
    def run(job: Job) -> None:
        try:
            run_job(job)
        except Exception as exc:
            filtered = error_filter.filter_error(job, exc)
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
    return not isinstance(err, ErrorWithRetry)


def error_text(err: BaseException) -> str:
    """The text stored as a run's error: the exception's type and message."""
    message = str(err)
    name = type(err).__name__
    text = f"{name}: {message}" if message else name
    # PostgreSQL text holds neither NUL nor lone surrogates: escape them, or the batch of
    # results holding this error could never be recorded.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class ParamsError(ValueError):
    """A job's params do not decode into the type its handler declares. The job fails for good."""


T = TypeVar("T")


def unmarshal_params(fn: Callable[[Job, T], None]) -> RunJob:
    """Wrap ``fn(job, params)`` into a handler that decodes the job's JSON params first.

    The target is the annotation of fn's second parameter: a dataclass (nested dataclasses and
    lists of them too), a TypedDict, a dict or list, or a pydantic model when pydantic is
    installed. Params that do not fit fail the job with a ParamsError naming the mismatch.
    """
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if len(parameters) != 2:
        raise TypeError(f"{fn.__qualname__} must take (job, params), got {signature}")
    hints = typing.get_type_hints(fn)
    target = hints.get(parameters[1].name, Any)

    @functools.wraps(fn)
    def run(job: Job) -> None:
        try:
            raw = None if job.params is None else json.loads(job.params)
            params = _decode(raw, target, "params")
        except (ValueError, TypeError, KeyError) as exc:
            raise ParamsError(
                f"job {job.id} ({job.type.name}): params {job.params!r} do not fit "
                f"{getattr(target, '__name__', target)}: {exc}"
            ) from exc
        fn(job, params)

    return run


def _decode(value: Any, target: Any, where: str) -> Any:
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
        if unknown:
            raise KeyError(f"{where} has unknown keys {sorted(unknown)}")
        kwargs = {k: _decode(v, hints.get(k, Any), f"{where}.{k}") for k, v in value.items()}
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
                return _decode(value, arg, where)
            except (TypeError, ValueError, KeyError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where} fits none of {args}: {errors}")
    if origin is list and isinstance(value, list):
        item = args[0] if args else Any
        return [_decode(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        item = args[1] if len(args) == 2 else Any
        return {k: _decode(v, item, f"{where}.{k}") for k, v in value.items()}
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
