"""The blocking runner behind Scheduler.run: signal handlers, workers until a signal, shutdown."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from pgxjob import queries

if TYPE_CHECKING:
    from pgxjob.scheduler import Scheduler
    from pgxjob.worker import Worker

__all__ = ["run"]

logger = logging.getLogger(__name__)

# After the shutdown deadline: how long the release of the unfinished workers and the closing
# of the scheduler may take.
_RELEASE_TIMEOUT = 5.0


class _Signals:
    """First SIGINT/SIGTERM: graceful shutdown. Second: stop at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.force = threading.Event()
        self.name = ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and self.name:
            self.force.set()
            return
        self.name = signal.Signals(signum).name
        self.stop.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def run(
    scheduler: Scheduler,
    *,
    groups: Iterable[str],
    shutdown_timeout: float | None,
    stop: threading.Event | None,
    worker_options: dict[str, Any],
) -> bool:
    """Start one worker per group, block until a signal (or ``stop``), then shut down.

    See :meth:`Scheduler.run`. Returns True when every worker finished within the deadline.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "Scheduler.run() installs SIGINT and SIGTERM handlers, which Python allows only "
            "in the main thread; from another thread, use start_worker() and shut the "
            "workers down yourself"
        )
    if isinstance(groups, str):
        raise TypeError(f"groups must be a list of group names, got the string {groups!r}")
    names = list(dict.fromkeys(groups))
    if not names:
        raise ValueError("groups must name at least one group")
    signals = _Signals(stop if stop is not None else threading.Event())
    with signals.installed():
        workers: list[Worker] = []
        try:
            for name in names:
                workers.append(scheduler.start_worker(group_name=name, **worker_options))
        except BaseException:
            _release(scheduler, workers)
            scheduler.close(timeout=0)
            raise
        _wait_for_startup(workers, signals)
        while not signals.stop.wait(1.0):
            pass
        if signals.name:
            logger.info("%s received: shutting down (send it again to stop at once)", signals.name)
        else:
            logger.info("stop requested: shutting down")
        return _shut_down(scheduler, workers, signals, shutdown_timeout)


def _wait_for_startup(workers: list[Worker], signals: _Signals) -> None:
    # A signal during startup stops at once: a worker that cannot register (database down,
    # not migrated) must not keep the process from exiting.
    for worker in workers:
        while not worker.startup_complete.wait(0.2):
            if signals.stop.is_set():
                return
        logger.info("pgxjob worker %s serving group %r", worker.id, worker.group_name)


def _shut_down(
    scheduler: Scheduler, workers: list[Worker], signals: _Signals, timeout: float | None
) -> bool:
    # shutdown(0) only starts each worker's shutdown, so all of them stop in parallel under one
    # deadline; the short waits keep the main thread responsive to a second signal.
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(workers)
    for worker in pending:
        worker.shutdown(0)
    while pending:
        if signals.force.is_set():
            logger.warning(
                "second signal: stopping now; the %d unfinished worker(s) are unregistered so "
                "their jobs run again elsewhere",
                len(pending),
            )
            break
        pending = [w for w in pending if not w.shutdown(0.1)]
        if deadline is not None and time.monotonic() >= deadline:
            if pending:
                logger.warning(
                    "shutdown did not finish within %gs: the %d unfinished worker(s) are "
                    "unregistered so their jobs run again elsewhere",
                    timeout,
                    len(pending),
                )
            break
    if pending:
        _release(scheduler, pending)
        scheduler.close(timeout=0)
        return False
    return scheduler.close(timeout=_RELEASE_TIMEOUT)


def _release(scheduler: Scheduler, workers: Iterable[Worker]) -> None:
    """Unregister workers that have not finished, which releases every job they still own.

    On a connection of its own: the scheduler's pool may be held by the stuck workers.
    """
    ids = [w.id for w in workers if w.id is not None]
    if not ids:
        return
    try:
        with scheduler.direct_connection(connect_timeout=int(_RELEASE_TIMEOUT)) as conn:
            for worker_id in ids:
                queries.unregister_worker(conn, worker_id)
    except Exception as exc:
        scheduler.handle_error(exc)
