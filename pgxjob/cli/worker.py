"""The worker command: load APP, start a worker per group, run until a signal, shut down."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg

from pgxjob import embedded, migrations, queries
from pgxjob.cli.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    CommandError,
    UsageError,
    connect,
    note,
    resolve,
)
from pgxjob.cli.output import Progress, ProgressAwareHandler, ProgressLine
from pgxjob.errors import NotReadyError, PgxjobError

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler
    from pgxjob.worker import Worker

# The worker's own messages keep the logger name users filter on.
logger = logging.getLogger("pgxjob.cli")


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


class _Signals:
    """First SIGINT/SIGTERM: graceful shutdown. Second: stop at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.force = threading.Event()
        self.name = ""

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            self.force.set()
            return
        self.name = name
        self.stop.set()


def cmd_worker(args: argparse.Namespace) -> int:
    groups: list[str] = list(dict.fromkeys(args.groups or ["default"]))
    progress_line = ProgressLine(sys.stderr) if args.progress else None
    level_name = args.log_level or ("debug" if args.verbose else None)
    level_name = level_name or ("warning" if args.progress or args.quiet else "info")
    _configure_logging(getattr(logging, level_name.upper()), progress_line, quiet=args.quiet)

    db = resolve(args)
    with connect(db) as conn:
        if args.migrate:
            try:
                applied = migrations.migrate(conn)
            except PgxjobError as exc:
                raise CommandError(f"{exc} (database {db.describe()})") from exc
            if applied:
                logger.info("applied pgxjob migrations %s", applied)
        try:
            migrations.check_version(conn)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc

    scheduler = load_app(args.app, db.conninfo)
    signals = _Signals()
    signals.install()
    workers: list[Worker] = []
    progress: Progress | None = None
    closed = False
    clean = False
    try:
        try:
            scheduler.wait_ready()
        except NotReadyError as exc:
            raise CommandError(str(exc)) from exc
        if args.progress or args.until_empty:
            progress = Progress(db, groups, progress_line)
            progress.start()
        for group in groups:
            try:
                worker = scheduler.start_worker(
                    group_name=group,
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
            workers.append(worker)
        for worker in workers:
            while not worker.startup_complete.wait(0.2):
                if signals.stop.is_set():
                    break
            if worker.startup_complete.is_set():
                logger.info(
                    "worker %s serving group %r (concurrency %d, %s) on %s",
                    worker.id,
                    worker.group_name,
                    args.concurrency,
                    "LISTEN" if args.listen else "poll only",
                    db.describe(),
                )
        if not logger.isEnabledFor(logging.INFO):
            note(args, f"serving {', '.join(groups)} on {db.describe()}")
        _run_until_stopped(args, signals, progress)
        if signals.name:
            logger.info("%s received: shutting down (send it again to stop at once)", signals.name)
        clean = _shutdown(args, db, scheduler, workers, signals)
        closed = True
    finally:
        if not closed:
            scheduler.close(timeout=5.0)
        if progress is not None:
            if args.progress and workers:
                progress.remaining_jobs()
                progress.update(final=True)
                progress.summary(sys.stdout)
            progress.close()
    if not clean:
        logger.warning("shutdown did not finish in time: unfinished jobs run again elsewhere")
        return EXIT_RUNTIME
    return EXIT_OK


def _log_final_runs() -> Any:
    from pgxjob.jobs import log_final_job_runs

    return log_final_job_runs


def _run_until_stopped(
    args: argparse.Namespace, signals: _Signals, progress: Progress | None
) -> None:
    empty_checks = 0
    while not signals.stop.wait(0.5 if progress is not None else 3600):
        if progress is None:
            continue
        remaining = progress.remaining_jobs()
        progress.update()
        if args.until_empty and remaining == 0:
            # A job stays locked until its result is recorded, and a handler's follow-up jobs
            # are committed before that, so zero means nothing is left. Two readings in a row
            # guard against jobs another process schedules at that moment.
            empty_checks += 1
            if empty_checks >= 2:
                return
        else:
            empty_checks = 0


def _shutdown(
    args: argparse.Namespace,
    db: embedded.Database,
    scheduler: Scheduler,
    workers: Sequence[Worker],
    signals: _Signals,
) -> bool:
    # shutdown() returns at once when given a timeout, so all workers stop in parallel; short
    # waits keep the main thread responsive to a second signal.
    deadline = None if args.shutdown_timeout is None else time.monotonic() + args.shutdown_timeout
    pending = list(workers)
    for worker in pending:
        worker.shutdown(0)
    while pending:
        if signals.force.is_set():
            _force_exit(db, pending)
        pending = [w for w in pending if not w.shutdown(0.1)]
        if deadline is not None and time.monotonic() >= deadline:
            break
    clean = not pending and scheduler.close(timeout=5.0)
    return clean


def _force_exit(db: embedded.Database, workers: Sequence[Worker]) -> NoReturn:
    logger.warning(
        "second signal: stopping now; the %d unfinished worker(s) are unregistered so their "
        "jobs run again elsewhere",
        len(workers),
    )
    with (
        contextlib.suppress(Exception),
        psycopg.connect(db.conninfo, autocommit=True, connect_timeout=3) as conn,
    ):
        for worker in workers:
            if worker.id is not None:
                queries.unregister_worker(conn, worker.id)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_RUNTIME)


def _configure_logging(level: int, progress: ProgressLine | None, *, quiet: bool) -> None:
    handler = ProgressAwareHandler(progress)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The command line's own messages (startup, shutdown) stay visible above the progress line.
    logger.setLevel(level if quiet else min(level, logging.INFO))
