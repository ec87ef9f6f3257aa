"""pgxjob's exception classes and the mapping from the SQL functions' SQLSTATEs to them."""

from __future__ import annotations

import psycopg

__all__ = [
    "InvalidArgumentError",
    "InvalidCronError",
    "InvalidNameError",
    "ListenConninfoError",
    "NotReadyError",
    "PgxjobError",
    "SchemaVersionError",
    "UnknownGroupError",
    "UnknownJobTypeError",
    "WorkerNotRegisteredError",
]


class PgxjobError(Exception):
    """Base class of every error pgxjob raises on its own account."""


class UnknownJobTypeError(PgxjobError, LookupError):
    """The job type is not registered (SQLSTATE PJ001)."""


class UnknownGroupError(PgxjobError, LookupError):
    """The group is not registered (SQLSTATE PJ002)."""


class InvalidNameError(PgxjobError, ValueError):
    """A job type or group name is missing or empty (SQLSTATE PJ003)."""


class WorkerNotRegisteredError(PgxjobError):
    """The worker's row is gone: it was reaped or unregistered (SQLSTATE PJ004)."""


class InvalidArgumentError(PgxjobError, ValueError):
    """An argument of a pgxjob SQL function is out of range (SQLSTATE PJ005)."""


class InvalidCronError(PgxjobError, ValueError):
    """A cron expression or its time zone cannot be used (SQLSTATE PJ007)."""


class SchemaVersionError(PgxjobError):
    """The database's pgxjob schema is missing, or newer than this version of pgxjob."""


class ListenConninfoError(PgxjobError):
    """The scheduler's listen_conninfo reaches another database than its other connections."""


class NotReadyError(PgxjobError, TimeoutError):
    """The scheduler could not finish its setup (registering groups and types) in time."""


SQLSTATE_ERRORS: dict[str, type[PgxjobError]] = {
    "PJ001": UnknownJobTypeError,
    "PJ002": UnknownGroupError,
    "PJ003": InvalidNameError,
    "PJ004": WorkerNotRegisteredError,
    "PJ005": InvalidArgumentError,
    "PJ007": InvalidCronError,
}


def translate(exc: psycopg.Error) -> BaseException:
    """Return the pgxjob exception for a database error raised by a pgxjob function.

    Errors with another SQLSTATE are returned unchanged. The message and hint come from the
    database, which names the bad value and says what to do.
    """
    cls = SQLSTATE_ERRORS.get(exc.sqlstate or "")
    if cls is None:
        return exc
    diag = exc.diag
    message = diag.message_primary or str(exc)
    if diag.message_hint:
        message = f"{message} (hint: {diag.message_hint})"
    error = cls(message)
    error.__cause__ = exc
    return error
