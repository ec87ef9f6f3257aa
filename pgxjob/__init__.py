"""pgxjob: a job runner on PostgreSQL whose core is plain PL/pgSQL.

Jobs are scheduled with ``pgxjob_schedule(...)`` from SQL, :meth:`Scheduler.schedule` from
Python or ``await`` :meth:`Scheduler.schedule_async` from asyncio code, and run by workers started
with :meth:`Scheduler.start_worker`: sync handlers on threads, async handlers on an event loop.
"""

from __future__ import annotations

from pgxjob.context import ctx
from pgxjob.errors import (
    InvalidArgumentError,
    InvalidCronError,
    InvalidNameError,
    ListenConninfoError,
    NotReadyError,
    PgxjobError,
    SchemaVersionError,
    UnknownGroupError,
    UnknownJobTypeError,
    WorkerNotRegisteredError,
)
from pgxjob.jobs import (
    ErrorFilter,
    ErrorFilterFunc,
    ErrorWithRetry,
    Job,
    JobCancelled,
    JobGroup,
    JobType,
    JobTypeConfig,
    ParamsError,
    RetryLinearBackoffErrorFilter,
    Signal,
    filter_error,
    job_type,
    log_final_job_runs,
    unmarshal_params,
)
from pgxjob.periodic import PeriodicJob
from pgxjob.queries import PG_NOTIFY_CHANNEL
from pgxjob.results import UnrecordableResultError
from pgxjob.scheduler import Scheduler, acquire_conn_from_pool
from pgxjob.worker import NoHandlerError, Worker

__all__ = [
    "PG_NOTIFY_CHANNEL",
    "ErrorFilter",
    "ErrorFilterFunc",
    "ErrorWithRetry",
    "InvalidArgumentError",
    "InvalidCronError",
    "InvalidNameError",
    "Job",
    "JobCancelled",
    "JobGroup",
    "JobType",
    "JobTypeConfig",
    "ListenConninfoError",
    "NoHandlerError",
    "NotReadyError",
    "ParamsError",
    "PeriodicJob",
    "PgxjobError",
    "RetryLinearBackoffErrorFilter",
    "Scheduler",
    "SchemaVersionError",
    "Signal",
    "UnknownGroupError",
    "UnknownJobTypeError",
    "UnrecordableResultError",
    "Worker",
    "WorkerNotRegisteredError",
    "acquire_conn_from_pool",
    "ctx",
    "default_context_scheduler",
    "filter_error",
    "job_type",
    "log_final_job_runs",
    "unmarshal_params",
]

default_context_scheduler: Scheduler | None = None
"""The scheduler :func:`ctx` returns outside any ``scheduler.with_context()`` block."""
