"""The worker command: load APP, start a worker per group, run until a signal, shut down."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from pgxjob import embedded, migrations, queries
from pgxjob.cli.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    CommandError,
    UsageError,
    connect,
    first_line,
    note,
    resolve,
)
from pgxjob.cli.output import Progress, ProgressAwareHandler, ProgressLine
from pgxjob.errors import NotReadyError, PgxjobError

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler

# The worker's own messages keep the logger name users filter on.
logger = logging.getLogger("pgxjob.cli")

LISTEN_URL_ENV = "PGXJOB_LISTEN_DATABASE_URL"
"""Where ``pgxjob worker`` LISTENs when --listen-database-url is not given."""


def load_app(spec: str, conninfo: str) -> Scheduler:
    """Import APP (``module:attribute``) and return its Scheduler.

    The attribute may be a Scheduler, or a callable that returns one; a callable with a
    parameter is called with the database conninfo. ``DATABASE_URL`` is set to the same
    conninfo before the import, so a module that builds its Scheduler at import time from
    ``os.environ["DATABASE_URL"]`` uses the database this command chose.
    """
    from pgxjob.scheduler import Scheduler

    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise UsageError(
            f"APP must be module:attribute, for example myapp.jobs:scheduler; got {spec!r}"
        )
    os.environ["DATABASE_URL"] = conninfo
    # Like gunicorn and uvicorn: modules of the current directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f"cannot import APP module {module_name!r}: no module named {exc.name!r}; "
                "run from the directory that contains it or set PYTHONPATH"
            ) from exc
        raise CommandError(f"importing APP module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise CommandError(
            f"importing APP module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f"APP {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not isinstance(target, Scheduler) and callable(target) and not isinstance(target, type):
        try:
            takes_conninfo = _takes_one_argument(target)
            target = target(conninfo) if takes_conninfo else target()
        except (PgxjobError, ValueError, TypeError) as exc:
            raise CommandError(f"APP {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(target, Scheduler):
        raise UsageError(
            f"APP {spec!r} is {_describe_object(target)}, not a pgxjob.Scheduler or a "
            "callable returning one"
        )
    return target


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


def _describe_object(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"


def cmd_worker(args: argparse.Namespace) -> int:
    groups: list[str] = list(dict.fromkeys(args.groups or ["default"]))
    progress_line = ProgressLine(sys.stderr) if args.progress else None
    level_name = args.log_level or ("debug" if args.verbose else None)
    level_name = level_name or ("warning" if args.progress or args.quiet else "info")
    _configure_logging(getattr(logging, level_name.upper()), progress_line, quiet=args.quiet)

    db = resolve(args)
    scheduler = load_app(args.app, db.conninfo)
    schema = args.schema or scheduler.schema
    if schema != scheduler.schema:
        raise UsageError(
            f"--schema {schema} but APP's Scheduler works in schema {scheduler.schema!r}; "
            "give it the same schema (Scheduler(..., schema=...)) or drop --schema"
        )
    listen_url = args.listen_database_url or os.environ.get(LISTEN_URL_ENV) or None
    if listen_url is not None and not args.listen:
        raise UsageError(
            "--listen-database-url (or " + LISTEN_URL_ENV + ") and --no-listen contradict each "
            "other: give the direct URL to wake on notifications, or --no-listen to poll only"
        )
    with connect(db, schema) as conn:
        _check_same_database(args, db, conn, scheduler)
        if listen_url is not None:
            _use_listen_url(listen_url, conn, scheduler)
        if args.migrate:
            try:
                applied = migrations.migrate(conn, schema=schema)
            except PgxjobError as exc:
                raise CommandError(f"{exc} (database {db.describe()})") from exc
            if applied:
                logger.info("applied pgxjob migrations %s", applied)
        try:
            migrations.check_version(conn, schema)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc

    progress: Progress | None = None
    watcher: threading.Thread | None = None
    stop = threading.Event()
    ran = False
    clean = False
    stop_metrics = _serve_metrics(args, scheduler) if args.metrics_port else None
    try:
        try:
            scheduler.wait_ready()
        except NotReadyError as exc:
            raise CommandError(str(exc)) from exc
        if args.progress or args.until_empty:
            progress = Progress(db, schema, groups, progress_line)
            progress.start()
            watcher = threading.Thread(
                target=_watch_progress,
                args=(args, stop, progress),
                name="pgxjob-cli-progress",
                daemon=True,
            )
        logger.info(
            "serving %s on %s (concurrency %d, %s)",
            ", ".join(groups),
            db.describe(),
            args.concurrency,
            _listen_mode(args, listen_url),
        )
        if not logger.isEnabledFor(logging.INFO):
            note(args, f"serving {', '.join(groups)} on {db.describe()}")
        if watcher is not None:
            watcher.start()
        ran = True
        try:
            clean = scheduler.run(
                groups=groups,
                shutdown_timeout=args.shutdown_timeout,
                stop=stop,
                max_concurrent_jobs=args.concurrency,
                max_prefetched_jobs=args.prefetch,
                poll_interval=args.poll_interval,
                max_buffered_job_results=args.max_buffered_results,
                max_buffered_job_result_age=args.max_buffered_result_age,
                should_log_job_run=_log_final_runs() if args.log_final_runs_only else None,
                min_heartbeat_delay=args.heartbeat,
                heartbeat_delay_jitter=args.heartbeat_jitter,
                worker_dead_without_heartbeat=args.dead_after,
                listen=args.listen,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    finally:
        stop.set()
        if not ran:
            scheduler.close(timeout=5.0)
        if stop_metrics is not None:
            stop_metrics()
        if watcher is not None and watcher.is_alive():
            watcher.join(5.0)
        if progress is not None:
            if args.progress and ran:
                progress.remaining_jobs()
                progress.update(final=True)
                progress.summary(sys.stdout)
            progress.close()
    if not clean:
        logger.warning("shutdown did not finish in time: unfinished jobs run again elsewhere")
        return EXIT_RUNTIME
    return EXIT_OK


def _serve_metrics(args: argparse.Namespace, scheduler: Scheduler) -> Callable[[], None]:
    try:
        from pgxjob.prometheus import serve_worker_metrics
    except ImportError as exc:
        scheduler.close(timeout=5.0)
        raise CommandError(
            f"--metrics-port needs the dashboard extra ({exc.name} is missing): "
            "pip install 'pgxjob[dashboard]'"
        ) from None
    try:
        _, stop = serve_worker_metrics(scheduler, args.metrics_port, addr=args.metrics_bind)
    except OSError as exc:
        scheduler.close(timeout=5.0)
        raise CommandError(
            f"cannot serve metrics on {args.metrics_bind}:{args.metrics_port}: "
            f"{exc.strerror or exc}; pick another --metrics-port"
        ) from None
    logger.info("metrics on http://%s:%d/metrics", args.metrics_bind, args.metrics_port)
    return stop


def _check_same_database(
    args: argparse.Namespace,
    db: embedded.Database,
    conn: psycopg.Connection[Any],
    scheduler: Scheduler,
) -> None:
    """Refuse an APP whose Scheduler works in another database than the command's.

    The command cannot move an application's pool to another database, so the flag cannot
    win: say so rather than serve one database while reporting another.
    """
    ours = queries.database_identity(conn)
    try:
        with scheduler.direct_connection(connect_timeout=10) as app_conn:
            theirs = queries.database_identity(app_conn)
            where = f"{app_conn.info.dbname} on {app_conn.info.host}:{app_conn.info.port}"
    except psycopg.Error as exc:
        raise CommandError(
            f"APP {args.app!r}: its Scheduler cannot connect to its database: {first_line(exc)}"
        ) from exc
    if ours != theirs:
        raise UsageError(
            f"APP {args.app!r} works in database {where}, not in {db.describe()} (from "
            f"{db.source}); build its Scheduler from DATABASE_URL, which this command sets, "
            "or from a factory that takes the conninfo, or give the matching --database-url"
        )


def _listen_mode(args: argparse.Namespace, listen_url: str | None) -> str:
    if not args.listen:
        return "poll only"
    if listen_url is None:
        return "LISTEN"
    return f"LISTEN via {embedded.redact(listen_url)}"


def _use_listen_url(url: str, conn: psycopg.Connection[Any], scheduler: Scheduler) -> None:
    """Point the APP's listener at url, once it is known to reach the command's database."""
    listen_db = embedded.Database(url, "--listen-database-url")
    with connect(listen_db, scheduler.schema) as listen_conn:
        theirs = queries.database_identity(listen_conn)
    ours = queries.database_identity(conn)
    if theirs != ours:
        raise UsageError(
            f"--listen-database-url reaches database {theirs[0]} (server port {theirs[1]}), not "
            f"the worker's database {ours[0]} (server port {ours[1]}): give the same database, "
            "reached directly rather than through the pooler"
        )
    try:
        scheduler.listen_conninfo = url
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--listen-database-url: {exc}") from exc


def _log_final_runs() -> Any:
    from pgxjob.jobs import log_final_job_runs

    return log_final_job_runs


def _watch_progress(args: argparse.Namespace, stop: threading.Event, progress: Progress) -> None:
    """Update the progress line; with --until-empty, stop the workers once no job is left."""
    empty_checks = 0
    while not stop.wait(0.5):
        remaining = progress.remaining_jobs()
        progress.update()
        if args.until_empty and remaining == 0:
            # A job stays locked until its result is recorded, and a handler's follow-up jobs
            # are committed before that, so zero means nothing is left. Two readings in a row
            # guard against jobs another process schedules at that moment.
            empty_checks += 1
            if empty_checks >= 2:
                stop.set()
                return
        else:
            empty_checks = 0


def _configure_logging(level: int, progress: ProgressLine | None, *, quiet: bool) -> None:
    handler = ProgressAwareHandler(progress)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The command line's own messages (startup, shutdown) stay visible above the progress line.
    for name in ("pgxjob.cli", "pgxjob.runner"):
        logging.getLogger(name).setLevel(level if quiet else min(level, logging.INFO))
