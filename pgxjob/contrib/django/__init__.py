"""Django: schedule jobs on Django's database connection, inside its ``transaction.atomic()``.

Add ``"pgxjob.contrib.django"`` to ``INSTALLED_APPS`` for the ``manage.py pgxjob`` command (the
``pgxjob`` command line with the project's settings). Settings, all optional:

- ``PGXJOB_SCHEDULER``: ``"module:attribute"`` of the project's :class:`pgxjob.Scheduler` (the
  one with the job types); ``manage.py pgxjob worker`` runs its workers. Without it,
  :func:`schedule` uses a scheduling-only Scheduler (``register=False``).
- ``PGXJOB_SCHEMA``: the schema pgxjob is migrated into (default ``public``).

Needs Django 5 with the psycopg 3 backend; install ``pgxjob[django]``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgxjob.scheduler import Scheduler

__all__ = ["cancel", "database_url", "get_scheduler", "schedule", "schedule_many"]

_lock = threading.Lock()
_default: dict[str, Scheduler] = {}

# Keys of DATABASES[...]["OPTIONS"] that Django itself reads; the others are libpq parameters.
_DJANGO_OPTIONS = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory", "context"}
)


def database_url(using: str = "default") -> str:
    """The libpq conninfo of Django's database ``using``, from its settings.

    For a Scheduler of the project (``Scheduler(database_url(), job_types=...)``) and for the
    ``pgxjob`` command line; ``manage.py pgxjob`` passes it as ``--database-url``.
    """
    from django.db import connections

    settings = connections[using].settings_dict
    if settings.get("ENGINE") != "django.db.backends.postgresql":
        raise ValueError(
            f"Django database {using!r} uses {settings.get('ENGINE')!r}; pgxjob needs "
            "django.db.backends.postgresql"
        )
    params: dict[str, Any] = {
        "dbname": settings.get("NAME") or "postgres",
        "user": settings.get("USER"),
        "password": settings.get("PASSWORD"),
        "host": settings.get("HOST"),
        "port": settings.get("PORT"),
    }
    for key, value in (settings.get("OPTIONS") or {}).items():
        if key not in _DJANGO_OPTIONS and isinstance(value, str | int):
            params[key] = value
    return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})


def get_scheduler(using: str = "default") -> Scheduler:
    """The Scheduler named by the ``PGXJOB_SCHEDULER`` setting, else a scheduling-only one."""
    from django.conf import settings

    spec = getattr(settings, "PGXJOB_SCHEDULER", None)
    if spec is not None:
        return _load(spec)
    with _lock:
        scheduler = _default.get(using)
        if scheduler is None:
            # Its own pool is never opened by schedule(): every call passes Django's connection.
            scheduler = _default[using] = Scheduler(
                database_url(using),
                register=False,
                schema=getattr(settings, "PGXJOB_SCHEMA", "public"),
            )
        return scheduler


def _load(spec: object) -> Scheduler:
    if isinstance(spec, Scheduler):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"settings.PGXJOB_SCHEDULER must be 'module:attribute' naming a pgxjob.Scheduler, "
            f"got {spec!r}"
        )
    module_name, _, attr_path = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        target = getattr(target, part)
    if not isinstance(target, Scheduler):
        raise TypeError(
            f"settings.PGXJOB_SCHEDULER {spec!r} is a {type(target).__name__}, not a "
            "pgxjob.Scheduler"
        )
    return target


def _raw_connection(using: str) -> psycopg.Connection[Any]:
    from django.db import connections

    connection = connections[using]
    # What Django's own cursors check: no query in an atomic block that already failed.
    connection.validate_no_broken_transaction()
    connection.ensure_connection()
    raw = connection.connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(
            f"Django database {using!r} runs on {type(raw).__module__}, not psycopg 3; "
            "install psycopg (3) for Django's postgresql backend, or schedule in SQL with "
            'cursor.execute("select pgxjob_schedule(%s, %s::json)", [job_type, params_json])'
        )
    return raw


def schedule(
    job_type: str,
    params: Any = None,
    *,
    group_name: str | None = None,
    run_at: dt.datetime | None = None,
    priority: int = 0,
    unique_key: str | None = None,
    using: str = "default",
) -> int:
    """Schedule one job on Django's connection ``using``; return its id.

    Inside ``transaction.atomic()`` the job commits or rolls back with the block (and the worker
    is notified at its commit); outside it, it is committed at once. The options are those of
    :meth:`pgxjob.Scheduler.schedule`. From async views call it through ``sync_to_async``, as
    any use of Django's connection.
    """
    from django.db import transaction

    with transaction.mark_for_rollback_on_error(using):
        return get_scheduler(using).schedule(
            _raw_connection(using),
            job_type,
            params,
            group_name=group_name,
            run_at=run_at,
            priority=priority,
            unique_key=unique_key,
        )


def schedule_many(
    job_type: str,
    params_list: Sequence[Any],
    *,
    group_name: str | None = None,
    run_at: dt.datetime | None = None,
    priority: int = 0,
    unique_keys: Sequence[str | None] | None = None,
    using: str = "default",
) -> list[int]:
    """:meth:`pgxjob.Scheduler.schedule_many` on Django's connection, as :func:`schedule`."""
    from django.db import transaction

    with transaction.mark_for_rollback_on_error(using):
        return get_scheduler(using).schedule_many(
            _raw_connection(using),
            job_type,
            params_list,
            group_name=group_name,
            run_at=run_at,
            priority=priority,
            unique_keys=unique_keys,
        )


def cancel(job_id: int, *, using: str = "default") -> str:
    """:meth:`pgxjob.Scheduler.cancel` on Django's connection, in its transaction."""
    from django.db import transaction

    with transaction.mark_for_rollback_on_error(using):
        return get_scheduler(using).cancel(_raw_connection(using), job_id)
