"""pgxjob: a job runner on PostgreSQL whose core is plain PL/pgSQL.

Jobs are scheduled with ``pgxjob_schedule(...)`` from SQL or :meth:`Scheduler.schedule` from
Python, and run by thread workers started with :meth:`Scheduler.start_worker`.
"""

from __future__ import annotations

from pgxjob.jobs import (
    ErrorFilter,
    ErrorWithRetry,
    Job,
    JobGroup,
    JobType,
    JobTypeConfig,
    RetryLinearBackoffErrorFilter,
    filter_error,
    job_type,
    log_final_job_runs,
    unmarshal_params,
)
from pgxjob.queries import PG_NOTIFY_CHANNEL
from pgxjob.scheduler import Scheduler, acquire_conn_from_pool, ctx
from pgxjob.worker import Worker

__all__ = [
    "PG_NOTIFY_CHANNEL",
    "ErrorFilter",
    "ErrorWithRetry",
    "Job",
    "JobGroup",
    "JobType",
    "JobTypeConfig",
    "RetryLinearBackoffErrorFilter",
    "Scheduler",
    "Worker",
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
